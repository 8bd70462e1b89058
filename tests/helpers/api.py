"""Reading back through the private API what an SDK sent: counted usage, listed users (no pytest imports)."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import requests

__all__ = ["account_users", "api_get", "wait_for_usage"]


def api_get(url: str, token: str, path: str, **params: Any) -> requests.Response:
    return requests.get(f"{url}{path}", params=params, headers={"Authorization": f"Bearer {token}"}, timeout=30)


def _today_total(url: str, token: str, account_id: str) -> int | None:
    r = api_get(url, token, f"/api/accounts/{account_id}/usage", days=2)
    if r.status_code == 404:
        return None
    r.raise_for_status()
    body = r.json()
    today = datetime.now(UTC).date().isoformat()
    return sum(n for day, n in zip(body["days"], body["totals"], strict=True) if day == today)


def wait_for_usage(url: str, token: str, account_id: str, expected: int, timeout: float = 60.0) -> int:
    """Today's counted usage events of an account, once it reaches ``expected`` (then held for a moment, so
    that a count *over* the expectation shows); ``AssertionError`` naming the last count otherwise."""
    deadline = time.monotonic() + timeout
    total: int | None = None
    while time.monotonic() < deadline:
        total = _today_total(url, token, account_id)
        if total is not None and total >= expected:
            time.sleep(1.0)  # a few more batches of the projector, if anything else was coming
            total = _today_total(url, token, account_id)
            break
        time.sleep(0.25)
    assert total == expected, f"{account_id}: {total} usage events counted, expected {expected}"
    return total


def account_users(url: str, token: str, account_id: str,
                  until: Callable[[list[dict[str, Any]]], bool] = lambda items: any(u.get("traits") for u in items),
                  timeout: float = 30.0) -> list[dict[str, Any]]:
    """The account's listed users (``/api/accounts/{id}/users``), once ``until`` holds for them (or the last
    list read when it never does: the caller's assertion then shows what was listed)."""
    deadline = time.monotonic() + timeout
    items: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        r = api_get(url, token, f"/api/accounts/{account_id}/users")
        if r.status_code == 200:
            items = r.json()["items"]
            if until(items):
                return items
        time.sleep(0.25)
    return items
