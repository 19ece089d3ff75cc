"""HubSpot search paging across the 10,000-result cap, with many shared timestamps."""

from __future__ import annotations

import time
from collections import Counter
from datetime import datetime, timedelta, timezone

from crm_harness import fast_retry
from crm_harness import calls, sandbox_state

from connectors.crm.factory import connector_for_sandbox
from connectors.crm.setup import hubspot_setup


def _seed(sandbox, blocks: list[tuple[int, int]], start_ms: int) -> list[str]:
    """blocks: (records, records per timestamp)."""
    portal = sandbox_state(sandbox).hubspot
    rows, stamp, next_id = [], start_ms, 10_001
    for count, per_ts in blocks:
        for i in range(count):
            if i % per_ts == 0:
                stamp += 1
            rows.append((str(next_id), {"email": f"c{next_id}@example.org", "jobtitle": "CIO"}, stamp, stamp))
            next_id += 1
    portal.tables["contacts"].bulk_load(rows)
    portal.reserve_ids_after("contacts")
    return [r[0] for r in rows]


def test_25k_contacts_across_the_cap_each_read_once(sandbox, engine):
    conn = connector_for_sandbox(sandbox, "hubspot", engine, retry=fast_retry(), search_per_second=10_000,
                                 burst_limit=10_000, mark_reads=False)
    hubspot_setup(conn)
    start = int((datetime.now(timezone.utc) - timedelta(days=1)).timestamp() * 1000)
    # 6,000 in groups of 40; 12,000 sharing ONE timestamp (a whole window at one time); 7,000 in 7s
    ids = _seed(sandbox, [(6_000, 40), (12_000, 12_000), (7_000, 7)], start)
    sandbox.reset_stats()
    began = time.monotonic()
    seen: Counter[str] = Counter()
    last = None
    for page in conn.iter_pages(datetime.fromtimestamp(start / 1000, timezone.utc), None):
        for lead in page.leads:
            seen[lead.crm_id] += 1
            key = (lead.modified_at, int(lead.crm_id))
            assert last is None or lead.modified_at >= last[0]
            last = key
    assert len(seen) == 25_000 and set(seen) == set(ids)
    assert max(seen.values()) == 1
    searches = calls(sandbox, "hubspot.contacts.search")["hubspot.contacts.search"]
    # 125 pages of new records, + 20 re-reading the 4,000 records at the shared timestamp that the
    # first window already returned (enumerated again by id once, then skipped)
    assert searches <= 25_000 // 200 + 25
    assert time.monotonic() - began < 60


def test_write_fence_groups_across_the_cap_each_record_once_in_order(sandbox, engine):
    """Ten filter groups (no marker, older and newer markers, seven fences) in two search streams,
    each restarting at a (lowered) result cap, with 1,500 records on one timestamp: every record the
    groups select is read exactly once, in modified order, and the fenced echoes are not read."""
    from state import fences

    conn = connector_for_sandbox(sandbox, "hubspot", engine, retry=fast_retry(), search_per_second=10_000,
                                 burst_limit=10_000, mark_reads=False, result_cap=1_000)
    hubspot_setup(conn)
    start = int((datetime.now(timezone.utc) - timedelta(days=1)).timestamp() * 1000)
    ids = _seed(sandbox, [(1_500, 20), (1_500, 1_500), (600, 3)], start)
    table = sandbox_state(sandbox).hubspot.tables["contacts"]
    fence_ms = table.modified[ids[1_200]]  # the fenced contacts modified up to here are leadflow's echoes
    stamps = []
    for k in range(7):
        stamps.append(fences.open_fence(engine, "hubspot", "contacts", start + 10 + k))
        fences.close_fence(engine, "hubspot", "contacts", stamps[-1], fence_ms)
    expected = set()
    for n, cid in enumerate(ids):
        kind = n % 3
        if kind == 1:
            table.records[cid]["leadflow_synced_at"] = start - 60_000  # written before the window
        elif kind == 2:
            table.records[cid]["leadflow_synced_at"] = stamps[n % 7]
        if kind != 2 or table.modified[cid] > fence_ms:
            expected.add(cid)
    sandbox.reset_stats()
    seen: Counter[str] = Counter()
    last = None
    for page in conn.iter_pages(datetime.fromtimestamp(start / 1000, timezone.utc), None):
        for lead in page.leads:
            seen[lead.crm_id] += 1
            assert last is None or lead.modified_at >= last
            last = lead.modified_at
    assert set(seen) == expected and max(seen.values()) == 1
    assert len(expected) < len(ids)
    searches = calls(sandbox, "hubspot.contacts.search")["hubspot.contacts.search"]
    assert searches <= 2 * (len(ids) // 200 + 15)
