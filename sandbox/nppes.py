"""The NPPES NPI Registry stand-in's logic: ``NppesRegistry(records).search(params)`` returns the
JSON body the real API v2.1 returns for ``GET /api/?<params>``.

Pure and in-memory; the sandbox mounts it at ``GET /api/``. Matching follows the public API:
``organization_name``/``first_name``/``last_name`` are exact (case-insensitive, runs of spaces as
one, punctuation as registered: ``ST PATRICK*`` does not find ``ST. PATRICK HOSPITAL``) unless
they end in ``*`` after at least two characters (a prefix search); organization names also match
DBA and other names; ``city``/``state``/``postal_code`` match any address (practice, mailing or other
practice location), so a city search can return organizations practising elsewhere, as the real
one does (city and state are matched independently). ``result_count`` is the number of records in this page. Invalid criteria produce the
``{"Errors": [...]}`` envelope (served with HTTP 200 by the real API).
"""

from __future__ import annotations

import bisect
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Any

DEFAULT_LIMIT = 10
MAX_LIMIT = 200
MAX_SKIP = 1_000
MIN_WILDCARD_PREFIX = 2
SEARCH_FIELDS = ("number", "organization_name", "first_name", "last_name", "city", "state", "postal_code",
                 "taxonomy_description", "country_code", "address_purpose")


def _error(field: str, number: str, description: str) -> dict[str, Any]:
    return {"Errors": [{"field": field, "number": number, "description": description}]}


NO_CRITERIA = _error("generic", "04", "No valid search criteria provided")
ENUMERATION_TYPE_ALONE = _error("enumeration_type", "09", "enumeration_type requires additional search criteria")


def _fold(value: Any) -> str:
    return re.sub(r"\s+", " ", str(value or "")).strip().upper()


def _digits(value: Any) -> str:
    return re.sub(r"\D", "", str(value or ""))


def _addresses(record: Mapping[str, Any]) -> Iterable[Mapping[str, Any]]:
    yield from record.get("addresses") or []
    yield from record.get("practiceLocations") or []


class _NameIndex:
    """Folded names -> record positions, exact via a dict and prefix via a sorted list."""

    def __init__(self) -> None:
        self._exact: dict[str, set[int]] = defaultdict(set)
        self._sorted: list[tuple[str, int]] = []

    def add(self, name: str, position: int) -> None:
        if name:
            self._exact[name].add(position)
            self._sorted.append((name, position))

    def freeze(self) -> None:
        self._sorted.sort()

    def find(self, pattern: str) -> set[int]:
        if not pattern.endswith("*"):
            return set(self._exact.get(pattern, ()))
        prefix = pattern.rstrip("*")
        start = bisect.bisect_left(self._sorted, (prefix, -1))
        found: set[int] = set()
        for name, position in self._sorted[start:]:
            if not name.startswith(prefix):
                break
            found.add(position)
        return found


class NppesRegistry:
    def __init__(self, records: list[dict[str, Any]]) -> None:
        """``records`` as the API returns them; a repeated NPI replaces the earlier record."""
        unique = {_digits(record.get("number")): record for record in records}
        self.records = list(unique.values())
        self._by_number: dict[str, int] = {}
        self._names = {"organization_name": _NameIndex(), "first_name": _NameIndex(), "last_name": _NameIndex()}
        self._by_state: dict[str, set[int]] = defaultdict(set)
        self._by_city: dict[str, set[int]] = defaultdict(set)
        for position, record in enumerate(self.records):
            self._index(position, record)
        for index in self._names.values():
            index.freeze()

    def search(self, params: Mapping[str, str]) -> dict[str, Any]:
        criteria = {k: str(v).strip() for k, v in params.items() if k in SEARCH_FIELDS and str(v or "").strip()}
        enumeration_type = _fold(params.get("enumeration_type"))
        error = self._validate(params, criteria, enumeration_type)
        if error:
            return error
        limit = int(params.get("limit") or DEFAULT_LIMIT)
        skip = int(params.get("skip") or 0)
        positions = sorted(self._matching(criteria, enumeration_type))
        page = [self.records[p] for p in positions[skip : skip + limit]]
        return {"result_count": len(page), "results": page}

    def _index(self, position: int, record: Mapping[str, Any]) -> None:
        self._by_number[_digits(record.get("number"))] = position
        basic = record.get("basic") or {}
        names = {_fold(basic.get("organization_name"))} | {_fold(o.get("organization_name")) for o in record.get("other_names") or []}
        for name in names:
            self._names["organization_name"].add(name, position)
        for part in ("first_name", "last_name"):
            self._names[part].add(_fold(basic.get(part)), position)
        for address in _addresses(record):
            self._by_state[_fold(address.get("state"))].add(position)
            self._by_city[_fold(address.get("city"))].add(position)

    def _validate(self, params: Mapping[str, str], criteria: dict[str, str], enumeration_type: str) -> dict[str, Any] | None:
        for name in ("limit", "skip"):
            raw = str(params.get(name) or "").strip()
            if raw and not raw.isdigit():
                return _error(name, "11", f"{name} must be a whole number")
        if not 1 <= int(params.get("limit") or DEFAULT_LIMIT) <= MAX_LIMIT:
            return _error("limit", "11", f"limit must be between 1 and {MAX_LIMIT}")
        if int(params.get("skip") or 0) > MAX_SKIP:
            return _error("skip", "11", f"skip must be {MAX_SKIP} or less")
        if enumeration_type and enumeration_type not in ("NPI-1", "NPI-2"):
            return _error("enumeration_type", "10", "enumeration_type must be NPI-1 or NPI-2")
        for name in ("organization_name", "first_name", "last_name"):
            value = criteria.get(name, "")
            if value.endswith("*") and len(value.rstrip("*")) < MIN_WILDCARD_PREFIX:
                return _error(name, "07", f"{name} requires at least {MIN_WILDCARD_PREFIX} characters before a wildcard")
        if not criteria:
            return ENUMERATION_TYPE_ALONE if enumeration_type else NO_CRITERIA
        return None

    def _matching(self, criteria: dict[str, str], enumeration_type: str) -> set[int]:
        candidates = self._indexed_candidates(criteria)
        return {p for p in candidates if self._matches(self.records[p], criteria, enumeration_type)}

    def _indexed_candidates(self, criteria: dict[str, str]) -> set[int] | range:
        if "number" in criteria:
            position = self._by_number.get(_digits(criteria["number"]))
            return {position} if position is not None else set()
        sets = [self._names[name].find(_fold(criteria[name])) for name in self._names if name in criteria]
        if "state" in criteria:
            sets.append(self._by_state.get(_fold(criteria["state"]), set()))
        if "city" in criteria:
            sets.append(self._by_city.get(_fold(criteria["city"]), set()))
        if not sets:
            return range(len(self.records))
        sets.sort(key=len)
        return sets[0].intersection(*sets[1:])

    def _matches(self, record: Mapping[str, Any], criteria: dict[str, str], enumeration_type: str) -> bool:
        if enumeration_type and _fold(record.get("enumeration_type")) != enumeration_type:
            return False
        if "postal_code" in criteria:
            wanted = _digits(criteria["postal_code"])
            if not any(_digits(a.get("postal_code")).startswith(wanted) for a in _addresses(record)):
                return False
        if "taxonomy_description" in criteria:
            wanted = _fold(criteria["taxonomy_description"]).rstrip("*")
            if not any(wanted in _fold(t.get("desc")) for t in record.get("taxonomies") or []):
                return False
        if "country_code" in criteria:
            if not any(_fold(a.get("country_code")) == _fold(criteria["country_code"]) for a in _addresses(record)):
                return False
        if "address_purpose" in criteria:
            if not any(_fold(a.get("address_purpose")) == _fold(criteria["address_purpose"]) for a in record.get("addresses") or []):
                return False
        return True
