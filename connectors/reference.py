"""A customer's reference file (a CSV export from their data vendor) as an enrichment provider.

Rows are keyed by website domain and by normalized organization name + state; the YAML config
maps canonical fields to the file's columns and vendor values to canonical ones::

    type: reference_file
    path: vendor_export.csv            # relative to the config file; ${ENV} expanded
    match_on: [domain, name_state]      # the order keys are tried in
    columns: {domain: Website, company_name: Organization, state: State,
              org_type: Facility Type, bed_count: Beds, provider_count: Physicians}
    values:
      org_type: {Acute Care Hospital: hospital, IDN: health_system, Physician Group: physician_practice}

Two rows under one key are ambiguous: the key enriches nothing and the note says so.
"""

from __future__ import annotations

import csv
import os
import re
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from connectors.enrichment import ENRICHABLE_FIELDS, Findings, Lookup, LookupKey
from connectors.nppes import PLACEHOLDERS, STATE_CODES, normalize_name, state_code
from leadflow.canonical import CareSetting, Lead, OrgType, coerce_enum

KEY_KINDS = ("domain", "name_state")
DEFAULT_CONFIDENCE = {"domain": 0.95, "name_state": 0.9}
COUNT_FIELDS = frozenset({"provider_count", "bed_count", "location_count"})
ENUM_FIELDS = {"org_type": OrgType, "care_setting": CareSetting}
COLUMN_ALIASES = {"domain": "company_domain", "name": "company_name"}


def normalize_domain(value: str | None) -> str:
    """``https://www.Example.org/about`` -> ``example.org``."""
    text = (value or "").strip().lower()
    text = re.sub(r"^[a-z][a-z0-9+.-]*://", "", text)
    text = text.split("/", 1)[0].split("?", 1)[0].split(":", 1)[0].rstrip(".")
    return text[4:] if text.startswith("www.") else text


def parse_count(raw: str) -> int | None:
    text = raw.strip().replace(",", "")
    if text.upper() in PLACEHOLDERS:
        return None
    try:
        number = int(float(text))
    except ValueError:
        return None
    return number if number >= 0 else None


@dataclass
class ReferenceFileProvider:
    path: Path
    columns: dict[str, str]  # canonical field -> CSV column
    values: dict[str, dict[str, str]] = field(default_factory=dict)  # canonical field -> {vendor: canonical}
    match_on: tuple[str, ...] = KEY_KINDS
    confidence: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_CONFIDENCE))
    name: str = "reference"
    label: str = "Reference file"
    cacheable: bool = False
    key_requirement: str = "a company domain, or company name and state"

    def __post_init__(self) -> None:
        self.columns = {COLUMN_ALIASES.get(k, k): v for k, v in self.columns.items()}
        unknown = set(self.columns) - ENRICHABLE_FIELDS
        if unknown:
            raise ValueError(f"reference file config: columns map unknown fields {sorted(unknown)}")
        bad_kinds = set(self.match_on) - set(KEY_KINDS)
        if bad_kinds:
            raise ValueError(f"reference file config: match_on accepts {list(KEY_KINDS)}, not {sorted(bad_kinds)}")
        self.fillable = frozenset(self.columns)
        self._value_maps = {f: {str(k).strip().lower(): v for k, v in m.items()} for f, m in self.values.items()}
        self._rows: list[dict[str, str]] = []
        self._index: dict[str, list[int]] = defaultdict(list)
        self._load()

    @classmethod
    def from_config(cls, spec: Mapping[str, Any], base_dir: str = ".") -> ReferenceFileProvider:
        path = Path(os.path.expandvars(os.path.expanduser(str(spec["path"]))))
        if not path.is_absolute():
            path = Path(base_dir) / path
        provider = cls(
            path=path,
            columns=dict(spec.get("columns") or {}),
            values={k: dict(v) for k, v in (spec.get("values") or {}).items()},
            match_on=tuple(spec.get("match_on") or KEY_KINDS),
            confidence={**DEFAULT_CONFIDENCE, **(spec.get("confidence") or {})},
        )
        if spec.get("name"):
            provider.name = spec["name"]
        return provider

    def lookup_keys(self, lead: Lead) -> list[LookupKey]:
        keys = []
        for kind in self.match_on:
            key = self._key(kind, lead.company_domain, lead.company_name, lead.state)
            if key:
                keys.append(LookupKey(key, {"kind": kind}, _label(kind, lead)))
        return keys

    async def fetch_many(self, keys: Sequence[LookupKey]) -> dict[str, Lookup]:
        return {key.cache_key: self._lookup(key) for key in keys}

    def findings(self, payload: dict[str, Any]) -> Findings:
        return Findings(dict(payload["fields"]), f"row:{payload['row']}")

    def stats(self) -> dict[str, int]:
        return {"rows": len(self._rows)}

    def _key(self, kind: str, domain: str | None, name: str | None, state: str | None) -> str | None:
        if kind == "domain":
            domain = normalize_domain(domain)
            return f"domain:{domain}" if domain else None
        normalized, code = normalize_name(name or ""), state_code(state)
        return f"name:{normalized}|{code}" if normalized and code in STATE_CODES else None

    def _load(self) -> None:
        with open(self.path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            missing = set(self.columns.values()) - set(reader.fieldnames or [])
            if missing:
                raise ValueError(f"reference file {self.path.name}: columns not found: {sorted(missing)}")
            for row in reader:
                self._add(row)

    def _add(self, row: dict[str, str]) -> None:
        number = len(self._rows) + 2  # the header is line 1
        self._rows.append(row)
        for kind in self.match_on:
            key = self._key(kind, self._cell(row, "company_domain"), self._cell(row, "company_name"), self._cell(row, "state"))
            if key:
                self._index[key].append(number)

    def _cell(self, row: dict[str, str], name: str) -> str:
        return row.get(self.columns.get(name, ""), "") or ""

    def _lookup(self, key: LookupKey) -> Lookup:
        rows = self._index.get(key.cache_key, [])
        if not rows:
            return Lookup("miss")
        if len(rows) > 1:
            return Lookup("miss", note=f"{self.label}: ambiguous match for {key.label}: rows {', '.join(map(str, rows[:5]))}")
        fields, problems = self._fields(self._rows[rows[0] - 2])
        note = f"{self.label}: row {rows[0]}: {'; '.join(problems)}" if problems else None
        return Lookup("found", {"row": rows[0], "fields": fields}, self.confidence[key.query["kind"]], note)

    def _fields(self, row: dict[str, str]) -> tuple[dict[str, Any], list[str]]:
        fields: dict[str, Any] = {}
        problems: list[str] = []
        for name, column in self.columns.items():
            raw = (row.get(column) or "").strip()
            if raw.upper() in PLACEHOLDERS:
                continue
            value = self._value(name, raw)
            if value is None:
                problems.append(f"{name}: unreadable value {raw[:40]!r} ignored")
            else:
                fields[name] = value
        return fields, problems

    def _value(self, name: str, raw: str) -> Any:
        mapped = self._value_maps.get(name, {}).get(raw.lower(), raw)
        if name in COUNT_FIELDS:
            return parse_count(str(mapped))
        if name in ENUM_FIELDS:
            member = coerce_enum(ENUM_FIELDS[name], mapped)
            return member.value if member is not None else None
        if name == "company_domain":
            return normalize_domain(str(mapped)) or None
        if name == "state":
            code = state_code(mapped)
            return code if code in STATE_CODES else None
        return str(mapped)


def _label(kind: str, lead: Lead) -> str:
    if kind == "domain":
        return f"domain {normalize_domain(lead.company_domain)}"
    return f"{lead.company_name!r} in {state_code(lead.state)}"
