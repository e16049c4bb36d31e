"""The ``trainyard`` command line: the local stack and the demo, and what data owners and on-call do by hand --
list and inspect batches, approve or reject them, compare versions, acknowledge incidents.

Every command reads the same ``TRAINYARD_*`` settings as the Dagster code location. Ordinary mistakes (an unknown
tenant, dataset, batch, version or incident) answer with one line naming what is valid, never a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
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
    except (LookupError, NotADataOwner, NotAwaitingApproval, ValueError) as exc:
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
    from dagster_project.lakefs import RefNotFound
    from dagster_project.publishing.versions import diff_published

    settings = Settings()
    batch = _batch(settings, args.tenant, args.dataset, "-")
    try:
        diff = diff_published(batch.repo, args.dataset, args.left, args.right)
    except RefNotFound as exc:
        raise UserError(f"{args.left} or {args.right} is not a version (v1, v2, ...), tag, branch or commit of "
                        f"{args.tenant}/{args.dataset}; `trainyard versions {args.tenant} {args.dataset}` lists the "
                        "versions") from exc
    print("\n".join(diff.lines()))
    return 0


def _store(settings: Settings):
    from dagster_project.publishing.approvals import ApprovalStore

    return ApprovalStore(settings.resolved_database_url, schema=settings.database_schema)


def cmd_batches(args: argparse.Namespace) -> int:
    from dagster_project.publishing.ledger import BatchState
    from dagster_project.publishing.status import batch_list_lines

    settings = Settings()
    tenant = load_tenants(settings.tenants_file).tenant(args.tenant)
    if args.dataset:
        tenant.dataset(args.dataset)
    states = {BatchState(args.state)} if args.state else None
    with _store(settings) as store:
        outcomes = store.ledger.list(tenant.name, args.dataset, states)
    print("\n".join(batch_list_lines(outcomes)))
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from dagster_project.publishing.status import batch_status, status_lines

    settings = Settings()
    batch = _batch(settings, args.tenant, args.dataset, args.batch)
    with _store(settings) as store:
        status = batch_status(batch, store)
    if status.outcome is None and status.head is None:
        raise UserError(f"{args.tenant}/{args.dataset} has no batch {args.batch!r}: "
                        f"`trainyard batches {args.tenant} {args.dataset}` lists them")
    print("\n".join(status_lines(status)))
    return 0


def cmd_alerts(args: argparse.Namespace) -> int:
    from dagster_project.alerts import AlertOutbox, IncidentStatus
    from dagster_project.publishing.status import age

    settings = Settings()
    outbox = AlertOutbox(settings.resolved_database_url, schema=settings.database_schema)
    incidents = outbox.incidents_list(None if args.all else IncidentStatus.OPEN)
    if not incidents:
        print("no open incidents" if not args.all else "no incidents")
    for incident in incidents:
        message = outbox.message(incident.last_alert_id) if incident.last_alert_id else None
        delivery = message.status.value if message else "-"
        ack = f"ack {incident.acknowledged_by}" if incident.acknowledged_by else "not acknowledged"
        print(f"#{incident.id:<5} {incident.status.value:<8} {incident.kind:<20} x{incident.occurrences:<3} "
              f"{age(incident.last_seen):>5} ago  slack {delivery:<18} {ack}\n       {incident.dedupe_key}"
              + (f"\n       {message.alert.title}" if message else ""))
    return 0


def cmd_ack(args: argparse.Namespace) -> int:
    from dagster_project.alerts import AlertOutbox, AlertRouter

    settings = Settings()
    router = AlertRouter(AlertOutbox(settings.resolved_database_url, schema=settings.database_schema))
    try:
        incident = router.acknowledge(args.incident, args.actor, args.note or "")
    except (LookupError, ValueError) as exc:
        raise UserError(str(exc)) from exc
    print(f"incident {incident.id} ({incident.dedupe_key}) acknowledged by {args.actor}; the alert's Slack thread "
          "says so on the next delivery")
    return 0


def cmd_near_dups(args: argparse.Namespace) -> int:
    from dagster_project.stages.neardup_files import RecordsError, report_near_duplicates

    against = Path(args.against) if args.against else None
    try:
        with open(args.out, "w", encoding="utf-8") if args.out else contextlib.nullcontext(sys.stdout) as out:
            found, total = report_near_duplicates(Path(args.file), against, args.id_field, args.text_field,
                                                  args.threshold, out)
    except (RecordsError, OSError) as exc:
        raise UserError(str(exc)) from exc
    print(f"{found} of {total} records near-duplicate an earlier one{' or one in --against' if against else ''} "
          f"(5-gram Jaccard >= {args.threshold})", file=sys.stderr)
    return 0


class UserError(Exception):
    """An ordinary mistake on the command line: printed as one line, exit code 2."""


EPILOG = """examples:
  trainyard batches northbank --state awaiting_approval
  trainyard show northbank complaints wk49
  trainyard approve northbank complaints wk49 --commit 3f2a9c41b7d0 --as priya.shah@northbank.example
  trainyard reject stahlwerk defect_reports bad-1 --as anna.becker@stahlwerk.example --reason "PII leak"
  trainyard diff northbank support_intents v1 v2
  trainyard alerts
  trainyard ack 12 --as oncall@example.com
  trainyard near-dups wk50.jsonl --against published.parquet --text-field text --id-field id
"""


def _sub(sub, name: str, help_text: str, description: str, examples: str = ""):
    return sub.add_parser(name, help=help_text, description=description,
                          epilog=f"example:\n  {examples}" if examples else None,
                          formatter_class=argparse.RawDescriptionHelpFormatter)


def _defaults_shown(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.formatter_class = argparse.ArgumentDefaultsHelpFormatter
    return parser


def build_parser() -> argparse.ArgumentParser:
    from dagster_project.publishing.ledger import BatchState

    parser = argparse.ArgumentParser(prog="trainyard", description=__doc__, epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _sub(sub, "services", "run the embedded S3, lakeFS emulator, Slack receiver and gatekeeper on loopback",
         "Start the embedded services in the foreground, with the demo's state under TRAINYARD_HOME.",
         "trainyard services").set_defaults(func=cmd_services)
    emulator = _defaults_shown(_sub(sub, "lakefs-emulator", "run only the lakeFS API emulator",
                                    "Serve the lakeFS API emulator (what the embedded stack runs) on HOST:PORT."))
    emulator.add_argument("--host", default="127.0.0.1")
    emulator.add_argument("--port", type=int, default=8310)
    emulator.add_argument("--data-dir", required=True)
    emulator.add_argument("--access-key-id", required=True)
    emulator.add_argument("--secret-access-key", required=True)
    emulator.set_defaults(func=cmd_lakefs_emulator)
    _sub(sub, "demo", "run one seeded batch per dataset through Dagster and print a summary",
         "Start the embedded services, upload gold sets and seeded drops (one deliberately bad), let Dagster's "
         "sensors run them, approve the owner-policy batch, print what happened, stop.",
         "trainyard demo").set_defaults(func=cmd_demo)
    dev = _defaults_shown(_sub(sub, "dev", "serve the Dagster UI (webserver and daemon) over the demo's state",
                               "Start the embedded services and `dagster dev` over the demo's DAGSTER_HOME, so its "
                               "runs, checks and data are there to inspect. The UI is at http://HOST:PORT.",
                               "trainyard dev --port 3000"))
    dev.add_argument("--host", default="127.0.0.1", help="address the Dagster UI listens on")
    dev.add_argument("--port", type=int, default=3000, help="port of the Dagster UI")
    dev.set_defaults(func=cmd_dev)
    batches = _sub(sub, "batches", "list a tenant's batches: state, failed gate or version, age",
                   "List the batches of a tenant (or one dataset) with where each ended: awaiting_approval, "
                   "published, blocked (and by which gate), rejected, merge_conflict, drop_rejected. Batches "
                   "still running are in the Dagster UI.", "trainyard batches northbank --state awaiting_approval")
    batches.add_argument("tenant")
    batches.add_argument("dataset", nargs="?")
    batches.add_argument("--state", choices=[s.value for s in BatchState])
    batches.set_defaults(func=cmd_batches)
    show = _sub(sub, "show", "show one batch: its stages, gates, difference from main and the commands",
                "Show where a batch stands: its outcome and why, the stage commits with their counts, every "
                "gate's result, what it changes on main, and the exact commands to act on it.",
                "trainyard show northbank complaints wk49")
    for name in ("tenant", "dataset", "batch"):
        show.add_argument(name)
    show.set_defaults(func=cmd_show)
    for verb in ("approve", "reject"):
        what = ("Approve a batch's publish candidate (publish policy owner); the merge sensor then merges exactly "
                "that commit into main." if verb == "approve" else
                "Reject a batch: a publish candidate, or a batch a gate blocked (to close it out). The decision "
                "is audited and the branch is deleted after TRAINYARD_REJECTED_BRANCH_RETENTION_DAYS.")
        decision = _sub(sub, verb, f"{verb} a batch (the audit table records who, when and why)", what,
                        "trainyard approve northbank complaints wk49 --commit 3f2a9c41b7d0 --as priya.shah@northbank."
                        "example" if verb == "approve" else
                        "trainyard reject stahlwerk defect_reports bad-1 --as anna.becker@stahlwerk.example "
                        "--reason 'PII in a PII-free dataset'")
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
    versions = _sub(sub, "versions", "list a dataset's published versions",
                    "List the versions Trainyard published (tag, commit, batch, records); other tags are ignored "
                    "with a warning.", "trainyard versions northbank support_intents")
    versions.add_argument("tenant")
    versions.add_argument("dataset")
    versions.set_defaults(func=cmd_versions)
    diff = _sub(sub, "diff", "compare two versions (v1, v2, tags, branches or commits)",
                "Records added, removed and relabelled, and the label distribution change, from A to B.",
                "trainyard diff northbank support_intents v1 v2")
    diff.add_argument("tenant")
    diff.add_argument("dataset")
    diff.add_argument("left", metavar="A")
    diff.add_argument("right", metavar="B")
    diff.set_defaults(func=cmd_diff)
    alerts = _sub(sub, "alerts", "list open incidents: kind, occurrences, Slack delivery, who acknowledged",
                  "List the incidents in the alert outbox (open ones unless --all), with their Slack delivery state.",
                  "trainyard alerts --all")
    alerts.add_argument("--all", action="store_true", help="resolved incidents too")
    alerts.set_defaults(func=cmd_alerts)
    ack = _sub(sub, "ack", "acknowledge an open incident (posted in the alert's Slack thread)",
               "Record that you are on an incident; the alert's Slack thread says so.",
               "trainyard ack 12 --as oncall@example.com --note 'looking at the vendor export'")
    ack.add_argument("incident", help="the incident number (as in Slack and `trainyard alerts`) or its key")
    ack.add_argument("--as", dest="actor", required=True, help="your email or name")
    ack.add_argument("--note", default="")
    ack.set_defaults(func=cmd_ack)
    gate = _defaults_shown(_sub(sub, "gatekeeper", "serve the lakeFS pre-merge webhook that guards main",
                                "Serve the gatekeeper lakeFS calls before any merge into main (and the playbooks)."))
    gate.add_argument("--host", default="127.0.0.1")
    gate.add_argument("--port", type=int, default=9340)
    gate.set_defaults(func=cmd_gatekeeper)
    near = _sub(sub, "near-dups", "list the records of a file that near-duplicate an earlier one (or --against's)",
                "Print a JSON line {id, duplicate_of, similarity} for each record of FILE (JSONL, CSV or Parquet) "
                "whose text's 5-gram Jaccard similarity with an earlier record, or one in --against, is at least "
                "--threshold: the dedup stage's engine, on local files.",
                "trainyard near-dups wk50.jsonl --against published.parquet --text-field text --id-field id")
    near.add_argument("file")
    near.add_argument("--against", metavar="FILE", help="records already kept (e.g. published): preferred matches")
    near.add_argument("--text-field", required=True)
    near.add_argument("--id-field", required=True)
    near.add_argument("--threshold", type=float, default=0.8, help="least similarity reported (default 0.8)")
    near.add_argument("--out", metavar="FILE", help="write the JSON lines here instead of stdout")
    near.set_defaults(func=cmd_near_dups)
    check = _sub(sub, "check-config", "validate a tenants file",
                 "Validate a tenants file; one line per problem, naming tenant, dataset and field.",
                 "trainyard check-config my-tenants.yaml")
    check.add_argument("file", nargs="?")
    check.set_defaults(func=cmd_check_config)
    return parser


def main(argv: list[str] | None = None) -> int:
    from dagster_project.lakefs import RefNotFound
    from dagster_project.publishing.versions import NothingPublished
    from dagster_project.tenants import UnknownName

    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (UserError, UnknownName, NothingPublished) as exc:
        print(f"trainyard {args.command}: {exc}", file=sys.stderr)
        return 2
    except RefNotFound as exc:  # e.g. a tenant whose lakeFS repository appears only with its first batch
        print(f"trainyard {args.command}: not in lakeFS: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
