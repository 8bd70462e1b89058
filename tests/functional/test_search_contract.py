"""Contract tests of the search projection, run against every backend.

``SearchContract`` states the behaviour; each backend subclass supplies ``make_index``. The
embedded SQLite FTS5 index always runs; the OpenSearch one runs when ``OPENSEARCH_URL`` names a
reachable cluster (each test uses its own index prefix and deletes its indexes afterwards).
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from chalicelib.search import OpenSearchIndex, SearchIndex, SqliteSearchIndex
from chalicelib.search_opensearch import build_client

T1, T2 = "tenant-one", "tenant-two"

WEIRD_QUERIES = ['"', "*", "AND", "OR", "NOT", "(", ")", "acme AND", '"acme', "acme*", "NEAR(acme corp)",
                 "name:acme", "{name}: acme", "^acme", "-acme", "+acme", "a\\b", "\x00", "\ud800", "' OR 1=1 --",
                 "%", "_", "?", "~", "/", "acme)", "((((", "🦄", "  ", "", "x" * 2000, "a " * 500]


def account(name: str, score: int = 50, band: str = "yellow", **traits: Any) -> dict[str, Any]:
    """A SUMMARY-attrs-like dict as ``streams.writer.summary_attrs`` writes it."""
    plan = traits.get("plan")
    return {"name": name, "score": score, "band": band, "plan": plan if isinstance(plan, str) else None,
            "traits_json": json.dumps({"name": name, **traits}, sort_keys=True), "users_count": 1}


def user(user_id: str, name: str | None, email: str | None, accounts: list[str] | None = None,
         **traits: Any) -> dict[str, Any]:
    """A link dict as ``streams.writer._user_link`` writes it (plus ``accounts``)."""
    link: dict[str, Any] = {"user_id": user_id, "name": name, "email": email,
                            "traits_json": json.dumps(traits, sort_keys=True),
                            "first_seen": "2024-01-01T00:00:00Z", "last_seen": "2024-01-02T00:00:00Z"}
    if accounts is not None:
        link["accounts"] = accounts
    return link


def ids(items: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(i["kind"], i["id"]) for i in items]


class SearchContract:
    """Behaviour every :class:`~chalicelib.search.SearchIndex` backend must have."""

    @pytest.fixture
    def idx(self, tmp_path: Path) -> Iterator[SearchIndex]:
        index = self.make_index(tmp_path)
        yield index
        self.drop_index(index)
        index.close()

    def make_index(self, tmp_path: Path) -> SearchIndex:  # pragma: no cover - overridden
        raise NotImplementedError

    def drop_index(self, index: SearchIndex) -> None:
        """Backend clean-up after a test (nothing for a temporary file)."""

    @pytest.fixture
    def seeded(self, idx: SearchIndex) -> SearchIndex:
        idx.index(T1, {
            "acme": account("Acme Corp", 72, "green", plan="enterprise", industry="Fintech"),
            "globex": account("Globex", 31, "red", plan="starter", industry="Energy"),
            "initech": account("Initech", 55, "yellow", plan="pro", region="EMEA"),
        }, {
            "u-jane": user("u-jane", "Jane Doe", "jane@acme.io", ["acme"], role="Administrator"),
            "u-bob": user("u-bob", None, "bob@globex.example", ["globex", "acme"]),
        })
        idx.index(T2, {"acme-evil": account("Acme Evil Twin", 5, "red", industry="Fintech")},
                  {"u-eve": user("u-eve", "Eve", "eve@acme.io", ["acme-evil"])})
        return idx

    def test_satisfies_protocol(self, idx: SearchIndex) -> None:
        assert isinstance(idx, SearchIndex)

    def test_name_prefix_finds_account(self, seeded: SearchIndex) -> None:
        items = seeded.search(T1, "acm")
        assert items[0] == {"kind": "account", "id": "acme", "name": "Acme Corp", "account_id": "acme",
                            "score": 72, "band": "green"}
        assert seeded.search(T1, "ACME co")[0]["id"] == "acme"
        assert ids(seeded.search(T1, "glob"))[0] == ("account", "globex")

    def test_user_shape_and_fields(self, seeded: SearchIndex) -> None:
        assert seeded.search(T1, "jan") == [{"kind": "user", "id": "u-jane", "name": "Jane Doe",
                                             "account_id": "acme", "score": None, "band": None}]
        bob = [i for i in seeded.search(T1, "bob") if i["id"] == "u-bob"]
        assert bob == [{"kind": "user", "id": "u-bob", "name": "bob@globex.example", "account_id": "globex",
                        "score": None, "band": None}]

    def test_user_without_accounts_key(self, idx: SearchIndex) -> None:
        idx.index(T1, {}, {"u-solo": user("u-solo", "Solo Walker", None)})
        assert idx.search(T1, "solo") == [{"kind": "user", "id": "u-solo", "name": "Solo Walker",
                                           "account_id": None, "score": None, "band": None}]

    def test_exact_id_ranks_first(self, idx: SearchIndex) -> None:
        idx.index(T1, {
            "acme": account("Acme Holdings", 10),
            "acme-2": account("Acme", 20),
            "zz": account("Acme Acme Acme", 30),
        }, {})
        items = idx.search(T1, "acme")
        assert items[0]["id"] == "acme"
        assert {i["id"] for i in items} == {"acme", "acme-2", "zz"}
        # The id is found exactly even when it has no word characters at all.
        idx.index(T1, {"!!!": account("Bangs")}, {})
        assert ids(idx.search(T1, "!!!")) == [("account", "!!!")]

    def test_find_by_id_and_trait(self, seeded: SearchIndex) -> None:
        assert ("account", "initech") in ids(seeded.search(T1, "initech"))
        assert ids(seeded.search(T1, "u-jane"))[0] == ("user", "u-jane")
        assert ids(seeded.search(T1, "fintech")) == [("account", "acme")]
        assert ids(seeded.search(T1, "emea")) == [("account", "initech")]
        assert ids(seeded.search(T1, "admin")) == [("user", "u-jane")]
        assert ids(seeded.search(T1, "enterpr")) == [("account", "acme")]

    def test_upsert_replaces(self, seeded: SearchIndex) -> None:
        seeded.index(T1, {"acme": account("Acme Corporation", 18, "red", plan="enterprise")}, {})
        items = [i for i in seeded.search(T1, "acme") if i["kind"] == "account"]
        assert items == [{"kind": "account", "id": "acme", "name": "Acme Corporation", "account_id": "acme",
                          "score": 18, "band": "red"}]
        # The old trait text is gone with the old content.
        assert seeded.search(T1, "fintech") == []

    def test_index_is_idempotent(self, seeded: SearchIndex) -> None:
        before = seeded.search(T1, "a", limit=100)
        for _ in range(3):
            seeded.index(T1, {"acme": account("Acme Corp", 72, "green", plan="enterprise", industry="Fintech")},
                         {"u-jane": user("u-jane", "Jane Doe", "jane@acme.io", ["acme"], role="Administrator")})
        assert seeded.search(T1, "a", limit=100) == before
        assert len(ids(seeded.search(T1, "acme", limit=100))) == len(set(ids(seeded.search(T1, "acme", limit=100))))

    def test_tenant_isolation(self, seeded: SearchIndex) -> None:
        assert all(i["id"] not in {"acme-evil", "u-eve"} for i in seeded.search(T1, "acme", limit=100))
        # "acme" is an exact id in T1 only: in T2 it is just a prefix of T2's own documents.
        assert set(ids(seeded.search(T2, "acme", limit=100))) == {("account", "acme-evil"), ("user", "u-eve")}
        assert seeded.search(T2, "globex") == []
        assert seeded.search(T2, "u-jane") == []
        assert seeded.search("tenant-three", "acme") == []

    def test_delete_tenant(self, seeded: SearchIndex) -> None:
        seeded.delete_tenant(T2)
        assert seeded.search(T2, "acme") == []
        assert seeded.search(T1, "acme")

    @pytest.mark.parametrize("q", WEIRD_QUERIES)
    def test_weird_queries_never_fail(self, seeded: SearchIndex, q: str) -> None:
        items = seeded.search(T1, q)
        assert isinstance(items, list)
        assert all(i["id"] not in {"acme-evil", "u-eve"} for i in items)

    def test_operators_are_text(self, idx: SearchIndex) -> None:
        idx.index(T1, {"a1": account("Tom AND Jerry"), "a2": account("Jerry OR Tom")}, {})
        assert ids(idx.search(T1, "AND")) == [("account", "a1")]
        assert ids(idx.search(T1, "jerry")) and len(idx.search(T1, "jerry")) == 2
        assert idx.search(T1, "") == [] and idx.search(T1, "   ") == []

    def test_limit(self, idx: SearchIndex) -> None:
        idx.index(T1, {f"acct-{n:03}": account(f"Widget {n:03}", n) for n in range(30)}, {})
        assert len(idx.search(T1, "widget")) == 20
        assert len(idx.search(T1, "widget", limit=5)) == 5
        assert len(idx.search(T1, "widget", limit=1000)) == 30
        assert idx.search(T1, "widget", limit=0) == []


class TestSqliteSearchContract(SearchContract):
    """The embedded backend (always)."""

    def make_index(self, tmp_path: Path) -> SearchIndex:
        return SqliteSearchIndex(tmp_path / "search-v1.sqlite")

    def test_persists_across_reopen(self, tmp_path: Path) -> None:
        path = tmp_path / "nested" / "search-v3.sqlite"
        first = SqliteSearchIndex(path)
        first.index(T1, {"acme": account("Acme Corp", 72, "green")}, {})
        first.close()
        again = SqliteSearchIndex(path)
        try:
            assert ids(again.search(T1, "acm")) == [("account", "acme")]
        finally:
            again.close()


OPENSEARCH_URL = os.environ.get("OPENSEARCH_URL")


@pytest.mark.skipif(not OPENSEARCH_URL, reason="OPENSEARCH_URL is not set: no OpenSearch cluster to test against")
class TestOpenSearchContract(SearchContract):
    """The AWS backend, against the cluster named by ``OPENSEARCH_URL``."""

    def make_index(self, tmp_path: Path) -> SearchIndex:

        assert OPENSEARCH_URL
        client = build_client(OPENSEARCH_URL, os.environ.get("AWS_REGION", "us-east-1"))
        return OpenSearchIndex(client, 1, f"sftest-{uuid.uuid4().hex[:10]}-", refresh=True)

    def drop_index(self, index: SearchIndex) -> None:
        assert isinstance(index, OpenSearchIndex)
        index.client.indices.delete(index=f"{index.prefix}search-v*", ignore_unavailable=True)

    def test_promote_switches_alias(self, idx: SearchIndex) -> None:
        assert isinstance(idx, OpenSearchIndex)
        idx.index(T1, {"acme": account("Acme Corp", 72, "green")}, {})
        green = OpenSearchIndex(idx.client, 2, idx.prefix, refresh=True)
        green.index(T1, {"acme": account("Acme Rebuilt", 80, "green")}, {})
        assert idx.search(T1, "acme")[0]["name"] == "Acme Corp"  # alias still on v1
        green.promote(2)
        assert idx.search(T1, "acme")[0]["name"] == "Acme Rebuilt"
        assert sorted(idx.client.indices.get_alias(name=idx.alias)) == [green.index_name]
