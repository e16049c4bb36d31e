"""Process-wide settings from ``TRAINYARD_*`` environment variables (and an optional ``.env``).

Why one object: every entry point (the Dagster code location, the CLI, the demo, the tests) needs the same
endpoints and credentials, and a typo in an env var name should fail loudly in one place, not as a
connection error deep inside a run. Secrets are ``SecretStr`` so they never end up in logs or reprs.
Defaults describe the embedded local setup (moto S3 and the lakeFS emulator on loopback).
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

PACKAGE_DIR = Path(__file__).resolve().parent
EXAMPLE_TENANTS_FILE = PACKAGE_DIR / "config" / "tenants.yaml"
SECRET_ENV_VARS = {
    "lakefs_secret_access_key": "TRAINYARD_LAKEFS_SECRET_ACCESS_KEY",
    "s3_secret_access_key": "TRAINYARD_S3_SECRET_ACCESS_KEY",
    "slack_bot_token": "TRAINYARD_SLACK_BOT_TOKEN",
    "database_url": "TRAINYARD_DATABASE_URL",
}
"""The settings the code location reads as ``dg.EnvVar`` (secrets; the database URL carries a password)."""


class Settings(BaseSettings):
    """Everything that differs between a laptop, CI and production."""

    model_config = SettingsConfigDict(env_prefix="TRAINYARD_", env_file=".env", extra="ignore")

    tenants_file: Path = EXAMPLE_TENANTS_FILE
    home: Path = Path(".trainyard")
    """Local state: simulated vendor submissions, the emulator's data, the demo's DAGSTER_HOME."""

    # Object storage (landing zone). Leave endpoint empty for AWS S3.
    s3_endpoint_url: str | None = "http://127.0.0.1:9310"
    s3_region: str = "us-east-1"
    s3_access_key_id: str = "trainyard"
    s3_secret_access_key: SecretStr = SecretStr("trainyard-secret")
    s3_read_timeout_seconds: float = 60.0
    landing_bucket: str = "trainyard-landing"

    # lakeFS (the emulator locally; a real lakeFS is a URL and key change).
    lakefs_url: str = "http://127.0.0.1:8310"
    lakefs_access_key_id: str = "AKIATRAINYARDLOCAL"
    lakefs_secret_access_key: SecretStr = SecretStr("trainyard-lakefs-secret")
    lakefs_ui_url: str = ""
    """The lakeFS web UI, for links in asset metadata (a real lakeFS serves it at ``lakefs_url``); empty: no links
    (the emulator has no UI)."""
    lakefs_storage_namespace_root: str = "local://trainyard"
    """Repositories are created as ``<root>/<repository>`` (e.g. ``s3://my-lakefs-bucket`` in production)."""

    # Gatekeeper: lakeFS calls it before every merge into main (pre-merge webhook). Empty URL = not installed.
    gatekeeper_url: str | None = "http://127.0.0.1:9340/lakefs/pre-merge"
    """The URL lakeFS uses to reach the gatekeeper (installed in each tenant repository's action file)."""
    gatekeeper_secret: SecretStr = SecretStr("trainyard-gatekeeper-local")

    rejected_branch_retention_days: float = 30.0
    """Branches of rejected batches are kept this long for forensics, then deleted by the daily cleanup."""

    # Landing sensor.
    manifest_grace_minutes: float = 60.0
    """A drop with data files but no manifest.json after this long is ingested as fully quarantined."""
    sensor_interval_seconds: int = 15

    # Alerts: the outbox lives in the platform database; Slack delivers. Defaults: the local Slack receiver.
    database_url: str | None = None
    """SQLAlchemy URL of the platform's own tables (alert outbox, incidents); SQLite under ``home`` if unset."""
    database_schema: str | None = None
    slack_bot_token: SecretStr = SecretStr("xoxb-trainyard-local")
    slack_signing_secret: SecretStr = SecretStr("")
    """The Slack app's signing secret: set, alerts get an *Acknowledge* button whose clicks the Trainyard service
    (``trainyard gatekeeper``) verifies and records at ``/slack/interactivity``."""
    slack_base_url: str = "http://127.0.0.1:9330/api/"
    """``https://slack.com/api/`` in production; the embedded Slack receiver locally."""
    alert_throttle_minutes: float = 60.0
    stalled_run_minutes: float = 30.0
    """A STARTED batch run without a new event for this long raises ``run_stalled``."""
    sensor_failures_before_alert: int = 3
    """A sensor whose ticks fail this many times in a row raises ``sensor_failing``."""
    platform_slack_channel: str = "#trainyard-platform-oncall"
    """Where alerts about the platform itself go (the sensors that serve every tenant)."""
    playbook_base_url: str | None = None
    """Where on-call opens ``<kind>.md`` (e.g. the repository's ops_playbooks URL). Unset: the Trainyard service
    (the gatekeeper) serves them at ``<its origin>/playbooks/``, a web address Slack can open; without the service,
    the local folder."""
    dagster_url: str = "http://127.0.0.1:3000"
    """Dagster UI base URL, for run links in alerts."""

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.home.resolve() / 'trainyard.db'}"

    @property
    def resolved_playbook_base_url(self) -> str:
        if self.playbook_base_url:
            return self.playbook_base_url
        if self.gatekeeper_url:
            parts = urlsplit(self.gatekeeper_url)
            return f"{parts.scheme}://{parts.netloc}/playbooks"
        return (PACKAGE_DIR.parent / "ops_playbooks").as_uri()

    def secret_environment(self) -> dict[str, str]:
        """The secret settings as environment variables, for the Dagster processes the CLI starts (the code
        location reads them as ``dg.EnvVar``); the database URL resolved to the local SQLite file when unset."""
        values = {
            "lakefs_secret_access_key": self.lakefs_secret_access_key.get_secret_value(),
            "s3_secret_access_key": self.s3_secret_access_key.get_secret_value(),
            "slack_bot_token": self.slack_bot_token.get_secret_value(),
            "database_url": self.resolved_database_url,
        }
        return {SECRET_ENV_VARS[name]: value for name, value in values.items()}

    @property
    def lakefs_api_url(self) -> str:
        return self.lakefs_url.rstrip("/") + "/api/v1"
