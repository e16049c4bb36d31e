"""Agreement measures reproduce published worked examples to 3 decimals, plus the documented edge cases."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import cohen_kappa_score
from statsmodels.stats import inter_rater

from dagster_project.quality import (
    cohen_kappa,
    fleiss_kappa,
    krippendorff_alpha,
    modal_labels,
    percent_agreement,
)


def judgements(*rows: tuple[object, object, object]) -> pd.DataFrame:
    """Long-format annotations from (item_id, annotator_id, label) triples."""
    return pd.DataFrame(rows, columns=["item_id", "annotator_id", "label"])


def from_contingency(table: Sequence[Sequence[int]], labels: Sequence[object]) -> pd.DataFrame:
    """Two raters "A" (rows) and "B" (columns); cell (r, c) = number of items A called labels[r] and B labels[c]."""
    rows: list[tuple[object, object, object]] = []
    item = 0
    for r, row in enumerate(table):
        for c, count in enumerate(row):
            for _ in range(count):
                rows += [(item, "A", labels[r]), (item, "B", labels[c])]
                item += 1
    return judgements(*rows)


def from_reliability_matrix(matrix: Sequence[Sequence[object]]) -> pd.DataFrame:
    """Long format from an observers x units matrix; None marks a missing judgement."""
    rows = [
        (unit, f"obs{observer}", value)
        for observer, values in enumerate(matrix)
        for unit, value in enumerate(values)
        if value is not None
    ]
    return judgements(*rows)


def from_fleiss_table(table: Sequence[Sequence[int]]) -> pd.DataFrame:
    """Long format from a subjects x categories count table; raters are anonymous, so number them per subject."""
    rows: list[tuple[object, object, object]] = []
    for subject, counts in enumerate(table):
        rater = 0
        for category, count in enumerate(counts, start=1):
            for _ in range(count):
                rows.append((subject, f"r{rater}", category))
                rater += 1
    return judgements(*rows)


def sklearn_kappa(annotations: pd.DataFrame) -> float:
    wide = annotations.pivot(index="item_id", columns="annotator_id", values="label").dropna()
    return float(cohen_kappa_score(wide["A"].tolist(), wide["B"].tolist()))


# ---------------------------------------------------------------------------------------------- Cohen's kappa

WIKIPEDIA_PROPOSALS = from_contingency([[20, 5], [10, 15]], ["yes", "no"])


def test_cohen_wikipedia_grant_proposals() -> None:
    """Wikipedia, "Cohen's kappa", worked example: 50 grant proposals, A and B both yes 20, A yes / B no 5,
    A no / B yes 10, both no 15. p_o = 0.7, p_e = 0.5, kappa = 0.4."""
    assert cohen_kappa(WIKIPEDIA_PROPOSALS) == pytest.approx(0.4, abs=5e-4)
    assert cohen_kappa(WIKIPEDIA_PROPOSALS) == pytest.approx(sklearn_kappa(WIKIPEDIA_PROPOSALS), abs=1e-12)


def test_cohen_three_categories_sas_proc_freq() -> None:
    """Three categories, 19 items, table [[0, 4, 1], [0, 8, 0], [0, 1, 5]]: SAS PROC FREQ (AGREE) reports
    kappa = 0.4842, as reproduced in statsmodels' test suite (statsmodels/stats/tests/test_inter_rater.py,
    ``table10`` / ``res10_sas``). By hand: p_o = 13/19, p_e = 140/361."""
    data = from_contingency([[0, 4, 1], [0, 8, 0], [0, 1, 5]], ["a", "b", "c"])
    assert cohen_kappa(data) == pytest.approx(0.4842, abs=5e-4)
    assert cohen_kappa(data) == pytest.approx(sklearn_kappa(data), abs=1e-12)


def test_cohen_four_categories_sas_skin_condition() -> None:
    """SAS/STAT User's Guide, PROC FREQ, "Getting Started: Agreement Study" (SkinCondition: two dermatologists,
    88 patients, terrible/poor/marginal/clear): simple kappa = 0.3449."""
    table = [[10, 4, 1, 0], [5, 10, 12, 2], [2, 4, 12, 5], [0, 2, 6, 13]]
    data = from_contingency(table, ["terrible", "poor", "marginal", "clear"])
    assert cohen_kappa(data) == pytest.approx(0.3449, abs=5e-4)
    assert cohen_kappa(data) == pytest.approx(sklearn_kappa(data), abs=1e-12)


def test_cohen_is_mean_of_pairwise_kappas() -> None:
    """Three annotators: the mean of the three pairwise Cohen kappas (each checked against scikit-learn)."""
    rng = np.random.default_rng(7)
    labels = rng.choice(["x", "y", "z"], size=(3, 40), p=[0.5, 0.3, 0.2])
    labels[1, :25] = labels[0, :25]
    labels[2, 10:30] = labels[0, 10:30]
    data = judgements(*[(i, f"a{k}", labels[k, i]) for k in range(3) for i in range(40)])
    pairs = [(0, 1), (0, 2), (1, 2)]
    expected = np.mean([cohen_kappa_score(labels[a], labels[b]) for a, b in pairs])
    assert cohen_kappa(data) == pytest.approx(expected, abs=1e-12)


def test_cohen_uses_only_shared_items_and_skips_thin_pairs() -> None:
    """A and B share the Wikipedia items; C shares a single item with each, so its pairs are skipped."""
    extra = judgements(("c-only", "C", "yes"), (0, "C", "no"))
    assert cohen_kappa(pd.concat([WIKIPEDIA_PROPOSALS, extra], ignore_index=True)) == pytest.approx(0.4)


def test_cohen_repeated_judgements_use_modal_label() -> None:
    """B judging item 0 three times (no, no, yes) counts as one "no"; a 1:1 tie goes to the smaller label."""
    data = judgements(
        (0, "A", "no"), (0, "B", "no"), (0, "B", "yes"), (0, "B", "no"),
        (1, "A", "yes"), (1, "B", "yes"),
        (2, "A", "no"), (2, "B", "yes"), (2, "B", "no"),
    )  # fmt: skip
    cells = modal_labels(data)
    assert cells.loc[(cells["item_id"] == 0) & (cells["annotator_id"] == "B"), "label"].item() == "no"
    assert cells.loc[(cells["item_id"] == 2) & (cells["annotator_id"] == "B"), "label"].item() == "no"
    assert cohen_kappa(data) == pytest.approx(1.0)
    assert cohen_kappa(data.sample(frac=1, random_state=1)) == pytest.approx(1.0)


# ---------------------------------------------------------------------------------------------- Fleiss' kappa

# Wikipedia, "Fleiss' kappa", worked example: 10 subjects, 14 raters, 5 categories.
WIKIPEDIA_FLEISS = [
    [0, 0, 0, 0, 14],
    [0, 2, 6, 4, 2],
    [0, 0, 3, 5, 6],
    [0, 3, 9, 2, 0],
    [2, 2, 8, 1, 1],
    [7, 7, 0, 0, 0],
    [3, 2, 6, 3, 0],
    [2, 5, 3, 2, 2],
    [6, 5, 2, 1, 0],
    [0, 2, 2, 3, 7],
]


def test_fleiss_wikipedia_example() -> None:
    """Wikipedia, "Fleiss' kappa", worked example (10 subjects x 14 raters x 5 categories):
    P-bar = 0.378, P-bar_e = 0.213, kappa = 0.210. Cross-checked with statsmodels' fleiss_kappa."""
    data = from_fleiss_table(WIKIPEDIA_FLEISS)
    assert percent_agreement(data) == pytest.approx(0.378, abs=5e-4)  # P-bar
    p_c = np.asarray(WIKIPEDIA_FLEISS).sum(axis=0) / 140
    assert float(np.sum(p_c**2)) == pytest.approx(0.213, abs=5e-4)  # P-bar_e
    assert fleiss_kappa(data) == pytest.approx(0.210, abs=5e-4)
    assert fleiss_kappa(data) == pytest.approx(inter_rater.fleiss_kappa(np.asarray(WIKIPEDIA_FLEISS)), abs=1e-12)


def test_fleiss_matches_statsmodels_on_constant_raters() -> None:
    """Random data with 6 judgements per item: identical to statsmodels (which requires constant n)."""
    rng = np.random.default_rng(11)
    data = judgements(*[(i, f"r{k}", int(rng.integers(0, 4))) for i in range(30) for k in range(6)])
    table, _ = inter_rater.aggregate_raters(data.pivot(index="item_id", columns="annotator_id", values="label"))
    assert fleiss_kappa(data) == pytest.approx(inter_rater.fleiss_kappa(table), abs=1e-12)


def test_fleiss_variable_raters_generalisation() -> None:
    """Items with 2, 3 and 4 judgements (and one singleton, ignored): hand-computed generalised form.

    i1: x x      -> P = 1          i2: x y y  -> P = 2/6        i3: x y z z -> P = 2/12      i4: y (ignored)
    P-bar = (1 + 1/3 + 1/6) / 3 = 0.5; pooled counts x 4, y 3, z 2 of 9 -> P-bar_e = (16 + 9 + 4) / 81 = 29/81.
    """
    data = judgements(
        ("i1", "a", "x"), ("i1", "b", "x"),
        ("i2", "a", "x"), ("i2", "b", "y"), ("i2", "c", "y"),
        ("i3", "a", "x"), ("i3", "b", "y"), ("i3", "c", "z"), ("i3", "d", "z"),
        ("i4", "a", "y"),
    )  # fmt: skip
    p_e = 29 / 81
    assert percent_agreement(data) == pytest.approx(0.5)
    assert fleiss_kappa(data) == pytest.approx((0.5 - p_e) / (1 - p_e))


# ---------------------------------------------------------------------------------------- Krippendorff's alpha

# Krippendorff (2011), "Computing Krippendorff's Alpha-Reliability", section C: 4 observers x 12 units, missing
# values marked None.
KRIPPENDORFF_2011_C = [
    [1, 2, 3, 3, 2, 1, 4, 1, 2, None, None, None],
    [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, None, 3],
    [None, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, None],
    [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, None],
]


@pytest.mark.parametrize(
    ("level", "published"),
    [("nominal", 0.743), ("ordinal", 0.815), ("interval", 0.849), ("ratio", 0.797)],
)
def test_krippendorff_2011_multi_observer_example(level: str, published: float) -> None:
    """Krippendorff (2011), "Computing Krippendorff's Alpha-Reliability", section C (4 observers, 12 units,
    missing data): alpha nominal 0.743, ordinal 0.815, interval 0.849, ratio 0.797."""
    data = from_reliability_matrix(KRIPPENDORFF_2011_C)
    assert krippendorff_alpha(data, level=level) == pytest.approx(published, abs=5e-4)  # type: ignore[arg-type]


def test_krippendorff_2011_ordinal_with_string_labels_and_order() -> None:
    """Same data as section C with the values 1..5 renamed; ``order`` restores the scale: ordinal 0.815."""
    names = {1: "very low", 2: "low", 3: "mid", 4: "high", 5: "very high"}
    renamed = [[names[v] if v is not None else None for v in row] for row in KRIPPENDORFF_2011_C]
    data = from_reliability_matrix(renamed)
    order = ["very low", "low", "mid", "high", "very high"]
    assert krippendorff_alpha(data, level="ordinal", order=order) == pytest.approx(0.815, abs=5e-4)
    assert krippendorff_alpha(data, level="nominal") == pytest.approx(0.743, abs=5e-4)


def test_krippendorff_2011_two_observer_binary_example() -> None:
    """Krippendorff (2011), section A (two observers, binary data, 10 units): nominal alpha = 0.095."""
    data = from_reliability_matrix([[0, 1, 0, 0, 0, 0, 0, 0, 1, 0], [1, 1, 1, 0, 0, 1, 0, 0, 0, 0]])
    assert krippendorff_alpha(data) == pytest.approx(0.095, abs=5e-4)


def test_krippendorff_repeated_judgements_collapse_to_modal_label() -> None:
    """Observer 0 judging unit 0 three more times (1, 1, 2) is the same cell as a single 1: alpha unchanged."""
    data = from_reliability_matrix(KRIPPENDORFF_2011_C)
    repeats = judgements((0, "obs0", 1), (0, "obs0", 1), (0, "obs0", 2))
    assert krippendorff_alpha(pd.concat([data, repeats]), level="interval") == pytest.approx(0.849, abs=5e-4)


def test_krippendorff_rejects_bad_arguments() -> None:
    data = judgements((0, "a", "x"), (0, "b", "y"), (1, "a", "x"), (1, "b", "x"))
    with pytest.raises(ValueError, match="level must be one of"):
        krippendorff_alpha(data, level="cardinal")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="needs numeric labels; not numbers: 'x', 'y'"):
        krippendorff_alpha(data, level="interval")
    with pytest.raises(ValueError, match="needs numeric labels"):
        krippendorff_alpha(data, level="ratio")
    with pytest.raises(ValueError, match="needs `order`"):
        krippendorff_alpha(data, level="ordinal")
    with pytest.raises(ValueError, match="missing from `order`: 'y'"):
        krippendorff_alpha(data, level="ordinal", order=["x"])
    with pytest.raises(ValueError, match="only applies to level='ordinal'"):
        krippendorff_alpha(data, level="nominal", order=["x", "y"])


# ------------------------------------------------------------------------------------------------ edge cases

Measure = Callable[[pd.DataFrame], float]
MEASURES: list[Measure] = [cohen_kappa, fleiss_kappa, krippendorff_alpha]


@pytest.mark.parametrize("measure", MEASURES)
def test_empty_frame_is_nan(measure: Measure) -> None:
    assert math.isnan(measure(judgements()))


@pytest.mark.parametrize("measure", MEASURES)
def test_single_annotator_is_nan(measure: Measure) -> None:
    """One annotator judging each item once: no annotator pair, no item with two judgements."""
    assert math.isnan(measure(judgements(("i1", "a", "x"), ("i2", "a", "y"), ("i3", "a", "x"))))


@pytest.mark.parametrize("measure", MEASURES)
def test_items_judged_once_are_nan(measure: Measure) -> None:
    """Every item judged by exactly one (different) annotator: nothing to compare."""
    assert math.isnan(measure(judgements(("i1", "a", "x"), ("i2", "b", "y"), ("i3", "c", "x"))))


@pytest.mark.parametrize("measure", MEASURES)
def test_all_agree_with_two_labels_is_one(measure: Measure) -> None:
    data = judgements(*[(i, k, "x" if i % 2 else "y") for i in range(6) for k in ("a", "b", "c")])
    assert measure(data) == pytest.approx(1.0)


@pytest.mark.parametrize("measure", MEASURES)
def test_all_agree_on_one_label_is_nan(measure: Measure) -> None:
    """Everyone says "x" on everything: chance agreement is already 1, the formula is 0/0 -> NaN (documented)."""
    data = judgements(*[(i, k, "x") for i in range(6) for k in ("a", "b", "c")])
    assert math.isnan(measure(data))


def test_singletons_do_not_change_fleiss_or_alpha() -> None:
    data = from_fleiss_table(WIKIPEDIA_FLEISS)
    more = pd.concat([data, judgements(("s1", "r0", 1), ("s2", "r1", 5))], ignore_index=True)
    assert fleiss_kappa(more) == pytest.approx(fleiss_kappa(data))
    alpha_data = from_reliability_matrix(KRIPPENDORFF_2011_C)
    assert krippendorff_alpha(pd.concat([alpha_data, judgements((99, "obs0", 3))])) == pytest.approx(0.743, abs=5e-4)
