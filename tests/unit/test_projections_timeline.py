"""The account timeline fold is insensitive to order and duplication, and bounded."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from projections import timeline
from projections.events import Event

T0 = datetime(2026, 11, 1, tzinfo=UTC)

events = st.builds(
    lambda i, acct, minutes, kind: Event.from_wire({
        "messageId": f"m{i}", "type": kind, "userId": f"u{i % 3}", "groupId": f"a{acct}",
        "event": "Clicked" if kind == "track" else None, "name": "Home" if kind == "page" else None,
        "timestamp": (T0 + timedelta(minutes=minutes)).isoformat()}),
    st.integers(0, 40), st.integers(0, 2), st.integers(0, 3 * 24 * 60), st.sampled_from(["track", "page", "group"]),
)


@settings(max_examples=100, deadline=None)
@given(st.lists(events, max_size=40), st.randoms(use_true_random=False))
def test_permutation_and_duplication_give_the_same_timelines(evs: list[Event], rnd: random.Random) -> None:
    shuffled = evs + rnd.sample(evs, k=len(evs) // 2)
    rnd.shuffle(shuffled)
    assert timeline.fold_all(shuffled) == timeline.fold_all(evs)


@settings(max_examples=50, deadline=None)
@given(st.lists(events, max_size=30), st.lists(events, max_size=30))
def test_merge_of_parts_equals_fold_of_union(a: list[Event], b: list[Event]) -> None:
    whole = timeline.fold_all(a + b)
    left, right = timeline.fold_all(a), timeline.fold_all(b)
    merged = dict(left)
    for k, v in right.items():
        merged[k] = timeline.merge(merged[k], v) if k in merged else v
    assert merged == whole
    for v in whole.values():
        assert timeline.TimelineBucket.from_dict(v.to_dict()) == v


def test_bounded_to_the_newest_entries_per_day() -> None:
    evs = [Event.from_wire({"messageId": f"m{i:04d}", "type": "track", "userId": "u", "groupId": "a",
                            "event": "E", "timestamp": (T0 + timedelta(seconds=i)).isoformat()})
           for i in range(timeline.MAX_PER_BUCKET + 25)]
    (tl,) = timeline.fold_all(evs).values()
    assert len(tl.entries) == timeline.MAX_PER_BUCKET
    assert tl.newest_first()[0].message_id == f"m{timeline.MAX_PER_BUCKET + 24:04d}"
    assert min(tl.entries).message_id == "m0025"
