"""What an operator sees in the Dagster UI after ``make demo``, served by ``make dev`` and read by a real browser
(Debian's Chromium driven by Playwright): the gate that stopped the bad batch, named on its partition and on the
checks that never ran, and the published state of every merged batch -- including the one a data owner approved
outside any run. ``make dev`` also serves the demo's S3, so the gold sets are still there.

The screenshots this suite takes are the ones in ``docs/screenshots/`` and the README.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import boto3
import dagster as dg
import httpx
import pytest
from playwright.sync_api import Page, expect, sync_playwright

from dagster_project.settings import Settings
from tests.conftest import REPO_ROOT, free_port
from tests.waiting import wait_until

TRAINYARD = str(Path(sys.executable).parent / "trainyard")
CHROMIUM = "/usr/bin/chromium"
SCREENSHOTS = REPO_ROOT / "docs" / "screenshots"
"""Where the README's screenshots live; the suite replaces them only with TRAINYARD_UPDATE_SCREENSHOTS=1."""
UI_TIMEOUT_MS = 90_000
"""How long a page may take to show what is asserted (the UI loads the code location and queries lazily)."""
BAD, GOOD = "demo-0002-bad", "demo-0001"


def _ready(url: str) -> bool:
    try:
        return httpx.get(url, timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.fixture(scope="module")
def demo_ui(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict[str, str]]]:
    """``trainyard demo`` once, then ``trainyard dev`` over the same home: (UI base URL, environment)."""
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: run scripts/ensure_chromium.sh (make test does)")
    home = tmp_path_factory.mktemp("browser") / "home"
    env = {**os.environ, "TRAINYARD_HOME": str(home),
           "TRAINYARD_S3_ENDPOINT_URL": f"http://127.0.0.1:{free_port()}",
           "TRAINYARD_LAKEFS_URL": f"http://127.0.0.1:{free_port()}",
           "TRAINYARD_SLACK_BASE_URL": f"http://127.0.0.1:{free_port()}/api/",
           "TRAINYARD_GATEKEEPER_URL": f"http://127.0.0.1:{free_port()}/lakefs/pre-merge"}
    for name in ("TRAINYARD_TENANTS_FILE", "DAGSTER_HOME", "TRAINYARD_DATABASE_URL"):
        env.pop(name, None)
    demo = subprocess.run([TRAINYARD, "demo"], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert demo.returncode == 0, demo.stdout + demo.stderr
    port = free_port()
    dev = subprocess.Popen([TRAINYARD, "dev", "--port", str(port)], cwd=REPO_ROOT, env=env, start_new_session=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: dev.poll() is not None or _ready(f"{base}/server_info"), "the Dagster UI", timeout=180)
        assert dev.poll() is None, f"trainyard dev exited with {dev.returncode}"
        yield base, env
    finally:
        os.killpg(dev.pid, signal.SIGINT)  # dagster dev and its webserver and daemon, as Ctrl-C would
        try:
            dev.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(dev.pid, signal.SIGKILL)
            dev.wait()


@pytest.fixture(scope="module")
def page(demo_ui) -> Iterator[Page]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        context = browser.new_context(viewport={"width": 1500, "height": 1000})
        page = context.new_page()
        page.set_default_timeout(UI_TIMEOUT_MS)
        expect.set_options(timeout=UI_TIMEOUT_MS)  # expect() has its own 5 s default; the page's does not reach it
        yield page
        browser.close()


def shot(page: Page, name: str) -> None:
    folder = SCREENSHOTS if os.environ.get("TRAINYARD_UPDATE_SCREENSHOTS") == "1" else Path(
        os.environ.get("TMPDIR", "/tmp")) / "trainyard-screenshots"
    folder.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(folder / f"{name}.png"))


def test_dev_serves_the_demos_s3(demo_ui) -> None:
    _, env = demo_ui
    settings = Settings(s3_endpoint_url=env["TRAINYARD_S3_ENDPOINT_URL"])
    s3 = boto3.client("s3", endpoint_url=settings.s3_endpoint_url, region_name=settings.s3_region,
                      aws_access_key_id=settings.s3_access_key_id,
                      aws_secret_access_key=settings.s3_secret_access_key.get_secret_value())
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=settings.landing_bucket).get("Contents", [])]
    assert "northbank/support_intents/gold/gold.jsonl" in keys  # uploaded by the demo, a process ago
    assert any(k.endswith("exports/versions/latest.json") for k in keys)


def test_the_blocked_partition_names_its_gate(demo_ui, page: Page) -> None:
    base, _ = demo_ui
    page.goto(f"{base}/assets/stahlwerk/defect_reports/published?view=events&partition={BAD}")
    event = page.get_by_text(re.compile(r"blocked: pii_residual: \d+ PII findings are left in texts"))
    expect(event.first).to_be_visible()
    expect(page.get_by_text("blocked_by").first).to_be_visible()
    shot(page, "blocked-partition")


def test_the_failing_gate_reads_as_a_sentence_and_later_checks_were_not_evaluated(demo_ui, page: Page) -> None:
    base, _ = demo_ui
    page.goto(f"{base}/assets/stahlwerk/defect_reports/labeling_tasks?view=checks")
    page.get_by_text("pii_residual", exact=True).first.click()
    expect(page.get_by_text(re.compile(r"pii_residual: \d+ PII findings .*; at most 0 allowed")).first).to_be_visible()
    expect(page.get_by_text("playbook", exact=True).first).to_be_visible()
    shot(page, "failed-check")

    page.goto(f"{base}/assets/stahlwerk/defect_reports/consolidated_labels?view=checks")
    page.get_by_text("agreement", exact=True).first.click()
    expect(page.get_by_text(f"not evaluated: batch {BAD} was stopped earlier by gate pii_residual on "
                            "labeling_tasks").first).to_be_visible()
    expect(page.get_by_text("Execution failed")).to_have_count(0)
    shot(page, "not-evaluated-checks")


@pytest.mark.parametrize("tenant, dataset, tag", [("northbank", "support_intents", "support_intents/v1"),
                                                  ("northbank", "complaints", "complaints/v1"),
                                                  ("stahlwerk", "defect_reports", "defect_reports/v1")])
def test_every_merged_partition_shows_it_is_published(demo_ui, page: Page, tenant: str, dataset: str,
                                                       tag: str) -> None:
    base, _ = demo_ui
    page.goto(f"{base}/assets/{tenant}/{dataset}/published?view=partitions&partition={GOOD}")
    expect(page.get_by_text(tag, exact=True).first).to_be_visible()
    expect(page.get_by_text("published", exact=True).first).to_be_visible()
    expect(page.get_by_text("awaiting_approval")).to_have_count(0)
    if dataset == "complaints":  # approved by its data owner and merged by the sensor, outside any run
        expect(page.get_by_text("priya.shah@northbank.example").first).to_be_visible()
        shot(page, "approved-partition")


def test_the_graph_and_the_blocked_run(demo_ui, page: Page) -> None:
    base, env = demo_ui
    page.goto(f"{base}/locations/dagster_project.definitions/asset-groups/stahlwerk__defect_reports/lineage")
    expect(page.get_by_text("labeling_tasks", exact=True).first).to_be_visible()
    shot(page, "asset-graph")
    with dg.DagsterInstance.from_config(str(Path(env["TRAINYARD_HOME"]) / "dagster")) as instance:
        [run] = instance.get_runs(filters=dg.RunsFilter(tags={"dagster/partition": BAD}), limit=1)
    page.goto(f"{base}/runs/{run.run_id}")
    expect(page.get_by_text("stahlwerk__defect_reports__labeling_tasks_pii_residual").first).to_be_visible()
    shot(page, "blocked-run")
