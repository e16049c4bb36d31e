"""The planted-defect suite: for every blocking gate, a batch with exactly that defect is stopped by that gate,
and clean batches pass every gate (no false blocks).

Batches run through the same stage and gate functions Dagster calls (``run_batch`` walks the same stage table as
the job and stops at the first failed blocking gate), on the in-memory lakeFS fake with S3 faked in process: every
gate's pass and fail path, with no server.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from dagster_project.batch_runner import BatchRun
from dagster_project.devservices.sample_data import DropPlan, build_drop, default_manifest, synthetic_records
from dagster_project.gates import GATES
from dagster_project.layout import Stage
from dagster_project.tenants import DatasetConfig, TenantConfig, TenantsConfig
from dagster_project.vendors.simulated import simulated_truth
from tests.unit.harness import Harness

N = 400


def process(pipeline: Harness, tenant: TenantConfig, dataset: DatasetConfig, plan: DropPlan,
            gold_set: bool = True) -> BatchRun:
    return pipeline.process(tenant, dataset, plan, gold_set=gold_set)


def jsonl_drop(tenant: TenantConfig, dataset: DatasetConfig, name: str, records: list[dict]) -> DropPlan:
    plan = build_drop(tenant, dataset, name, 0, plant_defects=False, formats=("jsonl",))
    plan.files = {"records.jsonl": "".join(json.dumps(r) + "\n" for r in records).encode()}
    plan.manifest = default_manifest(tenant, dataset)
    return plan


def with_vendor(dataset: DatasetConfig, **changes) -> DatasetConfig:
    return dataset.model_copy(update={"vendors": [dataset.vendors[0].model_copy(update=changes)]})


@dataclass(frozen=True)
class Defect:
    gate: str
    tenant: str
    build: Callable[[TenantConfig, DatasetConfig], tuple[DatasetConfig, DropPlan]]
    gold_set: bool = True
    """Whether the data owner uploaded the dataset's gold set."""


def low_agreement(tenant: TenantConfig, dataset: DatasetConfig) -> tuple[DatasetConfig, DropPlan]:
    # Without gold items in the batch, only agreement can tell that this workforce guesses.
    sloppy = with_vendor(dataset, accuracy=0.6).model_copy(update={"gold_rate": 0.0})
    return sloppy, build_drop(tenant, sloppy, "low-agreement", N, seed=31, plant_defects=False)


def spamming_annotator(tenant: TenantConfig, dataset: DatasetConfig) -> tuple[DatasetConfig, DropPlan]:
    spammed = with_vendor(dataset, annotator_accuracy={2: 0.15})
    return spammed, build_drop(tenant, spammed, "spammer", N, seed=32, plant_defects=False)


def missing_fields(tenant: TenantConfig, dataset: DatasetConfig) -> tuple[DatasetConfig, DropPlan]:
    records, _ = synthetic_records(dataset, N, seed=33)
    dropped = dataset.record_schema.required[-1]
    for record in records[::20]:  # 5% of records lose a required field
        del record[dropped]
    return dataset, jsonl_drop(tenant, dataset, "missing-fields", records)


def collapsed_class(tenant: TenantConfig, dataset: DatasetConfig) -> tuple[DatasetConfig, DropPlan]:
    records, _ = synthetic_records(dataset, N * 2, seed=34)
    text = dataset.record_schema.text_field
    gone = dataset.labels[0]
    kept = [r for r in records if simulated_truth(r[text], dataset.labels) != gone][:N]
    return dataset, jsonl_drop(tenant, dataset, "collapsed-class", kept)


def shifted_distribution(tenant: TenantConfig, dataset: DatasetConfig) -> tuple[DatasetConfig, DropPlan]:
    records, _ = synthetic_records(dataset, N, seed=35, start=50_000)
    for record in records:
        record["severity"] = 5  # every report suddenly "critical": a changed upstream export, not reality
    return dataset, jsonl_drop(tenant, dataset, "shifted", records)


def leaked_pii(tenant: TenantConfig, dataset: DatasetConfig) -> tuple[DatasetConfig, DropPlan]:
    return dataset, build_drop(tenant, dataset, "leaked-pii", N, seed=36, plant_defects=False, pii_share=0.3)


def duplicates(tenant: TenantConfig, dataset: DatasetConfig) -> tuple[DatasetConfig, DropPlan]:
    return dataset, build_drop(tenant, dataset, "duplicates", N, seed=37, duplicate_share=0.4)


def too_much_synthetic(tenant: TenantConfig, dataset: DatasetConfig) -> tuple[DatasetConfig, DropPlan]:
    return dataset, build_drop(tenant, dataset, "synthetic-heavy", N, seed=38, plant_defects=False,
                               synthetic_share=0.6)


def wrong_synthetic(tenant: TenantConfig, dataset: DatasetConfig) -> tuple[DatasetConfig, DropPlan]:
    return dataset, build_drop(tenant, dataset, "synthetic-off", N, seed=39, plant_defects=False,
                               synthetic_share=0.25, synthetic_shifted=True)


def no_gold_set(tenant: TenantConfig, dataset: DatasetConfig) -> tuple[DatasetConfig, DropPlan]:
    return dataset, build_drop(tenant, dataset, "no-gold", N, seed=33, plant_defects=False)


DEFECTS = {
    "low_agreement": Defect("agreement", "northbank", low_agreement),
    "spamming_annotator": Defect("gold_accuracy", "northbank", spamming_annotator),
    "missing_fields": Defect("completeness", "northbank", missing_fields),
    "collapsed_class": Defect("class_balance", "stahlwerk", collapsed_class),
    "shifted_distribution": Defect("drift", "stahlwerk", shifted_distribution),
    "leaked_pii": Defect("pii_residual", "stahlwerk", leaked_pii),
    "duplicates": Defect("duplicate_rate", "northbank", duplicates),
    "too_much_synthetic": Defect("synthetic_share", "stahlwerk", too_much_synthetic),
    "wrong_synthetic": Defect("synthetic_fidelity", "stahlwerk", wrong_synthetic),
    "no_gold_set": Defect("gold_set", "northbank", no_gold_set, gold_set=False),
}


def test_every_blocking_gate_has_a_planted_defect() -> None:
    assert {d.gate for d in DEFECTS.values()} == {g.name for g in GATES if g.blocking}


@pytest.mark.parametrize("name", sorted(DEFECTS))
def test_defect_is_blocked_by_its_own_gate(name: str, pipeline: Harness, example_config: TenantsConfig) -> None:
    defect = DEFECTS[name]
    tenant = example_config.tenant(defect.tenant)
    dataset, plan = defect.build(tenant, tenant.datasets[0])
    if defect.gate == "drift":  # drift needs a reference on main: publish a normal batch first
        reference = process(pipeline, tenant, dataset, build_drop(tenant, dataset, "reference", N, seed=40))
        assert reference.published is not None and reference.published.status == "published"

    run = process(pipeline, tenant, dataset, plan, gold_set=defect.gold_set)

    assert run.blocked_by == [defect.gate], {k: v for k, v in run.outcomes.items() if not v.passed}
    outcome = run.outcomes[defect.gate]
    assert not outcome.passed and outcome.worst, outcome
    assert run.published is None
    gate_stage = next(g.stage for g in GATES if g.name == defect.gate)
    assert list(run.reports)[-1] == gate_stage  # nothing downstream of the failed gate ran


@pytest.mark.parametrize("tenant_name", ["northbank", "stahlwerk"])
@pytest.mark.parametrize("seed", [1, 2])
def test_clean_batches_pass_every_gate(tenant_name: str, seed: int, pipeline: Harness,
                                       example_config: TenantsConfig) -> None:
    tenant = example_config.tenant(tenant_name)
    dataset = tenant.datasets[0]
    first = process(pipeline, tenant, dataset, build_drop(tenant, dataset, f"clean-{seed}-a", N, seed=seed,
                                                               synthetic_share=0.2))
    # A second batch also exercises the drift gate against the first one on main.
    second = process(pipeline, tenant, dataset, build_drop(tenant, dataset, f"clean-{seed}-b", N,
                                                                seed=seed + 100, synthetic_share=0.2))
    for run in (first, second):
        failed = {k: v for k, v in run.outcomes.items() if not v.passed}
        assert failed == {}
        assert run.published is not None and run.published.status == "published"
        assert set(run.outcomes) == {g.name for g in GATES}
    assert Stage.PUBLISHED not in first.reports  # publishing is its own step, reported separately
