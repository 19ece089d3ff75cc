from datetime import datetime, timezone

from crm_harness import calls, now_ms, sandbox_state

from connectors.crm.factory import connector_for_sandbox


def _one_company_many_contacts(sb, contacts: int) -> tuple[str, list[str]]:
    portal = sandbox_state(sb).hubspot
    start = now_ms() - 60_000
    company = "7000001"
    portal.tables["companies"].bulk_load([(company, {"name": "Shared Clinic", "domain": "shared.example"}, start, start)])
    rows = [(str(20_001 + i), {"email": f"p{i}@shared.example", "jobtitle": "CIO"}, start + i, start + i)
            for i in range(contacts)]
    portal.tables["contacts"].bulk_load(rows)
    for cid, *_ in rows:
        portal.associate("contacts", cid, "companies", company)
    portal.reserve_ids_after("contacts")
    portal.reserve_ids_after("companies")
    return company, [r[0] for r in rows]


def test_a_company_is_read_once_per_run_and_afresh_in_the_next(sandbox, engine):
    company, ids = _one_company_many_contacts(sandbox, 6)
    conn = connector_for_sandbox(sandbox, "hubspot", engine, page_size=2, leads_per_page=2, mark_reads=False)
    since = datetime(2000, 1, 1, tzinfo=timezone.utc)

    sandbox.reset_stats()
    pages = list(conn.iter_pages(since, None))
    assert len(pages) == 3 and sum(len(p.leads) for p in pages) == 6
    assert all(lead.company_name == "Shared Clinic" for p in pages for lead in p.leads)
    assert calls(sandbox, "hubspot.").get("hubspot.companies.batch_read") == 1

    sandbox_state(sandbox).hubspot.write("companies", company, {"name": "Shared Clinic Renamed"})
    sandbox.reset_stats()
    pages = list(conn.iter_pages(since, None))
    assert calls(sandbox, "hubspot.").get("hubspot.companies.batch_read") == 1
    assert {lead.company_name for p in pages for lead in p.leads} == {"Shared Clinic Renamed"}
