"""A per-CRM run lock in the state store, so two runs never overlap on the same CRM, even when
they come from different machines or bypass Prefect's concurrency limit (a CLI run)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone

from sqlalchemy import Engine, delete, insert, update
from sqlalchemy.exc import IntegrityError

from leadflow.store import run_locks

DEFAULT_LEASE = timedelta(hours=2)


class RunLocked(RuntimeError):
    """Another run holds the CRM's lock."""


def _now() -> datetime:
    return datetime.now(timezone.utc)


def acquire(engine: Engine, crm: str, holder: str, lease: timedelta = DEFAULT_LEASE) -> None:
    """Take the lock, or take over an expired one; raise RunLocked when a live run holds it."""
    now = _now()
    with engine.begin() as conn:
        conn.execute(delete(run_locks).where(run_locks.c.crm == crm, run_locks.c.expires_at < now))
    try:
        with engine.begin() as conn:
            conn.execute(insert(run_locks).values(crm=crm, holder=holder, acquired_at=now, expires_at=now + lease))
    except IntegrityError:
        raise RunLocked(f"{crm}: another leadflow run holds the lock; wait for it or let its lease expire") from None


def renew(engine: Engine, crm: str, holder: str, lease: timedelta = DEFAULT_LEASE) -> None:
    with engine.begin() as conn:
        conn.execute(
            update(run_locks)
            .where(run_locks.c.crm == crm, run_locks.c.holder == holder)
            .values(expires_at=_now() + lease)
        )


def release(engine: Engine, crm: str, holder: str) -> None:
    with engine.begin() as conn:
        conn.execute(delete(run_locks).where(run_locks.c.crm == crm, run_locks.c.holder == holder))


def held_by(engine: Engine, crm: str, holder: str) -> bool:
    from sqlalchemy import select

    with engine.connect() as conn:
        row = conn.execute(select(run_locks.c.holder, run_locks.c.expires_at).where(run_locks.c.crm == crm)).first()
    if row is None:
        return False
    expires = row.expires_at if row.expires_at.tzinfo else row.expires_at.replace(tzinfo=timezone.utc)
    return row.holder == holder and expires > _now()


@contextmanager
def run_lock(engine: Engine, crm: str, holder: str, lease: timedelta = DEFAULT_LEASE,
             parent: str | None = None) -> Iterator[None]:
    """Hold the CRM's lock for a run. A partition of a partitioned backfill passes ``parent``: it runs
    under its parent's lock (which must be live) instead of taking its own."""
    if parent is not None:
        if not held_by(engine, crm, parent):
            raise RunLocked(f"{crm}: partition of run {parent} started, but that run does not hold the lock")
        yield
        return
    acquire(engine, crm, holder, lease)
    try:
        yield
    finally:
        release(engine, crm, holder)
