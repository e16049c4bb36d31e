"""``trainyard demo`` end to end, twice: the Dagster daemon's sensor picks the drops up and runs them, the
summary shows a commit on main for every dataset, and the second run finds the same result without new runs."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO_ROOT, free_port

TRAINYARD = str(Path(sys.executable).parent / "trainyard")


def s3_objects(home: Path) -> dict[str, str]:
    """Every object of the embedded S3, as its mirror on disk holds it: key -> LastModified."""
    return {meta["key"]: meta["last_modified"] for meta in (
        json.loads(path.read_text("utf-8")) for path in (home / "s3").glob("*/*.json"))}


def _summary(output: str) -> str:
    """The part after the progress lines: per-dataset tables, gates, conservation, commit and tag."""
    return output[output.index("\n\n"):]


def test_demo_runs_through_dagster_and_is_idempotent(tmp_path: Path) -> None:
    env = {**os.environ,
           "TRAINYARD_HOME": str(tmp_path / "home"),
           "TRAINYARD_S3_ENDPOINT_URL": f"http://127.0.0.1:{free_port()}",
           "TRAINYARD_LAKEFS_URL": f"http://127.0.0.1:{free_port()}",
           "TRAINYARD_SLACK_BASE_URL": f"http://127.0.0.1:{free_port()}/api/",
           "TRAINYARD_GATEKEEPER_URL": f"http://127.0.0.1:{free_port()}/lakefs/pre-merge"}
    env.pop("TRAINYARD_TENANTS_FILE", None)
    env.pop("DAGSTER_HOME", None)
    first = subprocess.run([TRAINYARD, "demo"], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "starting dagster-daemon" in first.stdout
    commits = re.findall(r"main: commit ([0-9a-f]{64})  tag (\S+)", first.stdout)
    assert [tag for _, tag in commits] == ["support_intents/v1", "complaints/v1", "defect_reports/v1"]
    assert first.stdout.count("(SUCCESS)") == 3
    assert first.stdout.count("balanced") == 3 and "NOT BALANCED" not in first.stdout
    # The owner-policy dataset waited, the data owner approved with the CLI, the merge sensor merged it.
    assert "northbank/complaints: batch demo-0001 passed every gate and waits for data-owner approval" in first.stdout
    assert "approved by priya.shah@northbank.example (1/1)" in first.stdout
    assert re.search(r"approved by priya.shah@northbank.example on commit [0-9a-f]{64}", first.stdout)
    assert "awaits approval (1 data owner)" in first.stdout
    assert "not valid UTF-8" in first.stdout and "missing required field" in first.stdout
    good, bad = first.stdout.split("(deliberately bad drop)")
    assert good.count("gate agreement") == 3 and "FAILED" not in good
    # The bad drop: blocked by its gate, main untouched, exactly one Slack alert delivered with the evidence.
    assert "(FAILURE)" in bad and "main: untouched" in bad
    assert re.search(r"gate pii_residual\s+\d+ <= 0\s+FAILED", bad), bad
    assert bad.count("slack #stahlwerk-quality [sent]") == 1
    assert "branch batch-defect_reports-demo-0002-bad" in bad and "gate_failed.md" in bad
    assert "the Slack receiver got 2 message(s)" in first.stdout  # the approval request and the gate alert

    landed = s3_objects(Path(env["TRAINYARD_HOME"]))
    assert any(key.endswith("demo-0001/manifest.json") for key in landed)  # the S3 mirror kept the demo's world

    second = subprocess.run([TRAINYARD, "demo"], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert second.returncode == 0, second.stdout + second.stderr
    # Nothing was uploaded again: a file with a new LastModified in a registered drop would alert in `make dev`.
    assert s3_objects(Path(env["TRAINYARD_HOME"])) == landed
    assert "idempotent re-run" in second.stdout and "starting dagster-daemon" not in second.stdout
    assert _summary(second.stdout) == _summary(first.stdout)
