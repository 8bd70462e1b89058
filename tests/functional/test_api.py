"""The private query API over a projected demo history: routes, OpenAPI, errors, query costs."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import jsonschema
import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from openapi_spec_validator import validate

from app import app
from chalicelib import db, services
from chalicelib.openapi import document

DOC = document()


def get(stack: dict[str, Any], path: str, token: str | None = "default", **params: Any) -> requests.Response:
    headers = {}
    if token == "default":
        token = stack["api_token"]
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return requests.get(stack["url"] + path, params=params, headers=headers, timeout=30)


def check_schema(body: Any, schema_name: str) -> None:
    schema = {"$ref": f"#/components/schemas/{schema_name}", "components": DOC["components"]}
    jsonschema.Draft202012Validator(schema).validate(body)


@pytest.fixture
def calls(demo_stack: dict[str, Any]) -> Iterator[Counter[str]]:
    """DynamoDB operations made while serving requests (the server runs in this process)."""
    seen: Counter[str] = Counter()

    def record(event_name: str, **_: Any) -> None:
        # Only calls made to serve HTTP requests (request threads and the view store's pools),
        # not the background mapping runtime's polling and lease renewals.
        name = threading.current_thread().name
        if "process_request" in name or name.startswith("view"):
            seen[event_name.rsplit(".", 1)[-1]] += 1

    events = db.get_client().meta.events
    events.register("before-call.dynamodb", record)
    yield seen
    events.unregister("before-call.dynamodb", record)


def test_openapi_document_is_valid_and_covers_every_route(demo_stack: dict[str, Any]) -> None:

    served = get(demo_stack, "/api/openapi.json", token=None)
    assert served.status_code == 200
    validate(served.json())
    for path, entry in app.routes.items():
        assert path in DOC["paths"], f"{path} missing from OpenAPI"
        for method in entry:
            assert method.lower() in DOC["paths"][path], f"{method} {path} missing from OpenAPI"
    # ...and nothing documented that is not routed.
    assert set(DOC["paths"]) == set(app.routes)


def test_accounts_sorted_filtered_paginated(demo_stack: dict[str, Any], calls: Counter[str]) -> None:
    body = get(demo_stack, "/api/accounts", limit=200).json()
    check_schema(body, "AccountList")
    items = body["items"]
    assert len(items) == demo_stack["accounts"] and body["next_cursor"] is None
    scores = [i["score"] for i in items]
    assert scores == sorted(scores), "default: least healthy first"
    assert {i["band"] for i in items} <= {"red", "yellow", "green"}
    by_name = [i["name"].casefold() for i in get(demo_stack, "/api/accounts", sort="name", limit=200).json()["items"]]
    assert by_name == sorted(by_name)
    seen = [i["last_seen"] for i in get(demo_stack, "/api/accounts", sort="last_seen", limit=200).json()["items"]]
    assert seen == sorted(seen, reverse=True)
    active = [i["active_users_30d"] for i in
              get(demo_stack, "/api/accounts", sort="active_users", limit=200).json()["items"]]
    assert active == sorted(active, reverse=True)
    # Filters: band, plan, any trait.
    reds = get(demo_stack, "/api/accounts", band="red", limit=200).json()["items"]
    assert reds and all(i["band"] == "red" for i in reds)
    assert len(reds) == sum(1 for i in items if i["band"] == "red")
    plan = items[0]["plan"]
    planned = get(demo_stack, "/api/accounts", plan=plan, limit=200).json()["items"]
    assert planned and all(i["plan"] == plan for i in planned)
    industry = items[0]["traits"]["industry"]
    by_trait = get(demo_stack, "/api/accounts", **{"trait.industry": industry, "limit": 200}).json()["items"]
    assert by_trait and all(i["traits"]["industry"] == industry for i in by_trait)
    assert len(by_trait) == sum(1 for i in items if i["traits"].get("industry") == industry)
    # Cursor pagination visits every account once.
    ids: list[str] = []
    cursor = None
    while True:
        page = get(demo_stack, "/api/accounts", limit=7, **({"cursor": cursor} if cursor else {})).json()
        ids += [i["account_id"] for i in page["items"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert sorted(ids) == sorted(i["account_id"] for i in items) and len(ids) == len(set(ids))
    assert calls["Scan"] == 0
    # The listing is read from the indexes' projected attributes alone (tables.LISTING_ATTRIBUTES):
    # it says what the account page (the SUMMARY item itself) says.
    for it in items[:5]:
        detail = get(demo_stack, f"/api/accounts/{it['account_id']}").json()
        detail["score"] = detail["score"]["score"]
        assert {k: detail[k] for k in it} == it


def test_account_detail_endpoints(demo_stack: dict[str, Any], calls: Counter[str]) -> None:
    items = get(demo_stack, "/api/accounts", sort="active_users", limit=1).json()["items"]
    acct = items[0]["account_id"]
    calls.clear()
    detail = get(demo_stack, f"/api/accounts/{acct}").json()
    check_schema(detail, "Account")
    assert detail["account_id"] == acct and detail["users_count"] >= 1
    assert [f["name"] for f in detail["key_features"]] == [
        "Report Created", "Dashboard Shared", "Integration Connected", "Workflow Automated", "Export Downloaded"]
    assert calls["Scan"] == 0 and sum(calls.values()) <= 6, calls
    users = get(demo_stack, f"/api/accounts/{acct}/users", limit=2).json()
    check_schema(users, "UserList")
    assert users["items"] and all(u["user_id"].startswith("user_") for u in users["items"])
    assert all(u["last_seen"] and u["first_seen"] <= u["last_seen"] for u in users["items"])
    # Timeline: newest first across pages, no repeats.
    stamps: list[str] = []
    ids: list[str] = []
    cursor = None
    for _ in range(4):
        page = get(demo_stack, f"/api/accounts/{acct}/timeline", limit=15,
                   **({"cursor": cursor} if cursor else {})).json()
        check_schema(page, "Timeline")
        stamps += [e["timestamp"] for e in page["items"]]
        ids += [e["messageId"] for e in page["items"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert len(stamps) >= 15 and stamps == sorted(stamps, reverse=True) and len(ids) == len(set(ids))
    usage = get(demo_stack, f"/api/accounts/{acct}/usage", days=7).json()
    check_schema(usage, "Usage")
    assert len(usage["days"]) == 7 and all(len(s["counts"]) == 7 for s in usage["series"])
    score = get(demo_stack, f"/api/accounts/{acct}/score").json()
    check_schema(score, "Score")
    assert sum(f["points"] for f in score["factors"]) == score["score"]
    assert len(score["history"]) == 30 and score["history"][-1]["score"] == score["score"]
    assert calls["Scan"] == 0


def test_errors(demo_stack: dict[str, Any]) -> None:
    r = get(demo_stack, "/api/accounts/acct_does_not_exist")
    assert r.status_code == 404 and r.json()["code"] == "not_found"
    assert get(demo_stack, "/api/accounts/" + "x" * 5000).status_code == 404  # longer than any stored id
    r = get(demo_stack, "/api/accounts", **{"trait.industry": "y" * 5000})
    assert r.status_code == 400 and r.json()["field"] == "trait.industry"
    assert get(demo_stack, "/api/accounts", token=None).status_code == 401
    assert get(demo_stack, "/api/accounts", token="at_wrong").status_code == 401
    assert get(demo_stack, "/api/accounts", token=demo_stack["write_key"]).status_code == 401  # write-only key
    for params, field in [({"limit": 201}, "limit"), ({"limit": "x"}, "limit"), ({"sort": "mrr"}, "sort"),
                          ({"order": "up"}, "order"), ({"band": "blue"}, "band"), ({"cursor": "!!"}, "cursor"),
                          ({"colour": "x"}, "colour")]:
        r = get(demo_stack, "/api/accounts", **params)
        assert r.status_code == 400 and r.json()["field"] == field, (params, r.text)
        check_schema(r.json(), "Error")
    acct = get(demo_stack, "/api/accounts", limit=1).json()["items"][0]["account_id"]
    r = get(demo_stack, f"/api/accounts/{acct}/usage", days=0)
    assert r.status_code == 400 and r.json()["field"] == "days"
    assert get(demo_stack, "/api/search").status_code == 400
    # Another tenant's token sees nothing of this tenant: 404, not 403 (no existence leak).
    other = services.tenants().create("Other Co")
    r = get(demo_stack, f"/api/accounts/{acct}", token=other["api_token"])
    assert r.status_code == 404
    assert get(demo_stack, "/api/accounts", token=other["api_token"]).json()["items"] == []


def test_score_model_get_put_versioned_and_rescored(demo_stack: dict[str, Any]) -> None:
    url = demo_stack["url"] + "/api/score-model"
    auth = {"Authorization": f"Bearer {demo_stack['api_token']}"}
    current = requests.get(url, headers=auth, timeout=30).json()
    check_schema(current, "ScoreModel")
    bad = requests.put(url, json={**current, "green_from": 500}, headers=auth, timeout=30)
    assert bad.status_code == 400 and bad.json()["field"] == "green_from", bad.text
    bad = requests.put(url, json={"factors": [{"name": "karma", "weight": 3}]}, headers=auth, timeout=30)
    assert bad.status_code == 400 and "factors" in bad.json()["field"], bad.text
    assert requests.put(url, data="{", headers={**auth, "Content-Type": "application/json"},
                        timeout=30).status_code == 400
    before = {i["account_id"]: i["score"] for i in get(demo_stack, "/api/accounts", limit=200).json()["items"]}
    only_recency = {**current, "factors": [{"name": "recency", "weight": 1}]}
    r = requests.put(url, json=only_recency, headers=auth, timeout=120)
    assert r.status_code == 200, r.text
    check_schema(r.json(), "ScoreModelSaved")
    assert r.json()["model"]["version"] == current["version"] + 1 and r.json()["rescored"] > 0
    after = {i["account_id"]: i["score"] for i in get(demo_stack, "/api/accounts", limit=200).json()["items"]}
    assert after != before
    detail = get(demo_stack, f"/api/accounts/{next(iter(after))}/score").json()
    assert [f["name"] for f in detail["factors"] if f["weight"]] == ["recency"]
    assert detail["model_version"] == current["version"] + 1
    # Put the default weights back for the other tests of this module.
    assert requests.put(url, json={k: v for k, v in current.items() if k != "version"}, headers=auth,
                        timeout=120).status_code == 200


def test_search_and_status(demo_stack: dict[str, Any]) -> None:
    acct = get(demo_stack, "/api/accounts", limit=1).json()["items"][0]
    found = get(demo_stack, "/api/search", q=acct["name"][:4]).json()
    check_schema(found, "Search")
    assert any(i["kind"] == "account" and i["id"] == acct["account_id"] for i in found["items"])
    status = get(demo_stack, "/api/status").json()
    check_schema(status, "Status")
    assert any(m["function"].startswith("projector") and m["state"] == "Enabled" for m in status["mappings"])


PARAM_KEYS = ["sort", "order", "band", "plan", "limit", "cursor", "trait.plan", "trait.seats", "days", "q", "x"]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(params=st.dictionaries(st.sampled_from(PARAM_KEYS), st.text(max_size=40), max_size=4),
       account=st.text(min_size=1, max_size=40),
       path=st.sampled_from(["", "/users", "/timeline", "/usage", "/score"]))
def test_no_client_input_gets_a_5xx(demo_stack: dict[str, Any], params: dict[str, str], account: str,
                                    path: str) -> None:
    r = get(demo_stack, "/api/accounts", **params)
    assert r.status_code in (200, 400), r.text
    r = get(demo_stack, f"/api/accounts/{quote(account, safe='')}{path}", **params)
    assert r.status_code in (200, 400, 404), r.text
    if r.status_code != 200:
        check_schema(r.json(), "Error")
    r = get(demo_stack, "/api/search", **params)
    assert r.status_code in (200, 400), r.text
