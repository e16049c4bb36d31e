"""Time the automated stages of one batch on N synthetic records, against the embedded services.

    .venv/bin/python bench/pipeline.py --records 100000

Starts a moto S3 process and the lakeFS emulator on free loopback ports, uploads one seeded drop (JSONL, CSV
and Parquet, with planted defects and PII) and a gold set for the example UK fintech dataset, runs raw ->
published with every quality gate through the same functions the Dagster assets and checks call, and prints
seconds and records/second per stage and gate plus the process's peak RSS. Results go in docs/BENCHMARKS.md
with the command and the machine.
"""

from __future__ import annotations

import argparse
import platform
import resource
import socket
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

from dagster_project.devservices.lakefs_emulator import start_emulator
from dagster_project.devservices.local import s3_client
from dagster_project.devservices.s3 import start_s3
from dagster_project.devservices.sample_data import build_drop, ensure_bucket, upload_drop, upload_gold_set
from dagster_project.gates import evaluate_and_record
from dagster_project.lakefs import LakeFSRepository, api_client
from dagster_project.plan import STAGE_PLAN
from dagster_project.publishing.publish import run_publish
from dagster_project.settings import EXAMPLE_TENANTS_FILE, Settings
from dagster_project.stages.batch import Batch
from dagster_project.stages.gold_set import read_gold_set
from dagster_project.stages.runners import StageInputs
from dagster_project.tenants import load_tenants
from dagster_project.vendors import build_vendor


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()

    tenant = load_tenants(EXAMPLE_TENANTS_FILE).tenant("northbank")
    dataset = tenant.dataset("support_intents")
    with tempfile.TemporaryDirectory() as tmp, start_s3("127.0.0.1", _free_port()) as s3_server, \
            start_emulator(Path(tmp) / "lakefs", "AKIABENCH", "bench-secret") as lakefs:
        settings = Settings(s3_endpoint_url=s3_server.url, lakefs_url=lakefs.url, home=Path(tmp),
                            lakefs_access_key_id="AKIABENCH", lakefs_secret_access_key="bench-secret")
        s3 = s3_client(settings)
        ensure_bucket(s3, settings.landing_bucket)
        started = time.perf_counter()
        plan = build_drop(tenant, dataset, "bench", args.records, seed=args.seed)
        upload_drop(s3, settings.landing_bucket, plan)
        prepared = time.perf_counter() - started

        repo = LakeFSRepository(api_client(lakefs.api_url, "AKIABENCH", "bench-secret"), tenant.lakefs_repository)
        batch = Batch(tenant, dataset, "bench", repo, "bench")
        vendors = {v.name: build_vendor(v, Path(tmp) / "vendors") for v in dataset.vendors}
        upload_gold_set(s3, settings.landing_bucket, tenant, dataset, n=max(200, args.records // 5))
        gold = read_gold_set(s3, settings.landing_bucket, tenant.landing_prefix, dataset.name,
                             dataset.record_schema.text_field, dataset.labels)
        inputs = StageInputs(s3=s3, landing_bucket=settings.landing_bucket,
                             storage_namespace="local://bench/northbank", vendors=vendors, gold=gold)
        stages: list[tuple[str, Callable[[], object]]] = []
        for step in STAGE_PLAN:
            stages.append((step.stage.value, partial(step.run, batch, inputs)))
            stages += [(f"  gate {g.name}", partial(evaluate_and_record, batch, g.name)) for g in step.gates]
        stages.append(("published", lambda: run_publish(batch)))
        print(f"records: {plan.records} rows in {len(plan.files)} files "
              f"({sum(len(b) for b in plan.files.values()) / 1e6:.1f} MB), generated+uploaded in {prepared:.1f}s")
        print(f"machine: {platform.machine()}, {platform.python_implementation()} {platform.python_version()}, "
              f"{__import__('os').cpu_count()} cores")
        print(f"{'stage / gate':<30}{'seconds':>9}{'records/s':>12}")
        total = 0.0
        for name, run in stages:
            began = time.perf_counter()
            outcome = run()
            elapsed = time.perf_counter() - began
            total += elapsed
            print(f"{name:<30}{elapsed:>9.2f}{plan.records / elapsed:>12,.0f}")
        print(f"{'total':<30}{total:>9.2f}{plan.records / total:>12,.0f}")
        print(f"conservation: {outcome.conservation.describe() if outcome.conservation else '-'}")
        print(f"peak RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
