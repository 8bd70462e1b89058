"""Public paths: the nearest served path of a 404, CORS of the ingest routes, SDK settings, where traits are read."""

from __future__ import annotations

import json

import pytest

from app import INGEST_CORS, app
from cfn.generate import compute_extras_template, not_found_gateway_response
from chalicelib.ingest import message_traits
from chalicelib.paths import INGEST_ALLOW_HEADERS, INGEST_PATHS, METRICS_PATH, SETTINGS_PATH, nearest, not_found
from chalicelib.sdk_settings import api_host, settings_document

SERVED = {path: list(methods) for path, methods in app.routes.items()}


@pytest.mark.parametrize(("method", "path", "expected"), [
    ("POST", "/v1/trak", "/v1/track"),
    ("POST", "/v1/Batch/", "/v1/batch"),
    ("POST", "/track", "/v1/track"),
    ("POST", "/v1/identify/extra", "/v1/identify"),
    ("GET", "/api/accounts/acme/user", "/api/accounts/{account_id}/users"),
    ("GET", "/api/scoremodel", "/api/score-model"),
    ("GET", "/asset/app.js", "/assets/{name}"),
])
def test_nearest_served_path(method: str, path: str, expected: str) -> None:
    assert nearest(path, method, SERVED) == expected


def test_not_found_body_names_the_path_and_the_nearest() -> None:
    body = not_found("post", "/v1/tarck?x=1", SERVED).body()
    assert body["success"] is False and body["code"] == "not_found"
    assert (body["path"], body["nearest"], body["field"]) == ("/v1/tarck", "/v1/track", "path")
    assert body["message"] == "no such path: POST /v1/tarck; the nearest served path is POST /v1/track"
    long = not_found("GET", "/" + "x" * 5000, SERVED).body()
    assert len(long["path"]) <= 203


def test_every_public_path_allows_any_origin_and_the_browser_headers() -> None:
    for path in [*INGEST_PATHS, METRICS_PATH, SETTINGS_PATH]:
        for entry in app.routes[path].values():
            assert entry.cors == INGEST_CORS, path
    headers = INGEST_CORS.get_access_control_headers()
    assert headers["Access-Control-Allow-Origin"] == "*"
    assert set(INGEST_ALLOW_HEADERS) <= set(headers["Access-Control-Allow-Headers"].split(","))
    assert headers["Access-Control-Expose-Headers"] == "Retry-After"
    # ... and no private route does.
    assert all(e.cors != INGEST_CORS for p, m in app.routes.items() if p.startswith("/api/") for e in m.values())


def test_api_host_as_the_client_reached_it() -> None:
    assert api_host({"host": "127.0.0.1:8080"}, "/v1/projects/wk/settings") == ("127.0.0.1:8080/v1", "http")
    gateway = {"Host": "abc123.execute-api.eu-west-1.amazonaws.com", "X-Forwarded-Proto": "https"}
    assert api_host(gateway, "/api/v1/projects/wk/settings") == (
        "abc123.execute-api.eu-west-1.amazonaws.com/api/v1", "https")
    assert api_host({"Host": "events.example.com", "X-Forwarded-Proto": "https"}, "/v1/projects/wk/settings") == (
        "events.example.com/v1", "https")


def test_settings_document_names_streamfold_and_nothing_else() -> None:
    doc = settings_document("wk_1", "events.example.com/v1", "https")
    assert doc["integrations"] == {"Segment.io": {
        "apiKey": "wk_1", "apiHost": "events.example.com/v1", "protocol": "https", "unbundledIntegrations": [],
        "addBundledMetadata": True, "maybeBundledConfigIds": {}}}
    assert doc["remotePlugins"] == [] and doc["metrics"] == {"sampleRate": 0}


@pytest.mark.parametrize(("message", "expected"), [
    ({"type": "identify", "traits": {"a": 1}, "context": {"traits": {"b": 2}}}, ({"a": 1}, "traits")),
    ({"type": "identify", "context": {"traits": {"b": 2}}}, ({"b": 2}, "context.traits")),
    ({"type": "identify", "traits": None, "context": {"traits": {"b": 2}}}, ({"b": 2}, "context.traits")),
    ({"type": "identify", "traits": {}, "context": {"traits": {"b": 2}}}, ({}, "traits")),
    ({"type": "group", "context": {"traits": {"b": 2}}}, ({"b": 2}, "context.traits")),
    ({"type": "track", "context": {"traits": {"b": 2}}}, ({"b": 2}, "context.traits")),
    ({"type": "page", "context": {"traits": {"b": 2}}}, ({}, "traits")),
    ({"type": "alias", "context": {"traits": {"b": 2}}}, ({}, "traits")),
    ({"type": ["identify"], "context": {"traits": {"b": 2}}}, ({}, "traits")),
    ({"type": "identify", "context": {"traits": "x"}}, ({}, "traits")),
])
def test_where_traits_are_read(message: dict[str, object], expected: tuple[dict[str, object], str]) -> None:
    assert message_traits(message) == expected


def test_aws_answers_unknown_paths_with_the_same_404() -> None:
    extras = compute_extras_template()["Resources"]["RestAPI"]["Properties"]["DefinitionBody"]
    response = extras["x-amazon-apigateway-gateway-responses"]["MISSING_AUTHENTICATION_TOKEN"]
    assert response == not_found_gateway_response()
    assert response["statusCode"] == "404"
    assert response["responseParameters"]["gatewayresponse.header.Access-Control-Allow-Origin"] == "'*'"
    # What API Gateway substitutes is still JSON, naming the method and path and the public paths.
    text = response["responseTemplates"]["application/json"]
    body = json.loads(text.replace("$context.httpMethod", "POST").replace("$context.path", "/api/v1/tarck"))
    assert (body["code"], body["path"]) == ("not_found", "/api/v1/tarck")
    assert "POST /api/v1/tarck" in body["message"]
    assert {f"POST {p}" for p in INGEST_PATHS} <= set(body["served"])
