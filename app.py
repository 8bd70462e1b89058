"""Chalice wiring only: routes and Lambda entry points. The API's work lives in chalicelib/, the stream side's in
streams/."""

from __future__ import annotations

from urllib.parse import unquote

from chalice import Chalice, CORSConfig, Rate
from chalice.app import Request

from chalicelib import paths, services
from chalicelib.errors import ApiError, FieldError
from chalicelib.http import basic_auth_user, bearer_token, handle_errors, json_response
from chalicelib.ingest import decode_body, parse_request
from chalicelib.openapi import document
from chalicelib.sdk_settings import api_host, settings_document
from chalicelib.settings import get_settings
from chalicelib.static import serve
from chalicelib.tenants import hash_secret
from streams import handler, replay_task, rotation
from streams.alerts import drain_outbox
from streams.rescore import rescore_all, settle_all
from streams.status import tenant_status

app = Chalice(app_name="streamfold")
# No binary media type for JSON or text: with one, Chalice (and API Gateway) refuse every request whose
# Accept header does not name it. Gzip request bodies are decompressed in front of the app instead: by
# API Gateway's request decompression on AWS (`minimum_compression_size` in .chalice/config.json), by
# tooling/server.py locally. `decode_body` still inflates a gzip body that reaches it (a direct invoke).

# analytics.js posts `text/plain` (no CORS preflight for the type), `navigator.sendBeacon` a string as
# `text/plain;charset=UTF-8`: every one of them is read as JSON.
INGEST_TYPES = ["application/json", "text/plain", "application/octet-stream"]

# The private API answers browsers of the dashboard's origin only (STREAMFOLD_DASHBOARD_ORIGIN, read when
# the app is loaded: on AWS a Lambda environment variable, locally `streamfold up`'s own URL). The public
# ingest API allows `*`: Segment's browser SDK posts from every customer website, and a write key only writes.
API_CORS = CORSConfig(allow_origin=get_settings().dashboard_origin, allow_headers=["Authorization"], max_age=600)
INGEST_CORS = CORSConfig(allow_origin="*", allow_headers=list(paths.INGEST_ALLOW_HEADERS),
                         expose_headers=list(paths.INGEST_EXPOSE_HEADERS), max_age=paths.INGEST_MAX_AGE)


def _request() -> Request:
    req = app.current_request
    if req is None:  # Chalice sets it for the duration of each HTTP request
        raise RuntimeError("no current request")
    return req


def _ingest(kind: str, path: str | None = None):  # type: ignore[no-untyped-def]
    req = _request()
    body = decode_body(req.raw_body, req.headers.get("content-encoding"))
    parsed = parse_request(body, kind, path)
    key = basic_auth_user(req.headers.get("authorization")) or parsed.write_key
    if not key:
        raise ApiError(401, "unauthorized", "missing write key: send it as the HTTP Basic user name or `writeKey`",
                       [FieldError("Authorization", "missing write key")], {"WWW-Authenticate": "Basic"})
    limiter = services.rate_limiter()
    verdict = limiter.take(hash_secret(key))
    if not verdict.allowed:
        raise ApiError(429, "rate_limited", f"too many requests for this write key; retry in {verdict.retry_after}s",
                       [FieldError("Authorization", "rate limit of the write key", limit=limiter.describe())],
                       {"Retry-After": str(verdict.retry_after)})
    tenant_id = services.tenants().resolve(key, "write")
    if tenant_id is None:
        raise ApiError(401, "unauthorized", "invalid write key", [FieldError("Authorization", "invalid write key")],
                       {"WWW-Authenticate": "Basic"})
    services.ingestor().ingest(tenant_id, parsed)
    return json_response({"success": True})


@app.route("/v1/batch", methods=["POST"], content_types=INGEST_TYPES, cors=INGEST_CORS)
@handle_errors
def v1_batch():  # type: ignore[no-untyped-def]
    return _ingest("batch")


@app.route("/v1/track", methods=["POST"], content_types=INGEST_TYPES, cors=INGEST_CORS)
@handle_errors
def v1_track():  # type: ignore[no-untyped-def]
    return _ingest("track")


@app.route("/v1/identify", methods=["POST"], content_types=INGEST_TYPES, cors=INGEST_CORS)
@handle_errors
def v1_identify():  # type: ignore[no-untyped-def]
    return _ingest("identify")


@app.route("/v1/group", methods=["POST"], content_types=INGEST_TYPES, cors=INGEST_CORS)
@handle_errors
def v1_group():  # type: ignore[no-untyped-def]
    return _ingest("group")


@app.route("/v1/page", methods=["POST"], content_types=INGEST_TYPES, cors=INGEST_CORS)
@handle_errors
def v1_page():  # type: ignore[no-untyped-def]
    return _ingest("page")


@app.route("/v1/screen", methods=["POST"], content_types=INGEST_TYPES, cors=INGEST_CORS)
@handle_errors
def v1_screen():  # type: ignore[no-untyped-def]
    return _ingest("screen")


@app.route("/v1/alias", methods=["POST"], content_types=INGEST_TYPES, cors=INGEST_CORS)
@handle_errors
def v1_alias():  # type: ignore[no-untyped-def]
    return _ingest("alias")


# The older name of /v1/batch (analytics-ruby, analytics-java), and the short paths of analytics.js and the
# mobile SDKs (chalicelib/paths.py): each is its long form.


@app.route("/v1/import", methods=["POST"], content_types=INGEST_TYPES, cors=INGEST_CORS)
@handle_errors
def v1_import():  # type: ignore[no-untyped-def]
    return _ingest("batch", "/v1/import")


@app.route("/v1/b", methods=["POST"], content_types=INGEST_TYPES, cors=INGEST_CORS)
@handle_errors
def v1_b():  # type: ignore[no-untyped-def]
    return _ingest("batch", "/v1/b")


@app.route("/v1/t", methods=["POST"], content_types=INGEST_TYPES, cors=INGEST_CORS)
@handle_errors
def v1_t():  # type: ignore[no-untyped-def]
    return _ingest("track", "/v1/t")


@app.route("/v1/i", methods=["POST"], content_types=INGEST_TYPES, cors=INGEST_CORS)
@handle_errors
def v1_i():  # type: ignore[no-untyped-def]
    return _ingest("identify", "/v1/i")


@app.route("/v1/g", methods=["POST"], content_types=INGEST_TYPES, cors=INGEST_CORS)
@handle_errors
def v1_g():  # type: ignore[no-untyped-def]
    return _ingest("group", "/v1/g")


@app.route("/v1/p", methods=["POST"], content_types=INGEST_TYPES, cors=INGEST_CORS)
@handle_errors
def v1_p():  # type: ignore[no-untyped-def]
    return _ingest("page", "/v1/p")


@app.route("/v1/s", methods=["POST"], content_types=INGEST_TYPES, cors=INGEST_CORS)
@handle_errors
def v1_s():  # type: ignore[no-untyped-def]
    return _ingest("screen", "/v1/s")


@app.route("/v1/a", methods=["POST"], content_types=INGEST_TYPES, cors=INGEST_CORS)
@handle_errors
def v1_a():  # type: ignore[no-untyped-def]
    return _ingest("alias", "/v1/a")


@app.route(paths.METRICS_PATH, methods=["POST"], content_types=INGEST_TYPES, cors=INGEST_CORS)
@handle_errors
def v1_metrics():  # type: ignore[no-untyped-def]
    """analytics.js's own telemetry (no write key): read like any body (limits, JSON), then dropped."""
    req = _request()
    decode_body(req.raw_body, req.headers.get("content-encoding"))
    return json_response({"success": True})


@app.route(paths.SETTINGS_PATH, methods=["GET"], cors=INGEST_CORS)
@handle_errors
def v1_project_settings(write_key):  # type: ignore[no-untyped-def]
    """The settings Segment's browser and mobile SDKs load first, naming this API as their host."""
    req = _request()
    key = unquote(write_key)
    if services.tenants().resolve(key, "write") is None:
        raise ApiError(404, "unknown_write_key", "no tenant has this write key (`streamfold tenant create`)",
                       [FieldError("write_key", "unknown write key")])
    host, protocol = api_host(req.headers, str(req.context.get("path") or ""))
    return json_response(settings_document(key, host, protocol), headers={"Cache-Control": "public, max-age=300"})


# --- private query API (Authorization: Bearer <api_token>; tenant from the token only) ---


def _reader() -> str:
    token = bearer_token(_request().headers.get("authorization"))
    if not token:
        raise ApiError(401, "unauthorized", "missing API token: send `Authorization: Bearer <api_token>`",
                       [FieldError("Authorization", "missing bearer token")], {"WWW-Authenticate": "Bearer"})
    tenant_id = services.tenants().resolve(token, "read")
    if tenant_id is None:
        raise ApiError(401, "unauthorized", "invalid API token", [FieldError("Authorization", "invalid token")],
                       {"WWW-Authenticate": "Bearer"})
    return tenant_id


def _params() -> dict[str, str]:
    return dict(_request().query_params or {})


@app.route("/api/accounts", methods=["GET"], cors=API_CORS)
@handle_errors
def api_accounts():  # type: ignore[no-untyped-def]
    return json_response(services.query().list_accounts(_reader(), _params()))


@app.route("/api/accounts/{account_id}", methods=["GET"], cors=API_CORS)
@handle_errors
def api_account(account_id):  # type: ignore[no-untyped-def]
    return json_response(services.query().get_account(_reader(), unquote(account_id)))


@app.route("/api/accounts/{account_id}/users", methods=["GET"], cors=API_CORS)
@handle_errors
def api_account_users(account_id):  # type: ignore[no-untyped-def]
    return json_response(services.query().account_users(_reader(), unquote(account_id), _params()))


@app.route("/api/accounts/{account_id}/timeline", methods=["GET"], cors=API_CORS)
@handle_errors
def api_account_timeline(account_id):  # type: ignore[no-untyped-def]
    return json_response(services.query().account_timeline(_reader(), unquote(account_id), _params()))


@app.route("/api/accounts/{account_id}/usage", methods=["GET"], cors=API_CORS)
@handle_errors
def api_account_usage(account_id):  # type: ignore[no-untyped-def]
    return json_response(services.query().account_usage(_reader(), unquote(account_id), _params()))


@app.route("/api/accounts/{account_id}/score", methods=["GET"], cors=API_CORS)
@handle_errors
def api_account_score(account_id):  # type: ignore[no-untyped-def]
    return json_response(services.query().account_score(_reader(), unquote(account_id), _params()))


@app.route("/api/score-model", methods=["GET"], cors=API_CORS)
@handle_errors
def api_score_model_get():  # type: ignore[no-untyped-def]
    return json_response(services.query().get_model(_reader()))


@app.route("/api/score-model", methods=["PUT"], content_types=["application/json"], cors=API_CORS)
@handle_errors
def api_score_model_put():  # type: ignore[no-untyped-def]
    tenant_id = _reader()
    req = _request()
    body = decode_body(req.raw_body, req.headers.get("content-encoding"))
    return json_response(services.query().put_model(tenant_id, body, handler.get_writer()))


@app.route("/api/search", methods=["GET"], cors=API_CORS)
@handle_errors
def api_search():  # type: ignore[no-untyped-def]
    return json_response(services.query().search(_reader(), _params()))


@app.route("/api/status", methods=["GET"], cors=API_CORS)
@handle_errors
def api_status():  # type: ignore[no-untyped-def]
    return json_response(services.query().status(tenant_status(_reader())))


@app.route("/api/openapi.json", methods=["GET"], cors=API_CORS)
@handle_errors
def api_openapi():  # type: ignore[no-untyped-def]
    return json_response(document())


# --- dashboard (static files) ---


@app.route("/", methods=["GET"])
def dashboard_index():  # type: ignore[no-untyped-def]
    return serve("index.html", if_none_match=_request().headers.get("if-none-match"))


@app.route("/assets/{name}", methods=["GET"])
def dashboard_asset(name):  # type: ignore[no-untyped-def]
    return serve(name, if_none_match=_request().headers.get("if-none-match"))


@app.route("/vendor/{name}", methods=["GET"])
def dashboard_vendor(name):  # type: ignore[no-untyped-def]
    return serve("vendor/" + name, if_none_match=_request().headers.get("if-none-match"))


# --- the projector function (target of the day tables' event source mappings) ---


@app.lambda_function(name="projector")
def on_day_table_records(event, context):  # type: ignore[no-untyped-def]
    return handler.on_day_table_records(event, context)


@app.schedule(Rate(1, unit=Rate.HOURS))
def rescore_accounts(event):  # type: ignore[no-untyped-def]
    """Recompute every account's score: time passing changes recency and trends."""
    return rescore_all()


@app.schedule(Rate(1, unit=Rate.MINUTES))
def settle_pages(event):  # type: ignore[no-untyped-def]
    """Fold due delta pages into the per-account items (the listing, scores and alerts follow)."""
    return settle_all()


# --- scheduled functions (rotation) ---


@app.schedule(Rate(1, unit=Rate.HOURS))
def rotate_tables(event):  # type: ignore[no-untyped-def]
    """Create today's and tomorrow's event tables and their stream mappings (idempotent)."""
    return rotation.run().to_dict()
# --- end scheduled functions (rotation) ---


# --- scheduled functions (score-alert outbox) ---


@app.schedule(Rate(1, unit=Rate.MINUTES))
def on_outbox_schedule(event):  # type: ignore[no-untyped-def]
    """Publish pending score alerts to SNS once each; failed ones stay pending for the next run."""
    return drain_outbox()


# --- the replay on AWS (tasks of the state machine <stack>-replay: cfn/compute-extras.json) ---


@app.lambda_function(name="replay_plan")
def replay_plan(event, context):  # type: ignore[no-untyped-def]
    """Every replay step but the fold: prepare, ids (per scan segment), assign, spool (per segment), finish."""
    return replay_task.plan_task(event, context)


@app.lambda_function(name="replay_fold")
def replay_fold(event, context):  # type: ignore[no-untyped-def]
    """A Distributed Map's batch of partitions folded into the view version (streams.replay.fold_partitions)."""
    return replay_task.fold_task(event, context)
