"""HubSpot write fences (state/fences.py): the run after a write-back reads what people changed,
not leadflow's own writes. Real pipeline (crm_harness.run_sync), real hubspot-api-client, sandbox."""

from __future__ import annotations

import logging
import time
from typing import Any

import pytest
from crm_harness import calls, fast_retry, run_sync, sandbox_state, seed_hubspot

from connectors.crm.factory import connector_for_sandbox
from connectors.crm.setup import check, hubspot_setup
from leadflow import settings
from state import fences

MARKER = "leadflow_synced_at"


@pytest.fixture()
def hs(sandbox, engine):
    conn = connector_for_sandbox(sandbox, "hubspot", engine, retry=fast_retry(attempts=2))
    hubspot_setup(conn)
    return conn


class Fetched:
    """The contact ids every search of the connector returned (wraps its transport's ``search``)."""

    def __init__(self, conn: Any) -> None:
        self.ids: list[str] = []
        self.searches = 0
        search = conn.transport.search

        def recorded(object_type: str, body: dict[str, Any]) -> dict[str, Any]:
            data = search(object_type, body)
            if object_type == "contacts":
                self.searches += 1
                self.ids.extend(str(r["id"]) for r in data.get("results") or [])
            return data

        conn.transport.search = recorded


def _marker(sandbox, cid: str) -> Any:
    return sandbox_state(sandbox).hubspot.tables["contacts"].records[cid].get(MARKER)


def _edit_after(sandbox, cid: str, props: dict[str, str], seconds: float) -> None:
    """A person's edit in the UI ``seconds`` after leadflow's write: other properties change and
    ``lastmodifieddate`` moves; the marker stays as leadflow wrote it."""
    table = sandbox_state(sandbox).hubspot.tables["contacts"]
    wait = table.modified[cid] / 1000 + seconds - time.time()
    if wait > 0:
        time.sleep(wait)
    sandbox_state(sandbox).hubspot.write("contacts", cid, props)


def test_an_edit_one_second_after_leadflows_write_is_read_and_requalified(sandbox, hs, engine):
    ids = seed_hubspot(sandbox, 250, engaged=250)
    first = run_sync(hs, engine)
    assert first.read == 250 and not first.failed
    assert all(_marker(sandbox, i) for i in ids)  # every written contact carries its batch's stamp
    live = fences.live_fences(engine, "hubspot", "contacts", 0)
    assert len(live) == 3 and all(f.fence_ms is not None for f in live)

    edited = ids[120]  # a contact of the second batch
    _edit_after(sandbox, edited, {"jobtitle": "Receptionist"}, 1.0)
    fetched = Fetched(hs)
    second = run_sync(hs, engine)
    assert second.ids == [edited]  # re-qualified with the person's change
    assert fetched.ids == [edited]  # the 249 contacts only leadflow wrote are not fetched
    assert fetched.searches == 2  # 3 groups + 3 fences: ceil(6 / 5) searches


def test_a_no_change_run_after_a_small_write_back_makes_at_most_two_search_calls(sandbox, hs, engine):
    ids = seed_hubspot(sandbox, 40, engaged=40)
    run_sync(hs, engine)
    sandbox_state(sandbox).hubspot.write("contacts", ids[3], {"budget_status": "approved", "purchase_timeline": "now"})
    changed = run_sync(hs, engine)
    assert changed.ids == [ids[3]] and changed.written == 1
    fetched = Fetched(hs)
    sandbox.reset_stats()
    quiet = run_sync(hs, engine)
    assert quiet.read == 0 and quiet.written == 0
    assert calls(sandbox, "hubspot.contacts.search")["hubspot.contacts.search"] <= 2
    assert sum(calls(sandbox, "hubspot.").values()) <= 2
    assert fetched.ids == []  # none of leadflow's 41 writes


def test_a_write_whose_answer_was_lost_keeps_its_fence_open_and_its_records_are_read(sandbox, hs, engine):
    ids = seed_hubspot(sandbox, 250, engaged=250)
    # the first batch lands but no answer ever comes (both attempts); the two others are answered
    sandbox.set_faults("hubspot.contacts.batch_update:drop=after,count=2")
    first = run_sync(hs, engine)
    sandbox.set_faults("")
    lost = [i for i in ids if i in first.failed]
    assert len(lost) == 100 and all(_marker(sandbox, i) for i in lost)  # it landed
    live = fences.live_fences(engine, "hubspot", "contacts", 0)
    assert [f.fence_ms is None for f in live] == [True, False, False]

    second = run_sync(hs, engine)  # the pending leads are re-read by id; HubSpot holds their values
    assert set(lost) <= set(second.ids) and not second.failed

    edited = lost[10]
    _edit_after(sandbox, edited, {"jobtitle": "Office Manager"}, 1.0)
    fetched = Fetched(hs)
    third = run_sync(hs, engine)
    assert third.ids == [edited]  # the open fence's batch is read whole: the edit is not lost
    assert edited in fetched.ids


def test_a_change_that_becomes_visible_late_is_caught_by_the_lookback(sandbox, hs, engine):
    ids = seed_hubspot(sandbox, 30, engaged=30)
    run_sync(hs, engine)
    table = sandbox_state(sandbox).hubspot.tables["contacts"]
    _edit_after(sandbox, ids[0], {"jobtitle": "Director of Nursing"}, 1.0)
    late_at = table.modified[ids[0]] - 200  # edited before ids[0], ...
    seen = run_sync(hs, engine)
    assert seen.ids == [ids[0]]
    # ... but visible in search only now (the sandbox indexes at once: the change is put in the past)
    table.update(ids[1], {"jobtitle": "Practice Administrator"}, late_at)
    fetched = Fetched(hs)
    caught = run_sync(hs, engine)
    assert caught.ids == [ids[1]]
    assert fetched.ids == [ids[1]]


def test_a_contact_written_before_the_window_and_edited_inside_it_is_read(sandbox, hs, engine, monkeypatch):
    monkeypatch.setattr(settings, "LOOKBACK_SECONDS", 1)  # fences expire a second after the watermark
    ids = seed_hubspot(sandbox, 30, engaged=30)
    run_sync(hs, engine)
    old_stamp = _marker(sandbox, ids[5])
    _edit_after(sandbox, ids[0], {"budget_status": "approved", "purchase_timeline": "now"}, 1.2)
    assert run_sync(hs, engine).ids == [ids[0]]
    assert any(f.stamp > old_stamp for f in fences.live_fences(engine, "hubspot", "contacts", 0))  # written again
    time.sleep(1.2)
    sandbox_state(sandbox).hubspot.write("contacts", ids[5], {"jobtitle": "Billing Manager"})
    third = run_sync(hs, engine)
    assert third.ids == [ids[5]]
    assert all(f.stamp > old_stamp for f in fences.live_fences(engine, "hubspot", "contacts", 0))  # expired


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def test_without_the_marker_property_own_writes_are_re_read_as_before(sandbox, engine):
    conn = connector_for_sandbox(sandbox, "hubspot", engine, retry=fast_retry())
    assert any(MARKER in line for line in hubspot_setup(conn).created)
    assert check(conn)["sync_marker"] == {"property": MARKER, "present": True}
    del sandbox_state(sandbox).hubspot.properties["contacts"][MARKER]  # an install from before the marker
    assert check(conn)["sync_marker"] == {"property": MARKER, "present": False}
    ids = seed_hubspot(sandbox, 30, engaged=30)
    lines = Lines()
    logger = logging.getLogger("leadflow.connectors.crm.hubspot")
    logger.addHandler(lines)  # on the logger itself: Prefect may reconfigure the root's handlers mid-test
    try:
        first = run_sync(conn, engine)
        fetched = Fetched(conn)
        second = run_sync(conn, engine)
    finally:
        logger.removeHandler(lines)
    assert first.read == 30 and not first.failed and not any(_marker(sandbox, i) for i in ids)
    assert second.read == 0 and len(fetched.ids) == 30  # the echoes are fetched, and skipped
    assert sum(MARKER in line for line in lines.messages) == 1
    assert fences.live_fences(engine, "hubspot", "contacts", 0) == []



def test_a_marker_newer_than_every_fence_is_another_writers_and_is_read(sandbox, hs, engine):
    ids = seed_hubspot(sandbox, 30, engaged=30)
    run_sync(hs, engine)
    newest = fences.live_fences(engine, "hubspot", "contacts", 0)[-1].stamp
    # another system (a second leadflow install, an import) stamps the marker after leadflow's last write
    sandbox_state(sandbox).hubspot.write("contacts", ids[7], {MARKER: str(newest + 60_000), "jobtitle": "CFO"})
    assert run_sync(hs, engine).ids == [ids[7]]


def test_the_marker_written_with_a_lead_is_on_its_write_applied_audit_row(sandbox, hs, engine):
    """The marker is a CRM change too: each written contact's stamp is audited with its write."""
    from state.audit import read_audit

    ids = seed_hubspot(sandbox, 120, engaged=120)
    run_sync(hs, engine)
    applied = {row["crm_id"]: row for row in read_audit(engine, crm="hubspot", limit=100_000)
               if row["action"] == "write_applied"}
    assert set(applied) == set(ids)
    for cid in ids:
        assert applied[cid]["field"] == MARKER
        assert applied[cid]["new_value"] == str(_marker(sandbox, cid))


def test_two_pages_written_at_once_each_get_the_markers_of_their_own_leads(sandbox, hs, engine):
    """Two pages in flight write through one connector: while one page's company batch is still
    under way, the other page's write must not take the first page's marker stamps from its result."""
    import threading

    from connectors.crm.base import LeadUpdate

    first, second = seed_hubspot(sandbox, 2)
    company = next(iter(sandbox_state(sandbox).hubspot.tables["companies"].records))
    sandbox.set_faults("hubspot.companies.batch_update:delay=0.8,count=1")
    results = {}

    def write(name: str, updates: list[LeadUpdate]) -> None:
        results[name] = hs.write_updates(updates)

    slow = threading.Thread(target=write, args=("slow", [
        LeadUpdate(first, "lead", first, {"jobtitle": "CFO"}, []),
        LeadUpdate(first, "company", company, {"city": "Macon"}, [])]))
    slow.start()
    time.sleep(0.3)  # the slow page's contacts are written; its company batch is held
    write("quick", [LeadUpdate(second, "lead", second, {"jobtitle": "CMO"}, [])])
    slow.join()
    assert results["slow"].markers == {first: (MARKER, str(_marker(sandbox, first)))}
    assert results["quick"].markers == {second: (MARKER, str(_marker(sandbox, second)))}
