"""Unit tests of the search projection: documents, FTS5 query escaping (hypothesis), thread
safety, the factory, and the OpenSearch backend's requests against a recording fake client."""

from __future__ import annotations

import ast
import json
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opensearchpy.serializer import JSONSerializer

import chalicelib.search as search_module
from chalicelib import search
from chalicelib.search import OpenSearchIndex, SearchIndex, SqliteSearchIndex, get_indexer, get_search
from chalicelib.search_docs import account_doc, clean_text, docs_for, query_terms, traits_text, user_doc
from chalicelib.search_opensearch import INDEX_BODY
from chalicelib.search_sqlite import fts_match
from chalicelib.settings import reset_settings

# --- documents ---------------------------------------------------------------------------------


def test_traits_text_flattens_values_once() -> None:
    text = traits_text(json.dumps({"plan": "pro", "tags": ["a", "b", "pro"], "n": 3, "ok": True,
                                   "nested": {"city": "Oslo", "none": None}}))
    assert text.split() == ["pro", "a", "b", "3", "Oslo"]
    assert traits_text("not json {") == "not json {"
    assert len(traits_text(json.dumps({str(i): "x" * 100 + str(i) for i in range(1000)}))) <= 8_000


def test_clean_text_removes_unsafe_characters() -> None:
    assert clean_text("a\x00b\ud800c\x1fd\te") == "a b c d\te"
    assert clean_text(None) == "" and clean_text(12) == "12"
    # Ids stay exact (the API links with them); only unencodable surrogates are replaced.
    assert account_doc("t", "a\x08b", {}).id == "a\x08b"
    assert account_doc("t", "a\ud800", {}).id == "a\ufffd"


def test_account_doc_from_summary_attrs() -> None:
    doc = account_doc("t1", "acme", {"name": "Acme", "plan": "pro", "score": Decimal(72), "band": "green",
                                     "traits_json": '{"industry": "Fintech"}', "gpk": "ignored"})
    assert doc.key == "t1:account:acme"
    assert doc.to_item() == {"kind": "account", "id": "acme", "name": "Acme", "account_id": "acme",
                             "score": 72, "band": "green"}
    assert isinstance(doc.to_item()["score"], int)
    assert doc.traits == "Fintech"
    assert account_doc("t1", "x", {"name": None}).name == "x"


def test_user_doc_accounts_and_name_fallback() -> None:
    link = {"user_id": "u1", "name": None, "email": "a@b.io", "traits_json": "{}", "accounts": ["b", "a", "b"]}
    doc = user_doc("t1", "u1", link)
    assert doc.to_item() == {"kind": "user", "id": "u1", "name": "a@b.io", "account_id": "b",
                             "score": None, "band": None}
    assert doc.account_ids == ("b", "a")
    assert user_doc("t1", "u2", {"user_id": "u2"}).account_ids == ()
    assert [d.key for d in docs_for("t", {"b": {}, "a": {}}, {"u": {}})] == ["t:account:a", "t:account:b",
                                                                             "t:user:u"]


# --- FTS5 query escaping -----------------------------------------------------------------------


def test_fts_match_quotes_every_term() -> None:
    match = fts_match("t1", 'acme "corp AND (x')
    assert match is not None
    assert match.endswith('{name ident traits related} : ("acme"* """corp"* "AND"* "(x"*)')
    assert fts_match("t1", "   ") is None


def _fresh() -> SqliteSearchIndex:
    idx = SqliteSearchIndex(":memory:")
    idx.index("mine", {"acme": {"name": "Acme Corp", "score": 1, "band": "red", "traits_json": "{}"}},
              {"u1": {"user_id": "u1", "name": "Jane", "email": "jane@acme.io", "traits_json": "{}"}})
    return idx


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=60), st.text(min_size=1, max_size=30))
def test_arbitrary_queries_never_raise_or_leak(q: str, foreign_name: str) -> None:
    idx = _fresh()
    try:
        # The other tenant's document holds exactly the text searched for.
        idx.index("theirs", {q or "x": {"name": q or foreign_name, "traits_json": json.dumps({"t": q})},
                             foreign_name: {"name": foreign_name, "traits_json": "{}"}}, {})
        for text in (q, foreign_name, q + "*", f'"{q}"'):
            items = idx.search("mine", text, limit=50)
            assert {i["id"] for i in items} <= {"acme", "u1"}
    finally:
        idx.close()


@settings(max_examples=200, deadline=None)
@given(st.text(min_size=1, max_size=40))
def test_exact_id_is_always_found_first(doc_id: str) -> None:
    idx = SqliteSearchIndex(":memory:")
    try:
        idx.index("t", {doc_id: {"name": "Something Else", "traits_json": "{}"},
                        "other": {"name": doc_id, "traits_json": "{}"}}, {})
        items = idx.search("t", doc_id)
        if query_terms(doc_id):
            assert items[0]["id"] == doc_id
        assert all(i["id"] in {doc_id, "other"} for i in items)
    finally:
        idx.close()


def test_concurrent_index_and_search(tmp_path: Path) -> None:
    idx = SqliteSearchIndex(tmp_path / "s.sqlite")

    def worker(n: int) -> None:
        for k in range(50):
            idx.index(f"t{n % 2}", {f"a{n}-{k}": {"name": f"Acme {n} {k}", "score": k, "traits_json": "{}"}}, {})
            idx.search(f"t{n % 2}", "acme", limit=5)

    with ThreadPoolExecutor(max_workers=8) as pool:
        for future in [pool.submit(worker, n) for n in range(8)]:
            future.result()  # re-raises a worker's failure
    assert idx.count("t0") == 200 and idx.count("t1") == 200
    idx.close()
    idx.close()
    with pytest.raises(RuntimeError):
        idx.search("t0", "acme")


# --- factory -----------------------------------------------------------------------------------


@pytest.fixture
def clean_factory(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Any:
    monkeypatch.setenv("STREAMFOLD_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("OPENSEARCH_URL", raising=False)
    reset_settings()
    search.reset_indexers()
    yield monkeypatch
    search.reset_indexers()
    reset_settings()


def test_factory_embedded_by_default(clean_factory: Any, tmp_path: Path) -> None:
    idx = get_indexer(7)
    assert isinstance(idx, SqliteSearchIndex) and isinstance(idx, SearchIndex)
    assert Path(idx.path) == tmp_path / "data" / "search-v7.sqlite"
    assert get_indexer(7) is idx and get_search(7) is idx
    assert get_indexer(8) is not idx


def test_factory_opensearch_when_url_set(clean_factory: Any) -> None:
    clean_factory.setenv("OPENSEARCH_URL", "http://127.0.0.1:1")  # nothing listens: no I/O may happen
    clean_factory.setenv("STREAMFOLD_TABLE_PREFIX", "Prod-")
    reset_settings()
    idx = get_indexer(3)
    assert isinstance(idx, OpenSearchIndex) and isinstance(idx, SearchIndex)
    assert (idx.index_name, idx.alias) == ("prod-search-v3", "prod-search")


# --- OpenSearch backend against a recording fake ------------------------------------------------


class _Transport:
    serializer = JSONSerializer()


class _Indices:
    def __init__(self, owner: FakeOpenSearch) -> None:
        self.owner = owner

    def exists(self, *, index: str) -> bool:
        return index in self.owner.indices_created

    def create(self, *, index: str, body: dict[str, Any]) -> None:
        self.owner.indices_created[index] = body

    def get_alias(self, *, name: str) -> dict[str, Any]:
        from opensearchpy.exceptions import NotFoundError

        found = {i: {"aliases": {name: {}}} for i, a in self.owner.aliases.items() if name in a}
        if not found:
            raise NotFoundError(404, "alias_not_found", {})
        return found

    def update_aliases(self, *, body: dict[str, Any]) -> None:
        self.owner.alias_calls.append(body["actions"])
        for action in body["actions"]:
            (op, spec), = action.items()
            names = self.owner.aliases.setdefault(spec["index"], set())
            (names.add if op == "add" else names.discard)(spec["alias"])


class FakeOpenSearch:
    """Records requests; stores bulk documents by ``(index, _id)``; answers searches with every
    stored document of the aliased indexes (ranking is the real cluster's job)."""

    def __init__(self) -> None:
        self.transport = _Transport()
        self.indices = _Indices(self)
        self.indices_created: dict[str, Any] = {}
        self.aliases: dict[str, set[str]] = {}
        self.alias_calls: list[list[dict[str, Any]]] = []
        self.docs: dict[tuple[str, str], dict[str, Any]] = {}
        self.searches: list[dict[str, Any]] = []
        self.bulk_kwargs: list[dict[str, Any]] = []

    def bulk(self, *, body: str, **kwargs: Any) -> dict[str, Any]:
        self.bulk_kwargs.append(kwargs)
        lines = [json.loads(line) for line in body.splitlines() if line]
        items = []
        for meta, source in zip(lines[::2], lines[1::2], strict=True):
            (op, spec), = meta.items()
            self.docs[(spec["_index"], spec["_id"])] = source
            items.append({op: {"_index": spec["_index"], "_id": spec["_id"], "status": 200}})
        return {"errors": False, "items": items}

    def search(self, *, index: str, body: dict[str, Any]) -> dict[str, Any]:
        self.searches.append(body)
        targets = {i for i, a in self.aliases.items() if index in a} or {index}
        hits = [{"_id": k[1], "_source": src} for k, src in sorted(self.docs.items()) if k[0] in targets]
        return {"hits": {"hits": hits}}

    def delete_by_query(self, *, index: str, body: dict[str, Any], **kwargs: Any) -> None:
        tenant = body["query"]["term"]["tenant_id"]
        for key in [k for k, v in self.docs.items() if k[0] == index and v["tenant_id"] == tenant]:
            del self.docs[key]


def test_opensearch_writes_deterministic_ids_and_creates_alias() -> None:
    client = FakeOpenSearch()
    idx = OpenSearchIndex(client, 1, "sf-")
    attrs = {"name": "Acme", "score": 72, "band": "green", "traits_json": '{"a": "b"}'}
    for _ in range(2):
        idx.index("t1", {"acme": attrs}, {"u1": {"user_id": "u1", "name": "Jane", "accounts": ["acme"]}})
    assert sorted(client.docs) == [("sf-search-v1", "t1:account:acme"), ("sf-search-v1", "t1:user:u1")]
    assert client.docs[("sf-search-v1", "t1:account:acme")]["id_text"] == "acme"
    assert client.indices_created == {"sf-search-v1": INDEX_BODY}
    assert client.aliases == {"sf-search-v1": {"sf-search"}}
    assert client.alias_calls == [[{"add": {"index": "sf-search-v1", "alias": "sf-search"}}]]
    assert client.bulk_kwargs[0].get("refresh") is False


def test_opensearch_query_is_tenant_filtered_and_results_rechecked() -> None:
    client = FakeOpenSearch()
    idx = OpenSearchIndex(client, 1, "sf-")
    idx.index("t1", {"acme": {"name": "Acme"}}, {})
    idx.index("t2", {"evil": {"name": "Acme Evil"}}, {})
    items = idx.search("t1", '  acme "(  ', limit=500)
    body = client.searches[-1]
    assert body["query"]["bool"]["filter"] == [{"term": {"tenant_id": "t1"}}]
    assert body["size"] == 100
    multi = body["query"]["bool"]["should"][0]["multi_match"]
    assert multi["type"] == "bool_prefix" and multi["query"] == 'acme "('
    # The fake ignores the filter; the index still never returns another tenant's document.
    assert [i["id"] for i in items] == ["acme"]
    n = len(client.searches)
    assert idx.search("t1", "   ") == [] and idx.search("t1", "acme", limit=0) == []
    assert len(client.searches) == n  # nothing to search for: no request


def test_opensearch_promote_is_one_atomic_alias_update() -> None:
    client = FakeOpenSearch()
    blue = OpenSearchIndex(client, 1, "sf-")
    blue.index("t1", {"acme": {"name": "Acme"}}, {})
    green = OpenSearchIndex(client, 2, "sf-")
    green.index("t1", {"acme": {"name": "Acme Rebuilt"}}, {})
    assert client.aliases["sf-search-v1"] == {"sf-search"} and not client.aliases.get("sf-search-v2")
    assert blue.search("t1", "acme")[0]["name"] == "Acme"
    green.promote(2)
    assert client.alias_calls[-1] == [{"remove": {"index": "sf-search-v1", "alias": "sf-search"}},
                                      {"add": {"index": "sf-search-v2", "alias": "sf-search"}}]
    assert blue.search("t1", "acme")[0]["name"] == "Acme Rebuilt"
    green.delete_tenant("t1")
    assert green.search("t1", "acme") == []


def test_module_docstring_usage_runs_as_documented(tmp_path: Any, monkeypatch: Any) -> None:
    """The usage example in chalicelib/search.py is executed, and its documented output checked."""


    monkeypatch.setenv("STREAMFOLD_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("OPENSEARCH_URL", raising=False)
    reset_settings()
    search_module.reset_indexers()
    try:
        doc = search_module.__doc__ or ""
        block = doc.split("Usage::", 1)[1]
        lines = [line[4:] for line in block.splitlines() if line.startswith("    ")]
        code = [line for line in lines if not line.startswith("#")]
        expected = ast.literal_eval(" ".join(line.lstrip("# ") for line in lines if line.startswith("#")))
        namespace: dict[str, Any] = {"get_indexer": search_module.get_indexer}
        *setup, last = code
        exec("\n".join(setup), namespace)  # our own documentation
        assert eval(last, namespace) == expected
        assert (tmp_path / "search-v1.sqlite").exists()
    finally:
        search_module.reset_indexers()
        reset_settings()
