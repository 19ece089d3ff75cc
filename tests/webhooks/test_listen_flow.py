"""Notifications end to end: the sandbox notifies the receiver when a record changes through the
real clients, the receiver runs the by-id Prefect flow, and leadflow's own write-back coming back
as notifications causes no run and no CRM call. An outage of the receiver loses nothing: the
scheduled sync takes the change."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from hubspot.crm.contacts import SimplePublicObjectInput

from connectors.crm.factory import connector_from_env
from connectors.crm.setup import hubspot_setup, salesforce_setup
from flows.listen import ListenConfig, requalify_runner, running_receiver
from flows.sync import sync_leads
from sandbox import start_sandbox
from sandbox.environment import environment, sandbox_environment
from sandbox.salesforce import ORG_ID, USER_ID
from state.audit import read_audit
from state.schema import make_engine

pytestmark = pytest.mark.prefect

SECRET = "flow-app-secret"


@pytest.fixture()
def world(tmp_path: Path):
    with start_sandbox(8, random_seed=21) as handle:
        env = {**sandbox_environment(handle), "LEADFLOW_DATABASE_URL": f"sqlite:///{tmp_path / 'state.db'}",
               "LEADFLOW_HOME": str(tmp_path)}
        with environment(env):
            hubspot_setup(connector_from_env("hubspot"))
            yield handle, make_engine(env["LEADFLOW_DATABASE_URL"])


def _crm_calls_since(handle, moment: float) -> list[str]:
    return [r["endpoint"] for r in handle.requests() if r["at"] > moment
            and r["endpoint"].startswith(("hubspot.", "salesforce."))]


def _settle(handle, receiver, timeout: float = 30) -> None:
    """Until the sandbox has nothing queued or in flight and the receiver nothing queued or running,
    twice in a row with no delivery and no run in between. A run's own writes are queued in the
    sandbox before the run ends, and the receiver queues a notification's work before it answers,
    so nothing is left on the way once both sides are empty and no count moved."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        idle_before = receiver.coalescer.wait_idle(1)
        status = handle.notify_status()
        quiet = idle_before and status["queued"] == 0 and status["in_flight"] == 0 and receiver.coalescer.idle()
        moved = (sum(status["sent"].values()), len(receiver.coalescer.runs))
        if quiet and moved == last:
            return
        last = moved if quiet else None
        time.sleep(0.02)
    raise AssertionError("notifications did not settle")


def _tasks(handle, contact: str) -> list[dict]:
    tasks = handle.dump_state(api="hubspot", object="tasks")["hubspot"]["tasks"]
    return [t for t in tasks if (t["properties"].get("leadflow_task_key") or "").startswith(f"{contact}:")]


def test_a_demo_request_is_qualified_once_and_the_echo_causes_no_call(prefect_server, world):
    handle, engine = world
    config = ListenConfig(hubspot_secret=SECRET, window_s=0.2)
    with running_receiver(config, requalify_runner, engine) as (url, receiver):
        handle.set_notify(url, hubspot_secret=SECRET, delay_s=0.05)
        contact = handle.dump_state(api="hubspot", object="contacts")["hubspot"]["contacts"][0]["id"]
        handle.hubspot_client().crm.contacts.basic_api.update(contact, SimplePublicObjectInput(
            properties={"demo_requested_at": "2026-11-30T10:00:00Z"}))
        _settle(handle, receiver)
        assert [(crm, leads) for crm, leads, _ in receiver.coalescer.runs] == [("hubspot", [contact])]
        finished = time.time()
        written = handle.dump_state(api="hubspot", object="contacts", id=contact)["hubspot"]["contacts"][0]
        assert written["properties"].get("leadflow_stage") and written["properties"].get("leadflow_reasons")
        assert receiver.counts["hubspot_echo"] > 0  # leadflow's own write came back ...
        _settle(handle, receiver)
        assert len(receiver.coalescer.runs) == 1  # ... and caused no run
        assert _crm_calls_since(handle, finished) == []  # ... and no CRM call
    tasks = _tasks(handle, contact)
    assert len(tasks) == 1  # one next-step task, written once


def test_an_outage_of_the_receiver_loses_nothing(prefect_server, world):
    handle, engine = world
    first = sync_leads("hubspot")
    assert first["failed"] == 0
    with running_receiver(ListenConfig(hubspot_secret=SECRET), requalify_runner, engine) as (url, _receiver):
        pass  # the receiver is down from here on: its port is closed
    handle.set_notify(url, hubspot_secret=SECRET, delay_s=0.01, retry_delays_s=[0.05, 0.05, 0.05])
    contact = handle.dump_state(api="hubspot", object="contacts")["hubspot"]["contacts"][1]["id"]
    handle.hubspot_client().crm.contacts.basic_api.update(contact, SimplePublicObjectInput(
        properties={"demo_requested_at": "2026-11-30T11:00:00Z"}))
    deadline = time.monotonic() + 15
    while handle.notify_status()["sent"]["dropped"] == 0 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert handle.notify_status()["sent"]["dropped"] >= 1  # retried, then given up
    assert handle.notify_status()["sent"]["failed"] >= 4  # the first attempt and its three retries
    handle.set_notify(None)
    caught_up = sync_leads("hubspot")
    audit = read_audit(engine, run_id=caught_up["run_id"], limit=10_000)
    assert contact in {row["crm_id"] for row in audit if row["action"] in ("write_applied", "field_set", "stage_move")}


def test_salesforce_outbound_message_requalifies_and_its_echo_is_ignored(prefect_server, world):
    handle, engine = world
    salesforce_setup(connector_from_env("salesforce"))
    config = ListenConfig(salesforce_org_id=ORG_ID, salesforce_user_id=USER_ID, window_s=0.2)
    with running_receiver(config, requalify_runner, engine) as (url, receiver):
        handle.set_notify(url, delay_s=0.05)
        rep = handle.salesforce_client(user="rep")
        lead = handle.dump_state(api="salesforce", object="Lead")["salesforce"]["Lead"][0]["Id"]
        rep.Lead.update(lead, {"Demo_Requested_At__c": "2026-11-30T10:00:00.000+0000"})
        _settle(handle, receiver)
        assert [(crm, leads) for crm, leads, _ in receiver.coalescer.runs] == [("salesforce", [lead])]
        finished = time.time()
        assert receiver.counts["salesforce_echo"] >= 1
        _settle(handle, receiver)
        assert len(receiver.coalescer.runs) == 1 and _crm_calls_since(handle, finished) == []


def test_notifications_during_a_scheduled_sync_cause_no_double_write(prefect_server, tmp_path: Path):
    """Changes notified while a sync runs over the same leads: each (lead, field, value) is written
    once across both runs, and each lead has at most one next-step task per stage."""
    import threading
    from collections import Counter

    with start_sandbox(40, random_seed=8) as handle:
        env = {**sandbox_environment(handle), "LEADFLOW_DATABASE_URL": f"sqlite:///{tmp_path / 'state.db'}",
               "LEADFLOW_HOME": str(tmp_path)}
        with environment(env):
            hubspot_setup(connector_from_env("hubspot"))
            engine = make_engine(env["LEADFLOW_DATABASE_URL"])
            with running_receiver(ListenConfig(hubspot_secret=SECRET, window_s=0.1), requalify_runner,
                                  engine) as (url, receiver):
                handle.set_notify(url, hubspot_secret=SECRET, delay_s=0.01)
                contacts = [c["id"] for c in handle.dump_state(api="hubspot", object="contacts")["hubspot"]["contacts"]]
                result: dict = {}
                sync = threading.Thread(target=lambda: result.update(sync_leads("hubspot")))
                sync.start()
                client = handle.hubspot_client()
                for contact in contacts[::8]:
                    client.crm.contacts.basic_api.update(contact, SimplePublicObjectInput(
                        properties={"demo_requested_at": "2026-11-30T12:00:00Z"}))
                sync.join(120)
                _settle(handle, receiver)
            assert result["failed"] == 0 and receiver.coalescer.runs
            writes = Counter((row["crm_id"], row["field"], row["new_value"])
                             for row in read_audit(engine, limit=100_000) if row["action"] in ("field_set", "stage_move")
                             and row["field"] not in ("leadflow_scored_at",))
            assert [key for key, count in writes.items() if count > 1] == []
            keys = Counter(t["properties"]["leadflow_task_key"]
                           for t in handle.dump_state(api="hubspot", object="tasks")["hubspot"]["tasks"]
                           if t["properties"].get("leadflow_task_key"))
            assert all(count == 1 for count in keys.values())


def test_rejected_and_replayed_notifications_cause_no_crm_call(prefect_server, world):
    import base64
    import hashlib
    import hmac
    import json

    import httpx

    handle, engine = world
    contact = handle.dump_state(api="hubspot", object="contacts")["hubspot"]["contacts"][2]["id"]
    with running_receiver(ListenConfig(hubspot_secret=SECRET, window_s=0.1), requalify_runner,
                          engine) as (url, receiver):
        endpoint = f"{url}/webhooks/hubspot"
        body = json.dumps([{"eventId": 555, "subscriptionType": "contact.propertyChange", "objectId": int(contact),
                            "propertyName": "demo_requested_at", "propertyValue": "1764496800000",
                            "occurredAt": int(time.time() * 1000)}]).encode()

        def signed(secret: str = SECRET, age_ms: int = 0) -> dict[str, str]:
            ts = str(int(time.time() * 1000) - age_ms)
            mac = hmac.new(secret.encode(), b"POST" + endpoint.encode() + body + ts.encode(), hashlib.sha256)
            return {"X-HubSpot-Signature-v3": base64.b64encode(mac.digest()).decode(), "X-HubSpot-Request-Timestamp": ts}

        started = time.time()
        assert [httpx.post(endpoint, content=body, headers=h).status_code
                for h in ({}, signed("not-the-secret"), signed(age_ms=301_000))] == [401, 401, 401]
        # the receiver queues a notification's work before it answers: idle now means none was queued
        assert receiver.coalescer.wait_idle(5) and receiver.coalescer.runs == []
        assert _crm_calls_since(handle, started) == []
        assert httpx.post(endpoint, content=body, headers=signed()).status_code == 200
        assert receiver.coalescer.wait_idle(30) and len(receiver.coalescer.runs) == 1
        after_run = time.time()
        assert httpx.post(endpoint, content=body, headers=signed()).status_code == 200  # replayed
        assert receiver.coalescer.wait_idle(5) and len(receiver.coalescer.runs) == 1
        assert _crm_calls_since(handle, after_run) == []
