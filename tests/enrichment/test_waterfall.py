"""The waterfall: provider order, field policies, provenance, batching, caching, patients, config."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
import pytest
from enrichment_support import (NPPES_TEST_URL, registry_mock, InFlightCounter, all_fixture_records, fixture_registry, make_lead,
                                quiet_provider, registry_answer)

from state.cache import EnrichmentCache
from connectors.enrichment.waterfall import LookupKey, Waterfall, build_waterfall
from connectors.enrichment.reference import ReferenceFileProvider
from state import schema as store
from leadflow.canonical import CareSetting, LeadKind, OrgType, PatientInquiry
from sandbox.nppes import NppesRegistry

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=timezone.utc)



@pytest.fixture()
def cache(sqlite_url):
    engine = store.make_engine(sqlite_url)
    yield EnrichmentCache(engine)
    engine.dispose()


def test_name_lookup_fills_blank_fields_with_provenance_and_a_contact_hint(nppes_api):
    waterfall = Waterfall([quiet_provider()])
    [outcome] = waterfall.enrich_batch([make_lead(company_name="Peach State Medical Practice", state="PA")], NOW)
    lead = outcome.lead
    assert lead.npi == "1174270805" and lead.org_type is OrgType.physician_practice
    assert lead.care_setting is CareSetting.ambulatory and lead.location_count == 1
    assert lead.specialty == "Obstetrics & Gynecology, Reproductive Endocrinology"
    assert lead.company_name == "Peach State Medical Practice"  # kept: fill blanks only
    provenance = outcome.provenance["org_type"]
    assert (provenance.provider, provenance.at, provenance.confidence, provenance.source_key) == ("nppes", NOW, 1.0, "nppes:npi:1174270805")
    assert outcome.contact_hint == {"name": "Dr. FAHIMEH SASAN", "title": "Founding OBGYN", "credential": "DO", "source": "nppes:npi:1174270805"}
    assert outcome.facts["nppes_category"] == "multi_specialty_group"


def test_original_lead_is_not_modified(nppes_api):
    original = make_lead(company_name="Peach State Medical Practice", state="PA")
    [outcome] = Waterfall([quiet_provider()]).enrich_batch([original], NOW)
    assert original.npi is None and outcome.lead.npi == "1174270805" and outcome.lead is not original


def test_npi_lookup_and_fallback_to_name_when_the_npi_is_an_individual(nppes_api):
    leads = [
        make_lead("1", npi="1568946812"),
        make_lead("2", npi="1760485387", company_name="Vios Fertility Institute Michigan", state="MI"),
    ]
    by_npi, fallback = Waterfall([quiet_provider()]).enrich_batch(leads, NOW)
    assert by_npi.lead.company_name == "CSP ANESTHESIA LLC" and by_npi.lead.state == "GA"
    assert by_npi.lead.specialty == "Anesthesiology"
    assert fallback.lead.org_type is OrgType.physician_practice
    assert fallback.lead.npi == "1760485387"  # the lead's own value is kept
    assert fallback.provenance["specialty"].source_key == "nppes:npi:1225701881"
    assert fallback.notes == ["NPPES: NPI 1760485387 is an individual (NPI-1), not an organization"]


def test_ambiguous_match_enriches_nothing_and_says_why(nppes_api):
    records = all_fixture_records()
    base = next(r for r in records if r["number"] == 1417229741)
    twin = {**base, "number": 1999999999, "basic": {**base["basic"], "organization_name": "NORTHEAST ATLANTA VASCULAR CARE, PC"}}
    registry = NppesRegistry([base, twin])
    nppes_api.side_effect = lambda request: httpx.Response(200, json=registry.search(dict(request.url.params)))
    [outcome] = Waterfall([quiet_provider()]).enrich_batch([make_lead(company_name="Northeast Atlanta Vascular Care", state="GA")], NOW)
    assert outcome.provenance == {}
    assert outcome.notes == ["NPPES: ambiguous match for 'Northeast Atlanta Vascular Care' in GA: 2 candidates within 0.03"]


def test_leads_of_one_organization_share_one_lookup(nppes_api):
    leads = [make_lead(str(i), company_name=name, state="GA") for i, name in
             enumerate(["C.S.P. Anesthesia", "CSP Anesthesia", "CSP ANESTHESIA, LLC", "csp anesthesia llc"])]
    waterfall = Waterfall([quiet_provider()])
    outcomes = waterfall.enrich_batch(leads, NOW)
    assert nppes_api.call_count == 1
    assert all(o.lead.npi == "1568946812" for o in outcomes)
    assert waterfall.stats()["lookups"] == 1


def test_one_search_serves_every_lookup_that_sends_it(nppes_api):
    """Leads of other cities (other lookups, other cache keys) send the same name search: the run
    sends it once and each lookup still decides for its own city."""
    leads = [make_lead("1", company_name="CSP Anesthesia", state="GA", city="Atlanta"),
             make_lead("2", company_name="CSP Anesthesia", state="GA", city="Savannah"),
             make_lead("3", company_name="CSP Anesthesia", state="GA")]
    provider = quiet_provider()
    outcomes = Waterfall([provider]).enrich_batch(leads, NOW)
    sent = [call.request.url.params["organization_name"] for call in nppes_api.calls]
    assert sent.count("CSP ANESTHESIA*") == 1 and len(sent) == len(set(sent))
    assert [o.lead.npi for o in outcomes] == ["1568946812", None, "1568946812"]
    assert "namesake elsewhere" in " ".join(outcomes[1].notes)
    assert provider.stats()["searches_reused"] == 2


def test_the_cache_makes_a_rerun_free_and_misses_expire_sooner(nppes_api, cache):
    leads = [make_lead("1", company_name="CSP Anesthesia", state="GA"), make_lead("2", company_name="Nowhere Clinic", state="GA")]
    first = Waterfall([quiet_provider()], cache)
    first.enrich_batch(leads, NOW)
    calls = nppes_api.call_count
    again = Waterfall([quiet_provider()], cache)
    outcomes = again.enrich_batch(leads, NOW + timedelta(days=1))
    assert nppes_api.call_count == calls
    assert again.stats()["cache_hits"] == 2 and again.stats()["lookups"] == 0
    assert outcomes[0].lead.npi == "1568946812" and outcomes[0].provenance["npi"].fetched_at == NOW
    assert outcomes[1].notes == ["NPPES: no usable match for 'Nowhere Clinic' in GA (cached miss from 2026-11-27)"]
    later = Waterfall([quiet_provider()], cache)
    later.enrich_batch(leads, NOW + timedelta(days=4))
    assert later.stats()["cache_hits"] == 1 and later.stats()["lookups"] == 1


def test_a_name_match_is_cached_under_its_npi_too(nppes_api, cache):
    Waterfall([quiet_provider()], cache).enrich_batch([make_lead(company_name="CSP Anesthesia", state="GA")], NOW)
    calls = nppes_api.call_count
    by_npi = Waterfall([quiet_provider()], cache)
    [outcome] = by_npi.enrich_batch([make_lead(npi="1568946812")], NOW)
    assert nppes_api.call_count == calls and by_npi.stats()["cache_hits"] == 1
    assert outcome.lead.company_name == "CSP ANESTHESIA LLC" and outcome.provenance["company_name"].confidence == 1.0


def test_errors_are_not_cached(nppes_api, cache):
    nppes_api.side_effect = lambda request: httpx.Response(500)
    lead = make_lead(company_name="CSP Anesthesia", state="GA")
    failing = Waterfall([quiet_provider(attempts=1)], cache)
    [outcome] = failing.enrich_batch([lead], NOW)
    assert outcome.notes == ["NPPES: lookup failed for 'CSP Anesthesia' in GA: HTTP 500"]
    assert failing.stats()["errors"] == 1
    nppes_api.side_effect = registry_answer
    [outcome] = Waterfall([quiet_provider()], cache).enrich_batch([lead], NOW)
    assert outcome.lead.npi == "1568946812"


def test_a_crashing_provider_degrades_to_notes_and_later_providers_still_run(nppes_api, tmp_path):
    class Broken:
        name, label, cacheable, fillable, key_requirement = "broken", "Broken", False, frozenset({"bed_count"}), "anything"

        def lookup_keys(self, lead):
            return [LookupKey("k", {}, "k")]

        async def fetch_many(self, keys):
            raise RuntimeError("bug")

        def stats(self):
            return {}

    waterfall = Waterfall([Broken(), quiet_provider()])
    [outcome] = waterfall.enrich_batch([make_lead(company_name="CSP Anesthesia", state="GA")], NOW)
    assert outcome.notes == ["Broken: lookup failed (RuntimeError)"]
    assert outcome.lead.npi == "1568946812" and waterfall.stats()["errors"] == 1


def test_patient_leads_are_not_enriched_and_notes_carry_no_patient_data(nppes_api):
    patient = make_lead(lead_kind=LeadKind.patient, company_name="CSP Anesthesia", state="GA",
                        patient=PatientInquiry(service_requested="fertility consult", payer="Aetna", zip="30301"))
    waterfall = Waterfall([quiet_provider()])
    [outcome] = waterfall.enrich_batch([patient], NOW)
    assert nppes_api.call_count == 0 and outcome.provenance == {}
    assert outcome.notes == ["patient lead: not enriched"]
    assert waterfall.stats()["patient_leads_skipped"] == 1


def test_leads_with_every_field_filled_are_not_looked_up(nppes_api):
    full = make_lead(company_name="CSP Anesthesia", state="GA", npi="1568946812", org_type="clinic", specialty="x",
                     care_setting="ambulatory", location_count=1, org_kind="other")
    [outcome] = Waterfall([quiet_provider()]).enrich_batch([full], NOW)
    assert nppes_api.call_count == 0 and outcome.notes == []


def write_reference(tmp_path: Path) -> ReferenceFileProvider:
    path = tmp_path / "vendor.csv"
    path.write_text("Name,State,Type,Beds\nCSP Anesthesia,GA,Health System,40\n", encoding="utf-8")
    return ReferenceFileProvider(path=path, columns={"company_name": "Name", "state": "State", "org_type": "Type", "bed_count": "Beds"},
                                 match_on=("name_state",))


def test_earlier_providers_win_under_fill_blank(nppes_api, tmp_path):
    waterfall = Waterfall([write_reference(tmp_path), quiet_provider()])
    [outcome] = waterfall.enrich_batch([make_lead(company_name="CSP Anesthesia", state="GA")], NOW)
    assert outcome.lead.org_type is OrgType.health_system and outcome.provenance["org_type"].provider == "reference"
    assert outcome.lead.bed_count == 40 and outcome.provenance["specialty"].provider == "nppes"


def test_higher_confidence_policy_lets_a_later_provider_replace_an_enriched_value(nppes_api, tmp_path):
    waterfall = Waterfall([write_reference(tmp_path), quiet_provider()], field_policy={"org_type": "higher_confidence"})
    [outcome] = waterfall.enrich_batch([make_lead(company_name="CSP Anesthesia", state="GA")], NOW)
    assert outcome.lead.org_type is OrgType.physician_practice and outcome.provenance["org_type"].provider == "nppes"


def test_higher_confidence_never_replaces_a_crm_value(nppes_api):
    waterfall = Waterfall([quiet_provider()], field_policy={"org_type": "higher_confidence"})
    [outcome] = waterfall.enrich_batch([make_lead(company_name="CSP Anesthesia", state="GA", org_type="clinic")], NOW)
    assert outcome.lead.org_type is OrgType.clinic


def test_overwrite_and_never_policies(nppes_api):
    waterfall = Waterfall([quiet_provider()], field_policy={"org_type": "overwrite", "specialty": "never"})
    [outcome] = waterfall.enrich_batch([make_lead(company_name="CSP Anesthesia", state="GA", org_type="clinic")], NOW)
    assert outcome.lead.org_type is OrgType.physician_practice and outcome.lead.specialty is None


def test_build_waterfall_from_config_and_environment(nppes_api, tmp_path, monkeypatch, sqlite_url):
    reference = tmp_path / "vendor.csv"
    reference.write_text("Website,Beds\ncsp.example,12\n", encoding="utf-8")
    config = tmp_path / "enrichment.yaml"
    config.write_text(json.dumps({
        "providers": [
            {"type": "reference_file", "path": "${VENDOR_CSV}", "match_on": ["domain"], "columns": {"domain": "Website", "bed_count": "Beds"}},
            {"type": "nppes", "backoff_seconds": 0, "concurrency": 2},
        ],
        "cache": {"ttl_days": 10, "miss_ttl_days": 1},
        "field_policy": {"default": "fill_blank", "specialty": "never"},
    }), encoding="utf-8")
    monkeypatch.setenv("VENDOR_CSV", str(reference))
    monkeypatch.setenv("LEADFLOW_NPPES_URL", NPPES_TEST_URL)
    engine = store.make_engine(sqlite_url)
    waterfall = build_waterfall(config, engine=engine)
    assert [p.name for p in waterfall.providers] == ["reference", "nppes"]
    assert waterfall.cache.ttl == timedelta(days=10)
    [outcome] = waterfall.enrich_batch([make_lead(company_domain="csp.example", company_name="CSP Anesthesia", state="GA")], NOW)
    assert outcome.lead.bed_count == 12 and outcome.lead.npi == "1568946812" and outcome.lead.specialty is None
    engine.dispose()


def test_default_config_builds_without_a_reference_file(monkeypatch, sqlite_url):
    monkeypatch.delenv("LEADFLOW_REFERENCE_CSV", raising=False)
    engine = store.make_engine(sqlite_url)
    waterfall = build_waterfall(engine=engine, nppes_url=NPPES_TEST_URL)
    assert [p.name for p in waterfall.providers] == ["nppes", "crm_industry"] and waterfall.providers[0].url == NPPES_TEST_URL
    monkeypatch.setenv("LEADFLOW_REFERENCE_CSV", "/nonexistent/vendor.csv")
    with pytest.raises(FileNotFoundError):
        build_waterfall(engine=engine)
    engine.dispose()


def test_enrich_batch_works_when_called_inside_a_running_loop(nppes_api):
    import asyncio

    async def caller():
        return Waterfall([quiet_provider()]).enrich_batch([make_lead(company_name="CSP Anesthesia", state="GA")], NOW)

    [outcome] = asyncio.run(caller())
    assert outcome.lead.npi == "1568946812"


def test_stats_for_the_run_summary(nppes_api):
    waterfall = Waterfall([quiet_provider()])
    waterfall.enrich_batch([make_lead("1", company_name="CSP Anesthesia", state="GA"), make_lead("2")], NOW)
    stats = waterfall.stats()
    assert {k: stats[k] for k in ("leads", "leads_enriched", "lookups", "found", "errors", "requests")} == {
        "leads": 2, "leads_enriched": 1, "lookups": 1, "found": 1, "errors": 0, "requests": 1}
    assert stats["by_provider"]["nppes"]["max_in_flight"] == 1


def run_in_threads(count: int, work) -> list:
    import threading

    barrier = threading.Barrier(count)
    results: list = [None] * count

    def target(index: int) -> None:
        barrier.wait()
        results[index] = work(index)

    threads = [threading.Thread(target=target, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    return results


def test_concurrency_bound_holds_across_batches_running_in_threads():
    slow = InFlightCounter(httpx.Response(200, json={"result_count": 0, "results": []}))

    provider = quiet_provider(concurrency=3)
    waterfall = Waterfall([provider])
    with registry_mock() as nppes_mock:
        route = nppes_mock.get(NPPES_TEST_URL).mock(side_effect=slow)
        run_in_threads(3, lambda t: waterfall.enrich_batch([make_lead(f"{t}-{i}", npi=f"1{t}{i:08d}") for i in range(8)], NOW))
    assert route.call_count == 24
    assert slow.peak <= 3 and provider.stats()["max_in_flight"] <= 3


def test_concurrent_batches_share_one_lookup_of_an_organization(cache):
    import time

    def slow(request: httpx.Request) -> httpx.Response:  # runs in the provider's request threads
        time.sleep(0.05)
        return httpx.Response(200, json=fixture_registry().search(dict(request.url.params)))

    waterfall = Waterfall([quiet_provider()], cache)
    with registry_mock() as nppes_mock:
        route = nppes_mock.get(NPPES_TEST_URL).mock(side_effect=slow)
        outcomes = run_in_threads(4, lambda t: waterfall.enrich_batch([make_lead(str(t), company_name="CSP Anesthesia", state="GA")], NOW))
    assert route.call_count == 1
    assert all(batch[0].lead.npi == "1568946812" for batch in outcomes)
    stats = waterfall.stats()
    assert stats["lookups"] == 1 and stats["shared_lookups"] + stats["cache_hits"] == 3


def test_configured_nucc_file_spells_the_specialty(nppes_api, tmp_path, sqlite_url):
    from enrichment_support import TAXONOMY_SAMPLE_CSV

    config = tmp_path / "enrichment.yaml"
    config.write_text(json.dumps({"providers": [{"type": "nppes", "taxonomy_csv": str(TAXONOMY_SAMPLE_CSV)}],
                                  "cache": {"enabled": False}}), encoding="utf-8")
    waterfall = build_waterfall(config, nppes_url=NPPES_TEST_URL)
    assert waterfall.cache is None
    [outcome] = waterfall.enrich_batch([make_lead(company_name="Northeast Atlanta Vascular Care", state="GA")], NOW)
    assert outcome.lead.specialty == "Surgery, Vascular Surgery"  # the 2019 body says "Surgery Vascular Surgery"
