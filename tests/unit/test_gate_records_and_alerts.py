"""A gate's two side effects, without a server: its result recorded on the batch branch (once per measurement),
and on-call told where it is evaluated (an alert when it fails, a recovery when it passes again).
"""

from __future__ import annotations

import pytest

from dagster_project import layout
from dagster_project.alerts import AlertKind, AlertOutbox, AlertRouter, MessageType, OutboxStatus
from dagster_project.devservices.sample_data import build_drop
from dagster_project.gates import evaluate, evaluate_and_record, record_gate
from dagster_project.gates.notify import report_gate_result
from dagster_project.quality.result import Comparison, GateResult
from dagster_project.tenants import TenantsConfig
from tests.unit.harness import Harness

PLAYBOOKS = "https://git.example/trainyard/ops_playbooks"


@pytest.fixture
def batch(pipeline: Harness, example_config: TenantsConfig):
    tenant = example_config.tenant("northbank")
    dataset = tenant.dataset("support_intents")
    pipeline.process(tenant, dataset, build_drop(tenant, dataset, "b1", 160, seed=3), publish=False)
    return pipeline.batch(tenant, dataset, "b1")


def test_re_evaluating_unchanged_data_keeps_the_recorded_result(batch) -> None:
    path = layout.gate_result_path(batch.dataset.name, batch.batch_id, "completeness")
    first = GateResult.from_json(batch.repo.get_bytes(batch.branch, path))
    head = batch.repo.branch_head(batch.branch)
    again = evaluate_and_record(batch, "completeness")
    assert again.measurement() == first.measurement()
    assert batch.repo.branch_head(batch.branch) == head  # nothing new to commit
    assert GateResult.from_json(batch.repo.get_bytes(batch.branch, path)) == first  # its time and commit kept

    changed = again.model_copy(update={"value": 0.5, "passed": False})
    record_gate(batch, changed)
    assert batch.repo.branch_head(batch.branch) != head
    assert GateResult.from_json(batch.repo.get_bytes(batch.branch, path)).value == 0.5


def test_a_result_says_which_commit_and_paths_it_was_computed_on(batch) -> None:
    result = evaluate(batch, "duplicate_rate")
    assert result.computed_on is not None
    assert result.computed_on.commit_id == batch.repo.branch_head(batch.branch)
    assert result.computed_on.paths and all(p.startswith(f"datasets/{batch.dataset.name}/")
                                            for p in result.computed_on.paths)


def failed(name: str = "agreement") -> GateResult:
    return GateResult(name=name, passed=False, value=0.62, threshold=0.85, comparison=Comparison.AT_LEAST,
                      sample_size=190, worst=[{"annotator": "a3", "alpha": 0.41}])


def test_a_failed_blocking_gate_alerts_with_its_typed_result_and_recovers_when_it_passes(batch, tmp_path) -> None:
    router = AlertRouter(AlertOutbox(f"sqlite:///{tmp_path / 'alerts.db'}"))
    assert report_gate_result(router, failed(), True, batch, PLAYBOOKS, "http://dagster/runs/r1", "r1")
    [message] = router.outbox.messages()
    alert = message.alert
    assert alert.kind is AlertKind.GATE_FAILED and alert.channel == batch.tenant.slack_channel
    assert (alert.metric, alert.value, alert.threshold, alert.comparison) == ("agreement", 0.62, 0.85,
                                                                              Comparison.AT_LEAST)
    assert alert.branch == batch.branch and alert.batch_id == "b1" and alert.run_url == "http://dagster/runs/r1"
    assert alert.details["worst_offenders"] == [{"annotator": "a3", "alpha": 0.41}]
    assert alert.playbook_url == f"{PLAYBOOKS}/gate_failed.md"

    # The same failure on a retry is counted on the open incident, not posted again.
    assert report_gate_result(router, failed(), True, batch, PLAYBOOKS, None, "r2")
    assert len(router.outbox.messages()) == 1 and router.outbox.incident(alert.dedupe_key).occurrences == 2

    passed = failed().model_copy(update={"passed": True, "value": 0.9})
    assert not report_gate_result(router, passed, True, batch, PLAYBOOKS, None, "r3")
    recovery = router.outbox.messages()[-1]
    assert recovery.message_type is MessageType.RECOVERY and recovery.status is OutboxStatus.PENDING
    assert recovery.payload["resolved_by"] == "check passed in run r3"


def test_a_failed_warn_check_raises_a_warning_not_a_block(batch, tmp_path) -> None:
    router = AlertRouter(AlertOutbox(f"sqlite:///{tmp_path / 'alerts.db'}"))
    report_gate_result(router, failed("slice_audit"), False, batch, PLAYBOOKS, None)
    [message] = router.outbox.messages()
    assert message.alert.kind is AlertKind.CHECK_WARNING and "warning on" in message.alert.title
    # A passing check with no open incident resolves nothing and queues nothing.
    report_gate_result(router, failed("drift").model_copy(update={"passed": True}), True, batch, PLAYBOOKS, None)
    assert len(router.outbox.messages()) == 1
