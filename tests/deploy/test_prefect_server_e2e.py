"""Production path: a real Prefect server (on the local PostgreSQL; on SQLite too with
LEADFLOW_DEPLOY_SQLITE=1), `prefect deploy --all` from prefect.yaml, two process workers, and a
partitioned backfill triggered from the CLI against the sandbox; the result read back through the real HubSpot client and the sandbox's log."""

from __future__ import annotations

import os
import re
import uuid
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
import pytest
from hubspot.crm.contacts import BatchReadInputSimplePublicObjectId, SimplePublicObjectId

from state.audit import read_audit
from sandbox.environment import environment, sandbox_environment
from state.schema import make_engine
from sandbox import start_sandbox
from deploy_support import PROJECT_ROOT, prefect_cli, prefect_server, workers

pytestmark = pytest.mark.slow

LEADS = 120
PARTITIONS = 4
GCL_CAPACITY, GCL_DECAY = 2, 2  # the fleet may make at most 2 + 2·W calls in any W seconds


@pytest.fixture()
def prefect_database(request, tmp_path):
    """None (the server's own SQLite file) or a fresh PostgreSQL database for the Prefect server."""
    if request.param == "sqlite":
        yield None
        return
    from sqlalchemy import create_engine, text

    base = request.getfixturevalue("postgres_base_url")
    name = f"lf_prefect_{uuid.uuid4().hex[:8]}"
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'create database "{name}"'))
    host_part = base.split("://", 1)[1].rsplit("/", 1)[0]
    yield f"postgresql+asyncpg://{host_part}/{name}"
    with admin.connect() as conn:
        conn.execute(text(f'drop database if exists "{name}" with (force)'))
    admin.dispose()


# The Prefect server on PostgreSQL, as production runs it. The same path on Prefect's own SQLite
# server (what a first `prefect server start` uses) costs another ~2 minutes of make test on this 2-core
# machine; LEADFLOW_DEPLOY_SQLITE=1 adds it.
PREFECT_DATABASES = [pytest.param("postgres", marks=pytest.mark.postgres)]
if os.environ.get("LEADFLOW_DEPLOY_SQLITE") == "1":
    PREFECT_DATABASES.insert(0, "sqlite")


@pytest.mark.parametrize("prefect_database", PREFECT_DATABASES, indirect=True)
def test_partitioned_backfill_shared_by_two_workers(prefect_database, tmp_path: Path):
    home = tmp_path / "prefect-home"
    home.mkdir()
    state_url = f"sqlite:///{tmp_path / 'leadflow.db'}"
    with start_sandbox(LEADS, random_seed=21) as sandbox, prefect_server(home, prefect_database) as env:
        env.update(sandbox_environment(sandbox))
        env.update({
            "LEADFLOW_DATABASE_URL": state_url,
            "LEADFLOW_HOME": str(tmp_path / "leadflow-home"),
            "LEADFLOW_PROJECT_DIR": str(PROJECT_ROOT),
            "PREFECT_WORKER_QUERY_SECONDS": "1",
            "PREFECT_WORKER_PREFETCH_SECONDS": "1",
        })
        _set_up_hubspot(env)
        prefect_cli(env, "work-pool", "create", "leadflow", "--type", "process")
        prefect_cli(env, "gcl", "create", "leadflow-hubspot-api", "--limit", str(GCL_CAPACITY),
                    "--slot-decay-per-second", str(GCL_DECAY))
        deployed = prefect_cli(env, "deploy", "--all")
        assert "partitioned-backfill/partitioned" in deployed and "backfill-leads/backfill-partition" in deployed

        now = datetime.now(timezone.utc)
        sandbox.reset_stats()
        with workers(env, "leadflow", 2, tmp_path) as _:
            out = prefect_cli(
                env, "deployment", "run", "partitioned-backfill/partitioned",
                "--param", "crm=hubspot",
                "--param", f"since={(now - timedelta(days=900)).isoformat()}",
                "--param", f"until={now.isoformat()}",
                "--param", f"partitions={PARTITIONS}",
                "--watch", "--watch-timeout", "300", timeout=360,
            )
        parent_id = re.search(r"UUID: ([0-9a-f-]{36})", out).group(1)
        api = env["PREFECT_API_URL"]
        assert _flow_run(api, parent_id)["state_type"] == "COMPLETED", out[-2000:]

        partitions = _partition_runs(api, parent_id)
        assert len(partitions) == PARTITIONS and all(r["state_type"] == "COMPLETED" for r in partitions)
        workers_used = _workers_that_ran(tmp_path, [r["id"] for r in partitions])
        assert len(workers_used) == 2, f"partitions all ran on {workers_used}"

        contacts = sandbox.dump_state(api="hubspot", object="contacts")["hubspot"]["contacts"]
        ids = [c["id"] for c in contacts]
        written = _stages(sandbox, ids)
        assert all(written[i] for i in ids), "every lead of the range was qualified and written"
        audit = read_audit(make_engine(state_url), crm="hubspot", limit=1_000_000)
        runs_per_lead = Counter()
        for crm_id in {row["crm_id"] for row in audit if row["action"] == "stage_move"}:
            runs_per_lead[len({r["run_id"] for r in audit if r["crm_id"] == crm_id and r["action"] == "stage_move"})] += 1
        assert set(runs_per_lead) == {1}, "a lead was written by two partitions"
        assert {row["run_id"] for row in audit} <= {r["id"] for r in partitions}

        _assert_fleet_rate_held(sandbox)


def _set_up_hubspot(env: dict[str, str]) -> None:
    from connectors.crm.factory import connector_from_env
    from connectors.crm.setup import hubspot_setup

    with environment({k: v for k, v in env.items() if not k.startswith("PREFECT_")}):
        hubspot_setup(connector_from_env("hubspot"))


def _flow_run(api: str, run_id: str) -> dict:
    run = httpx.get(f"{api}/flow_runs/{run_id}", timeout=10).json()
    return {"id": run["id"], "state_type": run["state_type"], "parameters": run["parameters"]}


def _partition_runs(api: str, parent_id: str) -> list[dict]:
    runs = httpx.post(f"{api}/flow_runs/filter", json={"limit": 50}, timeout=10).json()
    return [{"id": r["id"], "state_type": r["state_type"]} for r in runs
            if r["parameters"].get("parent_run_id") == parent_id]


def _workers_that_ran(logs: Path, run_ids: list[str]) -> set[str]:
    used = set()
    for log in logs.glob("worker-*.log"):
        text = log.read_text()
        if any(run_id in text for run_id in run_ids):
            used.add(log.stem)
    return used


def _stages(sandbox, ids: list[str]) -> dict[str, str | None]:
    client = sandbox.hubspot_client()
    out = {}
    for start in range(0, len(ids), 100):
        body = BatchReadInputSimplePublicObjectId(
            inputs=[SimplePublicObjectId(id=i) for i in ids[start:start + 100]], properties=["leadflow_stage"])
        out.update({r.id: r.properties.get("leadflow_stage") for r in client.crm.contacts.batch_api.read(body).results})
    return out


def _assert_fleet_rate_held(sandbox) -> None:
    """Every W-second window of non-search HubSpot calls holds at most C + D·W (+1 for clock skew)."""
    log = [r for r in sandbox.requests() if str(r.get("endpoint", "")).startswith("hubspot.")
           and "search" not in str(r.get("endpoint")) and "properties" not in str(r.get("endpoint"))]
    assert log, "the sandbox logged no HubSpot calls"
    assert all(int(r.get("status", 200)) != 429 for r in log)
    times = sorted(float(r["at"]) for r in log)
    window = 2.0
    most = max(sum(1 for t in times[i:] if t - start < window) for i, start in enumerate(times))
    assert most <= GCL_CAPACITY + GCL_DECAY * window + 1, f"{most} calls within {window}s"
