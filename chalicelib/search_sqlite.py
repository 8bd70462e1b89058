"""The embedded search index: SQLite with FTS5, one file per projection version.

A plain table holds one row per ``(tenant, kind, id)`` (the upsert target, with a content
fingerprint so an unchanged document costs no FTS churn); an FTS5 table with the same rowid
holds the searchable text. The tenant is a column of the FTS table too (as one opaque token),
so the full-text index itself narrows a query to the tenant before ranking; the join on the
plain table filters on ``tenant_id`` again, so isolation never rests on tokenization.

User queries never reach FTS5 syntax: each whitespace-separated term becomes a quoted phrase
(inner quotes doubled) with a prefix star, so ``"``, ``*``, ``AND``, ``(`` or ``NEAR`` are
just text.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
from pathlib import Path
from typing import Any

from chalicelib.search_docs import (
    MAX_LIMIT,
    SearchDoc,
    SearchItem,
    clean_text,
    docs_for,
    normalize,
    query_terms,
)

__all__ = ["SqliteSearchIndex", "fts_match", "tenant_token"]

_SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS docs (
    rowid INTEGER PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    doc_id TEXT NOT NULL,
    id_norm TEXT NOT NULL,
    name_norm TEXT NOT NULL,
    source TEXT NOT NULL,
    fp TEXT NOT NULL,
    UNIQUE (tenant_id, kind, doc_id)
);
CREATE INDEX IF NOT EXISTS docs_by_id ON docs (tenant_id, id_norm);
CREATE VIRTUAL TABLE IF NOT EXISTS docs_fts USING fts5(
    tenant, name, ident, traits, related,
    tokenize = 'unicode61 remove_diacritics 2',
    prefix = '2 3 4'
);
"""

# bm25 column weights: tenant (a filter, not a signal), name, ident (id + email), traits,
# related (a user's account ids).
_BM25 = "bm25(docs_fts, 0.0, 10.0, 6.0, 1.0, 0.5)"

_SEARCH_SQL = f"""
WITH hits AS (
    SELECT rowid, {_BM25} AS rank FROM docs_fts WHERE docs_fts MATCH :match
)
SELECT d.source
FROM hits JOIN docs d ON d.rowid = hits.rowid
WHERE d.tenant_id = :tenant
ORDER BY
    d.id_norm = :qn DESC,
    d.name_norm = :qn DESC,
    substr(d.name_norm, 1, length(:qn)) = :qn DESC,
    hits.rank,
    d.kind,
    d.name_norm,
    d.doc_id
LIMIT :limit
"""


def tenant_token(tenant_id: str) -> str:
    """One alphanumeric FTS token standing for a tenant (ids may hold any characters)."""
    return "t" + hashlib.sha256(tenant_id.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def _phrase(term: str) -> str:
    return '"' + term.replace('"', '""') + '"'


def fts_match(tenant_id: str, q: str) -> str | None:
    """The FTS5 MATCH expression for a user query within one tenant; None if nothing to match.

    Every term is a quoted prefix phrase, all terms must match (implicit AND), and only the
    content columns are searched, never the tenant column.
    """
    terms = query_terms(q)
    if not terms:
        return None
    body = " ".join(_phrase(t) + "*" for t in terms)
    return f"tenant : {_phrase(tenant_token(tenant_id))} AND {{name ident traits related}} : ({body})"


class SqliteSearchIndex:
    """:class:`~chalicelib.search.SearchIndex` on SQLite FTS5 (the local, embedded backend).

    Thread-safe: one connection shared under a lock (the projector indexes from worker
    threads while the API searches). File databases use WAL, so another process (a CLI
    reading while ``streamfold up`` writes) is not blocked.

    Args:
        path: database file (parent directories are created) or ``":memory:"``.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = sqlite3.connect(
            self.path, check_same_thread=False, isolation_level=None, timeout=10.0)
        with self._lock:
            conn = self._conn
            if self.path != ":memory:":
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=NORMAL")
            conn.executescript(_SCHEMA)
            conn.execute(f"PRAGMA user_version={_SCHEMA_VERSION}")

    def __repr__(self) -> str:
        return f"SqliteSearchIndex({self.path!r})"

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise RuntimeError("search index is closed")
        return self._conn

    def index(self, tenant_id: str, accounts: dict[str, dict[str, Any]],
              users: dict[str, dict[str, Any]]) -> None:
        """Upsert the accounts and users of one projector batch (idempotent)."""
        docs = docs_for(tenant_id, accounts, users)
        if not docs:
            return
        with self._lock:
            conn = self._db()
            conn.execute("BEGIN IMMEDIATE")
            try:
                for doc in docs:
                    self._upsert(conn, doc)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    @staticmethod
    def _upsert(conn: sqlite3.Connection, doc: SearchDoc) -> None:
        fp = doc.fingerprint
        row = conn.execute("SELECT rowid, fp FROM docs WHERE tenant_id = ? AND kind = ? AND doc_id = ?",
                           (doc.tenant_id, doc.kind, doc.id)).fetchone()
        if row is not None and row[1] == fp:
            return  # same content already indexed: a redelivered batch costs one lookup
        src = doc.to_source()
        values = (doc.tenant_id, doc.kind, doc.id, src["id_norm"], src["name_norm"],
                  json.dumps(src, ensure_ascii=False), fp)
        if row is None:
            rowid = conn.execute(
                "INSERT INTO docs (tenant_id, kind, doc_id, id_norm, name_norm, source, fp) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)", values).lastrowid
        else:
            rowid = row[0]
            conn.execute("UPDATE docs SET id_norm = ?, name_norm = ?, source = ?, fp = ? WHERE rowid = ?",
                         (*values[3:], rowid))
            conn.execute("DELETE FROM docs_fts WHERE rowid = ?", (rowid,))
        conn.execute(
            "INSERT INTO docs_fts (rowid, tenant, name, ident, traits, related) VALUES (?, ?, ?, ?, ?, ?)",
            (rowid, tenant_token(doc.tenant_id), doc.name or "", clean_text(f"{doc.id} {doc.email or ''}"),
             doc.traits, clean_text(" ".join(a for a in doc.account_ids if a != doc.id))))

    def search(self, tenant_id: str, q: str, limit: int = 20) -> list[SearchItem]:
        """Rank the tenant's documents for ``q``: exact id, exact name, name prefix, then BM25.

        Returns at most ``min(limit, MAX_LIMIT)`` items; an empty or unsearchable query gives ``[]``.
        """
        limit = min(int(limit), MAX_LIMIT)
        match = fts_match(tenant_id, q)
        if limit < 1 or match is None:
            return []
        qn = normalize(" ".join(query_terms(q)))
        with self._lock:
            conn = self._db()
            # Exact-id hits come first even if the id has no indexable characters ("!!!").
            exact = conn.execute("SELECT source FROM docs WHERE tenant_id = ? AND id_norm = ? ORDER BY kind",
                                 (tenant_id, qn)).fetchall()
            ranked = conn.execute(_SEARCH_SQL, {"match": match, "tenant": tenant_id, "qn": qn,
                                                "limit": limit}).fetchall()
        out: dict[tuple[str, str], SearchItem] = {}
        for (source,) in [*exact, *ranked]:
            doc = SearchDoc.from_source(json.loads(source))
            if doc.tenant_id == tenant_id:
                out.setdefault((doc.kind, doc.id), doc.to_item())
        return list(out.values())[:limit]

    def count(self, tenant_id: str) -> int:
        """How many documents the tenant has (operations, tests)."""
        with self._lock:
            row = self._db().execute("SELECT count(*) FROM docs WHERE tenant_id = ?", (tenant_id,)).fetchone()
        return int(row[0])

    def delete_tenant(self, tenant_id: str) -> None:
        """Remove every document of a tenant."""
        with self._lock:
            conn = self._db()
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.execute("DELETE FROM docs_fts WHERE rowid IN (SELECT rowid FROM docs WHERE tenant_id = ?)",
                             (tenant_id,))
                conn.execute("DELETE FROM docs WHERE tenant_id = ?", (tenant_id,))
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def drop(self) -> None:
        """Close and delete the database file and its WAL (a retired projection version's index)."""
        self.close()
        if self.path != ":memory:":
            for suffix in ("", "-wal", "-shm"):
                Path(self.path + suffix).unlink(missing_ok=True)

    def close(self) -> None:
        """Close the connection (idempotent)."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
