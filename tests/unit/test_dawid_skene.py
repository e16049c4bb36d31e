"""Dawid & Skene EM: the paper's anaesthesia example, structural guarantees, and behaviour on planted annotators."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from dagster_project.quality import DawidSkeneResult, dawid_skene, majority_vote

# Dawid & Skene (1979), "Maximum Likelihood Estimation of Observer Error-Rates Using the EM Algorithm", Applied
# Statistics 28(1), Table 1: 45 patients rated 1-4 for fitness for anaesthesia by 5 clinicians; clinician 1 rated
# every patient three times. One line per patient: clinician 1's three ratings, then clinicians 2-5. Transcribed
# from the copies shipped with Dallas Card's ``dawid_skene.py`` (generate_sample_data) and the DawidSkeneAlgorithm
# JUnit test in the "LinX" Java implementation; the two copies agree line for line.
ANAESTHESIA = """
111 1 1 1 1
333 4 3 3 4
112 2 1 2 2
222 3 1 2 1
222 3 2 2 2
222 3 3 2 2
122 2 1 1 1
333 3 4 3 3
222 2 2 2 3
232 2 2 2 3
444 4 4 4 4
222 3 3 4 3
111 1 1 1 1
222 3 2 1 2
121 1 1 1 1
111 2 1 1 1
111 1 1 1 1
111 1 1 1 1
222 2 2 2 1
222 1 3 2 2
222 2 2 2 2
222 2 2 2 1
222 3 2 2 2
221 2 2 2 2
111 1 1 1 1
111 1 1 1 1
232 2 2 2 2
111 1 1 1 1
111 1 1 1 1
112 1 1 2 1
111 1 1 1 1
333 3 2 3 3
111 1 1 1 1
222 2 2 2 2
222 3 2 3 2
433 4 3 4 3
221 2 2 3 2
232 3 2 3 3
333 3 4 3 2
111 1 1 1 1
111 1 1 1 1
121 2 1 1 1
232 2 2 2 2
121 1 1 1 1
222 2 2 2 2
"""


def anaesthesia() -> pd.DataFrame:
    rows: list[tuple[int, int, int]] = []
    for patient, line in enumerate(ANAESTHESIA.strip().splitlines(), start=1):
        first, *others = line.split()
        rows += [(patient, 1, int(rating)) for rating in first]
        rows += [(patient, clinician, int(rating)) for clinician, rating in enumerate(others, start=2)]
    return pd.DataFrame(rows, columns=["item_id", "annotator_id", "label"])


# The paper's final estimates (Tables 2-4), 2 decimals as published; reproduced in the same JUnit test above.
PUBLISHED_PRIOR = [0.40, 0.42, 0.11, 0.07]
# clinician -> rows true class 1..4, columns given rating 1..4
PUBLISHED_CONFUSION = {
    1: [[0.89, 0.11, 0.00, 0.00], [0.07, 0.88, 0.05, 0.00], [0.00, 0.34, 0.66, 0.00], [0.00, 0.00, 0.56, 0.44]],
    2: [[0.83, 0.17, 0.00, 0.00], [0.05, 0.63, 0.31, 0.00], [0.00, 0.00, 1.00, 0.00], [0.00, 0.00, 0.00, 1.00]],
    3: [[1.00, 0.00, 0.00, 0.00], [0.11, 0.79, 0.11, 0.00], [0.00, 0.40, 0.20, 0.40], [0.00, 0.00, 0.67, 0.33]],
    4: [[0.94, 0.06, 0.00, 0.00], [0.05, 0.84, 0.10, 0.00], [0.00, 0.00, 0.80, 0.20], [0.00, 0.00, 0.33, 0.67]],
    5: [[1.00, 0.00, 0.00, 0.00], [0.16, 0.73, 0.11, 0.00], [0.00, 0.21, 0.79, 0.00], [0.00, 0.00, 0.33, 0.67]],
}
# Most probable class per patient 1..45 and the three patients the paper leaves uncertain.
PUBLISHED_LABELS = [
    1, 4, 2, 2, 2, 2, 1, 3, 2, 2, 4, 3, 1, 2, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 1, 1, 2, 1, 1, 1,
    1, 3, 1, 2, 2, 4, 2, 3, 3, 1, 1, 1, 2, 1, 2,
]  # fmt: skip
PUBLISHED_UNCERTAIN = {7: [0.98, 0.02, 0.00, 0.00], 35: [0.00, 0.95, 0.05, 0.00], 38: [0.00, 0.02, 0.98, 0.00]}

# Half a unit in the last published place, plus float slack.
HALF_CENT = 0.005 + 1e-9


@pytest.fixture(scope="module")
def paper_fit() -> DawidSkeneResult:
    return dawid_skene(anaesthesia())


def test_anaesthesia_class_prevalences(paper_fit: DawidSkeneResult) -> None:
    """Dawid & Skene (1979), final estimated class prevalences 0.40, 0.42, 0.11, 0.07 (2 d.p. as published)."""
    assert paper_fit.class_prior.index.tolist() == [1, 2, 3, 4]
    assert paper_fit.class_prior.tolist() == pytest.approx(PUBLISHED_PRIOR, abs=HALF_CENT)


def test_anaesthesia_class_prevalences_three_decimals(paper_fit: DawidSkeneResult) -> None:
    """Dawid & Skene (1979): the paper prints 2 d.p. (0.40, 0.42, 0.11, 0.07); to 3 d.p. this EM gives 0.400,
    0.422, 0.112, 0.067 -- each rounds to the published figure. Pinned so a change in the EM recipe shows up."""
    assert paper_fit.class_prior.round(3).tolist() == [0.400, 0.422, 0.112, 0.067]


@pytest.mark.parametrize("clinician", [1, 2, 3, 4, 5])
def test_anaesthesia_confusion_matrices(paper_fit: DawidSkeneResult, clinician: int) -> None:
    """Dawid & Skene (1979), estimated individual error rates per clinician (2 d.p. as published); clinician 1's
    three ratings per patient are all counted."""
    estimated = paper_fit.confusion[clinician]
    assert estimated.index.tolist() == [1, 2, 3, 4] and estimated.columns.tolist() == [1, 2, 3, 4]
    np.testing.assert_allclose(estimated.to_numpy(), PUBLISHED_CONFUSION[clinician], atol=HALF_CENT)


def test_anaesthesia_patient_classes(paper_fit: DawidSkeneResult) -> None:
    """Dawid & Skene (1979), estimated true class per patient, and the three uncertain patients' posteriors."""
    assert paper_fit.labels.index.tolist() == list(range(1, 46))
    assert paper_fit.labels.tolist() == PUBLISHED_LABELS
    for patient, published in PUBLISHED_UNCERTAIN.items():
        assert paper_fit.posteriors.loc[patient].tolist() == pytest.approx(published, abs=HALF_CENT)


def test_anaesthesia_run_is_converged_and_deterministic(paper_fit: DawidSkeneResult) -> None:
    assert 1 < paper_fit.iterations < 100
    assert math.isfinite(paper_fit.log_likelihood) and paper_fit.log_likelihood < 0
    shuffled = dawid_skene(anaesthesia().sample(frac=1, random_state=5))
    pd.testing.assert_frame_equal(shuffled.posteriors, paper_fit.posteriors)
    pd.testing.assert_series_equal(shuffled.class_prior, paper_fit.class_prior)
    assert shuffled.log_likelihood == pytest.approx(paper_fit.log_likelihood, rel=1e-12)  # summation order


def test_anaesthesia_repeats_are_counted(paper_fit: DawidSkeneResult) -> None:
    """Keeping only clinician 1's first rating gives a different fit: the repeats carry weight."""
    data = anaesthesia()
    first_only = data[~((data["annotator_id"] == 1) & data.duplicated(["item_id", "annotator_id"]))]
    assert len(first_only) == len(data) - 2 * 45
    assert not np.allclose(dawid_skene(first_only).class_prior, paper_fit.class_prior, atol=1e-3)


# -------------------------------------------------------------------------------------- structural guarantees


def test_distributions_sum_to_one(paper_fit: DawidSkeneResult) -> None:
    np.testing.assert_allclose(paper_fit.posteriors.sum(axis=1), 1.0, atol=1e-12)
    np.testing.assert_allclose(paper_fit.class_prior.sum(), 1.0, atol=1e-12)
    for matrix in paper_fit.confusion.values():
        np.testing.assert_allclose(matrix.sum(axis=1), 1.0, atol=1e-12)


def test_result_is_frozen(paper_fit: DawidSkeneResult) -> None:
    with pytest.raises(AttributeError):
        paper_fit.iterations = 0  # type: ignore[misc]


def test_explicit_classes_add_an_unseen_class() -> None:
    """An unseen class gets prevalence 0, zero posterior, and a uniform (no-information) confusion row."""
    result = dawid_skene(anaesthesia(), classes=[1, 2, 3, 4, 5])
    assert result.class_prior[5] == 0.0
    assert (result.posteriors[5] == 0.0).all()
    for matrix in result.confusion.values():
        assert matrix.loc[5].tolist() == pytest.approx([0.2] * 5)
        np.testing.assert_allclose(matrix.sum(axis=1), 1.0, atol=1e-12)
    assert result.class_prior[[1, 2, 3, 4]].tolist() == pytest.approx(PUBLISHED_PRIOR, abs=HALF_CENT)


def test_classes_must_cover_every_label() -> None:
    with pytest.raises(ValueError, match="labels not in `classes`: 4"):
        dawid_skene(anaesthesia(), classes=[1, 2, 3])


def test_empty_frame() -> None:
    result = dawid_skene(pd.DataFrame(columns=["item_id", "annotator_id", "label"]), classes=["a", "b"])
    assert result.labels.empty and result.posteriors.empty and result.confusion == {}
    assert result.posteriors.columns.tolist() == ["a", "b"]
    assert result.class_prior.isna().all() and result.iterations == 0


def test_single_annotator_reproduces_its_labels() -> None:
    data = pd.DataFrame({"item_id": range(6), "annotator_id": "solo", "label": list("xyxzyx")})
    result = dawid_skene(data)
    assert result.labels.tolist() == list("xyxzyx")
    np.testing.assert_allclose(result.confusion["solo"].to_numpy(), np.eye(3))
    assert result.class_prior.tolist() == pytest.approx([3 / 6, 2 / 6, 1 / 6])


# ----------------------------------------------------------------------------------- planted annotators


def simulate(accuracies: dict[str, float], n_items: int, n_classes: int, seed: int) -> tuple[pd.DataFrame, pd.Series]:
    """Each annotator labels every item: correct with its accuracy, otherwise a uniformly random wrong class.

    An accuracy of 1 / n_classes is a pure spammer: its label is uniform whatever the truth.
    """
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, n_classes, size=n_items)
    rows: list[tuple[int, str, int]] = []
    for annotator, accuracy in accuracies.items():
        correct = rng.random(n_items) < accuracy
        wrong = (truth + rng.integers(1, n_classes, size=n_items)) % n_classes
        labels = np.where(correct, truth, wrong)
        rows += [(item, annotator, int(label)) for item, label in enumerate(labels)]
    data = pd.DataFrame(rows, columns=["item_id", "annotator_id", "label"])
    return data, pd.Series(truth, index=pd.RangeIndex(n_items, name="item_id"), name="label")


def test_perfect_annotator_gets_identity_and_spammer_gets_uniform() -> None:
    """A perfect annotator's confusion is near the identity, a uniform-random spammer's near 1/3 everywhere.

    "Near", not exact: on a finite sample the maximum-likelihood fit lets the perfect annotator absorb a little
    of the others' noise (here about 2% on one row), and it really is a higher likelihood than the identity.
    """
    data, truth = simulate({"perfect": 1.0, "good": 0.8, "ok": 0.7, "spam": 1 / 3}, 3000, 3, seed=1)
    result = dawid_skene(data)
    np.testing.assert_allclose(result.confusion["perfect"].to_numpy(), np.eye(3), atol=0.03)
    np.testing.assert_allclose(result.confusion["spam"].to_numpy(), np.full((3, 3), 1 / 3), atol=0.05)
    assert (result.labels == truth).mean() > 0.98


def test_dawid_skene_beats_majority_vote_with_one_reliable_annotator() -> None:
    """One annotator right 95% of the time, four right 40% (3 classes): the vote follows the crowd, DS the expert."""
    accuracies = {"expert": 0.95, "n1": 0.4, "n2": 0.4, "n3": 0.4, "n4": 0.4}
    data, truth = simulate(accuracies, 1500, 3, seed=3)
    ds_accuracy = (dawid_skene(data).labels == truth).mean()
    vote = majority_vote(data).set_index("item_id")["label"]
    vote_accuracy = (vote == truth).mean()
    assert ds_accuracy > 0.9
    assert ds_accuracy > vote_accuracy + 0.1
