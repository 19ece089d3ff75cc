"""The enrichment cache on SQLite and PostgreSQL: hits, TTL expiry, misses kept shorter, batching."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import event, func, select

from state.cache import MAX_KEY_LENGTH, EnrichmentCache, storage_key
from state import schema as store

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=timezone.utc)


@pytest.fixture()
def cache(database_url):
    engine = store.make_engine(database_url)
    yield EnrichmentCache(engine)
    engine.dispose()


def test_found_entries_are_hits_until_the_ttl(cache):
    cache.put_many("nppes", {"npi:1": {"data": {"npi": "1"}, "confidence": 1.0}}, NOW)
    hit = cache.get_many("nppes", ["npi:1", "npi:2"], NOW + timedelta(days=29))
    assert list(hit) == ["npi:1"] and hit["npi:1"].payload["data"] == {"npi": "1"}
    assert hit["npi:1"].fetched_at == NOW
    assert cache.get_many("nppes", ["npi:1"], NOW + timedelta(days=30, seconds=1)) == {}


def test_misses_are_cached_shorter(cache):
    cache.put_many("nppes", {"name:nowhere clinic|GA": None}, NOW)
    hit = cache.get_many("nppes", ["name:nowhere clinic|GA"], NOW + timedelta(days=2))
    assert hit["name:nowhere clinic|GA"].is_miss
    assert cache.get_many("nppes", ["name:nowhere clinic|GA"], NOW + timedelta(days=3, seconds=1)) == {}


def test_misses_are_stored_as_sql_null(cache):
    cache.put_many("nppes", {"miss": None, "hit": {"data": 1}}, NOW)
    table = store.enrichment_cache
    with cache.engine.connect() as conn:
        nulls = conn.execute(select(table.c.cache_key).where(table.c.payload.is_(None))).scalars().all()
    assert nulls == ["miss"]


def test_a_newer_put_replaces_the_entry(cache):
    cache.put_many("nppes", {"npi:1": None}, NOW)
    cache.put_many("nppes", {"npi:1": {"data": {"npi": "1"}, "confidence": 1.0}}, NOW + timedelta(days=1))
    entry = cache.get_many("nppes", ["npi:1"], NOW + timedelta(days=20))["npi:1"]
    assert not entry.is_miss and entry.fetched_at == NOW + timedelta(days=1)
    cache.put_many("nppes", {"npi:1": None}, NOW + timedelta(days=2))
    assert cache.get_many("nppes", ["npi:1"], NOW + timedelta(days=3))["npi:1"].is_miss


def test_providers_have_separate_namespaces(cache):
    cache.put_many("nppes", {"k": {"data": 1}}, NOW)
    assert cache.get_many("reference", ["k"], NOW) == {}


def test_a_batch_is_read_in_one_query_and_written_in_one_transaction(cache):
    keys = [f"npi:{i:010d}" for i in range(1_500)]
    statements: list[str] = []
    event.listen(cache.engine, "before_cursor_execute", lambda *args: statements.append(args[2]))
    cache.put_many("nppes", {key: {"data": {"n": key}} for key in keys}, NOW)
    writes = len(statements)
    found = cache.get_many("nppes", keys, NOW)
    reads = len(statements) - writes
    assert len(found) == 1_500
    assert writes == 1 and reads == 1
    with cache.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(store.enrichment_cache)).scalar_one() == 1_500


def test_long_keys_are_stored_under_a_digest(cache):
    long_key = "name:" + "very long clinic name " * 30 + "|GA"
    assert len(storage_key(long_key)) == MAX_KEY_LENGTH
    cache.put_many("nppes", {long_key: {"data": 1}}, NOW)
    assert list(cache.get_many("nppes", [long_key], NOW)) == [long_key]


def test_purge_expired(cache):
    cache.put_many("nppes", {"a": None, "b": {"data": 1}}, NOW)
    assert cache.purge_expired(NOW + timedelta(days=4)) == 1
    assert list(cache.get_many("nppes", ["a", "b"], NOW + timedelta(days=4))) == ["b"]
