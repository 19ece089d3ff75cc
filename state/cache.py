"""The enrichment cache in the state store (table ``lf_enrichment_cache``).

Keys are (provider, normalized lookup key). A found value lives ``ttl`` (30 days by default), a
miss (payload NULL) ``miss_ttl`` (3 days), so a backfill never looks the same organization up
twice and a registry change is picked up within a month. Reads and writes are batched: one query
reads every key of a batch, one transaction writes them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine, and_, delete, null, select

from leadflow.batches import chunked
from leadflow.clock import utc as as_utc
from state.schema import enrichment_cache

DEFAULT_TTL = timedelta(days=30)
DEFAULT_MISS_TTL = timedelta(days=3)
MAX_KEY_LENGTH = 300
KEYS_PER_STATEMENT = 5_000


@dataclass(frozen=True)
class CacheEntry:
    payload: dict[str, Any] | None  # None: a cached miss
    fetched_at: datetime
    expires_at: datetime

    @property
    def is_miss(self) -> bool:
        return self.payload is None


def storage_key(key: str) -> str:
    """``key`` itself, or a stable digest-suffixed form when it does not fit the column."""
    if len(key) <= MAX_KEY_LENGTH:
        return key
    digest = hashlib.sha256(key.encode()).hexdigest()
    return f"{key[: MAX_KEY_LENGTH - 65]}#{digest}"


_chunks = chunked


def _upsert(dialect: str, with_payload: bool) -> Any:
    """INSERT ... ON CONFLICT (provider, cache_key) DO UPDATE, for PostgreSQL and SQLite; without
    a payload the row's payload becomes SQL NULL (a miss)."""
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as dialect_insert
    elif dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as dialect_insert
    else:
        raise NotImplementedError(f"enrichment cache: no upsert for dialect {dialect!r}")
    statement = dialect_insert(enrichment_cache)
    if not with_payload:
        statement = statement.values(payload=null())
    excluded = statement.excluded
    return statement.on_conflict_do_update(
        index_elements=[enrichment_cache.c.provider, enrichment_cache.c.cache_key],
        set_={"payload": excluded.payload if with_payload else null(), "fetched_at": excluded.fetched_at,
              "expires_at": excluded.expires_at},
    )


class EnrichmentCache:
    def __init__(self, engine: Engine, ttl: timedelta = DEFAULT_TTL, miss_ttl: timedelta = DEFAULT_MISS_TTL) -> None:
        self.engine = engine
        self.ttl = ttl
        self.miss_ttl = miss_ttl

    def get_many(self, provider: str, keys: Iterable[str], now: datetime) -> dict[str, CacheEntry]:
        """The unexpired entries among ``keys`` (by the caller's key), read in one query per 5,000 keys."""
        by_storage = {storage_key(key): key for key in keys}
        now = as_utc(now)
        found: dict[str, CacheEntry] = {}
        table = enrichment_cache
        with self.engine.connect() as conn:
            for chunk in _chunks(list(by_storage), KEYS_PER_STATEMENT):
                rows = conn.execute(
                    select(table.c.cache_key, table.c.payload, table.c.fetched_at, table.c.expires_at).where(
                        and_(table.c.provider == provider, table.c.cache_key.in_(chunk))
                    )
                )
                for row in rows:
                    entry = CacheEntry(row.payload, as_utc(row.fetched_at), as_utc(row.expires_at))
                    if entry.expires_at > now:
                        found[by_storage[row.cache_key]] = entry
        return found

    def put_many(self, provider: str, entries: Mapping[str, dict[str, Any] | None], now: datetime) -> None:
        """Store found payloads and misses (None, stored as SQL NULL) in one transaction,
        replacing older entries."""
        now = as_utc(now)
        found = [self._row(provider, key, now, self.ttl) | {"payload": p} for key, p in entries.items() if p is not None]
        misses = [self._row(provider, key, now, self.miss_ttl) for key, p in entries.items() if p is None]
        if not found and not misses:
            return
        dialect = self.engine.dialect.name
        with self.engine.begin() as conn:
            if found:
                conn.execute(_upsert(dialect, with_payload=True), found)
            if misses:
                conn.execute(_upsert(dialect, with_payload=False), misses)

    @staticmethod
    def _row(provider: str, key: str, now: datetime, ttl: timedelta) -> dict[str, Any]:
        return {"provider": provider, "cache_key": storage_key(key), "fetched_at": now, "expires_at": now + ttl}

    def purge_expired(self, now: datetime) -> int:
        with self.engine.begin() as conn:
            result = conn.execute(delete(enrichment_cache).where(enrichment_cache.c.expires_at <= as_utc(now)))
        return result.rowcount or 0
