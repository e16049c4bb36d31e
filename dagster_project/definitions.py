"""The Trainyard code location: every configured tenant dataset's assets, gates, jobs and sensors.

Assembled explicitly from the tenants file, so what the UI shows is exactly what the configuration says.
Secrets come from ``TRAINYARD_*`` environment variables through ``dg.EnvVar`` (never stored in run config)
when they are set; otherwise the local defaults of :class:`~dagster_project.settings.Settings` apply.
"""

from __future__ import annotations

import os

import dagster as dg

from assets.alert_sensors import build_alert_sensors
from assets.factory import build_dataset_definitions
from assets.governance import build_governance_definitions
from dagster_project.settings import Settings
from dagster_project.tenants import load_tenants
from resources.governance import GovernanceResource
from resources.lakefs import LakeFSResource
from resources.object_storage import ObjectStorageResource
from resources.slack import AlertsResource, SlackResource
from resources.vendors import WorkforceResource


def _secret(env_name: str, default: str) -> str | dg.EnvVar:
    return dg.EnvVar(env_name) if env_name in os.environ else default


def build_resources(settings: Settings) -> dict[str, dg.ConfigurableResource]:
    return {
        "lakefs": LakeFSResource(
            url=settings.lakefs_url,
            access_key_id=settings.lakefs_access_key_id,
            secret_access_key=_secret("TRAINYARD_LAKEFS_SECRET_ACCESS_KEY",
                                      settings.lakefs_secret_access_key.get_secret_value()),
            storage_namespace_root=settings.lakefs_storage_namespace_root,
            gatekeeper_url=settings.gatekeeper_url or None,
        ),
        "landing": ObjectStorageResource(
            landing_bucket=settings.landing_bucket,
            endpoint_url=settings.s3_endpoint_url,
            region=settings.s3_region,
            access_key_id=settings.s3_access_key_id,
            secret_access_key=_secret("TRAINYARD_S3_SECRET_ACCESS_KEY",
                                      settings.s3_secret_access_key.get_secret_value()),
        ),
        "workforce": WorkforceResource(state_dir=str(settings.home.resolve() / "vendors")),
        "alerts": AlertsResource(
            database_url=_secret("TRAINYARD_DATABASE_URL", settings.resolved_database_url),
            db_schema=settings.database_schema,
            throttle_minutes=settings.alert_throttle_minutes,
            playbook_base_url=settings.resolved_playbook_base_url,
        ),
        "governance": GovernanceResource(
            database_url=_secret("TRAINYARD_DATABASE_URL", settings.resolved_database_url),
            db_schema=settings.database_schema,
        ),
        "slack": SlackResource(
            token=_secret("TRAINYARD_SLACK_BOT_TOKEN", settings.slack_bot_token.get_secret_value()),
            base_url=settings.slack_base_url,
        ),
    }


def build_definitions(settings: Settings | None = None) -> dg.Definitions:
    settings = settings or Settings()
    tenants = load_tenants(settings.tenants_file)
    datasets = [build_dataset_definitions(tenant, dataset, settings) for tenant, dataset in tenants.datasets()]
    governance_jobs, governance_sensors, schedules = build_governance_definitions(tenants, settings)
    return dg.Definitions(
        assets=[a for d in datasets for a in d.assets],
        asset_checks=[c for d in datasets for c in d.asset_checks],
        jobs=[*(j for d in datasets for j in d.jobs), *governance_jobs],
        sensors=[*(sensor for d in datasets for sensor in d.sensors), *build_alert_sensors(tenants, settings),
                 *governance_sensors],
        schedules=schedules,
        resources=build_resources(settings),
    )


defs = build_definitions()
