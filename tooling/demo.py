"""A realistic simulated SaaS usage history, sent through the real Segment SDK.

One tenant ("Acme Analytics"), ~200 customer accounts with traits (plan, seats, industry), users per
account on a power law, ~40 event names on a Zipf curve, 30 days of back-dated history. Accounts
get an engagement level and a trajectory (growing, steady, declining, churned) so health scores
spread across the bands.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

__all__ = ["DemoPlan", "build_plan", "send", "KEY_FEATURES", "EVENT_NAMES"]

EVENT_NAMES = [
    "Dashboard Viewed", "Report Viewed", "Search Performed", "Record Created", "Record Updated",
    "Comment Added", "Filter Applied", "Report Created", "Notification Clicked", "File Uploaded",
    "Task Completed", "Dashboard Shared", "Export Downloaded", "Integration Connected", "User Invited",
    "Workflow Automated", "Template Used", "Chart Customized", "Alert Configured", "API Key Created",
    "Segment Created", "Note Pinned", "Calendar Synced", "Tag Added", "Bulk Edit Performed",
    "Import Started", "Import Completed", "Goal Created", "Goal Achieved", "Survey Sent",
    "Playbook Run", "SSO Configured", "Billing Viewed", "Plan Upgraded", "Seat Added",
    "Role Changed", "Webhook Created", "Mobile App Opened", "Help Article Viewed", "Feedback Submitted",
]
KEY_FEATURES = ["Report Created", "Dashboard Shared", "Integration Connected", "Workflow Automated",
                "Export Downloaded"]
PAGES = ["Home", "Accounts", "Reports", "Settings", "Billing", "Integrations"]
INDUSTRIES = ["Software", "Fintech", "Healthcare", "Retail", "Manufacturing", "Education", "Media", "Logistics"]
PLANS = [("free", 0.25, 3), ("starter", 0.35, 10), ("pro", 0.28, 40), ("enterprise", 0.12, 150)]
SYLLABLES = ["ac", "me", "no", "va", "zen", "tri", "lo", "gic", "ful", "cra", "pix", "or", "bit", "ly",
             "sol", "ar", "quan", "tum", "hub", "io", "ver", "ta", "ne", "xo"]
SUFFIXES = ["Inc", "Labs", "Corp", "GmbH", "KK", "Ltd", "Systems", "Health", "Works", "Co"]
FIRST = ["Aiko", "Ben", "Chen", "Dana", "Emi", "Farid", "Greta", "Hiro", "Ines", "Jun", "Kofi", "Lena",
         "Mei", "Noah", "Olga", "Priya", "Quinn", "Ravi", "Sora", "Tom", "Uma", "Vik", "Wen", "Yuki"]
LAST = ["Sato", "Smith", "Kim", "Garcia", "Tanaka", "Muller", "Okafor", "Rossi", "Nguyen", "Ito",
        "Brown", "Suzuki", "Patel", "Silva", "Novak", "Khan"]


@dataclass
class DemoAccount:
    account_id: str
    traits: dict[str, Any]
    users: list[tuple[str, dict[str, Any]]]
    engagement: float
    trajectory: str


@dataclass
class DemoPlan:
    accounts: list[DemoAccount] = field(default_factory=list)
    days: int = 30

    @property
    def user_count(self) -> int:
        return sum(len(a.users) for a in self.accounts)


def _company(rng: random.Random, used: set[str]) -> str:
    while True:
        name = "".join(rng.choice(SYLLABLES) for _ in range(rng.choice([2, 2, 3]))).capitalize()
        full = f"{name} {rng.choice(SUFFIXES)}"
        if full not in used:
            used.add(full)
            return full


def build_plan(seed: int = 7, accounts: int = 200, days: int = 30) -> DemoPlan:
    """Deterministic (seeded) set of accounts and users."""
    rng = random.Random(seed)
    plan = DemoPlan(days=days)
    names: set[str] = set()
    for i in range(accounts):
        plan_name = rng.choices([p[0] for p in PLANS], weights=[p[1] for p in PLANS])[0]
        base_seats = dict((p[0], p[2]) for p in PLANS)[plan_name]
        # Users per account: a power law (Pareto), capped, at least one.
        n_users = max(1, min(60, int(rng.paretovariate(1.3))))
        seats = max(n_users, int(base_seats * rng.uniform(0.6, 1.4)))
        company = _company(rng, names)
        domain = company.split()[0].lower() + ".example"
        acct_id = f"acct_{i:04d}"
        traits = {"name": company, "plan": plan_name, "seats": seats, "industry": rng.choice(INDUSTRIES),
                  "website": f"https://{domain}", "mrr": seats * {"free": 0, "starter": 15, "pro": 35,
                                                                  "enterprise": 60}[plan_name]}
        users = []
        for u in range(n_users):
            first, last = rng.choice(FIRST), rng.choice(LAST)
            uid = f"user_{i:04d}_{u:03d}"
            users.append((uid, {"name": f"{first} {last}", "email": f"{first.lower()}.{last.lower()}{u}@{domain}",
                                "role": rng.choice(["admin", "member", "member", "member", "viewer"])}))
        trajectory = rng.choices(["growing", "steady", "declining", "churned"], weights=[25, 45, 20, 10])[0]
        plan.accounts.append(DemoAccount(acct_id, traits, users, rng.betavariate(2, 2.5), trajectory))
    return plan


def _zipf_weights(n: int, s: float = 1.1) -> list[float]:
    return [1.0 / math.pow(k, s) for k in range(1, n + 1)]


def _activity(acct: DemoAccount, day_index: int, days: int) -> float:
    """Probability a user of this account is active on a day (0 = oldest day)."""
    x = day_index / max(1, days - 1)
    if acct.trajectory == "growing":
        f = 0.5 + 0.8 * x
    elif acct.trajectory == "declining":
        f = 1.2 - 0.9 * x
    elif acct.trajectory == "churned":
        f = 1.0 if x < 0.45 else 0.0
    else:
        f = 1.0
    return max(0.0, min(0.95, acct.engagement * f * 0.6))


def calls(plan: DemoPlan, now: datetime, seed: int = 11) -> Iterator[tuple[str, dict[str, Any]]]:
    """The SDK calls of the history, oldest first: ``(method, kwargs)``."""
    rng = random.Random(seed)
    weights = _zipf_weights(len(EVENT_NAMES))
    start = (now - timedelta(days=plan.days)).replace(hour=0, minute=0, second=0, microsecond=0)
    for acct in plan.accounts:
        t0 = start + timedelta(minutes=rng.randint(0, 600))
        for uid, traits in acct.users:
            yield "identify", {"user_id": uid, "traits": traits, "timestamp": t0}
            yield "group", {"user_id": uid, "group_id": acct.account_id, "traits": acct.traits, "timestamp": t0}
    for d in range(plan.days + 1):
        day = start + timedelta(days=d)
        weekend = day.weekday() >= 5
        for acct in plan.accounts:
            p = _activity(acct, d, plan.days) * (0.35 if weekend else 1.0)
            for uid, _ in acct.users:
                if rng.random() >= p:
                    continue
                n = 1 + int(rng.expovariate(1 / 3))
                for _ in range(n):
                    ts = day + timedelta(hours=rng.uniform(8, 19), seconds=rng.random())
                    if ts >= now:
                        continue
                    ctx = {"groupId": acct.account_id}
                    if rng.random() < 0.2:
                        yield "page", {"user_id": uid, "name": rng.choice(PAGES), "context": ctx, "timestamp": ts,
                                       "properties": {"path": "/" + rng.choice(PAGES).lower()}}
                    else:
                        name = rng.choices(EVENT_NAMES, weights=weights)[0]
                        props: dict[str, Any] = {"plan": acct.traits["plan"], "duration_ms": rng.randint(50, 5000)}
                        if name in KEY_FEATURES:
                            props["feature"] = name.split()[0].lower()
                        if rng.random() < 0.3:
                            props["source"] = rng.choice(["web", "mobile", "api"])
                        yield "track", {"user_id": uid, "event": name, "properties": props, "context": ctx,
                                        "timestamp": ts}


def send(url: str, write_key: str, *, seed: int = 7, accounts: int = 200, days: int = 30,
         now: datetime | None = None, progress: bool = False) -> dict[str, int]:
    """Send the history through ``segment-analytics-python`` to ``url``; returns counts. ``progress``: a bar
    with rate and ETA on stderr (the messages handed to the SDK, then its flush)."""
    # deferred: heavy optional dependency, only the SDK-driven phases need it
    from segment.analytics import Client

    errors: list[Any] = []
    client = Client(write_key=write_key, host=url, gzip=True, upload_size=250, max_queue_size=200_000,
                    on_error=lambda e, batch: errors.append(e), max_retries=6)
    now = now or datetime.now(UTC)
    plan = build_plan(seed, accounts, days)
    counts: dict[str, int] = {}
    todo = list(calls(plan, now))
    # deferred: the operator's bar (requirements-dev), not needed to send
    from rich.console import Console

    # deferred: as above
    from rich.progress import Progress, TextColumn

    with Progress(*Progress.get_default_columns(), TextColumn("{task.fields[rate]}"), disable=not progress,
                  console=Console(stderr=True)) as bars:
        task = bars.add_task("demo: sending through segment-analytics-python", total=len(todo), rate="")
        started = time.perf_counter()
        for i, (method, kwargs) in enumerate(todo):
            # Stable message ids: sending the demo again the same day is deduplicated, not double-counted.
            getattr(client, method)(message_id=f"demo-{seed}-{accounts}-{days}-{i:07d}", **kwargs)
            counts[method] = counts.get(method, 0) + 1
            if i % 500 == 0 or i == len(todo) - 1:
                bars.update(task, completed=i + 1,
                            rate=f"{(i + 1) / max(time.perf_counter() - started, 1e-6):,.0f} calls/s")
        bars.update(task, description="demo: waiting for the SDK to deliver its queue")
        client.flush()
        client.join()
    if errors:
        raise RuntimeError(f"{len(errors)} demo batches failed; first: {errors[0]}")
    counts["accounts"] = len(plan.accounts)
    counts["users"] = plan.user_count
    return counts
