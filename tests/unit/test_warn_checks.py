"""The two WARN checks' fail paths, on the in-memory fake: they pass on a clean batch, and each fails on the
defect it exists to see -- planted in the batch's annotations on its branch, as a vendor would deliver them.

WARN checks never stop a batch (the blocking gates have their planted defects in ``test_planted_defects.py``), so
the defect is written onto a finished batch and the check re-evaluated there.
"""

from __future__ import annotations

import pytest

from dagster_project.devservices.sample_data import build_drop
from dagster_project.gates import evaluate
from dagster_project.layout import Stage
from dagster_project.stages.batch import write_stage
from dagster_project.stages.labeling import GOLD_ITEM_PREFIX
from dagster_project.tenants import TenantsConfig
from tests.unit.harness import Harness


@pytest.fixture
def finished(pipeline: Harness, example_config: TenantsConfig):
    tenant = example_config.tenant("northbank")
    dataset = tenant.dataset("support_intents")  # segment_fields: [channel]
    pipeline.process(tenant, dataset, build_drop(tenant, dataset, "b1", 400, seed=3), publish=False)
    batch = pipeline.batch(tenant, dataset, "b1")
    assert evaluate(batch, "slice_audit").passed and evaluate(batch, "aggregation_consistency").passed
    return batch


def replant(batch, annotations, why: str) -> None:
    write_stage(batch, Stage.ANNOTATIONS, annotations)
    batch.commit("planted", why, {})


def test_slice_audit_flags_the_slice_a_vendor_team_labelled_carelessly(finished) -> None:
    batch = finished
    annotations, records = batch.read(Stage.ANNOTATIONS), batch.read(Stage.DEDUP)
    labels = list(batch.dataset.labels)
    annotators = sorted(annotations["annotator_id"].unique())
    chat = annotations["item_id"].isin(records.loc[records["channel"] == "chat", "record_id"])
    # On chat items every annotator answers a label of their own: agreement in that slice collapses.
    annotations.loc[chat, "label"] = [labels[annotators.index(a) % len(labels)]
                                      for a in annotations.loc[chat, "annotator_id"]]
    replant(batch, annotations, "careless labels on the chat slice")

    result = evaluate(batch, "slice_audit")
    assert not result.passed and result.value == 1
    [flagged] = result.worst
    assert (flagged["segment"], flagged["value"], flagged["flag_reasons"]) == ("channel", "chat", "agreement")


def test_aggregation_consistency_fails_when_spammers_outvote_the_careful_annotator(finished) -> None:
    batch = finished
    annotations = batch.read(Stage.ANNOTATIONS)
    spammers = sorted(annotations["annotator_id"].unique())[:2]
    # Two annotators answer the first label whatever the item: where both judged an item, majority vote follows
    # them, while Dawid-Skene learns that their answers carry no information and follows the third annotator.
    spam = annotations["annotator_id"].isin(spammers) & ~annotations["item_id"].str.startswith(GOLD_ITEM_PREFIX)
    annotations.loc[spam, "label"] = batch.dataset.labels[0]
    replant(batch, annotations, "two spammers")

    result = evaluate(batch, "aggregation_consistency")
    assert not result.passed and result.value > result.threshold
    followed_spammers = [w for w in result.worst if w["majority_label"] == batch.dataset.labels[0]]
    assert len(result.worst) == 10 and len(followed_spammers) >= 8, result.worst
