"""The AWS search index: OpenSearch through opensearch-py.

One index per projection version (``<prefix>search-v<N>``) behind a read alias
(``<prefix>search``). The projector of version N writes to its own index; queries go through
the alias, and :meth:`OpenSearchIndex.promote` re-points it atomically after a replay, the
same blue/green move as the view tables. The first index created for a prefix takes the alias,
so a fresh deployment is searchable without a promote.

``opensearchpy`` is imported lazily: importing this module (or building the index object)
does no I/O and needs no server; the index and alias are ensured on first use.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import boto3

from chalicelib.search_docs import MAX_LIMIT, SearchDoc, SearchItem, docs_for, normalize, query_terms

__all__ = ["INDEX_BODY", "OpenSearchIndex", "alias_name", "build_client", "index_name"]

INDEX_BODY: dict[str, Any] = {
    "settings": {
        "analysis": {
            "normalizer": {"folded": {"type": "custom", "filter": ["lowercase", "asciifolding"]}},
        },
    },
    "mappings": {
        "dynamic": False,
        "properties": {
            "tenant_id": {"type": "keyword"},
            "kind": {"type": "keyword"},
            "id": {"type": "keyword"},
            "id_text": {"type": "search_as_you_type"},
            "id_norm": {"type": "keyword"},
            "name": {"type": "search_as_you_type"},
            "name_norm": {"type": "keyword"},
            "email": {"type": "search_as_you_type"},
            "account_ids": {"type": "keyword", "fields": {"text": {"type": "text"}}},
            "plan": {"type": "keyword"},
            "score": {"type": "double"},
            "band": {"type": "keyword"},
            "traits": {"type": "text"},
        },
    },
}

# multi_match bool_prefix over the search_as_you_type sub-fields: the last term is a prefix
# ("acm" -> "Acme"), earlier terms whole words.
_FIELDS = [
    "name^10", "name._2gram^10", "name._3gram^10",
    "id_text^6", "id_text._2gram^6", "id_text._3gram^6",
    "email^4", "email._2gram^4", "email._3gram^4",
    "traits", "account_ids.text^0.5",
]


def index_name(prefix: str, version: int) -> str:
    """``<prefix>search-v<N>`` (lower-cased: OpenSearch index names must be)."""
    return f"{prefix}search-v{int(version)}".lower()


def alias_name(prefix: str) -> str:
    """``<prefix>search``: the alias queries read through."""
    return f"{prefix}search".lower()


def build_client(url: str, region: str) -> Any:
    """An ``OpenSearch`` client for ``url``.

    Amazon OpenSearch Service endpoints (``*.amazonaws.com``) are signed with SigV4 from the
    Lambda role (``aoss`` for Serverless collections, ``es`` otherwise); any other URL is used
    as is (credentials, if any, in the URL's user info).
    """
    # deferred: heavy optional dependency, only when OPENSEARCH_URL is set
    from opensearchpy import OpenSearch, Urllib3AWSV4SignerAuth, Urllib3HttpConnection

    host = urlsplit(url).hostname or ""
    if host.endswith(".amazonaws.com"):

        service = "aoss" if ".aoss." in host else "es"
        auth = Urllib3AWSV4SignerAuth(boto3.Session().get_credentials(), region, service)
        return OpenSearch(hosts=[url], http_auth=auth, use_ssl=url.startswith("https"), verify_certs=True,
                          connection_class=Urllib3HttpConnection, timeout=10, max_retries=2,
                          retry_on_timeout=True)
    return OpenSearch(hosts=[url], timeout=10, max_retries=2, retry_on_timeout=True)


class OpenSearchIndex:
    """:class:`~chalicelib.search.SearchIndex` on OpenSearch.

    Args:
        client: an ``opensearchpy.OpenSearch`` client (thread-safe; shared by worker threads).
        version: projection version: writes go to ``<prefix>search-v<version>``.
        prefix: name prefix (usually the table prefix).
        refresh: ``refresh`` argument of bulk writes; ``False`` in production (near-real-time
            is enough and cheaper), ``True``/``"wait_for"`` where a test reads its own writes.
    """

    def __init__(self, client: Any, version: int, prefix: str = "", refresh: bool | str = False) -> None:
        self.client = client
        self.version = int(version)
        self.prefix = prefix
        self.index_name = index_name(prefix, version)
        self.alias = alias_name(prefix)
        self.refresh = refresh
        self._ready = False
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"OpenSearchIndex({self.index_name!r} via {self.alias!r})"

    # --- setup -------------------------------------------------------------------------------

    def _create_index(self, name: str) -> None:
        # deferred: heavy optional dependency, only when OPENSEARCH_URL is set
        from opensearchpy.exceptions import RequestError

        if self.client.indices.exists(index=name):
            return
        try:
            self.client.indices.create(index=name, body=INDEX_BODY)
        except RequestError as exc:
            # Another container created it between our check and create: that is fine.
            if exc.error != "resource_already_exists_exception":
                raise

    def _current_targets(self) -> list[str]:
        # deferred: heavy optional dependency, only when OPENSEARCH_URL is set
        from opensearchpy.exceptions import NotFoundError

        try:
            return sorted(self.client.indices.get_alias(name=self.alias))
        except NotFoundError:
            return []

    def ensure(self) -> None:
        """Create this version's index (with mappings) if missing; point the alias at it if unset."""
        if self._ready:
            return
        with self._lock:
            if self._ready:
                return
            self._create_index(self.index_name)
            if not self._current_targets():
                self.client.indices.update_aliases(
                    body={"actions": [{"add": {"index": self.index_name, "alias": self.alias}}]})
            self._ready = True

    def promote(self, version: int) -> None:
        """Point the read alias at ``<prefix>search-v<version>`` in one atomic alias update."""
        target = index_name(self.prefix, version)
        self._create_index(target)
        actions: list[dict[str, Any]] = [{"remove": {"index": name, "alias": self.alias}}
                                         for name in self._current_targets() if name != target]
        actions.append({"add": {"index": target, "alias": self.alias}})
        self.client.indices.update_aliases(body={"actions": actions})

    # --- SearchIndex ---------------------------------------------------------------------------

    def _actions(self, docs: list[SearchDoc]) -> Iterator[dict[str, Any]]:
        for doc in docs:
            # id_text: the id again, analysed, so ids are found by prefix like names.
            source = {**doc.to_source(), "id_text": doc.id}
            yield {"_op_type": "index", "_index": self.index_name, "_id": doc.key, "_source": source}

    def index(self, tenant_id: str, accounts: dict[str, dict[str, Any]],
              users: dict[str, dict[str, Any]]) -> None:
        """Upsert a projector batch with one bulk request per 500 documents (idempotent: ``_id`` is
        ``tenant:kind:id``). Raises ``BulkIndexError`` if any document failed, so the stream
        batch is retried."""
        # deferred: heavy optional dependency, only when OPENSEARCH_URL is set
        from opensearchpy import helpers

        docs = docs_for(tenant_id, accounts, users)
        if not docs:
            return
        self.ensure()
        helpers.bulk(self.client, self._actions(docs), refresh=self.refresh, chunk_size=500)

    def query(self, tenant_id: str, q: str, limit: int) -> dict[str, Any] | None:
        """The search request body for ``q`` (None when there is nothing to search for)."""
        terms = query_terms(q)
        if not terms or limit < 1:
            return None
        text = " ".join(terms)
        qn = normalize(text)
        return {
            "size": limit,
            "track_total_hits": False,
            "query": {"bool": {
                "filter": [{"term": {"tenant_id": tenant_id}}],
                "should": [
                    {"multi_match": {"query": text, "type": "bool_prefix", "operator": "and", "fields": _FIELDS}},
                    {"term": {"id_norm": {"value": qn, "boost": 1000.0}}},
                    {"term": {"name_norm": {"value": qn, "boost": 100.0}}},
                    {"prefix": {"name_norm": {"value": qn, "boost": 20.0}}},
                ],
                "minimum_should_match": 1,
            }},
            "sort": ["_score", {"kind": "asc"}, {"name_norm": "asc"}, {"id": "asc"}],
        }

    def search(self, tenant_id: str, q: str, limit: int = 20) -> list[SearchItem]:
        """Rank the tenant's documents for ``q`` (read through the alias)."""
        body = self.query(tenant_id, q, min(int(limit), MAX_LIMIT))
        if body is None:
            return []
        self.ensure()
        resp = self.client.search(index=self.alias, body=body)
        out: dict[tuple[str, str], SearchItem] = {}
        for hit in resp["hits"]["hits"]:
            doc = SearchDoc.from_source(hit["_source"])
            # The filter already scopes the query; re-checking costs nothing and guards isolation.
            if doc.tenant_id == tenant_id:
                out.setdefault((doc.kind, doc.id), doc.to_item())
        return list(out.values())[:body["size"]]

    def delete_tenant(self, tenant_id: str) -> None:
        """Remove every document of a tenant from this version's index."""
        self.ensure()
        self.client.delete_by_query(index=self.index_name, body={"query": {"term": {"tenant_id": tenant_id}}},
                                    refresh=True, conflicts="proceed")

    def drop(self) -> None:
        """Delete this version's index (a retired projection version); never the one the read alias targets."""
        if self.index_name in self._current_targets():
            raise RuntimeError(f"{self.index_name} is the target of {self.alias}: promote another version first")
        self.client.indices.delete(index=self.index_name, ignore_unavailable=True)
        self._ready = False

    def close(self) -> None:
        """Close the client's connections."""
        close = getattr(self.client, "close", None)
        if callable(close):
            close()
