"""Sync state and audit log, on SQLAlchemy: an SQLite file by default, PostgreSQL in production.

Tables are plain data keyed by (crm, ...). Each module that owns a table keeps its queries next to
its logic (connectors/state.py, connectors/cache.py, flows/audit.py); this module only defines the
schema and opens the engine.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import lru_cache
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    Date,
    DateTime,
    Float,
    Engine,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    Connection,
    create_engine,
    event,
    insert,
)
from sqlalchemy.dialects import postgresql, sqlite

from leadflow import settings

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
    Index("ix_lf_audit_lead", "crm", "crm_id"),
    Index("ix_lf_audit_run", "run_id"),
)

# What happened to each lead in the CRM (connectors/outcomes.py): lead status, lifecycle stage
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

# leadflow's own stage moves, appended when a run writes a new stage (connectors/outcomes.py).
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

run_locks = Table(
    "lf_run_locks",
    metadata,
    Column("crm", String(20), primary_key=True),
    Column("holder", String(100), nullable=False),
    Column("acquired_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("crm", name="uq_lf_run_locks_crm"),
)


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
    return engine


@lru_cache(maxsize=8)
def engine_for(url: str | None = None) -> Engine:
    """One shared engine per URL in this process."""
    return make_engine(url)


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
    if serialized:
        processors = tuple(None if c in serialized else p for c, p in zip(columns, processors))
    if any(processors):
        rows = [tuple(v if p is None or v is None else p(v) for p, v in zip(processors, row)) for row in rows]
    params: list[Any] = [dict(zip(columns, row)) for row in rows] if named else list(rows)
    conn.exec_driver_sql(sql, params)
