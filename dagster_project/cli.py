"""The ``trainyard`` command line: the local stack, the demo and configuration checks.

Every command reads the same ``TRAINYARD_*`` settings as the Dagster code location.
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import threading
from pathlib import Path

from dagster_project.settings import Settings
from dagster_project.tenants import TenantsConfigError, load_tenants


def _wait_for_signal() -> None:
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    while not stop.wait(0.5):
        pass


def cmd_services(args: argparse.Namespace) -> int:
    from dagster_project.devservices.local import LocalServices

    settings = Settings()
    with LocalServices(settings) as services:
        print(f"S3 (moto) on {services.s3.url if services.s3 else '-'}, bucket {settings.landing_bucket}", flush=True)
        print(f"lakeFS emulator on {settings.lakefs_api_url} (data in {settings.home.resolve() / 'lakefs'})",
              flush=True)
        if services.slack is not None:
            print(f"Slack receiver on {services.slack.base_url}", flush=True)
        if services.gatekeeper is not None:
            print(f"gatekeeper on {services.gatekeeper.url}", flush=True)
        print("Ctrl-C to stop.", flush=True)
        _wait_for_signal()
    return 0


def cmd_lakefs_emulator(args: argparse.Namespace) -> int:
    from dagster_project.devservices.lakefs_emulator import serve

    serve(args.host, args.port, Path(args.data_dir), args.access_key_id, args.secret_access_key)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from dagster_project.demo import run_demo

    return run_demo()


def cmd_dev(args: argparse.Namespace) -> int:
    from dagster_project.demo import dagster_home, prepare_home
    from dagster_project.devservices.local import LocalServices

    settings = Settings()
    env = prepare_home(settings)
    workspace = dagster_home(settings) / "workspace.yaml"
    command = [str(Path(sys.executable).parent / "dagster"), "dev", "-w", str(workspace),
               "-h", args.host, "-p", str(args.port)]
    with LocalServices(settings):
        print(f"Dagster UI on http://{args.host}:{args.port} (DAGSTER_HOME={env['DAGSTER_HOME']}); Ctrl-C to stop.",
              flush=True)
        process = subprocess.Popen(command, env=env)
        try:
            return process.wait()
        except KeyboardInterrupt:
            process.send_signal(signal.SIGINT)
            return process.wait()


def cmd_gatekeeper(args: argparse.Namespace) -> int:
    from dagster_project.services.gatekeeper import start_gatekeeper_from_settings

    settings = Settings(gatekeeper_url=f"http://{args.host}:{args.port}/lakefs/pre-merge")
    with start_gatekeeper_from_settings(settings) as gatekeeper:
        print(f"Trainyard gatekeeper listening on {gatekeeper.url} (lakeFS pre-merge webhook for main)", flush=True)
        _wait_for_signal()
    return 0


def cmd_check_config(args: argparse.Namespace) -> int:
    path = Path(args.file) if args.file else Settings().tenants_file
    try:
        config = load_tenants(path)
    except TenantsConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    for tenant, dataset in config.datasets():
        print(f"{tenant.name}/{dataset.name}: {len(dataset.record_schema.fields)} fields, {len(dataset.labels)} labels,"
              f" k={dataset.overlap_k}, vendors {', '.join(v.name for v in dataset.vendors)},"
              f" publish {dataset.publish.policy}")
    return 0


def _batch(settings: Settings, tenant_name: str, dataset_name: str, batch_id: str):
    from dagster_project.lakefs import LakeFSRepository, settings_client
    from dagster_project.stages.batch import Batch

    tenant = load_tenants(settings.tenants_file).tenant(tenant_name)
    dataset = tenant.dataset(dataset_name)
    return Batch(tenant, dataset, batch_id, LakeFSRepository(settings_client(settings), tenant.lakefs_repository))


def cmd_decide(args: argparse.Namespace) -> int:
    from dagster_project.publishing.approvals import ApprovalStore, NotADataOwner, Verdict
    from dagster_project.publishing.decisions import NotAwaitingApproval, decide

    settings = Settings()
    verdict = Verdict.APPROVE if args.command == "approve" else Verdict.REJECT
    try:
        batch = _batch(settings, args.tenant, args.dataset, args.batch)
        store = ApprovalStore(settings.resolved_database_url, schema=settings.database_schema)
        state = decide(batch, store, args.actor, verdict, args.reason or "", commit=args.commit)
    except (KeyError, NotADataOwner, NotAwaitingApproval, ValueError) as exc:
        print(f"refused: {exc}", file=sys.stderr)
        return 2
    print(f"{args.actor} {verdict.value}d {args.tenant}/{args.dataset} batch {args.batch} at commit {state.commit_id}")
    if state.rejected:
        print(f"rejected by {', '.join(state.rejected_by)}: the batch stays on its branch and will not be merged")
    elif state.approved:
        print(f"approved by {', '.join(state.approvers)} ({len(state.approvers)}/{state.required}): the merge sensor "
              "merges it into main on its next tick")
    else:
        print(f"approvals {len(state.approvers)}/{state.required}: waiting for {state.missing} more data owner(s)")
    return 0


def cmd_versions(args: argparse.Namespace) -> int:
    from dagster_project.publishing.approvals import ApprovalStore
    from dagster_project.publishing.versions import trusted_versions

    settings = Settings()
    batch = _batch(settings, args.tenant, args.dataset, "-")
    with ApprovalStore(settings.resolved_database_url, schema=settings.database_schema) as store:
        check = trusted_versions(batch.repo, args.tenant, args.dataset, store)
    for foreign in check.foreign:
        print(f"warning: ignoring tag {foreign.tag} on {foreign.commit_id[:12]}: not a version Trainyard published",
              file=sys.stderr)
    versions = check.trusted
    if not versions:
        print(f"{args.tenant}/{args.dataset}: no published versions yet")
    for version in versions:
        print(f"{version.tag:<32} {version.commit_id}  batch {version.batch_id:<28} "
              f"{version.published_records:>8} records  {version.created_at:%Y-%m-%d %H:%M} UTC")
    return 0


def cmd_diff(args: argparse.Namespace) -> int:
    from dagster_project.publishing.versions import diff_published

    settings = Settings()
    batch = _batch(settings, args.tenant, args.dataset, "-")
    print("\n".join(diff_published(batch.repo, args.dataset, args.left, args.right).lines()))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="trainyard", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("services", help="run the embedded S3 and lakeFS emulator on loopback").set_defaults(
        func=cmd_services)
    emulator = sub.add_parser("lakefs-emulator", help="run only the lakeFS API emulator")
    emulator.add_argument("--host", default="127.0.0.1")
    emulator.add_argument("--port", type=int, default=8310)
    emulator.add_argument("--data-dir", required=True)
    emulator.add_argument("--access-key-id", required=True)
    emulator.add_argument("--secret-access-key", required=True)
    emulator.set_defaults(func=cmd_lakefs_emulator)
    sub.add_parser("demo", help="run one seeded batch per dataset through Dagster and print a summary").set_defaults(
        func=cmd_demo)
    dev = sub.add_parser("dev", help="embedded services + Dagster webserver and daemon over the demo's DAGSTER_HOME")
    dev.add_argument("--host", default="127.0.0.1")
    dev.add_argument("--port", type=int, default=3000)
    dev.set_defaults(func=cmd_dev)
    for verb in ("approve", "reject"):
        decision = sub.add_parser(verb, help=f"{verb} a batch waiting for data-owner approval (publish policy owner)")
        decision.add_argument("tenant")
        decision.add_argument("dataset")
        decision.add_argument("batch")
        decision.add_argument("--as", dest="actor", required=True, help="your email, as listed in data_owners")
        decision.add_argument("--reason", default="", help="why (required to reject)")
        decision.add_argument("--commit", required=verb == "approve",
                              help="the publish candidate commit you reviewed, from the approval request (at least "
                                   "12 characters); refused if the branch has moved since"
                                   + ("" if verb == "approve" else "; optional for a rejection"))
        decision.set_defaults(func=cmd_decide)
    versions = sub.add_parser("versions", help="list a dataset's published versions")
    versions.add_argument("tenant")
    versions.add_argument("dataset")
    versions.set_defaults(func=cmd_versions)
    diff = sub.add_parser("diff", help="summarise the difference between two versions (v1, v2, tags or commits)")
    diff.add_argument("tenant")
    diff.add_argument("dataset")
    diff.add_argument("left")
    diff.add_argument("right")
    diff.set_defaults(func=cmd_diff)
    gate = sub.add_parser("gatekeeper", help="serve the lakeFS pre-merge webhook that guards main")
    gate.add_argument("--host", default="127.0.0.1")
    gate.add_argument("--port", type=int, default=9340)
    gate.set_defaults(func=cmd_gatekeeper)
    check = sub.add_parser("check-config", help="validate a tenants file")
    check.add_argument("file", nargs="?")
    check.set_defaults(func=cmd_check_config)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
