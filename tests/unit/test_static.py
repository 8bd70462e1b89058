"""chalicelib.static.serve: content types, caching, 404 JSON, no path traversal."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from chalice import Chalice
from chalice.test import Client

from chalicelib import static
from chalicelib.static import serve

CHART_JS = static.VENDOR["chart.umd.js"][0]


def _json(resp) -> dict:  # type: ignore[no-untyped-def]
    return json.loads(resp.body)


@pytest.mark.parametrize(
    ("path", "ctype", "cache"),
    [
        ("index.html", "text/html; charset=utf-8", "no-cache"),
        ("app.js", "text/javascript; charset=utf-8", static.CACHE_ASSET),
        ("api.js", "text/javascript; charset=utf-8", static.CACHE_ASSET),
        ("app.css", "text/css; charset=utf-8", static.CACHE_ASSET),
    ],
)
def test_serves_dashboard_files(path: str, ctype: str, cache: str) -> None:
    resp = serve(path)
    assert resp.status_code == 200
    assert resp.headers["Content-Type"] == ctype
    assert resp.headers["Cache-Control"] == cache
    assert resp.headers["ETag"].startswith('"')
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    assert resp.body == (static.DASHBOARD_DIR / path).read_text(encoding="utf-8")


def test_index_has_security_headers_and_references_assets() -> None:
    resp = serve("index.html")
    assert "frame-ancestors 'none'" in resp.headers["Content-Security-Policy"]
    assert resp.headers["X-Frame-Options"] == "DENY"
    for ref in ('href="assets/app.css"', 'src="assets/app.js"', 'src="vendor/chart.umd.js"'):
        assert ref in resp.body


def test_every_module_import_is_servable() -> None:
    """Each ``./x.js`` a dashboard module imports must be a file serve() returns."""

    for js in static.DASHBOARD_DIR.glob("*.js"):
        for name in re.findall(r'from "\./([^"]+)"', js.read_text(encoding="utf-8")):
            assert serve(name).status_code == 200, (js.name, name)


@pytest.mark.skipif(not CHART_JS.is_file(), reason="run `npm install` for node_modules/chart.js")
def test_vendor_chart_js_from_node_modules() -> None:
    resp = serve("vendor/chart.umd.js")
    assert resp.status_code == 200
    assert resp.headers["Content-Type"] == "text/javascript; charset=utf-8"
    assert resp.headers["Cache-Control"] == static.CACHE_VENDOR
    assert "Chart" in resp.body[:2000] and len(resp.body) > 100_000


def test_vendor_falls_back_to_packaged_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    copy = tmp_path / "chart.umd.js"
    copy.write_text("/* chart */", encoding="utf-8")
    monkeypatch.setitem(static.VENDOR, "chart.umd.js", (tmp_path / "missing.js", copy))
    resp = serve("vendor/chart.umd.js")
    assert resp.status_code == 200 and resp.body == "/* chart */"


def test_etag_revalidation_gives_304() -> None:
    etag = serve("app.js").headers["ETag"]
    resp = serve("app.js", if_none_match=f'W/"other", {etag}')
    assert resp.status_code == 304
    assert resp.body == ""
    assert serve("app.js", if_none_match='"stale"').status_code == 200


@pytest.mark.parametrize(
    "path",
    [
        "nope.js",
        "",
        ".",
        "..",
        "../static.py",
        "..%2Fstatic.py",
        "../../app.py",
        "/etc/passwd",
        "dashboard/index.html",
        "./index.html",
        "assets/app.js",
        "..\\static.py",
        "index.html\x00.js",
        ".gitignore",
        "static.py",
        "vendor/",
        "vendor/../static.py",
        "vendor/../../app.py",
        "vendor/chart.js",
        "vendor/chart.umd.js/../../package.json",
        "vendor/%2e%2e/package.json",
        "x" * 5000 + ".js",
    ],
)
def test_unknown_and_traversal_paths_are_404_json(path: str) -> None:
    resp = serve(path)
    assert resp.status_code == 404
    assert resp.headers["Content-Type"] == "application/json"
    body = _json(resp)
    assert body["code"] == "not_found"
    assert isinstance(body["message"], str) and len(body["message"]) < 200


def test_symlink_out_of_the_dashboard_is_not_served(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("top secret", encoding="utf-8")
    dash = tmp_path / "dashboard"
    dash.mkdir()
    (dash / "leak.txt").symlink_to(secret)
    (dash / "ok.txt").write_text("fine", encoding="utf-8")
    monkeypatch.setattr(static, "DASHBOARD_DIR", dash)
    assert serve("ok.txt").status_code == 200
    resp = serve("leak.txt")
    assert resp.status_code == 404 and "top secret" not in resp.body


def test_through_chalice_routes() -> None:
    """The wiring app.py uses, end to end through Chalice's test client."""
    app = Chalice(app_name="static-test")

    @app.route("/")
    def index():  # type: ignore[no-untyped-def]
        return serve("index.html")

    @app.route("/assets/{name}")
    def assets(name: str):  # type: ignore[no-untyped-def]
        return serve(name)

    @app.route("/vendor/{name}")
    def vendor(name: str):  # type: ignore[no-untyped-def]
        return serve("vendor/" + name)

    with Client(app) as client:
        resp = client.http.get("/")
        assert resp.status_code == 200 and resp.headers["Content-Type"].startswith("text/html")
        assert b"streamfold" in resp.body
        resp = client.http.get("/assets/app.css")
        assert resp.status_code == 200 and resp.headers["Content-Type"].startswith("text/css")
        resp = client.http.get("/assets/..%2F..%2Fapp.py")
        assert resp.status_code == 404 and json.loads(resp.body)["code"] == "not_found"
        resp = client.http.get("/vendor/nothing.js")
        assert resp.status_code == 404
        if CHART_JS.is_file():
            assert client.http.get("/vendor/chart.umd.js").status_code == 200
