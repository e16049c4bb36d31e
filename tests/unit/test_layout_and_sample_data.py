"""Naming rules for batches, and the synthetic drops whose planted defects the pipeline must find exactly."""

from __future__ import annotations

import csv
import io
import json
import re

import pandas as pd
import pyarrow.parquet as pq
import pytest

from dagster_project import layout
from dagster_project.devservices.sample_data import DropPlan, build_drop
from dagster_project.layout import Stage, batch_branch, batch_id_for_drop
from dagster_project.stages.clean import clean_records
from dagster_project.stages.dedup import DEDUP_INDEX_COLUMNS, deduplicate
from dagster_project.stages.ingest import ingest_drop
from dagster_project.stages.landing import Manifest
from dagster_project.tenants import TenantsConfig

from .fakes import INGESTED_AT, make_drop

LAKEFS_BRANCH = re.compile(r"^\w[-\w]*$", re.ASCII)  # Go's \w, which lakeFS uses, is ASCII-only
UNSAFE_NAMES = [
    "drop 2026-11-01",
    "export.v2",
    "client/upload",
    "Übergabe_März",
    "日本語",
    "-leading-dash",
    "_leading_underscore",
    "..",
    "a" * 81,
    "drop  2026-11-01",
    "drop 2026-11-01 ",
    "drop_2026.11.01",
    "drop-2026.11.01",
]


# ------------------------------------------------------------------------------------------------------ layout


@pytest.mark.parametrize("name", ["drop-2026-11-01", "batch_7", "A1", "x" * 80])
def test_safe_drop_names_are_kept(name: str) -> None:
    assert batch_id_for_drop(name) == name


@pytest.mark.parametrize("name", UNSAFE_NAMES)
def test_unsafe_drop_names_become_valid_branch_ids(name: str) -> None:
    batch_id = batch_id_for_drop(name)
    assert batch_id != name
    assert LAKEFS_BRANCH.match(batch_id), batch_id
    assert LAKEFS_BRANCH.match(batch_branch("support_intents", batch_id))
    assert batch_id_for_drop(name) == batch_id  # deterministic
    assert batch_id_for_drop(batch_id) == batch_id  # the id is itself a safe name


def test_unsafe_name_keeps_a_readable_slug() -> None:
    assert re.fullmatch(r"drop-2026-11-01-[0-9a-f]{8}", batch_id_for_drop("drop 2026.11.01"))
    assert re.fullmatch(r"drop-[0-9a-f]{8}", batch_id_for_drop("日本語"))


def test_unsafe_names_never_collide() -> None:
    """Names that slug to the same text (spaces vs dots vs repeated separators) still get distinct ids."""
    ids = [batch_id_for_drop(n) for n in UNSAFE_NAMES]
    assert len(set(ids)) == len(UNSAFE_NAMES)
    slug_alike = ["drop 1", "drop.1", "drop/1", "drop  1", "drop 1 ", " drop 1", "drop\t1"]
    assert len({batch_id_for_drop(n) for n in slug_alike}) == len(slug_alike)


def test_paths_and_names() -> None:
    assert layout.batch_branch("defect_reports", "d1") == "batch-defect_reports-d1"
    assert layout.incoming_prefix("stahlwerk/drops", "defect_reports") == "stahlwerk/drops/defect_reports/incoming/"
    assert layout.stage_data_path("ds", Stage.CLEAN, "b1") == "datasets/ds/clean/batch=b1/data.parquet"
    assert layout.stage_quarantine_path("ds", "raw", "b1") == "datasets/ds/raw/batch=b1/quarantine.parquet"
    assert layout.dedup_index_path("ds", "b1") == "datasets/ds/dedup_index/batch=b1/data.parquet"
    assert layout.published_prefix("ds") == "datasets/ds/published/"
    assert layout.version_tag("ds", 3) == "ds/v3"
    assert layout.job_name("t", "ds") == "t__ds__batch_job"


# ------------------------------------------------------------------------------------------------- sample data


def data_rows(name: str, body: bytes) -> int:
    """Rows a file holds, counted independently of the ingest code (physical lines / CSV rows / Parquet rows)."""
    if name.endswith(".jsonl"):
        return len([line for line in body.split(b"\n") if line.strip()])
    if name.endswith(".csv"):
        rows = list(csv.reader(io.StringIO(body.decode("utf-8"))))
        return len(rows) - 1  # header
    return pq.ParquetFile(io.BytesIO(body)).metadata.num_rows


def run_pure_pipeline(plan: DropPlan, schema, text_field: str):
    s3, drop = make_drop(plan.files, plan.manifest, prefix=plan.drop_prefix, name="drop-a")
    raw = ingest_drop(s3, drop, "drop-a", INGESTED_AT)
    clean = clean_records(raw.records, schema)
    dedup = deduplicate(clean.records, text_field, pd.DataFrame(columns=DEDUP_INDEX_COLUMNS))
    return raw, clean, dedup


@pytest.mark.parametrize(
    ("tenant_name", "dataset_name"), [("northbank", "support_intents"), ("stahlwerk", "defect_reports")]
)
def test_plan_records_equal_rows_across_files(
    example_config: TenantsConfig, tenant_name: str, dataset_name: str
) -> None:
    tenant = example_config.tenant(tenant_name)
    dataset = tenant.dataset(dataset_name)
    plan = build_drop(tenant, dataset, "drop-a", n=200)
    assert sorted(plan.files) == sorted(f"{dataset_name}-part-{fmt}.{fmt}" for fmt in ("jsonl", "csv", "parquet"))
    assert sum(data_rows(name, body) for name, body in plan.files.items()) == plan.records
    assert plan.drop_prefix == f"{tenant.landing_prefix}/{dataset_name}/incoming/drop-a/"
    assert plan.manifest is not None
    Manifest.model_validate(plan.manifest)


@pytest.mark.parametrize(
    ("tenant_name", "dataset_name", "expected"),
    [
        # 200 rows + 4 planted JSONL lines + 1 short CSV row; support_intents has no field with a maximum.
        ("northbank", "support_intents", {"records": 205, "unparsable": 4, "invalid": 1, "duplicates": 10}),
        # ... plus one out-of-range CSV row for defect_reports (severity maximum 5).
        ("stahlwerk", "defect_reports", {"records": 206, "unparsable": 4, "invalid": 2, "duplicates": 10}),
    ],
)
def test_planted_defects_are_exactly_what_the_stages_find(
    example_config: TenantsConfig, tenant_name: str, dataset_name: str, expected: dict[str, int]
) -> None:
    """Cross-check: the plan's counts equal what ingest, clean and dedup actually find in the generated files."""
    tenant = example_config.tenant(tenant_name)
    dataset = tenant.dataset(dataset_name)
    plan = build_drop(tenant, dataset, "drop-a", n=200)
    assert {k: getattr(plan, k) for k in expected} == expected  # duplicates: int(200 * 0.05) = 10
    raw, clean, dedup = run_pure_pipeline(plan, dataset.record_schema, dataset.record_schema.text_field)
    assert raw.records_in == plan.records
    assert len(raw.quarantine) == plan.unparsable
    assert len(clean.quarantine) == plan.invalid
    assert len(dedup.duplicates) == plan.duplicates
    assert set(dedup.duplicates["scope"]) == {"batch"}
    assert len(dedup.records) == plan.records - plan.unparsable - plan.invalid - plan.duplicates


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("formats", [("csv", "jsonl"), ("parquet", "jsonl", "csv"), ("jsonl",)])
def test_plan_matches_stages_for_other_seeds_and_layouts(
    example_config: TenantsConfig, seed: int, formats: tuple[str, ...]
) -> None:
    for tenant, dataset in example_config.datasets():
        plan = build_drop(tenant, dataset, "drop-a", n=60, seed=seed, formats=formats)
        raw, clean, dedup = run_pure_pipeline(plan, dataset.record_schema, dataset.record_schema.text_field)
        found = (raw.records_in, len(raw.quarantine), len(clean.quarantine), len(dedup.duplicates))
        assert found == (plan.records, plan.unparsable, plan.invalid, plan.duplicates), (dataset.name, seed, formats)


def test_clean_drop_without_defects(example_config: TenantsConfig) -> None:
    tenant = example_config.tenant("northbank")
    dataset = tenant.dataset("support_intents")
    plan = build_drop(tenant, dataset, "drop-a", n=90, plant_defects=False)
    assert (plan.records, plan.unparsable, plan.invalid, plan.duplicates) == (90, 0, 0, 0)
    raw, clean, dedup = run_pure_pipeline(plan, dataset.record_schema, dataset.record_schema.text_field)
    assert (raw.quarantine.empty, clean.quarantine.empty, dedup.duplicates.empty) == (True, True, True)
    assert len(dedup.records) == 90


def test_drop_without_manifest_quarantines_everything(example_config: TenantsConfig) -> None:
    tenant = example_config.tenant("stahlwerk")
    dataset = tenant.dataset("defect_reports")
    plan = build_drop(tenant, dataset, "drop-a", n=40, with_manifest=False)
    assert plan.manifest is None
    raw, _, _ = run_pure_pipeline(plan, dataset.record_schema, dataset.record_schema.text_field)
    assert raw.records.empty
    assert len(raw.quarantine) == plan.records
    manifest_reasons = raw.quarantine["reason"].str.contains("manifest.json")
    assert int(manifest_reasons.sum()) == plan.records - plan.unparsable


def test_generation_is_deterministic(example_config: TenantsConfig) -> None:
    tenant = example_config.tenant("northbank")
    dataset = tenant.dataset("support_intents")
    first = build_drop(tenant, dataset, "drop-a", n=50, seed=5)
    second = build_drop(tenant, dataset, "drop-a", n=50, seed=5)
    assert first.files == second.files
    other = build_drop(tenant, dataset, "drop-a", n=50, seed=6)
    assert other.files != first.files
    assert json.dumps(first.manifest) == json.dumps(second.manifest)
