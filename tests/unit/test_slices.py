"""Bias audit: per-slice coverage, agreement and gold accuracy on a hand-computed example and a planted bad slice."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from dagster_project.quality.slices import MISSING_SEGMENT, SLICE_COLUMNS, slice_metrics

RECORDS = pd.DataFrame(
    {
        "record_id": ["r1", "r2", "r3", "r4", "r5", "r6", "r7"],
        "lang": ["en", "en", "en", "de", "de", "fr", None],
    }
)
ANNOTATIONS = pd.DataFrame(
    [
        ("r1", "a", "x"), ("r1", "b", "x"),  # agreement 1
        ("r2", "a", "x"), ("r2", "b", "y"),  # agreement 0
        # r3 never judged
        ("r4", "a", "y"), ("r4", "b", "y"), ("r4", "c", "y"),  # agreement 1
        ("r5", "a", "x"), ("r5", "b", "x"),  # agreement 1
        ("r6", "a", "z"),  # one judgement: no agreement
        ("r7", "a", "x"), ("r7", "b", "x"),  # agreement 1
        ("zz", "a", "x"), ("zz", "b", "y"),  # not a record: ignored everywhere
    ],
    columns=["item_id", "annotator_id", "label"],
)  # fmt: skip
GOLD = pd.DataFrame({"item_id": ["r1", "r2", "r4"], "label": ["x", "x", "x"]})


def test_slice_metrics_hand_computed() -> None:
    result = slice_metrics(RECORDS, ANNOTATIONS, "lang", gold=GOLD, min_support=1).set_index("value")
    assert result.index.tolist() == [MISSING_SEGMENT, "de", "en", "fr"]
    assert (result["segment"] == "lang").all()
    assert result["items"].tolist() == [1, 2, 3, 1]
    # coverage: <missing> 1/1, de 2/2, en 2/3 (r3 unjudged), fr 1/1
    assert result["coverage"].tolist() == pytest.approx([1.0, 1.0, 2 / 3, 1.0])
    # agreement: en mean(r1 = 1, r2 = 0) = 0.5; de mean(1, 1) = 1; fr has no item judged twice
    assert result.loc["en", "agreement"] == 0.5 and result.loc["de", "agreement"] == 1.0
    assert math.isnan(result.loc["fr", "agreement"])
    # gold judgements: en r1 x,x + r2 x,y -> 3 of 4 match; de r4 y,y,y vs gold x -> 0 of 3
    assert result.loc["en", "gold_accuracy"] == 0.75 and result.loc["de", "gold_accuracy"] == 0.0
    assert math.isnan(result.loc["fr", "gold_accuracy"])

    overall = result.attrs["overall"]
    # 7 records, 6 judged; agreement over r1, r2, r4, r5, r7 = 4/5; gold 3 of 7 judgements match
    assert overall["items"] == 7
    assert overall["coverage"] == pytest.approx(6 / 7)
    assert overall["agreement"] == pytest.approx(0.8)
    assert overall["gold_accuracy"] == pytest.approx(3 / 7)

    # margin 0.1: en coverage 0.667 < 0.857 - 0.1 and agreement 0.5 < 0.8 - 0.1; de gold 0 < 0.429 - 0.1
    assert result["flagged"].tolist() == [False, True, True, False]
    assert result.loc["en", "flag_reasons"] == "coverage,agreement"
    assert result.loc["de", "flag_reasons"] == "gold_accuracy"


def test_small_slices_are_not_flagged() -> None:
    # With the default min_support of 20, none of these tiny slices has enough items to be flagged.
    result = slice_metrics(RECORDS, ANNOTATIONS, "lang", gold=GOLD)
    assert list(result.columns) == SLICE_COLUMNS
    assert not result["flagged"].any()
    # min_support 3: en (3 items) may be flagged, de (2 items) not.
    result = slice_metrics(RECORDS, ANNOTATIONS, "lang", gold=GOLD, min_support=3).set_index("value")
    assert result["flagged"].to_dict() == {MISSING_SEGMENT: False, "de": False, "en": True, "fr": False}


def test_without_gold_accuracy_is_nan_and_never_flags() -> None:
    result = slice_metrics(RECORDS, ANNOTATIONS, "lang", min_support=1)
    assert result["gold_accuracy"].isna().all()
    assert "gold_accuracy" not in ",".join(result["flag_reasons"])


def test_planted_bad_slice_is_the_only_one_flagged() -> None:
    rng = np.random.default_rng(0)
    langs = np.array(["en"] * 200 + ["de"] * 150 + ["fr"] * 60 + ["pl"] * 10)
    records = pd.DataFrame({"record_id": [f"r{i}" for i in range(len(langs))], "lang": langs})
    rows = []
    for record_id, lang in zip(records["record_id"], langs, strict=True):
        if lang in ("fr", "pl") and rng.random() < 0.3:
            continue  # the bad slices are often left unlabeled...
        truth = "pos" if rng.random() < 0.5 else "neg"
        for annotator in ("a", "b", "c"):
            # ...and labeled at random, while the others are labeled right 95% of the time.
            correct = rng.random() < (0.5 if lang in ("fr", "pl") else 0.95)
            rows.append((record_id, annotator, truth if correct else ("neg" if truth == "pos" else "pos")))
    annotations = pd.DataFrame(rows, columns=["item_id", "annotator_id", "label"])
    result = slice_metrics(records, annotations, "lang").set_index("value")
    # pl is as bad as fr but has 10 items, under the minimum support of 20.
    assert result["flagged"].to_dict() == {"de": False, "en": False, "fr": True, "pl": False}
    assert result.loc["fr", "flag_reasons"] == "coverage,agreement"
    assert result.loc["fr", "agreement"] < 0.6 < 0.85 < result.loc["en", "agreement"]
