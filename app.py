"""Chalice wiring only: routes and Lambda entry points. The work lives in chalicelib/."""

from __future__ import annotations

from chalice import Chalice

from chalicelib import services
from chalicelib.errors import ApiError, FieldError
from chalicelib.http import basic_auth_user, handle_errors, json_response
from chalicelib.ingest import decode_body, parse_request

app = Chalice(app_name="streamfold")
# Gzip request bodies must reach the function as bytes on API Gateway too.
app.api.binary_types.extend(["application/json", "text/plain"])

INGEST_TYPES = ["application/json", "text/plain", "application/octet-stream"]


def _ingest(kind: str):  # type: ignore[no-untyped-def]
    req = app.current_request
    body = decode_body(req.raw_body, req.headers.get("content-encoding"))
    parsed = parse_request(body, kind)
    key = basic_auth_user(req.headers.get("authorization")) or parsed.write_key
    if not key:
        raise ApiError(401, "unauthorized", "missing write key: send it as the HTTP Basic user name or `writeKey`",
                       [FieldError("Authorization", "missing write key")], {"WWW-Authenticate": "Basic"})
    tenant_id = services.tenants().resolve(key, "write")
    if tenant_id is None:
        raise ApiError(401, "unauthorized", "invalid write key", [FieldError("Authorization", "invalid write key")],
                       {"WWW-Authenticate": "Basic"})
    services.ingestor().ingest(tenant_id, parsed)
    return json_response({"success": True})


@app.route("/v1/batch", methods=["POST"], content_types=INGEST_TYPES, cors=True)
@handle_errors
def v1_batch():  # type: ignore[no-untyped-def]
    return _ingest("batch")


@app.route("/v1/track", methods=["POST"], content_types=INGEST_TYPES, cors=True)
@handle_errors
def v1_track():  # type: ignore[no-untyped-def]
    return _ingest("track")


@app.route("/v1/identify", methods=["POST"], content_types=INGEST_TYPES, cors=True)
@handle_errors
def v1_identify():  # type: ignore[no-untyped-def]
    return _ingest("identify")


@app.route("/v1/group", methods=["POST"], content_types=INGEST_TYPES, cors=True)
@handle_errors
def v1_group():  # type: ignore[no-untyped-def]
    return _ingest("group")


@app.route("/v1/page", methods=["POST"], content_types=INGEST_TYPES, cors=True)
@handle_errors
def v1_page():  # type: ignore[no-untyped-def]
    return _ingest("page")


@app.route("/v1/screen", methods=["POST"], content_types=INGEST_TYPES, cors=True)
@handle_errors
def v1_screen():  # type: ignore[no-untyped-def]
    return _ingest("screen")


@app.route("/v1/alias", methods=["POST"], content_types=INGEST_TYPES, cors=True)
@handle_errors
def v1_alias():  # type: ignore[no-untyped-def]
    return _ingest("alias")


# --- scheduled functions (rotation) ---
from chalice import Rate

from chalicelib import rotation


@app.schedule(Rate(1, unit=Rate.HOURS))
def rotate_tables(event):  # type: ignore[no-untyped-def]
    """Create today's and tomorrow's event tables and their stream mappings (idempotent)."""
    return rotation.run().to_dict()
# --- end scheduled functions (rotation) ---
