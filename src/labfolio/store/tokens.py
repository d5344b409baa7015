"""API tokens of the team server: created, listed, revoked and checked against a SQL store.

A token is shown once, when it is created; the store keeps only its SHA-256. Checking a token
hashes what was presented and compares it with every live token's hash with
``hmac.compare_digest``, so the time taken says nothing about how much of a guess was right.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from dataclasses import dataclass

from sqlalchemy import insert, select, update

from ..errors import ConfigError
from . import schema as t

__all__ = ["TokenInfo", "TokenChecker", "create_token", "list_tokens", "revoke_token", "hash_token",
           "TOKEN_PREFIX"]

TOKEN_PREFIX = "lf_"
_SHOWN_CHARS = 10  # "lf_" plus 7 random characters: enough to tell tokens apart in a list


@dataclass(frozen=True)
class TokenInfo:
    id: int
    name: str
    prefix: str
    created_at: float
    last_used_at: float | None
    revoked_at: float | None

    @property
    def active(self) -> bool:
        return self.revoked_at is None


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def create_token(store, name: str) -> tuple[str, TokenInfo]:
    """A new token named ``name``: (the secret, shown only now, and its listing entry)."""
    name = (name or "").strip()
    if not name:
        raise ConfigError("a token needs a name that says who or what uses it, e.g. --name gpu-a")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    now = time.time()
    with store.engine.begin() as conn:
        pk = conn.execute(insert(t.api_tokens).values(
            name=name[:200], prefix=token[:_SHOWN_CHARS], token_hash=hash_token(token),
            created_at=now)).inserted_primary_key[0]
    return token, TokenInfo(int(pk), name[:200], token[:_SHOWN_CHARS], now, None, None)


def list_tokens(store, *, include_revoked: bool = False) -> list[TokenInfo]:
    query = select(t.api_tokens).order_by(t.api_tokens.c.id)
    if not include_revoked:
        query = query.where(t.api_tokens.c.revoked_at.is_(None))
    with store.engine.connect() as conn:
        return [TokenInfo(r.id, r.name, r.prefix, r.created_at, r.last_used_at, r.revoked_at)
                for r in conn.execute(query)]


def revoke_token(store, which: str) -> list[TokenInfo]:
    """Revoke the live tokens whose id, name or shown prefix is ``which``; returns them."""
    matches = [info for info in list_tokens(store)
               if which in (str(info.id), info.name, info.prefix)]
    if not matches:
        raise ConfigError(f"no live token with id, name or prefix {which!r}; see `labfolio token list`")
    with store.engine.begin() as conn:
        conn.execute(update(t.api_tokens).where(t.api_tokens.c.id.in_([m.id for m in matches]))
                     .values(revoked_at=time.time()))
    return matches


class TokenChecker:
    """Checks presented tokens against the store, re-reading the live hashes every few seconds
    (so a revoked token stops working within ``refresh_s`` without a query per request)."""

    def __init__(self, store, refresh_s: float = 2.0):
        self.store = store
        self.refresh_s = refresh_s
        self._lock = threading.Lock()
        self._hashes: list[tuple[int, str]] = []
        self._loaded_at = -1e9
        self._used: dict[int, float] = {}
        self._used_written_at = 0.0

    def _live_hashes(self) -> list[tuple[int, str]]:
        with self._lock:
            if time.monotonic() - self._loaded_at > self.refresh_s:
                with self.store.engine.connect() as conn:
                    self._hashes = [(r.id, r.token_hash) for r in conn.execute(
                        select(t.api_tokens.c.id, t.api_tokens.c.token_hash)
                        .where(t.api_tokens.c.revoked_at.is_(None)))]
                self._loaded_at = time.monotonic()
                self._flush_usage()
            return self._hashes

    def has_tokens(self) -> bool:
        return bool(self._live_hashes())

    def check(self, presented: str | None) -> int | None:
        """The id of the token ``presented`` matches, else None."""
        if not presented:
            return None
        digest = hash_token(presented)
        found = None
        for token_id, stored in self._live_hashes():
            # Compare against every token, without stopping early, so timing reveals nothing.
            if hmac.compare_digest(digest, stored):
                found = token_id
        if found is not None:
            self._used[found] = time.time()
        return found

    def _flush_usage(self) -> None:
        # last_used_at is informational: written at most every refresh, never per request.
        if not self._used:
            return
        used, self._used = self._used, {}
        try:
            with self.store.engine.begin() as conn:
                for token_id, when in used.items():
                    conn.execute(update(t.api_tokens).where(t.api_tokens.c.id == token_id)
                                 .values(last_used_at=when))
        except Exception:  # never fail a request over bookkeeping
            pass
