"""Fold versions (``projections/folds.py``) and fold 3's per-name users per account-day: versions, code digest,
the stored shape (version 2 unchanged), agreement with a reference, per-name sketches and the ``DAY#`` size bound."""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given

from chalicelib.versions import VIEW_VERSION
from chalicelib.views import encode_body
from projections import account
from projections.account import DayActivity
from projections.events import Event
from projections.folds import FOLDS, LATEST, Fold, fold_for, source_digest
from projections.usage import MAX_NAMES, NAME_SKETCH_EXACT, NAME_SKETCH_REGISTERS, OTHER, NameSketch, Sketch
from streams.writer import FOLD_CODE
from tests.unit.test_projections_events import SETTINGS, event_lists

ROOT = Path(__file__).resolve().parents[2]
DAY_JSON_BOUND = 62 * 1024
"""The stated worst case of a ``DAY#`` body, JSON before zlib (``projections.account.DayActivity``)."""
DAY_STORED_BOUND = 32 * 1024
"""... and compressed as stored (``chalicelib.views.encode_body``) with incompressible names and hashes."""


# --- versions -----------------------------------------------------------------------------------------


def test_fold_for_picks_the_newest_released_fold_not_above_the_version() -> None:
    assert FOLDS == {2: Fold(2, False), 3: Fold(3, True)} and LATEST == 3
    assert fold_for(1) is FOLDS[2]  # legacy tables (upcast on read)
    assert fold_for(2) is FOLDS[2]
    assert fold_for(3) is FOLDS[3]
    assert fold_for(4) is FOLDS[3] and fold_for(102) is FOLDS[3]  # scratch tables
    for bad in (0, -1):
        with pytest.raises(ValueError, match="view version"):
            fold_for(bad)


def test_code_names_the_version_and_the_fold_code() -> None:
    digest = source_digest()
    assert len(digest) == 12 and int(digest, 16) >= 0
    assert fold_for(2).code == f"v2:{digest}" and fold_for(3).code == f"v3:{digest}"
    assert FOLD_CODE == fold_for(VIEW_VERSION).code  # what existing callers record


def _digest_in(root: Path, seed: str) -> str:
    out = subprocess.run([sys.executable, "-c", "from projections.folds import fold_for; print(fold_for(3).code)"],
                         cwd=root, env={**os.environ, "PYTHONPATH": str(root), "PYTHONHASHSEED": seed},
                         capture_output=True, text=True, check=True)
    return out.stdout.strip()


def test_code_digest_is_of_the_code_not_of_the_process_or_the_path(tmp_path: Path) -> None:
    """Same code in another directory and another hash seed: the same code; a changed constant: another."""
    copy = tmp_path / "elsewhere"
    shutil.copytree(ROOT / "projections", copy / "projections", ignore=shutil.ignore_patterns("__pycache__"))
    here = fold_for(3).code
    assert _digest_in(copy, "1") == here and _digest_in(copy, "2") == here
    usage = copy / "projections" / "usage.py"
    usage.write_text(usage.read_text().replace("MAX_NAMES: Final = 100", "MAX_NAMES: Final = 99"))
    assert _digest_in(copy, "1") != here


# --- the stored shape --------------------------------------------------------------------------------


def ev(mid: str, day: int, name: str, who: str | None, account_id: str = "g1") -> Event:
    wire = {"messageId": mid, "type": "track", "groupId": account_id, "event": name,
            "timestamp": f"2026-11-{day:02d}T12:00:00Z"}
    if who:
        wire["userId"] = who
    else:
        wire["anonymousId"] = "anon"
    return Event.from_wire(wire)


def test_version_2_days_are_stored_as_before_and_version_3_days_add_names() -> None:
    events = [ev("1", 1, "Export", "u1"), ev("2", 1, "Export", "u2"), ev("3", 1, "Report", "u1")]
    v2 = account.fold_all(events)["g1"].days["2026-11-01"]
    v3 = account.fold_all(events, name_users=True)["g1"].days["2026-11-01"]
    assert v2.to_dict() == {"counts": {"Export": 2, "Report": 1}, "users": Sketch.of(["u1", "u2"]).to_dict()}
    assert (v3.counts, v3.users) == (v2.counts, v2.users)
    assert v3.to_dict() == {**v2.to_dict(), "names": {"Export": NameSketch.of(["u1", "u2"]).to_dict(),
                                                      "Report": NameSketch.of(["u1"]).to_dict()}}
    assert DayActivity.from_dict(json.loads(json.dumps(v3.to_dict()))) == v3
    assert DayActivity.from_dict(v2.to_dict()) == v2 and not v2.names
    assert len(v3.name_users("Export")) == 2 and len(v2.name_users("Export")) == 0


@SETTINGS
@given(events=event_lists)
def test_version_3_names_agree_with_a_reference_and_change_nothing_else(events: list[Event]) -> None:
    v2, v3 = account.fold_all(events), account.fold_all(events, name_users=True)
    assert set(v2) == set(v3)
    for key, state in v3.items():
        other = v2[key]
        # Everything version 2 holds is the same; only the per-name users are added.
        assert state.to_dict()["days"].keys() == other.to_dict()["days"].keys()
        for day, act in state.days.items():
            assert (act.counts, act.users) == (other.days[day].counts, other.days[day].users)
            assert set(act.names) <= set(act.counts)
            for name, users in act.names.items():
                expected = {e.user_id for e in events if account.key(e) == key and e.is_usage and e.day == day
                            and (e.catalog_name or "") == name and e.user_id}
                assert users == NameSketch.of(expected)


def test_names_past_the_cap_go_with_their_counts_under_other() -> None:
    events = [ev(f"m{i}", 1, f"name-{i:03d}", f"u{i % 3}") for i in range(MAX_NAMES + 20)]
    day = account.fold_all(events, name_users=True)["g1"].days["2026-11-01"]
    assert set(day.names) == set(day.counts) and len(day.names) == MAX_NAMES + 1
    assert day.names[OTHER] == NameSketch.of(["u0", "u1", "u2"])
    # Merged batch by batch (as the writer adds day counters), in either order: the same names and users.
    fold = FOLDS[3]
    parts = [fold.many([(e.event or "", e.user_id) for e in events[i:i + 7]]) for i in range(0, len(events), 7)]
    total = DayActivity()
    for part in parts:
        total = total.merge(part)
    assert total == day.merge(DayActivity()) and set(total.names) <= set(total.counts)


def test_fold_builders_match_the_pure_fold() -> None:
    fold2, fold3 = FOLDS[2], FOLDS[3]
    named = [("Export", "u1"), ("Export", None), ("Report", "u2"), ("Export", "u2")]
    assert fold3.many(named) == DayActivity.of_named(named, name_users=True)
    assert fold3.one("Export", "u1").names == {"Export": NameSketch.of(["u1"])}
    assert fold2.one("Export", "u1") == DayActivity.of_named([("Export", "u1")], name_users=False)
    assert not fold3.one("Export", None).names
    counts = fold3.many(named).counts
    retro = fold3.of_user(counts, "u9")
    assert retro.users == Sketch.of(["u9"]) and retro.names == {n: NameSketch.of(["u9"]) for n in counts}
    assert not fold2.of_user(counts, "u9").names


# --- per-name sketches and the size bound --------------------------------------------------------------


def test_name_sketch_is_exact_to_16_then_64_registers() -> None:
    small = NameSketch.of(f"u{i}" for i in range(NAME_SKETCH_EXACT))
    assert small.registers is None and len(small) == NAME_SKETCH_EXACT
    big = NameSketch.of(f"u{i}" for i in range(5000))
    assert big.registers is not None and len(big.registers) == NAME_SKETCH_REGISTERS
    assert abs(len(big) - 5000) / 5000 < 0.4  # 13% standard error
    halves = NameSketch.of(f"u{i}" for i in range(0, 5000, 2)).merge(NameSketch.of(f"u{i}" for i in range(1, 5000, 2)))
    assert halves == big
    compact = {"separators": (",", ":")}
    assert len(json.dumps(small.to_dict(), **compact)) <= 311 and len(json.dumps(big.to_dict(), **compact)) < 80
    with pytest.raises(TypeError):
        small.merge(Sketch.of(["u1"]))  # type: ignore[arg-type]


def _stored(day: DayActivity) -> tuple[int, int]:
    body = day.to_dict()
    return len(json.dumps(body, separators=(",", ":"), sort_keys=True)), len(encode_body(body))


def test_day_item_worst_case_is_under_the_stated_bound() -> None:
    """101 counter keys of 128 random characters, each with exactly 16 distinct users of its own (the largest
    per-name sketch), and 128 users for the day's own sketch being impossible then (1,616 users: registers)."""
    rng = random.Random(3)
    names = ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(128)) for _ in range(130)]
    named = [(name, f"user-{i}-{k}") for i, name in enumerate(names) for k in range(NAME_SKETCH_EXACT)]
    day = FOLDS[3].many(named)
    assert len(day.names) == MAX_NAMES + 1
    raw, stored = _stored(day)
    assert raw < DAY_JSON_BOUND and stored < DAY_STORED_BOUND, (raw, stored)
    v2_raw, _ = _stored(FOLDS[2].many(named))
    assert v2_raw < 17 * 1024


def _day_of(names: list[str], events: int, users: int, seed: int) -> tuple[DayActivity, dict[str, set[str]]]:
    """An account-day added batch by batch (1,000 events each) as the writer adds them, and the truth."""
    rng = random.Random(seed)
    total = DayActivity()
    truth: dict[str, set[str]] = {}
    for _ in range(events // 1000):
        batch = [(rng.choice(names), f"user-{rng.randrange(users)}") for _ in range(1000)]
        for name, who in batch:
            truth.setdefault(name, set()).add(who)
        total = total.merge(FOLDS[3].many(batch))
    return total, truth


def _names(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [f"{i:03d}" + "".join(rng.choice("abcdefghij") for _ in range(125)) for i in range(n)]


def test_day_item_at_volume_stays_under_the_bound() -> None:
    """One account-day of 200,000 events by 20,000 users over 150 names of 128 characters: bounded."""
    total, truth = _day_of(_names(150, 5), 200_000, 20_000, 5)
    assert total.count() == 200_000 and len(total.names) == MAX_NAMES + 1 and set(total.names) == set(total.counts)
    raw, stored = _stored(total)
    assert raw < DAY_JSON_BOUND and stored < DAY_STORED_BOUND, (raw, stored)
    everyone = set().union(*truth.values())
    assert abs(len(total.users) - len(everyone)) / len(everyone) < 0.15
    # Past MAX_NAMES names a day, which names keep their own counter depends on the batches (the cap's one
    # order-sensitivity, as for counts): a name's users follow its counts, under its own key or under OTHER.
    named = [n for n in total.names if n != OTHER]
    assert all(len(total.names[n]) <= 1.5 * len(truth[n]) for n in named)


def test_name_users_are_close_below_the_cap() -> None:
    total, truth = _day_of(_names(90, 6), 50_000, 5_000, 6)
    errors = [abs(len(total.names[n]) - len(truth[n])) / len(truth[n]) for n in truth]
    assert sum(errors) / len(errors) < 0.2  # 64 registers: 13% standard error
