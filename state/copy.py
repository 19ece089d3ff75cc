"""``leadflow state copy``: move the whole state store (and audit log) from one database to another.

Use it before pointing ``LEADFLOW_DATABASE_URL`` at a new store (SQLite -> PostgreSQL, one server
to another): the watermarks, the values leadflow last wrote (with the ``__seen__`` marks), task
keys, pending leads, organization members, the enrichment cache and the audit log move together,
so the first run on the new store changes nothing in the CRM that the old store would not have.

Every table of ``state.schema.metadata`` is copied generically, column by column (the columns
both databases have; a column only the target has takes its default), in primary-key order and in
batches; ids are copied as they are (the audit log keeps its ids and order), and PostgreSQL
sequences are moved past the copied ids. Run locks (``lf_run_locks``) are not copied: a copy
taken while a run holds its lock is refused, since that run is still changing the source.
Datetimes are written as UTC (SQLite keeps them without an offset, as UTC). A target that already
holds rows is refused unless ``force``, which empties the target's tables first. Row counts are
compared table by table afterwards; a difference is an error.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, DateTime, Engine, Table, delete, func, inspect, select, text
from sqlalchemy.engine import make_url

from leadflow.clock import utc_if_datetime, utcnow
from state import schema as store

SKIPPED_TABLES = frozenset({store.run_locks.name, store.lead_claims.name})
DEFAULT_BATCH = 2_000


class StateCopyError(RuntimeError):
    """The copy was refused or did not verify; the message says which table and why."""


@dataclass
class CopyReport:
    source: str
    target: str
    rows: dict[str, int] = field(default_factory=dict)  # table -> rows copied (= rows in the target)

    @property
    def total(self) -> int:
        return sum(self.rows.values())


def safe_url(url: str) -> str:
    """The URL with its password masked, for messages."""
    return make_url(url).render_as_string(hide_password=True)


def copied_tables() -> list[Table]:
    return [t for t in store.metadata.sorted_tables if t.name not in SKIPPED_TABLES]


def copy_state(source_url: str, target_url: str, force: bool = False, batch_size: int = DEFAULT_BATCH,
               source: Engine | None = None, target: Engine | None = None) -> CopyReport:
    """Copy every state table from ``source_url`` to ``target_url`` (schema created if needed)."""
    if make_url(source_url) == make_url(target_url):
        raise StateCopyError("the source and the target are the same database")
    source = source or store.make_engine(source_url)
    target = target or store.make_engine(target_url)
    report = CopyReport(safe_url(source_url), safe_url(target_url))
    with source.connect() as src:
        _refuse_running(src)
        with target.begin() as dst:
            _prepare_target(dst, force)
            for table in copied_tables():
                report.rows[table.name] = _copy_table(src, dst, table, batch_size)
                _advance_sequences(dst, table)
    _verify(source, target, report)
    return report


def _refuse_running(src: Connection) -> None:
    locks = src.execute(select(store.run_locks.c.crm, store.run_locks.c.expires_at)).all()
    now = utcnow()
    held = sorted(crm for crm, expires in locks if utc_if_datetime(expires) > now)
    if held:
        raise StateCopyError(f"a run holds the lock for {', '.join(held)} in the source: copy when it has finished")


def _prepare_target(dst: Connection, force: bool) -> None:
    filled = [t.name for t in copied_tables() if dst.execute(select(func.count()).select_from(t)).scalar_one()]
    if filled and not force:
        raise StateCopyError(f"the target already holds state ({', '.join(filled)}): "
                             "use --force to replace it, or copy to an empty database")
    for table in reversed(copied_tables()):
        dst.execute(delete(table))


def _source_columns(src: Connection, table: Table) -> list[str]:
    present = {column["name"] for column in inspect(src).get_columns(table.name)}
    return [c.name for c in table.columns if c.name in present]


def _copy_table(src: Connection, dst: Connection, table: Table, batch_size: int) -> int:
    if not inspect(src).has_table(table.name):
        return 0
    columns = _source_columns(src, table)
    datetimes = [c for c in columns if isinstance(table.c[c].type, DateTime)]
    copied = 0
    for batch in _batches(src, table, columns, batch_size):
        rows = [dict(zip(columns, row)) for row in batch]
        for row in rows:
            for name in datetimes:
                row[name] = utc_if_datetime(row[name])
        dst.execute(table.insert(), rows)
        copied += len(rows)
    return copied


def _batches(src: Connection, table: Table, columns: list[str], size: int) -> Iterator[list[Any]]:
    order = [table.c[c.name] for c in table.primary_key.columns] or [table.c[c] for c in columns]
    query = select(*(table.c[c] for c in columns)).order_by(*order)
    result = src.execution_options(stream_results=True, yield_per=size).execute(query)
    yield from result.partitions(size)


def _advance_sequences(dst: Connection, table: Table) -> None:
    """PostgreSQL: an id column's sequence continues after the highest copied id."""
    if dst.dialect.name != "postgresql":
        return
    for column in table.primary_key.columns:
        if column.autoincrement is True or (column.autoincrement == "auto" and len(table.primary_key.columns) == 1
                                            and column.type.python_type is int):
            dst.execute(text(f"SELECT setval(pg_get_serial_sequence(:table, :column), "
                             f"COALESCE((SELECT MAX({column.name}) FROM {table.name}), 0) + 1, false)"),
                        {"table": table.name, "column": column.name})


def _verify(source: Engine, target: Engine, report: CopyReport) -> None:
    with source.connect() as src, target.connect() as dst:
        for table in copied_tables():
            expected = src.execute(select(func.count()).select_from(table)).scalar_one() \
                if inspect(src).has_table(table.name) else 0
            found = dst.execute(select(func.count()).select_from(table)).scalar_one()
            if expected != found or found != report.rows[table.name]:
                raise StateCopyError(f"{table.name}: {expected} row(s) in the source, {found} in the target "
                                     "after the copy")
