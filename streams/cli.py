"""``streamfold status | mappings ... | dlq ...`` for the local Event Source Mappings."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from chalicelib import db
from chalicelib.settings import get_settings
from streams.backend import swap
from streams.dlq import redrive
from streams.local_backend import LocalMappingBackend
from streams.mapping import Mapping, table_name_of
from streams.store import ControlStore

__all__ = ["register", "status_report"]


def _parts() -> tuple[ControlStore, LocalMappingBackend]:
    store = ControlStore(db.get_client(), get_settings().control_table)
    return store, LocalMappingBackend(store, db.get_client(), db.get_streams_client(), poll=0.1)


def _select(backend: LocalMappingBackend, args: argparse.Namespace) -> list[Mapping]:
    if getattr(args, "uuid", None):
        m = backend.get(args.uuid)
        return [m] if m else []
    return backend.list(function_name=getattr(args, "function", None))


def status_report(store: ControlStore) -> list[dict[str, Any]]:
    """Every mapping with its shard checkpoints, lag gauges and dead-letter count."""
    out = []
    for m in sorted(store.list_mappings(), key=lambda m: m.created):
        shards: list[dict[str, Any]] = [{
            "table": table_name_of(c.stream_arn), "shard": c.shard_id, "checkpoint": c.sequence_number,
            "finished": c.finished, "records_behind": c.records_behind, "more_behind": c.more_behind,
            "iterator_age_ms": c.iterator_age_ms, "updated_s_ago": round(time.time() - c.updated_at, 1),
        } for c in sorted(store.checkpoints(m.uuid), key=lambda c: (c.stream_arn, c.shard_id))]
        out.append({
            "uuid": m.uuid, "function": m.function_name, "state": m.state, "source": m.event_source_arn,
            "runtime": store.lease_holder(m.uuid), "batch_size": m.batch_size,
            "records_behind": sum(s["records_behind"] for s in shards),
            "iterator_age_ms": max((s["iterator_age_ms"] for s in shards), default=0),
            "dead_letters": len(store.dead_letters(m.uuid)), "shards": shards,
        })
    return out


def cmd_status(args: argparse.Namespace) -> int:
    from chalicelib.cli import storage

    with storage():
        store, _ = _parts()
        print(json.dumps({"mappings": status_report(store)}, indent=2))
    return 0


def cmd_mappings(args: argparse.Namespace) -> int:
    from chalicelib.cli import storage

    with storage():
        store, backend = _parts()
        selected = _select(backend, args)
        if args.mappings_cmd != "list" and not selected:
            print("error: no matching mapping", file=sys.stderr)
            return 2
        for m in selected:
            if args.mappings_cmd == "swap":
                m = swap(backend, m.uuid, to=args.to, timeout=args.timeout)
            elif args.mappings_cmd == "disable":
                if m.state not in ("Disabled", "Disabling"):
                    backend.update(m.uuid, enabled=False)
                m = backend.wait_for_state(m.uuid, "Disabled", args.timeout)
            elif args.mappings_cmd == "enable":
                if m.state not in ("Enabled", "Enabling"):
                    backend.update(m.uuid, enabled=True)
                m = backend.wait_for_state(m.uuid, "Enabled", args.timeout)
            print(json.dumps(m.to_dict()))
    return 0


def cmd_dlq(args: argparse.Namespace) -> int:
    from chalicelib.cli import storage

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
    from chalicelib.cli import storage
    from chalicelib.versions import active_view_version
    from streams import replay

    if args.projection != "view":
        print(f"error: unknown projection {args.projection!r} (the single-table view is `view`)", file=sys.stderr)
        return 2
    with storage():
        client, prefix = db.get_client(), get_settings().table_prefix
        active = active_view_version(client, get_settings().control_table, cached=False)
        out: dict[str, Any] = {"active_before": active}
        if not args.no_rebuild:
            out["rebuild"] = vars(replay.rebuild(client, prefix, args.version))
        if args.compare:
            other = args.against if args.against is not None else active
            cmp = replay.compare(client, prefix, other, args.version)
            out["compare"] = cmp.to_dict()
            if args.promote and not cmp.equal and not args.force:
                print(json.dumps(out, indent=2))
                print("not promoting: versions differ (use --force after checking the differences)", file=sys.stderr)
                return 1
        if args.promote:
            out["promote"] = vars(replay.promote(client, prefix, args.version))
            out["active_after"] = args.version
        print(json.dumps(out, indent=2, default=str))
    return 0


def register(subparsers: Any) -> None:
    """Add ``status``, ``mappings`` and ``dlq`` to the ``streamfold`` command line."""
    st = subparsers.add_parser("status", help="mappings, shard checkpoints, iterator age / lag")
    st.set_defaults(func=cmd_status)

    mp = subparsers.add_parser("mappings", help="list / swap / disable / enable the local mappings")
    msub = mp.add_subparsers(dest="mappings_cmd", required=True)
    for name, help_ in (("list", "show mappings"), ("swap", "blue/green retarget keeping the position"),
                        ("disable", "disable and wait for Disabled"), ("enable", "enable and wait for Enabled")):
        p = msub.add_parser(name, help=help_)
        p.add_argument("--uuid", help="one mapping (default: all mappings of --function)")
        p.add_argument("--function", default=None if name == "list" else "projector",
                       help="function name (base or name:colour)")
        p.add_argument("--timeout", type=float, default=60.0)
        if name == "swap":
            p.add_argument("--to", required=True, choices=["blue", "green"])
        p.set_defaults(func=cmd_mappings)

    rp = subparsers.add_parser("replay", help="rebuild a projection version from the day tables, compare, promote")
    rp.add_argument("projection", help="projection to rebuild: `view` (accounts, users, catalog, scores)")
    rp.add_argument("--version", type=int, required=True, help="target view version (table <prefix>view-vN)")
    rp.add_argument("--compare", action="store_true", help="diff against the active version (or --against)")
    rp.add_argument("--against", type=int, default=None)
    rp.add_argument("--promote", action="store_true", help="make it active, then catch up with the newest days")
    rp.add_argument("--force", action="store_true", help="promote even if the comparison found differences")
    rp.add_argument("--no-rebuild", action="store_true", help="only compare / promote")
    rp.set_defaults(func=cmd_replay)

    dq = subparsers.add_parser("dlq", help="dead-lettered batches of the local mappings")
    dsub = dq.add_subparsers(dest="dlq_cmd", required=True)
    for name, help_ in (("list", "list dead-lettered batches"),
                        ("redrive", "send them to the mapping's current function again")):
        p = dsub.add_parser(name, help=help_)
        p.add_argument("--uuid")
        p.add_argument("--function", default=None)
        p.set_defaults(func=cmd_dlq)
