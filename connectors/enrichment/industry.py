"""The CRM's own industry value as an enrichment provider: ``org_type`` (and, where the industry
makes it clear, ``care_setting``) from a table in the enrichment config.

Payers, pharma and digital-health companies are not in NPPES, but CRMs carry a standard industry
field (HubSpot company ``industry``, e.g. ``PHARMACEUTICALS``; Salesforce Lead ``Industry``, e.g.
``Insurance``). Run it after NPPES: NPPES is authoritative for providers, the industry fills what is
still blank::

    - name: crm_industry
      type: crm_industry
      confidence: 0.6
      org_type: {PHARMACEUTICALS: pharma, INSURANCE: payer, COMPUTER_SOFTWARE: digital_health}
      care_setting: {MEDICAL_PRACTICE: ambulatory}

Industry values match case- and separator-insensitively, and "and"/"&" are ignored:
``HOSPITAL_HEALTH_CARE``, ``Hospital & Health Care`` and ``hospital and health care`` are one value.
No I/O, so nothing is cached. A value not in the tables enriches nothing and the note says so.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from connectors.enrichment.base import Findings, Lookup, LookupKey
from leadflow.canonical import CareSetting, Lead, OrgType, coerce_enum

DEFAULT_CONFIDENCE = 0.6
TABLE_FIELDS: dict[str, type[StrEnum]] = {"org_type": OrgType, "care_setting": CareSetting}
SPEC_KEYS = frozenset({"name", "type", "enabled", "confidence", *TABLE_FIELDS})


class IndustryConfigError(ValueError):
    """The crm_industry provider's config is wrong; the message names the file and the key."""

    def __init__(self, path: str, key: str, problem: str):
        self.path, self.key, self.problem = path, key, problem
        super().__init__(f"{path}: {key}: {problem}")


def normalize_industry(value: Any) -> str:
    """``Hospital & Health Care`` / ``HOSPITAL_HEALTH_CARE`` / ``hospital-and-health-care`` -> ``hospital_health_care``."""
    words = re.findall(r"[a-z0-9]+", str(value or "").lower())
    return "_".join(word for word in words if word != "and")


@dataclass
class IndustryProvider:
    tables: dict[str, dict[str, str]]  # canonical field -> {normalized industry: canonical value}
    confidence: float = DEFAULT_CONFIDENCE
    name: str = "crm_industry"
    label: str = "CRM industry"
    cacheable: bool = False
    key_requirement: str = "an industry value in the CRM"
    fillable: frozenset[str] = field(init=False)

    def __post_init__(self) -> None:
        self.fillable = frozenset(name for name, table in self.tables.items() if table)
        self._known = {value for table in self.tables.values() for value in table}

    @classmethod
    def from_config(cls, spec: Mapping[str, Any], path: str = "enrichment config") -> IndustryProvider:
        """Validate ``spec`` (one entry of ``providers``); errors name ``path`` and the key."""
        name = str(spec.get("name") or "crm_industry")
        where = f"providers.{name}"
        unknown = sorted(set(spec) - SPEC_KEYS)
        if unknown:
            raise IndustryConfigError(path, f"{where}.{unknown[0]}",
                                      f"unknown key (expected: {', '.join(sorted(SPEC_KEYS - {'type', 'enabled'}))})")
        confidence = spec.get("confidence", DEFAULT_CONFIDENCE)
        if isinstance(confidence, bool) or not isinstance(confidence, (int, float)) or not 0 < confidence <= 1:
            raise IndustryConfigError(path, f"{where}.confidence", f"expected a number in (0, 1], not {confidence!r}")
        tables: dict[str, dict[str, str]] = {}
        for field_name, enum in TABLE_FIELDS.items():
            raw = spec.get(field_name)
            if raw is None:
                continue
            if not isinstance(raw, Mapping):
                raise IndustryConfigError(path, f"{where}.{field_name}",
                                          "expected a mapping of industry value -> canonical value")
            tables[field_name] = _table(raw, enum, path, f"{where}.{field_name}")
        if not any(tables.values()):
            raise IndustryConfigError(path, where, f"needs an {' or '.join(TABLE_FIELDS)} table")
        return cls(tables, float(confidence), name=name)

    def lookup_keys(self, lead: Lead) -> list[LookupKey]:
        value = (lead.industry or "").strip()
        if not normalize_industry(value):
            return []
        return [LookupKey(f"industry:{value}", {"industry": value}, f"industry {value!r}")]

    async def fetch_many(self, keys: Sequence[LookupKey]) -> dict[str, Lookup]:
        return {key.cache_key: self._lookup(key) for key in keys}

    def findings(self, payload: dict[str, Any]) -> Findings:
        return Findings(dict(payload["fields"]), f"industry:{payload['industry']}")

    def stats(self) -> dict[str, int]:
        return {"industry_values": len(self._known)}

    def _lookup(self, key: LookupKey) -> Lookup:
        value = key.query["industry"]
        normalized = normalize_industry(value)
        fields = {name: table[normalized] for name, table in self.tables.items() if normalized in table}
        if not fields:
            return Lookup("miss", note=f"{self.label}: no mapping for industry {value[:60]!r}; "
                                       f"add it to the {self.name} provider's tables to enrich from it")
        return Lookup("found", {"industry": value, "fields": fields}, self.confidence)


def _table(raw: Mapping[Any, Any], enum: type[StrEnum], path: str, key: str) -> dict[str, str]:
    table: dict[str, str] = {}
    spelled: dict[str, str] = {}
    for industry, target in raw.items():
        normalized = normalize_industry(industry)
        if not normalized:
            raise IndustryConfigError(path, key, f"industry value {industry!r} is blank")
        member = coerce_enum(enum, target) if isinstance(target, str) else None
        if member is None:
            raise IndustryConfigError(path, f"{key}.{industry}", f"{target!r} is not a value of {key.rsplit('.', 1)[-1]} "
                                                                  f"(expected one of: {', '.join(m.value for m in enum)})")
        if normalized in table and table[normalized] != member.value:
            raise IndustryConfigError(path, f"{key}.{industry}",
                                      f"same industry as {spelled[normalized]!r} but mapped to {member.value!r}, "
                                      f"not {table[normalized]!r}")
        table[normalized] = member.value
        spelled.setdefault(normalized, str(industry))
    return table
