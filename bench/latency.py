"""Seconds from a drop's manifest upload to its version tag on ``main``, through dagster-daemon, and where they go.

    .venv/bin/python bench/latency.py --drops 5 --records 400

Why: for a small drop the work is ~1.5 s and everything else is waiting -- on sensor and queue timers, on process
start-ups, on per-step bookkeeping. This benchmark measures that end to end, the way a user meets it: it starts the
embedded services and the embedded Dagster instance exactly as ``trainyard demo`` does (``LocalServices``,
``prepare_home``, ``running_daemon``: the same generated dagster.yaml and sensor intervals), in a temporary
``TRAINYARD_HOME`` on free loopback ports, uploads the example dataset's gold set, then one warm-up drop and N
drops one after another (each once the previous one is on ``main``), and splits each drop's latency with Dagster's
own records (instance API only):

* sensor  -- manifest uploaded -> run created (the landing sensor's tick)
* queue   -- run created -> run launched (the queued-run daemon)
* launch  -- launched -> first step started (run worker process, code location import, resources)
* steps   -- first step started -> version tag visible on ``main`` (step bodies and the bookkeeping between them)
* tail    -- tag visible -> run ended (what the run still does after publishing)

Results go in docs/BENCHMARKS.md with the command and the machine.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import dagster as dg

from dagster_project import layout
from dagster_project.devservices.dagster_instance import prepare_home, running_daemon, workspace_file
from dagster_project.devservices.local import LocalServices, free_loopback_port, s3_client
from dagster_project.devservices.sample_data import build_drop, upload_drop, upload_gold_set
from dagster_project.lakefs import LakeFSRepository, RefNotFound, settings_client
from dagster_project.publishing.versions import find_published_version
from dagster_project.settings import Settings
from dagster_project.tenants import TenantConfig, load_tenants

TENANT, DATASET = "northbank", "support_intents"  # the example UK fintech dataset, published automatically
POLL_SECONDS = 0.2
TIMEOUT_SECONDS = 300.0
PHASES = ("sensor", "queue", "launch", "steps", "tail")


@dataclass(frozen=True)
class DropLatency:
    drop: str
    total: float
    phases: dict[str, float]
    step_bodies: float
    """Sum of the steps' own durations (STEP_START -> STEP_SUCCESS/FAILURE); ``steps`` minus this is bookkeeping."""
    steps: int
    bodies: dict[str, float]
    """Each step's own duration, by step key."""

    def slowest(self, n: int = 3) -> str:
        ranked = sorted(self.bodies.items(), key=lambda kv: -kv[1])[:n]
        return ", ".join(f"{key.rsplit('__', 1)[-1]} {seconds:.2f}" for key, seconds in ranked)


def _wait(condition: Callable[[], object], what: str) -> object:
    deadline = time.monotonic() + TIMEOUT_SECONDS
    while not (value := condition()):
        if time.monotonic() > deadline:
            raise TimeoutError(f"waited {TIMEOUT_SECONDS:.0f} s for {what}")
        time.sleep(POLL_SECONDS)
    return value


def _embedded_environment(home: Path) -> None:
    """The embedded stack on free ports in ``home``, so a running ``make dev`` is left alone."""
    os.environ.update({
        "TRAINYARD_HOME": str(home),
        "TRAINYARD_S3_ENDPOINT_URL": f"http://127.0.0.1:{free_loopback_port()}",
        "TRAINYARD_LAKEFS_URL": f"http://127.0.0.1:{free_loopback_port()}",
        "TRAINYARD_SLACK_BASE_URL": f"http://127.0.0.1:{free_loopback_port()}/api/",
        "TRAINYARD_GATEKEEPER_URL": f"http://127.0.0.1:{free_loopback_port()}/lakefs/pre-merge",
    })
    os.environ.pop("TRAINYARD_TENANTS_FILE", None)
    os.environ.pop("DAGSTER_HOME", None)


def _step_bodies(records: list[dg.EventLogEntry]) -> dict[str, float]:
    """Each step's own duration: STEP_START to its STEP_SUCCESS or STEP_FAILURE."""
    started: dict[str, float] = {}
    durations: dict[str, float] = {}
    for record in records:
        event = record.dagster_event
        if event is None or record.step_key is None:
            continue
        if event.event_type is dg.DagsterEventType.STEP_START:
            started[record.step_key] = record.timestamp
        elif record.step_key in started:
            durations[record.step_key] = record.timestamp - started.pop(record.step_key)
    return durations


def measure(instance: dg.DagsterInstance, repo: LakeFSRepository, drop: str, batch_id: str, uploaded: float,
            tagged: float) -> DropLatency:
    job = layout.job_name(TENANT, DATASET)
    record = _wait(lambda: next(iter(instance.get_run_records(
        filters=dg.RunsFilter(job_name=job, tags={"dagster/partition": batch_id}), limit=1)), None),
        f"the run of {batch_id}")
    run_id = record.dagster_run.run_id
    stats = _wait(lambda: (s := instance.get_run_stats(run_id)).end_time and s, f"run {run_id} to end")
    events = instance.all_logs(run_id, of_type={dg.DagsterEventType.STEP_START, dg.DagsterEventType.STEP_SUCCESS,
                                                 dg.DagsterEventType.STEP_FAILURE})
    first_step = min(e.timestamp for e in events if e.dagster_event.event_type is dg.DagsterEventType.STEP_START)
    created = record.create_timestamp.timestamp()
    bodies = _step_bodies(list(events))
    phases = {"sensor": created - uploaded, "queue": stats.launch_time - created,
              "launch": first_step - stats.launch_time, "steps": tagged - first_step, "tail": stats.end_time - tagged}
    starts = sum(1 for e in events if e.dagster_event.event_type is dg.DagsterEventType.STEP_START)
    return DropLatency(drop, tagged - uploaded, phases, sum(bodies.values()), starts, bodies)


def _version_tags(repo: LakeFSRepository) -> set[str]:
    try:
        return {t.id for t in repo.iter_tags(prefix=layout.version_tag_prefix(DATASET))}
    except RefNotFound:
        return set()


def land_and_time(settings: Settings, instance: dg.DagsterInstance, repo: LakeFSRepository, drop: str,
                  records: int, seed: int) -> DropLatency:
    tenant = load_tenants(settings.tenants_file).tenant(TENANT)
    plan = build_drop(tenant, tenant.dataset(DATASET), drop, records, seed=seed)
    known = _version_tags(repo)
    upload_drop(s3_client(settings), settings.landing_bucket, plan)  # the manifest goes last
    uploaded = time.time()
    batch_id = layout.batch_id_for_drop(drop)

    def new_tag() -> bool:  # cheap to ask every POLL_SECONDS: the emulator runs in this process
        failed = instance.get_run_records(filters=dg.RunsFilter(
            job_name=layout.job_name(TENANT, DATASET), tags={"dagster/partition": batch_id},
            statuses=[dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED]), limit=1)
        if failed:
            raise RuntimeError(f"the run of {batch_id} ended {failed[0].dagster_run.status.value}: "
                               f"inspect it with DAGSTER_HOME={instance.root_directory}")
        try:
            return any(t.id not in known for t in repo.iter_tags(prefix=layout.version_tag_prefix(DATASET)))
        except RefNotFound:  # the repository appears with the first batch
            return False

    _wait(new_tag, f"a version tag for {batch_id} on main")
    tagged = time.time()
    if find_published_version(repo, DATASET, batch_id) is None:
        raise RuntimeError(f"the new version tag on main is not batch {batch_id}'s")
    return measure(instance, repo, drop, batch_id, uploaded, tagged)


def _row(name: str, total: float, phases: dict[str, float], extra: str = "") -> str:
    return f"{name:<22}{total:>7.2f}" + "".join(f"{phases[p]:>8.2f}" for p in PHASES) + extra


def _run(args: argparse.Namespace, settings: Settings, env: dict[str, str], log: Path) -> None:
    tenant = load_tenants(settings.tenants_file).tenant(TENANT)
    with LocalServices(settings), dg.DagsterInstance.get() as instance:
        instance.all_instigator_state()  # the SQLite storages exist before the daemon's threads look for them
        with running_daemon(workspace_file(settings), env, log):
            _measure_drops(args, settings, env, instance, tenant)


def _measure_drops(args: argparse.Namespace, settings: Settings, env: dict[str, str], instance: dg.DagsterInstance,
                   tenant: TenantConfig) -> None:
    upload_gold_set(s3_client(settings), settings.landing_bucket, tenant, tenant.dataset(DATASET))
    repo = LakeFSRepository(settings_client(settings), tenant.lakefs_repository)
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, {platform.python_implementation()} "
          f"{platform.python_version()}, dagster {dg.__version__}, load {os.getloadavg()[0]:.2f}; "
          f"sensor interval {env['TRAINYARD_SENSOR_INTERVAL_SECONDS']} s; {args.records} records per drop",
          flush=True)
    print(f"{'drop':<22}{'total':>7}" + "".join(f"{p:>8}" for p in PHASES) + "   step bodies (steps)")
    results = []
    for index in range(args.drops + 1):
        latency = land_and_time(settings, instance, repo, f"latency-{index:02d}", args.records, seed=index)
        name = f"{latency.drop}{' (warm-up)' if index == 0 else ''}"
        print(_row(name, latency.total, latency.phases,
                   f"   {latency.step_bodies:6.2f} ({latency.steps})  slowest: {latency.slowest()}"),
              flush=True)
        if index:
            results.append(latency)
    medians = {p: statistics.median(r.phases[p] for r in results) for p in PHASES}
    print(_row("median", statistics.median(r.total for r in results), medians,
               f"   {statistics.median(r.step_bodies for r in results):6.2f}"))
    print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    if args.steps:
        for key in results[0].bodies:
            seconds = statistics.median(r.bodies.get(key, float('nan')) for r in results)
            print(f"  {key.removeprefix(f'{TENANT}__{DATASET}__'):<44}{seconds:>7.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--drops", type=int, default=5, help="measured drops (after one warm-up drop)")
    parser.add_argument("--records", type=int, default=400)
    parser.add_argument("--steps", action="store_true", help="also print every step's duration, median over drops")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="trainyard-latency-") as tmp:
        _embedded_environment(Path(tmp) / "home")
        settings = Settings()
        env = prepare_home(settings)
        os.environ.update({k: env[k] for k in ("DAGSTER_HOME", "TRAINYARD_HOME", "TRAINYARD_TENANTS_FILE")})
        log = Path(tmp) / "daemon.log"
        try:
            _run(args, settings, env, log)
        except BaseException:
            print(f"daemon log (last lines of {log}):\n" + "\n".join(log.read_text().splitlines()[-40:]))
            raise


if __name__ == "__main__":
    main()
