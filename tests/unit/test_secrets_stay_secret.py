"""Secrets, however they are supplied (environment or the ``.env`` file the README supports), reach resources only
as ``dg.EnvVar`` references: their values never appear in resource config or in the job snapshots Dagster stores
with every run."""

from __future__ import annotations

import dagster as dg
import pytest
from dagster._serdes import serialize_value  # tests only: the form in which Dagster stores snapshots

from dagster_project.definitions import build_definitions, build_resources
from dagster_project.settings import SECRET_ENV_VARS, Settings

SECRET_VALUES = {
    "TRAINYARD_LAKEFS_SECRET_ACCESS_KEY": "lakefs-secret-5f1c",
    "TRAINYARD_S3_SECRET_ACCESS_KEY": "s3-secret-9a0d",
    "TRAINYARD_SLACK_BOT_TOKEN": "xoxb-secret-77e2",
    "TRAINYARD_DATABASE_URL": "postgresql+psycopg2://trainyard:db-password-31b8@db:5432/dagster",
}


@pytest.fixture
def secrets_in_dotenv(tmp_path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    for name in SECRET_ENV_VARS.values():
        monkeypatch.delenv(name, raising=False)
    (tmp_path / ".env").write_text("".join(f"{k}={v}\n" for k, v in SECRET_VALUES.items()))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TRAINYARD_HOME", str(tmp_path / "home"))
    settings = Settings()
    assert settings.slack_bot_token.get_secret_value() == SECRET_VALUES["TRAINYARD_SLACK_BOT_TOKEN"]  # read from .env
    return settings


def resource_fields(resource: dg.ConfigurableResource):
    for name, value in resource:
        if isinstance(value, dg.ConfigurableResource):
            yield from resource_fields(value)
        else:
            yield name, value


def test_secret_fields_are_env_var_references(secrets_in_dotenv: Settings) -> None:
    values = [(key, name, value) for key, resource in build_resources(secrets_in_dotenv).items()
              for name, value in resource_fields(resource)]
    plain = [(key, name) for key, name, value in values
             if not isinstance(value, dg.EnvVar) and isinstance(value, str) and value in SECRET_VALUES.values()]
    assert plain == []
    references = {value.env_var_name for _, _, value in values if isinstance(value, dg.EnvVar)}
    assert references == set(SECRET_ENV_VARS.values())


def test_no_secret_value_is_in_a_job_snapshot(secrets_in_dotenv: Settings) -> None:
    defs = build_definitions(secrets_in_dotenv)
    jobs = list(defs.resolve_all_job_defs())
    assert jobs
    for job in jobs:
        snapshot = serialize_value(job.get_job_snapshot())
        leaked = [value for value in SECRET_VALUES.values() if value in snapshot]
        assert leaked == [], job.name


def test_the_cli_hands_dotenv_secrets_to_the_dagster_processes_it_starts(secrets_in_dotenv: Settings) -> None:
    assert secrets_in_dotenv.secret_environment() == SECRET_VALUES
