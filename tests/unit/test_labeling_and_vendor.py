"""Labeling tasks and routing, and the simulated workforce that answers them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from dagster_project.stages.labeling import build_tasks, route_to_vendors
from dagster_project.tenants import DatasetConfig, TenantsConfig, VendorConfig
from dagster_project.vendors import build_vendor
from dagster_project.vendors.base import ANNOTATION_COLUMNS, TASK_COLUMNS
from dagster_project.vendors.simulated import SimulatedWorkforce

LABELS = ["card_issue", "payment_dispute", "account_access", "loan_enquiry", "fraud_report"]


def dataset_with(example_config: TenantsConfig, **changes: Any) -> DatasetConfig:
    """The example support_intents dataset with some settings changed (validated like the file would be)."""
    raw = example_config.tenant("northbank").dataset("support_intents").model_dump(by_alias=True)
    return DatasetConfig.model_validate({**raw, **changes})


def items(n: int, prefix: str = "rec") -> pd.DataFrame:
    return pd.DataFrame(
        {"record_id": [f"{prefix}{i:05d}" for i in range(n)], "text": [f"ticket {i}: card declined" for i in range(n)]}
    )


# ---------------------------------------------------------------------------------------------------- tasks


def test_build_tasks_gives_overlap_k_replicas_per_item(example_config: TenantsConfig) -> None:
    dataset = dataset_with(example_config, overlap_k=3)
    tasks = build_tasks(items(2), dataset)
    assert list(tasks.columns) == [*TASK_COLUMNS, "is_gold"]
    assert tasks[["task_id", "item_id", "replica"]].values.tolist() == [
        ["rec00000-r0", "rec00000", 0],
        ["rec00000-r1", "rec00000", 1],
        ["rec00000-r2", "rec00000", 2],
        ["rec00001-r0", "rec00001", 0],
        ["rec00001-r1", "rec00001", 1],
        ["rec00001-r2", "rec00001", 2],
    ]
    assert tasks["text"].tolist() == ["ticket 0: card declined"] * 3 + ["ticket 1: card declined"] * 3
    assert set(tasks["vendor"]) == {"simwork_uk"}


def test_task_ids_are_stable_and_unique(example_config: TenantsConfig) -> None:
    dataset = dataset_with(example_config, overlap_k=2)
    records = items(50)
    first = build_tasks(records, dataset)
    again = build_tasks(records.sample(frac=1, random_state=1).reset_index(drop=True), dataset)
    assert first["task_id"].is_unique and len(first) == 100
    assert sorted(first["task_id"]) == sorted(again["task_id"])
    by_task = again.set_index("task_id")["vendor"]
    assert (first.set_index("task_id")["vendor"] == by_task[first["task_id"]]).all()


def two_vendor_dataset(example_config: TenantsConfig) -> DatasetConfig:
    vendors = [
        {"name": "big", "share": 3.0, "annotators": 5},
        {"name": "small", "share": 1.0, "annotators": 5},
    ]
    return dataset_with(example_config, vendors=vendors)


def test_routing_is_roughly_proportional_to_share(example_config: TenantsConfig) -> None:
    """Shares 3:1 over 4000 items -> 75% / 25%, within 3 percentage points (sd of the share is ~0.7 points)."""
    routed = route_to_vendors(items(4000)["record_id"], two_vendor_dataset(example_config))
    shares = routed.value_counts(normalize=True)
    assert set(shares.index) == {"big", "small"}
    assert shares["big"] == pytest.approx(0.75, abs=0.03)
    assert shares["small"] == pytest.approx(0.25, abs=0.03)


def test_routing_is_stable_per_item_and_keeps_replicas_together(example_config: TenantsConfig) -> None:
    dataset = two_vendor_dataset(example_config)
    ids = items(400)["record_id"]
    first = route_to_vendors(ids, dataset)
    # Same item, same vendor, whatever else is in the batch or its order.
    subset = ids.iloc[::7].iloc[::-1]
    assert route_to_vendors(subset, dataset).tolist() == first[subset.index].tolist()
    tasks = build_tasks(items(400), dataset)
    assert (tasks.groupby("item_id")["vendor"].nunique() == 1).all()


# --------------------------------------------------------------------------------------------- workforce


def vendor_config(**changes: Any) -> VendorConfig:
    base: dict[str, Any] = {
        "name": "simwork",
        "annotators": 5,
        "accuracy": 0.9,
        "latency_seconds": 60,
        "price_per_judgement": 0.04,
        "seed": 7,
    }
    return VendorConfig(**{**base, **changes})


def simple_tasks(n_items: int, k: int, vendor: str = "simwork") -> pd.DataFrame:
    frame = pd.DataFrame(
        {
            "item_id": [f"i{i:05d}" for i in range(n_items)],
            "text": [f"report {i}: crack near weld seam" for i in range(n_items)],
        }
    )
    frame = frame.loc[frame.index.repeat(k)].reset_index(drop=True)
    frame["replica"] = frame.groupby("item_id").cumcount()
    frame["task_id"] = frame["item_id"] + "-r" + frame["replica"].astype(str)
    frame["vendor"] = vendor
    return frame[TASK_COLUMNS]


def test_submit_reports_status_and_is_idempotent(tmp_path: Path) -> None:
    workforce = SimulatedWorkforce(vendor_config(), tmp_path)
    status = workforce.submit("t/d/b1", simple_tasks(4, 3), LABELS)
    assert (status.submission_id, status.total_tasks, status.completed_tasks, status.done) == ("t/d/b1", 12, 12, True)
    first = workforce.fetch("t/d/b1")
    # A second submit with different tasks does not replace the first ones.
    again = workforce.submit("t/d/b1", simple_tasks(10, 3), LABELS)
    assert again.total_tasks == 12
    pd.testing.assert_frame_equal(workforce.fetch("t/d/b1"), first)


def test_fetch_is_deterministic_across_instances(tmp_path: Path) -> None:
    tasks = simple_tasks(30, 3)
    one = SimulatedWorkforce(vendor_config(), tmp_path)
    one.submit("sub", tasks, LABELS)
    other = SimulatedWorkforce(vendor_config(), tmp_path)  # a new process reading the same backlog
    pd.testing.assert_frame_equal(one.fetch("sub"), other.fetch("sub"))
    # Even a separate backlog gives the same judgements (only the submission time differs).
    elsewhere = SimulatedWorkforce(vendor_config(), tmp_path / "elsewhere")
    elsewhere.submit("sub", tasks, LABELS)
    columns = ["task_id", "item_id", "annotator_id", "label", "cost_usd"]
    pd.testing.assert_frame_equal(one.fetch("sub")[columns], elsewhere.fetch("sub")[columns])


def test_annotations_shape_and_k_distinct_annotators_per_item(tmp_path: Path) -> None:
    workforce = SimulatedWorkforce(vendor_config(annotators=4), tmp_path)
    tasks = simple_tasks(200, 4)
    workforce.submit("sub", tasks, LABELS)
    annotations = workforce.fetch("sub")
    assert list(annotations.columns) == ANNOTATION_COLUMNS
    assert annotations["task_id"].tolist() == tasks["task_id"].tolist()
    assert set(annotations["vendor"]) == {"simwork"}
    assert set(annotations["annotator_id"]) <= {"simwork-a01", "simwork-a02", "simwork-a03", "simwork-a04"}
    assert (annotations.groupby("item_id")["annotator_id"].nunique() == 4).all()
    assert set(annotations["label"]) <= set(LABELS)


def test_observed_accuracy_matches_configuration(tmp_path: Path) -> None:
    """~3000 judgements at accuracy 0.9: sd of the observed rate is sqrt(.9*.1/3000) = 0.55 points; allow 3."""
    workforce = SimulatedWorkforce(vendor_config(accuracy=0.9), tmp_path)
    tasks = simple_tasks(1000, 3)
    workforce.submit("sub", tasks, LABELS)
    annotations = workforce.fetch("sub")
    assert len(annotations) == 3000
    truth = tasks["text"].map(lambda text: workforce.true_label(text, LABELS))
    observed = float((annotations["label"] == truth).mean())
    assert observed == pytest.approx(0.9, abs=0.03)


def test_perfect_workforce_always_returns_the_true_label(tmp_path: Path) -> None:
    workforce = SimulatedWorkforce(vendor_config(accuracy=1.0), tmp_path)
    tasks = simple_tasks(50, 3)
    workforce.submit("sub", tasks, LABELS)
    truth = tasks["text"].map(lambda text: workforce.true_label(text, LABELS))
    assert (workforce.fetch("sub")["label"] == truth).all()


def test_timestamps_and_cost(tmp_path: Path) -> None:
    workforce = SimulatedWorkforce(vendor_config(price_per_judgement=0.05, latency_seconds=120), tmp_path)
    workforce.submit("sub", simple_tasks(100, 3), LABELS)
    annotations = workforce.fetch("sub")
    assert annotations["submitted_at"].nunique() == 1
    assert (annotations["completed_at"] >= annotations["submitted_at"]).all()
    latency = (annotations["completed_at"] - annotations["submitted_at"]).dt.total_seconds()
    assert latency.mean() == pytest.approx(120, rel=0.25)  # exponential with mean 120 s, 300 draws
    assert annotations["cost_usd"].tolist() == [0.05] * 300


def test_fetch_or_status_of_unknown_submission_raises_lookup_error(tmp_path: Path) -> None:
    workforce = SimulatedWorkforce(vendor_config(), tmp_path)
    with pytest.raises(LookupError, match="vendor 'simwork' has no submission 'nope'"):
        workforce.fetch("nope")
    with pytest.raises(LookupError):
        workforce.status("nope")


def test_build_vendor_gives_a_simulated_workforce(tmp_path: Path) -> None:
    client = build_vendor(vendor_config(), tmp_path)
    assert isinstance(client, SimulatedWorkforce)
    assert client.name == "simwork"
    assert client.annotator_ids() == [f"simwork-a0{i}" for i in range(1, 6)]
