"""Synthetic share cap, and the classifier two-sample test on look-alike and recognisably different data."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from dagster_project.quality.synthetic import C2STResult, classifier_two_sample_test, synthetic_share

# ------------------------------------------------------------------------------------------ share


def test_synthetic_share_hand_computed() -> None:
    flags = pd.Series([True] * 3 + [False] * 6 + [None], dtype=object)
    # 3 of 10 (the null counts as not synthetic) = 0.3
    outcome = synthetic_share(flags, cap=0.3)
    assert outcome.value == pytest.approx(0.3) and outcome.passed and outcome.sample_size == 10
    assert outcome.comparison == "<=" and outcome.threshold == 0.3 and outcome.name == "synthetic_share"
    assert not synthetic_share(flags, cap=0.2).passed
    assert synthetic_share(pd.Series([], dtype=bool), cap=0.0).value == 0.0


# ------------------------------------------------------------------------------------------ C2ST

WORDS = ["refund", "card", "blocked", "delivery", "late", "password", "reset", "invoice", "wrong", "address"]
OTHER_WORDS = ["quantum", "gizmo", "zephyr", "violet", "maple", "orbit", "lattice", "nimbus", "fjord", "tundra"]
OPENERS = ["Hello,", "Hi team,", "Urgent:", "Please help -"]


def tickets(seed: int, n: int, words: list[str] = WORDS, mean: float = 0.0) -> pd.DataFrame:
    """Ticket-like rows from one generator: text from ``words``, an amount around ``mean``, a channel."""
    rng = np.random.default_rng(seed)
    # Ticket numbers are drawn, not counted: the same number on both sides would pair a real row with a
    # synthetic twin, and cross-validation would then score below chance.
    texts = [
        f"{rng.choice(OPENERS)} my {' '.join(rng.choice(words, size=4))} issue, ticket {rng.integers(10**4)}."
        for _ in range(n)
    ]
    return pd.DataFrame(
        {
            "text": texts,
            "amount": rng.normal(mean, 1.0, n),
            "channel": rng.choice(["email", "chat", "phone"], size=n, p=[0.5, 0.3, 0.2]),
        }
    )


FIELDS = {"text_field": "text", "numeric": ["amount"], "categorical": ["channel"]}


def test_same_generator_is_indistinguishable() -> None:
    result = classifier_two_sample_test(tickets(1, 300), tickets(2, 300), **FIELDS)
    assert abs(result.auc - 0.5) <= 0.1 and result.passed
    assert result.n_real == result.n_synthetic == 300 and result.tolerance == 0.1
    assert 0 <= result.auc_std < 0.1


def test_different_vocabulary_and_shifted_numbers_are_recognised() -> None:
    synthetic = tickets(2, 300, words=OTHER_WORDS, mean=1.5)
    result = classifier_two_sample_test(tickets(1, 300), synthetic, **FIELDS)
    assert result.auc > 0.8 and not result.passed


def test_each_feature_kind_on_its_own() -> None:
    real = tickets(1, 200)
    # Text only, different vocabulary: near-perfect separation.
    assert classifier_two_sample_test(real, tickets(2, 200, words=OTHER_WORDS), text_field="text").auc > 0.95
    # Numbers only, shifted by 2 sd: the best possible AUC is Phi(2 / sqrt 2) = 0.92.
    shifted = classifier_two_sample_test(real, tickets(2, 200, mean=2.0), numeric=["amount"])
    assert 0.8 < shifted.auc < 0.97 and not shifted.passed
    # Categories only, same proportions: chance.
    assert classifier_two_sample_test(real, tickets(2, 200), categorical=["channel"]).passed


def test_sides_are_balanced_and_the_result_is_deterministic() -> None:
    real, synthetic = tickets(1, 300), tickets(2, 120)
    first = classifier_two_sample_test(real, synthetic, **FIELDS, seed=3)
    assert (first.n_real, first.n_synthetic) == (120, 120)
    assert classifier_two_sample_test(real, synthetic, **FIELDS, seed=3) == first
    assert isinstance(first, C2STResult)


def test_tolerance_decides() -> None:
    result = classifier_two_sample_test(tickets(1, 200), tickets(2, 200, mean=2.0), numeric=["amount"], tolerance=0.5)
    assert result.passed and result.tolerance == 0.5


def test_too_few_rows_or_no_features_are_refused() -> None:
    with pytest.raises(ValueError, match="at least 20 synthetic rows, got 19"):
        classifier_two_sample_test(tickets(1, 100), tickets(2, 19), text_field="text")
    with pytest.raises(ValueError, match="at least 20 real rows, got 5"):
        classifier_two_sample_test(tickets(1, 5), tickets(2, 100), text_field="text")
    with pytest.raises(ValueError, match="needs a text field"):
        classifier_two_sample_test(tickets(1, 100), tickets(2, 100))


def test_missing_values_are_handled() -> None:
    # Missing in the same places on both sides: imputation must neither fail nor make the sides differ.
    real, synthetic = tickets(1, 100), tickets(2, 100)
    for frame in (real, synthetic):
        frame.loc[::7, "amount"] = np.nan
        frame.loc[::5, "channel"] = None
        frame.loc[::9, "text"] = None
    assert classifier_two_sample_test(real, synthetic, **FIELDS).passed
    # Missing on one side only is a difference, and the test sees it.
    one_sided = synthetic.assign(amount=np.nan)
    assert classifier_two_sample_test(real, one_sided, numeric=["amount"]).auc > 0.8
