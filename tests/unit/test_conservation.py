"""Record conservation: each raw record in exactly one terminal state, checked id by id and in total."""

from __future__ import annotations

import pandas as pd

from dagster_project.conservation import ConservationReport, reconcile


def ids(*values: str) -> pd.Series:
    return pd.Series(values, dtype="string")


RAW = ids("r1", "r2", "r3", "r4", "r5", "r6")


def test_balanced_batch() -> None:
    report = reconcile(RAW, ids("r1", "r2", "r3"), ids("r4", "r5"), ids("r6"))
    assert report == ConservationReport(records_in=6, published=3, quarantined=2, duplicates=1)
    assert report.balanced
    assert report.as_dict() == {"records_in": 6, "published": 3, "quarantined": 2, "duplicates": 1, "balanced": True}
    assert report.describe() == "records in 6 = published 3 + quarantined 2 + duplicates 1"


def test_record_without_terminal_state_is_named() -> None:
    report = reconcile(RAW, ids("r1", "r2", "r3"), ids("r5"), ids("r6"))
    assert report.missing == ["r4"]
    assert report.multiple == []
    assert not report.balanced
    assert report.describe() == (
        "records in 6 = published 3 + quarantined 1 + duplicates 1; 1 records without a terminal state (e.g. r4)"
    )


def test_record_in_two_states_is_named() -> None:
    # r3 is both published and a duplicate; r6 ended nowhere else, so it is missing too.
    report = reconcile(RAW, ids("r1", "r2", "r3"), ids("r4", "r5"), ids("r3"))
    assert report.multiple == ["r3"]
    assert report.missing == ["r6"]
    assert not report.balanced
    assert "r3" in report.describe() and "r6" in report.describe()
    assert "1 records in several states (e.g. r3)" in report.describe()


def test_record_twice_in_the_same_state_is_named() -> None:
    report = reconcile(RAW, ids("r1", "r2", "r3", "r3"), ids("r4", "r5"), ids("r6"))
    assert report.multiple == ["r3"]
    assert report.published == 4
    assert not report.balanced


def test_unknown_id_in_a_terminal_state_is_flagged() -> None:
    report = reconcile(RAW, ids("r1", "r2", "r3", "zz"), ids("r4", "r5"), ids("r6"))
    assert report.multiple == ["zz"]
    assert report.missing == []
    assert not report.balanced


def test_totals_mismatch_without_any_named_record_is_not_balanced() -> None:
    """Every id is accounted for exactly once, yet raw holds r1 twice: 7 in, 6 out."""
    raw = ids("r1", "r1", "r2", "r3", "r4", "r5", "r6")
    report = reconcile(raw, ids("r1", "r2", "r3"), ids("r4", "r5"), ids("r6"))
    assert (report.missing, report.multiple) == ([], [])
    assert report.records_in == 7
    assert not report.balanced
    assert report.as_dict()["balanced"] is False


def test_describe_lists_at_most_five_example_ids_but_the_full_count() -> None:
    raw = ids(*(f"r{i:02d}" for i in range(10)))
    report = reconcile(raw, ids(), ids(), ids())
    assert report.missing == [f"r{i:02d}" for i in range(10)]
    assert report.describe().endswith("10 records without a terminal state (e.g. r00, r01, r02, r03, r04)")


def test_empty_batch_is_balanced() -> None:
    assert reconcile(ids(), ids(), ids(), ids()).balanced
