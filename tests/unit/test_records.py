"""The two typed records every layer shares: a gate's result and the ``trainyard.*`` commit metadata.

Each has one serialisation; these tests pin that it round-trips, that what an operator reads is right, and that
metadata Trainyard could not have written is refused with the key that is wrong.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

import numpy as np
import pytest

from dagster_project.lakefs.metadata import PUBLISHED_STAGE, CommitMetadata, MalformedMetadata
from dagster_project.quality.result import Comparison, ComputedOn, GateResult, GateVerdict


def result(**changes) -> GateResult:
    base = GateResult(name="agreement", passed=False, value=0.62, threshold=0.67, comparison=Comparison.AT_LEAST,
                      sample_size=190, statistic="Krippendorff's alpha",
                      worst=[{"annotator": "vendor-a", "alpha": np.float64(0.41)}],
                      computed_on=ComputedOn(commit_id="c0ffee", paths=("annotations.parquet",)),
                      evaluated_at=datetime(2026, 12, 1, 9, 30, tzinfo=UTC))
    return base.model_copy(update=changes)


def test_gate_result_round_trips_through_its_json() -> None:
    original = result()
    assert GateResult.from_json(original.to_json()) == original
    assert isinstance(original.worst[0]["alpha"], float)  # numpy scalars are plain JSON before they are stored


def test_gate_result_reads_as_one_sentence() -> None:
    assert result().describe() == "Krippendorff's alpha of agreement 0.62 must be at least 0.67 (n=190): FAILED"
    assert result(passed=True, statistic=None, value=0.7).describe() == (
        "agreement 0.7 must be at least 0.67 (n=190): passed")


def test_a_gate_that_does_not_apply_says_it_passed_and_why() -> None:
    skipped = result(passed=True, worst=[{"not_applicable": "no published data on main to compare with"}])
    assert skipped.not_applicable == "no published data on main to compare with"
    assert skipped.describe() == "agreement: passed, not applicable (no published data on main to compare with)"


def test_measurement_ignores_where_and_when() -> None:
    again = result(computed_on=ComputedOn(commit_id="beef"), evaluated_at=datetime(2026, 12, 2, tzinfo=UTC))
    assert again != result() and again.measurement() == result().measurement()
    assert result(value=0.61).measurement() != result().measurement()


@pytest.mark.parametrize(("comparison", "value", "holds"), [
    (Comparison.AT_LEAST, 0.67, True), (Comparison.AT_LEAST, 0.66, False),
    (Comparison.AT_MOST, 0.05, True), (Comparison.AT_MOST, 0.051, False)])
def test_comparison_holds_at_its_threshold(comparison: Comparison, value: float, holds: bool) -> None:
    threshold = 0.67 if comparison is Comparison.AT_LEAST else 0.05
    assert comparison.holds(value, threshold) is holds


def candidate_metadata() -> CommitMetadata:
    verdict = GateVerdict(passed=True, value=0.9, threshold=0.8, comparison=Comparison.AT_LEAST)
    return CommitMetadata.with_counts({"published": 180, "balanced": True}, stage=PUBLISHED_STAGE,
                                      tenant="northbank", dataset="support_intents", batch_id="b1",
                                      dagster_run_id="run-1", gates={"agreement": verdict},
                                      approved_by=("ana@northbank", "li@northbank"), approved_commit="c0ffee")


def test_commit_metadata_round_trips_through_flat_lakefs_strings() -> None:
    meta = candidate_metadata()
    flat = meta.to_lakefs()
    assert all(isinstance(v, str) and k.startswith("trainyard.") for k, v in flat.items())
    assert flat["trainyard.published"] == "180" and flat["trainyard.approved_by"] == "ana@northbank,li@northbank"
    assert CommitMetadata.from_lakefs({**flat, "author_note": "ignored"}) == meta
    assert meta.count("published") == 180 and meta.count("missing", default=-1) == -1
    assert meta.belongs_to("support_intents", "b1") and not meta.belongs_to("support_intents", "b2")


def test_a_commit_trainyard_did_not_make_has_no_record() -> None:
    assert CommitMetadata.from_lakefs({"author_note": "hand-made"}) is None
    assert CommitMetadata.from_lakefs(None) is None


@pytest.mark.parametrize(("gates", "key"), [
    ("{not json", "trainyard.gates"),
    (json.dumps({"agreement": {"passed": True}}), "trainyard.gates.agreement.value"),
    (json.dumps({"agreement": {"passed": True, "value": 1, "threshold": 0, "comparison": "~"}}),
     "trainyard.gates.agreement.comparison")])
def test_metadata_trainyard_could_not_have_written_is_refused_naming_the_key(gates: str, key: str) -> None:
    flat = {**candidate_metadata().to_lakefs(), "trainyard.gates": gates}
    with pytest.raises(MalformedMetadata) as refused:
        CommitMetadata.from_lakefs(flat)
    assert str(refused.value).startswith(f"{key}:")
