"""Run one batch's stages and gates in order, without Dagster: for tests, the benchmark and debugging.

Dagster is how batches run in every deployment (sensors, partitions, blocking checks, run history). This
runner mirrors its order -- each stage, then that stage's gates, stopping at the first failed blocking gate --
so the domain logic can be exercised end to end on its own.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from dagster_project import pipeline
from dagster_project.gates import GATES, evaluate_and_record
from dagster_project.governance import ApprovalStore
from dagster_project.layout import Stage
from dagster_project.publish import PublishOutcome, run_publish
from dagster_project.quality.checks import CheckOutcome
from dagster_project.vendors.base import VendorClient


@dataclass
class BatchRun:
    reports: dict[Stage, pipeline.StageReport] = field(default_factory=dict)
    outcomes: dict[str, CheckOutcome] = field(default_factory=dict)
    blocked_by: list[str] = field(default_factory=list)
    published: PublishOutcome | None = None


def run_batch(batch: pipeline.Batch, s3: Any, landing_bucket: str, storage_namespace: str,
              vendors: dict[str, VendorClient], gold_set: pd.DataFrame, publish: bool = True,
              store: ApprovalStore | None = None) -> BatchRun:
    steps = {
        Stage.RAW: lambda: pipeline.run_raw(batch, s3, landing_bucket, storage_namespace),
        Stage.CLEAN: lambda: pipeline.run_clean(batch),
        Stage.PII: lambda: pipeline.run_pii(batch),
        Stage.DEDUP: lambda: pipeline.run_dedup(batch),
        Stage.LABELING_TASKS: lambda: pipeline.run_labeling_tasks(batch, gold_set),
        Stage.ANNOTATIONS: lambda: pipeline.run_annotations(batch, vendors),
        Stage.CONSOLIDATED_LABELS: lambda: pipeline.run_consolidation(batch),
    }
    run = BatchRun()
    for stage, step in steps.items():
        run.reports[stage] = step()
        for gate in (g for g in GATES if g.stage == stage):
            outcome = evaluate_and_record(batch, gate.name)
            run.outcomes[gate.name] = outcome
            if gate.blocking and not outcome.passed:
                run.blocked_by.append(gate.name)
        if run.blocked_by:
            return run
    if publish:
        run.published = run_publish(batch, store)
    return run
