"""The stage table: the order of a batch's processing stages, what each runs, what it needs and which gates judge it.

Written once and read by both the Dagster asset factory (one asset per row, its gates as asset checks) and the
batch runner (the same order without Dagster), so the two can never disagree about the pipeline. ``published``
is the last stage of every batch and follows the table's last row; it is not a row because it decides rather
than transforms (policy, approvals, the merge into ``main``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from dagster_project.gates import Gate, gates_for
from dagster_project.layout import Stage
from dagster_project.stages import runners
from dagster_project.stages.batch import Batch, StageReport
from dagster_project.stages.runners import StageInputs


@dataclass(frozen=True)
class StageStep:
    """One processing stage of a batch."""

    stage: Stage
    run: Callable[[Batch, StageInputs], StageReport]
    description: str
    """What an operator reads on the asset in the Dagster UI."""
    needs: frozenset[str] = frozenset()
    """What the stage takes from :class:`StageInputs` besides the batch: ``landing`` (the S3 landing zone and the
    lakeFS storage namespace), ``vendors`` (the labeling workforces)."""
    kinds: frozenset[str] = frozenset({"python", "lakefs"})

    @property
    def gates(self) -> tuple[Gate, ...]:
        return gates_for(self.stage)


STAGE_PLAN: tuple[StageStep, ...] = (
    StageStep(Stage.RAW, runners.run_raw,
              "Every record of a landing drop, parsed, with lineage (source file, line, license, consent). "
              "Unparsable lines and drops without a valid manifest are quarantined with file, line and reason.",
              needs=frozenset({"landing"}), kinds=frozenset({"python", "s3", "lakefs"})),
    StageStep(Stage.CLEAN, runners.run_clean,
              "Unicode-normalised records typed against the dataset schema; records missing required fields or "
              "out of range are quarantined with the field and reason."),
    StageStep(Stage.PII, runners.run_pii,
              "Records after PII handling, before anything leaves for a vendor: emails, phone numbers, IBANs, card "
              "numbers, national ids and IP addresses are redacted or the record is dropped (quarantined), per the "
              "dataset's pii_policy. Findings keep kinds and positions, never values."),
    StageStep(Stage.DEDUP, runners.run_dedup,
              "Records with exact duplicates (normalised text) removed, within the batch and against every batch "
              "already published on main."),
    StageStep(Stage.LABELING_TASKS, runners.run_labeling_tasks,
              "One task per item and replica (overlap k), routed to vendors by share, with known-answer gold items "
              "mixed in at the dataset's gold_rate.", needs=frozenset({"landing"})),
    StageStep(Stage.ANNOTATIONS, runners.run_annotations,
              "Judgements returned by the labeling vendors, with annotator, latency and cost.",
              needs=frozenset({"vendors"}), kinds=frozenset({"python", "lakefs", "labeling"})),
    StageStep(Stage.CONSOLIDATED_LABELS, runners.run_consolidation,
              "One label per item by majority vote, with its confidence."),
)

PUBLISHED_DESCRIPTION = (
    "The batch merged into the tenant's lakeFS main and tagged as a dataset version -- the only data training may "
    "read. Runs only after every blocking gate passed and the record counts reconcile (records in = published + "
    "quarantined + duplicates).")


def upstream_of(stage: Stage) -> Stage | None:
    """The stage whose output ``stage`` reads (None for ``raw``); ``published`` follows the table's last row."""
    order = [step.stage for step in STAGE_PLAN] + [Stage.PUBLISHED]
    index = order.index(stage)
    return order[index - 1] if index else None
