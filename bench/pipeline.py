"""Time the automated stages of one batch on N synthetic records, against the embedded services.

    .venv/bin/python bench/pipeline.py --records 1000000 --text-chars 300
    .venv/bin/python bench/pipeline.py --records 100000 --all      # every stage, gate and the publish

Starts moto S3 and the lakeFS emulator as their own processes on free loopback ports (as real S3 and lakeFS
would be), uploads one seeded drop (JSONL, CSV and Parquet, with planted defects, exact duplicates and PII) for
the example UK fintech dataset, and runs raw -> clean -> pii -> dedup onto the batch branch through the same
functions the Dagster assets call (``--all``: on through labeling, every gate and the publish). It prints seconds
and records/second per stage and the peak resident memory of the whole process tree that does the work (this
process and its worker processes, sampled every 20 ms; the services are not counted), then runs a
straightforward pandas reference over the same files (read every file whole, normalise, detect PII text by text,
drop duplicates) for the ratio. The drop is generated in a child process so its generator's memory is not
counted. Results go in docs/BENCHMARKS.md with the command and the machine.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import multiprocessing
import os
import platform
import pstats
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import pandas as pd

from dagster_project.devservices.local import s3_client
from dagster_project.devservices.s3 import start_s3, wait_until_healthy
from dagster_project.devservices.sample_data import build_drop, ensure_bucket, upload_drop, upload_gold_set
from dagster_project.lakefs import LakeFSRepository, api_client
from dagster_project.layout import Stage
from dagster_project.plan import STAGE_PLAN
from dagster_project.settings import EXAMPLE_TENANTS_FILE, Settings
from dagster_project.stages.batch import Batch
from dagster_project.stages.runners import StageInputs
from dagster_project.tenants import load_tenants

TENANT, DATASET, KEY, SECRET = "northbank", "support_intents", "AKIABENCH", "bench-secret"
AUTOMATED = (Stage.RAW, Stage.CLEAN, Stage.PII, Stage.DEDUP)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _rss_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as status:
            return next((int(line.split()[1]) for line in status if line.startswith("VmRSS:")), 0)
    except OSError:
        return 0


def _children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    if int(stat.read().rsplit(")", 1)[1].split()[1]) == pid:
                        found.append(int(entry))
            except (OSError, IndexError, ValueError):
                continue
    return found


class TreePeak:
    """Peak summed RSS of this process and its descendants, except ``excluded`` ones (the services)."""

    def __init__(self, excluded: set[int]) -> None:
        self.excluded, self.peak_kib, self.window_kib, self.main_kib = excluded, 0, 0, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(0.02):
            pids, frontier = [os.getpid()], [os.getpid()]
            while frontier:
                frontier = [c for p in frontier for c in _children(p) if c not in self.excluded]
                pids += frontier
            sizes = [_rss_kib(p) for p in pids]
            now = sum(sizes)
            self.peak_kib, self.window_kib = max(self.peak_kib, now), max(self.window_kib, now)
            self.main_kib = max(self.main_kib, sizes[0])

    def window(self) -> tuple[int, int]:
        """The peaks of the tree and of this process alone since the last call (KiB); a new window starts."""
        peak, self.window_kib, main, self.main_kib = self.window_kib, 0, self.main_kib, 0
        return peak, main

    def __enter__(self) -> TreePeak:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


def _prepare(settings: Settings, records: int, seed: int, text_chars: int, gold: int) -> str:
    """In a child process: generate the drop and the gold set and upload them. Returns a one-line description."""
    tenant = load_tenants(EXAMPLE_TENANTS_FILE).tenant(TENANT)
    dataset = tenant.dataset(DATASET)
    s3 = s3_client(settings)
    ensure_bucket(s3, settings.landing_bucket)
    plan = build_drop(tenant, dataset, "bench", records, seed=seed, text_chars=text_chars)
    upload_drop(s3, settings.landing_bucket, plan)
    upload_gold_set(s3, settings.landing_bucket, tenant, dataset, n=gold)
    megabytes = sum(len(b) for b in plan.files.values()) / 1e6
    return f"{plan.records} rows in {len(plan.files)} files ({megabytes:.1f} MB), {plan.duplicates} duplicates"


def pandas_reference(settings: Settings, text_field: str) -> tuple[float, int]:
    """The straightforward way: read each file whole, normalise, detect PII text by text, drop duplicates."""
    from dagster_project.stages.clean import normalise_text
    from dagster_project.stages.dedup import normalised_text_hash
    from dagster_project.stages.pii import detect_pii, redact

    s3 = s3_client(settings)
    began = time.perf_counter()
    frames = []
    for obj in s3.list_objects_v2(Bucket=settings.landing_bucket, Prefix="northbank/")["Contents"]:
        key = obj["Key"]
        body = s3.get_object(Bucket=settings.landing_bucket, Key=key)["Body"].read()
        if "/incoming/" not in key or key.endswith("manifest.json"):
            continue
        if key.endswith(".jsonl"):
            good = b"\n".join(line for line in body.split(b"\n") if _json_ok(line))
            frames.append(pd.read_json(io.BytesIO(good), lines=True, dtype=False))
        elif key.endswith(".csv"):
            frames.append(pd.read_csv(io.BytesIO(body), on_bad_lines="skip", dtype=str))
        elif key.endswith(".parquet"):
            frames.append(pd.read_parquet(io.BytesIO(body)))
    frame = pd.concat(frames, ignore_index=True).dropna(subset=[text_field])
    texts = frame[text_field].astype(str).map(normalise_text)
    frame[text_field] = [redact(t, detect_pii(t)) for t in texts]
    frame = frame.assign(h=frame[text_field].map(normalised_text_hash)).drop_duplicates("h")
    return time.perf_counter() - began, len(frame)


def _json_ok(line: bytes) -> bool:
    import json

    try:
        return isinstance(json.loads(line), dict)
    except ValueError:  # also a line that is not UTF-8
        return False


def _reference_main(settings: Settings, text_field: str, queue: multiprocessing.Queue) -> None:
    import resource

    elapsed, rows = pandas_reference(settings, text_field)
    queue.put((elapsed, rows, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--text-chars", type=int, default=300, help="pad texts to at least this many characters")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--workers", type=int, default=0, help="processes for the streamed stages (0: one per core)")
    parser.add_argument("--all", action="store_true", help="run every stage, gate and the publish, not just raw..dedup")
    parser.add_argument("--no-reference", action="store_true", help="skip the pandas reference")
    parser.add_argument("--profile", metavar="STAGE", help="cProfile this process (not its workers) in that stage")
    args = parser.parse_args()

    tenant = load_tenants(EXAMPLE_TENANTS_FILE).tenant(TENANT)
    dataset = tenant.dataset(DATASET)
    with tempfile.TemporaryDirectory() as tmp, start_s3("127.0.0.1", _free_port()) as s3_server:
        port = _free_port()
        emulator = subprocess.Popen(
            [sys.executable, "-m", "dagster_project.cli", "lakefs-emulator", "--port", str(port), "--data-dir",
             str(Path(tmp) / "lakefs"), "--access-key-id", KEY, "--secret-access-key", SECRET],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            lakefs_url = f"http://127.0.0.1:{port}"
            wait_until_healthy(f"{lakefs_url}/api/v1/healthcheck", process=emulator)
            settings = Settings(s3_endpoint_url=s3_server.url, lakefs_url=lakefs_url, home=Path(tmp),
                                lakefs_access_key_id=KEY, lakefs_secret_access_key=SECRET)
            began = time.perf_counter()
            with multiprocessing.get_context("spawn").Pool(1) as pool:
                described = pool.apply(_prepare, (settings, args.records, args.seed, args.text_chars,
                                                  max(200, min(args.records // 5, 20_000))))
            prepared = time.perf_counter() - began
            run(args, settings, tenant, dataset, described, prepared, {s3_server.process.pid, emulator.pid})
        finally:
            emulator.terminate()
            emulator.wait()


def run(args: argparse.Namespace, settings: Settings, tenant, dataset, described: str, prepared: float,
        services: set[int]) -> None:
    from dagster_project.gates import evaluate_and_record
    from dagster_project.publishing.publish import run_publish
    from dagster_project.stages.gold_set import read_gold_set
    from dagster_project.vendors import build_vendor

    s3 = s3_client(settings)
    repo = LakeFSRepository(api_client(settings.lakefs_api_url, KEY, SECRET), tenant.lakefs_repository)
    batch = Batch(tenant, dataset, "bench", repo, "bench")
    inputs = StageInputs(s3=s3, landing_bucket=settings.landing_bucket, workers=args.workers,
                         storage_namespace=f"local://bench/{tenant.name}")
    steps: list[tuple[str, Callable[[], object]]] = []
    for step in STAGE_PLAN:
        if not args.all and step.stage not in AUTOMATED:
            break
        if step.stage == Stage.LABELING_TASKS:
            gold = read_gold_set(s3, settings.landing_bucket, tenant.landing_prefix, dataset.name,
                                 dataset.record_schema.text_field, dataset.labels)
            vendors = {v.name: build_vendor(v, settings.home / "vendors") for v in dataset.vendors}
            inputs = StageInputs(s3=s3, landing_bucket=settings.landing_bucket, workers=args.workers,
                                 storage_namespace=inputs.storage_namespace, vendors=vendors, gold=gold)
        steps.append((step.stage.value, partial(step.run, batch, inputs)))
        if args.all:
            steps += [(f"  gate {g.name}", partial(evaluate_and_record, batch, g.name)) for g in step.gates]
    if args.all:
        steps.append(("published", lambda: run_publish(batch)))
    print(f"records: {described}; generated+uploaded in {prepared:.1f}s; texts >= {args.text_chars} chars")
    print(f"machine: {platform.machine()}, {platform.python_implementation()} {platform.python_version()}, "
          f"{os.cpu_count()} cores, workers={args.workers or os.cpu_count()}")
    print(f"{'stage / gate':<30}{'seconds':>9}{'records/s':>12}{'peak MiB':>10}{'of which main':>15}")
    total, outcome = 0.0, None
    with TreePeak(services) as peak:
        for name, work in steps:
            peak.window()
            profile = cProfile.Profile() if name == args.profile else None
            started = time.perf_counter()
            outcome = profile.runcall(work) if profile else work()
            elapsed = time.perf_counter() - started
            if profile:
                pstats.Stats(profile).sort_stats("cumulative").print_stats(30)
            total += elapsed
            tree, main = peak.window()
            print(f"{name:<30}{elapsed:>9.2f}{args.records / elapsed:>12,.0f}{tree / 1024:>10,.0f}"
                  f"{main / 1024:>15,.0f}", flush=True)
    print(f"{'total':<30}{total:>9.2f}{args.records / total:>12,.0f}")
    if args.all and outcome is not None and outcome.conservation:
        print(f"conservation: {outcome.conservation.describe()}")
    print(f"peak RSS of the process tree: {peak.peak_kib / 1024:.0f} MiB")
    if args.no_reference:
        return
    queue: multiprocessing.Queue = multiprocessing.get_context("spawn").Queue()
    child = multiprocessing.get_context("spawn").Process(
        target=_reference_main, args=(settings, dataset.record_schema.text_field, queue))
    child.start()
    elapsed, rows, maxrss = queue.get()
    child.join()
    automated = sum(1 for name, _ in steps if name in {s.value for s in AUTOMATED})
    print(f"pandas reference (read whole, normalise, PII text by text, drop duplicates; one process): "
          f"{elapsed:.2f}s, {rows} rows kept, peak RSS {maxrss / 1024:.0f} MiB"
          + (f"; streamed raw..dedup is {elapsed / total:.1f}x faster" if automated == len(steps) else ""))


if __name__ == "__main__":
    main()
