"""A large backfill shared by several Prefect workers.

``partitioned_backfill`` splits [since, until) into disjoint modification-time ranges and starts one
flow run of the ``backfill-leads/backfill-partition`` deployment per range with ``run_deployment``.
Any process worker on the work pool may pick a partition up. Each lead's modification time lies in
exactly one range, and writes move it past ``until``, so no lead is written by two partitions. The
parent holds the CRM's run lock for the whole backfill; partitions run under it (``parent_run_id``).
A Prefect global rate limit named ``leadflow-<crm>-api`` (``LEADFLOW_PREFECT_RATE_LIMIT``, see
``connectors.ratelimit``) keeps the whole fleet under the CRM's API limit.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone
from typing import Any

from prefect import flow, get_run_logger
from prefect.client.orchestration import get_client
from prefect.deployments import run_deployment

from state.locks import run_lock
from flows.sync import CrmName, _run_id
from leadflow import settings
from state.schema import engine_for

PARTITION_DEPLOYMENT = "backfill-leads/backfill-partition"
TERMINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


def split_range(since: datetime, until: datetime, partitions: int) -> list[tuple[datetime, datetime]]:
    """``partitions`` contiguous, disjoint [start, end) ranges covering [since, until) exactly."""
    if until <= since:
        raise ValueError("until must be after since")
    if partitions < 1:
        raise ValueError("partitions must be at least 1")
    step = (until - since) / partitions
    bounds = [since + step * i for i in range(partitions)] + [until]
    return [(bounds[i], bounds[i + 1]) for i in range(partitions) if bounds[i] < bounds[i + 1]]


@flow(name="partitioned-backfill", log_prints=False)
def partitioned_backfill(crm: CrmName, since: datetime, until: datetime, partitions: int = 4,
                         dry_run: bool = False, poll_seconds: float = 2.0,
                         deployment: str = PARTITION_DEPLOYMENT) -> dict[str, Any]:
    """Fan a backfill out to the workers and wait for every partition."""
    logger = get_run_logger()
    parent = _run_id()
    engine = engine_for(settings.database_url())
    with run_lock(engine, crm, holder=parent):
        runs = []
        for start, end in split_range(since, until, partitions):
            run = run_deployment(
                deployment,
                parameters={"crm": crm, "since": start.isoformat(), "until": end.isoformat(),
                            "dry_run": dry_run, "parent_run_id": parent},
                timeout=0,
                as_subflow=False,
                flow_run_name=f"{crm}-backfill-{start:%Y%m%dT%H%M}-{end:%Y%m%dT%H%M}",
                tags=["leadflow", "backfill-partition", crm],
            )
            runs.append(run.id)
            logger.info("partition %s → %s: flow run %s", start, end, run.id)
        states = _wait(runs, poll_seconds)
    failed = {str(run_id): state for run_id, state in states.items() if state != "COMPLETED"}
    if failed:
        raise RuntimeError(f"{len(failed)} of {len(runs)} backfill partitions did not complete: {failed}")
    return {"crm": crm, "partitions": [str(r) for r in runs], "parent_run_id": parent,
            "finished_at": datetime.now(timezone.utc).isoformat()}


def _wait(run_ids: list, poll_seconds: float) -> dict:
    with get_client(sync_client=True) as client:
        while True:
            states = {}
            for run_id in run_ids:
                run = client.read_flow_run(run_id)
                states[run_id] = run.state.type.value if run.state else "PENDING"
            if all(s in TERMINAL for s in states.values()):
                return states
            time.sleep(poll_seconds)
