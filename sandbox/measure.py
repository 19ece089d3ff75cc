"""Measure seeding and request throughput: ``python -m sandbox.measure [--leads N] [--seconds S]``.

Seeds N leads in this process (time, peak RSS), then starts ``leadflow sandbox serve`` with the
same seed in a child process and drives it with the real clients: HubSpot search pages (200),
HubSpot batch updates (100), SOQL pages (2,000) and Salesforce collection updates (200).
"""

from __future__ import annotations

import argparse
import resource
import time
from collections.abc import Callable


def seed_numbers(leads: int) -> dict[str, float]:
    from sandbox.server import build_sandbox

    started = time.perf_counter()
    sandbox = build_sandbox(leads)
    seconds = time.perf_counter() - started
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    del sandbox
    return {"leads": leads, "seed_seconds": round(seconds, 2), "peak_rss_mb": round(peak_mb)}


def rate(call: Callable[[int], None], seconds: float) -> float:
    count, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        call(count)
        count += 1
    return round(count / (time.perf_counter() - started), 1)


def throughput(leads: int, seconds: float) -> dict[str, float]:
    from hubspot.crm.contacts import BatchInputSimplePublicObjectBatchInput, PublicObjectSearchRequest

    from sandbox.server import start_sandbox_process

    with start_sandbox_process(leads) as sb:
        hs = sb.hubspot_client()
        sf = sb.salesforce_client()

        def search(i: int) -> None:
            hs.crm.contacts.search_api.do_search(public_object_search_request=PublicObjectSearchRequest(
                filter_groups=[{"filters": [{"propertyName": "lastmodifieddate", "operator": "GTE", "value": "0"}]}],
                sorts=[{"propertyName": "lastmodifieddate", "direction": "ASCENDING"}], limit=200,
                after=str((i * 200) % 9800), properties=["email", "firstname", "lastname", "jobtitle", "lead_source"]))

        def update(i: int) -> None:
            inputs = [{"id": str(10_001 + (i * 100 + k) % leads), "properties": {"pain_point": f"p{i}"}}
                      for k in range(100)]
            hs.crm.contacts.batch_api.update(
                batch_input_simple_public_object_batch_input=BatchInputSimplePublicObjectBatchInput(inputs=inputs))

        lead_ids = [r["Id"] for r in sf.query_all_iter("SELECT Id FROM Lead")]

        def soql(i: int) -> None:
            sf.query("SELECT Id, Email, FirstName, LastName, Title, Company, LeadSource, SystemModstamp FROM Lead "
                     "WHERE SystemModstamp > 2000-01-01T00:00:00Z ORDER BY SystemModstamp, Id LIMIT 2000")

        def collection(i: int) -> None:
            records = [{"attributes": {"type": "Lead"}, "id": lead_ids[(i * 200 + k) % len(lead_ids)],
                        "Next_Step__c": f"n{i}"} for k in range(200)]
            sf.restful("composite/sobjects", method="PATCH", json={"allOrNone": False, "records": records})

        return {"hubspot_search_200_per_s": rate(search, seconds),
                "hubspot_batch_update_100_per_s": rate(update, seconds),
                "salesforce_query_2000_per_s": rate(soql, seconds),
                "salesforce_collection_update_200_per_s": rate(collection, seconds)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--leads", type=int, default=100_000)
    parser.add_argument("--serve-leads", type=int, default=50_000)
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    print(seed_numbers(args.leads), flush=True)
    print(throughput(args.serve_leads, args.seconds), flush=True)


if __name__ == "__main__":
    main()
