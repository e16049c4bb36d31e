"""Quality gates: one per quality dimension, evaluated on the batch branch, recorded there, enforced at publish.

Each gate reads what its stage wrote to the batch branch, calls a plain function of
:mod:`dagster_project.quality` (or :mod:`dagster_project.pii`) and returns a
:class:`~dagster_project.quality.checks.CheckOutcome` with the value, the threshold, the sample size and the
worst offenders. Blocking gates become ``@asset_check(blocking=True)`` with ERROR severity on the stage they
judge, so a failure stops every downstream asset of that run; soft signals are WARN checks that never block.
Every outcome is also committed on the batch branch (``datasets/<dataset>/gates/batch=<id>/<gate>.json``), and
publishing re-checks those records, so nothing reaches ``main`` unless every blocking gate passed on it.

Gates that need a statistical margin use one: gold accuracy blocks the batch only when the Wilson upper bound
of the accuracy (95% overall, 99.9% per annotator with at least ten gold judgements) is under the threshold, so
a 98%-accurate annotator is not blocked by an unlucky miss or two, while a spammer is.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from typing import Any

import pandas as pd

from dagster_project import layout
from dagster_project.ingest import read_payloads
from dagster_project.layout import Stage
from dagster_project.pipeline import DUPLICATES_FILE, GOLD_FILE, Batch, batch_judgements, build_published
from dagster_project.quality.aggregation import dawid_skene, majority_vote
from dagster_project.quality.agreement import krippendorff_alpha, percent_agreement
from dagster_project.quality.checks import CheckOutcome, class_balance, completeness, duplicate_rate, pii_residual
from dagster_project.quality.drift import drift_check, drift_report, label_drift
from dagster_project.quality.gold import gold_accuracy
from dagster_project.quality.slices import slice_metrics
from dagster_project.quality.synthetic import classifier_two_sample_test, synthetic_share

MIN_GOLD_SUPPORT = 10
"""Gold judgements an annotator needs before their own accuracy can block a batch."""
PER_ANNOTATOR_ALPHA = 0.001
MIN_SYNTHETIC_TEST_ROWS = 20
"""Rows needed on each side for the synthetic-vs-real classifier test."""
DRIFT_REFERENCE_ROWS = 50_000
"""Largest sample of main's published records used as the drift reference."""
MAX_AGGREGATION_DISAGREEMENT = 0.05


@dataclass(frozen=True)
class Gate:
    """A quality dimension: which stage it judges, whether it blocks, and how it is evaluated."""

    name: str
    stage: Stage
    blocking: bool
    summary: str
    evaluate: Callable[[Batch], CheckOutcome]


def _not_applicable(name: str, threshold: float, comparison: str, why: str, sample_size: int = 0) -> CheckOutcome:
    return CheckOutcome(name, True, 0.0, threshold, comparison, sample_size, [{"not_applicable": why}])


# -- evaluations ----------------------------------------------------------------------------------------------
def evaluate_completeness(batch: Batch) -> CheckOutcome:
    """Share of parsed records with every required field present (missing ones were quarantined by clean)."""
    raw = batch.read(Stage.RAW)
    required = batch.dataset.record_schema.required
    payloads = pd.DataFrame(read_payloads(raw)) if len(raw) else pd.DataFrame()
    frame = payloads.reindex(columns=required).assign(record_id=raw["record_id"].to_numpy())
    return completeness(frame, required, batch.dataset.gates.min_completeness)


def evaluate_duplicate_rate(batch: Batch) -> CheckOutcome:
    duplicates = batch.read(Stage.DEDUP, DUPLICATES_FILE)
    candidates = len(batch.read(Stage.PII))
    outcome = duplicate_rate(len(duplicates), candidates, batch.dataset.gates.max_duplicate_rate)
    # Worst offenders: the records duplicated most often (where the copies come from).
    counts = duplicates.groupby(["duplicate_of", "scope"]).size().sort_values(ascending=False).head(10)
    worst = [{"record_id": record, "scope": scope, "copies": int(n)} for (record, scope), n in counts.items()]
    return replace(outcome, worst=worst)


def _synthetic_flags(records: pd.DataFrame, field: str | None) -> pd.Series:
    if field is None:
        return pd.Series(False, index=records.index)
    return records[field].fillna(False).astype(bool)


def evaluate_synthetic_share(batch: Batch) -> CheckOutcome:
    records = batch.read(Stage.DEDUP)
    flags = _synthetic_flags(records, batch.dataset.synthetic_field)
    outcome = synthetic_share(flags, batch.dataset.gates.max_synthetic_share)
    # Worst offenders: where the synthetic records came from (source files), most first.
    by_source = records.loc[flags, "source_uri"].value_counts().head(10)
    worst = [{"source_uri": uri, "synthetic_records": int(n)} for uri, n in by_source.items()]
    return replace(outcome, worst=worst)


def evaluate_synthetic_fidelity(batch: Batch) -> CheckOutcome:
    """Can a classifier tell the batch's synthetic records from its real ones? AUC near 0.5 means no."""
    records = batch.read(Stage.DEDUP)
    flags = _synthetic_flags(records, batch.dataset.synthetic_field)
    real, synthetic = records[~flags], records[flags]
    if min(len(real), len(synthetic)) < MIN_SYNTHETIC_TEST_ROWS:
        return _not_applicable("synthetic_fidelity", 0.1, "|auc-0.5| <=",
                               f"needs {MIN_SYNTHETIC_TEST_ROWS} real and synthetic records, has {len(real)} real "
                               f"and {len(synthetic)} synthetic", int(flags.sum()))
    schema = batch.dataset.record_schema
    numeric = [n for n, f in schema.fields.items() if f.type in ("integer", "number")]
    categorical = [n for n, f in schema.fields.items() if f.allowed and n != batch.dataset.synthetic_field]
    result = classifier_two_sample_test(real, synthetic, text_field=schema.text_field, numeric=numeric,
                                        categorical=categorical)
    return CheckOutcome("synthetic_fidelity", result.passed, round(abs(result.auc - 0.5), 4), result.tolerance,
                        "|auc-0.5| <=", result.n_synthetic,
                        [{"auc": round(result.auc, 4), "auc_std": round(result.auc_std, 4), "n_real": result.n_real,
                          "n_synthetic": result.n_synthetic}])


def evaluate_pii_residual(batch: Batch) -> CheckOutcome:
    """PII left in what is about to be sent to vendors (every task text, gold included)."""
    tasks = batch.read(Stage.LABELING_TASKS).drop_duplicates("item_id")
    frame = pd.DataFrame({"record_id": tasks["item_id"], "text": tasks["text"]})
    return pii_residual(frame, "text", batch.dataset.gates.max_pii_residual)


def evaluate_gold_accuracy(batch: Batch) -> CheckOutcome:
    threshold = batch.dataset.gates.min_gold_accuracy
    gold = batch.read(Stage.LABELING_TASKS, GOLD_FILE)
    if batch.dataset.gold_rate == 0:
        return _not_applicable("gold_accuracy", threshold, ">=", "dataset gold_rate is 0")
    judgements = batch.read(Stage.ANNOTATIONS)
    if judgements.empty:
        return _not_applicable("gold_accuracy", threshold, ">=", "nothing was labelled in this batch")
    if gold.empty:
        return CheckOutcome("gold_accuracy", False, 0.0, threshold, ">=", 0,
                            [{"problem": "no gold items in the batch: add a gold set under "
                                         f"{batch.tenant.landing_prefix}/{batch.dataset.name}/gold/"}])
    overall = gold_accuracy(judgements, gold).set_index("annotator_id").loc["__overall__"]
    # Per annotator at 99.9%: with 10-20 gold judgements each and half a dozen annotators per batch, a 95% or
    # even 99% bound blocks a good annotator (two unlucky misses) in several percent of batches; at 99.9% that
    # takes four misses out of thirteen for a 98% annotator (p ~ 1e-4), while a spammer (accuracy near
    # 1/len(labels)) or a 70% annotator is still far below.
    table = gold_accuracy(judgements, gold, alpha=PER_ANNOTATOR_ALPHA)
    annotators = table[(table["annotator_id"] != "__overall__") & (table["n_gold"] >= MIN_GOLD_SUPPORT)]
    # Block on the lowest upper bound: the batch (or one annotator) is *significantly* below the threshold.
    value = float(min([overall["ci_high"], *annotators["ci_high"]]))
    ranked = table[table["annotator_id"] != "__overall__"].sort_values(["ci_high", "accuracy"]).head(10)
    worst = [{"annotator_id": r.annotator_id, "accuracy": round(float(r.accuracy), 4), "n_gold": int(r.n_gold),
              "ci_high_999": round(float(r.ci_high), 4)} for r in ranked.itertuples()]
    worst.insert(0, {"annotator_id": "__overall__", "accuracy": round(float(overall["accuracy"]), 4),
                     "n_gold": int(overall["n_gold"]), "ci_high_95": round(float(overall["ci_high"]), 4)})
    return CheckOutcome("gold_accuracy", value >= threshold, round(value, 4), threshold, ">= (upper bound)",
                        int(overall["n_gold"]), worst)


def evaluate_agreement(batch: Batch) -> CheckOutcome:
    """Krippendorff's alpha (nominal) over the batch's own items: chance-corrected inter-annotator agreement."""
    judgements = batch_judgements(batch)
    threshold = batch.dataset.gates.min_agreement
    if judgements.empty:
        return _not_applicable("agreement", threshold, ">=", "nothing was labelled in this batch")
    per_item = judgements.groupby("item_id").size()
    sample_size = int((per_item >= 2).sum())
    alpha = krippendorff_alpha(judgements, level="nominal") if sample_size else float("nan")
    votes = majority_vote(judgements).sort_values("confidence").head(10)
    worst = [{"item_id": r.item_id, "majority_label": r.label, "confidence": round(float(r.confidence), 4)}
             for r in votes.itertuples()]
    observed = percent_agreement(judgements)
    worst.append({"percent_agreement": round(observed, 4)})
    # Alpha is 0/0 when a batch holds a single label and everyone agrees: perfect agreement, not a failure.
    value = (1.0 if observed == 1.0 else 0.0) if pd.isna(alpha) else round(float(alpha), 4)
    return CheckOutcome("agreement", bool(sample_size and value >= threshold), value, threshold, ">=",
                        sample_size, worst)


def evaluate_class_balance(batch: Batch) -> CheckOutcome:
    labels = batch.read(Stage.CONSOLIDATED_LABELS)["label"]
    threshold = batch.dataset.gates.min_class_share
    if labels.empty:
        return _not_applicable("class_balance", threshold, ">=", "nothing was labelled in this batch")
    return class_balance(labels, batch.dataset.labels, threshold)


def drift_features(batch: Batch) -> tuple[list[str], list[str]]:
    schema = batch.dataset.record_schema
    numeric = [n for n, f in schema.fields.items() if f.type in ("integer", "number")] + ["text_length"]
    categorical = [n for n, f in schema.fields.items() if f.allowed or f.type == "boolean"] + ["label"]
    return numeric, categorical


def _with_text_length(frame: pd.DataFrame, text_field: str) -> pd.DataFrame:
    return frame.assign(text_length=frame[text_field].str.len().astype(float))


def evaluate_drift(batch: Batch) -> CheckOutcome:
    """PSI (and KS / chi-squared) of every feature and the label distribution against what main holds."""
    threshold = batch.dataset.gates.max_drift_psi
    text_field = batch.dataset.record_schema.text_field
    own = layout.stage_data_path(batch.dataset.name, Stage.PUBLISHED, batch.batch_id)
    paths = [p for p in batch.repo.list_paths(layout.MAIN_BRANCH, layout.published_prefix(batch.dataset.name))
             if p.endswith(".parquet") and p != own]
    current = build_published(batch)
    if not paths or current.empty:
        return _not_applicable("drift", threshold, "<=", "no published data on main to compare with"
                               if not paths else "nothing was labelled in this batch", len(current))
    reference = pd.concat([batch.repo.require_frame(layout.MAIN_BRANCH, p) for p in paths], ignore_index=True)
    if len(reference) > DRIFT_REFERENCE_ROWS:
        reference = reference.sample(DRIFT_REFERENCE_ROWS, random_state=0)
    numeric, categorical = drift_features(batch)
    report = drift_report(_with_text_length(reference, text_field), _with_text_length(current, text_field),
                          numeric, categorical)
    outcome = drift_check(report, threshold)
    labels = label_drift(reference["label"], current["label"], batch.dataset.labels)
    return CheckOutcome("drift", outcome.passed, outcome.value, threshold, outcome.comparison, len(current),
                        [*outcome.worst, {"label_distribution": {k: round(float(v), 6) for k, v in labels.items()}}])


def evaluate_slice_audit(batch: Batch) -> CheckOutcome:
    """Bias audit (WARN): agreement, coverage and gold accuracy per segment; flags slices worse than overall."""
    segments = batch.dataset.segment_fields
    if not segments:
        return _not_applicable("slice_audit", 0, "<=", "dataset has no segment_fields")
    records = batch.read(Stage.DEDUP)
    judgements = batch_judgements(batch)
    tables = [slice_metrics(records, judgements, segment) for segment in segments]
    table = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()
    flagged = table[table["flagged"]] if len(table) else table
    worst = [{k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()}
             for row in flagged.head(10).to_dict("records")]
    return CheckOutcome("slice_audit", flagged.empty, float(len(flagged)), 0, "<=", len(records), worst)


def evaluate_aggregation_consistency(batch: Batch) -> CheckOutcome:
    """WARN when Dawid-Skene and majority vote disagree on many items: some annotators are unreliable."""
    judgements = batch_judgements(batch)
    if judgements.empty:
        return _not_applicable("aggregation_consistency", MAX_AGGREGATION_DISAGREEMENT, "<=", "nothing labelled")
    majority = majority_vote(judgements).set_index("item_id")["label"]
    model = dawid_skene(judgements, classes=batch.dataset.labels)
    disagree = model.labels.reindex(majority.index) != majority
    worst = [{"item_id": item, "majority_label": majority[item], "dawid_skene_label": model.labels[item]}
             for item in majority.index[disagree][:10]]
    value = round(float(disagree.mean()), 4)
    return CheckOutcome("aggregation_consistency", value <= MAX_AGGREGATION_DISAGREEMENT, value,
                        MAX_AGGREGATION_DISAGREEMENT, "<=", len(majority), worst)


GATES: tuple[Gate, ...] = (
    Gate("completeness", Stage.CLEAN, True, "share of records with every required field present",
         evaluate_completeness),
    Gate("duplicate_rate", Stage.DEDUP, True, "share of records that duplicate the batch or main",
         evaluate_duplicate_rate),
    Gate("synthetic_share", Stage.DEDUP, True, "share of records flagged synthetic", evaluate_synthetic_share),
    Gate("synthetic_fidelity", Stage.DEDUP, True, "classifier two-sample test, synthetic vs real (AUC near 0.5)",
         evaluate_synthetic_fidelity),
    Gate("pii_residual", Stage.LABELING_TASKS, True, "PII left in texts about to be sent to vendors",
         evaluate_pii_residual),
    Gate("gold_accuracy", Stage.ANNOTATIONS, True, "accuracy on known-answer items, per annotator and overall",
         evaluate_gold_accuracy),
    Gate("agreement", Stage.CONSOLIDATED_LABELS, True, "Krippendorff's alpha between annotators",
         evaluate_agreement),
    Gate("class_balance", Stage.CONSOLIDATED_LABELS, True, "smallest class share", evaluate_class_balance),
    Gate("drift", Stage.CONSOLIDATED_LABELS, True, "largest PSI of any feature or the labels against main",
         evaluate_drift),
    Gate("slice_audit", Stage.CONSOLIDATED_LABELS, False, "slices with worse agreement, accuracy or coverage",
         evaluate_slice_audit),
    Gate("aggregation_consistency", Stage.CONSOLIDATED_LABELS, False,
         "share of items where Dawid-Skene and majority vote disagree", evaluate_aggregation_consistency),
)


def gate(name: str) -> Gate:
    for candidate in GATES:
        if candidate.name == name:
            return candidate
    raise KeyError(f"no gate named '{name}'")


def blocking_gate_names() -> list[str]:
    return [g.name for g in GATES if g.blocking]


def record_gate(batch: Batch, outcome: CheckOutcome) -> str:
    """Write a gate outcome onto the batch branch and commit it, pass or fail, for the audit trail.

    Re-evaluating a gate on unchanged data keeps the recorded outcome (and its time) instead of a new commit.
    """
    path = layout.gate_result_path(batch.dataset.name, batch.batch_id, outcome.name)
    result = outcome_dict(outcome)
    recorded = batch.repo.get_json(batch.branch, path)
    if recorded is None or {k: v for k, v in recorded.items() if k != "evaluated_at"} != result:
        batch.repo.put_json(batch.branch, path, {**result, "evaluated_at": datetime.now(UTC).isoformat()})
    verdict = "passed" if outcome.passed else "FAILED"
    return batch.commit(f"gate:{outcome.name}", f"gate {outcome.name} {verdict} ({outcome.value} "
                        f"{outcome.comparison} {outcome.threshold})", {"gate_passed": outcome.passed})


def outcome_dict(outcome: CheckOutcome) -> dict[str, Any]:
    """JSON-safe form (what is committed on the branch and compared on re-evaluation)."""
    return json.loads(json.dumps(asdict(outcome), default=str))


def evaluate_and_record(batch: Batch, name: str) -> CheckOutcome:
    outcome = gate(name).evaluate(batch)
    record_gate(batch, outcome)
    return outcome


def read_gate_results(batch: Batch, ref: str | None = None) -> list[dict[str, Any]]:
    prefix = layout.gate_results_prefix(batch.dataset.name, batch.batch_id)
    ref = ref or batch.branch
    return [batch.repo.get_json(ref, path) for path in batch.repo.list_paths(ref, prefix) if path.endswith(".json")]
