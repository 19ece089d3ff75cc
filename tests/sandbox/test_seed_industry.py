"""The seed's industry values: by segment, a few blank, deterministic, and known to the portal and org."""

from __future__ import annotations

from collections import Counter

from sandbox import build_sandbox
from sandbox.hubspot import INDUSTRIES as HUBSPOT_INDUSTRIES
from sandbox.salesforce import INDUSTRIES as SALESFORCE_INDUSTRIES
from sandbox.seed import INDUSTRY, NOISE_INDUSTRY, generate

ANCHOR = 1_795_000_000_000


def industries(seed: int) -> tuple[list, list]:
    data = generate(300, seed=seed, anchor_ms=ANCHOR)
    return ([c["properties"].get("industry") for c in data.hubspot["companies"]],
            [r.get("Industry") for r in data.salesforce["Lead"] if r["Company"] != "Individual"])


def test_industries_are_present_realistic_and_deterministic():
    hubspot, salesforce = industries(7)
    assert (hubspot, salesforce) == industries(7) and (hubspot, salesforce) != industries(8)
    codes = Counter(hubspot)
    assert {"HOSPITAL_HEALTH_CARE", "MEDICAL_PRACTICE", "INSURANCE", "COMPUTER_SOFTWARE"} <= set(codes)
    assert codes["PHARMACEUTICALS"] + codes["BIOTECHNOLOGY"] > 0
    assert 0 < codes[None] < len(hubspot) * 0.25  # a few organizations without one
    values = Counter(salesforce)
    assert {"Healthcare", "Insurance", "Biotechnology", "Technology"} <= set(values) and 0 < values[None]


def test_every_seeded_value_is_an_option_of_the_crm_field():
    hubspot_codes = {code for code, _ in HUBSPOT_INDUSTRIES}
    for options in [*INDUSTRY.values(), *NOISE_INDUSTRY.values()]:
        for hubspot, salesforce in options:
            assert hubspot in hubspot_codes and salesforce in SALESFORCE_INDUSTRIES, (hubspot, salesforce)


def test_portal_property_and_salesforce_describe_know_industry():
    sandbox = build_sandbox(30, anchor_ms=ANCHOR)
    prop = sandbox.hubspot.properties["companies"]["industry"]
    assert prop["type"] == "enumeration" and prop["hubspotDefined"]
    assert {o["value"] for o in prop["options"]} >= {hs for options in INDUSTRY.values() for hs, _ in options}
    field = sandbox.salesforce.schema["Lead"]["Industry"].describe()
    assert field["type"] == "picklist" and not field["restrictedPicklist"]
    assert {"Healthcare", "Insurance", "Biotechnology", "Technology"} <= {v["value"] for v in field["picklistValues"]}
