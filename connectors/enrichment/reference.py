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

``format: cms_pos`` reads the CMS Provider of Services file (hospital and non-hospital
facilities, the public CSV on data.cms.gov) by its documented column names: ``PRVDR_NUM`` (the
CCN), ``FAC_NAME``, ``CITY_NAME``, ``STATE_CD``, ``CRTFD_BED_CNT`` (certified beds),
``PRVDR_CTGRY_CD`` (01 = hospital) and ``PRVDR_CTGRY_SBTYP_CD`` (the hospital subtype: 01 short
term, 02 long term, 04 psychiatric, 05 rehabilitation, 06 children's, 07 distinct part
psychiatric, 11 critical access), ``PGM_TRMNTN_CD`` (00 = active). Only active hospitals are
kept; they match by CCN or by name, city and state; the subtype gives ``org_kind`` and from it
``care_setting`` (``connectors.enrichment.taxonomy.KIND_CARE_SETTING``). Any preset key can be overridden
in the config (another subtype code, e.g. the file's Rural Emergency Hospital code, under
``values.org_kind``).
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

from connectors.enrichment.base import ENRICHABLE_FIELDS, Findings, Lookup, LookupKey
from connectors.enrichment.nppes import PLACEHOLDERS, STATE_CODES, name_forms, normalize_name, state_code
from connectors.enrichment.taxonomy import KIND_CARE_SETTING
from leadflow.canonical import CareSetting, Lead, OrgKind, OrgType, coerce_enum

KEY_KINDS = ("domain", "name_state", "ccn", "name_city_state")
DEFAULT_CONFIDENCE = {"domain": 0.95, "name_state": 0.9, "ccn": 1.0, "name_city_state": 0.92}
COUNT_FIELDS = frozenset({"provider_count", "bed_count", "location_count"})
ENUM_FIELDS = {"org_type": OrgType, "care_setting": CareSetting, "org_kind": OrgKind}
COLUMN_ALIASES = {"domain": "company_domain", "name": "company_name"}
CMS_POS = {  # the Provider of Services file's documented columns and codes
    "columns": {"ccn": "PRVDR_NUM", "company_name": "FAC_NAME", "city": "CITY_NAME", "state": "STATE_CD",
                "bed_count": "CRTFD_BED_CNT", "org_kind": "PRVDR_CTGRY_SBTYP_CD"},
    "match_on": ["ccn", "name_city_state"],
    "rows_where": {"PRVDR_CTGRY_CD": ["01"], "PGM_TRMNTN_CD": ["00"]},
    "constants": {"org_type": "hospital"},
    "values": {"org_kind": {"01": "general_acute", "02": "long_term_care", "04": "psychiatric", "05": "rehabilitation",
                            "06": "childrens", "07": "psychiatric", "11": "critical_access"}},
    "confidence": {"ccn": 1.0, "name_city_state": 0.92},
}
FORMATS = {"cms_pos": CMS_POS}


def normalize_ccn(value: str | None) -> str:
    """A CMS Certification Number: 6 characters, upper case; leading zeros a spreadsheet dropped restored."""
    text = re.sub(r"[^0-9A-Za-z]", "", value or "").upper()
    return text.zfill(6) if text.isdigit() and 4 <= len(text) < 6 else text


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
    rows_where: dict[str, list[str]] = field(default_factory=dict)  # column -> values a row must have
    constants: dict[str, str] = field(default_factory=dict)  # canonical field -> value for every row
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
        self.fillable = frozenset(self.columns) | frozenset(self.constants)
        if "org_kind" in self.columns and "care_setting" not in self.columns:
            self.fillable |= {"care_setting"}
        self._where = {column: {str(v).strip().upper() for v in values} for column, values in self.rows_where.items()}
        self._value_maps = {f: {str(k).strip().lower(): v for k, v in m.items()} for f, m in self.values.items()}
        self._rows: list[dict[str, str]] = []
        self._index: dict[str, list[int]] = defaultdict(list)
        self._load()

    @classmethod
    def from_config(cls, spec: Mapping[str, Any], base_dir: str = ".") -> ReferenceFileProvider:
        if spec.get("format"):
            spec = _with_format(spec)
        path = Path(os.path.expandvars(os.path.expanduser(str(spec["path"]))))
        if not path.is_absolute():
            path = Path(base_dir) / path
        provider = cls(
            path=path,
            columns=dict(spec.get("columns") or {}),
            values={k: dict(v) for k, v in (spec.get("values") or {}).items()},
            match_on=tuple(spec.get("match_on") or KEY_KINDS),
            confidence={**DEFAULT_CONFIDENCE, **(spec.get("confidence") or {})},
            rows_where={k: list(v) for k, v in (spec.get("rows_where") or {}).items()},
            constants=dict(spec.get("constants") or {}),
        )
        if spec.get("name"):
            provider.name = spec["name"]
        return provider

    def lookup_keys(self, lead: Lead) -> list[LookupKey]:
        keys = []
        for kind in self.match_on:
            names = name_forms(lead.company_name, lead.city) if lead.company_name and kind.startswith("name") else [lead.company_name]
            for name in names:
                key = self._key(kind, lead.company_domain, name, lead.state, lead.city, lead.ccn)
                if key and all(k.cache_key != key for k in keys):
                    keys.append(LookupKey(key, {"kind": kind}, _label(kind, lead)))
        return keys

    async def fetch_many(self, keys: Sequence[LookupKey]) -> dict[str, Lookup]:
        return {key.cache_key: self._lookup(key) for key in keys}

    def findings(self, payload: dict[str, Any]) -> Findings:
        return Findings(dict(payload["fields"]), f"row:{payload['row']}")

    def stats(self) -> dict[str, int]:
        return {"rows": sum(1 for row in self._rows if row)}

    def _key(self, kind: str, domain: str | None, name: str | None, state: str | None, city: str | None = None,
             ccn: str | None = None) -> str | None:
        if kind == "domain":
            domain = normalize_domain(domain)
            return f"domain:{domain}" if domain else None
        if kind == "ccn":
            ccn = normalize_ccn(ccn)
            return f"ccn:{ccn}" if ccn else None
        normalized, code = normalize_name(name or ""), state_code(state)
        if not normalized or code not in STATE_CODES:
            return None
        if kind == "name_city_state":
            town = normalize_name(city or "")
            return f"name:{normalized}|{code}|{town}" if town else None
        return f"name:{normalized}|{code}"

    def _load(self) -> None:
        with open(self.path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            missing = set(self.columns.values()) - set(reader.fieldnames or [])
            if missing:
                raise ValueError(f"reference file {self.path.name}: columns not found: {sorted(missing)}")
            for row in reader:
                if all((row.get(column) or "").strip().upper() in values for column, values in self._where.items()):
                    self._add(row)
                else:
                    self._rows.append({})  # keeps row numbers (line numbers) right

    def _add(self, row: dict[str, str]) -> None:
        number = len(self._rows) + 2  # the header is line 1
        self._rows.append(row)
        for kind in self.match_on:
            key = self._key(kind, self._cell(row, "company_domain"), self._cell(row, "company_name"), self._cell(row, "state"),
                            self._cell(row, "city"), self._cell(row, "ccn"))
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
        fields: dict[str, Any] = {name: self._value(name, value) for name, value in self.constants.items()}
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
        if "org_kind" in fields and "care_setting" not in self.columns:
            fields["care_setting"] = KIND_CARE_SETTING[OrgKind(fields["org_kind"])].value
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
        if name == "ccn":
            return normalize_ccn(str(mapped)) or None
        return str(mapped)


def _label(kind: str, lead: Lead) -> str:
    if kind == "domain":
        return f"domain {normalize_domain(lead.company_domain)}"
    if kind == "ccn":
        return f"CCN {normalize_ccn(lead.ccn)}"
    if kind == "name_city_state":
        return f"{lead.company_name!r} in {lead.city}, {state_code(lead.state)}"
    return f"{lead.company_name!r} in {state_code(lead.state)}"


def _with_format(spec: Mapping[str, Any]) -> dict[str, Any]:
    """The spec over its format's preset: the preset's columns, codes and values, then the spec's own."""
    preset = FORMATS.get(str(spec["format"]))
    if preset is None:
        raise ValueError(f"reference file config: format {spec['format']!r} is not one of {sorted(FORMATS)}")
    merged: dict[str, Any] = {**preset, **{k: v for k, v in spec.items() if k != "format"}}
    for key in ("columns", "rows_where", "constants", "confidence"):
        merged[key] = {**preset.get(key, {}), **(spec.get(key) or {})}
    merged["values"] = {f: {**preset["values"].get(f, {}), **(spec.get("values") or {}).get(f, {})}
                        for f in {*preset["values"], *(spec.get("values") or {})}}
    return merged
