"""A per-CRM run lock in the state store, so two runs never overlap on the same CRM, even when
they come from different machines or bypass Prefect's concurrency limit (a CLI run).

The lock is a short lease (``LEADFLOW_LOCK_LEASE_SECONDS``, default 120 s) that a heartbeat thread
renews every quarter lease while the run works. Another run takes the lock over at once when its
holder is gone: the lease lapsed (the holder stopped renewing: killed, hung, cut off), the holder
ran on this host and its process has ended (a killed CLI run or worker subprocess: no need to wait
out the lease), or the holder is a Prefect flow run that the Prefect API reports in a final state
(completed, failed, cancelled, crashed). A holder that is not a Prefect flow run, or one the API does not know (a CLI run's
temporary Prefect server), is judged by its heartbeat alone. ``Lease.check`` tells the run whether
it still holds the lock; it is cheap (no database call) and raises ``LockLost`` once the heartbeat
found the lock taken over, or could not renew it for most of a lease.
"""

from __future__ import annotations

import getpass
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import TypeVar

from sqlalchemy import Engine, delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from state.schema import run_locks, utc

log = logging.getLogger("leadflow.locks")

DEFAULT_LEASE = timedelta(minutes=2)
LEASE_ENV = "LEADFLOW_LOCK_LEASE_SECONDS"
EXIT_LOCKED = 5
# check() gives up this share of a lease after the last renewal: before any other run may take over
# (at the lease's end), with room for clock skew between machines.
TRUST_SHARE = 0.75
FINAL_FLOW_RUN_STATES = frozenset({"COMPLETED", "FAILED", "CANCELLED", "CRASHED"})

T = TypeVar("T")


class RunLocked(RuntimeError):
    """Another run holds the CRM's lock. The message is one line naming the holder; the CLI exits
    with ``exit_code``."""

    exit_code = EXIT_LOCKED


class LockLost(RunLocked):
    """This run's lock was taken over or released while it worked: the run stops before its next write."""


def _now() -> datetime:
    return datetime.now(timezone.utc)


def lease_duration() -> timedelta:
    """LEADFLOW_LOCK_LEASE_SECONDS, or two minutes."""
    raw = os.environ.get(LEASE_ENV, "").strip()
    if not raw:
        return DEFAULT_LEASE
    try:
        seconds = float(raw)
    except ValueError:
        raise ValueError(f"{LEASE_ENV}: expected a number of seconds, got {raw!r}") from None
    if seconds <= 0:
        raise ValueError(f"{LEASE_ENV}: must be more than 0 seconds")
    return timedelta(seconds=seconds)


@dataclass(frozen=True)
class LockInfo:
    crm: str
    holder: str
    host: str | None
    pid: int | None
    acquired_at: datetime
    expires_at: datetime

    def who(self) -> str:
        return f"run {self.holder} (host {self.host or '?'}, pid {self.pid if self.pid is not None else '?'})"

    def describe(self) -> str:
        return (f"{self.who()} since {_clock(self.acquired_at)}, lease ends {_clock(self.expires_at)}")


def _clock(value: datetime) -> str:
    return f"{utc(value):%Y-%m-%d %H:%M:%S} UTC"


def read_lock(engine: Engine, crm: str) -> LockInfo | None:
    with engine.connect() as conn:
        row = conn.execute(select(run_locks).where(run_locks.c.crm == crm)).mappings().first()
    if row is None:
        return None
    return LockInfo(crm, row["holder"], row["host"], row["pid"], utc(row["acquired_at"]), utc(row["expires_at"]))


def prefect_run_is_over(holder: str) -> bool:
    """True when ``holder`` is a Prefect flow run id the API knows and its state is final. Unknown
    ids, other holders and an unreachable API give False: the heartbeat decides then."""
    try:
        run_id = uuid.UUID(holder)
    except ValueError:
        return False
    try:
        from prefect.client.orchestration import get_client

        with get_client(sync_client=True) as client:
            run = client.read_flow_run(run_id)
    except Exception as exc:  # noqa: BLE001 - ObjectNotFound, no server, ...: not a verdict
        log.debug("lock holder %s: no Prefect state (%s)", holder, type(exc).__name__)
        return False
    return run.state is not None and run.state.type.value in FINAL_FLOW_RUN_STATES


def _gone_reason(info: LockInfo, now: datetime, run_is_over: Callable[[str], bool]) -> str | None:
    """Why the holder of ``info`` is gone, or None while it may be alive."""
    if info.expires_at <= now:
        return "lease lapsed"
    if info.host == socket.gethostname() and info.pid and not process_alive(info.pid):
        return f"process {info.pid} on this host has ended"
    if run_is_over(info.holder):
        return "its Prefect flow run is over"
    return None


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` of this host is running (a zombie, killed and not yet reaped, is not)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def _locked_message(info: LockInfo) -> str:
    return (f"{info.crm}: locked by {info.describe()}; if that run is gone for good, "
            f"`leadflow unlock --crm {info.crm}` releases it")


def acquire(engine: Engine, crm: str, holder: str, lease: timedelta | None = None,
            run_is_over: Callable[[str], bool] = prefect_run_is_over) -> None:
    """Take the lock, or take it over from a holder that is gone; raise RunLocked when a live
    run holds it."""
    lease = lease or lease_duration()
    current = read_lock(engine, crm)
    now = _now()
    if current is not None and current.holder != holder:
        gone = _gone_reason(current, now, run_is_over)
        if gone is None:
            raise RunLocked(_locked_message(current))
        log.warning("%s: taking the lock over from %s (%s)", crm, current.who(), gone)
    with engine.begin() as conn:
        if current is not None:  # only the row seen: a contender that took it meanwhile keeps it
            conn.execute(delete(run_locks).where(run_locks.c.crm == crm, run_locks.c.holder == current.holder,
                                                 run_locks.c.expires_at == current.expires_at))
    try:
        with engine.begin() as conn:
            conn.execute(insert(run_locks).values(crm=crm, holder=holder, acquired_at=now, expires_at=now + lease,
                                                  renewed_at=now, host=socket.gethostname(), pid=os.getpid()))
    except IntegrityError:
        winner = read_lock(engine, crm)
        raise RunLocked(_locked_message(winner) if winner else f"{crm}: another run took the lock just now") from None


def renew(engine: Engine, crm: str, holder: str, lease: timedelta | None = None) -> bool:
    """Extend the holder's lease; False when it no longer holds the lock."""
    now = _now()
    with engine.begin() as conn:
        result = conn.execute(
            update(run_locks)
            .where(run_locks.c.crm == crm, run_locks.c.holder == holder)
            .values(expires_at=now + (lease or lease_duration()), renewed_at=now)
        )
    return result.rowcount == 1


def release(engine: Engine, crm: str, holder: str) -> None:
    with engine.begin() as conn:
        conn.execute(delete(run_locks).where(run_locks.c.crm == crm, run_locks.c.holder == holder))


def held_by(engine: Engine, crm: str, holder: str) -> bool:
    info = read_lock(engine, crm)
    return info is not None and info.holder == holder and info.expires_at > _now()


def unlock(engine: Engine, crm: str, audit: bool = True) -> LockInfo | None:
    """Release the CRM's lock whoever holds it (the manual case: a holder known to be gone), with an
    audit row naming who released it and from whom. Returns the lock that was released."""
    current = read_lock(engine, crm)
    if current is None:
        return None
    with engine.begin() as conn:
        conn.execute(delete(run_locks).where(run_locks.c.crm == crm, run_locks.c.holder == current.holder))
    if audit:
        from state.audit import AuditEntry, AuditLog

        by = f"{getpass.getuser()}@{socket.gethostname()} (pid {os.getpid()})"
        AuditLog(engine, run_id=f"unlock-{uuid.uuid4()}", flow="unlock", model_version=None, dry_run=False).record(
            [AuditEntry(crm, current.holder, "lock_released", "run_lock", current.describe(), f"released by {by}")])
    return current


class Lease:
    """The run's hold on the lock while it works: a daemon heartbeat thread renews it (or, for a
    partition, watches that its parent still holds it), and ``check`` says whether it still holds."""

    def __init__(self, engine: Engine, crm: str, holder: str, lease: timedelta, renews: bool = True):
        self.engine, self.crm, self.holder, self.renews = engine, crm, holder, renews
        self.lease_seconds = lease.total_seconds()
        self.interval = self.lease_seconds / 4
        self._confirmed = time.monotonic()
        self._lost: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"leadflow-lock-{crm}", daemon=True)

    def __enter__(self) -> Lease:
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        self._thread.join(timeout=self.interval + 5)

    def check(self) -> None:
        """Raise LockLost when the run may no longer hold the lock; otherwise return at once."""
        if self._lost is not None:
            raise LockLost(self._lost)
        silent = time.monotonic() - self._confirmed
        if silent > TRUST_SHARE * self.lease_seconds:
            raise LockLost(f"{self.crm}: run {self.holder} could not renew its lock for {silent:.0f} s "
                           f"(lease {self.lease_seconds:.0f} s); stopping before another run takes over")

    def guard(self, items: Iterable[T]) -> Iterator[T]:
        """``items``, checking the lock before handing out each one."""
        for item in items:
            self.check()
            yield item

    def _beat(self) -> None:
        while not self._stop.wait(self.interval) and self._lost is None:
            self.beat_once()

    def beat_once(self) -> None:
        started = time.monotonic()
        try:
            held = (renew(self.engine, self.crm, self.holder, timedelta(seconds=self.lease_seconds)) if self.renews
                    else held_by(self.engine, self.crm, self.holder))
        except Exception as exc:  # noqa: BLE001 - a store hiccup; check() gives up if it lasts
            log.warning("%s: could not renew the run lock (%s); retrying in %.0f s", self.crm,
                        type(exc).__name__, self.interval)
            return
        if held:
            self._confirmed = started
            return
        now_held = read_lock(self.engine, self.crm)
        whose = "the partitioned backfill's" if not self.renews else "its"
        self._lost = (f"{self.crm}: run {self.holder} lost {whose} lock"
                      + (f" to {now_held.describe()}" if now_held else " (released)")
                      + "; stopping before the next write")
        log.error("%s", self._lost)


@contextmanager
def run_lock(engine: Engine, crm: str, holder: str, lease: timedelta | None = None,
             parent: str | None = None) -> Iterator[Lease]:
    """Hold the CRM's lock for a run, renewed by a heartbeat until the block ends; yields the
    ``Lease`` whose ``check()`` the run calls before writing. A partition of a partitioned backfill
    passes ``parent``: it runs under its parent's lock (which must be live, and which the parent's
    heartbeat renews) instead of taking its own, and its lease watches that the parent still holds it."""
    lease = lease or lease_duration()
    if parent is not None:
        if not held_by(engine, crm, parent):
            raise RunLocked(f"{crm}: partition of run {parent} started, but that run does not hold the lock")
        with Lease(engine, crm, parent, lease, renews=False) as watch:
            yield watch
        return
    acquire(engine, crm, holder, lease)
    try:
        with Lease(engine, crm, holder, lease) as beat:
            yield beat
    finally:
        release(engine, crm, holder)
