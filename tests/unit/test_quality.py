"""Inter-annotator agreement and majority-vote consolidation on small hand-computed examples."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from dagster_project.quality import majority_vote, percent_agreement
from dagster_project.quality.aggregation import CONSOLIDATED_COLUMNS
from dagster_project.quality.agreement import item_agreement


def judgements(*rows: tuple[str, str, str]) -> pd.DataFrame:
    """Long-format annotations from (item_id, annotator_id, label) triples."""
    return pd.DataFrame(rows, columns=["item_id", "annotator_id", "label"])


# i1: x x x    -> n=3, pairs agreeing = 3*2 = 6 of 3*2 = 6          -> 1
# i2: x x y    -> 2*1 + 1*0 = 2 of 6                                 -> 1/3
# i3: x x y y  -> 2*1 + 2*1 = 4 of 4*3 = 12                          -> 1/3
# i4: z        -> one judgement: no pairs, left out
# mean over i1..i3 = (1 + 1/3 + 1/3) / 3 = 5/9
EXAMPLE = judgements(
    ("i1", "a", "x"), ("i1", "b", "x"), ("i1", "c", "x"),
    ("i2", "a", "x"), ("i2", "b", "x"), ("i2", "c", "y"),
    ("i3", "a", "x"), ("i3", "b", "y"), ("i3", "c", "x"), ("i3", "d", "y"),
    ("i4", "a", "z"),
)  # fmt: skip


def test_item_agreement_hand_computed() -> None:
    per_item = item_agreement(EXAMPLE)
    assert per_item.name == "agreement"
    assert per_item.index.tolist() == ["i1", "i2", "i3"]  # i4 has a single judgement
    assert per_item.tolist() == pytest.approx([1.0, 1 / 3, 1 / 3])


def test_percent_agreement_hand_computed() -> None:
    assert percent_agreement(EXAMPLE) == pytest.approx(5 / 9)


def test_single_judgement_items_do_not_change_agreement() -> None:
    more_singletons = pd.concat([EXAMPLE, judgements(("i5", "a", "x"), ("i6", "b", "y"))], ignore_index=True)
    assert percent_agreement(more_singletons) == pytest.approx(5 / 9)


def test_two_judgements_that_disagree() -> None:
    # n=2, labels x and y: 1*0 + 1*0 = 0 agreeing ordered pairs of 2*1 = 2 -> 0
    assert percent_agreement(judgements(("i1", "a", "x"), ("i1", "b", "y"))) == 0.0


def test_agreement_is_nan_without_any_item_judged_twice() -> None:
    assert math.isnan(percent_agreement(judgements(("i1", "a", "x"), ("i2", "a", "y"))))
    assert math.isnan(percent_agreement(judgements()))


def test_agreement_does_not_depend_on_row_order() -> None:
    shuffled = EXAMPLE.sample(frac=1, random_state=3)
    assert percent_agreement(shuffled) == pytest.approx(5 / 9)


# ---------------------------------------------------------------------------------------------- majority vote


def test_majority_vote_labels_confidence_and_counts() -> None:
    result = majority_vote(EXAMPLE)
    assert list(result.columns) == CONSOLIDATED_COLUMNS
    assert result["item_id"].tolist() == ["i1", "i2", "i3", "i4"]
    assert result["label"].tolist() == ["x", "x", "x", "z"]  # i3 is a 2:2 tie of x and y -> "x" by name
    assert result["confidence"].tolist() == pytest.approx([3 / 3, 2 / 3, 2 / 4, 1 / 1])
    assert result["n_judgements"].tolist() == [3, 3, 4, 1]


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
def test_tie_break_by_label_name_regardless_of_row_order(seed: int) -> None:
    """A 1:1:1 tie of three labels always goes to the alphabetically first label."""
    tie = judgements(("t", "a", "pear"), ("t", "b", "apple"), ("t", "c", "fig"))
    result = majority_vote(tie.sample(frac=1, random_state=seed))
    assert result.to_dict("records") == [{"item_id": "t", "label": "apple", "confidence": 1 / 3, "n_judgements": 3}]


def test_clear_majority_beats_alphabetical_order() -> None:
    votes = judgements(("i", "a", "zebra"), ("i", "b", "zebra"), ("i", "c", "aardvark"))
    assert majority_vote(votes)["label"].tolist() == ["zebra"]


def test_majority_vote_of_nothing_is_an_empty_frame_with_columns() -> None:
    result = majority_vote(judgements())
    assert result.empty
    assert list(result.columns) == CONSOLIDATED_COLUMNS
