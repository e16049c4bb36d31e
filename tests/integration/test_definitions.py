"""The code location loads, validates with Dagster's own CLI, and has the shape the tenants file describes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg

from dagster_project import layout
from dagster_project.definitions import build_definitions
from dagster_project.gates import GATES
from dagster_project.layout import Stage
from dagster_project.settings import Settings
from dagster_project.tenants import load_tenants
from tests.conftest import REPO_ROOT


def test_dagster_definitions_validate_passes(tmp_path: Path) -> None:
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path)}
    (tmp_path / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    completed = subprocess.run(
        [str(Path(sys.executable).parent / "dagster"), "definitions", "validate", "-w", "workspace.yaml"],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert "All code locations passed validation" in completed.stdout + completed.stderr


def test_asset_graph_follows_the_tenants_file() -> None:
    settings = Settings()
    config = load_tenants(settings.tenants_file)
    defs = build_definitions(settings)
    graph = defs.resolve_asset_graph()
    for tenant, dataset in config.datasets():
        keys = [dg.AssetKey([tenant.name, dataset.name, stage.value]) for stage in Stage]
        for upstream, downstream in zip(keys, keys[1:], strict=False):
            assert graph.get(downstream).parent_keys == {upstream}
        for key in keys:
            node = graph.get(key)
            assert node.group_name == layout.asset_group(tenant.name, dataset.name)
            assert set(node.owners) == set(tenant.data_owners)
            assert node.partitions_def.name == layout.partitions_name(tenant.name, dataset.name)
            assert node.description
        published = graph.get(keys[-1])
        assert published.freshness_policy is not None
        # One check per quality dimension, on the stage it judges; blocking ones stop the batch.
        for gate in GATES:
            check_key = dg.AssetCheckKey(dg.AssetKey([tenant.name, dataset.name, gate.stage.value]), gate.name)
            assert check_key in graph.asset_check_keys
            assert graph.get_check_spec(check_key).blocking is gate.blocking
        assert len(graph.get_check_keys_for_assets(set(keys))) == len(GATES)
        assert defs.resolve_job_def(layout.job_name(tenant.name, dataset.name)) is not None
        assert defs.resolve_sensor_def(layout.landing_sensor_name(tenant.name, dataset.name)).default_status == \
            dg.DefaultSensorStatus.RUNNING
