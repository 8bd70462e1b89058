"""User-days: what a late ``group`` brings to an account (pure)."""

from __future__ import annotations

import itertools
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from projections import account, timeline
from projections.events import Event
from projections.timeline import MAX_PER_BUCKET
from projections.userday import UserDay, upcast_v1

T0 = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)


def track(i: int, name: str = "Report Created", user: str = "ada") -> Event:
    at = (T0 + timedelta(minutes=i)).isoformat().replace("+00:00", "Z")
    return Event.from_wire({"messageId": f"m{i}", "type": "track", "event": name, "userId": user, "timestamp": at})


def fold(events: list[Event]) -> UserDay:
    out = UserDay()
    for e in events:
        out = out.merge(UserDay.of(e))
    return out


def test_merge_is_order_free_and_round_trips() -> None:
    events = [track(i, f"E{i % 3}") for i in range(7)]
    folds = {fold(list(p)) for p in itertools.islice(itertools.permutations(events), 50)}
    assert len(folds) == 1
    ud = folds.pop()
    assert ud.activity.count() == 7 and ud.first == T0 and ud.last == T0 + timedelta(minutes=6)
    assert UserDay.from_dict(ud.to_dict()) == ud


def test_for_account_equals_folding_the_attributed_events() -> None:
    events = [track(i, f"E{i % 4}") for i in range(80)]  # more than a timeline keeps
    head, bucket = fold(events).for_account("acme", T0.date().isoformat(), "ada")
    synth = [replace(e, group_id="acme") for e in events]
    ref = account.fold_all(synth)["acme"]
    assert (head.first_seen, head.last_seen, head.event_spans) == (ref.first_seen, ref.last_seen, ref.event_spans)
    assert bucket == timeline.fold_all(synth)[("acme", T0.date().isoformat())]
    assert len(bucket.entries) == MAX_PER_BUCKET


def test_a_stored_format_1_user_day_is_upcast() -> None:
    """The user-day as view version 2 stored it before spans and entries (a fixture of that format)."""
    stored = {"counts": {"Report Created": 3, "Export": 1}, "users": {"h": []}}
    ud = UserDay.from_dict(stored)
    assert ud == upcast_v1(stored)
    assert ud.activity.count() == 4 and ud.first is None and not ud.entries and not ud.spans
    # and it merges with a new-format contribution
    assert ud.merge(UserDay.of(track(1))).activity.count() == 5
