"""A rebuild cut by whom the events are about, so that each account is folded about once.

A rebuild that folds the day tables in the order a ``Scan`` returns them touches, with spread traffic,
nearly every account in every batch: each account is read, re-scored and rewritten once per batch (25
times over 120,000 events on 10,000 accounts, and the fold's cost is per account, not per event).
Folding is order-free (``projections.usage.attributed_events``: a user's tracks before or after their
``group``, an ``alias`` before or after ``identify``), so any cut of the events into batches gives the same
view. This one cuts them by *connected component*: users, anonymous ids and accounts are nodes, and every
event joins the nodes it names (``userId``, ``anonymousId``, an alias's ``previousId``, ``groupId``).
A component holds an account, its users and their anonymous ids, so an account's events land in one
partition, and the partition is folded in one batch.

Three passes: :func:`plan` scans the day tables and builds the components (a union-find over ids: a few
hundred bytes per id), then assigns them to partitions of at most ``max_events`` events and
``max_entities`` ids; :func:`spool` scans again and writes each chunk's events, split by partition, to one
local file per partition (pickled events, deleted at the end); the caller folds the partitions one by one
and flushes after each (:func:`streams.replay.rebuild`). Memory is one partition's events and items.

Events that arrive between the passes name ids the plan has not seen: they go to a partition by the hash
of their first id; any partition is correct, only the count of folds per account changes.
"""

from __future__ import annotations

import heapq
import pickle
import zlib
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from projections.events import Event

__all__ = ["Plan", "PartitionSpool", "plan", "read_partition", "wire_nodes", "event_nodes"]

Node = tuple[str, str, str]  # (tenant, kind "u" | "g", id)


def _id(value: Any) -> str | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return str(value)
    return value if isinstance(value, str) and value else None


def _nodes(tenant: str, kind: str | None, user_id: Any, anonymous_id: Any, group_id: Any,
           previous_id: Any) -> list[Node]:
    out: list[Node] = []
    for k, v in (("u", user_id), ("u", anonymous_id), ("u", previous_id if kind == "alias" else None),
                 ("g", group_id)):
        if (i := _id(v)) is not None:
            out.append((tenant, k, i))
    return out or [(tenant, "t", "")]  # an event naming nobody (not accepted by ingest): the tenant's node


def wire_nodes(tenant: str, wire: dict[str, Any]) -> list[Node]:
    """The ids a stored (wire) event names."""
    return _nodes(tenant, wire.get("type"), wire.get("userId"), wire.get("anonymousId"), wire.get("groupId"),
                  wire.get("previousId"))


def event_nodes(tenant: str, e: Event) -> list[Node]:
    """The ids an event names (the same as :func:`wire_nodes` of its wire form)."""
    return _nodes(tenant, e.type, e.user_id, e.anonymous_id, e.group_id, e.previous_id)


@dataclass
class Plan:
    """Components of ids and the partition of each; ``events`` per partition as planned."""

    parent: dict[Node, Node] = field(default_factory=dict)
    weight: Counter[Node] = field(default_factory=Counter)  # events by the first node they name
    partition_of: dict[Node, int] = field(default_factory=dict)  # component root -> partition
    partitions: int = 1
    events: list[int] = field(default_factory=list)

    def find(self, n: Node) -> Node:
        parent = self.parent
        root = n
        while (p := parent.get(root, root)) != root:
            root = p
        while n != root:  # path compression
            parent[n], n = root, parent[n]
        return root

    def union(self, nodes: list[Node]) -> None:
        parent = self.parent
        first = self.find(nodes[0]) if nodes[0] in parent else nodes[0]
        parent.setdefault(first, first)
        for n in nodes[1:]:
            r = self.find(n) if n in parent else n
            if r != first:
                # The smaller key becomes the root: the components (and so the partitions) depend on the
                # data only, not on the order the scan returned it.
                lo, hi = (first, r) if first < r else (r, first)
                parent[hi] = lo
                parent.setdefault(lo, lo)
                first = lo

    def add(self, nodes: list[Node]) -> None:
        self.union(nodes)
        self.weight[nodes[0]] += 1

    def assign(self, max_events: int, max_entities: int) -> None:
        """Cut the components into partitions: the biggest first, each to the lightest partition."""
        events: Counter[Node] = Counter()
        entities: Counter[Node] = Counter()
        for n in self.parent:
            r = self.find(n)
            entities[r] += 1
        for n, w in self.weight.items():
            events[self.find(n)] += w
        total_events, total_entities = sum(events.values()), sum(entities.values())
        self.partitions = max(1, -(-total_events // max_events), -(-total_entities // max_entities))
        heap = [(0, p) for p in range(self.partitions)]
        self.events = [0] * self.partitions
        for root in sorted(entities, key=lambda r: (-events[r], r)):
            load, p = heapq.heappop(heap)
            self.partition_of[root] = p
            self.events[p] += events[root]
            heapq.heappush(heap, (load + events[root], p))

    def route(self, nodes: list[Node]) -> int:
        first = nodes[0]
        if first in self.parent:
            p = self.partition_of.get(self.find(first))
            if p is not None:
                return p
        return zlib.crc32(repr(first).encode()) % self.partitions


def plan(chunks: Iterable[tuple[str, str, list[dict[str, Any]]]], *, max_events: int, max_entities: int) -> Plan:
    """Pass 1: the components of every id the stored events name, cut into partitions."""
    result = Plan()
    for tenant, _, wires in chunks:
        for w in wires:
            result.add(wire_nodes(tenant, w))
    result.assign(max_events, max_entities)
    return result


class PartitionSpool:
    """Pass 2: each chunk's events, split by partition, appended to one local file per partition."""

    def __init__(self, directory: Path, the_plan: Plan) -> None:
        self.plan = the_plan
        self.directory = directory
        self._files = [open(directory / f"part-{p:05d}.pickle", "ab") for p in range(the_plan.partitions)]
        self.spooled = [0] * the_plan.partitions

    def add(self, tenant: str, chunk_id: str, events: list[Event]) -> None:
        parts: dict[int, list[Event]] = {}
        for e in events:
            parts.setdefault(self.plan.route(event_nodes(tenant, e)), []).append(e)
        for p, evs in parts.items():
            pickle.dump((tenant, chunk_id, evs), self._files[p], protocol=pickle.HIGHEST_PROTOCOL)
            self.spooled[p] += len(evs)

    def close(self) -> None:
        for f in self._files:
            f.close()

    def read(self, partition: int) -> Iterator[tuple[str, str, list[Event]]]:
        return read_partition(self.directory, partition)


def read_partition(directory: Path, partition: int) -> Iterator[tuple[str, str, list[Event]]]:
    """A spooled partition's ``(tenant, chunk id, events)`` in the order they were spooled."""
    with open(directory / f"part-{partition:05d}.pickle", "rb") as f:
        while True:
            try:
                yield pickle.load(f)  # our own file, written by this rebuild
            except EOFError:
                return
