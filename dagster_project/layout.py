"""Where things live: landing keys, lakeFS branches and object paths, Dagster names.

One module owns every naming rule so the sensor, the assets, the CLI and the tests can never disagree about
where a batch's data is. Everything a stage writes goes to the batch branch (``batch-<dataset>-<batch_id>``) under
``datasets/<dataset>/<stage>/batch=<batch_id>/``; ``main`` only receives it through a merge, so after N
batches ``main`` holds every published batch side by side.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from enum import StrEnum

MAIN_BRANCH = "main"
MANIFEST_NAME = "manifest.json"
DATA_FILE = "data.parquet"
QUARANTINE_FILE = "quarantine.parquet"
SUMMARY_FILE = "summary.json"


class Stage(StrEnum):
    """The dataset stages, in pipeline order; also the last part of every asset key."""

    RAW = "raw"
    CLEAN = "clean"
    PII = "pii"
    DEDUP = "dedup"
    LABELING_TASKS = "labeling_tasks"
    ANNOTATIONS = "annotations"
    CONSOLIDATED_LABELS = "consolidated_labels"
    PUBLISHED = "published"


_BATCH_SAFE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,79}$")


def batch_id_for_drop(drop_name: str) -> str:
    """A drop folder name as a batch id that is valid in a lakeFS branch id and as a Dagster partition key.

    Safe names are kept as they are (operators recognise them); anything else is slugged and suffixed with
    a short hash so two different unsafe names can never collide.
    """
    if _BATCH_SAFE.match(drop_name):
        return drop_name
    slug = re.sub(r"[^A-Za-z0-9_-]+", "-", drop_name).strip("-_")[:60] or "drop"
    digest = hashlib.sha256(drop_name.encode("utf-8")).hexdigest()[:8]
    return f"{slug}-{digest}"


def incoming_prefix(landing_prefix: str, dataset: str) -> str:
    return f"{landing_prefix}/{dataset}/incoming/"


def batch_branch(dataset: str, batch_id: str) -> str:
    """``batch-<dataset>-<batch_id>``: lakeFS branch ids must match ``^\\w[-\\w]*$`` (no '/' or '.')."""
    return f"batch-{dataset}-{batch_id}"


def batch_id_of_branch(dataset: str, branch: str) -> str | None:
    """The batch a ``batch-<dataset>-<batch_id>`` branch holds (None for any other ref)."""
    prefix = batch_branch(dataset, "")
    return branch[len(prefix):] or None if branch.startswith(prefix) else None


def stage_dir(dataset: str, stage: Stage | str, batch_id: str) -> str:
    return f"datasets/{dataset}/{stage}/batch={batch_id}/"


def stage_data_path(dataset: str, stage: Stage | str, batch_id: str) -> str:
    return stage_dir(dataset, stage, batch_id) + DATA_FILE


def stage_quarantine_path(dataset: str, stage: Stage | str, batch_id: str) -> str:
    return stage_dir(dataset, stage, batch_id) + QUARANTINE_FILE


def published_prefix(dataset: str) -> str:
    """What training reads on ``main`` (or on a pinned version tag / commit)."""
    return f"datasets/{dataset}/{Stage.PUBLISHED}/"


def dedup_index_prefix(dataset: str) -> str:
    return f"datasets/{dataset}/dedup_index/"


def dedup_index_path(dataset: str, batch_id: str) -> str:
    return f"{dedup_index_prefix(dataset)}batch={batch_id}/{DATA_FILE}"


def neardup_index_prefix(dataset: str) -> str:
    return f"datasets/{dataset}/neardup_index/"


def neardup_index_path(dataset: str, batch_id: str) -> str:
    """The near-duplicate signature index (band keys) of one published batch's records."""
    return f"{neardup_index_prefix(dataset)}batch={batch_id}/signatures.npz"


def gate_result_path(dataset: str, batch_id: str, gate: str) -> str:
    return f"datasets/{dataset}/gates/batch={batch_id}/{gate}.json"


def gate_results_prefix(dataset: str, batch_id: str) -> str:
    return f"datasets/{dataset}/gates/batch={batch_id}/"


def batch_summary_path(dataset: str, batch_id: str) -> str:
    return f"datasets/{dataset}/batches/batch={batch_id}/{SUMMARY_FILE}"


def version_tag(dataset: str, version: int) -> str:
    return f"{dataset}/v{version}"


def version_tag_prefix(dataset: str) -> str:
    return f"{dataset}/v"


def parse_version_tag(dataset: str, tag: str) -> int | None:
    """``<dataset>/v<N>`` -> N; None for any other tag (another dataset's, or not a version)."""
    number = tag.removeprefix(version_tag_prefix(dataset))
    return int(number) if number != tag and number.isdigit() else None


TENANT_TAG = "trainyard/tenant"
DATASET_TAG = "trainyard/dataset"
VERSION_TAG = "trainyard/version"
"""On a version-job run: the ``<dataset>/v<N>`` tag whose training manifest it exports."""
ALERTED_TAG = "trainyard/alerted"
"""Set on a run whose failure already raised its own alert (a failed gate, a merge conflict): the run-failure
sensor then stays quiet."""
VENDOR_TAG = "trainyard/vendor"
"""On every batch run: the labeling vendor(s) the run sends tasks to, so the run queue's tag concurrency limits
(``infra/dagster.yaml``) can cap the runs talking to one vendor at once, as ``trainyard/tenant`` caps a tenant's."""


def dagster_tags(tenant: str, dataset: str) -> dict[str, str]:
    """The tags on every asset, job and run of one tenant dataset."""
    return {TENANT_TAG: tenant, DATASET_TAG: dataset}


def batch_run_tags(tenant: str, dataset: str, vendors: Iterable[str]) -> dict[str, str]:
    """The tags on every batch run (whatever launched it: the landing sensor, a re-execution, the launchpad).

    A dataset labelled by several vendors gets their sorted names joined by ``+``: a per-value limit then counts
    runs per combination of vendors, which is per vendor for the usual one-vendor dataset.
    """
    return {**dagster_tags(tenant, dataset), VENDOR_TAG: "+".join(sorted(set(vendors)))}


def asset_group(tenant: str, dataset: str) -> str:
    return f"{tenant}__{dataset}"


def partitions_name(tenant: str, dataset: str) -> str:
    return f"{tenant}__{dataset}__batches"


def job_name(tenant: str, dataset: str) -> str:
    return f"{tenant}__{dataset}__batch_job"


def landing_sensor_name(tenant: str, dataset: str) -> str:
    return f"{tenant}__{dataset}__landing_sensor"
