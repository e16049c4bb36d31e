"""What an operator sees on an asset in the Dagster UI: numbers to plot per batch, links, schemas, tables, code.

Why one module: every stage, every check and the batch outcome sensor describe the same things (where a batch's
data is on lakeFS, what a gate found, where a batch ended), and the UI reads them back by name -- numeric values
become the Plots tab per partition, ``dagster/column_schema`` the Columns tab, URLs clickable links -- so the names
and types are decided here once.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import quote, urlencode

import dagster as dg

from dagster_project import layout
from dagster_project.gates import sentence
from dagster_project.layout import Stage
from dagster_project.publishing.ledger import BatchOutcome
from dagster_project.quality.result import GateResult
from dagster_project.records import LINEAGE_COLUMNS
from dagster_project.stages.batch import Batch, StageReport
from dagster_project.tenants import DatasetConfig

COLUMN_TYPES = {"string": "string", "integer": "int", "number": "float", "boolean": "bool", "datetime": "datetime"}
RECORD_STAGES = (Stage.RAW, Stage.CLEAN, Stage.PII, Stage.DEDUP, Stage.PUBLISHED)
"""Stages whose output is the dataset's records (schema fields plus lineage)."""


def lakefs_links(web_url: str | None, repository: str, ref: str, path: str | None = None,
                 commit: str | None = None) -> dict[str, Any]:
    """``dagster/uri`` plus clickable lakeFS UI links (when the lakeFS server has a web UI)."""
    links: dict[str, Any] = {}
    if path is not None:
        links["dagster/uri"] = f"lakefs://{repository}/{ref}/{path}"
    if not web_url:
        return links
    base = f"{web_url.rstrip('/')}/repositories/{quote(repository)}"
    if path is not None:
        links["lakefs_objects"] = dg.MetadataValue.url(f"{base}/objects?{urlencode({'ref': ref, 'path': path})}")
    if commit:
        links["lakefs_commit_link"] = dg.MetadataValue.url(f"{base}/commits/{quote(commit)}")
    return links


def column_schema(dataset: DatasetConfig, stage: Stage) -> dg.TableSchema | None:
    """The records' columns at a record stage: the dataset's schema fields, the lineage, and the label once
    published."""
    if stage not in RECORD_STAGES:
        return None
    schema = dataset.record_schema
    columns = [dg.TableColumn(name, COLUMN_TYPES.get(spec.type, spec.type),
                              description=f"allowed: {', '.join(map(str, spec.allowed))}" if spec.allowed else None,
                              constraints=dg.TableColumnConstraints(nullable=name not in schema.required))
               for name, spec in schema.fields.items()]
    columns += [dg.TableColumn(name, "string", description="lineage") for name in LINEAGE_COLUMNS]
    if stage == Stage.PUBLISHED:
        columns += [dg.TableColumn("label", "string", description=f"one of {', '.join(dataset.labels)}"),
                    dg.TableColumn("confidence", "float", description="share of judgements for the majority label")]
    return dg.TableSchema(columns=columns)


def code_reference(function: Callable[..., Any], label: str) -> dg.CodeReferencesMetadataValue:
    """Where the stage's own logic lives (not the thin asset wrapper every stage shares)."""
    target = inspect.unwrap(function)
    return dg.CodeReferencesMetadataValue(code_references=[dg.LocalFileCodeReference(
        file_path=inspect.getsourcefile(target) or "", line_number=inspect.getsourcelines(target)[1], label=label)])


def label_table(distribution: Mapping[str, int]) -> dg.TableMetadataValue:
    total = sum(distribution.values()) or 1
    return dg.MetadataValue.table(
        records=[dg.TableRecord({"label": str(label), "records": int(n), "share": round(n / total, 4)})
                 for label, n in distribution.items()],
        schema=dg.TableSchema(columns=[dg.TableColumn("label", "string"), dg.TableColumn("records", "int"),
                                       dg.TableColumn("share", "float")]))


def report_metadata(report: StageReport, batch: Batch, web_url: str | None) -> dict[str, Any]:
    """Numeric metadata first (so the UI plots it per partition), then where the data is."""
    metadata: dict[str, Any] = {"dagster/row_count": report.rows}
    metadata.update({k: v for k, v in report.counts.items() if isinstance(v, int | float)})
    metadata["lakefs_branch"] = batch.branch
    metadata["lakefs_commit"] = report.commit_id
    metadata.update(lakefs_links(web_url, batch.repo.name, batch.branch,
                                 layout.stage_dir(batch.dataset.name, report.stage, batch.batch_id), report.commit_id))
    details = dict(report.details)
    if isinstance(details.get("label_distribution"), Mapping):
        metadata["label_distribution"] = label_table(details.pop("label_distribution"))
    if details:
        metadata["details"] = dg.MetadataValue.json(details)
    return metadata


def check_metadata(result: GateResult, playbook: str | None) -> dict[str, Any]:
    """A gate result as Dagster shows it: numbers to plot, the sentence, the evidence, the playbook link."""
    metadata: dict[str, Any] = {
        "result": sentence(result), "value": float(result.value), "threshold": float(result.threshold),
        "sample_size": int(result.sample_size), "required": f"{result.comparison.phrase} {result.threshold:g}",
        "worst_offenders": dg.MetadataValue.json(result.worst)}
    if playbook and playbook.startswith(("http://", "https://")):
        metadata["playbook"] = dg.MetadataValue.url(playbook)
    elif playbook:
        metadata["playbook"] = dg.MetadataValue.path(playbook)
    if result.computed_on is not None:
        metadata["lakefs_commit"] = result.computed_on.commit_id
        metadata["computed_on"] = dg.MetadataValue.json(list(result.computed_on.paths))
    return metadata


def outcome_metadata(outcome: BatchOutcome, repository: str, web_url: str | None) -> dict[str, Any]:
    """Where a batch ended, on its ``published`` partition: status, why, and the commits to look at."""
    metadata: dict[str, Any] = {"status": outcome.state.value, "outcome": outcome.reason,
                                "lakefs_branch": layout.batch_branch(outcome.dataset, outcome.batch_id),
                                **{name: int(v) if float(v).is_integer() and not name.startswith("gate/") else
                                   float(v) for name, v in outcome.figures.items()}}
    for name in ("stage", "gate", "actor", "version_tag", "main_commit", "commit_id"):
        value = getattr(outcome, name)
        if value:
            metadata["blocked_by" if name == "gate" else "decided_by" if name == "actor" else name] = value
    if outcome.main_commit:
        metadata.update(lakefs_links(web_url, repository, layout.MAIN_BRANCH, commit=outcome.main_commit))
    elif outcome.commit_id:
        metadata.update(lakefs_links(web_url, repository, metadata["lakefs_branch"], commit=outcome.commit_id))
    return metadata
