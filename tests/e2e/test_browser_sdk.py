"""Segment's browser SDK (``@segment/analytics-next``, the npm package's standalone build) in headless Chromium,
on a page of *another origin* than the streamfold server, loaded by the web-page snippet of docs/CLIENTS.md.

What is asserted is what the page's network saw (``page.on("response")`` / ``"requestfailed"``), because the
SDK's promises resolve whether or not delivery worked (``test_a_failed_delivery_is_visible_on_the_network``
shows it), and what the private API counts afterwards.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from chalicelib import db, services
from tests.helpers.api import account_users, wait_for_usage
from tests.helpers.events import stored_events
from tests.helpers.origin import StaticOrigin
from tooling.server import GzipRequestHandler

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

ROOT = Path(__file__).resolve().parents[2]
CLIENTS = ROOT / "docs" / "CLIENTS.md"
PACKAGE = ROOT / "node_modules" / "@segment" / "analytics-next"
STANDALONE = PACKAGE / "dist" / "umd" / "standalone.js"
DOC_HOST, DOC_KEY = '"https://streamfold.example.com"', '"wk_..."'
DOC_LIBRARY = '"https://cdn.jsdelivr.net/npm/@segment/analytics-next@{version}/dist/umd/standalone.js"'
SHORT_PATHS = {"/v1/p", "/v1/i", "/v1/g", "/v1/t"}


def snippet(api: str, write_key: str, load_options: dict[str, Any] | None = None) -> str:
    """The docs' web-page snippet, run as written: only the host, the write key, the library's URL (the same
    file, served from this page's origin) and the load options are swapped in."""
    (html,) = re.findall(r"```html\n(.*?)```", CLIENTS.read_text(), re.S)
    version = json.loads((PACKAGE / "package.json").read_text())["version"]
    library = DOC_LIBRARY.format(version=version)
    for text in (DOC_HOST, DOC_KEY, library, "    {}  // load options"):
        assert text in html, f"docs/CLIENTS.md's snippet no longer has {text} (the package is {version})"
    return (html.replace(DOC_HOST, json.dumps(api)).replace(DOC_KEY, json.dumps(write_key))
            .replace(library, '"/analytics.min.js"')
            .replace("    {}  // load options", "    " + json.dumps(load_options or {}) + "  // load options"))


@dataclass
class Network:
    """What the page's network did with requests to the streamfold origin."""

    api: str
    responses: list[tuple[str, str, int, dict[str, str], str | None]] = field(default_factory=list)
    failed: list[tuple[str, str, str | None]] = field(default_factory=list)

    def watch(self, page: Any) -> None:
        def on_response(resp: Any) -> None:
            if resp.url.startswith(self.api):
                req = resp.request
                self.responses.append((req.method, resp.url[len(self.api):], resp.status, resp.headers,
                                       req.post_data))

        def on_failed(req: Any) -> None:
            if req.url.startswith(self.api):
                self.failed.append((req.method, req.url[len(self.api):], req.failure))

        page.on("response", on_response)
        page.on("requestfailed", on_failed)

    def posts(self) -> list[tuple[str, int, dict[str, str], str | None]]:
        return [(path, status, headers, body) for method, path, status, headers, body in self.responses
                if method == "POST"]

    def wait_for_posts(self, page: Any, n: int, timeout_ms: int = 20_000) -> None:
        """Until ``n`` POSTs were answered or failed (the page's event loop runs meanwhile)."""
        self.wait(page, lambda: len(self.posts()) + len([f for f in self.failed if f[0] == "POST"]) >= n, timeout_ms)

    def sent_in_batches(self) -> int:
        """Messages in the answered /v1/b requests."""
        return sum(len(json.loads(body or "{}").get("batch", [])) for path, _, _, body in self.posts()
                   if path == "/v1/b")

    @staticmethod
    def wait(page: Any, done: Callable[[], bool], timeout_ms: int = 20_000) -> None:
        waited = 0
        while not done() and waited < timeout_ms:
            page.wait_for_timeout(100)
            waited += 100


@pytest.fixture
def preflights(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Paths of the CORS preflights (OPTIONS) the streamfold server answered during the test."""
    seen: list[str] = []
    original = GzipRequestHandler.do_OPTIONS

    def counting(handler: Any) -> None:
        seen.append(handler.path)
        original(handler)

    monkeypatch.setattr(GzipRequestHandler, "do_OPTIONS", counting)
    return seen


@pytest.fixture
def page_on_other_origin(chromium: Any, live_stack: dict[str, Any]) -> Iterator[Any]:
    """A fresh browser context's page (empty storage) and a second loopback origin serving the library."""
    assert STANDALONE.is_file(), "run `make setup` (npm ci) for node_modules/@segment/analytics-next"
    with StaticOrigin({"/analytics.min.js": STANDALONE, "/favicon.ico": ""}) as origin:
        assert origin.url != live_stack["url"]
        context = chromium.new_context()
        page = context.new_page()
        page.set_default_timeout(20_000)
        problems: list[str] = []
        page.on("pageerror", lambda exc: problems.append(f"pageerror: {exc}"))
        page.on("console", lambda m: problems.append(f"console.{m.type}: {m.text}") if m.type == "error" else None)
        page.origin = origin  # type: ignore[attr-defined]
        page.problems = problems  # type: ignore[attr-defined]
        try:
            yield page
        finally:
            context.close()


def open_page(page: Any, api: str, write_key: str, load_options: dict[str, Any] | None = None) -> Network:
    page.origin.files["/"] = (f"<!doctype html><html><head><title>Customer app</title>"
                              f"{snippet(api, write_key, load_options)}</head><body>app</body></html>")
    net = Network(api)
    net.watch(page)
    page.goto(page.origin.url + "/")
    page.wait_for_function("() => window.analytics && window.analytics.initialized === true")
    return net


# The calls of a signed-in session: the snippet's page(), then identify, group, tracks and another page.
SESSION = """async ([user, account, tracks]) => {
  const done = [];
  done.push(await analytics.identify(user, {name: "Ada Lovelace", email: user + "@example.com", role: "admin"}));
  done.push(await analytics.group(account, {name: "Example Inc", plan: "pro", seats: 12}));
  for (let i = 0; i < tracks; i++) done.push(await analytics.track("Report Created", {rows: i}));
  done.push(await analytics.page("Reports"));
  return done.length;
}"""


def test_standard_delivery_from_another_origin_is_answered_counted_and_listed(
        page_on_other_origin: Any, live_stack: dict[str, Any], preflights: list[str]) -> None:
    page, api = page_on_other_origin, live_stack["url"]
    creds = services.tenants().create("Browser Co")
    net = open_page(page, api, creds["write_key"])
    tracks = 6
    assert page.evaluate(SESSION, ["ada-std", "acct-std", tracks]) == tracks + 3
    calls = tracks + 4  # the snippet's page() too
    net.wait_for_posts(page, calls)

    assert net.failed == [], net.failed
    settings = [r for r in net.responses if r[0] == "GET"]
    assert [(path.split("/")[-1], status) for _, path, status, _, _ in settings] == [("settings", 200)]
    posts = net.posts()
    assert [status for _, status, _, _ in posts] == [200] * calls, posts
    assert {path for path, *_ in posts} == SHORT_PATHS
    assert all(headers.get("access-control-allow-origin") == "*" for _, _, headers, _ in posts)
    bodies = [json.loads(body or "{}") for *_, body in posts]
    assert all(b["writeKey"] == creds["write_key"] and "sentAt" in b and "_metadata" in b for b in bodies)
    # text/plain with an Authorization header: not a "simple" request, so every path was preflighted.
    assert SHORT_PATHS <= set(preflights), preflights

    usage = tracks + 2  # tracks and pages count; identify and group do not
    wait_for_usage(api, creds["api_token"], "acct-std", usage)
    users = account_users(api, creds["api_token"], "acct-std")
    assert [(u["user_id"], u["name"], u["email"], u["traits"].get("role")) for u in users] == [
        ("ada-std", "Ada Lovelace", "ada-std@example.com", "admin")]
    assert page.problems == []


def test_batching_delivery_is_answered_counted_and_listed(
        page_on_other_origin: Any, live_stack: dict[str, Any], preflights: list[str]) -> None:
    page, api = page_on_other_origin, live_stack["url"]
    creds = services.tenants().create("Batching Co")
    size, tracks = 4, 8
    net = open_page(page, api, creds["write_key"], {"integrations": {"Segment.io": {
        "deliveryStrategy": {"strategy": "batching", "config": {"size": size, "timeout": 300}}}}})
    assert page.evaluate(SESSION, ["ada-bat", "acct-bat", tracks]) == tracks + 3
    calls = tracks + 4
    # A flush starts when `size` messages wait (or `timeout` ms after the first) and takes all that wait then.
    net.wait(page, lambda: net.sent_in_batches() + len(net.failed) >= calls)
    page.wait_for_timeout(500)  # nothing more should come

    assert net.failed == [], net.failed
    posts = net.posts()
    assert {(path, status) for path, status, _, _ in posts} == {("/v1/b", 200)}, posts
    assert 2 <= len(posts) < calls
    assert all(headers.get("access-control-allow-origin") == "*" for _, _, headers, _ in posts)
    batches = [json.loads(body or "{}") for *_, body in posts]
    assert sum(len(b["batch"]) for b in batches) == calls
    assert all(b["writeKey"] == creds["write_key"] and "sentAt" in b for b in batches)
    assert "/v1/b" in preflights

    wait_for_usage(api, creds["api_token"], "acct-bat", tracks + 2)
    users = account_users(api, creds["api_token"], "acct-bat")
    assert [(u["user_id"], u["email"], u["traits"].get("plan")) for u in users] == [
        ("ada-bat", "ada-bat@example.com", None)]  # the user's traits, not the account's
    assert page.problems == []


def test_a_failed_delivery_is_visible_on_the_network(page_on_other_origin: Any, live_stack: dict[str, Any]) -> None:
    """Pointed at a path nobody serves, the SDK's promises still resolve: only the network shows the loss."""
    page, api = page_on_other_origin, live_stack["url"]
    creds = services.tenants().create("Misconfigured Co")
    wrong = api.split("://", 1)[1] + "/v2"
    net = open_page(page, api, creds["write_key"], {"integrations": {"Segment.io": {"apiHost": wrong}}})
    resolved = page.evaluate("""async () => {
      const ctx = await analytics.track("Report Created");
      return {resolved: true, event: ctx.event.event};
    }""")
    assert resolved == {"resolved": True, "event": "Report Created"}
    net.wait_for_posts(page, 2)  # the snippet's page() and the track
    assert [r for r in net.posts() if 200 <= r[1] < 300] == []
    # The preflight of the unknown path answers 404, so the browser blocks the POST itself: no response at all.
    assert {(method, path) for method, path, _ in net.failed} >= {("POST", "/v2/t")}, net.failed
    page.problems.clear()  # the browser logs the blocked requests


def test_send_beacon_bodies_are_read_as_json(page_on_other_origin: Any, live_stack: dict[str, Any]) -> None:
    page, api = page_on_other_origin, live_stack["url"]
    creds = services.tenants().create("Beacon Co")
    open_page(page, api, creds["write_key"])
    sent = page.evaluate("""([api, key]) => {
      const event = (id) => ({writeKey: key, type: "track", userId: "beacon-user", event: "Page Left",
                               messageId: id, sentAt: new Date().toISOString(), _metadata: {transport: "beacon"}});
      return [
        navigator.sendBeacon(api + "/v1/t", JSON.stringify(event("beacon-string"))),
        navigator.sendBeacon(api + "/v1/t", new Blob([JSON.stringify(event("beacon-blob"))], {type: "text/plain"})),
      ];
    }""", [api, creds["write_key"]])
    assert sent == [True, True]
    client = db.get_client()
    wanted = {"beacon-string", "beacon-blob"}
    for _ in range(100):
        got = {e["messageId"] for e in stored_events(client, live_stack["prefix"])
               if e["_tenant"] == creds["tenant_id"]} & wanted
        if got == wanted:
            break
        page.wait_for_timeout(100)
    assert got == wanted
