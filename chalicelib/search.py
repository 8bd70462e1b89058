"""The search projection: accounts and users of a tenant, found by name, id and traits.

The projector calls :meth:`SearchIndex.index` after each batch with the view items it wrote;
``GET /api/search`` calls :meth:`SearchIndex.search`. Two backends keep one contract (the
contract tests in ``tests/functional/test_search_contract.py`` run against both):

- :class:`~chalicelib.search_opensearch.OpenSearchIndex` on AWS (``OPENSEARCH_URL`` set):
  an index per projection version behind an alias, bulk writes.
- :class:`~chalicelib.search_sqlite.SqliteSearchIndex` locally: SQLite FTS5 in
  ``<data_dir>/search-v<N>.sqlite``.

Usage::

    idx = get_indexer(1)
    idx.index("t1", {"acme": {"name": "Acme Corp", "score": 72, "band": "green"}}, {})
    idx.search("t1", "acm")
    # [{"kind": "account", "id": "acme", "name": "Acme Corp", "account_id": "acme",
    #   "score": 72, "band": "green"}]
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any, Protocol, runtime_checkable

from chalicelib.search_docs import DEFAULT_LIMIT, MAX_LIMIT, SearchDoc, SearchItem
from chalicelib.search_opensearch import OpenSearchIndex, build_client
from chalicelib.search_sqlite import SqliteSearchIndex
from chalicelib.settings import get_settings

__all__ = [
    "DEFAULT_LIMIT",
    "MAX_LIMIT",
    "OpenSearchIndex",
    "SearchDoc",
    "SearchIndex",
    "SearchItem",
    "SqliteSearchIndex",
    "get_indexer",
    "drop_index",
    "get_search",
    "reset_indexers",
]


@runtime_checkable
class SearchIndex(Protocol):
    """What the projector writes to and the API reads from."""

    def index(self, tenant_id: str, accounts: dict[str, dict[str, Any]],
              users: dict[str, dict[str, Any]]) -> None:
        """Upsert one document per account / user (idempotent; replaces earlier content).

        Args:
            tenant_id: owner of every document in the call.
            accounts: ``{account_id: summary_attrs}`` as written to the view.
            users: ``{user_key: link}`` as written to the view (``user_id``, ``name``, ``email``,
                ``traits_json``, optional ``accounts`` list).
        """
        ...

    def search(self, tenant_id: str, q: str, limit: int = DEFAULT_LIMIT) -> list[SearchItem]:
        """The tenant's best matches for ``q``, best first, at most ``min(limit, MAX_LIMIT)``.

        Terms match by prefix ("acm" finds "Acme Corp"); an exact id match ranks first. Any
        text is a valid query (operators and quotes are plain text); an empty one finds nothing.
        """
        ...

    def delete_tenant(self, tenant_id: str) -> None:
        """Remove every document of a tenant."""
        ...

    def close(self) -> None:
        """Release connections."""
        ...


# Every index get_indexer built, so reset_indexers can close them (lru_cache exposes no values).
_opened: list[SearchIndex] = []


@lru_cache(maxsize=8)
def get_indexer(version: int) -> SearchIndex:
    """The process-wide search index of a projection version (built lazily, once).

    OpenSearch when ``OPENSEARCH_URL`` is set (index ``<table_prefix>search-v<N>``), else SQLite
    FTS5 at ``<data_dir>/search-v<N>.sqlite``. Building it does no network I/O.
    """
    s = get_settings()
    idx: SearchIndex
    if s.opensearch_url:

        idx = OpenSearchIndex(build_client(s.opensearch_url, s.region), version, s.table_prefix)
    else:
        idx = SqliteSearchIndex(s.data_dir / f"search-v{int(version)}.sqlite")
    _opened.append(idx)
    return idx


def get_search(version: int) -> SearchIndex:
    """The index the API reads for a projection version (the same object as :func:`get_indexer`)."""
    return get_indexer(version)


def reset_indexers() -> None:
    """Close and forget the cached indexes (tests and the CLI change settings between uses)."""
    get_indexer.cache_clear()
    while _opened:
        _opened.pop().close()


def drop_index(version: int) -> None:
    """Delete the search index of a projection version (after its view table is retired).

    OpenSearch: the index ``<table_prefix>search-v<N>`` (refused while the read alias targets it);
    locally: the SQLite file. A cached indexer of any version is closed first (``lru_cache`` cannot
    forget one entry; the others reopen lazily), so no handle keeps writing to a deleted index.
    """
    s = get_settings()
    if _opened:
        reset_indexers()
    if s.opensearch_url:
        OpenSearchIndex(build_client(s.opensearch_url, s.region), version, s.table_prefix).drop()
        return
    path = s.data_dir / f"search-v{int(version)}.sqlite"
    if path.exists():
        SqliteSearchIndex(path).drop()
