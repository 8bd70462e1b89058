"""The dashboard in a real browser against the demo stack: sign in, accounts, account charts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

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
