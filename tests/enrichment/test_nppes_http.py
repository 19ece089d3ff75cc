"""The NPPES provider over HTTP (respx): recorded bodies replayed, retries, paging, concurrency."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
from enrichment_support import NPPES_TEST_URL, registry_mock, InFlightCounter, make_lead, nppes_body, nppes_fixture_names, quiet_provider

from connectors.enrichment.waterfall import LookupKey
from connectors.enrichment.nppes import PAGE_LIMIT, NppesProvider, query_names


def run(provider: NppesProvider, *keys: LookupKey):
    return asyncio.run(provider.fetch_many(list(keys)))


def npi_key(npi: str) -> LookupKey:
    return quiet_provider().lookup_keys(make_lead(npi=npi))[0]


def name_key(name: str, state: str) -> LookupKey:
    return quiet_provider().lookup_keys(make_lead(company_name=name, state=state))[0]


def json_response(body: object, status: int = 200) -> httpx.Response:
    return httpx.Response(status, content=json.dumps(body).encode(), headers={"content-type": "application/json"})


def test_lookup_keys_prefer_the_npi_and_fall_back_to_name_and_state():
    keys = quiet_provider().lookup_keys(make_lead(npi="1568-946-812", company_name="CSP Anesthesia, LLC", state="Georgia"))
    assert [k.cache_key for k in keys] == ["npi:1568946812", "name:csp anesthesia|GA"]
    assert quiet_provider().lookup_keys(make_lead(company_name="CSP Anesthesia")) == []


def test_payers_and_pharma_are_not_searched_by_name_but_an_npi_is_looked_up():
    """The registry lists providers: a payer's or a drug maker's name only finds namesakes."""
    provider = quiet_provider()
    payer = make_lead(company_name="Blue Valley Health Plan", state="CA", industry="Insurance")
    assert provider.lookup_keys(payer) == []
    assert provider.lookup_keys(make_lead(company_name="Acme Biologics", state="NJ", industry="BIOTECHNOLOGY")) == []
    assert provider.lookup_keys(make_lead(company_name="Acme Rx", state="NJ", org_type="pharma")) == []
    with_npi = make_lead(npi="1568946812", company_name="Blue Valley Health Plan", state="CA", industry="Insurance")
    assert [k.cache_key for k in provider.lookup_keys(with_npi)] == ["npi:1568946812"]
    hospital = make_lead(company_name="Mercy General", state="CA", industry="Hospital & Health Care")
    assert [k.cache_key for k in provider.lookup_keys(hospital)] == ["name:mercy general|CA"]
    configured = NppesProvider.from_config({"skip_industries": ["Hospital & Health Care"]}, url=NPPES_TEST_URL)
    assert configured.lookup_keys(hospital) == [] and configured.lookup_keys(payer) != []


EXPECTED_NPI_LOOKUPS = {
    "npi2_number_lookup_v2019.json": ("found", "1568946812"),
    "npi2_number_lookup_v2024_multi_specialty_dba.json": ("found", "1174270805"),
    "npi2_number_lookup_v2024_single_specialty_group.json": ("found", "1225701881"),
    "npi1_number_lookup_v2019.json": ("miss", "individual"),
    "npi1_number_lookup_v2022.json": ("miss", "individual"),
    "empty_result.json": ("miss", "not found"),
    "error_04_no_valid_criteria.json": ("error", "query rejected: 04"),
    "error_09_enumeration_type_needs_more.json": ("error", "query rejected: 09"),
}


@pytest.mark.parametrize("fixture", nppes_fixture_names())
def test_every_recorded_body_replays_without_crashing(fixture):
    provider = quiet_provider()
    with registry_mock() as nppes_mock:
        route = nppes_mock.get(NPPES_TEST_URL).mock(return_value=json_response(nppes_body(fixture)))
        result = run(provider, npi_key("1568946812"))["npi:1568946812"]
    assert route.call_count == 1  # envelopes and misses are never retried
    if fixture in EXPECTED_NPI_LOOKUPS:
        status, detail = EXPECTED_NPI_LOOKUPS[fixture]
        assert result.status == status
        assert detail in (result.payload or {}).get("npi", "") or detail in (result.note or "")
    else:  # search pages answering a number lookup: their first record is used or refused by type
        first = nppes_body(fixture)["results"][0]
        assert result.status == ("found" if first["enumeration_type"] == "NPI-2" else "miss")


def test_number_lookup_sends_version_and_number():
    provider = quiet_provider()
    with registry_mock() as nppes_mock:
        route = nppes_mock.get(NPPES_TEST_URL).mock(return_value=json_response(nppes_body("npi2_number_lookup_v2019.json")))
        run(provider, npi_key("1568946812"))
    params = route.calls.last.request.url.params
    assert params["number"] == "1568946812" and params["version"] == "2.1"


def test_name_search_sends_wildcard_state_and_type_and_matches_a_dba():
    provider = quiet_provider()
    with registry_mock() as nppes_mock:
        route = nppes_mock.get(NPPES_TEST_URL).mock(return_value=json_response(nppes_body("npi2_search_city_atlanta_10_v2019.json")))
        result = run(provider, name_key("Fyzical Therapy & Balance Centers", "GA"))
    params = route.calls.last.request.url.params
    assert params["organization_name"] == "FYZICAL THERAPY*" and params["state"] == "GA"
    assert params["enumeration_type"] == "NPI-2" and params["limit"] == "200" and params["skip"] == "0"
    found = next(iter(result.values()))
    assert found.status == "found" and found.payload["npi"] == "1740355304"


def test_a_registry_name_starting_with_the_is_found_by_a_second_search():
    body = nppes_body("mixed_search_city_atlanta_10_v2019.json")
    emory = [r for r in body["results"] if r["number"] == 1467486373]
    emory[0]["addresses"][0]["state"] = "GA"  # recorded as "ATLANTA, AL"

    def answer(request: httpx.Request) -> httpx.Response:
        found = request.url.params["organization_name"].startswith("THE ")
        return json_response({"result_count": len(emory), "results": emory} if found else nppes_body("empty_result.json"))

    with registry_mock() as nppes_mock:
        route = nppes_mock.get(NPPES_TEST_URL).mock(side_effect=answer)
        result = next(iter(run(quiet_provider(), name_key("Emory Clinic", "GA")).values()))
    assert [c.request.url.params["organization_name"] for c in route.calls] == ["EMORY CLINIC*", "THE EMORY CLINIC*"]
    assert result.status == "found" and result.payload["npi"] == "1467486373"


def test_server_errors_and_timeouts_are_retried():
    provider = quiet_provider(attempts=4)
    answers = iter([
        httpx.Response(503),
        httpx.TimeoutException("read timed out"),
        httpx.ConnectError("refused"),
        json_response(nppes_body("npi2_number_lookup_v2019.json")),
    ])

    def answer(request: httpx.Request) -> httpx.Response:
        item = next(answers)
        if isinstance(item, Exception):
            raise item
        return item

    with registry_mock() as nppes_mock:
        route = nppes_mock.get(NPPES_TEST_URL).mock(side_effect=answer)
        result = run(provider, npi_key("1568946812"))["npi:1568946812"]
    assert result.status == "found" and route.call_count == 4
    assert provider.stats()["retries"] == 3


def test_429_honours_retry_after_and_is_retried():
    provider = quiet_provider()
    with registry_mock() as nppes_mock:
        route = nppes_mock.get(NPPES_TEST_URL).mock(side_effect=[
            httpx.Response(429, headers={"retry-after": "0"}),
            json_response(nppes_body("npi2_number_lookup_v2019.json")),
        ])
        result = run(provider, npi_key("1568946812"))["npi:1568946812"]
    assert result.status == "found" and route.call_count == 2


def test_429_waits_what_retry_after_asks_not_the_backoff():
    """The registry's Retry-After decides the wait (the one retry policy, connectors.retry); the
    waits are recorded through the policy's injectable sleep, not slept."""
    from connectors.retry import RetryPolicy

    waits: list[float] = []

    async def record(seconds: float) -> None:
        waits.append(seconds)

    provider = quiet_provider(retry=RetryPolicy(attempts=3, base_wait=0.01, jitter=False, async_sleep=record))
    with registry_mock() as nppes_mock:
        nppes_mock.get(NPPES_TEST_URL).mock(side_effect=[
            httpx.Response(429, headers={"retry-after": "7"}),
            httpx.Response(503),
            json_response(nppes_body("npi2_number_lookup_v2019.json")),
        ])
        result = run(provider, npi_key("1568946812"))["npi:1568946812"]
    assert result.status == "found"
    assert waits == [7.0, 0.02]  # Retry-After, then the backoff of the second attempt


def test_retries_stop_after_the_configured_attempts():
    provider = quiet_provider(attempts=3)
    with registry_mock() as nppes_mock:
        route = nppes_mock.get(NPPES_TEST_URL).mock(return_value=httpx.Response(502))
        result = run(provider, npi_key("1568946812"))["npi:1568946812"]
    assert route.call_count == 3
    assert result.status == "error" and result.note == "NPPES: lookup failed for NPI 1568946812: HTTP 502"


@pytest.mark.parametrize("status", [400, 403, 404])
def test_client_errors_are_not_retried(status):
    provider = quiet_provider()
    with registry_mock() as nppes_mock:
        route = nppes_mock.get(NPPES_TEST_URL).mock(return_value=httpx.Response(status))
        result = run(provider, npi_key("1568946812"))["npi:1568946812"]
    assert route.call_count == 1 and result.status == "error" and f"HTTP {status}" in result.note


def test_maintenance_page_is_an_error_not_a_crash():
    provider = quiet_provider()
    page = httpx.Response(200, content=b"<html>Scheduled maintenance</html>", headers={"content-type": "text/html"})
    with registry_mock() as nppes_mock:
        nppes_mock.get(NPPES_TEST_URL).mock(return_value=page)
        result = run(provider, npi_key("1568946812"))["npi:1568946812"]
    assert result.status == "error" and "non-JSON response (text/html" in result.note


def test_a_registry_that_keeps_failing_trips_the_breaker_for_a_cooldown():
    provider = quiet_provider(attempts=1, breaker_failures=2, breaker_cooldown_seconds=60, concurrency=1)
    clock = [0.0]
    provider.breaker.clock = lambda: clock[0]
    keys = [npi_key(f"100000000{i}") for i in range(5)]
    with registry_mock() as nppes_mock:
        route = nppes_mock.get(NPPES_TEST_URL).mock(return_value=httpx.Response(500))
        results = run(provider, *keys)
        assert route.call_count == 2
        assert sum("registry unavailable" in (r.note or "") for r in results.values()) == 3
        run(provider, npi_key("1568946812"))  # the next batch, within the cooldown
        assert route.call_count == 2
    clock[0] = 61.0
    with registry_mock() as nppes_mock:
        route = nppes_mock.get(NPPES_TEST_URL).mock(return_value=json_response(nppes_body("npi2_number_lookup_v2019.json")))
        later = run(provider, npi_key("1568946812"))
    assert route.call_count == 1 and later["npi:1568946812"].status == "found"


def test_rejected_queries_do_not_trip_the_breaker():
    provider = quiet_provider(breaker_failures=2, concurrency=1)
    with registry_mock() as nppes_mock:
        route = nppes_mock.get(NPPES_TEST_URL).mock(return_value=json_response(nppes_body("error_04_no_valid_criteria.json")))
        run(provider, *[npi_key(f"100000000{i}") for i in range(4)])
    assert route.call_count == 4 and not provider.breaker.is_open()


def full_page(start: int, count: int) -> dict:
    template = nppes_body("npi2_number_lookup_v2019.json")["results"][0]
    records = [{**template, "number": 1000000000 + start + i,
                "basic": {**template["basic"], "organization_name": f"ACME CLINIC {start + i}"}} for i in range(count)]
    return {"result_count": count, "results": records}


def test_paging_stops_on_a_short_page():
    provider = quiet_provider()
    with registry_mock() as nppes_mock:
        route = nppes_mock.get(NPPES_TEST_URL).mock(side_effect=[
            json_response(full_page(0, PAGE_LIMIT)), json_response(full_page(PAGE_LIMIT, 3)),
        ])
        run(provider, name_key("Acme Clinic 7", "GA"))
    assert [c.request.url.params["skip"] for c in route.calls] == ["0", "200"]


def test_paging_stops_at_the_api_reach_and_says_so():
    provider = quiet_provider()

    def page(request: httpx.Request) -> httpx.Response:
        return json_response(full_page(int(request.url.params["skip"]), PAGE_LIMIT))

    with registry_mock() as nppes_mock:
        route = nppes_mock.get(NPPES_TEST_URL).mock(side_effect=page)
        result = next(iter(run(provider, name_key("Acme Clinic", "GA")).values()))
    assert [c.request.url.params["skip"] for c in route.calls] == ["0", "200", "400", "600", "800", "1000"]
    assert "stopped at the API's reach, at most 1,200 results" in result.note


def test_a_later_page_refused_keeps_the_pages_already_read():
    provider = quiet_provider()
    refused = {"Errors": [{"field": "skip", "number": "11", "description": "skip must be 1000 or less"}]}
    with registry_mock() as nppes_mock:
        nppes_mock.get(NPPES_TEST_URL).mock(side_effect=[json_response(full_page(0, PAGE_LIMIT)), json_response(refused)])
        result = next(iter(run(provider, name_key("Acme Clinic 7", "GA")).values()))
    assert result.status == "found" and result.payload["npi"] == "1000000007"
    assert "stopped at the API's reach, at most 1,200 results" in result.note


def test_truncated_edited_page_does_not_make_the_client_page_forever():
    provider = quiet_provider()
    with registry_mock() as nppes_mock:
        route = nppes_mock.get(NPPES_TEST_URL).mock(return_value=json_response(nppes_body("page_result_count_200_truncated_EDITED.json")))
        run(provider, name_key("Rowell Clinic", "AK"))
    assert route.call_count == len(query_names("Rowell Clinic"))  # one page per query: result_count says 200, but only 2 records came back


def test_in_flight_requests_never_exceed_the_concurrency_bound():
    provider = quiet_provider(concurrency=3)
    slow = InFlightCounter(json_response(nppes_body("empty_result.json")))
    keys = [npi_key(f"1{i:09d}") for i in range(20)]
    with registry_mock() as nppes_mock:
        route = nppes_mock.get(NPPES_TEST_URL).mock(side_effect=slow)
        run(provider, *keys)
    assert route.call_count == 20
    assert slow.peak == 3 and provider.stats()["max_in_flight"] == 3


def test_the_search_memo_stays_bounded_when_searches_find_nothing():
    """Most name searches find nothing: an empty answer counts as one record, so they are dropped
    oldest first like the others instead of piling up for the whole run."""
    from connectors.enrichment.nppes import SearchMemo

    memo = SearchMemo(max_records=10)
    for n in range(50):
        params = {"organization_name": f"NOWHERE {n}*", "state": "GA"}
        future, mine = memo.claim(params)
        assert mine
        memo.answered(params, future, ([], False))
    assert len(memo._searches) == 10
    latest, mine = memo.claim({"organization_name": "NOWHERE 49*", "state": "GA"})
    assert not mine and latest.result() == ([], False)
    _, mine = memo.claim({"organization_name": "NOWHERE 0*", "state": "GA"})
    assert mine  # the oldest was dropped: asked again, it is sent again
