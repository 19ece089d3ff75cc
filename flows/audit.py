"""The append-only audit log: every write leadflow makes, with run id, flow, model version and reasons.

Rows are inserted, never updated or deleted. Values are stored as text; values of fields that can
carry patient health information are replaced by a marker before they reach this module's caller
(see ``redact_value``), and credentials never pass through here.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import Engine, select

from leadflow.store import audit_log, insert_many

# Canonical fields whose values may be health information: audited as "<redacted>".
PHI_FIELDS = frozenset(
    {"pain_point", "patient.service_requested", "patient.payer", "patient.zip", "patient.scheduling_ready"}
)
REDACTED = "<redacted: may contain health information>"


@dataclass(frozen=True)
class AuditEntry:
    crm: str
    crm_id: str
    action: str  # field_set | stage_move | task_created | task_closed | write_failed | quarantined
    field: str | None = None
    old_value: Any = None
    new_value: Any = None
    reasons: Sequence[str] | None = None
    at: datetime | None = None  # None: when the batch is recorded


def redact_value(canonical_field: str, value: Any, patient: bool) -> Any:
    """The value to audit: PHI-bearing fields and any free text on patient leads are redacted."""
    if value in (None, ""):
        return value
    if canonical_field in PHI_FIELDS or (patient and canonical_field in {"reasons", "reasons_detail", "next_step"}):
        return REDACTED
    return value


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
                 "model_version", "reasons", "dry_run")


def _json_once(reasons: Sequence[str], encoded: dict[int, str]) -> str:
    text = encoded.get(id(reasons))
    if text is None:
        text = encoded[id(reasons)] = json.dumps(list(reasons))
    return text


class AuditLog:
    """Writes and reads ``lf_audit_log``; one INSERT statement per batch of entries."""

    def __init__(self, engine: Engine, run_id: str, flow: str, model_version: str | None, dry_run: bool):
        self.engine, self.run_id, self.flow = engine, run_id, flow
        self.model_version, self.dry_run = model_version, dry_run

    def record(self, entries: Iterable[AuditEntry]) -> int:
        entries = list(entries)  # keeps every reasons list alive, so ids stay unique below
        now = datetime.now(timezone.utc)
        reasons_json: dict[int, str] = {}  # a lead's reasons are shared by its field rows: encode once
        rows = [
            (entry.at or now, self.run_id, self.flow, entry.crm, entry.crm_id, entry.action, entry.field,
             _text(entry.old_value), _text(entry.new_value), self.model_version,
             _json_once(entry.reasons, reasons_json) if entry.reasons else None,
             int(self.dry_run))
            for entry in entries
        ]
        if rows:
            with self.engine.begin() as conn:
                insert_many(conn, audit_log, AUDIT_COLUMNS, rows, serialized=("reasons",))
        return len(rows)


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
