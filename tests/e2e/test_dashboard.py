"""The dashboard in a real browser against the demo stack: sign in, accounts, account charts."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests

from chalicelib import services

pytestmark = pytest.mark.e2e

CHARTS = ["chart-gauge", "chart-score-history", "chart-factors", "chart-usage", "chart-active-users"]

# True once every chart canvas has a Chart.js instance, a non-zero size and painted pixels.
CHARTS_DRAWN = """(ids) => ids.every((id) => {
  const c = document.querySelector(`[data-testid="${id}"]`);
  if (!c || !window.Chart || !Chart.getChart(c) || !c.width || !c.height) return false;
  const r = c.getBoundingClientRect();
  if (r.width < 50 || r.height < 50) return false;
  const px = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
  for (let i = 3; i < px.length; i += 4 * 7) if (px[i] !== 0) return true;
  return false;
})"""


def _unexpected(problems: list[str]) -> list[str]:
    # The wrong-token and stale-token steps make the browser log their 401 responses.
    return [p for p in problems if "401" not in p]


def test_dashboard_sign_in_accounts_and_account_charts(
    demo_stack: dict[str, Any], browser_page: Any, output_dir: Path
) -> None:
    page = browser_page
    url = demo_stack["url"].rstrip("/") + "/"

    # --- sign-in: a wrong token is refused with a message
    page.goto(url)
    page.wait_for_selector("[data-testid=token-input]", state="visible")
    page.fill("[data-testid=token-input]", "at_definitely-not-a-token")
    page.click("[data-testid=signin-submit]")
    page.wait_for_selector("#signin-message:not([hidden])")
    assert "not accepted" in page.inner_text("#signin-message")
    assert page.evaluate("sessionStorage.length") == 0

    # --- sign in for real: demo accounts are listed, least healthy first
    page.fill("[data-testid=token-input]", demo_stack["api_token"])
    page.click("[data-testid=signin-submit]")
    page.wait_for_selector("[data-testid=account-row]")
    assert page.evaluate("Object.values(sessionStorage)") == [demo_stack["api_token"]]
    rows = page.locator("[data-testid=account-row]")
    assert rows.count() > 0
    page.wait_for_function(
        "() => [...document.querySelectorAll('[data-testid=summary-tiles] .tile-value')]"
        ".every((e) => /^\\d/.test(e.textContent.trim()))"
    )
    total = int(page.inner_text("[data-testid=tile-all] .tile-value").rstrip("+").replace(",", ""))
    assert total >= rows.count() or rows.count() >= 50
    scores = [int(s) for s in page.locator("[data-testid=account-row] .score-num").all_inner_texts()]
    assert scores == sorted(scores), "default order is score ascending"
    page.wait_for_timeout(300)  # let the tiles' numbers settle before the picture
    page.screenshot(path=str(output_dir / "accounts.png"), full_page=True)

    # --- sorting by name is done by the server and re-renders the table
    page.click("th button[data-sort=name]")
    page.wait_for_selector("th.sorted button[data-sort=name]")
    page.wait_for_selector("[data-testid=account-row]")

    # --- open a scored account: header, score and every chart drawn by Chart.js
    target = page.locator("[data-testid=account-row][data-scored=true]").first
    if target.count() == 0:
        target = rows.first
    account_id = target.get_attribute("data-account-id")
    target.locator(".acct-name").click()
    page.wait_for_url("**#/accounts/*")
    assert account_id and page.evaluate("decodeURIComponent(location.hash.split('/')[2])") == account_id
    page.wait_for_selector("[data-testid=account-name]")
    assert page.inner_text("[data-testid=account-name]").strip()
    page.wait_for_function(CHARTS_DRAWN, arg=CHARTS)
    for chart_id in CHARTS:
        box = page.locator(f"[data-testid={chart_id}]").bounding_box()
        assert box and box["width"] > 50 and box["height"] > 50, chart_id
    page.wait_for_selector("[data-testid=factor]")
    page.wait_for_selector("[data-testid=timeline-item]")
    page.wait_for_selector("[data-testid=user-row]")
    page.wait_for_timeout(2000)  # chart animations (1 s by default) finish before the picture
    page.screenshot(path=str(output_dir / "account.png"), full_page=True)

    # --- the usage days selector reloads the usage charts
    page.click("[data-testid=days-selector] button[data-days='90']")
    page.wait_for_function(
        "() => (Chart.getChart(document.querySelector('[data-testid=chart-usage]'))?.data.labels.length || 0) >= 90"
    )

    # --- pipeline status
    page.click("a[data-nav=status]")
    page.wait_for_selector("[data-testid=status-mappings]")
    page.screenshot(path=str(output_dir / "status.png"), full_page=True)

    # --- a token the API stops accepting sends the user back to sign-in with a message
    page.evaluate("Object.keys(sessionStorage).forEach((k) => sessionStorage.setItem(k, 'at_revoked'))")
    page.goto(url + "#/")
    page.reload()
    page.wait_for_selector("#signin-message:not([hidden])")
    assert "sign in again" in page.inner_text("#signin-message").lower()
    assert page.evaluate("sessionStorage.length") == 0

    # --- sign out clears the token
    page.fill("[data-testid=token-input]", demo_stack["api_token"])
    page.click("[data-testid=signin-submit]")
    page.wait_for_selector("[data-testid=account-row]")
    page.click("[data-testid=signout]")
    page.wait_for_selector("[data-testid=token-input]", state="visible")
    assert page.evaluate("sessionStorage.length") == 0

    assert _unexpected(page.problems) == []


def _segment_style_tenant(url: str) -> dict[str, Any]:
    """A tenant sending the usual Segment pattern: identify + group once, then tracks with no groupId."""
    creds = services.tenants().create("Membership Co")
    now = datetime.now(UTC)
    batch: list[dict[str, Any]] = []
    n = 0
    for a in range(3):
        for u in range(4):
            uid = f"m{a}-{u}"
            ts = (now - timedelta(days=20)).isoformat()
            batch.append({"type": "identify", "messageId": f"i-{uid}", "userId": uid, "timestamp": ts,
                          "traits": {"name": f"Member {uid}", "email": f"{uid}@example.com"}})
            batch.append({"type": "group", "messageId": f"g-{uid}", "userId": uid, "groupId": f"mc-{a}",
                          "timestamp": ts, "traits": {"name": f"Member Co {a}", "plan": "pro"}})
            for d in range(0, 14 - 4 * a):  # account 0 busiest, account 2 quietest
                if (u + d) % (a + 1) == 0:
                    n += 1
                    batch.append({"type": "track", "messageId": f"t{n}", "userId": uid, "event": "Report Created",
                                  "timestamp": (now - timedelta(days=d, hours=1)).isoformat()})
    r = requests.post(f"{url}/v1/batch", json={"batch": batch}, auth=(creds["write_key"], ""), timeout=30)
    assert r.status_code == 200, r.text
    return creds


def test_dashboard_shows_the_api_numbers_for_usage_attributed_by_group_membership(
    demo_stack: dict[str, Any], browser_page: Any, output_dir: Path
) -> None:
    url = demo_stack["url"].rstrip("/")
    creds = _segment_style_tenant(url)
    auth = {"Authorization": f"Bearer {creds['api_token']}"}

    def api_accounts() -> list[dict[str, Any]]:
        return requests.get(f"{url}/api/accounts", headers=auth, timeout=30).json()["items"]

    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        items = api_accounts()
        if len(items) == 3 and all(a["active_users_30d"] == 4 and a["score"] for a in items):
            break
        time.sleep(0.5)
    items = api_accounts()
    # The tracks carry no groupId: every account's usage, active users and score come from membership.
    assert sorted(a["account_id"] for a in items) == ["mc-0", "mc-1", "mc-2"]
    assert all(a["users_count"] == 4 and a["active_users_30d"] == 4 and a["score"] > 0 for a in items), items

    page = browser_page
    page.goto(url + "/")
    page.fill("[data-testid=token-input]", creds["api_token"])
    page.click("[data-testid=signin-submit]")
    page.wait_for_selector("[data-testid=account-row]")
    rows = page.locator("[data-testid=account-row]")
    assert rows.count() == 3
    shown = {}
    for i in range(3):
        row = rows.nth(i)
        cells = row.locator("td")
        shown[row.get_attribute("data-account-id")] = (
            int(row.locator(".score-num").inner_text()),
            cells.nth(6).inner_text().replace(" ", ""),
        )
    assert shown == {a["account_id"]: (a["score"], f"{a['active_users_7d']}/{a['active_users_30d']}")
                     for a in items}

    # The account page: the same numbers as /api/accounts/{id}, and users with their identify traits.
    detail = requests.get(f"{url}/api/accounts/mc-0", headers=auth, timeout=30).json()
    page.locator("[data-testid=account-row][data-account-id=mc-0] .acct-name").click()
    page.wait_for_selector("[data-testid=account-name]")
    page.wait_for_selector("[data-testid=user-row]")
    stats = dict(zip(page.locator(".stat .stat-label").all_inner_texts(),
                     page.locator(".stat .stat-value").all_inner_texts(), strict=False))
    assert stats["Users"] == str(detail["users_count"]) == "4"
    assert (stats["Active 7d"], stats["Active 30d"]) == (str(detail["active_users"]["7d"]),
                                                         str(detail["active_users"]["30d"]))
    page.wait_for_function("() => document.querySelectorAll('[data-testid=user-row]').length === 4")
    users_text = " ".join(page.locator("[data-testid=user-row]").all_inner_texts())
    assert all(f"m0-{u}@example.com" in users_text for u in range(4)), users_text
    page.screenshot(path=str(output_dir / "membership-account.png"), full_page=True)
    assert _unexpected(page.problems) == []
