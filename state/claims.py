"""Per-lead claims and accepted notification ids.

Claims: the leads a run is writing right now, so that a by-id run (``requalify_leads``, fed by CRM
notifications) and a window run (sync, backfill, rescore) never plan and write the same lead at the
same time, while neither waits for the other's whole run. A claim is live while its lease lasts
and the run lock it was taken under (``lock_holder``: the CRM's lock, ``<crm>:by-id``, or a
partitioned backfill's parent) is still held: a run that dies leaves claims that lapse with its
lease, or at once when the next run takes its lock over (a crashed run's leads are never stuck).

Notification ids: the event ids the webhook receiver accepted (HubSpot ``eventId``, a Salesforce
notification ``Id``), so a replayed delivery is recognised; old ids are pruned.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta, timezone

from sqlalchemy import Engine, and_, delete, select
from sqlalchemy.dialects import postgresql, sqlite

from state.schema import lead_claims, notification_ids, run_locks

_CHUNK = 500


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _insert_ignoring_duplicates(conn, table, rows: list[dict]) -> None:
    """INSERT ... ON CONFLICT DO NOTHING (SQLite and PostgreSQL)."""
    if not rows:
        return
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    conn.execute(dialect.insert(table).on_conflict_do_nothing(), rows)


def _chunks(items: list[str]) -> Iterable[list[str]]:
    for start in range(0, len(items), _CHUNK):
        yield items[start:start + _CHUNK]


def claim(engine: Engine, crm: str, crm_ids: Iterable[str], holder: str, lease: timedelta,
          lock_holder: str | None = None) -> set[str]:
    """Claim the leads for ``holder`` (running under the run lock of ``lock_holder``, default
    ``holder``); returns those it now holds (those another live claim has are left out). Claims
    that lapsed or whose run lock is gone are taken over; a claim ``holder`` already has is renewed."""
    ids = sorted(set(crm_ids))
    if not ids:
        return set()
    now = _now()
    held: set[str] = set()
    live_locks = select(run_locks.c.holder).where(run_locks.c.crm.in_([crm, f"{crm}:by-id"]),
                                                  run_locks.c.expires_at > now)
    with engine.begin() as conn:
        for chunk in _chunks(ids):
            taken_over = and_(lead_claims.c.crm == crm, lead_claims.c.crm_id.in_(chunk),
                              (lead_claims.c.expires_at <= now) | (lead_claims.c.holder == holder)
                              | lead_claims.c.lock_holder.not_in(live_locks))
            conn.execute(delete(lead_claims).where(taken_over))
            _insert_ignoring_duplicates(conn, lead_claims, [
                {"crm": crm, "crm_id": crm_id, "holder": holder, "lock_holder": lock_holder or holder,
                 "expires_at": now + lease} for crm_id in chunk])
            held.update(conn.execute(select(lead_claims.c.crm_id).where(
                lead_claims.c.crm == crm, lead_claims.c.crm_id.in_(chunk), lead_claims.c.holder == holder)).scalars())
    return held


def release(engine: Engine, crm: str, crm_ids: Iterable[str], holder: str) -> None:
    ids = sorted(set(crm_ids))
    with engine.begin() as conn:
        for chunk in _chunks(ids):
            conn.execute(delete(lead_claims).where(lead_claims.c.crm == crm, lead_claims.c.crm_id.in_(chunk),
                                                   lead_claims.c.holder == holder))


def accept_new(engine: Engine, source: str, event_ids: Iterable[str], keep: timedelta) -> set[str]:
    """Record notification ids; returns those not seen before (within ``keep``). Safe under
    concurrent deliveries: the primary key decides who saw an id first."""
    ids = sorted(set(event_ids))
    if not ids:
        return set()
    now = _now()
    fresh: set[str] = set()
    with engine.begin() as conn:
        conn.execute(delete(notification_ids).where(notification_ids.c.source == source,
                                                    notification_ids.c.received_at < now - keep))
        dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
        for chunk in _chunks(ids):
            inserted = conn.execute(
                dialect.insert(notification_ids).on_conflict_do_nothing().returning(notification_ids.c.event_id),
                [{"source": source, "event_id": i, "received_at": now} for i in chunk])
            fresh.update(inserted.scalars())
    return fresh
