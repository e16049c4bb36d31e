"""The Trainyard code location: every configured tenant dataset's definitions, merged, with the resources.

Assembled from the tenants file, so what the UI shows is exactly what the configuration says: each dataset's
factory returns a ``dg.Definitions`` (assets, gates, job, sensors), publishing and alerting add theirs, and
``dg.Definitions.merge`` joins them, as in Dagster's ``project_dagster_modal_pipes`` example. Secrets reach the
resources as ``dg.EnvVar`` (never as values in run config or in the code location's snapshot): the ``TRAINYARD_*``
environment, or the ``.env`` file Dagster loads itself. ``trainyard demo|dev|services`` put the embedded stack's
values into the environment of the processes they start.
"""

from __future__ import annotations

from collections.abc import Mapping

import dagster as dg

from assets.alert_sensors import build_alert_definitions
from assets.factory import build_dataset_definitions
from assets.publishing import build_publishing_definitions
from dagster_project.settings import SECRET_ENV_VARS, Settings
from dagster_project.tenants import load_tenants
from resources.approvals import ApprovalsResource
from resources.lakefs import LakeFSServerResource
from resources.object_storage import ObjectStorageResource
from resources.platform_db import PlatformDatabaseResource
from resources.slack import AlertsResource, SlackResource
from resources.vendors import WorkforceResource


def build_resources(settings: Settings) -> dict[str, dg.ConfigurableResource]:
    secret = {name: dg.EnvVar(env) for name, env in SECRET_ENV_VARS.items()}
    database = PlatformDatabaseResource(url=secret["database_url"], db_schema=settings.database_schema)
    return {
        "lakefs": LakeFSServerResource(
            url=settings.lakefs_url,
            access_key_id=settings.lakefs_access_key_id,
            secret_access_key=secret["lakefs_secret_access_key"],
            storage_namespace_root=settings.lakefs_storage_namespace_root,
            gatekeeper_url=settings.gatekeeper_url or None,
            ui_url=settings.lakefs_ui_url or None,
        ),
        "landing": ObjectStorageResource(
            landing_bucket=settings.landing_bucket,
            endpoint_url=settings.s3_endpoint_url,
            region=settings.s3_region,
            access_key_id=settings.s3_access_key_id,
            secret_access_key=secret["s3_secret_access_key"],
            manifest_grace_minutes=settings.manifest_grace_minutes,
            read_timeout_seconds=settings.s3_read_timeout_seconds,
        ),
        "workforce": WorkforceResource(state_dir=str(settings.home.resolve() / "vendors")),
        "alerts": AlertsResource(
            database=database,
            throttle_minutes=settings.alert_throttle_minutes,
            stalled_run_minutes=settings.stalled_run_minutes,
            sensor_failures_before_alert=settings.sensor_failures_before_alert,
            platform_channel=settings.platform_slack_channel,
            playbook_base_url=settings.resolved_playbook_base_url,
            dagster_url=settings.dagster_url,
        ),
        "approvals": ApprovalsResource(
            database=database, rejected_branch_retention_days=settings.rejected_branch_retention_days),
        "slack": SlackResource(token=secret["slack_bot_token"], base_url=settings.slack_base_url,
                               acknowledge_button=bool(settings.slack_signing_secret.get_secret_value())),
    }


def build_definitions(settings: Settings | None = None,
                      resources: Mapping[str, dg.ConfigurableResource] | None = None) -> dg.Definitions:
    """The code location; ``resources`` replaces some of the configured ones (e.g. in-memory fakes in tests)."""
    settings = settings or Settings()
    tenants = load_tenants(settings.tenants_file)
    return dg.Definitions.merge(
        *(build_dataset_definitions(tenant, dataset, settings) for tenant, dataset in tenants.datasets()),
        build_publishing_definitions(tenants, settings),
        build_alert_definitions(tenants, settings),
        dg.Definitions(resources={**build_resources(settings), **(resources or {})}),
    )


defs = build_definitions()
