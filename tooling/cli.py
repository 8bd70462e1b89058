"""The ``streamfold`` command line."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

from cfn.generate import STREAM_FAILURES_SUFFIX
from chalicelib import db, services, tables
from chalicelib.log import logger
from chalicelib.registry import DEFAULT_GRACE, ProjectionRegistry, RegistryError
from chalicelib.settings import get_settings, reset_settings
from chalicelib.versions import active_view_version, live_versions
from streams import handler, replay, rotation
from streams.alerts import AlertDeliverer, Outbox
from streams.aws_backend import AwsMappingBackend
from streams.aws_dlq import (
    REDRIVE_VISIBILITY_SECONDS,
    FailureQueue,
    LambdaInvoker,
    MappingsByStream,
    list_failures,
    redrive_failures,
)
from streams.backend import MappingBackend, SwapFailed, SwapReport, swap_verified
from streams.dlq import redrive
from streams.local_backend import LocalMappingBackend
from streams.mapping import Mapping, split_function, table_name_of
from streams.rescore import rescore_all, settle_all
from streams.status import aws_status_report, status_report
from streams.store import ControlStore
from tooling import bench, deploy, guard
from tooling.demo import KEY_FEATURES, send
from tooling.dynamodb_local import DynamoDBLocal, DynamoDBLocalError
from tooling.loops import Periodic
from tooling.mappings import LocalMappings
from tooling.stack import Component, LocalStack, StackRunning, read_stack_file, use_endpoint

__all__ = ["build_parser", "main", "storage"]

DEMO_TENANT_FILE = "demo-tenant.json"


@contextlib.contextmanager
def storage() -> Iterator[dict[str, Any] | None]:
    """Make DynamoDB reachable: the configured endpoint, a running ``streamfold up``, or a
    temporary DynamoDB Local on the persistent ``.data`` database. Yields the running stack info."""
    s = get_settings()
    if s.dynamodb_endpoint:
        yield read_stack_file(s.data_dir)
        return
    info = read_stack_file(s.data_dir)
    if info:
        use_endpoint(info["endpoint"], info.get("prefix"))
        yield info
        return
    with DynamoDBLocal(db_path=s.data_dir / "dynamodb") as ddb:
        use_endpoint(ddb.endpoint)
        tables.ensure_control_table(db.get_client(), s.table_prefix)
        yield None


def local_components() -> list[Callable[[LocalStack], Component]]:
    """Components ``streamfold up`` starts besides storage and HTTP: the local event source mappings,
    alert delivery every 2 s, the hourly rescoring, the delta-page settler every 15 s and the hourly day-table
    rotation (AWS runs the last four on schedules)."""

    def alerts(stack: LocalStack) -> Component:
        deliverer = AlertDeliverer(Outbox(db.get_client(), get_settings().control_table), services.tenants())
        return Periodic("alerts", deliverer.deliver_all, 2.0)

    def rescorer(stack: LocalStack) -> Component:
        return Periodic("rescore", lambda: logger.info("rescored", extra={"written": rescore_all()}), 3600.0)

    def settler(stack: LocalStack) -> Component:
        # The settler schedule (every minute on AWS): delta pages folded into the per-account items.
        return Periodic("settle", settle_all, 15.0)

    def rotator(stack: LocalStack) -> Component:
        # The same rotation as the hourly AWS schedule: tomorrow's table, and the lifecycle
        # (STREAMFOLD_RETENTION_DAYS deletes old local tables; no export, no table classes locally).
        return Periodic("rotation", lambda: logger.info("rotated", extra=rotation.run().to_dict()), 3600.0)

    return [LocalMappings, alerts, rescorer, settler, rotator]


LOCAL_SETTLE_SECONDS = "60"
"""`streamfold up` settles delta pages after 60 s (AWS: 600): a local stack is for looking at, and its account
listing then trails the events by about a minute; write units cost nothing here."""


def quiet_batches() -> None:
    """``streamfold up`` without ``--verbose``: one short line per projected batch, no metrics (EMF) lines,
    no info logs; warnings and errors as ever."""
    os.environ["POWERTOOLS_METRICS_DISABLED"] = "true"  # Powertools reads it at every flush
    log = logging.getLogger("streamfold")
    for h in log.handlers:
        h.setLevel(logging.WARNING)

    class OneLinePerBatch(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.getMessage() != "batch projected":
                return
            units = float(getattr(record, "write_units", 0) or 0)
            # "summaries": account SUMMARY items written in the batch (the live projector's page mode writes
            # usage to delta pages and leaves summaries to the settler: 0 is the normal figure there).
            print(f"{time.strftime('%H:%M:%S')} batch: {getattr(record, 'records', '?')} records, "
                  f"{getattr(record, 'events', '?')} events, {units:.1f} write units, "
                  f"{getattr(record, 'accounts', '?')} summaries", flush=True)

    log.addHandler(OneLinePerBatch(level=logging.INFO))


def cmd_up(args: argparse.Namespace) -> int:
    if not args.verbose:
        quiet_batches()
    if "STREAMFOLD_SETTLE_SECONDS" not in os.environ:
        os.environ["STREAMFOLD_SETTLE_SECONDS"] = LOCAL_SETTLE_SECONDS
        reset_settings()
    stack = LocalStack(port=args.port, in_memory=args.in_memory, components=local_components())
    try:
        stack.start()
    except StackRunning as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 3
    except DynamoDBLocalError as exc:
        stack.stop()
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except BaseException:
        stack.stop()
        raise
    print(f"streamfold is up: {stack.http.url}  (DynamoDB: {get_settings().dynamodb_endpoint})", flush=True)
    if args.demo:
        try:
            creds = ensure_demo_tenant()
            print("sending demo traffic through segment-analytics-python ...", flush=True)
            counts = send(stack.http.url, creds["write_key"], progress=True)
            print(f"demo sent: {json.dumps(counts)}", flush=True)
            print_where_to_look(stack.http.url, creds)
        except Exception as exc:
            print(f"demo failed: {exc}", file=sys.stderr, flush=True)
    print("Ctrl-C to stop.", flush=True)
    stack.wait()
    return 0


def print_where_to_look(url: str, creds: dict[str, str]) -> None:
    print("", flush=True)
    print(f"  Dashboard:  {url}/", flush=True)
    print(f"  API token:  {creds['api_token']}   (paste it into the dashboard sign-in)", flush=True)
    print(f"  Write key:  {creds['write_key']}", flush=True)
    print(f"  Try:        curl -H 'Authorization: Bearer {creds['api_token']}' {url}/api/accounts", flush=True)
    print("", flush=True)


def ensure_demo_tenant() -> dict[str, str]:
    """The demo tenant's credentials (created once, kept under .data/)."""
    s = get_settings()
    path = s.data_dir / DEMO_TENANT_FILE
    if path.exists():
        creds = json.loads(path.read_text())
        if services.tenants().get(creds["tenant_id"]) is not None:
            return creds
    creds = services.tenants().create("Acme Analytics (demo)")

    services.tenants().put_settings(creds["tenant_id"], {"key_features": KEY_FEATURES})
    s.data_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(creds))
    return creds


def cmd_tenant_create(args: argparse.Namespace) -> int:
    with storage():
        print(json.dumps(services.tenants().create(args.name)))
    return 0


def cmd_tenant_list(args: argparse.Namespace) -> int:
    with storage():
        for t in services.tenants().list():
            print(json.dumps({"tenant_id": t.tenant_id, "name": t.name}))
    return 0


def cmd_tenant_revoke(args: argparse.Namespace) -> int:
    secret = args.secret if args.secret != "-" else sys.stdin.readline().strip()
    with storage():
        revoked = services.tenants().revoke(secret)
    if revoked is None:
        print("error: no such write key or API token (already revoked?)", file=sys.stderr)
        return 2
    ttl = services.tenants().RESOLVE_TTL
    print(json.dumps({**revoked, "revoked": True, "effective_within_s": ttl}))
    return 0


def cmd_tenant_set(args: argparse.Namespace) -> int:
    with storage():
        store = services.tenants()
        if store.get(args.tenant_id) is None:
            print(f"error: no tenant {args.tenant_id!r}", file=sys.stderr)
            return 2
        settings = store.get_settings(args.tenant_id)
        if args.webhook_url is not None:
            if args.webhook_url and not args.webhook_url.startswith(("http://", "https://")):
                print("error: --webhook-url must be an http(s) URL", file=sys.stderr)
                return 2
            settings["webhook_url"] = args.webhook_url
        if args.key_features is not None:
            settings["key_features"] = [f.strip() for f in args.key_features.split(",") if f.strip()]
        store.put_settings(args.tenant_id, settings)
        print(json.dumps({"tenant_id": args.tenant_id, **settings}))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:

    with storage() as info:
        url = args.url or (info or {}).get("url")
        if not url:
            print("error: no running stack; start `streamfold up` first or pass --url", file=sys.stderr)
            return 2
        creds = ensure_demo_tenant()
    counts = send(url, creds["write_key"], accounts=args.accounts, days=args.days, progress=True)
    print(json.dumps(counts))
    print_where_to_look(url, creds)
    return 0


def _parts() -> tuple[ControlStore, LocalMappingBackend]:
    store = ControlStore(db.get_client(), get_settings().control_table)
    return store, LocalMappingBackend(store, db.get_client(), db.get_streams_client(), poll=0.1)


def on_aws(args: argparse.Namespace) -> bool:
    """``--aws``, or ``STREAMFOLD_STAGE`` set (the deployed stage), and no ``--local``."""
    if getattr(args, "local", False):
        return False
    return bool(getattr(args, "aws", False) or os.environ.get("STREAMFOLD_STAGE"))


def _aws_lambda() -> Any:
    return boto3.session.Session().client("lambda", region_name=get_settings().region)


def aws_projector_function(explicit: str | None) -> str | None:
    """The deployed projector's name: ``--function``, ``STREAMFOLD_PROJECTOR_FUNCTION``, or the
    ``ProjectorFunctionName`` output of stack ``streamfold-$STREAMFOLD_STAGE``."""
    if explicit and explicit != "projector":
        return explicit
    if os.environ.get("STREAMFOLD_PROJECTOR_FUNCTION"):
        return os.environ["STREAMFOLD_PROJECTOR_FUNCTION"]
    stage = os.environ.get("STREAMFOLD_STAGE")
    if stage:
        cfn = boto3.session.Session().client("cloudformation", region_name=get_settings().region)
        for stack in cfn.describe_stacks(StackName=f"streamfold-{stage}")["Stacks"]:
            for out in stack.get("Outputs", []):
                if out["OutputKey"] == "ProjectorFunctionName":
                    return str(out["OutputValue"])
    return explicit


def _select(backend: MappingBackend, args: argparse.Namespace) -> list[Mapping]:
    if getattr(args, "uuid", None):
        m = backend.get(args.uuid)
        return [m] if m else []
    return backend.list(function_name=getattr(args, "function", None))


def _err(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def cmd_status(args: argparse.Namespace) -> int:
    if on_aws(args):
        prefix = get_settings().table_prefix
        print(json.dumps({"backend": "aws", "mappings": aws_status_report(_aws_lambda(), prefix)}, indent=2,
                         default=str))
        return 0
    with storage():
        store, _ = _parts()
        print(json.dumps({"mappings": status_report(store)}, indent=2))
    return 0


def cmd_mappings(args: argparse.Namespace) -> int:
    if on_aws(args):
        args.function = aws_projector_function(args.function)
        return _mappings(AwsMappingBackend(_aws_lambda(), poll=args.poll), args)
    with storage():
        _, backend = _parts()
        return _mappings(backend, args)


def _mappings(backend: MappingBackend, args: argparse.Namespace) -> int:
    selected = _select(backend, args)
    if args.mappings_cmd != "list" and not selected:
        _err("error: no matching mapping")
        return 2
    if args.mappings_cmd == "swap":
        return _swap_all(backend, selected, args)
    for m in selected:
        if args.mappings_cmd == "disable":
            if m.state not in ("Disabled", "Disabling"):
                backend.update(m.uuid, enabled=False)
            m = backend.wait_for_state(m.uuid, "Disabled", args.timeout)
        elif args.mappings_cmd == "enable":
            if m.state not in ("Enabled", "Enabling"):
                backend.update(m.uuid, enabled=True)
            m = backend.wait_for_state(m.uuid, "Enabled", args.timeout)
        print(json.dumps(m.to_dict(), default=str))
    return 0


def _swap_all(backend: MappingBackend, selected: list[Mapping], args: argparse.Namespace) -> int:
    """Swap every selected mapping; if one fails it is rolled back, and so are the ones already swapped."""
    done: list[tuple[Mapping, SwapReport]] = []
    for m in selected:
        if backend.targets(m, f"{m.function_base_name}:{args.to}"):
            _err(f"{m.uuid}: already targets {args.to}; nothing to do")
            print(json.dumps(m.to_dict(), default=str))
            continue
        try:
            report = swap_verified(backend, m.uuid, args.to, timeout=args.timeout, say=_err)
        except SwapFailed as exc:
            _err(f"error: {exc}")
            print(json.dumps({"Swap": exc.report.to_dict()}, default=str))
            for earlier, rep in reversed(done):
                back = rep.from_function.partition(":")[2] or "blue"
                if back not in ("blue", "green"):  # AWS may report the version: return to the other colour
                    back = "blue" if args.to == "green" else "green"
                _err(f"{earlier.uuid}: rolling back to {back} (another mapping failed)")
                swap_verified(backend, earlier.uuid, back, timeout=args.timeout, say=_err)
            return 1
        done.append((m, report))
        assert report.mapping is not None
        summary = report.to_dict()
        summary.pop("mapping")
        print(json.dumps({**report.mapping.to_dict(), "Swap": summary}, default=str))
    return 0


def aws_failure_queue_url(explicit: str | None) -> str:
    """The AWS mappings' on-failure queue: ``--queue-url``, the ``StreamFailureQueueUrl`` output of stack
    ``streamfold-$STREAMFOLD_STAGE-storage``, or the queue named ``<prefix>stream-failures`` (the storage
    template's name for it, with ``STREAMFOLD_TABLE_PREFIX``)."""
    if explicit:
        return explicit
    session, region = boto3.session.Session(), get_settings().region
    stage = os.environ.get("STREAMFOLD_STAGE")
    if stage:
        cfn = session.client("cloudformation", region_name=region)
        try:
            stacks = cfn.describe_stacks(StackName=f"streamfold-{stage}-storage")["Stacks"]
        except ClientError:  # no storage stack under that name: fall back to the queue's name
            stacks = []
        for stack in stacks:
            for out in stack.get("Outputs", []):
                if out["OutputKey"] == "StreamFailureQueueUrl":
                    return str(out["OutputValue"])
    sqs = session.client("sqs", region_name=region)
    return str(sqs.get_queue_url(QueueName=get_settings().table_prefix + STREAM_FAILURES_SUFFIX)["QueueUrl"])


def _dlq_aws(args: argparse.Namespace) -> int:
    """``dlq list|redrive --aws``: the SQS on-failure queue; records re-read from the stream by each pointer."""
    queue_url = aws_failure_queue_url(args.queue_url)
    queue = FailureQueue(boto3.session.Session().client("sqs", region_name=get_settings().region), queue_url)
    lam = _aws_lambda()
    mappings = MappingsByStream(lam)

    def selected(row: dict[str, Any]) -> bool:
        if args.uuid and row["mapping"] != args.uuid:
            return False
        return not args.function or split_function(row["function"])[0] == split_function(args.function)[0]

    if args.dlq_cmd == "list":
        for row in list_failures(queue, mappings, selected):
            print(json.dumps(row, default=str))
        return 0
    # Invoke waits as long as the function may run (15 min), and is never retried by botocore: a read timeout
    # retried would run the batch twice at once (harmless, re-applied events are no-ops, but twice the writes).
    invoking = boto3.session.Session().client("lambda", region_name=get_settings().region, config=Config(
        read_timeout=REDRIVE_VISIBILITY_SECONDS, retries={"total_max_attempts": 1}))
    report = redrive_failures(queue, mappings, db.get_streams_client(), LambdaInvoker(invoking), selected)
    for line in report.messages:
        print(json.dumps(line, default=str), flush=True)
    print(json.dumps(report.summary()))
    return 0


def cmd_dlq(args: argparse.Namespace) -> int:
    if on_aws(args):
        return _dlq_aws(args)
    with storage():
        store, backend = _parts()
        for m in _select(backend, args):
            if args.dlq_cmd == "list":
                for d in store.dead_letters(m.uuid):
                    info = d.info["DDBStreamBatchInfo"]
                    print(json.dumps({"mapping": m.uuid, "id": d.id, "condition": d.condition,
                                      "records": info["batchSize"], "shard": info["shardId"],
                                      "first": info["startSequenceNumber"], "last": info["endSequenceNumber"],
                                      "error": d.info["responseContext"].get("error"),
                                      "redrive_attempts": d.redrive_attempts, "stored": d.records is not None}))
            else:
                r = redrive(store, m, db.get_streams_client())
                print(json.dumps({"mapping": m.uuid, "function": m.function_name, "delivered": r.delivered,
                                  "failed": r.failed, "records": r.records}))
    return 0


def cmd_replay(args: argparse.Namespace) -> int:

    if args.projection != "view":
        print(f"error: unknown projection {args.projection!r} (the single-table view is `view`)", file=sys.stderr)
        return 2
    with storage():
        client, prefix = db.get_client(), get_settings().table_prefix
        active = active_view_version(client, get_settings().control_table, cached=False)
        out: dict[str, Any] = {"active_before": active}
        if not args.no_rebuild:
            try:
                out.update(replay.build(client, prefix, args.version, handler.new_writer(args.version),
                                        workers=args.workers, progress=not args.no_progress, fresh=args.fresh,
                                        partition_events=args.partition_events,
                                        partition_entities=args.partition_entities))
            except ValueError as exc:
                print(f"error: {exc}", file=sys.stderr)
                return 2
        if args.compare:
            other = args.against if args.against is not None else active
            cmp = replay.compare(client, prefix, other, args.version)
            out["compare"] = cmp.to_dict()
            # The fold code each table was written with decides what a difference means: the same code on
            # both sides (replay == live is an invariant) makes every difference damage, and blocks the
            # promotion; different code makes them the upgrade's, reported, not a reason to refuse.
            if args.promote and not cmp.equal and not args.force and (cmp.same_code or other == args.version):
                print(json.dumps(out, indent=2))
                print("not promoting: versions differ (use --force after checking the differences)", file=sys.stderr)
                return 1
        if args.promote:
            try:
                out["promote"] = replay.promote(client, prefix, args.version)
            except ValueError as exc:
                print(json.dumps(out, indent=2, default=str))
                print(f"not promoting: {exc}", file=sys.stderr)
                return 1
            out["active_after"] = args.version
        print(json.dumps(out, indent=2, default=str))
    return 0


def live_positions(store: ControlStore) -> dict[str, str]:
    """The local mappings' shard checkpoints, ``{"<day table>/<shard id>": sequence number}``: how far the live
    projector has folded the streams into the serving version (Lambda exposes no checkpoints on AWS)."""
    out: dict[str, str] = {}
    for m in store.list_mappings():
        for c in store.checkpoints(m.uuid):
            if c.sequence_number:
                out[f"{table_name_of(c.stream_arn)}/{c.shard_id}"] = c.sequence_number
    return out


def cmd_projection(args: argparse.Namespace) -> int:
    """``streamfold projection list | retire N [--grace-hours H] | sweep``."""
    with storage():
        client, s = db.get_client(), get_settings()
        registry = ProjectionRegistry(client, s.table_prefix)
        if args.projection_cmd == "list":
            if not on_aws(args):
                # The live projector writes the serving version and every current one: the mappings' checkpoints
                # are how far each is built (a replaying version's is its catch-up's, recorded by it).
                positions = live_positions(ControlStore(client, s.control_table))
                for version, phase in live_versions(client, s.control_table, cached=False).items():
                    if phase in ("serving", "current"):
                        registry.record_built_through(version, positions)
            for v in registry.list():
                if v.table_exists and not v.dropped_at:
                    registry.count(v.version, exact=args.exact)
            for v in registry.list():
                print(json.dumps(v.to_dict()))
            return 0
        if args.projection_cmd == "retire":
            try:
                retired = registry.retire(args.version, timedelta(hours=args.grace_hours))
            except RegistryError as exc:
                _err(f"error: {exc}")
                return 2
            print(json.dumps(retired.to_dict()))
            return 0
        print(json.dumps({"dropped": registry.sweep()}))
    return 0


def _register_projection(subparsers: Any) -> None:
    """``projection list | retire | sweep`` (the registry of view versions, :mod:`chalicelib.registry`)."""
    pj = subparsers.add_parser("projection", help="view versions: list, retire, sweep (the projection registry)")
    psub = pj.add_subparsers(dest="projection_cmd", required=True)
    pl = psub.add_parser("list", help="one JSON line per view version: state, code version, item count, position")
    pl.add_argument("--exact", action="store_true",
                    help="count items with a Select=COUNT scan (reads every table) instead of DescribeTable's "
                         "ItemCount (free; refreshed by DynamoDB about every 6 hours)")
    _add_target(pl)
    pr = psub.add_parser("retire", help="retire a view version: `sweep` deletes its table and search index after "
                                        "the grace period (the serving version is refused)")
    pr.add_argument("version", type=int)
    default_hours = DEFAULT_GRACE.total_seconds() / 3600
    pr.add_argument("--grace-hours", type=float, default=default_hours,
                    help=f"hours before a sweep may delete it (default {default_hours:g}); promoting it again "
                         "before then un-retires it")
    psub.add_parser("sweep", help="delete the table and search index of every retired version past its grace")
    pj.set_defaults(func=cmd_projection)


def _add_target(p: argparse.ArgumentParser) -> None:
    g = p.add_mutually_exclusive_group()
    g.add_argument("--aws", action="store_true",
                   help="the Lambda event source mappings of the AWS account (default when STREAMFOLD_STAGE is set)")
    g.add_argument("--local", action="store_true", help="the local runtime's mappings even if STREAMFOLD_STAGE is set")


def _register_streams(subparsers: Any) -> None:
    """``status``, ``mappings``, ``replay`` and ``dlq``."""
    st = subparsers.add_parser("status", help="mappings, shard checkpoints, iterator age / lag")
    _add_target(st)
    st.set_defaults(func=cmd_status)

    mp = subparsers.add_parser("mappings", help="list / swap / disable / enable the mappings (local or --aws)")
    msub = mp.add_subparsers(dest="mappings_cmd", required=True)
    for name, help_ in (("list", "show mappings"), ("swap", "blue/green retarget keeping the position"),
                        ("disable", "disable and wait for Disabled"), ("enable", "enable and wait for Enabled")):
        p = msub.add_parser(name, help=help_)
        p.add_argument("--uuid", help="one mapping (default: all mappings of --function)")
        p.add_argument("--function", default=None if name == "list" else "projector",
                       help="function name (base or name:colour)")
        p.add_argument("--timeout", type=float, default=60.0)
        p.add_argument("--poll", type=float, default=1.0, help="seconds between state polls on AWS")
        _add_target(p)
        if name == "swap":
            p.add_argument("--to", required=True, choices=["blue", "green"])
        p.set_defaults(func=cmd_mappings)

    rp = subparsers.add_parser("replay", help="rebuild a projection version from the day tables, compare, promote")
    rp.add_argument("projection", help="projection to rebuild: `view` (accounts, users, catalog, scores)")
    rp.add_argument("--version", type=int, required=True, help="target view version (table <prefix>view-vN)")
    rp.add_argument("--compare", action="store_true", help="diff against the active version (or --against)")
    rp.add_argument("--against", type=int, default=None)
    rp.add_argument("--promote", action="store_true",
                    help="make it the serving version (it must be current: built and caught up)")
    rp.add_argument("--force", action="store_true", help="promote even if the comparison found differences")
    rp.add_argument("--no-rebuild", action="store_true", help="only compare / promote")
    rp.add_argument("--fresh", action="store_true",
                    help="start over: discard what a killed rebuild of this version left to resume from")
    rp.add_argument("--no-progress", action="store_true", help="no progress bars on stderr")
    rp.add_argument("--partition-events", type=int, default=replay.PARTITION_EVENTS,
                    help="events per partition (the unit a killed rebuild resumes from)")
    rp.add_argument("--partition-entities", type=int, default=replay.PARTITION_ENTITIES,
                    help="accounts, users and anonymous ids per partition")
    rp.add_argument("--workers", type=int, default=1,
                    help="processes that fold partitions of an inactive version (default 1: on a 2-core machine "
                         "beside DynamoDB Local a second one adds nothing; see docs/PERFORMANCE.md)")
    rp.set_defaults(func=cmd_replay)

    dq = subparsers.add_parser("dlq", help="dead-lettered batches: the local mappings' or (--aws) the on-failure queue")
    dsub = dq.add_subparsers(dest="dlq_cmd", required=True)
    for name, help_ in (("list", "list dead-lettered batches"),
                        ("redrive", "send them to the mapping's current function again")):
        p = dsub.add_parser(name, help=help_)
        p.add_argument("--uuid")
        p.add_argument("--function", default=None)
        p.add_argument("--queue-url", default=None,
                       help="with --aws: the on-failure queue (default: the storage stack's StreamFailureQueueUrl "
                            "output, or the queue <prefix>stream-failures)")
        _add_target(p)
        p.set_defaults(func=cmd_dlq)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="streamfold", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    up = sub.add_parser("up", help="start the local stack (DynamoDB Local, mappings, HTTP server)")
    up.add_argument("--port", type=int, default=8080)
    up.add_argument("--in-memory", action="store_true", help="keep DynamoDB Local in memory")
    up.add_argument("--demo", action="store_true", help="send the demo history once the stack is up")
    up.add_argument("--verbose", action="store_true",
                    help="every log line and each batch's metrics (EMF) line (default: one short line per batch)")
    up.set_defaults(func=cmd_up)

    tenant = sub.add_parser("tenant", help="manage tenants").add_subparsers(dest="tenant_cmd", required=True)
    tc = tenant.add_parser("create", help="create a tenant; prints its tenant_id, write_key and api_token")
    tc.add_argument("name")
    tc.set_defaults(func=cmd_tenant_create)
    tenant.add_parser("list").set_defaults(func=cmd_tenant_list)
    tr = tenant.add_parser("revoke", help="revoke a write key or API token (refused everywhere within 5 s)")
    tr.add_argument("secret", help="the write key or API token to revoke (`-`: read it from stdin)")
    tr.set_defaults(func=cmd_tenant_revoke)
    ts = tenant.add_parser("set", help="tenant settings: alert webhook URL, key features of the score model")
    ts.add_argument("tenant_id")
    ts.add_argument("--webhook-url", help="where score alerts are POSTed locally (empty string: none)")
    ts.add_argument("--key-features", help="comma-separated event names (default model's breadth factor)")
    ts.set_defaults(func=cmd_tenant_set)

    demo = sub.add_parser("demo", help="send a realistic usage history through the Segment SDK")
    demo.add_argument("--url", help="base URL of the ingest API (default: the running stack)")
    demo.add_argument("--accounts", type=int, default=200)
    demo.add_argument("--days", type=int, default=30)
    demo.set_defaults(func=cmd_demo)

    _register_streams(sub)
    _register_projection(sub)
    bench.register(sub)
    sub.add_parser("guard", add_help=False,
                   help="refuse template changes that would reset a stream position (OLD NEW | --change-set FILE)")
    sub.add_parser("deploy", add_help=False, help="package and deploy to AWS: --stage NAME [--dry-run]")
    return p


# Sub-commands with a parser of their own: ``streamfold guard ...`` is ``tooling.guard.main([...])``.
PASS_THROUGH: dict[str, Callable[[list[str]], int]] = {"guard": guard.main, "deploy": deploy.main}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    # Log lines go to stderr: a command's stdout is its JSON (`streamfold replay view ... | jq`).
    for h in logging.getLogger("streamfold").handlers:
        if isinstance(h, logging.StreamHandler) and getattr(h, "stream", None) is sys.stdout:
            h.setStream(sys.stderr)
    if argv and argv[0] in PASS_THROUGH:
        return PASS_THROUGH[argv[0]](argv[1:])
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
