"""The pipeline on CRM-native signals: one page through enrich -> qualify -> write, then the state
store holds each lead's outcome and leadflow's stage moves (one journey per lead), and what
enrichment learned (the matched NPI) is written back where the CRM had none."""

from __future__ import annotations

from pathlib import Path

from state.outcomes import funnel
from flows.demo import environment, sandbox_environment
from flows.pipeline import process_page
from flows.sync import _context
from state.schema import make_engine
from sandbox import start_sandbox


def _run(handle, tmp_path: Path, crm: str, run_id: str):
    url = f"sqlite:///{tmp_path / f'{crm}.db'}"
    env = {**sandbox_environment(handle), "LEADFLOW_DATABASE_URL": url, "LEADFLOW_HOME": str(tmp_path)}
    with environment(env):
        engine = make_engine(url)
        ctx = _context(crm, "sync_leads", run_id, False, engine)
        pages = list(ctx.connector.iter_pages(None, None))
        for page in pages:
            process_page(ctx, page)
        return ctx, engine, [lead for page in pages for lead in page.leads]


def test_a_salesforce_run_keeps_outcomes_stage_moves_and_writes_the_matched_npi(tmp_path):
    with start_sandbox(60, random_seed=7) as handle:
        leads_before = {i: dict(r) for i, r in handle.state.salesforce.tables["Lead"].records.items()}
        ctx, engine, leads = _run(handle, tmp_path, "salesforce", "run-native")
        journeys = funnel(engine, "salesforce")
        staged = [j for j in journeys.values() if j.stages]
        assert len(staged) == len(leads)  # every lead got its first stage, dated at the run
        assert all(set(j.stages.values()) == {ctx.now} for j in staged)
        converted = [lead for lead in leads if lead.outcome and lead.outcome.converted]
        assert converted, "the seed has converted leads"
        for lead in converted:
            journey = journeys[lead.crm_id]
            assert journey.opportunity_id == lead.outcome.opportunity_id
            assert journey.converted_at == lead.outcome.converted_at
            assert journey.furthest in ("won", "lost", "opportunity")
        after = handle.state.salesforce.tables["Lead"].records
        filled = [i for i, r in after.items() if r.get("NPI__c") and not leads_before[i].get("NPI__c")]
        assert filled, "enrichment matched NPIs the CRM did not have"
        assert all(after[i]["NPI__c"] == leads_before[i]["NPI__c"] for i in after if leads_before[i].get("NPI__c"))
        engine.dispose()
