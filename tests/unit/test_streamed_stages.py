"""The streamed stages (raw, clean, pii, dedup) on several parts and worker processes, and near-duplicates of
what an earlier batch published.

Parallel and single-process runs of the same drop must leave identical data on the branch; a near-copy (a typo, a
changed word) of a record already on ``main`` is removed with ``duplicate_of`` naming that record, and the batch
still reconciles record by record.
"""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime

import numpy as np
import pandas as pd

from dagster_project import layout
from dagster_project.devservices.sample_data import build_drop, upload_drop
from dagster_project.layout import Stage
from dagster_project.stages import parts
from dagster_project.stages.batch import DUPLICATES_FILE, PII_FINDINGS_FILE
from dagster_project.stages.runners import run_clean, run_dedup, run_pii, run_raw
from dagster_project.tenants import TenantsConfig
from tests.unit.harness import BUCKET, harness

NOW = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


def _run_streamed(tmp_path, tenant, dataset, workers: int) -> dict[str, pd.DataFrame]:
    with harness(tmp_path / f"w{workers}") as pipeline:
        plan = build_drop(tenant, dataset, "parts", 400, seed=5)
        upload_drop(pipeline.s3, BUCKET, plan)
        batch = pipeline.batch(tenant, dataset, "parts")
        inputs = replace(pipeline.inputs(tenant, dataset), workers=workers, part_rows=60)
        reports = [run_raw(batch, inputs, now=NOW), run_clean(batch, inputs), run_pii(batch, inputs),
                   run_dedup(batch, inputs)]
        out = {str(stage): batch.read(stage) for stage in (Stage.RAW, Stage.CLEAN, Stage.PII, Stage.DEDUP)}
        out |= {f"{stage}/quarantine": batch.repo.require_frame(batch.branch, batch.quarantine_path(stage))
                for stage in (Stage.RAW, Stage.CLEAN, Stage.PII)}
        out["findings"] = batch.read(Stage.PII, PII_FINDINGS_FILE)
        out["duplicates"] = batch.read(Stage.DEDUP, DUPLICATES_FILE)
        out["parts"] = pd.DataFrame({"raw": [len(batch.part_paths(Stage.RAW))]})
        out["counts"] = pd.DataFrame([r.counts for r in reports]).astype(str)
        return out


def test_parallel_and_single_process_runs_leave_identical_data(tmp_path, example_config: TenantsConfig,
                                                                monkeypatch) -> None:
    monkeypatch.setattr(parts, "PARALLEL_FROM_ROWS", 100)  # start the pool after the first couple of parts
    tenant = example_config.tenant("northbank")
    dataset = tenant.dataset("support_intents")
    single = _run_streamed(tmp_path, tenant, dataset, workers=1)
    parallel = _run_streamed(tmp_path, tenant, dataset, workers=2)
    assert single["parts"]["raw"].iloc[0] >= 6  # several parts per file, so the workers really share the work
    assert len(single["pii"]) > 300 and len(single["findings"]) and len(single["duplicates"])
    for name, frame in single.items():
        pd.testing.assert_frame_equal(parallel[name], frame, obj=name)


def test_a_near_copy_of_a_published_record_is_removed_as_its_duplicate(pipeline, example_config) -> None:
    tenant = example_config.tenant("northbank")
    dataset = tenant.dataset("support_intents")
    first = pipeline.process(tenant, dataset, build_drop(tenant, dataset, "week-1", 160, seed=1))
    assert first.published is not None and first.published.status == "published", first.blocked_by
    repo = pipeline.repo(tenant.lakefs_repository)
    published = repo.require_frame(layout.MAIN_BRANCH, layout.stage_data_path(dataset.name, Stage.PUBLISHED, "week-1"))
    assert repo.list_paths(layout.MAIN_BRANCH, layout.neardup_index_prefix(dataset.name))  # main keeps the keys
    original = published.iloc[3]
    text = original["text"]
    typo = text[:20] + text[21] + text[20] + text[22:]  # two letters swapped
    plan = build_drop(tenant, dataset, "week-2", 160, seed=2, plant_defects=False)
    name = next(key for key in plan.files if key.endswith(".jsonl"))
    lines = plan.files[name].decode().splitlines()
    record = json.loads(lines[0]) | {"text": typo}
    plan.files[name] = ("\n".join([json.dumps(record), *lines[1:]]) + "\n").encode()
    second = pipeline.process(tenant, dataset, plan)
    batch = pipeline.batch(tenant, dataset, "week-2")
    duplicates = batch.read(Stage.DEDUP, DUPLICATES_FILE)
    near = duplicates[duplicates["duplicate_of"] == original["record_id"]]
    assert len(near) == 1 and near["scope"].iloc[0] == "main"
    assert 0.8 <= near["similarity"].iloc[0] < 1.0
    assert near["record_id"].iloc[0] not in set(batch.read(Stage.DEDUP)["record_id"])
    assert second.published is not None and second.published.status == "published", second.blocked_by
    assert second.published.conservation is not None and second.published.conservation.balanced


def test_band_keys_are_compacted_in_place_exactly_as_a_copy_would_select_them() -> None:
    from dagster_project.stages.runners import _compact

    rng = np.random.default_rng(3)
    for n, share in [(0, 0.5), (10, 1.0), (200_000, 0.93), (200_000, 0.01)]:
        keys = rng.integers(0, 2**63, size=(n, 5), dtype=np.uint64)
        keep = np.flatnonzero(rng.random(n) < share)
        expected = keys[keep].copy()
        assert np.array_equal(_compact(keys, keep), expected)
