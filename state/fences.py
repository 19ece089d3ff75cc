"""Write fences: what an incremental read needs to tell leadflow's own writes from everyone else's.

Each lead batch update leadflow sends stamps its records' sync marker property (HubSpot
``leadflow_synced_at``) with the batch's own ``stamp`` (epoch ms, unique and increasing per CRM and
object). The fence row is stored before the write with ``fence_ms`` NULL (the intent) and completed
after the answer with the latest modification time the CRM returned for the batch. A record of that
batch modified after ``fence_ms`` was changed by someone else; a fence whose answer never came
(a timeout while the write applied, a crash) stays NULL, and the read takes every record of the
batch in its window (nothing is lost, some echoes are re-read). Fences whose stamp is older than
a read's start are no longer needed (the read takes every marker older than its start) and expire.

``lf_crm_properties`` remembers that the marker property exists, so a run does not ask each time.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Engine, delete, func, select, update
from sqlalchemy.exc import IntegrityError

from leadflow.clock import utc as _aware
from leadflow.clock import utcnow
from state.leads import upsert
from state.schema import crm_properties, write_fences

_STAMP_ATTEMPTS = 50


@dataclass(frozen=True)
class Fence:
    """One batch write: its marker ``stamp`` and the CRM's latest modification time for it (ms)."""

    stamp: int
    fence_ms: int | None


def open_fence(engine: Engine, crm: str, obj: str, now_ms: int) -> int:
    """Store a new fence (``fence_ms`` NULL) and return its stamp: ``now_ms``, or one more than the
    newest stamp when that is not later (stamps stay unique and increasing across processes)."""
    for _ in range(_STAMP_ATTEMPTS):
        with engine.connect() as conn:
            newest = conn.execute(select(func.max(write_fences.c.stamp)).where(
                write_fences.c.crm == crm, write_fences.c.object == obj)).scalar_one_or_none()
        stamp = max(now_ms, (newest or 0) + 1)
        try:
            with engine.begin() as conn:
                conn.execute(write_fences.insert().values(crm=crm, object=obj, stamp=stamp, fence_ms=None,
                                                          opened_at=utcnow()))
            return stamp
        except IntegrityError:  # another writer took that stamp first: take the next one
            continue
    raise RuntimeError(f"{crm}: no free write fence stamp after {_STAMP_ATTEMPTS} attempts")


def close_fence(engine: Engine, crm: str, obj: str, stamp: int, fence_ms: int) -> None:
    """The batch's answer came: its latest modification time is ``fence_ms``."""
    with engine.begin() as conn:
        conn.execute(update(write_fences).where(
            write_fences.c.crm == crm, write_fences.c.object == obj, write_fences.c.stamp == stamp,
        ).values(fence_ms=fence_ms))


def drop_fence(engine: Engine, crm: str, obj: str, stamp: int) -> None:
    """The batch certainly did not land (the CRM refused the whole request): nothing to fence."""
    with engine.begin() as conn:
        conn.execute(delete(write_fences).where(
            write_fences.c.crm == crm, write_fences.c.object == obj, write_fences.c.stamp == stamp))


def live_fences(engine: Engine, crm: str, obj: str, since_ms: int) -> list[Fence]:
    """The fences a read from ``since_ms`` needs (stamp at or after it), oldest first."""
    with engine.connect() as conn:
        rows = conn.execute(select(write_fences.c.stamp, write_fences.c.fence_ms).where(
            write_fences.c.crm == crm, write_fences.c.object == obj, write_fences.c.stamp >= since_ms,
        ).order_by(write_fences.c.stamp)).all()
    return [Fence(int(stamp), None if fence is None else int(fence)) for stamp, fence in rows]


def expire_fences(engine: Engine, crm: str, obj: str, before_ms: int) -> int:
    """Delete the fences stamped before ``before_ms`` (a read from there takes all their records'
    changes anyway); returns how many."""
    with engine.begin() as conn:
        result = conn.execute(delete(write_fences).where(
            write_fences.c.crm == crm, write_fences.c.object == obj, write_fences.c.stamp < before_ms))
    return int(result.rowcount or 0)


def property_confirmed(engine: Engine, crm: str, obj: str, name: str, max_age: timedelta) -> bool:
    """Whether the CRM property was confirmed to exist within ``max_age``."""
    with engine.connect() as conn:
        at = conn.execute(select(crm_properties.c.confirmed_at).where(
            crm_properties.c.crm == crm, crm_properties.c.object == obj, crm_properties.c.name == name,
        )).scalar_one_or_none()
    return at is not None and utcnow() - _aware(at) <= max_age


def confirm_property(engine: Engine, crm: str, obj: str, name: str, at: datetime | None = None) -> None:
    """Remember that the CRM property exists (now)."""
    upsert(engine, crm_properties, [{"crm": crm, "object": obj, "name": name, "confirmed_at": at or utcnow()}],
           ["crm", "object", "name"])


def forget_property(engine: Engine, crm: str, obj: str, name: str) -> None:
    """The CRM said the property does not exist (any more): ask again next time."""
    with engine.begin() as conn:
        conn.execute(delete(crm_properties).where(
            crm_properties.c.crm == crm, crm_properties.c.object == obj, crm_properties.c.name == name))
