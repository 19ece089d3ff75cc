"""Per-lead claims and accepted notification ids.

Claims: the leads a run is writing right now, so that a by-id run (``requalify_leads``, fed by CRM
notifications) and a window run (sync, backfill, rescore) never plan and write the same lead at the
same time, while neither waits for the other's whole run. A claim is a short lease: a run that dies
leaves claims that lapse by themselves.

Notification ids: the event ids the webhook receiver accepted (HubSpot ``eventId``, a Salesforce
notification ``Id``), so a replayed delivery is recognised; old ids are pruned.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta, timezone

from sqlalchemy import Engine, and_, delete, select
from sqlalchemy.dialects import postgresql, sqlite

from state.schema import lead_claims, notification_ids

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


def claim(engine: Engine, crm: str, crm_ids: Iterable[str], holder: str, lease: timedelta) -> set[str]:
    """Claim the leads for ``holder``; returns those it now holds (those another live holder has
    are left out). Lapsed claims are taken over; a claim ``holder`` already has is renewed."""
    ids = sorted(set(crm_ids))
    if not ids:
        return set()
    now = _now()
    held: set[str] = set()
    with engine.begin() as conn:
        for chunk in _chunks(ids):
            mine_or_lapsed = and_(lead_claims.c.crm == crm, lead_claims.c.crm_id.in_(chunk),
                                  (lead_claims.c.expires_at <= now) | (lead_claims.c.holder == holder))
            conn.execute(delete(lead_claims).where(mine_or_lapsed))
            _insert_ignoring_duplicates(conn, lead_claims, [
                {"crm": crm, "crm_id": crm_id, "holder": holder, "expires_at": now + lease} for crm_id in chunk])
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
