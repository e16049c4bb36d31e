"""How each quality gate is measured on a batch: read what its stage wrote to the batch branch, call a plain
function of :mod:`dagster_project.quality`, return a :class:`~dagster_project.quality.result.GateResult`.

The list of gates, which stage each judges and whether it blocks, and how results are recorded on the branch are in
:mod:`dagster_project.gates.registry`; these functions only measure, so unit tests call them on a batch held in
the in-memory lakeFS fake.

Gates that need a statistical margin use one: gold accuracy blocks the batch only when the Wilson upper bound
of the accuracy (95% overall, 99.9% per annotator with at least ten gold judgements) is under the threshold, so
a 98%-accurate annotator is not blocked by an unlucky miss or two, while a spammer is.
"""

from __future__ import annotations

import pandas as pd

from dagster_project import layout
from dagster_project.layout import Stage
from dagster_project.quality.aggregation import dawid_skene, majority_vote
from dagster_project.quality.agreement import krippendorff_alpha, percent_agreement
from dagster_project.quality.checks import class_balance, completeness, duplicate_rate, pii_residual
from dagster_project.quality.drift import drift_check, drift_report, label_drift
from dagster_project.quality.gold import gold_accuracy
from dagster_project.quality.result import Comparison, GateResult
from dagster_project.quality.slices import slice_metrics
from dagster_project.quality.synthetic import classifier_two_sample_test, synthetic_share
from dagster_project.stages.batch import DUPLICATES_FILE, GOLD_FILE, Batch
from dagster_project.stages.ingest import read_payloads
from dagster_project.stages.labeling import GOLD_ITEM_PREFIX, gold_sample_size
from dagster_project.stages.runners import batch_judgements, build_published

MIN_GOLD_SUPPORT = 10
"""Gold judgements an annotator needs before their own accuracy can block a batch."""
PER_ANNOTATOR_ALPHA = 0.001
MIN_SYNTHETIC_TEST_ROWS = 20
"""Rows needed on each side for the synthetic-vs-real classifier test."""
DRIFT_REFERENCE_ROWS = 50_000
"""Largest sample of main's published records used as the drift reference."""
MAX_AGGREGATION_DISAGREEMENT = 0.05


def _not_applicable(name: str, threshold: float, comparison: Comparison, why: str,
                    sample_size: int = 0) -> GateResult:
    return GateResult(name=name, passed=True, value=0.0, threshold=threshold, comparison=comparison,
                      sample_size=sample_size, worst=[{"not_applicable": why}])


def evaluate_completeness(batch: Batch) -> GateResult:
    """Share of parsed records with every required field present (missing ones were quarantined by clean)."""
    raw = batch.read(Stage.RAW)
    required = batch.dataset.record_schema.required
    payloads = pd.DataFrame(read_payloads(raw)) if len(raw) else pd.DataFrame()
    frame = payloads.reindex(columns=required).assign(record_id=raw["record_id"].to_numpy())
    return completeness(frame, required, batch.dataset.gates.min_completeness)


def evaluate_duplicate_rate(batch: Batch) -> GateResult:
    duplicates = batch.read(Stage.DEDUP, DUPLICATES_FILE)
    candidates = len(batch.read(Stage.PII))
    outcome = duplicate_rate(len(duplicates), candidates, batch.dataset.gates.max_duplicate_rate)
    # Worst offenders: the records duplicated most often (where the copies come from).
    counts = duplicates.groupby(["duplicate_of", "scope"]).size().sort_values(ascending=False).head(10)
    worst = [{"record_id": record, "scope": scope, "copies": int(n)} for (record, scope), n in counts.items()]
    return outcome.model_copy(update={"worst": worst})


def _synthetic_flags(records: pd.DataFrame, field: str | None) -> pd.Series:
    if field is None:
        return pd.Series(False, index=records.index)
    return records[field].fillna(False).astype(bool)


def evaluate_synthetic_share(batch: Batch) -> GateResult:
    records = batch.read(Stage.DEDUP)
    flags = _synthetic_flags(records, batch.dataset.synthetic_field)
    outcome = synthetic_share(flags, batch.dataset.gates.max_synthetic_share)
    # Worst offenders: where the synthetic records came from (source files), most first.
    by_source = records.loc[flags, "source_uri"].value_counts().head(10)
    worst = [{"source_uri": uri, "synthetic_records": int(n)} for uri, n in by_source.items()]
    return outcome.model_copy(update={"worst": worst})


def evaluate_synthetic_fidelity(batch: Batch) -> GateResult:
    """Can a classifier tell the batch's synthetic records from its real ones? AUC near 0.5 means no."""
    records = batch.read(Stage.DEDUP)
    flags = _synthetic_flags(records, batch.dataset.synthetic_field)
    real, synthetic = records[~flags], records[flags]
    if min(len(real), len(synthetic)) < MIN_SYNTHETIC_TEST_ROWS:
        return _not_applicable("synthetic_fidelity", 0.1, Comparison.AT_MOST,
                               f"needs {MIN_SYNTHETIC_TEST_ROWS} real and synthetic records, has {len(real)} real "
                               f"and {len(synthetic)} synthetic", int(flags.sum()))
    schema = batch.dataset.record_schema
    numeric = [n for n, f in schema.fields.items() if f.type in ("integer", "number")]
    categorical = [n for n, f in schema.fields.items() if f.allowed and n != batch.dataset.synthetic_field]
    result = classifier_two_sample_test(real, synthetic, text_field=schema.text_field, numeric=numeric,
                                        categorical=categorical)
    return GateResult(name="synthetic_fidelity", passed=result.passed, value=round(abs(result.auc - 0.5), 4),
                      threshold=result.tolerance, comparison=Comparison.AT_MOST, statistic="|AUC - 0.5|",
                      sample_size=result.n_synthetic,
                      worst=[{"auc": round(result.auc, 4), "auc_std": round(result.auc_std, 4),
                              "n_real": result.n_real, "n_synthetic": result.n_synthetic}])


def evaluate_pii_residual(batch: Batch) -> GateResult:
    """PII left in what is about to be sent to vendors (every task text, gold included)."""
    tasks = batch.read(Stage.LABELING_TASKS).drop_duplicates("item_id")
    frame = pd.DataFrame({"record_id": tasks["item_id"], "text": tasks["text"]})
    return pii_residual(frame, "text", batch.dataset.gates.max_pii_residual)


def evaluate_gold_set(batch: Batch) -> GateResult:
    """Gold items mixed into the batch must reach what ``gold_rate`` asks for, *before* anything is sent to a
    vendor: without them the annotations cannot be measured, and the batch would be labelled at full cost for
    nothing. (A missing gold set is the data owner's to fix, not a fault of the client's data.)"""
    if batch.dataset.gold_rate == 0:
        return _not_applicable("gold_set", 0.0, Comparison.AT_LEAST, "dataset gold_rate is 0")
    tasks = batch.read(Stage.LABELING_TASKS)
    items = int(tasks.loc[~tasks["item_id"].str.startswith(GOLD_ITEM_PREFIX), "item_id"].nunique())
    gold = batch.read(Stage.LABELING_TASKS, GOLD_FILE)
    wanted = gold_sample_size(items, batch.dataset.gold_rate)
    worst = []
    if len(gold) < wanted:
        where = f"{batch.tenant.landing_prefix}/{batch.dataset.name}/gold/"
        worst = [{"problem": f"the gold set under {where} is missing or empty" if gold.empty else
                  f"the gold set under {where} gave {len(gold)} of the {wanted} gold items needed",
                  "fix": f"the data owner uploads gold items (text and label) to {where}, then re-runs the batch"}]
    return GateResult(name="gold_set", passed=len(gold) >= wanted, value=float(len(gold)), threshold=float(wanted),
                      comparison=Comparison.AT_LEAST, sample_size=items, worst=worst)


def evaluate_gold_accuracy(batch: Batch) -> GateResult:
    threshold = batch.dataset.gates.min_gold_accuracy
    gold = batch.read(Stage.LABELING_TASKS, GOLD_FILE)
    if batch.dataset.gold_rate == 0:
        return _not_applicable("gold_accuracy", threshold, Comparison.AT_LEAST, "dataset gold_rate is 0")
    judgements = batch.read(Stage.ANNOTATIONS)
    if judgements.empty:
        return _not_applicable("gold_accuracy", threshold, Comparison.AT_LEAST, "nothing was labelled in this batch")
    if gold.empty:
        return GateResult(name="gold_accuracy", passed=False, value=0.0, threshold=threshold,
                          comparison=Comparison.AT_LEAST, sample_size=0,
                          worst=[{"problem": "no gold items in the batch: add a gold set under "
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
    return GateResult(name="gold_accuracy", passed=value >= threshold, value=round(value, 4), threshold=threshold,
                      comparison=Comparison.AT_LEAST, statistic="lowest Wilson upper bound",
                      sample_size=int(overall["n_gold"]), worst=worst)


def evaluate_agreement(batch: Batch) -> GateResult:
    """Krippendorff's alpha (nominal) over the batch's own items: chance-corrected inter-annotator agreement."""
    judgements = batch_judgements(batch)
    threshold = batch.dataset.gates.min_agreement
    if judgements.empty:
        return _not_applicable("agreement", threshold, Comparison.AT_LEAST, "nothing was labelled in this batch")
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
    return GateResult(name="agreement", passed=bool(sample_size and value >= threshold), value=value,
                      threshold=threshold, comparison=Comparison.AT_LEAST, statistic="Krippendorff's alpha",
                      sample_size=sample_size, worst=worst)


def evaluate_class_balance(batch: Batch) -> GateResult:
    labels = batch.read(Stage.CONSOLIDATED_LABELS)["label"]
    threshold = batch.dataset.gates.min_class_share
    if labels.empty:
        return _not_applicable("class_balance", threshold, Comparison.AT_LEAST, "nothing was labelled in this batch")
    return class_balance(labels, batch.dataset.labels, threshold)


def drift_features(batch: Batch) -> tuple[list[str], list[str]]:
    schema = batch.dataset.record_schema
    numeric = [n for n, f in schema.fields.items() if f.type in ("integer", "number")] + ["text_length"]
    categorical = [n for n, f in schema.fields.items() if f.allowed or f.type == "boolean"] + ["label"]
    return numeric, categorical


def _with_text_length(frame: pd.DataFrame, text_field: str) -> pd.DataFrame:
    return frame.assign(text_length=frame[text_field].str.len().astype(float))


def evaluate_drift(batch: Batch) -> GateResult:
    """PSI (and KS / chi-squared) of every feature and the label distribution against what main holds."""
    threshold = batch.dataset.gates.max_drift_psi
    text_field = batch.dataset.record_schema.text_field
    own = layout.stage_data_path(batch.dataset.name, Stage.PUBLISHED, batch.batch_id)
    main = batch.repo.branch_head(layout.MAIN_BRANCH)  # one commit of main for every file read
    paths = [p for p in batch.repo.list_paths(main, layout.published_prefix(batch.dataset.name))
             if p.endswith(".parquet") and p != own]
    current = build_published(batch)
    if not paths or current.empty:
        return _not_applicable("drift", threshold, Comparison.AT_MOST, "no published data on main to compare with"
                               if not paths else "nothing was labelled in this batch", len(current))
    reference = pd.concat([batch.read_ref(main, p) for p in paths], ignore_index=True)
    if len(reference) > DRIFT_REFERENCE_ROWS:
        reference = reference.sample(DRIFT_REFERENCE_ROWS, random_state=0)
    numeric, categorical = drift_features(batch)
    report = drift_report(_with_text_length(reference, text_field), _with_text_length(current, text_field),
                          numeric, categorical)
    outcome = drift_check(report, threshold)
    labels = label_drift(reference["label"], current["label"], batch.dataset.labels)
    return outcome.model_copy(update={
        "threshold": threshold, "sample_size": len(current),
        "worst": [*outcome.worst, {"label_distribution": {k: round(float(v), 6) for k, v in labels.items()}}]})


def evaluate_slice_audit(batch: Batch) -> GateResult:
    """Bias audit (WARN): agreement, coverage and gold accuracy per segment; flags slices worse than overall."""
    segments = batch.dataset.segment_fields
    if not segments:
        return _not_applicable("slice_audit", 0, Comparison.AT_MOST, "dataset has no segment_fields")
    records = batch.read(Stage.DEDUP)
    judgements = batch_judgements(batch)
    tables = [slice_metrics(records, judgements, segment) for segment in segments]
    table = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()
    flagged = table[table["flagged"]] if len(table) else table
    worst = [{k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()}
             for row in flagged.head(10).to_dict("records")]
    return GateResult(name="slice_audit", passed=flagged.empty, value=float(len(flagged)), threshold=0,
                      comparison=Comparison.AT_MOST, statistic="flagged slices", sample_size=len(records),
                      worst=worst)


def evaluate_aggregation_consistency(batch: Batch) -> GateResult:
    """WARN when Dawid-Skene and majority vote disagree on many items: some annotators are unreliable."""
    judgements = batch_judgements(batch)
    if judgements.empty:
        return _not_applicable("aggregation_consistency", MAX_AGGREGATION_DISAGREEMENT, Comparison.AT_MOST,
                               "nothing labelled")
    majority = majority_vote(judgements).set_index("item_id")["label"]
    model = dawid_skene(judgements, classes=batch.dataset.labels)
    disagree = model.labels.reindex(majority.index) != majority
    worst = [{"item_id": item, "majority_label": majority[item], "dawid_skene_label": model.labels[item]}
             for item in majority.index[disagree][:10]]
    value = round(float(disagree.mean()), 4)
    return GateResult(name="aggregation_consistency", passed=value <= MAX_AGGREGATION_DISAGREEMENT, value=value,
                      threshold=MAX_AGGREGATION_DISAGREEMENT, comparison=Comparison.AT_MOST,
                      sample_size=len(majority), worst=worst)


