"""The webhook receiver over HTTP: only signed, fresh, bounded, new notifications are accepted, with
the status each platform expects, and a rejected one causes no work and no CRM call. The requests
are the sandbox's own notifications (sandbox/notify.py) where they can be, hand-made otherwise."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from pathlib import Path

import httpx
import pytest

from flows.listen import ListenConfig, running_receiver
from sandbox import start_sandbox
from sandbox.notify import outbound_message
from sandbox.salesforce import ORG_ID
from state.schema import make_engine

SECRET = "test-app-secret"


class Recorder:
    def __init__(self):
        self.calls: list[tuple[str, list[str], list[str]]] = []

    def __call__(self, crm, leads, companies):
        self.calls.append((crm, sorted(leads), sorted(companies)))


@pytest.fixture()
def receiver(tmp_path: Path):
    engine = make_engine(f"sqlite:///{tmp_path / 'state.db'}")
    runner = Recorder()
    config = ListenConfig(hubspot_secret=SECRET, salesforce_org_id=ORG_ID, window_s=0.05, max_body=64 * 1024)
    with running_receiver(config, runner, engine) as (url, rec):
        yield url, rec, runner


def _signed(url: str, body: bytes, secret: str = SECRET, timestamp: int | None = None) -> dict[str, str]:
    ts = str(timestamp if timestamp is not None else int(time.time() * 1000))
    source = b"POST" + url.encode() + body + ts.encode()
    signature = base64.b64encode(hmac.new(secret.encode(), source, hashlib.sha256).digest()).decode()
    return {"X-HubSpot-Signature-v3": signature, "X-HubSpot-Request-Timestamp": ts,
            "Content-Type": "application/json"}


def _events(*ids: int, contact: str = "101", prop: str = "demo_requested_at") -> bytes:
    return json.dumps([{"eventId": i, "subscriptionId": 1, "portalId": 1, "appId": 1, "occurredAt": 1_700_000_000_000,
                        "subscriptionType": "contact.propertyChange", "attemptNumber": 0, "objectId": int(contact),
                        "propertyName": prop, "propertyValue": "2026-01-01", "changeSource": "CRM_UI"}
                       for i in ids]).encode()


def test_hubspot_accepts_only_signed_fresh_bounded_new_requests(receiver):
    url, rec, runner = receiver
    endpoint = f"{url}/webhooks/hubspot"
    body = _events(1, 2)
    assert httpx.post(endpoint, content=body).status_code == 401  # unsigned
    assert httpx.post(endpoint, content=body, headers=_signed(endpoint, body, "wrong-secret")).status_code == 401
    stale = int(time.time() * 1000) - 6 * 60 * 1000
    assert httpx.post(endpoint, content=body, headers=_signed(endpoint, body, timestamp=stale)).status_code == 401
    tampered = _events(1, 2, contact="102")
    assert httpx.post(endpoint, content=tampered, headers=_signed(endpoint, body)).status_code == 401
    big = b"[" + b" " * (64 * 1024) + b"]"
    assert httpx.post(endpoint, content=big, headers=_signed(endpoint, big)).status_code == 413
    chunked = httpx.post(endpoint, content=iter([big[:40_000], big[40_000:]]), headers=_signed(endpoint, big))
    assert chunked.status_code == 413  # no Content-Length: counted as it streams in
    assert rec.coalescer.wait_idle(5) and runner.calls == []

    assert httpx.post(endpoint, content=body, headers=_signed(endpoint, body)).status_code == 200
    assert rec.coalescer.wait_idle(5) and runner.calls == [("hubspot", ["101"], [])]
    # the same events again (a replay, or HubSpot retrying): acknowledged, no work
    assert httpx.post(endpoint, content=body, headers=_signed(endpoint, body)).status_code == 200
    assert rec.coalescer.wait_idle(5) and len(runner.calls) == 1  # work is queued before the answer
    assert rec.counts["hubspot_replayed"] == 2
    # a property leadflow does not read causes no work
    other = _events(3, prop="hs_persona_notes")
    assert httpx.post(endpoint, content=other, headers=_signed(endpoint, other)).status_code == 200
    assert rec.coalescer.wait_idle(5) and len(runner.calls) == 1 and rec.counts["hubspot_not_read"] == 1


def test_salesforce_acks_its_org_and_faults_the_rest(receiver):
    url, rec, runner = receiver
    endpoint = f"{url}/webhooks/salesforce"
    fields = {"Id": "00Q5g00000ABCDEFGH", "LastModifiedById": "0055g00000BxYZbAAN",
              "SystemModstamp": "2026-01-01T10:00:00.000+0000"}
    body = outbound_message(ORG_ID, "04k5g000000CaRkAAK", [("04l5g0000000000001", "Lead", fields)])
    wrong = outbound_message("00D5g000004SBXbEAO", "04k5g000000CaRkAAK", [("04l5g0000000000002", "Lead", fields)])
    refused = httpx.post(endpoint, content=wrong, headers={"Content-Type": "text/xml"})
    assert refused.status_code == 500 and b"Fault" in refused.content  # Salesforce keeps it and retries
    garbled = httpx.post(endpoint, content=b"<not-soap/>", headers={"Content-Type": "text/xml"})
    assert garbled.status_code == 500 and b"Fault" in garbled.content
    assert rec.coalescer.wait_idle(5) and runner.calls == []

    for _ in range(2):  # the second delivery is a retry of the first: acknowledged, no work
        answer = httpx.post(endpoint, content=body, headers={"Content-Type": "text/xml"})
        assert answer.status_code == 200 and b"<Ack>true</Ack>" in answer.content
        assert b"notificationsResponse" in answer.content
        assert rec.coalescer.wait_idle(5)  # the first delivery's run is over before the retry arrives
    assert rec.coalescer.wait_idle(5) and runner.calls == [("salesforce", ["00Q5g00000ABCDEFGH"], [])]
    assert rec.counts["salesforce_replayed"] == 1


def test_a_burst_of_changes_to_one_lead_is_one_run(tmp_path: Path):
    """The sandbox's own signed batches: five quick edits of one contact, one run."""
    engine = make_engine(f"sqlite:///{tmp_path / 'state.db'}")
    runner = Recorder()
    config = ListenConfig(hubspot_secret=SECRET, window_s=1.0)
    with start_sandbox(3, random_seed=3) as handle, running_receiver(config, runner, engine) as (url, rec):
        handle.set_notify(url, hubspot_secret=SECRET, delay_s=0.0)  # each edit its own delivery
        contact = handle.dump_state(api="hubspot", object="contacts")["hubspot"]["contacts"][0]["id"]
        client = handle.hubspot_client()
        from hubspot.crm.contacts import SimplePublicObjectInput

        for day in range(1, 6):
            client.crm.contacts.basic_api.update(contact, SimplePublicObjectInput(
                properties={"demo_requested_at": f"2026-01-0{day}T10:00:00Z"}))
        deadline = time.monotonic() + 10
        while handle.notify_status()["sent"]["hubspot"] < 5 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert rec.coalescer.wait_idle(10)
    assert runner.calls == [("hubspot", [contact], [])]


def test_association_changes_name_the_contact_on_either_side():
    from connectors.crm.webhooks import parse_hubspot

    body = json.dumps([
        {"eventId": 7, "subscriptionType": "contact.associationChange", "fromObjectId": 101, "toObjectId": 900,
         "associationType": "CONTACT_TO_COMPANY", "associationRemoved": False, "occurredAt": 1},
        {"eventId": 8, "subscriptionType": "company.associationChange", "fromObjectId": 900, "toObjectId": 101,
         "associationType": "COMPANY_TO_CONTACT", "associationRemoved": False, "occurredAt": 1},
        {"eventId": 9, "subscriptionType": "deal.creation", "objectId": 5, "occurredAt": 1},
    ]).encode()
    changes = parse_hubspot(body)
    assert [(c.object, c.object_id, c.related_id) for c in changes] == [("contact", "101", "900"),
                                                                         ("company", "900", "101")]


def test_the_sandbox_notifies_loopback_addresses_only():
    with start_sandbox(1, random_seed=1) as handle:
        with pytest.raises(httpx.HTTPStatusError) as refused:
            handle.set_notify("http://example.com:8780")
        assert refused.value.response.status_code == 400
        assert handle.notify_status()["url"] is None
