"""Accuracy against gold items with Wilson intervals, on hand-computed cases."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from dagster_project.quality import GOLD_ACCURACY_COLUMNS, gold_accuracy

Z = 1.959963984540054  # standard normal 97.5% quantile


def wilson(correct: int, n: int) -> tuple[float, float]:
    """Wilson (1927) score interval, written out: (p + z^2/2n +- z sqrt(p(1-p)/n + z^2/4n^2)) / (1 + z^2/n)."""
    p = correct / n
    centre = p + Z**2 / (2 * n)
    half = Z * math.sqrt(p * (1 - p) / n + Z**2 / (4 * n**2))
    return (centre - half) / (1 + Z**2 / n), (centre + half) / (1 + Z**2 / n)


def judgements(*rows: tuple[str, str, str]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["item_id", "annotator_id", "label"])


GOLD = pd.DataFrame({"item_id": ["g1", "g2", "g3", "g4", "g5"], "label": ["x", "y", "x", "z", "y"]})

# a: g1 x (ok), g1 x again (ok, repeats count), g2 y (ok), g3 y (wrong), g4 z (ok), g5 y (ok) -> 5 of 6;
#    plus n1, not a gold item, which is ignored
# b: g1 y (wrong), g2 x (wrong)                                                                 -> 0 of 2
# c: only non-gold items                                                                         -> absent
ANNOTATIONS = judgements(
    ("g1", "a", "x"), ("g1", "a", "x"), ("g2", "a", "y"), ("g3", "a", "y"), ("g4", "a", "z"), ("g5", "a", "y"),
    ("n1", "a", "x"),
    ("g1", "b", "y"), ("g2", "b", "x"),
    ("n1", "c", "x"), ("n2", "c", "y"),
)  # fmt: skip


def test_counts_accuracy_and_wilson_interval() -> None:
    result = gold_accuracy(ANNOTATIONS, GOLD).set_index("annotator_id")
    assert result.index.tolist() == ["a", "b", "__overall__"]
    assert result["n_gold"].tolist() == [6, 2, 8]
    assert result["correct"].tolist() == [5, 0, 5]
    assert result["accuracy"].tolist() == pytest.approx([5 / 6, 0.0, 5 / 8])
    for annotator, (correct, n) in {"a": (5, 6), "b": (0, 2), "__overall__": (5, 8)}.items():
        low, high = wilson(correct, n)
        assert result.loc[annotator, "ci_low"] == pytest.approx(low, abs=1e-12)
        assert result.loc[annotator, "ci_high"] == pytest.approx(high, abs=1e-12)
    # 5 of 6 by hand: centre (5/6 + 0.32012) / 1.64024 = 0.70322, half-width 0.43749 / 1.64024 = 0.26672
    assert (result.loc["a", "ci_low"], result.loc["a", "ci_high"]) == pytest.approx((0.4365, 0.9699), abs=5e-5)


def test_columns_and_overall_row_last() -> None:
    result = gold_accuracy(ANNOTATIONS, GOLD)
    assert list(result.columns) == GOLD_ACCURACY_COLUMNS
    assert result["annotator_id"].iloc[-1] == "__overall__"
    per_annotator = result.iloc[:-1]
    assert result["n_gold"].iloc[-1] == per_annotator["n_gold"].sum()
    assert result["correct"].iloc[-1] == per_annotator["correct"].sum()


def test_annotators_without_gold_judgements_are_absent() -> None:
    assert "c" not in gold_accuracy(ANNOTATIONS, GOLD)["annotator_id"].tolist()


def test_zero_of_twenty_matches_newcombe() -> None:
    """Newcombe (1998), "Two-sided confidence intervals for the single proportion", Stat. Med. 17:857-872,
    Table II, Wilson score method for 0/20: 0 to 0.1611."""
    annotations = judgements(*[(f"g{i}", "a", "wrong") for i in range(20)])
    gold = pd.DataFrame({"item_id": [f"g{i}" for i in range(20)], "label": "right"})
    row = gold_accuracy(annotations, gold).iloc[0]
    assert (row["n_gold"], row["correct"], row["accuracy"]) == (20, 0, 0.0)
    assert row["ci_low"] == pytest.approx(0.0, abs=1e-12)
    assert row["ci_high"] == pytest.approx(0.1611, abs=5e-5)


def test_duplicate_gold_rows_count_once_and_conflicts_raise() -> None:
    doubled = pd.concat([GOLD, GOLD.iloc[:2]], ignore_index=True)
    pd.testing.assert_frame_equal(gold_accuracy(ANNOTATIONS, doubled), gold_accuracy(ANNOTATIONS, GOLD))
    conflicting = pd.concat([GOLD, pd.DataFrame({"item_id": ["g1"], "label": ["y"]})], ignore_index=True)
    with pytest.raises(ValueError, match="more than one label"):
        gold_accuracy(ANNOTATIONS, conflicting)


def test_no_gold_judgements_gives_only_an_empty_overall_row() -> None:
    result = gold_accuracy(judgements(("n1", "a", "x")), GOLD)
    assert result["annotator_id"].tolist() == ["__overall__"]
    assert (result["n_gold"].item(), result["correct"].item()) == (0, 0)
    assert result[["accuracy", "ci_low", "ci_high"]].isna().all(axis=None)
    empty = gold_accuracy(judgements(), GOLD)
    assert empty["annotator_id"].tolist() == ["__overall__"] and empty["n_gold"].item() == 0
