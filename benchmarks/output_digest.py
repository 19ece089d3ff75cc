"""A digest of what a run left in its state store, to show that a change keeps the outputs.

    .venv/bin/python -m benchmarks.output_digest run --crm hubspot --leads 10000   # a backfill, then its digest
    .venv/bin/python -m benchmarks.output_digest sqlite:////tmp/leadflow-bench-XXXX/leadflow.db

``run`` is one ``benchmarks.bench`` backfill (its dir kept; remove it after) with the run's clock fixed at 23:00 UTC of
today, so that two runs on one day score alike (engagement decays with the run's time), then the
digest of its state store.

Per table, a SHA-256 over its rows sorted, without what differs from run to run by nature (row
ids, run ids, audit sequence and hashes, and every timestamp, in columns and inside values:
the scoring time, the read time); and one over all of them. Two runs of the same code on the
same seed give the same digests: the written values, audit rows (fields, old and new values,
reasons), tasks, pending leads, buying groups, enrichment cache and lead facts of every lead."""

from __future__ import annotations

import hashlib
import json
import re
import sys
from typing import Any

from sqlalchemy import create_engine, inspect, text

# table -> columns left out (besides every DateTime column)
SKIPPED = {
    "lf_audit_log": {"id", "run_id", "seq", "prev_hash", "row_hash"},
    "lf_stage_history": {"id", "run_id"},
    "lf_task_keys": {"crm_task_id"},
}
TABLES = ("lf_written_values", "lf_audit_log", "lf_task_keys", "lf_pending_leads", "lf_org_members",
          "lf_enrichment_cache", "lf_lead_facts", "lf_outcomes", "lf_stage_history")
_TIME = re.compile(r"\d{4}-\d\d-\d\d[T ]\d\d:\d\d(:\d\d(\.\d+)?)?(Z|[+-]\d\d:?\d\d)?")


def _masked(value: Any) -> Any:
    if isinstance(value, str):
        return _TIME.sub("<time>", value)
    return value


def table_digest(conn: Any, table: str) -> tuple[str, int]:
    """(digest, rows) of one table, timestamps and per-run identifiers left out."""
    columns = [c for c in inspect(conn).get_columns(table)
               if c["name"] not in SKIPPED.get(table, set()) and "DATETIME" not in str(c["type"]).upper()
               and "TIMESTAMP" not in str(c["type"]).upper()]
    names = ", ".join(c["name"] for c in columns)
    rows = [json.dumps([_masked(v) for v in row], default=str) for row in conn.execute(text(f"SELECT {names} FROM {table}"))]
    rows.sort()
    return hashlib.sha256("\n".join(rows).encode()).hexdigest(), len(rows)


def digest(url: str) -> dict[str, Any]:
    engine = create_engine(url)
    with engine.connect() as conn:
        present = set(inspect(conn).get_table_names())
        tables = {t: table_digest(conn, t) for t in TABLES if t in present}
    total = hashlib.sha256("".join(d for d, _ in tables.values()).encode()).hexdigest()
    return {"all": total, "tables": {t: {"sha256": d[:16], "rows": n} for t, (d, n) in tables.items()}}


def run(argv: list[str]) -> dict[str, Any]:
    """One bench backfill in this process with the run's clock fixed, and its state's digest."""
    import contextlib
    import io
    import os
    import tempfile
    from datetime import datetime, time, timezone
    from pathlib import Path

    from benchmarks import bench

    workdir = Path(tempfile.mkdtemp(prefix="leadflow-digest-"))
    os.environ.update(bench.bench_environment(workdir))  # as the measurement sets it, before Prefect is imported
    import flows.sync

    fixed = datetime.combine(datetime.now(timezone.utc).date(), time(23, 0), tzinfo=timezone.utc)
    flows.sync._now = lambda: fixed
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):
        bench._main([*argv, "--runs", "backfill", "--workdir", str(workdir)])
    result = json.loads(out.getvalue().strip().splitlines()[-1])
    if result.get("error"):
        raise SystemExit(f"the backfill failed: {result['error']}")
    return {"workdir": str(workdir), "now": fixed.isoformat(), **digest(f"sqlite:///{workdir}/leadflow.db")}


if __name__ == "__main__":
    if sys.argv[1] == "run":
        print(json.dumps(run(sys.argv[2:]), indent=1))
    else:
        print(json.dumps(digest(sys.argv[1]), indent=1))
