"""Run one batch's stages and gates in order, without Dagster: for tests, the benchmark and debugging.

Dagster is how batches run in every deployment (sensors, partitions, blocking checks, run history). This
runner walks the same stage table (:data:`~dagster_project.plan.STAGE_PLAN`) -- each stage, then that stage's
gates, stopping at the first failed blocking gate -- so the domain logic can be exercised end to end on its own.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from dagster_project.gates import evaluate_and_record
from dagster_project.layout import Stage
from dagster_project.plan import STAGE_PLAN
from dagster_project.publishing.approvals import ApprovalStore
from dagster_project.publishing.publish import PublishOutcome, run_publish
from dagster_project.quality.result import GateResult
from dagster_project.stages.batch import Batch, StageReport
from dagster_project.stages.runners import StageInputs


@dataclass
class BatchRun:
    reports: dict[Stage, StageReport] = field(default_factory=dict)
    outcomes: dict[str, GateResult] = field(default_factory=dict)
    blocked_by: list[str] = field(default_factory=list)
    published: PublishOutcome | None = None


def run_batch(batch: Batch, inputs: StageInputs, publish: bool = True, store: ApprovalStore | None = None) -> BatchRun:
    run = BatchRun()
    for step in STAGE_PLAN:
        run.reports[step.stage] = step.run(batch, inputs)
        for gate in step.gates:
            outcome = evaluate_and_record(batch, gate.name)
            run.outcomes[gate.name] = outcome
            if gate.blocking and not outcome.passed:
                run.blocked_by.append(gate.name)
        if run.blocked_by:
            return run
    if publish:
        run.published = run_publish(batch, store)
    return run
