"""What an enrichment provider is and returns: the contract the providers (``nppes``,
``reference``, ``industry``) and the waterfall (``enrichment``) share. Providers import this module,
never the waterfall, so the waterfall can build them without an import cycle."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, Protocol

from leadflow.canonical import Lead

ENRICHABLE_FIELDS: frozenset[str] = frozenset({
    "org_type", "org_kind", "specialty", "care_setting", "provider_count", "bed_count", "location_count",
    "state", "country", "npi", "company_name", "company_domain", "ehr_vendor", "city", "ccn",
})



@dataclass(frozen=True)
class LookupKey:
    """One lookup a provider can make; leads with equal ``cache_key`` share one lookup."""

    cache_key: str
    query: Mapping[str, str]
    label: str  # for notes, e.g. "'Northside Clinic' in GA" or "NPI 1234567890"


@dataclass(frozen=True)
class Lookup:
    status: Literal["found", "miss", "error"]
    payload: dict[str, Any] | None = None
    confidence: float = 0.0
    note: str | None = None
    fetched_at: datetime | None = None
    cached: bool = False
    aliases: tuple[str, ...] = ()  # other keys that lead to the same record (cached as exact hits)


@dataclass(frozen=True)
class Findings:
    """What a provider derives from one found payload."""

    fields: dict[str, Any]
    source_key: str
    contact_hint: dict[str, str] | None = None
    facts: dict[str, Any] = field(default_factory=dict)


class EnrichmentProvider(Protocol):
    name: str  # cache namespace and provenance, e.g. "nppes"
    label: str  # for notes, e.g. "NPPES"
    cacheable: bool
    fillable: frozenset[str]
    key_requirement: str  # for notes, e.g. "an NPI, or company name and state"

    def lookup_keys(self, lead: Lead) -> list[LookupKey]: ...

    async def fetch_many(self, keys: Sequence[LookupKey]) -> dict[str, Lookup]: ...

    def findings(self, payload: dict[str, Any]) -> Findings: ...

    def stats(self) -> dict[str, int]: ...
