"""The state store's schema, on SQLAlchemy: an SQLite file by default, PostgreSQL in production.

Tables are plain data keyed by (crm, ...); their queries live beside this module in the ``state``
package (``leads``, ``cache``, ``audit``, ``locks``, ``orgs``, ``runs``). This module defines the
schema and the audit chain's hash rule, opens the engine, bulk-inserts, and upgrades a store made
by an earlier version (``upgrade_schema``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timezone
from functools import lru_cache
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    Date,
    DateTime,
    Engine,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    Connection,
    bindparam,
    create_engine,
    delete,
    event,
    insert,
    inspect,
    select,
    text,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite

from leadflow import settings
from leadflow.clock import utc  # noqa: F401 - the state package's UTC rule, re-exported

metadata = MetaData()

watermarks = Table(
    "lf_watermarks",
    metadata,
    Column("crm", String(20), primary_key=True),
    Column("object", String(40), primary_key=True),
    Column("value", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

# The value leadflow last wrote to each CRM field of each lead: a current value that differs from
# it was changed by a person, which the never_over_manual policy respects.
written_values = Table(
    "lf_written_values",
    metadata,
    Column("crm", String(20), primary_key=True),
    Column("crm_id", String(64), primary_key=True),
    Column("field", String(120), primary_key=True),
    Column("value", Text, nullable=True),
    Column("written_at", DateTime(timezone=True), nullable=False),
)

# Idempotency keys of next-step tasks: (lead, stage, next-step id) -> CRM task id.
task_keys = Table(
    "lf_task_keys",
    metadata,
    Column("crm", String(20), primary_key=True),
    Column("task_key", String(200), primary_key=True),
    Column("crm_id", String(64), nullable=False),
    Column("crm_task_id", String(64), nullable=True),
    Column("status", String(20), nullable=False),  # pending | created | closed
    Column("created_at", DateTime(timezone=True), nullable=False),
    Index("ix_lf_task_keys_lead", "crm", "crm_id"),
)

# Leads whose write failed or that were quarantined: retried on the next run until resolved.
pending_leads = Table(
    "lf_pending_leads",
    metadata,
    Column("crm", String(20), primary_key=True),
    Column("crm_id", String(64), primary_key=True),
    Column("kind", String(20), nullable=False),  # write_failed | quarantined | in_progress
    Column("reason", Text, nullable=False),
    Column("attempts", Integer, nullable=False, default=1),
    Column("first_seen", DateTime(timezone=True), nullable=False),
    Column("last_seen", DateTime(timezone=True), nullable=False),
)

# Every B2B contact leadflow has seen, by organization: the buying group a lead is scored with is
# the whole organization's, not just the contacts that happen to share its page.
org_members = Table(
    "lf_org_members",
    metadata,
    Column("crm", String(20), primary_key=True),
    Column("crm_id", String(64), primary_key=True),
    Column("org_key", String(300), nullable=False),
    Column("function", String(40), nullable=True),
    Column("decision_maker", Integer, nullable=False, default=0),
    Index("ix_lf_org_members_org", "crm", "org_key"),
)

enrichment_cache = Table(
    "lf_enrichment_cache",
    metadata,
    Column("provider", String(40), primary_key=True),
    Column("cache_key", String(300), primary_key=True),
    Column("payload", JSON, nullable=True),  # None: a cached miss
    Column("fetched_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
)

# Append-only; tamper-evident: per CRM, ``seq`` numbers the rows 1, 2, 3, ... and ``row_hash`` is
# ``audit_row_hash(prev_hash, row)``, where ``prev_hash`` is the previous row's ``row_hash``.
audit_log = Table(
    "lf_audit_log",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("run_id", String(64), nullable=False),
    Column("flow", String(60), nullable=False),
    Column("crm", String(20), nullable=False),
    Column("crm_id", String(64), nullable=False),
    Column("action", String(30), nullable=False),  # field_set | stage_move | task_created | task_closed | write_failed | quarantined
    Column("field", String(120), nullable=True),
    Column("old_value", Text, nullable=True),
    Column("new_value", Text, nullable=True),
    Column("model_version", String(40), nullable=True),
    Column("reasons", JSON, nullable=True),
    Column("dry_run", Integer, nullable=False, default=0),
    Column("seq", BigInteger, nullable=True),  # NULL only on a row not written by leadflow
    Column("prev_hash", String(64), nullable=True),
    Column("row_hash", String(64), nullable=True),
    Index("ix_lf_audit_lead", "crm", "crm_id"),
    Index("ix_lf_audit_run", "run_id"),
    Index("ux_lf_audit_chain", "crm", "seq", unique=True),
)

# The end of each CRM's audit chain. Appends lock this row, so concurrent writers (page threads,
# partitions in other processes) take turns and never fork the chain.
audit_heads = Table(
    "lf_audit_heads",
    metadata,
    Column("crm", String(20), primary_key=True),
    Column("seq", BigInteger, nullable=False),
    Column("row_hash", String(64), nullable=False),
)

# What happened to each lead in the CRM (state/outcomes.py): lead status, lifecycle stage
# dates, conversion and opportunity, as last read.
outcomes = Table(
    "lf_outcomes",
    metadata,
    Column("crm", String(20), primary_key=True),
    Column("crm_id", String(64), primary_key=True),
    Column("lead_status", String(120), nullable=True),
    Column("lifecycle_stage", String(120), nullable=True),
    Column("stage_dates", JSON, nullable=True),  # lead/mql/sql/opportunity/customer -> ISO time
    Column("converted", Integer, nullable=True),
    Column("converted_at", DateTime(timezone=True), nullable=True),
    Column("opportunity_id", String(64), nullable=True),
    Column("opportunity_stage", String(120), nullable=True),
    Column("opportunity_closed", Integer, nullable=True),
    Column("opportunity_won", Integer, nullable=True),
    Column("opportunity_amount", Float, nullable=True),
    Column("opportunity_created_at", DateTime(timezone=True), nullable=True),
    Column("opportunity_close_date", Date, nullable=True),
    Column("read_at", DateTime(timezone=True), nullable=False),
)

# leadflow's own stage moves, appended when a run writes a new stage (state/outcomes.py).
stage_history = Table(
    "lf_stage_history",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("crm", String(20), nullable=False),
    Column("crm_id", String(64), nullable=False),
    Column("stage", String(40), nullable=False),
    Column("previous_stage", String(40), nullable=True),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("run_id", String(64), nullable=True),
    Index("ix_lf_stage_history_lead", "crm", "crm_id"),
)

# What the last run qualified each lead on, for the feedback report (state/outcomes.py): channel,
# segment, scores, the criteria still unmet for the next stage and enumerated traits (no free text).
lead_facts = Table(
    "lf_lead_facts",
    metadata,
    Column("crm", String(20), primary_key=True),
    Column("crm_id", String(64), primary_key=True),
    Column("source", String(40), nullable=True),
    Column("campaign", String(255), nullable=True),
    Column("segment", String(40), nullable=True),
    Column("stage", String(40), nullable=True),
    Column("lead_score", Integer, nullable=True),
    Column("fit_score", Integer, nullable=True),
    Column("engagement_score", Integer, nullable=True),
    Column("scores", JSON, nullable=True),
    Column("unmet", JSON, nullable=True),
    Column("traits", JSON, nullable=True),
    Column("model_version", String(40), nullable=True),
    Column("scored_at", DateTime(timezone=True), nullable=False),
)

run_locks = Table(
    "lf_run_locks",
    metadata,
    Column("crm", String(20), primary_key=True),
    Column("holder", String(100), nullable=False),
    Column("acquired_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Column("host", String(255), nullable=True),
    Column("pid", Integer, nullable=True),
    Column("renewed_at", DateTime(timezone=True), nullable=True),
    UniqueConstraint("crm", name="uq_lf_run_locks_crm"),
)

# Leads a run is working on right now (state/claims.py): a by-id run and a window run never
# write the same lead at once. Notification ids already accepted (replay protection).
lead_claims = Table(
    "lf_lead_claims",
    metadata,
    Column("crm", String(20), primary_key=True),
    Column("crm_id", String(64), primary_key=True),
    Column("holder", String(100), nullable=False),
    Column("lock_holder", String(100), nullable=False),  # the lf_run_locks holder the claimer runs under
    Column("expires_at", DateTime(timezone=True), nullable=False),
)

notification_ids = Table(
    "lf_notification_ids",
    metadata,
    Column("source", String(20), primary_key=True),
    Column("event_id", String(100), primary_key=True),
    Column("received_at", DateTime(timezone=True), nullable=False),
)

# leadflow's own lead batch writes (state/fences.py): each batch update stamps its records' sync
# marker property with ``stamp`` (epoch ms, unique and increasing per CRM and object); ``fence_ms`` is
# the latest modification time the CRM returned for the batch (NULL: the answer never came).
write_fences = Table(
    "lf_write_fences",
    metadata,
    Column("crm", String(20), primary_key=True),
    Column("object", String(40), primary_key=True),
    Column("stamp", BigInteger, primary_key=True, autoincrement=False),
    Column("fence_ms", BigInteger, nullable=True),
    Column("opened_at", DateTime(timezone=True), nullable=False),
)

# A CRM property leadflow relies on, as last confirmed to exist (the sync marker): asked again after a day.
crm_properties = Table(
    "lf_crm_properties",
    metadata,
    Column("crm", String(20), primary_key=True),
    Column("object", String(40), primary_key=True),
    Column("name", String(120), primary_key=True),
    Column("confirmed_at", DateTime(timezone=True), nullable=False),
)

# One row per run (pipeline flows): what it did and how it ended; see flows/runs.py.
runs = Table(
    "lf_runs",
    metadata,
    Column("run_id", String(64), primary_key=True),
    Column("flow", String(60), nullable=False),
    Column("crm", String(20), nullable=False),
    Column("dry_run", Integer, nullable=False, default=0),
    Column("since", DateTime(timezone=True), nullable=True),
    Column("until", DateTime(timezone=True), nullable=True),
    Column("started_at", DateTime(timezone=True), nullable=False),
    Column("finished_at", DateTime(timezone=True), nullable=False),
    Column("duration_s", Float, nullable=False),
    Column("outcome", String(20), nullable=False),  # success | partial | stopped_early | failed
    Column("error", Text, nullable=True),  # failed runs: the error's kind (and our own one-line messages)
    Column("stopped_early", Text, nullable=True),
    Column("read", Integer, nullable=False, default=0),
    Column("changed", Integer, nullable=False, default=0),
    Column("unchanged", Integer, nullable=False, default=0),
    Column("stage_moves", Integer, nullable=False, default=0),
    Column("tasks_created", Integer, nullable=False, default=0),
    Column("tasks_closed", Integer, nullable=False, default=0),
    Column("failed", Integer, nullable=False, default=0),
    Column("quarantined", Integer, nullable=False, default=0),
    Column("retried_pending", Integer, nullable=False, default=0),
    Column("pages", Integer, nullable=False, default=0),
    Column("api_calls", Integer, nullable=False, default=0),
    Index("ix_lf_runs_crm_started", "crm", "started_at"),
)


# ------------------------------------------------------------------------ the audit chain

GENESIS_HASH = "0" * 64
_canonical_json = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), sort_keys=True).encode


def _flat_list_encoder() -> Callable[[list[Any]], str]:
    """``_canonical_json`` for a list of strings, numbers and None (an audit row's values), with
    the C encoder made once instead of at every call (half the cost of a row's hash); the same text."""
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:
        return _canonical_json
    chunks = make(None, None, json.encoder.encode_basestring, None, ":", ",", True, False, True)
    return lambda values: "".join(chunks(values, 0))


_canonical_row = _flat_list_encoder()


def canonical_time(value: datetime) -> str:
    """A timestamp as the audit hash covers it: UTC, microseconds, ISO 8601."""
    return (value if value.tzinfo is timezone.utc else utc(value)).isoformat(timespec="microseconds")


def audit_row_hash(prev_hash: str, row: Mapping[str, Any], at_text: str | None = None) -> str:
    """SHA-256 of the previous row's hash and a canonical text of ``row``'s values (as Python values,
    not as a database renders them): ``at`` in UTC with microseconds, ``reasons`` as compact JSON,
    ``dry_run`` as 0/1. The same row hashes the same on SQLite and PostgreSQL. Every column but
    ``id`` is covered (a copied store may renumber ids; ``seq`` orders the chain). ``at_text``:
    ``canonical_time(row["at"])``, when the caller has it already."""
    return audit_hash(prev_hash, row["crm"], row["seq"], at_text or canonical_time(row["at"]), row["run_id"],
                      row["flow"], row["crm_id"], row["action"], row["field"], row["old_value"], row["new_value"],
                      row["model_version"], canonical_reasons(row["reasons"]), row["dry_run"])


def canonical_reasons(reasons: Sequence[str] | None) -> str:
    """``reasons`` as the audit hash covers them (compact JSON; ``null`` for none): a lead's field
    rows share one list, so ``AuditLog`` encodes it once."""
    return _canonical_json(reasons)


def audit_hash(prev_hash: str, crm: str, seq: int, at_text: str, run_id: str, flow: str, crm_id: str, action: str,
               field: str | None, old_value: str | None, new_value: str | None, model_version: str | None,
               reasons_text: str, dry_run: Any) -> str:
    """``audit_row_hash`` from the values themselves, with ``reasons_text`` from
    ``canonical_reasons``: the same text as the JSON array of every value (its items joined by
    ","), so the same hash."""
    head = _canonical_row([prev_hash, crm, int(seq), at_text, run_id, flow, crm_id, action, field, old_value,
                           new_value, model_version])
    canonical = f"{head[:-1]},{reasons_text},{int(bool(dry_run))}]"
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def lock_chain_head(conn: Connection, crm: str) -> tuple[int, str]:
    """The CRM's chain head (last seq, its hash), locked until ``conn``'s transaction ends:
    PostgreSQL ``SELECT ... FOR UPDATE`` on its ``lf_audit_heads`` row; on SQLite the INSERT that
    makes sure the row exists takes the database's write lock first."""
    make = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
    conn.execute(make(audit_heads).values(crm=crm, seq=0, row_hash=GENESIS_HASH)
                 .on_conflict_do_nothing(index_elements=["crm"]))
    row = conn.execute(select(audit_heads.c.seq, audit_heads.c.row_hash)
                       .where(audit_heads.c.crm == crm).with_for_update()).one()
    return int(row.seq), row.row_hash


def move_chain_head(conn: Connection, crm: str, seq: int, row_hash: str) -> None:
    conn.execute(update(audit_heads).where(audit_heads.c.crm == crm).values(seq=seq, row_hash=row_hash))


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def make_engine(url: str | None = None) -> Engine:
    """An engine for ``url`` (default: settings.database_url()) with the schema created."""
    url = url or settings.database_url()
    engine = create_engine(url, future=True, pool_pre_ping=True)
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    metadata.create_all(engine)
    upgrade_schema(engine)
    return engine


@lru_cache(maxsize=8)
def engine_for(url: str | None = None) -> Engine:
    """One shared engine per URL in this process."""
    return make_engine(url)


# ------------------------------------------------------------------------ upgrades

# Columns added to tables of the first release: ``metadata.create_all`` creates missing tables, never
# missing columns of an existing table.
ADDED_COLUMNS: dict[str, tuple[str, ...]] = {
    "lf_audit_log": ("seq", "prev_hash", "row_hash"),
    "lf_run_locks": ("host", "pid", "renewed_at"),
}


def _missing_columns(conn_or_engine: Any) -> dict[str, list[str]]:
    inspector = inspect(conn_or_engine)
    missing = {}
    for table, columns in ADDED_COLUMNS.items():
        present = {c["name"] for c in inspector.get_columns(table)}
        if absent := [c for c in columns if c not in present]:
            missing[table] = absent
    return missing


def upgrade_schema(engine: Engine) -> dict[str, list[str]]:
    """Bring a store made by an earlier version up to this schema; returns the columns it added.

    Adds the missing columns (``ALTER TABLE ... ADD COLUMN``) and the audit chain's unique index,
    then chains the audit rows written before the chain existed: per CRM, in insertion order, as
    if they had been appended now. That happens once, in the transaction that adds ``seq``; a row
    inserted later without a chain position is reported by ``leadflow audit --verify``, never chained.
    Concurrent upgrades take turns (PostgreSQL: an advisory lock; SQLite: the write lock).
    """
    if not _missing_columns(engine):
        return {}
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(4711130)"))
        else:  # a write first, so the transaction holds SQLite's write lock before it looks
            conn.execute(update(audit_heads).where(audit_heads.c.crm.is_(None)).values(seq=0))
        missing = _missing_columns(conn)
        for table_name, columns in missing.items():
            table = metadata.tables[table_name]
            for name in columns:
                column_type = table.c[name].type.compile(dialect=conn.dialect)
                conn.exec_driver_sql(f"ALTER TABLE {table_name} ADD COLUMN {name} {column_type}")
        conn.exec_driver_sql("CREATE UNIQUE INDEX IF NOT EXISTS ux_lf_audit_chain ON lf_audit_log (crm, seq)")
        if "seq" in missing.get("lf_audit_log", ()):
            _chain_existing_audit_rows(conn)
    return missing


def _chain_existing_audit_rows(conn: Connection) -> None:
    rows = conn.execute(select(audit_log).order_by(audit_log.c.crm, audit_log.c.id)).mappings().all()
    heads: dict[str, tuple[int, str]] = {}
    chained = []
    for row in rows:
        seq, prev = heads.get(row["crm"], (0, GENESIS_HASH))
        values = {**row, "seq": seq + 1}
        row_hash = audit_row_hash(prev, values)
        chained.append({"row_id": row["id"], "seq": seq + 1, "prev_hash": prev, "row_hash": row_hash})
        heads[row["crm"]] = (seq + 1, row_hash)
    if chained:
        conn.execute(update(audit_log).where(audit_log.c.id == bindparam("row_id"))
                     .values(seq=bindparam("seq"), prev_hash=bindparam("prev_hash"), row_hash=bindparam("row_hash")),
                     chained)
    for crm, (seq, row_hash) in heads.items():
        conn.execute(delete(audit_heads).where(audit_heads.c.crm == crm))
        conn.execute(insert(audit_heads).values(crm=crm, seq=seq, row_hash=row_hash))


# ------------------------------------------------------------------------ bulk inserts


Row = Sequence[Any]


@lru_cache(maxsize=128)
def _prepared_insert(dialect: Any, table: Table, columns: tuple[str, ...], conflict_keys: tuple[str, ...]
                     ) -> tuple[str, tuple[Callable[[Any], Any] | None, ...], bool]:
    """The driver-level SQL of an INSERT (an upsert with ``conflict_keys``) of ``columns``, each
    column's bind processor, and whether the driver takes named parameters."""
    if conflict_keys:
        make = postgresql.insert if dialect.name == "postgresql" else sqlite.insert
        statement = make(table)
        updated = [c for c in columns if c not in conflict_keys]
        statement = statement.on_conflict_do_update(
            index_elements=list(conflict_keys), set_={c: getattr(statement.excluded, c) for c in updated})
    else:
        statement = insert(table)
    compiled = statement.compile(dialect=dialect, column_keys=list(columns))
    order = compiled.positiontup or list(columns)
    if list(order) != list(columns):
        raise ValueError(f"{table.name}: compiled parameters {order} differ from {list(columns)}")
    processors = tuple(table.c[c].type.dialect_impl(dialect).bind_processor(dialect) for c in columns)
    return compiled.string, processors, dialect.paramstyle in ("named", "pyformat")


def insert_many(conn: Connection, table: Table, columns: Sequence[str], rows: Sequence[Row],
                conflict_keys: Sequence[str] = (), serialized: Sequence[str] = ()) -> None:
    """INSERT (or, with ``conflict_keys``, upsert) plain tuples in one driver ``executemany``.

    SQLAlchemy compiles the statement once per (dialect, table, columns); each row only passes the
    column types' bind processors. ``Connection.execute(statement, list_of_dicts)`` costs about
    four times the CPU per row, which showed as 15% of a backfill's profile (audit and state rows).
    ``serialized``: JSON columns whose values the caller passes as JSON text already.
    """
    if not rows:
        return
    sql, processors, named = _prepared_insert(conn.dialect, table, tuple(columns), tuple(conflict_keys))
    active = [(i, p) for i, (c, p) in enumerate(zip(columns, processors)) if p is not None and c not in serialized]
    if active:
        rows = _processed(rows, active)
    params: list[Any] = [dict(zip(columns, row)) for row in rows] if named else list(rows)
    conn.exec_driver_sql(sql, params)


def _processed(rows: Sequence[Row], active: list[tuple[int, Callable[[Any], Any]]]) -> list[tuple[Any, ...]]:
    """``rows`` with each value of the ``active`` columns through its bind processor; a value
    object shared by many rows (a batch's one timestamp) is processed once (by identity: equal
    datetimes of other zones render differently)."""
    done: dict[int, Any] = {}  # id(value) -> processed; the rows keep every value alive meanwhile
    out: list[tuple[Any, ...]] = []
    for row in rows:
        row = list(row)
        for index, processor in active:
            value = row[index]
            if value is not None:
                key = id(value)
                processed = done.get(key, done)
                if processed is done:
                    processed = done[key] = processor(value)
                row[index] = processed
        out.append(tuple(row))
    return out
