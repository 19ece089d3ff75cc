"""The append-only, tamper-evident audit log: every write leadflow makes, with run id, flow, model
version and reasons.

Rows are inserted, never updated or deleted. Values are stored as text; values of fields that can
carry patient health information are replaced by a marker before they reach this module's caller
(see ``redact_value``), and credentials never pass through here.

Each CRM's rows form a hash chain: row ``seq`` n carries ``row_hash`` = SHA-256 over its values and
row n-1's hash (``state.schema.audit_row_hash``). Appends lock the CRM's chain head, so concurrent
writers take turns. ``verify_chain`` finds the first edited, inserted or deleted row.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, NamedTuple

from sqlalchemy import Engine, func, select

from leadflow.redaction import PHI_FIELDS, REDACTED, shown_value  # noqa: F401 - re-exported
from state.schema import (
    GENESIS_HASH,
    audit_hash,
    audit_heads,
    audit_log,
    audit_row_hash,
    canonical_reasons,
    canonical_time,
    insert_many,
    lock_chain_head,
    move_chain_head,
    utc,
)

class AuditEntry(NamedTuple):
    """One row to record (a tuple: a backfill makes about twelve per lead)."""

    crm: str
    crm_id: str
    action: str  # field_set | stage_move | task_created | task_closed | write_failed | quarantined
    field: str | None = None
    old_value: Any = None
    new_value: Any = None
    reasons: Sequence[str] | None = None
    at: datetime | None = None  # None: when the batch is recorded


def redact_value(canonical_field: str, value: Any, patient: bool) -> Any:
    """The value to audit (``leadflow.redaction.shown_value``, the one redaction rule)."""
    return shown_value(canonical_field, value, patient)


def _text(value: Any) -> str | None:
    """Text as stored: strings as they are, numbers and booleans as JSON spells them."""
    if value is None:
        return None
    kind = type(value)
    if kind is str:
        return value
    if kind is bool:
        return "true" if value else "false"
    if kind is int or (kind is float and math.isfinite(value)):
        return repr(value)
    if isinstance(value, str):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    return json.dumps(value, default=str, sort_keys=True)


AUDIT_COLUMNS = ("at", "run_id", "flow", "crm", "crm_id", "action", "field", "old_value", "new_value",
                 "model_version", "reasons", "dry_run", "seq", "prev_hash", "row_hash")


def _json_once(reasons: Sequence[str], encoded: dict[int, tuple[str, str]]) -> tuple[str, str]:
    """(the stored JSON, the hashed canonical JSON) of a reasons list, encoded once per list."""
    texts = encoded.get(id(reasons))
    if texts is None:
        texts = encoded[id(reasons)] = (json.dumps(list(reasons)), canonical_reasons(list(reasons)))
    return texts


class AuditLog:
    """Writes and reads ``lf_audit_log``; one INSERT statement per batch of entries.

    ``guard``, when set (the run sets its lock's ``Lease.check``), is called after each batch is
    recorded: a run that lost its lock keeps the audit rows of what it already wrote and stops
    before its next write."""

    def __init__(self, engine: Engine, run_id: str, flow: str, model_version: str | None, dry_run: bool):
        self.engine, self.run_id, self.flow = engine, run_id, flow
        self.model_version, self.dry_run = model_version, dry_run
        self.guard: Callable[[], None] | None = None

    def record(self, entries: Iterable[AuditEntry]) -> int:
        entries = list(entries)  # keeps every reasons list alive, so ids stay unique below
        now = datetime.now(timezone.utc)
        now_text = canonical_time(now)
        reasons_json: dict[int, tuple[str, str]] = {}  # a lead's reasons are shared by its field rows: encode once
        by_crm: dict[str, list[AuditEntry]] = {}
        for entry in entries:
            by_crm.setdefault(entry.crm, []).append(entry)
        if by_crm:
            with self.engine.begin() as conn:
                for crm in sorted(by_crm):  # one lock order for every writer
                    seq, head = lock_chain_head(conn, crm)
                    rows = []
                    for entry in by_crm[crm]:
                        seq += 1
                        row, head = self._chained_row(entry, now, now_text, seq, head, reasons_json)
                        rows.append(row)
                    insert_many(conn, audit_log, AUDIT_COLUMNS, rows, serialized=("reasons",))
                    move_chain_head(conn, crm, seq, head)
        if self.guard is not None:
            self.guard()
        return len(entries)

    def _chained_row(self, entry: AuditEntry, now: datetime, now_text: str, seq: int, prev: str,
                     reasons_json: dict[int, tuple[str, str]]) -> tuple[tuple[Any, ...], str]:
        """The row to insert for ``entry`` at ``seq`` after the row hashed ``prev``, and its hash
        (``audit_row_hash`` of the row, from its values: the reasons encoded once per lead)."""
        at = utc(entry.at) if entry.at else now
        old_value, new_value, dry_run = _text(entry.old_value), _text(entry.new_value), int(self.dry_run)
        stored, hashed = _json_once(entry.reasons, reasons_json) if entry.reasons else (None, "null")
        row_hash = audit_hash(prev, entry.crm, seq, canonical_time(at) if entry.at else now_text, self.run_id,
                              self.flow, entry.crm_id, entry.action, entry.field, old_value, new_value,
                              self.model_version, hashed, dry_run)
        return (at, self.run_id, self.flow, entry.crm, entry.crm_id, entry.action, entry.field,
                old_value, new_value, self.model_version, stored, dry_run, seq, prev, row_hash), row_hash


# --------------------------------------------------------------------------- verify


@dataclass(frozen=True)
class ChainReport:
    crm: str
    rows: int
    problem: str | None = None  # one line naming the first bad row; None: the chain is intact

    @property
    def ok(self) -> bool:
        return self.problem is None


def verify_chain(engine: Engine, crm: str) -> ChainReport:
    """Walk the CRM's audit rows in ``seq`` order and report the first row that was edited,
    inserted or deleted (a gap in ``seq``, a link that does not match, rows past the chain head).
    Rows appended while it runs are left to the next verify: the walk ends at the head it read first."""
    with engine.connect() as conn:
        head = _head(conn, crm)
        unchained = conn.execute(select(audit_log.c.id).where(audit_log.c.crm == crm, audit_log.c.seq.is_(None))
                                 .order_by(audit_log.c.id).limit(1)).scalar()
        beyond = conn.execute(select(func.max(audit_log.c.seq)).where(audit_log.c.crm == crm,
                                                                      audit_log.c.seq > head[0])).scalar()
        if beyond is not None and _head(conn, crm)[0] >= beyond:
            beyond = None  # appended by a writer since the head was read: left to the next verify
        rows = conn.execution_options(yield_per=2000).execute(
            select(audit_log).where(audit_log.c.crm == crm, audit_log.c.seq.is_not(None),
                                    audit_log.c.seq <= (beyond or head[0]))
            .order_by(audit_log.c.seq, audit_log.c.id))
        count, problem = _walk(crm, rows.mappings(), head)
    if problem is None and unchained is not None:
        problem = f"{crm}: audit row id {unchained} was inserted: it has no place in the chain (no seq)"
    return ChainReport(crm, count + (unchained is not None), problem)


def _head(conn, crm: str) -> tuple[int, str]:
    row = conn.execute(select(audit_heads.c.seq, audit_heads.c.row_hash).where(audit_heads.c.crm == crm)).first()
    return (int(row.seq), row.row_hash) if row is not None else (0, GENESIS_HASH)


def _walk(crm: str, rows: Iterator[Mapping[str, Any]], head: tuple[int, str]) -> tuple[int, str | None]:
    expected, prev_hash, count = 1, GENESIS_HASH, 0
    head_seq, head_hash = head
    for row in rows:
        count += 1
        if row["seq"] == expected and row["prev_hash"] == prev_hash and audit_row_hash(prev_hash, row) == row["row_hash"]:
            expected, prev_hash = expected + 1, row["row_hash"]
            continue
        where = f"{crm}: audit row id {row['id']} (seq {row['seq']})"
        if row["seq"] > head_seq:
            return count, f"{where} was inserted: it lies past the chain head (seq {head_seq})"
        if row["seq"] < expected:
            return count, f"{where} was inserted: seq {row['seq']} is taken by an earlier row"
        if row["seq"] > expected:
            missing = f"seq {expected}" if row["seq"] == expected + 1 else f"seq {expected}-{row['seq'] - 1}"
            return count, f"{crm}: audit row(s) {missing} deleted (the chain skips from seq {expected - 1} to {row['seq']})"
        if row["prev_hash"] != prev_hash:
            return count, (f"{crm}: audit row seq {expected - 1} was edited, or a row inserted before {where}: "
                           "the link to it does not match")
        return count, f"{where} was edited: its content does not match its hash"
    last = expected - 1
    if head_seq > last:
        missing = f"seq {head_seq}" if head_seq == last + 1 else f"seq {last + 1}-{head_seq}"
        return count, f"{crm}: audit row(s) {missing} deleted (the chain ends at seq {last}, its head at {head_seq})"
    if head_seq < last:
        return count, f"{crm}: audit row seq {head_seq + 1} was inserted: the chain head is at seq {head_seq}"
    if head_hash != prev_hash:
        return count, f"{crm}: audit row seq {last} was edited: the chain head's hash does not match it"
    return count, None


def audited_crms(engine: Engine) -> list[str]:
    with engine.connect() as conn:
        names = set(conn.execute(select(audit_log.c.crm).distinct()).scalars())
        names.update(conn.execute(select(audit_heads.c.crm)).scalars())
    return sorted(names)


# --------------------------------------------------------------------------- read


def read_audit(
    engine: Engine, *, crm_id: str | None = None, run_id: str | None = None, crm: str | None = None, limit: int = 500
) -> list[dict[str, Any]]:
    """Audit rows for a lead or a run, oldest first."""
    query = select(audit_log).order_by(audit_log.c.id).limit(limit)
    if crm_id:
        query = query.where(audit_log.c.crm_id == crm_id)
    if run_id:
        query = query.where(audit_log.c.run_id == run_id)
    if crm:
        query = query.where(audit_log.c.crm == crm)
    with engine.connect() as conn:
        return [dict(row) for row in conn.execute(query).mappings()]


@dataclass(frozen=True)
class AuditPage:
    rows: list[dict[str, Any]]
    total: int
    offset: int

    def showing(self) -> str:
        if not self.rows:
            return f"showing 0 of {self.total}"
        return f"showing {self.offset + 1}-{self.offset + len(self.rows)} of {self.total}"


def page_audit(engine: Engine, *, crm_id: str | None = None, run_id: str | None = None, crm: str | None = None,
               limit: int = 50, offset: int = 0, newest_first: bool = True) -> AuditPage:
    """One page of audit rows (newest first by default) and how many rows match in all."""
    conditions = [column == value for column, value in
                  ((audit_log.c.crm_id, crm_id), (audit_log.c.run_id, run_id), (audit_log.c.crm, crm)) if value]
    order = audit_log.c.id.desc() if newest_first else audit_log.c.id
    with engine.connect() as conn:
        total = conn.execute(select(func.count()).select_from(audit_log).where(*conditions)).scalar_one()
        rows = conn.execute(select(audit_log).where(*conditions).order_by(order).limit(limit).offset(offset)).mappings()
        return AuditPage([dict(row) for row in rows], total, offset)


class AmbiguousRunId(ValueError):
    """A run id prefix that matches more than one run."""


def resolve_run_id(engine: Engine, prefix: str) -> str | None:
    """The one run id in the audit log that is ``prefix`` or starts with it; None when none does;
    AmbiguousRunId when several do."""
    escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    with engine.connect() as conn:
        if conn.execute(select(audit_log.c.id).where(audit_log.c.run_id == prefix).limit(1)).first():
            return prefix
        matches = list(conn.execute(select(audit_log.c.run_id).where(
            audit_log.c.run_id.like(f"{escaped}%", escape="\\")).distinct().limit(3)).scalars())
    if len(matches) > 1:
        shown = ", ".join(sorted(matches)[:2]) + (", ..." if len(matches) > 2 else "")
        raise AmbiguousRunId(f"run id prefix {prefix!r} matches several runs ({shown}); give more characters")
    return matches[0] if matches else None
