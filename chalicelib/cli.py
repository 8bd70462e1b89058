"""The ``streamfold`` command line."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import Callable, Iterator
from typing import Any

from chalicelib import db, services, tables
from chalicelib.dynamodb_local import DynamoDBLocal, DynamoDBLocalError
from chalicelib.settings import get_settings
from chalicelib.stack import LocalStack, read_stack_file, use_endpoint

__all__ = ["main", "COMMANDS"]

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


def local_components() -> list[Callable[[LocalStack], Any]]:
    """Components ``streamfold up`` starts besides storage and HTTP (mappings, schedulers)."""
    import importlib
    import importlib.util

    from chalicelib.alerts import AlertDeliverer, Outbox
    from chalicelib.jobs import rescorer

    def alerts(stack: LocalStack) -> Any:
        s = get_settings()
        return AlertDeliverer(Outbox(db.get_client(), s.control_table), services.tenants())

    found = []
    if importlib.util.find_spec("streams.local_stack") is not None:
        found += list(importlib.import_module("streams.local_stack").components())
    return found + [alerts, lambda stack: rescorer()]


def cmd_up(args: argparse.Namespace) -> int:
    stack = LocalStack(port=args.port, in_memory=args.in_memory, components=local_components())
    try:
        stack.start()
    except DynamoDBLocalError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"streamfold is up: {stack.http.url}  (DynamoDB: {get_settings().dynamodb_endpoint})", flush=True)
    if args.demo:
        try:
            creds = ensure_demo_tenant()
            print("sending demo traffic through segment-analytics-python ...", flush=True)
            counts = __import__("chalicelib.demo", fromlist=["send"]).send(stack.http.url, creds["write_key"])
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
    from chalicelib.demo import KEY_FEATURES

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
    from chalicelib.demo import send

    with storage() as info:
        url = args.url or (info or {}).get("url")
        if not url:
            print("error: no running stack; start `streamfold up` first or pass --url", file=sys.stderr)
            return 2
        creds = ensure_demo_tenant()
    counts = send(url, creds["write_key"], accounts=args.accounts, days=args.days)
    print(json.dumps(counts))
    print_where_to_look(url, creds)
    return 0


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="streamfold", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    up = sub.add_parser("up", help="start the local stack (DynamoDB Local, mappings, HTTP server)")
    up.add_argument("--port", type=int, default=8080)
    up.add_argument("--in-memory", action="store_true", help="keep DynamoDB Local in memory")
    up.add_argument("--demo", action="store_true", help="send the demo history once the stack is up")
    up.set_defaults(func=cmd_up)

    tenant = sub.add_parser("tenant", help="manage tenants").add_subparsers(dest="tenant_cmd", required=True)
    tc = tenant.add_parser("create", help="create a tenant; prints its tenant_id, write_key and api_token")
    tc.add_argument("name")
    tc.set_defaults(func=cmd_tenant_create)
    tenant.add_parser("list").set_defaults(func=cmd_tenant_list)
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

    for register in _extensions():
        register(sub)
    return p


def _extensions() -> list[Callable[[Any], None]]:
    """Sub-commands contributed by other packages (streams: status, mappings, replay, dlq, bench)."""
    import importlib
    import importlib.util

    return [importlib.import_module(mod).register for mod in ("streams.cli", "chalicelib.bench")
            if importlib.util.find_spec(mod) is not None]


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
