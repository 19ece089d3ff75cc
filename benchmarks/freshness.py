"""``leadflow bench --freshness``: the time from a demo request in the CRM to its stage, reasons and
next-step task written back, through the webhook receiver.

In this process: a sandbox subprocess seeded with L leads; a Prefect server (ephemeral); a first
``sync_leads`` (every lead staged); the receiver (``flows.listen.running_receiver``) with the real
by-id flow; the sandbox notifying it (HubSpot signed webhooks / Salesforce Outbound Messages). Then N
demo requests arrive at R per second through the real client (a rep's edit of one lead each), while
a scheduled ``sync_leads`` runs every S seconds beside them. A change is fresh when its lead's
``write_applied`` (and, when a task was due, ``task_created``) audit rows after the change exist;
the freshness of a change is the later of the two minus the moment of the edit.

Also counted: duplicate tasks in the CRM (task keys held twice), leads re-qualified by the
receiver that no change touched (leadflow's echoes would show there), and changes never written.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import threading
import time
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

SECRET = "bench-app-secret"


def bench_freshness(crm: str, leads: int = 500, changes: int = 200, rate: float = 2.0, window: float = 0.5,
                    sync_every: float = 15.0, random_seed: int = 42) -> dict[str, Any]:
    from benchmarks.bench import PREFECT_ENV

    workdir = Path(tempfile.mkdtemp(prefix="leadflow-freshness-"))
    os.environ.update({**PREFECT_ENV, "PREFECT_HOME": str(workdir / "prefect"), "LEADFLOW_HOME": str(workdir / "home"),
                       "LEADFLOW_DATABASE_URL": f"sqlite:///{workdir / 'leadflow.db'}"})
    return _measure(crm, leads, changes, rate, window, sync_every, random_seed)


def _measure(crm: str, leads: int, changes: int, rate: float, window: float, sync_every: float,
             random_seed: int) -> dict[str, Any]:
    from connectors.crm.factory import connector_from_env
    from connectors.crm.setup import hubspot_setup, salesforce_setup
    from flows.listen import ListenConfig, requalify_runner, running_receiver
    from flows.sync import sync_leads
    from leadflow import settings
    from sandbox.environment import environment, sandbox_environment
    from sandbox.salesforce import ORG_ID, USER_ID
    from sandbox.server import start_sandbox_process
    from state.schema import engine_for

    result: dict[str, Any] = {"crm": crm, "leads": leads, "changes": changes, "rate_per_s": rate,
                              "window_s": window, "sync_every_s": sync_every}
    with start_sandbox_process(leads, random_seed=random_seed, startup_timeout=600) as handle, \
            environment({**sandbox_environment(handle), "LEADFLOW_SALESFORCE_USER_ID": USER_ID}):
        engine = engine_for(settings.database_url())
        if crm == "hubspot":
            hubspot_setup(connector_from_env("hubspot"))
        else:
            salesforce_setup(connector_from_env("salesforce"))
        started = time.monotonic()
        sync_leads(crm)
        result["first_sync_s"] = round(time.monotonic() - started, 1)
        runs: list[dict[str, Any]] = []
        config = ListenConfig(hubspot_secret=SECRET, salesforce_org_id=ORG_ID, salesforce_user_id=USER_ID,
                              window_s=window)

        def runner(crm_name: str, ids: list[str], companies: list[str]) -> None:
            runs.append({"ids": list(ids), "summary": requalify_runner(crm_name, ids, companies)})

        with running_receiver(config, runner, engine) as (url, receiver):
            handle.set_notify(url, hubspot_secret=SECRET, delay_s=0.05)
            targets = _targets(handle, crm, changes)
            syncs = _ScheduledSync(crm, sync_every)
            syncs.start()
            edits = _send_changes(handle, crm, targets, rate)
            _wait_written(engine, crm, edits, timeout=60)
            syncs.stop()
            receiver.coalescer.wait_idle(60)
            result["receiver"] = dict(receiver.counts)
        handle.set_notify(None)
        result.update(_report(engine, handle, crm, edits, runs, syncs))
    return result


def _targets(handle: Any, crm: str, count: int) -> list[str]:
    if crm == "hubspot":
        ids = [c["id"] for c in handle.dump_state(api="hubspot", object="contacts")["hubspot"]["contacts"]]
    else:
        ids = [r["Id"] for r in handle.dump_state(api="salesforce", object="Lead")["salesforce"]["Lead"]]
    return [ids[i % len(ids)] for i in range(count)]


def _send_changes(handle: Any, crm: str, targets: list[str], rate: float) -> list[tuple[str, float]]:
    """One demo request every 1/rate seconds through the real client; (lead id, wall time) each."""
    edits: list[tuple[str, float]] = []
    start = time.monotonic()
    if crm == "hubspot":
        from hubspot.crm.contacts import SimplePublicObjectInput

        api = handle.hubspot_client().crm.contacts.basic_api

        def edit(lead: str, stamp: str) -> None:
            api.update(lead, SimplePublicObjectInput(properties={"demo_requested_at": stamp}))
    else:
        rep = handle.salesforce_client(user="rep")

        def edit(lead: str, stamp: str) -> None:
            rep.Lead.update(lead, {"Demo_Requested_At__c": stamp, "LeadSource": "Demo Request"})
    for index, lead in enumerate(targets):
        delay = start + index / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        moment = time.time()
        edit(lead, datetime.fromtimestamp(moment, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z"))
        edits.append((lead, moment))
    return edits


def _written_at(engine: Any, crm: str, edits: list[tuple[str, float]]) -> dict[int, float | None]:
    """Per edit (by index): when its lead's write-back (and task, when one came) landed after it."""
    from state.audit import read_audit

    rows = [r for r in read_audit(engine, crm=crm, limit=1_000_000)
            if r["action"] in ("write_applied", "task_created")]
    by_lead: dict[str, list[tuple[float, str]]] = {}
    for row in rows:
        at = row["at"] if row["at"].tzinfo else row["at"].replace(tzinfo=timezone.utc)
        by_lead.setdefault(row["crm_id"], []).append((at.timestamp(), row["action"]))
    out: dict[int, float | None] = {}
    for index, (lead, moment) in enumerate(edits):
        later = sorted((at, action) for at, action in by_lead.get(lead, []) if at >= moment)
        writes = [at for at, action in later if action == "write_applied"]
        if not writes:
            out[index] = None
            continue
        tasks = [at for at, action in later if action == "task_created" and at <= writes[0] + 5]
        out[index] = max([writes[0]] + tasks[:1])
    return out


def _wait_written(engine: Any, crm: str, edits: list[tuple[str, float]], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(at is not None for at in _written_at(engine, crm, edits).values()):
            return
        time.sleep(1.0)


class _ScheduledSync(threading.Thread):
    """``sync_leads`` every ``every`` seconds while the changes arrive (the 15-minute schedule, compressed)."""

    def __init__(self, crm: str, every: float):
        super().__init__(name="bench-scheduled-sync", daemon=True)
        self.crm, self.every = crm, every
        self.stopping = threading.Event()
        self.summaries: list[dict[str, Any]] = []

    def run(self) -> None:
        from flows.sync import sync_leads

        while not self.stopping.wait(self.every):
            started = time.monotonic()
            summary = sync_leads(self.crm)
            self.summaries.append({**summary, "duration_s": round(time.monotonic() - started, 1)})

    def stop(self) -> None:
        self.stopping.set()
        self.join(300)


def _report(engine: Any, handle: Any, crm: str, edits: list[tuple[str, float]], runs: list[dict[str, Any]],
            syncs: _ScheduledSync) -> dict[str, Any]:
    written = _written_at(engine, crm, edits)
    ages = sorted(at - edits[i][1] for i, at in written.items() if at is not None)
    changed = {lead for lead, _ in edits}
    echo_leads = sorted({i for run in runs for i in run["ids"]} - changed)
    if crm == "hubspot":
        tasks = handle.dump_state(api="hubspot", object="tasks")["hubspot"]["tasks"]
        keys = Counter(t["properties"].get("leadflow_task_key") for t in tasks if t["properties"].get("leadflow_task_key"))
    else:
        tasks = handle.dump_state(api="salesforce", object="Task")["salesforce"]["Task"]
        keys = Counter(t.get("Leadflow_Task_Key__c") for t in tasks if t.get("Leadflow_Task_Key__c"))
    return {
        "freshness_n": len(ages),
        "freshness_p50_s": round(_quantile(ages, 0.50), 2) if ages else None,
        "freshness_p95_s": round(_quantile(ages, 0.95), 2) if ages else None,
        "freshness_max_s": round(ages[-1], 2) if ages else None,
        "not_written": sum(1 for at in written.values() if at is None),
        "duplicate_tasks": sum(count - 1 for count in keys.values() if count > 1),
        "echo_requalified_leads": len(echo_leads),
        "requalify_runs": len(runs),
        "requalify_api_calls": sum(int(r["summary"].get("api_calls") or 0) for r in runs),
        "scheduled_syncs": len(syncs.summaries),
        "scheduled_sync_s": [s.get("duration_s") for s in syncs.summaries],
    }


def _quantile(values: list[float], share: float) -> float:
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(share * 100) - 1]


def render(result: dict[str, Any]) -> str:
    return (f"freshness on {result['crm']} ({result['leads']} leads, {result['changes']} demo requests at "
            f"{result['rate_per_s']}/s, scheduled sync every {result['sync_every_s']} s): "
            f"p50 {result['freshness_p50_s']} s, p95 {result['freshness_p95_s']} s, max {result['freshness_max_s']} s "
            f"over {result['freshness_n']}; not written {result['not_written']}; duplicate tasks "
            f"{result['duplicate_tasks']}; echo re-qualifications {result['echo_requalified_leads']}; "
            f"{result['requalify_runs']} by-id runs, {result['scheduled_syncs']} scheduled syncs")
