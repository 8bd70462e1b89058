"""Search documents: what the search projection stores per account and per user.

The projector hands the search index the dicts it just wrote to the view table
(``streams.writer.summary_attrs`` for accounts, ``_user_link`` for users). This module
turns them into one backend-neutral :class:`SearchDoc` per ``(tenant, kind, id)``, so the
embedded (SQLite FTS5) and the OpenSearch backends index exactly the same content and answer
in exactly the same wire shape (:class:`SearchItem`).
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Literal, TypedDict

__all__ = [
    "DEFAULT_LIMIT",
    "MAX_LIMIT",
    "MAX_QUERY_CHARS",
    "Kind",
    "SearchDoc",
    "SearchItem",
    "account_doc",
    "clean_id",
    "clean_text",
    "docs_for",
    "normalize",
    "query_terms",
    "traits_text",
    "user_doc",
]

Kind = Literal["account", "user"]

DEFAULT_LIMIT = 20
MAX_LIMIT = 100
# Queries longer than this are cut: nobody types more, and it bounds the work per query
# (FTS5 phrases, OpenSearch clause counts).
MAX_QUERY_CHARS = 256
MAX_QUERY_TERMS = 16
# Trait text is for finding, not for storing documents: cap it so one huge trait blob
# cannot bloat the index.
MAX_TRAITS_CHARS = 8_000

# Control characters (NUL in particular ends an FTS5 string early) and lone surrogates
# (not encodable as UTF-8, so neither SQLite nor JSON can carry them).
_UNSAFE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ud800-\udfff]")

_SURROGATES = re.compile(r"[\ud800-\udfff]")


class SearchItem(TypedDict):
    """One hit of ``GET /api/search`` (wire format)."""

    kind: Kind
    id: str
    name: str | None
    account_id: str | None
    score: int | float | None
    band: str | None


def clean_text(value: Any) -> str:
    """``value`` as text safe for every backend (no control characters, no lone surrogates)."""
    text = value if isinstance(value, str) else ("" if value is None else str(value))
    return _UNSAFE.sub(" ", text)


def clean_id(value: Any) -> str:
    """An id as given, except lone surrogates (unencodable; DynamoDB cannot hold them either).

    Ids are not otherwise cleaned: the API returns them for links, so they must stay exact.
    """
    return _SURROGATES.sub("\ufffd", value if isinstance(value, str) else str(value))


def normalize(value: str) -> str:
    """Case-, width- and spacing-insensitive form for exact / prefix ranking (``"ACME" == " acme"``)."""
    return " ".join(unicodedata.normalize("NFKC", clean_text(value)).casefold().split())


def query_terms(q: str) -> list[str]:
    """The whitespace-separated terms of a user query (cleaned, bounded in length and count)."""
    return clean_text(q)[:MAX_QUERY_CHARS].split()[:MAX_QUERY_TERMS]


def traits_text(traits_json: Any) -> str:
    """Flatten a traits JSON document (or dict) to searchable text: the scalar values, once each.

    Keys are left out on purpose: every account has a ``plan`` trait, so matching on the word
    "plan" would return them all.
    """
    if isinstance(traits_json, str):
        try:
            traits: Any = json.loads(traits_json)
        except ValueError:
            return clean_text(traits_json)[:MAX_TRAITS_CHARS]
    else:
        traits = traits_json
    seen: dict[str, None] = {}
    stack = [traits]
    size = 0
    while stack and size < MAX_TRAITS_CHARS:
        value = stack.pop()
        if isinstance(value, dict):
            stack.extend(reversed(list(value.values())))
        elif isinstance(value, (list, tuple)):
            stack.extend(reversed(value))
        elif value is not None and not isinstance(value, bool):
            text = clean_text(value).strip()
            if text and text not in seen:
                seen[text] = None
                size += len(text) + 1
    return " ".join(seen)[:MAX_TRAITS_CHARS]


def _number(value: Any) -> int | float | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, (int, float)):
        return value
    return None


def _opt_str(value: Any) -> str | None:
    return clean_text(value) if isinstance(value, str) and value else None


@dataclass(frozen=True)
class SearchDoc:
    """A searchable account or user of one tenant.

    Attributes:
        tenant_id: owner; every query is filtered on it.
        kind: ``"account"`` or ``"user"``.
        id: the account id or user key.
        name: display name (users: name, else email).
        account_ids: accounts the document belongs to (an account: itself).
        plan: account plan trait.
        email: user email.
        score: account health score (users: None).
        band: account health band (users: None).
        traits: traits flattened to text.
    """

    tenant_id: str
    kind: Kind
    id: str
    name: str | None
    account_ids: tuple[str, ...]
    plan: str | None
    email: str | None
    score: int | float | None
    band: str | None
    traits: str

    @property
    def key(self) -> str:
        """Deterministic document id: ``"<tenant>:<kind>:<id>"`` (an upsert replaces it)."""
        return f"{self.tenant_id}:{self.kind}:{self.id}"

    @property
    def account_id(self) -> str | None:
        return self.account_ids[0] if self.account_ids else None

    @property
    def fingerprint(self) -> str:
        """Digest of the content: an unchanged document need not be rewritten."""
        raw = json.dumps(self.to_source(), sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(raw.encode()).hexdigest()[:32]

    def to_item(self) -> SearchItem:
        """The API wire shape of this document."""
        return SearchItem(kind=self.kind, id=self.id, name=self.name, account_id=self.account_id,
                          score=self.score, band=self.band)

    def to_source(self) -> dict[str, Any]:
        """The stored form (OpenSearch ``_source``; SQLite columns)."""
        return {
            "tenant_id": self.tenant_id, "kind": self.kind, "id": self.id, "id_norm": normalize(self.id),
            "name": self.name, "name_norm": normalize(self.name or ""), "account_ids": list(self.account_ids),
            "plan": self.plan, "email": self.email, "score": self.score, "band": self.band,
            "traits": self.traits,
        }

    @classmethod
    def from_source(cls, src: dict[str, Any]) -> SearchDoc:
        """Inverse of :meth:`to_source`."""
        return cls(tenant_id=src["tenant_id"], kind=src["kind"], id=src["id"], name=src.get("name"),
                   account_ids=tuple(src.get("account_ids") or ()), plan=src.get("plan"),
                   email=src.get("email"), score=_number(src.get("score")), band=src.get("band"),
                   traits=src.get("traits") or "")


def account_doc(tenant_id: str, account_id: str, attrs: dict[str, Any]) -> SearchDoc:
    """The document of an account from its view SUMMARY attributes (``summary_attrs``)."""
    aid = clean_id(account_id)
    return SearchDoc(
        tenant_id=tenant_id, kind="account", id=aid,
        name=_opt_str(attrs.get("name")) or aid, account_ids=(aid,),
        plan=_opt_str(attrs.get("plan")), email=None,
        score=_number(attrs.get("score")), band=_opt_str(attrs.get("band")),
        traits=traits_text(attrs.get("traits_json") or "{}"),
    )


def user_doc(tenant_id: str, user_key: str, link: dict[str, Any]) -> SearchDoc:
    """The document of a user from its link dict (``_user_link``; optional ``accounts`` list)."""
    uid = clean_id(user_key)
    accounts = link.get("accounts") or []
    account_ids = tuple(dict.fromkeys(clean_id(a) for a in accounts if isinstance(a, str) and a))
    email = _opt_str(link.get("email"))
    return SearchDoc(
        tenant_id=tenant_id, kind="user", id=uid,
        name=_opt_str(link.get("name")) or email, account_ids=account_ids,
        plan=None, email=email, score=None, band=None,
        traits=traits_text(link.get("traits_json") or "{}"),
    )


def docs_for(tenant_id: str, accounts: dict[str, dict[str, Any]],
             users: dict[str, dict[str, Any]]) -> list[SearchDoc]:
    """All documents of one projector batch, in a deterministic order."""
    return ([account_doc(tenant_id, k, accounts[k]) for k in sorted(accounts)]
            + [user_doc(tenant_id, k, users[k]) for k in sorted(users)])
