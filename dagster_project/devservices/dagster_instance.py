"""The embedded Dagster instance of ``trainyard demo``, ``trainyard dev`` and the latency benchmark: its
``DAGSTER_HOME`` (SQLite under ``.trainyard/dagster``), its workspace, and ``dagster-daemon`` over it.

Why one place: the demo, the UI and ``bench/latency.py`` must see the same instance with the same run queue, sensor
and concurrency settings, or a benchmark measures something no user runs. Shared deployments use
``infra/dagster.yaml`` (PostgreSQL); the queue, sensor threads and tag concurrency limits below mirror it at
laptop size (docs/scaling.md explains each).

Timers, because a small drop's latency is mostly waiting: the sensor daemon evaluates sensors in a loop that runs
at most every 5 s (Dagster's own pace, not configurable), and skips a sensor whose ``minimum_interval_seconds``
has not passed since its last tick -- so an interval below 5 s means "every loop", while 5 s itself often means
every *other* loop (10 s). The embedded default is therefore 2 s; the run queue is looked at every second
instead of every 5 s.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from dagster_project.settings import Settings

EMBEDDED_SENSOR_INTERVAL_SECONDS = 2
"""Landing, merge, outcome, version and run-failure sensors on the embedded instance (below the daemon's 5 s
loop: evaluated on every loop); ``TRAINYARD_SENSOR_INTERVAL_SECONDS`` set explicitly wins."""
DAEMON_STOP_SECONDS = 30
DAGSTER_YAML = """\
# Written by `trainyard demo` / `trainyard dev`: the quick start's local instance (SQLite under this directory).
# Shared deployments use infra/dagster.yaml (PostgreSQL); the queue, sensors and limits mirror it at laptop size.
telemetry:
  enabled: false
nux:
  enabled: false
concurrency:
  runs:
    max_concurrent_runs: 3
    tag_concurrency_limits:
      # one tenant's backlog never holds every slot: another tenant's drop starts next to it
      - key: trainyard/tenant
        value: {applyLimitPerUniqueValue: true}
        limit: 2
      # runs of datasets labelled by the same vendor(s), at most this many at a time
      - key: trainyard/vendor
        value: {applyLimitPerUniqueValue: true}
        limit: 2
# the queued-run daemon looks for runs to launch every second (Dagster's default: 5 s)
run_queue:
  dequeue_interval_seconds: 1
  dequeue_use_threads: true
  dequeue_num_workers: 2
# sensor ticks run in threads: one tenant's slow S3 listing does not hold up the other sensors
sensors:
  use_threads: true
  num_workers: 4
run_monitoring:
  enabled: true
  start_timeout_seconds: 180
  max_runtime_seconds: 3600
  poll_interval_seconds: 30
run_retries:
  enabled: true
  max_retries: 1
  retry_on_asset_or_op_failure: false
"""


def dagster_home(settings: Settings) -> Path:
    return settings.home.resolve() / "dagster"


def sensor_interval_seconds(settings: Settings) -> int:
    """The embedded default unless ``TRAINYARD_SENSOR_INTERVAL_SECONDS`` (or ``.env``) says otherwise."""
    if "sensor_interval_seconds" in settings.model_fields_set:
        return settings.sensor_interval_seconds
    return EMBEDDED_SENSOR_INTERVAL_SECONDS


def workspace_file(settings: Settings) -> Path:
    return dagster_home(settings) / "workspace.yaml"


def write_workspace(path: Path) -> Path:
    """A workspace with the one code location, as every local Dagster process loads it."""
    path.write_text("load_from:\n  - python_module: dagster_project.definitions\n")
    return path


def prepare_home(settings: Settings) -> dict[str, str]:
    """Create the local DAGSTER_HOME and workspace; return the environment for child processes."""
    home = dagster_home(settings)
    home.mkdir(parents=True, exist_ok=True)
    (home / "dagster.yaml").write_text(DAGSTER_YAML)
    write_workspace(workspace_file(settings))
    return {
        **os.environ,
        **settings.secret_environment(),
        "DAGSTER_HOME": str(home),
        "TRAINYARD_HOME": str(settings.home.resolve()),
        "TRAINYARD_TENANTS_FILE": str(Path(settings.tenants_file).resolve()),
        "TRAINYARD_SENSOR_INTERVAL_SECONDS": str(sensor_interval_seconds(settings)),
    }


@contextmanager
def running_daemon(workspace: Path, env: dict[str, str], log_path: Path) -> Iterator[subprocess.Popen]:
    """``dagster-daemon run`` (sensors, run queue, monitoring) over ``env``'s DAGSTER_HOME and the ``workspace``
    file, its output appended to ``log_path``; stopped on exit with everything it started.

    The daemon runs in a process group of its own: the code server it spawns (and that server's run workers) can
    outlive a terminated daemon -- a code server waits for executions it believes in progress -- so what is left
    of the group once the daemon has stopped is killed.
    """
    command = [str(Path(sys.executable).parent / "dagster-daemon"), "run", "-w", str(workspace)]
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        daemon = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            yield daemon
        finally:
            daemon.terminate()
            try:
                daemon.wait(timeout=DAEMON_STOP_SECONDS)
            except subprocess.TimeoutExpired:
                daemon.kill()
                daemon.wait()
            with suppress(ProcessLookupError):  # nothing left of the group
                os.killpg(daemon.pid, signal.SIGKILL)
