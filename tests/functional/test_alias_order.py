"""Identity merges (``alias``, ``identify`` with an ``anonymousId``) leave the same view whatever the order and
batching of events, item for item, in both writer modes (issue 17 item 4; docs/RELIABILITY.md, "Identity
merges, in any order").

Each example folds one workload — anonymous tracks and pages, ``identify`` carrying an ``anonymousId``, ``alias``
(``previousId`` -> ``userId``), ``group``, tracks with and without ``context.groupId``, a track carrying both
ids (as every Segment SDK sends after ``identify``) — in another order and other batches into a view table of
its own, and :func:`streams.replay.compare` (which settles pending delta pages first) must find it equal, item
for item, to the view of the same events folded in one batch. Modes: ``direct`` (every item written in the
batch: the replay), ``settled`` (the live projector's delta pages, settled after every batch) and ``pending``
(pages settled only by ``compare``).
"""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st

from chalicelib import keys, tables
from chalicelib.scoremodels import ScoreModelStore
from chalicelib.views import ViewStore
from projections.events import Event
from projections.folds import fold_for
from projections.usage import attribute
from streams import replay
from streams.writer import ViewWriter
from tests.functional.test_projection_v2 import view_usage
from tests.helpers.fold import cut_chunks

pytestmark = pytest.mark.timeout(600)

DAY0 = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)
NOW = DAY0 + timedelta(days=1)
T_ID = DAY0 - timedelta(days=5)
TENANT = "t-alias-order"
ACCOUNTS = {"A", "B", "C", "D"}


def ev(mid: str, kind: str, at: datetime = DAY0, **fields: Any) -> Event:
    stamp = at.isoformat().replace("+00:00", "Z")
    return Event.from_wire({"messageId": mid, "type": kind, "timestamp": stamp, "originalTimestamp": stamp, **fields})


def _population() -> list[Event]:
    """Three anonymous visitors merged three ways, and users with and without accounts. Every identity call is
    older than every track (``T_ID``), so a user's first seen is the same whichever of its events is folded first
    (usage older than a user's link: ``LATE`` below)."""
    out: list[Event] = [
        ev("g-u1-a", "group", T_ID, userId="u1", groupId="A", traits={"name": "Acme"}),
        ev("g-u2-a", "group", T_ID, userId="u2", groupId="A"),
        ev("g-u2-b", "group", T_ID, userId="u2", groupId="B"),
        ev("g-u3-b", "group", T_ID, userId="u3", groupId="B"),
        # u4 joins only after its anonymous history was merged into it (or before: any order).
        ev("g-u4-d", "group", T_ID, userId="u4", groupId="D"),
        ev("id-u1", "identify", T_ID, userId="u1", traits={"email": "u1@x.io"}),
        # anon-a -> u3 by alias; anon-b -> u1 by identify carrying the anonymous id; anon-c -> u4 by alias.
        ev("al-a", "alias", T_ID, userId="u3", previousId="anon-a"),
        ev("id-b", "identify", T_ID, userId="u1", anonymousId="anon-b", traits={"plan": "pro"}),
        ev("al-c", "alias", T_ID, userId="u4", previousId="anon-c"),
        # After identify an SDK sends both ids on every call: this one may be folded before the identify.
        ev("t-both", "track", DAY0 + timedelta(hours=4), userId="u1", anonymousId="anon-b", event="Export"),
    ]
    anons = ["anon-a", "anon-b", "anon-c"]
    for i in range(15):
        who = anons[i % 3]
        at = DAY0 - timedelta(days=i % 4, hours=i % 3, minutes=i)
        if i % 5 == 4:
            out.append(ev(f"p{i}", "page", at, anonymousId=who, name="Pricing"))
        elif i % 7 == 3:
            # An anonymous event carrying context.groupId names the anonymous id, whenever its alias comes (the
            # oldest event of its anonymous id: see above).
            out.append(ev(f"t{i}", "track", T_ID + timedelta(minutes=i), anonymousId=who, event=f"E{i % 3}",
                          groupId="C", context={"groupId": "C"}))
        else:
            out.append(ev(f"t{i}", "track", at, anonymousId=who, event=f"E{i % 3}"))
    for i in range(6):
        out.append(ev(f"k{i}", "track", DAY0 - timedelta(days=i % 3, minutes=7 * i), userId=f"u{1 + i % 4}",
                      event=f"E{i % 2}"))
    return out


POPULATION = _population()
_versions = itertools.count(200)


def _writer(ddb: Any, prefix: str, version: int, mode: str) -> ViewWriter:
    store = ViewStore(ddb, tables.ensure_view_table(ddb, prefix, version))
    settle: dict[str, Any] = {}
    if mode == "settled":
        settle = {"settle_after": 0, "settle_min_age": 0}
    elif mode == "pending":
        settle = {"settle_after": 1e9, "settle_pages": 10**6}
    return ViewWriter(store, ScoreModelStore(ddb, keys.control_table_name(prefix)), deferred=mode != "direct",
                      fold=fold_for(version), **settle)


def _batches(order: list[int], cuts: list[int], per_batch: int) -> list[list[tuple[str, list[Event]]]]:
    chunks = cut_chunks([POPULATION[i] for i in order], cuts)
    return [chunks[i:i + per_batch] for i in range(0, len(chunks), per_batch)]


@pytest.fixture
def reference(ddb: Any, prefix: str) -> int:
    """The view of every event folded in one batch (directly): the version each interleaving must equal."""
    version = next(_versions)
    _writer(ddb, prefix, version, "direct").record(None, NOW, chunks={TENANT: [("all", POPULATION)]})
    store = ViewStore(ddb, keys.view_table_name(prefix, version))
    assert view_usage(store, TENANT, ACCOUNTS) == attribute(POPULATION)
    return version


@settings(max_examples=30, deadline=None, phases=[Phase.explicit, Phase.generate], print_blob=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(order=st.permutations(range(len(POPULATION))),
       cuts=st.lists(st.integers(1, 6), min_size=1, max_size=6),
       per_batch=st.integers(1, 3),
       redeliver=st.booleans(), mode=st.sampled_from(["direct", "settled", "pending"]))
# Every anonymous event before its merge, in small batches; then every merge before the anonymous events.
@example(order=sorted(range(len(POPULATION)), key=lambda i: POPULATION[i].type in ("alias", "identify")),
         cuts=[2], per_batch=1, redeliver=False, mode="direct")
@example(order=sorted(range(len(POPULATION)), key=lambda i: POPULATION[i].type in ("alias", "identify")),
         cuts=[3], per_batch=2, redeliver=True, mode="settled")
@example(order=sorted(range(len(POPULATION)), key=lambda i: POPULATION[i].type in ("alias", "identify")),
         cuts=[4], per_batch=1, redeliver=False, mode="pending")
@example(order=sorted(range(len(POPULATION)), key=lambda i: POPULATION[i].type not in ("alias", "identify")),
         cuts=[1], per_batch=1, redeliver=False, mode="direct")
def test_the_view_is_the_same_item_for_item_whatever_the_order_of_merges(
        ddb: Any, prefix: str, reference: int, order: list[int], cuts: list[int], per_batch: int,
        redeliver: bool, mode: str) -> None:
    version = next(_versions)
    writer = _writer(ddb, prefix, version, mode)
    batches = _batches(order, cuts, per_batch)
    if redeliver:  # the mapping re-delivers a batch whole, and a bisected half of another
        batches = batches + batches[:1] + [batches[-1][:1]]
    for batch in batches:
        writer.record(None, NOW, chunks={TENANT: batch})
    result = replay.compare(ddb, prefix, reference, version)
    assert result.same_code and result.items_a > 40
    assert result.equal, result.to_dict()


LATE = [
    ev("g-u9-e", "group", DAY0, userId="u9", groupId="E", traits={"name": "Early Co"}),
    ev("id-u9", "identify", DAY0, userId="u9", traits={"email": "u9@x.io"}),
    ev("t-u9-new", "track", DAY0 + timedelta(hours=1), userId="u9", event="Export"),
    # Usage older than the user's link, sent (or folded) after it: the user's first seen moves back.
    ev("t-u9-old", "track", DAY0 - timedelta(days=2), userId="u9", event="Export"),
    ev("t-u9-older", "track", DAY0 - timedelta(days=3, hours=2), userId="u9", event="Report"),
]


@pytest.mark.parametrize("mode", ["settled", "pending"])
@pytest.mark.parametrize("cuts", [[2, 1, 1, 1], [3, 2], [4, 1]])
def test_usage_older_than_a_users_link_moves_the_links_first_seen_in_the_page_mode(
        ddb: Any, prefix: str, mode: str, cuts: list[int]) -> None:
    """The page mode defers a known user's moved first seen to the settle, which rewrites the user's links too:
    the live view equals the one-batch (replay) view, links included (docs/RELIABILITY.md)."""
    ref = next(_versions)
    _writer(ddb, prefix, ref, "direct").record(None, NOW, chunks={TENANT: [("all", LATE)]})
    version = next(_versions)
    writer = _writer(ddb, prefix, version, mode)
    for chunk in cut_chunks(LATE, cuts):
        writer.record(None, NOW, chunks={TENANT: [chunk]})
    link = ViewStore(ddb, keys.view_table_name(prefix, ref)).get_plain(
        [(keys.account_pk(TENANT, "E"), keys.user_link_sk("u9"))])
    assert next(iter(link.values()))["first_seen"].startswith((DAY0 - timedelta(days=3)).date().isoformat())
    result = replay.compare(ddb, prefix, ref, version)
    assert result.same_code and result.equal, result.to_dict()
