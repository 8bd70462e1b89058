"""OpenAPI 3 description of the public ingest API and the private query API.

A test checks that every Chalice route is described here and validates real responses against
these schemas, so this document cannot drift from the code.
"""

from __future__ import annotations

from typing import Any

from chalicelib.paths import INGEST_PATHS, METRICS_PATH, SETTINGS_PATH, SHORT_PATHS

__all__ = ["document", "SCHEMAS"]

_str = {"type": "string"}
_nstr = {"type": ["string", "null"]}
_int = {"type": "integer"}
_nint = {"type": ["integer", "null"]}
_band = {"type": ["string", "null"], "enum": ["red", "yellow", "green", None]}
_cursor = {"type": ["string", "null"], "description": "opaque; pass as `cursor` for the next page"}

SCHEMAS: dict[str, Any] = {
    "Error": {"type": "object", "required": ["success", "code", "message"], "properties": {
        "success": {"const": False}, "code": _str, "message": _str, "field": _str, "index": _int,
        "limit": {}, "errors": {"type": "array", "items": {"type": "object"}}}},
    "Success": {"type": "object", "required": ["success"], "properties": {"success": {"const": True}}},
    "Message": {"type": "object", "required": ["type"], "additionalProperties": True, "properties": {
        "type": {"enum": ["track", "identify", "group", "page", "screen", "alias"]}, "messageId": _str,
        "userId": _str, "anonymousId": _str, "groupId": _str, "event": _str, "name": _str, "previousId": _str,
        "timestamp": {"type": "string", "format": "date-time"}, "sentAt": {"type": "string", "format": "date-time"},
        "properties": {"type": "object"}, "traits": {"type": "object"}, "context": {"type": "object"}}},
    "Batch": {"type": "object", "required": ["batch"], "properties": {
        "batch": {"type": "array", "maxItems": 2500, "items": {"$ref": "#/components/schemas/Message"}},
        "sentAt": {"type": "string", "format": "date-time"}, "writeKey": _str, "context": {"type": "object"}}},
    "AccountListItem": {"type": "object", "required": ["account_id", "name", "score", "band", "trend", "last_seen",
                                                       "active_users_7d", "active_users_30d", "plan", "traits"],
                        "properties": {
        "account_id": _str, "name": _str, "score": _nint, "band": _band, "trend": _nint, "last_seen": _nstr,
        "first_seen": _nstr, "active_users_1d": _int, "active_users_7d": _int, "active_users_30d": _int,
        "users_count": _int, "plan": _nstr, "traits": {"type": "object"}}},
    "AccountList": {"type": "object", "required": ["items", "next_cursor"], "properties": {
        "items": {"type": "array", "items": {"$ref": "#/components/schemas/AccountListItem"}},
        "next_cursor": _cursor}},
    "Account": {"type": "object", "required": ["account_id", "name", "traits", "active_users", "score",
                                               "key_features", "users_count"], "properties": {
        "account_id": _str, "name": _str, "band": _band, "trend": _nint, "last_seen": _nstr, "first_seen": _nstr,
        "active_users_1d": _int, "active_users_7d": _int, "active_users_30d": _int, "users_count": _int,
        "plan": _nstr, "traits": {"type": "object"},
        "active_users": {"type": "object", "required": ["1d", "7d", "30d"], "properties": {
            "1d": _int, "7d": _int, "30d": _int}},
        "score": {"type": "object", "properties": {"score": _nint, "band": _band, "trend": _nint}},
        "key_features": {"type": "array", "items": {"type": "object", "required": ["name", "count"],
                                                     "properties": {"name": _str, "count": _int,
                                                                    "active_days": _int, "last_used": _nstr}}},
        "key_features_wau": {"type": ["object", "null"], "additionalProperties": _int,
                             "description": "View version 3: distinct users of each key feature in the 7 days "
                                            "ending today (a HyperLogLog estimate above 16 users a day); null on "
                                            "a version 2 view"}}},
    "UserList": {"type": "object", "required": ["items", "next_cursor"], "properties": {
        "items": {"type": "array", "items": {"type": "object", "required": ["user_id", "traits"], "properties": {
            "user_id": _str, "name": _nstr, "email": _nstr, "traits": {"type": "object"}, "first_seen": _nstr,
            "last_seen": _nstr}}},
        "next_cursor": _cursor}},
    "Timeline": {"type": "object", "required": ["items", "next_cursor"], "properties": {
        "items": {"type": "array", "items": {"type": "object", "required": ["messageId", "type", "timestamp"],
                                             "properties": {"messageId": _str, "type": _str, "name": _nstr,
                                                            "timestamp": _str, "userId": _nstr}}},
        "next_cursor": _cursor}},
    "Usage": {"type": "object", "required": ["days", "series", "active_users"], "properties": {
        "days": {"type": "array", "items": _str},
        "series": {"type": "array", "items": {"type": "object", "required": ["name", "counts"], "properties": {
            "name": _str, "counts": {"type": "array", "items": _int}}}},
        "active_users": {"type": "array", "items": _int}, "totals": {"type": "array", "items": _int}}},
    "Score": {"type": "object", "required": ["score", "band", "trend", "as_of", "model_version", "factors", "history"],
              "properties": {
        "account_id": _str, "name": _nstr, "score": _int, "band": _band, "trend": _int, "as_of": _str,
        "model_version": _int,
        "factors": {"type": "array", "items": {"type": "object", "required": ["name", "weight", "points"],
                                               "properties": {"name": _str, "label": _str, "weight": {"type": "number"},
                                                              "raw": {"type": ["number", "null"]},
                                                              "normalised": {"type": "number"}, "points": _int,
                                                              "applicable": {"type": "boolean"},
                                                              "value": {"type": ["number", "null"]},
                                                              "detail": _str}}},
        "history": {"type": "array", "items": {"type": "object", "required": ["date", "score", "band"],
                                               "properties": {"date": _str, "score": _int, "band": _band}}},
        "thresholds": {"type": "object"}}},
    "ScoreModel": {"type": "object", "properties": {
        "version": _int, "factors": {"type": "array", "items": {"type": "object", "required": ["name", "weight"],
                                                                 "properties": {"name": _str,
                                                                                "weight": {"type": "number"}}}},
        "yellow_from": _int, "green_from": _int, "key_features": {"type": "array", "items": _str},
        "alert_drop": _int, "cooldown_hours": _int}},
    "ScoreModelSaved": {"type": "object", "required": ["model", "rescored"], "properties": {
        "model": {"$ref": "#/components/schemas/ScoreModel"}, "rescored": _int}},
    "Search": {"type": "object", "required": ["items"], "properties": {
        "items": {"type": "array", "items": {"type": "object", "required": ["kind", "id", "name"], "properties": {
            "kind": {"enum": ["account", "user"]}, "id": _str, "name": _nstr, "account_id": _nstr, "score": _nint,
            "band": _band}}}}},
    "Status": {"type": "object", "required": ["mappings", "projections"], "properties": {
        "mappings": {"type": "array", "items": {"type": "object", "required": ["uuid", "function", "state"],
                                                "properties": {"uuid": _str, "function": _str, "state": _str,
                                                               "lag_records": _int, "iterator_age_ms": _int,
                                                               "dead_letters": _int}}},
        "projections": {"type": "array", "items": {"type": "object"}}, "time": _str}},
}


def _resp(schema: str, extra: dict[str, str] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"200": {"description": "OK", "content": {"application/json": {
        "schema": {"$ref": f"#/components/schemas/{schema}"}}}}}
    for code, text in {"400": "bad parameter", "401": "missing or invalid credentials", **(extra or {})}.items():
        out[code] = {"description": text, "content": {"application/json": {"schema": {
            "$ref": "#/components/schemas/Error"}}}}
    return out


def _q(name: str, schema: dict[str, Any], text: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema, "description": text}


_ID = {"name": "account_id", "in": "path", "required": True, "schema": _str}
_PAGE = [_q("limit", {"type": "integer", "minimum": 1, "maximum": 200}, "page size"),
         _q("cursor", _str, "next_cursor of the previous page")]
_404 = {"404": "unknown account (or another tenant's)"}


def _ingest(path: str, kind: str) -> dict[str, Any]:
    schema = {"$ref": "#/components/schemas/Batch" if kind == "batch" else "#/components/schemas/Message"}
    summary = f"Segment HTTP Tracking API: {kind}"
    if path != f"/v1/{kind}":
        summary += f" ({'short' if path in SHORT_PATHS else 'older'} form of /v1/{kind}, the same semantics)"
    return {"post": {
        "summary": summary, "tags": ["ingest"], "security": [{"writeKey": []}],
        "description": "Write key as the HTTP Basic user name or `writeKey` in the body. `text/plain` bodies "
                       "(analytics.js, `navigator.sendBeacon`) are read as JSON; `Content-Encoding: gzip` accepted.",
        "requestBody": {"required": True, "content": {t: {"schema": schema} for t in (
            "application/json", "text/plain")}},
        "responses": _resp("Success")}}


def document() -> dict[str, Any]:
    """The OpenAPI 3.1 document."""
    acct = "/api/accounts/{account_id}"
    paths: dict[str, Any] = {path: _ingest(path, kind) for path, kind in INGEST_PATHS.items()}
    paths.update({
        METRICS_PATH: {"post": {
            "summary": "analytics.js telemetry: accepted and dropped", "tags": ["ingest"], "security": [],
            "requestBody": {"required": True, "content": {t: {"schema": {"type": "object"}} for t in (
                "application/json", "text/plain")}},
            "responses": _resp("Success")}},
        SETTINGS_PATH: {"get": {
            "summary": "SDK settings (what analytics.js and the mobile SDKs load from Segment's CDN)",
            "tags": ["ingest"], "security": [],
            "parameters": [{"name": "write_key", "in": "path", "required": True, "schema": _str}],
            "responses": {"200": {"description": "settings naming this API as the SDK's apiHost",
                                  "content": {"application/json": {"schema": {"type": "object"}}}},
                          "404": {"description": "unknown write key", "content": {"application/json": {
                              "schema": {"$ref": "#/components/schemas/Error"}}}}}}},
    })
    paths.update({
        "/api/accounts": {"get": {"summary": "List accounts", "tags": ["query"], "parameters": [
            _q("sort", {"enum": ["score", "last_seen", "active_users", "name"]}, "sort key (default score)"),
            _q("order", {"enum": ["asc", "desc"]}, "default: score asc (worst first), others desc/asc"),
            _q("band", {"enum": ["red", "yellow", "green"]}, "filter by band"),
            _q("plan", _str, "filter by plan trait"), *_PAGE,
        ], "description": "Any `trait.<name>=<value>` query parameter filters on that trait.",
            "responses": _resp("AccountList")}},
        acct: {"get": {"summary": "One account", "tags": ["query"], "parameters": [_ID],
                       "responses": _resp("Account", _404)}},
        f"{acct}/users": {"get": {"summary": "Users of an account", "tags": ["query"], "parameters": [_ID, *_PAGE],
                                  "responses": _resp("UserList", _404)}},
        f"{acct}/timeline": {"get": {"summary": "Recent events, newest first", "tags": ["query"],
                                     "parameters": [_ID, *_PAGE], "responses": _resp("Timeline", _404)}},
        f"{acct}/usage": {"get": {"summary": "Daily events per name", "tags": ["query"], "parameters": [
            _ID, _q("days", {"type": "integer", "minimum": 1, "maximum": 90}, "window (default 30)")],
            "responses": _resp("Usage", _404)}},
        f"{acct}/score": {"get": {"summary": "Score, band, why, history", "tags": ["query"], "parameters": [
            _ID, _q("days", {"type": "integer", "minimum": 1, "maximum": 90}, "history length (default 30)")],
            "responses": _resp("Score", _404)}},
        "/api/score-model": {
            "get": {"summary": "The tenant's current score model", "tags": ["query"],
                    "responses": _resp("ScoreModel")},
            "put": {"summary": "Store a new score model version and rescore", "tags": ["query"],
                    "requestBody": {"required": True, "content": {"application/json": {"schema": {
                        "$ref": "#/components/schemas/ScoreModel"}}}},
                    "responses": _resp("ScoreModelSaved")}},
        "/api/search": {"get": {"summary": "Search accounts and users", "tags": ["query"], "parameters": [
            {"name": "q", "in": "query", "required": True, "schema": _str},
            _q("limit", {"type": "integer", "minimum": 1, "maximum": 100}, "max results")],
            "responses": _resp("Search")}},
        "/api/status": {"get": {"summary": "Mappings, lag, projection versions", "tags": ["query"],
                                "responses": _resp("Status")}},
        "/api/openapi.json": {"get": {"summary": "This document", "tags": ["meta"], "security": [],
                                      "responses": {"200": {"description": "OpenAPI document"}}}},
        "/": {"get": {"summary": "Dashboard", "tags": ["dashboard"], "security": [],
                      "responses": {"200": {"description": "HTML"}}}},
        "/assets/{name}": {"get": {"summary": "Dashboard asset", "tags": ["dashboard"], "security": [],
                                   "parameters": [{"name": "name", "in": "path", "required": True, "schema": _str}],
                                   "responses": {"200": {"description": "file"}, "404": {"description": "none"}}}},
        "/vendor/{name}": {"get": {"summary": "Vendored library (Chart.js)", "tags": ["dashboard"], "security": [],
                                   "parameters": [{"name": "name", "in": "path", "required": True, "schema": _str}],
                                   "responses": {"200": {"description": "file"}, "404": {"description": "none"}}}},
    })
    return {
        "openapi": "3.1.0",
        "info": {"title": "streamfold", "version": "1.0.0",
                 "description": "Segment-compatible ingest and the private customer-success query API."},
        "paths": paths,
        "components": {"schemas": SCHEMAS, "securitySchemes": {
            "writeKey": {"type": "http", "scheme": "basic", "description": "write key as the user name"},
            "apiToken": {"type": "http", "scheme": "bearer"}}},
        "security": [{"apiToken": []}],
    }
