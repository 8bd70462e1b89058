"""Server-side Segment and RudderStack SDKs, the real packages (npm, PyPI), against the running local stack:
every request answered 200, every usage event counted by the projector, the user listed with its traits — read
back through the private API. docs/CLIENTS.md's table reports these runs (its versions are checked against what
is installed); its Node and RudderStack snippets run here as written, only the host and write key swapped in.
"""

from __future__ import annotations

import json
import re
import subprocess
from datetime import UTC, datetime, timedelta
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest
from rudderstack.analytics import Client as RudderClient
from segment.analytics import Client as SegmentClient

from chalicelib import services
from tests.helpers.api import account_users, api_get, wait_for_usage

pytestmark = pytest.mark.timeout(180)

ROOT = Path(__file__).resolve().parents[2]
CLIENTS = ROOT / "docs" / "CLIENTS.md"
NODE_DRIVER = ROOT / "tests" / "helpers" / "segment_node.cjs"
DOC_HOST, DOC_KEY = "https://streamfold.example.com", "wk_..."


def _node(script: Path | None, stdin: str) -> subprocess.CompletedProcess[str]:
    args = ["node", str(script)] if script else ["node", "-"]
    return subprocess.run(args, input=stdin, capture_output=True, text=True, timeout=60, cwd=ROOT, check=False)


def _lines(out: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def test_segment_analytics_node(live_stack: dict[str, Any]) -> None:
    url, creds = live_stack["url"], services.tenants().create("Node Co")
    calls: list[list[Any]] = [
        ["identify", {"userId": "ada-node", "traits": {"name": "Ada Node", "email": "ada@node.example"}}],
        ["group", {"userId": "ada-node", "groupId": "acct-node", "traits": {"name": "Node Inc", "plan": "pro"}}],
        *[["track", {"userId": "ada-node", "event": "Report Created", "properties": {"rows": i}}] for i in range(3)],
    ]
    proc = _node(NODE_DRIVER, json.dumps({"writeKey": creds["write_key"], "host": url, "calls": calls}))
    seen = _lines(proc.stdout)
    assert proc.returncode == 0 and [s for s in seen if "error" in s] == [], proc.stdout + proc.stderr
    assert [(s["status"], s["url"]) for s in seen] == [(200, f"{url}/v1/batch")]
    assert [m["type"] for m in json.loads(seen[0]["body"])["batch"]] == ["identify", "group", "track", "track", "track"]

    wait_for_usage(url, creds["api_token"], "acct-node", 3)
    users = account_users(url, creds["api_token"], "acct-node")
    assert [(u["user_id"], u["name"], u["email"]) for u in users] == [("ada-node", "Ada Node", "ada@node.example")]


def test_segment_analytics_python(live_stack: dict[str, Any]) -> None:
    url, creds = live_stack["url"], services.tenants().create("Python Co")
    errors: list[Any] = []
    client = SegmentClient(write_key=creds["write_key"], host=url, sync_mode=True, gzip=True,
                           on_error=lambda e, batch: errors.append(e))
    client.identify("ada-py", {"name": "Ada Py", "email": "ada@py.example"})
    client.group("ada-py", "acct-py", {"name": "Py Inc", "plan": "pro"})
    for i in range(3):
        client.track("ada-py", "Report Created", {"rows": i})
    client.page("ada-py", name="Reports")
    client.flush()
    assert errors == []

    wait_for_usage(url, creds["api_token"], "acct-py", 4)
    users = account_users(url, creds["api_token"], "acct-py")
    assert [(u["user_id"], u["name"], u["email"]) for u in users] == [("ada-py", "Ada Py", "ada@py.example")]


def test_rudder_sdk_python_traits_under_context(live_stack: dict[str, Any]) -> None:
    """rudder-sdk-python sends identify traits only under ``context.traits``; a track may carry them too."""
    url, creds = live_stack["url"], services.tenants().create("Rudder Co")
    errors: list[Any] = []
    client = RudderClient(write_key=creds["write_key"], host=url, sync_mode=True, gzip=True,
                          on_error=lambda e, batch: errors.append(e))
    now = datetime.now(UTC)
    _, sent = client.identify("ada-rudder", {"name": "Ada Rudder", "email": "ada@rudder.example"},
                              timestamp=now - timedelta(minutes=5))
    assert "traits" not in sent and sent["context"]["traits"]["email"] == "ada@rudder.example"  # what it sends
    client.group("ada-rudder", "acct-rudder", {"name": "Rudder Inc", "plan": "team"},
                 timestamp=now - timedelta(minutes=5))
    client.track("ada-rudder", "Report Created", {"rows": 1}, timestamp=now - timedelta(minutes=4))
    client.track("ada-rudder", "Report Created", {"rows": 2}, timestamp=now - timedelta(minutes=3))
    client.track("ada-rudder", "Report Shared", {}, context={"traits": {"role": "owner"}}, timestamp=now)
    client.flush()
    assert errors == []

    wait_for_usage(url, creds["api_token"], "acct-rudder", 3)
    users = account_users(url, creds["api_token"], "acct-rudder",
                          until=lambda items: any(u["traits"].get("role") for u in items))
    assert [(u["user_id"], u["name"], u["email"], u["traits"]) for u in users] == [
        ("ada-rudder", "Ada Rudder", "ada@rudder.example",
         {"name": "Ada Rudder", "email": "ada@rudder.example", "role": "owner"})]
    account = api_get(url, creds["api_token"], "/api/accounts/acct-rudder").json()
    assert (account["name"], account["plan"]) == ("Rudder Inc", "team")  # group traits stay at the root


def _snippet(lang: str, marker: str) -> str:
    found = [s for s in re.findall(rf"```{lang}\n(.*?)```", CLIENTS.read_text(), re.S) if marker in s]
    assert len(found) == 1, f"docs/CLIENTS.md: one ```{lang} snippet with {marker!r}"
    snippet = found[0]
    assert DOC_HOST in snippet and DOC_KEY in snippet
    return snippet


def test_clients_md_node_and_rudderstack_snippets_run_as_written(live_stack: dict[str, Any]) -> None:
    url, creds = live_stack["url"], services.tenants().create("Docs Co")
    node = _snippet("js", "@segment/analytics-node").replace(DOC_HOST, url).replace(DOC_KEY, creds["write_key"])
    proc = _node(None, node)
    assert proc.returncode == 0, proc.stdout + proc.stderr

    rudder = _snippet("python", "rudderstack").replace(DOC_HOST, url).replace(DOC_KEY, creds["write_key"])
    rudder = rudder.replace('"user-1"', '"ada-docs"').replace('"acct-1"', '"acct-docs"')
    namespace: dict[str, Any] = {}
    exec(compile(rudder, "docs/CLIENTS.md", "exec"), namespace)  # our own documentation, nothing untrusted
    namespace["client"].shutdown()  # stop its upload thread

    # Both snippets track one event for their account; the Node one names acct-1.
    wait_for_usage(url, creds["api_token"], "acct-1", 1)
    wait_for_usage(url, creds["api_token"], "acct-docs", 1)
    users = account_users(url, creds["api_token"], "acct-docs")
    assert [(u["user_id"], u["email"]) for u in users] == [("ada-docs", "ada@example.com")]


def test_clients_md_names_the_versions_installed() -> None:
    """The table of SDKs tried names the versions `make setup` installs (npm lock file, pip)."""
    table = CLIENTS.read_text().split("## SDKs tried", 1)[1].split("\n## ", 1)[0]
    lock = json.loads((ROOT / "package-lock.json").read_text())["packages"]
    installed = {name: lock[f"node_modules/{name}"]["version"]
                 for name in ("@segment/analytics-next", "@segment/analytics-node")}
    installed.update({name: version(name) for name in ("segment-analytics-python", "rudder-sdk-python")})
    for name, wanted in installed.items():
        rows = [row for row in table.splitlines() if row.startswith(f"| `{name}`")]
        assert rows, f"docs/CLIENTS.md has no row for {name}"
        assert all(f"| {wanted} |" in row for row in rows), (name, wanted, rows)
