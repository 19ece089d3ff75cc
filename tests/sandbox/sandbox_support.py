"""Helpers for the sandbox tests (imported as ``sandbox_support``, like the other suites' harnesses)."""

from __future__ import annotations

from typing import Any


def small_seed(contacts: int = 0, leads: int = 0, start_ms: int = 1_700_000_000_000) -> dict[str, Any]:
    """A raw seed (``--seed FILE`` form) of minimal records, one millisecond apart."""
    hubspot = [{"id": str(10_001 + i), "properties": {"email": f"c{i}@example.org", "firstname": f"C{i}",
                                                       "lastmodifieddate": str(start_ms + i)}} for i in range(contacts)]
    salesforce = [{"Id": _lead_id(i), "LastName": f"L{i}", "Company": "Acme", "Email": f"l{i}@example.org",
                   "SystemModstamp": start_ms + i} for i in range(leads)]
    return {"hubspot": {"contacts": hubspot}, "salesforce": {"Lead": salesforce}}


def _lead_id(i: int) -> str:
    from sandbox.salesforce import sf_id

    return sf_id("00Q", i + 1)
