"""The code location itself -- landing sensor, partitioned job, blocking checks, publish -- run by Dagster with no
server: lakeFS is the in-memory resource, S3 is moto in process, the platform database is SQLite in a temp folder.

This is what makes asset, sensor and check code testable like the domain code: swap the resources, keep the
definitions (:func:`~dagster_project.definitions.build_definitions` takes the replacements).
"""

from __future__ import annotations

import functools
import json

import dagster as dg
import pytest

from dagster_project import layout
from dagster_project.alerts import AlertKind, AlertOutbox
from dagster_project.clock import utcnow
from dagster_project.definitions import build_definitions
from dagster_project.devservices.sample_data import build_drop, upload_drop, upload_gold_set
from dagster_project.gates import GATES
from dagster_project.publishing.versions import tagged_versions
from dagster_project.settings import Settings
from dagster_project.tenants import load_tenants
from resources.object_storage import ObjectStorageResource
from tests.unit.conftest import BUCKET, sense_and_run
from tests.waiting import wait_until


def test_a_drop_is_sensed_run_checked_and_published_with_no_server(location) -> None:
    settings, defs, s3, lakefs, instance = location
    tenant = load_tenants(settings.tenants_file).tenant("northbank")
    dataset = tenant.dataset("support_intents")
    upload_drop(s3, BUCKET, build_drop(tenant, dataset, "wk49", 200, seed=4))
    upload_gold_set(s3, BUCKET, tenant, dataset)

    request, result = sense_and_run(defs, instance, "northbank", "support_intents")
    assert result.success
    evaluations = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assert evaluations == {g.name: True for g in GATES}
    [version] = tagged_versions(lakefs.repository(tenant.lakefs_repository), dataset.name)
    assert version.tag == "support_intents/v1" and version.batch_id == request.partition_key

    # The version sensor exports the new version -- and ignores, with an alert, a tag someone else made.
    repo = lakefs.repository(tenant.lakefs_repository)
    branch = layout.batch_branch("support_intents", request.partition_key)
    assert repo.create_tag("support_intents/v2", repo.branch_head(branch))  # the batch branch, not a version
    version_sensor = defs.resolve_sensor_def("northbank__support_intents__version_sensor")
    with dg.build_sensor_context(instance=instance, resources=defs.resources) as context:
        sensed = version_sensor(context)
    assert [r.tags[layout.VERSION_TAG] for r in sensed.run_requests] == ["support_intents/v1"]
    [alert] = [m.alert for m in AlertOutbox(settings.resolved_database_url).messages()]
    assert alert.kind is AlertKind.UNTRUSTED_VERSION and alert.details["tag"] == "support_intents/v2"
    with dg.build_sensor_context(instance=instance, resources=defs.resources, cursor=sensed.cursor) as context:
        again = version_sensor(context)
    assert again.run_requests == [] and len(AlertOutbox(settings.resolved_database_url).messages()) == 1
    export = defs.resolve_job_def("northbank__support_intents__version_job").execute_in_process(
        instance=instance, tags={layout.VERSION_TAG: "support_intents/v2"}, raise_on_error=False)
    [failure] = [e for e in export.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE]
    assert "is not a version Trainyard published" in failure.step_failure_data.error.message  # never exported


def test_a_failed_blocking_check_stops_the_run_alerts_and_leaves_main_alone(location) -> None:
    settings, defs, s3, lakefs, instance = location
    tenant = load_tenants(settings.tenants_file).tenant("stahlwerk")
    dataset = tenant.dataset("defect_reports")  # declared PII-free: nothing redacts what arrives
    upload_drop(s3, BUCKET, build_drop(tenant, dataset, "bad", 120, seed=8, plant_defects=False, pii_share=0.5))
    upload_gold_set(s3, BUCKET, tenant, dataset)

    _, result = sense_and_run(defs, instance, "stahlwerk", "defect_reports")
    assert not result.success
    failed = [e.check_name for e in result.get_asset_check_evaluations() if not e.passed]
    assert failed == ["pii_residual"]
    assert instance.get_run_by_id(result.run_id).tags[layout.ALERTED_TAG] == "gate_failed:pii_residual"
    [message] = AlertOutbox(settings.resolved_database_url).messages()
    assert message.alert.kind is AlertKind.GATE_FAILED and message.alert.metric == "pii_residual"
    assert tagged_versions(lakefs.repository(tenant.lakefs_repository), dataset.name) == []


def test_a_drop_with_nothing_to_publish_fails_its_run_with_a_drop_rejected_alert(location) -> None:
    settings, defs, s3, lakefs, instance = location
    tenant = load_tenants(settings.tenants_file).tenant("northbank")
    dataset = tenant.dataset("support_intents")
    plan = build_drop(tenant, dataset, "no-manifest", 40, seed=9, with_manifest=False, plant_defects=False)
    upload_drop(s3, BUCKET, plan)
    upload_gold_set(s3, BUCKET, tenant, dataset)

    request, result = sense_and_run(defs, instance, "northbank", "support_intents")  # grace 0: started at once
    assert not result.success
    failed_steps = [e.step_key for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE]
    assert failed_steps == ["northbank__support_intents__raw"]
    assert instance.get_run_by_id(result.run_id).tags[layout.ALERTED_TAG] == "drop_rejected"
    [message] = AlertOutbox(settings.resolved_database_url).messages()
    assert message.alert.kind is AlertKind.DROP_REJECTED and message.alert.batch_id == request.partition_key
    assert tagged_versions(lakefs.repository(tenant.lakefs_repository), dataset.name) == []


_STALLS = {"left": 0}


class _StallingBody:
    def __init__(self, body) -> None:
        self.body = body

    def read(self, size: int = -1) -> bytes:
        raise TimeoutError("Read timed out")


class _Patched:
    """A boto3 client with some of its methods replaced (each replacement gets the real client first)."""

    def __init__(self, real, **replaced) -> None:
        self._real, self._replaced = real, replaced

    def __getattr__(self, name):
        if name in self._replaced:
            return functools.partial(self._replaced[name], self._real)
        return getattr(self._real, name)


def _stalling_get_object(real, Bucket, Key):  # noqa: N803 - boto3's spelling
    answer = real.get_object(Bucket=Bucket, Key=Key)
    if Key.endswith(".parquet") and _STALLS["left"] > 0:
        _STALLS["left"] -= 1
        return {**answer, "Body": _StallingBody(answer["Body"])}
    return answer


class StallingLanding(ObjectStorageResource):
    """The landing zone, with the next ``_STALLS['left']`` reads of a Parquet file timing out mid-file."""

    def client(self):
        return _Patched(super().client(), get_object=_stalling_get_object)


@pytest.mark.parametrize(("stalls", "succeeds"), [(1, True), (10, False)])
def test_a_stalled_read_is_retried_and_never_quarantined_as_the_clients_fault(
        location, monkeypatch: pytest.MonkeyPatch, stalls: int, succeeds: bool) -> None:
    import assets.factory as factory

    settings, _, s3, lakefs, instance = location
    monkeypatch.setattr(factory, "SOURCE_RETRY_SECONDS", 0)
    _STALLS["left"] = stalls
    defs = build_definitions(settings, resources={"lakefs": lakefs, "landing": StallingLanding(
        landing_bucket=BUCKET, access_key_id="unit", secret_access_key="unit-secret")})
    tenant = load_tenants(settings.tenants_file).tenant("northbank")
    dataset = tenant.dataset("support_intents")
    plan = build_drop(tenant, dataset, "wk50", 150, seed=6, plant_defects=False)
    assert any(name.endswith(".parquet") for name in plan.files)
    upload_drop(s3, BUCKET, plan)
    upload_gold_set(s3, BUCKET, tenant, dataset)

    request, result = sense_and_run(defs, instance, "northbank", "support_intents")
    retries = [e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_UP_FOR_RETRY]
    assert result.success is succeeds and len(retries) == min(stalls, factory.SOURCE_RETRIES)
    repo = lakefs.repository(tenant.lakefs_repository)
    if succeeds:
        [version] = tagged_versions(repo, dataset.name)
        assert version.published_records == plan.records - plan.duplicates  # nothing lost to the stall
    else:
        branch = layout.batch_branch(dataset.name, request.partition_key)
        quarantine = repo.get_frame(branch, layout.stage_quarantine_path(dataset.name, "raw", request.partition_key))
        assert quarantine is None or not quarantine["reason"].str.contains("parquet").any()
        assert tagged_versions(repo, dataset.name) == []


def _tick(defs: dg.Definitions, instance: dg.DagsterInstance, name: str, cursor: str | None = None):
    with dg.build_sensor_context(instance=instance, resources=defs.resources, cursor=cursor) as context:
        return defs.resolve_sensor_def(name)(context)


def _land_clean_drop(settings: Settings, s3, drop_name: str, seed: int):
    """A clean 60-record northbank support_intents drop and its gold set in the landing bucket."""
    tenant = load_tenants(settings.tenants_file).tenant("northbank")
    dataset = tenant.dataset("support_intents")
    plan = build_drop(tenant, dataset, drop_name, 60, seed=seed, plant_defects=False)
    upload_drop(s3, BUCKET, plan)
    upload_gold_set(s3, BUCKET, tenant, dataset)
    return tenant, dataset, plan


def test_a_file_added_to_a_processed_drop_and_a_stray_file_are_alerted_once(location) -> None:
    from dagster_project.stages.landing import OUTSIDE_DROP

    settings, defs, s3, lakefs, instance = location
    tenant, dataset, plan = _land_clean_drop(settings, s3, "wk49", seed=4)
    request, result = sense_and_run(defs, instance, "northbank", "support_intents")
    assert result.success
    # S3 listings give whole seconds: a file uploaded in the second its drop was uploaded and registered cannot be
    # told from the drop's own files, so the correction arrives once the clock is past that second.
    created = instance.get_run_record_by_id(result.run_id).create_timestamp
    wait_until(lambda: utcnow().replace(microsecond=0) > created.replace(microsecond=0), "the next whole second")

    s3.put_object(Bucket=BUCKET, Key=plan.drop_prefix + "corrected.jsonl",
                  Body=b'{"ticket_id": "late-1", "text": "a corrected record"}\n')
    stray = layout.incoming_prefix(tenant.landing_prefix, dataset.name) + "forgot-the-folder.jsonl"
    s3.put_object(Bucket=BUCKET, Key=stray, Body=b'{"ticket_id": "late-2", "text": "no drop"}\n')
    sensor = layout.landing_sensor_name("northbank", "support_intents")
    first = _tick(defs, instance, sensor)
    assert first.run_requests == []  # the processed drop is not started again
    [message] = AlertOutbox(settings.resolved_database_url).messages()
    alert = message.alert
    assert alert.kind is AlertKind.OBJECT_NOT_INGESTED and alert.value == 2
    assert alert.details["drops_with_late_files"] == ["wk49"]
    listed = "\n".join(alert.details["objects"])
    assert "corrected.jsonl" in listed and request.partition_key in listed and OUTSIDE_DROP in listed

    second = _tick(defs, instance, sensor, cursor=first.cursor)
    assert second.run_requests == [] and len(AlertOutbox(settings.resolved_database_url).messages()) == 1
    s3.put_object(Bucket=BUCKET, Key=stray, Body=b'{"ticket_id": "late-2", "text": "uploaded again, longer"}\n')
    third = _tick(defs, instance, sensor, cursor=second.cursor)
    assert len(AlertOutbox(settings.resolved_database_url).messages()) == 2  # a new upload is news again

    # The client sends the drop again, manifest last as asked: the manifest is then the drop's newest object.
    s3.put_object(Bucket=BUCKET, Key=plan.drop_prefix + "manifest.json", Body=json.dumps(plan.manifest).encode())
    _tick(defs, instance, sensor, cursor=third.cursor)
    messages = AlertOutbox(settings.resolved_database_url).messages()
    assert len(messages) == 3 and messages[-1].alert.details["objects"][0].startswith(
        f"{plan.drop_prefix}manifest.json")


def _refusing_paginator(real, name):
    if _REFUSING["on"]:
        raise ConnectionRefusedError("S3 refused the connection")
    return real.get_paginator(name)


class FailingListing(ObjectStorageResource):
    """The landing zone while S3 refuses to list (``_REFUSING['on']``)."""

    def client(self):
        return _Patched(super().client(), get_paginator=_refusing_paginator)


_REFUSING = {"on": True}


def test_a_landing_sensor_that_keeps_failing_alerts_on_call_and_recovers(location) -> None:
    from dagster_project.alerts import IncidentStatus, sensor_failing_key

    settings, _, s3, lakefs, instance = location
    defs = build_definitions(settings, resources={"lakefs": lakefs, "landing": FailingListing(
        landing_bucket=BUCKET, access_key_id="unit", secret_access_key="unit-secret")})
    tenant = load_tenants(settings.tenants_file).tenant("northbank")
    sensor = layout.landing_sensor_name("northbank", "support_intents")
    outbox = AlertOutbox(settings.resolved_database_url)
    _REFUSING["on"] = True
    for _ in range(3):
        assert outbox.messages() == []  # below the threshold a failed tick is a blip
        with pytest.raises(Exception, match="S3 refused"):
            _tick(defs, instance, sensor)
    [message] = outbox.messages()
    assert message.alert.kind is AlertKind.SENSOR_FAILING and message.alert.channel == tenant.slack_channel
    assert message.alert.details["sensor"] == sensor

    _REFUSING["on"] = False
    _tick(defs, instance, sensor)
    assert outbox.incident(sensor_failing_key(sensor)).status is IncidentStatus.RESOLVED
    assert len(outbox.messages()) == 2  # the alert and its recovery


def test_a_file_newer_than_its_manifest_is_quarantined_by_the_batch_and_alerted(location) -> None:
    from dagster_project.stages.landing import ARRIVED_LATE

    settings, defs, s3, lakefs, instance = location
    tenant, dataset, plan = _land_clean_drop(settings, s3, "wk51", seed=5)
    manifest_second = s3.head_object(Bucket=BUCKET, Key=plan.drop_prefix + "manifest.json")["LastModified"]
    wait_until(lambda: utcnow().replace(microsecond=0) > manifest_second,  # S3 times have whole seconds
               "the second after the manifest's")
    late = b'{"ticket_id": "late-3", "text": "sent after the manifest"}\n'
    s3.put_object(Bucket=BUCKET, Key=plan.drop_prefix + "part-2.jsonl", Body=late)

    request, result = sense_and_run(defs, instance, "northbank", "support_intents")
    assert result.success
    [message] = AlertOutbox(settings.resolved_database_url).messages()
    assert message.alert.kind is AlertKind.OBJECT_NOT_INGESTED and message.alert.value == 1
    assert message.alert.details["objects"] == [f"{plan.drop_prefix}part-2.jsonl ({len(late)} bytes): {ARRIVED_LATE}"]
    quarantine = lakefs.repository(tenant.lakefs_repository).require_frame(
        "main", layout.stage_quarantine_path(dataset.name, "raw", request.partition_key))
    assert quarantine["reason"].tolist() == [ARRIVED_LATE]  # and the batch holds it, with the same reason
