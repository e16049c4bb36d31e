"""The ``trainyard`` command line as an operator runs it: separate processes, real HTTP."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import lakefs_sdk
import pytest
from lakefs_sdk.exceptions import UnauthorizedException

from dagster_project.devservices.s3 import wait_until_healthy
from tests.conftest import REPO_ROOT, free_port, write_tenants

TRAINYARD = str(Path(sys.executable).parent / "trainyard")


def _emulator(port: int, data_dir: Path) -> subprocess.Popen:
    process = subprocess.Popen(
        [TRAINYARD, "lakefs-emulator", "--host", "127.0.0.1", "--port", str(port), "--data-dir", str(data_dir),
         "--access-key-id", "AKIACLI", "--secret-access-key", "cli-secret"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    wait_until_healthy(f"http://127.0.0.1:{port}/api/v1/healthcheck", process=process)
    return process


def _repositories(port: int, secret: str = "cli-secret") -> lakefs_sdk.RepositoriesApi:
    config = lakefs_sdk.Configuration(host=f"http://127.0.0.1:{port}/api/v1", username="AKIACLI", password=secret)
    return lakefs_sdk.RepositoriesApi(lakefs_sdk.ApiClient(config))


def test_lakefs_emulator_command_serves_persists_and_authenticates(tmp_path: Path) -> None:
    port = free_port()
    process = _emulator(port, tmp_path / "data")
    try:
        _repositories(port).create_repository(lakefs_sdk.RepositoryCreation(
            name="cli-repo", storage_namespace="local://cli/cli-repo", default_branch="main"))
        with pytest.raises(UnauthorizedException):
            _repositories(port, secret="wrong").list_repositories()
    finally:
        process.terminate()
        output, _ = process.communicate(timeout=20)
    assert process.returncode == 0, output
    assert f"listening on http://127.0.0.1:{port}/api/v1" in output

    restarted = _emulator(port, tmp_path / "data")
    try:
        assert [r.id for r in _repositories(port).list_repositories().results] == ["cli-repo"]
    finally:
        restarted.terminate()
        restarted.communicate(timeout=20)


def test_check_config_names_file_tenant_dataset_and_field(tmp_path: Path) -> None:
    def break_it(raw: dict) -> None:
        raw["tenants"][0]["datasets"][0]["schema"]["text_field"] = "body"

    bad = write_tenants(tmp_path / "bad-tenants.yaml", break_it)
    completed = subprocess.run([TRAINYARD, "check-config", str(bad)], capture_output=True, text=True, timeout=60)
    assert completed.returncode == 2
    location = f"{bad}: tenant 'northbank', dataset 'support_intents', field 'schema.text_field'"
    assert location in completed.stderr, completed.stderr
    assert "'body' is used but not declared under fields" in completed.stderr

    good = subprocess.run([TRAINYARD, "check-config"], capture_output=True, text=True, timeout=60, cwd=REPO_ROOT,
                          env={k: v for k, v in os.environ.items() if k != "TRAINYARD_TENANTS_FILE"})
    assert good.returncode == 0
    assert good.stdout.splitlines() == [
        "northbank/support_intents: 5 fields, 5 labels, k=3, vendors simwork_uk, publish auto",
        "northbank/complaints: 4 fields, 4 labels, k=3, vendors simwork_uk, publish owner",
        "stahlwerk/defect_reports: 6 fields, 6 labels, k=3, vendors simwork_eu, publish auto",
    ]


def test_ordinary_mistakes_answer_in_one_line_naming_what_is_valid(tmp_path: Path) -> None:
    port = free_port()
    process = _emulator(port, tmp_path / "data")
    env = {**os.environ, "TRAINYARD_HOME": str(tmp_path / "home"), "TRAINYARD_LAKEFS_URL": f"http://127.0.0.1:{port}",
           "TRAINYARD_LAKEFS_ACCESS_KEY_ID": "AKIACLI", "TRAINYARD_LAKEFS_SECRET_ACCESS_KEY": "cli-secret"}
    env.pop("TRAINYARD_TENANTS_FILE", None)
    env.pop("TRAINYARD_DATABASE_URL", None)

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([TRAINYARD, *args], env=env, capture_output=True, text=True, timeout=120)

    try:
        _repositories(port).create_repository(lakefs_sdk.RepositoryCreation(
            name="northbank", storage_namespace="local://cli/northbank", default_branch="main"))
        cases = {
            ("versions", "northbank", "nosuch"): "its datasets: support_intents, complaints",
            ("approve", "nosuch", "complaints", "b1", "--commit", "0123456789ab", "--as", "a@b.example"):
                "tenants: northbank, stahlwerk",
            ("diff", "northbank", "support_intents", "v1", "v2"): "`trainyard versions northbank support_intents`",
            ("show", "northbank", "complaints", "nosuch"): "`trainyard batches northbank complaints` lists them",
            ("batches", "stahlwerk", "nosuch"): "its datasets: defect_reports",
            ("ack", "42", "--as", "oncall@example.com"): "`trainyard alerts` lists the open ones",
        }
        for args, hint in cases.items():
            answer = run(*args)
            assert answer.returncode == 2, (args, answer.stdout, answer.stderr)
            assert "Traceback" not in answer.stderr and len(answer.stderr.strip().splitlines()) == 1, answer.stderr
            assert hint in answer.stderr, (args, answer.stderr)
        assert "no batches with an outcome yet" in run("batches", "northbank").stdout
    finally:
        process.terminate()
        process.communicate(timeout=20)



def test_every_command_explains_itself_with_an_example(capsys: pytest.CaptureFixture[str]) -> None:
    from dagster_project.cli import build_parser

    for command in ("batches", "show", "approve", "reject", "versions", "diff", "alerts", "ack", "dev"):
        with pytest.raises(SystemExit):
            build_parser().parse_args([command, "--help"])
        help_text = capsys.readouterr().out
        assert "example:" in help_text and "trainyard " + command in help_text, command
    with pytest.raises(SystemExit):
        build_parser().parse_args(["dev", "--help"])
    assert "port of the Dagster UI (default: 3000)" in capsys.readouterr().out
