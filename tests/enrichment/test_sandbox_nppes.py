"""The NPPES stand-in's logic (sandbox/nppes.py), directly and through httpx on a tiny Starlette app."""

from __future__ import annotations

import time
from datetime import datetime, timezone

import httpx
import pytest
from enrichment_support import all_fixture_records, make_lead, nppes_body, quiet_provider
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from connectors.enrichment.waterfall import Waterfall
from sandbox.nppes import MAX_LIMIT, NppesRegistry


@pytest.fixture(scope="module")
def registry() -> NppesRegistry:
    return NppesRegistry(all_fixture_records())


def names(body: dict) -> list[str]:
    return [r["basic"].get("organization_name") or r["basic"].get("last_name") for r in body["results"]]


def test_no_criteria_and_enumeration_type_alone_match_the_recorded_errors(registry):
    assert registry.search({}) == nppes_body("error_04_no_valid_criteria.json")
    assert registry.search({"version": "2.1", "limit": "10"}) == nppes_body("error_04_no_valid_criteria.json")
    assert registry.search({"enumeration_type": "NPI-2"}) == nppes_body("error_09_enumeration_type_needs_more.json")


@pytest.mark.parametrize("params", [{"state": "GA", "limit": "201"}, {"state": "GA", "skip": "1001"},
                                    {"state": "GA", "limit": "0"}, {"state": "GA", "limit": "ten"},
                                    {"organization_name": "P*"}])
def test_out_of_range_paging_and_short_wildcards_are_errors_in_the_envelope(registry, params):
    body = registry.search(params)
    assert set(body) == {"Errors"}
    [error] = body["Errors"]
    assert set(error) == {"field", "number", "description"}


def test_no_match_is_the_recorded_empty_body(registry):
    assert registry.search({"city": "ZZZZZZZ"}) == nppes_body("empty_result.json")


def test_number_lookup_accepts_int_and_string_numbers(registry):
    assert names(registry.search({"number": "1568946812"})) == ["CSP ANESTHESIA LLC"]  # int in the record
    assert names(registry.search({"number": "1174270805"})) == ["PEACH STATE MEDICAL PRACTICE, PC"]  # string


def test_organization_name_is_exact_or_a_wildcard_prefix_case_insensitive(registry):
    assert names(registry.search({"organization_name": "peach state medical practice, pc"})) == ["PEACH STATE MEDICAL PRACTICE, PC"]
    assert registry.search({"organization_name": "peach state"})["result_count"] == 0
    assert names(registry.search({"organization_name": "Peach St*"})) == ["PEACH STATE MEDICAL PRACTICE, PC"]


def test_organization_name_also_matches_dba_names(registry):
    assert names(registry.search({"organization_name": "KINDBODY*"})) == ["PEACH STATE MEDICAL PRACTICE, PC"]


def test_city_matches_any_address_like_the_real_api(registry):
    body = registry.search({"city": "atlanta", "enumeration_type": "NPI-2", "limit": "200"})
    assert "DENTISTRY FOR CHILDREN OF MARYLAND, LLC" in names(body)  # practices in Upper Marlboro MD


def test_filters_combine(registry):
    body = registry.search({"state": "GA", "postal_code": "30180", "enumeration_type": "NPI-2"})
    assert names(body) == ["CSP ANESTHESIA LLC"]
    body = registry.search({"taxonomy_description": "home health", "state": "GA"})
    assert names(body) == ["SUNCREST HOME HEALTH OF GEORGIA, INC"]
    assert registry.search({"last_name": "dewey", "enumeration_type": "NPI-1"})["result_count"] == 1


def test_limit_skip_and_result_count_of_the_page(registry):
    everything = registry.search({"state": "CA", "limit": str(MAX_LIMIT)})
    assert everything["result_count"] == len(everything["results"]) > 12
    first = registry.search({"state": "CA", "limit": "5"})
    second = registry.search({"state": "CA", "limit": "5", "skip": "5"})
    assert first["result_count"] == 5 and first["results"] + second["results"] == everything["results"][:10]
    assert registry.search({"state": "CA"})["result_count"] == 10  # default limit


def synthetic_records(count: int) -> list[dict]:
    template = nppes_body("npi2_number_lookup_v2024_single_specialty_group.json")["results"][0]
    return [{**template, "number": str(1_000_000_000 + i),
             "basic": {**template["basic"], "organization_name": f"CLINIC {i:05d} OF MICHIGAN PLLC"}} for i in range(count)]


def test_lookups_stay_fast_at_twenty_thousand_records():
    big = NppesRegistry(synthetic_records(20_000))
    started = time.perf_counter()
    for i in range(0, 20_000, 40):
        assert big.search({"organization_name": f"CLINIC {i:05d}*", "state": "MI", "enumeration_type": "NPI-2"})["result_count"] == 1
        assert big.search({"number": str(1_000_000_000 + i)})["result_count"] == 1
    assert time.perf_counter() - started < 2.0  # 1,000 indexed searches


def nppes_app(registry: NppesRegistry) -> Starlette:
    async def api(request: Request) -> JSONResponse:
        return JSONResponse(registry.search(dict(request.query_params)))

    return Starlette(routes=[Route("/api/", api)])


def test_the_provider_enriches_through_httpx_against_the_stand_in(registry):
    provider = quiet_provider(url="http://nppes.sandbox/api/", transport=httpx.ASGITransport(app=nppes_app(registry)))
    leads = [
        make_lead("1", company_name="Suncrest Home Health of Georgia", state="GA"),
        make_lead("2", npi="1225701881"),
        make_lead("3", company_name="Nowhere Clinic", state="GA"),
    ]
    home, vios, nowhere = Waterfall([provider]).enrich_batch(leads, datetime(2026, 11, 27, tzinfo=timezone.utc))
    assert home.lead.npi == "1447417639" and home.lead.care_setting == "home"
    assert vios.lead.company_name == "VIOS FERTILITY INSTITUTE MICHIGAN PLLC" and vios.lead.state == "MI"
    assert nowhere.notes == ["NPPES: no organization found for 'Nowhere Clinic' in GA"]
    assert provider.stats()["requests"] == 4  # the miss also tried "THE NOWHERE CLINIC*"


def test_punctuation_is_matched_as_registered_and_spaces_fold(registry):
    """The API's organization_name keeps the registered punctuation (its documented special
    characters: & ' : , / - ( ) . # " ;): a query without the period does not find a name with it."""
    record = {**all_fixture_records()[0], "number": "1999999990", "enumeration_type": "NPI-2",
              "basic": {"organization_name": "ST. PATRICK HOSPITAL"}, "other_names": []}
    one = NppesRegistry([record])
    assert names(one.search({"organization_name": "st. patrick*"})) == ["ST. PATRICK HOSPITAL"]
    assert names(one.search({"organization_name": "ST.  PATRICK   HOSPITAL"})) == ["ST. PATRICK HOSPITAL"]
    assert one.search({"organization_name": "ST PATRICK*"})["results"] == []
    assert one.search({"organization_name": "SAINT PATRICK*"})["results"] == []
