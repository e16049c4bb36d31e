"""The quality gates: which stage each judges, whether it blocks, and how results are recorded on the batch branch.

Blocking gates become ``@asset_check(blocking=True)`` with ERROR severity on the stage they judge, so a failure
stops every downstream asset of that run; soft signals are WARN checks that never block. Every result is also
committed on the batch branch (``datasets/<dataset>/gates/batch=<id>/<gate>.json``) with the commit and paths it
was computed on, and publishing re-checks those records, so nothing reaches ``main`` unless every blocking gate
passed on it.

Gates that need a statistical margin use one: gold accuracy blocks the batch only when the Wilson upper bound
of the accuracy (95% overall, 99.9% per annotator with at least ten gold judgements) is under the threshold, so
a 98%-accurate annotator is not blocked by an unlucky miss or two, while a spammer is.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from dagster_project import layout
from dagster_project.gates import evaluations as e
from dagster_project.layout import Stage
from dagster_project.quality.result import ComputedOn, GateResult
from dagster_project.stages.batch import Batch


@dataclass(frozen=True)
class Gate:
    """A quality dimension: which stage it judges, whether it blocks, and how it is evaluated."""

    name: str
    stage: Stage
    blocking: bool
    summary: str
    evaluate: Callable[[Batch], GateResult]
    unit: str = "score"
    """How the value reads: ``share`` (a percentage), ``count`` or ``score``."""
    reads: str = ""
    """What the value is, after the number: ``PII findings left in texts about to go to vendors``."""


GATES: tuple[Gate, ...] = (
    Gate("completeness", Stage.CLEAN, True, "share of records with every required field present",
         e.evaluate_completeness, "share", "of records have every required field"),
    Gate("duplicate_rate", Stage.DEDUP, True, "share of records that duplicate the batch or main",
         e.evaluate_duplicate_rate, "share", "of records duplicate another record of the batch or of main"),
    Gate("synthetic_share", Stage.DEDUP, True, "share of records flagged synthetic", e.evaluate_synthetic_share,
         "share", "of records are flagged synthetic"),
    Gate("synthetic_fidelity", Stage.DEDUP, True, "classifier two-sample test, synthetic vs real (AUC near 0.5)",
         e.evaluate_synthetic_fidelity, "score", "is |AUC - 0.5| of a classifier telling synthetic from real"),
    Gate("gold_set", Stage.LABELING_TASKS, True, "gold items mixed in before anything goes to a vendor",
         e.evaluate_gold_set, "count", "gold items were mixed into the tasks"),
    Gate("pii_residual", Stage.LABELING_TASKS, True, "PII left in texts about to be sent to vendors",
         e.evaluate_pii_residual, "count", "PII findings are left in texts about to go to vendors"),
    Gate("gold_accuracy", Stage.ANNOTATIONS, True, "accuracy on known-answer items, per annotator and overall",
         e.evaluate_gold_accuracy, "share", "is the lowest Wilson upper bound of gold accuracy"),
    Gate("agreement", Stage.CONSOLIDATED_LABELS, True, "Krippendorff's alpha between annotators",
         e.evaluate_agreement, "score", "is Krippendorff's alpha between annotators"),
    Gate("class_balance", Stage.CONSOLIDATED_LABELS, True, "smallest class share", e.evaluate_class_balance,
         "share", "is the smallest class's share"),
    Gate("drift", Stage.CONSOLIDATED_LABELS, True, "largest PSI of any feature or the labels against main",
         e.evaluate_drift, "score", "is the largest PSI of a feature against main"),
    Gate("slice_audit", Stage.CONSOLIDATED_LABELS, False, "slices with worse agreement, accuracy or coverage",
         e.evaluate_slice_audit, "count", "slices are clearly worse than the batch overall"),
    Gate("aggregation_consistency", Stage.CONSOLIDATED_LABELS, False,
         "share of items where Dawid-Skene and majority vote disagree", e.evaluate_aggregation_consistency,
         "share", "of items get another label from Dawid-Skene than from majority vote"),
)


def gate(name: str) -> Gate:
    for candidate in GATES:
        if candidate.name == name:
            return candidate
    raise KeyError(f"no gate named '{name}'")


def _figure(value: float, unit: str) -> str:
    if unit == "share":
        return f"{value * 100:.4g}%"
    if float(value).is_integer():
        return str(int(value))
    return format(value, ".3g")


def sentence(result: GateResult) -> str:
    """One sentence a person reads, e.g. ``pii_residual: 110 PII findings are left in texts about to go to
    vendors; at most 0 allowed -- FAILED``. (``describe()`` for a result no gate of this registry made.)"""
    try:
        spec = gate(result.name)
    except KeyError:
        return result.describe()
    if result.not_applicable:
        return f"{result.name}: not applicable ({result.not_applicable}) -- passed"
    bound = "allowed" if result.comparison.value == "<=" else "required"
    verdict = "passed" if result.passed else "FAILED"
    return (f"{result.name}: {_figure(result.value, spec.unit)} {spec.reads}; {result.comparison.phrase} "
            f"{_figure(result.threshold, spec.unit)} {bound} (n={result.sample_size}) -- {verdict}")


def stages_after(stage: Stage, inclusive: bool = False) -> list[Stage]:
    """The stages that come after ``stage`` in a batch (and ``stage`` itself if ``inclusive``)."""
    order = list(Stage)
    return order[order.index(stage) + (0 if inclusive else 1):]


def gates_for(stage: Stage) -> tuple[Gate, ...]:
    """The gates that judge ``stage``'s output, in evaluation order."""
    return tuple(g for g in GATES if g.stage == stage)


def blocking_gate_names() -> list[str]:
    return [g.name for g in GATES if g.blocking]


def evaluate(batch: Batch, name: str) -> GateResult:
    """Measure one gate on the batch branch as it is now, noting the head commit and the paths the gate read."""
    head = batch.repo.branch_head(batch.branch)
    tracked = replace(batch, reads=[])
    result = gate(name).evaluate(tracked)
    own = tuple(dict.fromkeys(path for ref, path in tracked.reads if ref == batch.branch))
    reference = next((ref for ref, _ in tracked.reads if ref != batch.branch), None)
    return result.model_copy(update={"computed_on": ComputedOn(commit_id=head, paths=own,
                                                               reference_commit=reference)})


def record_gate(batch: Batch, result: GateResult) -> str:
    """Write a gate result onto the batch branch and commit it, pass or fail, for the audit trail.

    Re-evaluating a gate on unchanged data keeps the recorded result (with its time and the commit it was first
    computed on) instead of making a new commit.
    """
    path = layout.gate_result_path(batch.dataset.name, batch.batch_id, result.name)
    data = batch.repo.get_bytes(batch.branch, path)
    if data is None or GateResult.from_json(data).measurement() != result.measurement():
        stamped = result.model_copy(update={"evaluated_at": result.evaluated_at or datetime.now(UTC)})
        batch.repo.put_bytes(batch.branch, path, stamped.to_json())
    return batch.commit(f"gate:{result.name}", f"gate {result.describe()}", gates={result.name: result.verdict()})


def evaluate_and_record(batch: Batch, name: str) -> GateResult:
    result = evaluate(batch, name)
    record_gate(batch, result)
    return result


def read_gate_results(batch: Batch, ref: str | None = None) -> list[GateResult]:
    """Every gate result recorded for the batch at ``ref`` (its branch by default), in path order."""
    prefix = layout.gate_results_prefix(batch.dataset.name, batch.batch_id)
    ref = ref or batch.branch
    return [GateResult.from_json(batch.repo.get_bytes(ref, path) or b"")
            for path in batch.repo.list_paths(ref, prefix) if path.endswith(".json")]
