"""The CMS NPPES NPI Registry (API v2.1) as an enrichment provider.

Organizations (NPI-2) are looked up by NPI when the lead carries one, else by organization name
and state: a short waterfall of ``organization_name`` searches built from the normalized name
(``query_plan``: abbreviations expanded, ST./ST/SAINT spellings, the DBA side, without a trailing
city, "THE ...", a broader prefix; at most ``max_queries``), each paging 200 at a time up to the
API's reach (skip <= 1000, so 1,200 a query). The best candidate by name similarity wins if it
clears the threshold and no other candidate is within the ambiguity margin; with the lead's city
known, only organizations practising in that city are candidates. Otherwise nothing is enriched
and the note says why. The primary taxonomy gives org_type, org_kind and care_setting
(connectors/enrichment/taxonomy.py).

Both wire formats are read (2019: int numbers, second epochs, "" / "NA"; 2022+: string numbers,
millisecond epochs, "--" placeholders, ``null`` licenses), the primary taxonomy is found wherever
it is listed, duplicate codes are collapsed, and a candidate only counts as "in GA" when one of
its practice locations is (a search also matches mailing addresses elsewhere). Validation errors
arrive as an ``Errors`` envelope in a 200; maintenance pages are not JSON. Retries are the one
retry policy of every outside call (``connectors.retry``): 5xx, 429 (waiting ``Retry-After`` when
sent), timeouts and connection errors only.

Requests go through one keep-alive transport per provider (``connectors.http``: httpx's interface
over asyncio streams), on the provider's own event loop thread, which every batch hands its lookups
to whole (``NppesProvider.fetch_many``), ``concurrency`` requests at most in flight; a run sends each
distinct name search once (``SearchMemo``).
"""

from __future__ import annotations

import asyncio
import os
import re
import ssl
import threading
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import datetime, timezone
from difflib import SequenceMatcher
from functools import lru_cache
from pathlib import Path
from typing import Any

import httpx

from connectors.enrichment.base import ENRICHABLE_FIELDS, Findings, Lookup, LookupKey
from connectors.enrichment.industry import normalize_industry
from connectors.enrichment.taxonomy import Taxonomy, classify, federal_kind_of_name, load_nucc_descriptions
from connectors.http import KeepAliveTransport, LoopThread
from connectors.retry import RetryPolicy, is_retryable
from leadflow import settings
from leadflow.canonical import Lead, OrgType

API_VERSION = "2.1"
PAGE_LIMIT = 200
MAX_SKIP = 1_000
DEFAULT_CONCURRENCY = 8
DEFAULT_TIMEOUT_SECONDS = 10.0
DEFAULT_CONNECT_TIMEOUT_SECONDS = 5.0
DEFAULT_ATTEMPTS = 4
DEFAULT_BACKOFF_SECONDS = 0.5
MAX_BACKOFF_SECONDS = 10.0
DEFAULT_MATCH_THRESHOLD = 0.85
DEFAULT_AMBIGUITY_MARGIN = 0.03
DEFAULT_BREAKER_FAILURES = 5
DEFAULT_BREAKER_COOLDOWN_SECONDS = 60.0
SLOT_POLL_SECONDS = 0.002
MAX_SLOT_POLL_SECONDS = 0.05
OUTSIDE_REGISTRY = frozenset({OrgType.payer, OrgType.pharma})  # never enumerated as NPI-2 organizations
# CRM industry values (normalized, connectors.enrichment.industry) of organizations the registry does not list
OUTSIDE_REGISTRY_INDUSTRIES = frozenset({"insurance", "pharmaceuticals", "biotechnology"})
PLACEHOLDERS = frozenset({"", "--", "NA", "N/A", "NONE", "NULL"})

US_STATES = {
    "ALABAMA": "AL", "ALASKA": "AK", "ARIZONA": "AZ", "ARKANSAS": "AR", "CALIFORNIA": "CA", "COLORADO": "CO",
    "CONNECTICUT": "CT", "DELAWARE": "DE", "DISTRICT OF COLUMBIA": "DC", "FLORIDA": "FL", "GEORGIA": "GA",
    "HAWAII": "HI", "IDAHO": "ID", "ILLINOIS": "IL", "INDIANA": "IN", "IOWA": "IA", "KANSAS": "KS",
    "KENTUCKY": "KY", "LOUISIANA": "LA", "MAINE": "ME", "MARYLAND": "MD", "MASSACHUSETTS": "MA",
    "MICHIGAN": "MI", "MINNESOTA": "MN", "MISSISSIPPI": "MS", "MISSOURI": "MO", "MONTANA": "MT",
    "NEBRASKA": "NE", "NEVADA": "NV", "NEW HAMPSHIRE": "NH", "NEW JERSEY": "NJ", "NEW MEXICO": "NM",
    "NEW YORK": "NY", "NORTH CAROLINA": "NC", "NORTH DAKOTA": "ND", "OHIO": "OH", "OKLAHOMA": "OK",
    "OREGON": "OR", "PENNSYLVANIA": "PA", "RHODE ISLAND": "RI", "SOUTH CAROLINA": "SC", "SOUTH DAKOTA": "SD",
    "TENNESSEE": "TN", "TEXAS": "TX", "UTAH": "UT", "VERMONT": "VT", "VIRGINIA": "VA", "WASHINGTON": "WA",
    "WEST VIRGINIA": "WV", "WISCONSIN": "WI", "WYOMING": "WY", "PUERTO RICO": "PR", "GUAM": "GU",
    "VIRGIN ISLANDS": "VI", "AMERICAN SAMOA": "AS", "NORTHERN MARIANA ISLANDS": "MP",
}
STATE_CODES = frozenset(US_STATES.values())

LEGAL_SUFFIXES = frozenset({
    "llc", "pllc", "lc", "llp", "lllp", "lp", "pc", "pa", "sc", "psc", "plc", "inc", "incorporated", "corp",
    "corporation", "co", "company", "ltd", "limited", "dba", "md", "do", "dds", "dmd", "od", "dpm", "phd",
})
ABBREVIATIONS = {
    "ctr": "center", "centre": "center", "cntr": "center", "ctrs": "centers", "hosp": "hospital",
    "hosps": "hospitals", "med": "medical", "mem": "memorial", "meml": "memorial", "reg": "regional",
    "rgnl": "regional", "regl": "regional", "cmnty": "community", "sys": "system", "hlth": "health",
    "assoc": "associates", "assocs": "associates", "assn": "association", "svc": "services",
    "svcs": "services", "mgmt": "management", "grp": "group", "intl": "international",
    "univ": "university", "mt": "mount", "ft": "fort",
}
# Words the registry spells several ways in legal names ("ST. MARY'S", "ST MARYS", "SAINT MARY'S"):
# each spelling is a query of its own, the typed one first.
SPELLINGS = {
    "ST": ("ST.", "ST", "SAINT"), "SAINT": ("SAINT", "ST.", "ST"),
    "MT": ("MOUNT", "MT.", "MT"), "MOUNT": ("MOUNT", "MT.", "MT"),
    "FT": ("FORT", "FT.", "FT"), "FORT": ("FORT", "FT.", "FT"),
}
DEFAULT_MAX_QUERIES = 4  # name searches per organization, each up to the API's reach
_PARENTHETICAL = re.compile(r"\([^)]*\)?|\[[^\]]*\]?")
_DBA = re.compile(r"(?:^|[\s,;])(?:d/b/a|d\.b\.a\.?|dba|doing business as|a/k/a|aka)(?=[\s:]|$):?", re.IGNORECASE)
_DOTTED_ACRONYM = re.compile(r"(?:[A-Z]\.){2,}[A-Z]?\.?")
_PLAIN_WORD = re.compile(r"[A-Z0-9]+")
_MIN_CUT_PREFIX = 3  # an "&" or a comma cuts the query only when this much comes before it
MIN_WILDCARD_CHARS = 2  # the registry's minimum before a trailing "*"
NEAR_EXACT_SIMILARITY = 0.95  # names whose words differ must be at least this similar (a typo, not another word)
DIFFERENT_WORDS_CAP = 0.75  # ... else their score is capped here, below any sensible match threshold


class NppesError(Exception):
    """A response that retrying will not fix: 4xx, an ``Errors`` envelope, a non-JSON body."""


class NppesTransientError(Exception):
    """A 5xx or 429 response; retried by ``connectors.retry`` (``status`` and ``headers`` are what
    its classifier and Retry-After reader look at, as for the CRMs' errors)."""

    def __init__(self, status: int, headers: Any = None) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status
        self.headers = headers


# --- reading records ---------------------------------------------------------------------------


def clean(value: Any) -> str:
    """A stripped string, with NPPES placeholders ("--", "NA", "", null) read as ""."""
    if value is None:
        return ""
    text = str(value).strip()
    return "" if text.upper() in PLACEHOLDERS else text


def state_code(value: Any) -> str:
    text = clean(value).upper()
    return US_STATES.get(text, text)


def parse_epoch(value: Any) -> datetime | None:
    """An NPPES epoch: int seconds (2019 bodies) or string milliseconds (2022+)."""
    text = clean(value)
    if not text.lstrip("-").isdigit():
        return None
    number = int(text)
    seconds = number / 1000 if abs(number) >= 100_000_000_000 else number
    return datetime.fromtimestamp(seconds, tz=timezone.utc)


@dataclass(frozen=True)
class Address:
    address_1: str
    city: str
    state: str
    postal_code: str
    purpose: str  # LOCATION, MAILING or PRACTICE (a practiceLocations entry)

    @classmethod
    def parse(cls, raw: Mapping[str, Any], default_purpose: str) -> Address:
        return cls(
            address_1=clean(raw.get("address_1")).upper(),
            city=clean(raw.get("city")).upper(),
            state=state_code(raw.get("state")),
            postal_code=re.sub(r"\D", "", clean(raw.get("postal_code"))),
            purpose=clean(raw.get("address_purpose")).upper() or default_purpose,
        )

    @property
    def dedup_key(self) -> tuple[str, str, str, str]:
        street = re.sub(r"[^A-Z0-9]+", " ", self.address_1).strip()
        return (street, self.city, self.state, self.postal_code[:5])


@dataclass(frozen=True)
class NppesOrg:
    npi: str
    enumeration_type: str
    name: str
    other_names: tuple[str, ...]
    taxonomies: tuple[Taxonomy, ...]
    locations: tuple[Address, ...]  # LOCATION address first, then practiceLocations
    mailing_state: str
    official: dict[str, str]
    subpart: bool
    last_updated: datetime | None

    @property
    def is_organization(self) -> bool:
        return self.enumeration_type == "NPI-2"

    @property
    def state(self) -> str:
        return self.locations[0].state if self.locations else ""

    @property
    def location_count(self) -> int:
        return len({address.dedup_key for address in self.locations})

    def located_in(self, state: str, city: str | None = None) -> bool:
        return any(a.state == state and (not city or a.city == city.upper()) for a in self.locations)

    def to_payload(self) -> dict[str, Any]:
        """The record as plain data (what ``dataclasses.asdict`` gives, built field by field: asdict's
        recursive deep copy was 1.5 % of a backfill's CPU)."""
        return {
            "npi": self.npi, "enumeration_type": self.enumeration_type, "name": self.name,
            "other_names": tuple(self.other_names),
            "taxonomies": tuple({"code": t.code, "desc": t.desc, "primary": t.primary, "group": t.group}
                                for t in self.taxonomies),
            "locations": tuple({"address_1": a.address_1, "city": a.city, "state": a.state,
                                "postal_code": a.postal_code, "purpose": a.purpose} for a in self.locations),
            "mailing_state": self.mailing_state, "official": dict(self.official), "subpart": self.subpart,
            "last_updated": self.last_updated.isoformat() if self.last_updated else None,
        }

    @classmethod
    def from_payload(cls, payload: Mapping[str, Any]) -> NppesOrg:
        last_updated = payload.get("last_updated")
        return cls(
            npi=payload["npi"],
            enumeration_type=payload["enumeration_type"],
            name=payload["name"],
            other_names=tuple(payload.get("other_names") or ()),
            taxonomies=tuple(Taxonomy(**t) for t in payload.get("taxonomies") or ()),
            locations=tuple(Address(**a) for a in payload.get("locations") or ()),
            mailing_state=payload.get("mailing_state") or "",
            official=dict(payload.get("official") or {}),
            subpart=bool(payload.get("subpart")),
            last_updated=datetime.fromisoformat(last_updated) if last_updated else None,
        )


def parse_record(raw: Mapping[str, Any]) -> NppesOrg:
    basic = raw.get("basic") or {}
    addresses = [Address.parse(a, "") for a in raw.get("addresses") or []]
    practice = [Address.parse(a, "PRACTICE") for a in raw.get("practiceLocations") or []]
    location = [a for a in addresses if a.purpose == "LOCATION"]
    mailing = [a for a in addresses if a.purpose == "MAILING"]
    name = clean(basic.get("organization_name")) or clean(basic.get("name")) or _person_name(basic, "")
    return NppesOrg(
        npi=clean(raw.get("number")),
        enumeration_type=clean(raw.get("enumeration_type")).upper(),
        name=name,
        other_names=tuple(n for n in (clean(o.get("organization_name")) for o in raw.get("other_names") or []) if n),
        taxonomies=_taxonomies(raw.get("taxonomies") or []),
        locations=tuple(location + practice),
        mailing_state=mailing[0].state if mailing else "",
        official=_official(basic),
        subpart=clean(basic.get("organizational_subpart")).upper() == "YES",
        last_updated=parse_epoch(raw.get("last_updated_epoch")),
    )


def _taxonomies(raw: list[Mapping[str, Any]]) -> tuple[Taxonomy, ...]:
    """One entry per code (primary wins when a code is listed twice), in listed order."""
    by_code: dict[str, Taxonomy] = {}
    for entry in raw:
        code = clean(entry.get("code")).upper()
        if not code:
            continue
        taxonomy = Taxonomy(code, clean(entry.get("desc")), bool(entry.get("primary")), clean(entry.get("taxonomy_group")))
        if code not in by_code or (taxonomy.primary and not by_code[code].primary):
            by_code[code] = taxonomy
    return tuple(by_code.values())


def _person_name(basic: Mapping[str, Any], prefix: str) -> str:
    parts = [clean(basic.get(f"{prefix}{part}")) for part in ("name_prefix", "first_name", "middle_name", "last_name", "name_suffix")]
    return " ".join(p for p in parts if p)


def _official(basic: Mapping[str, Any]) -> dict[str, str]:
    official = {
        "name": _person_name(basic, "authorized_official_"),
        "title": clean(basic.get("authorized_official_title_or_position")),
        "credential": clean(basic.get("authorized_official_credential")),
    }
    return {key: value for key, value in official.items() if value}


def records_of(body: Any) -> list[Mapping[str, Any]]:
    """The records of a response body; an ``Errors`` envelope raises NppesError."""
    if not isinstance(body, Mapping):
        raise NppesError(f"unexpected response body ({type(body).__name__})")
    if "Errors" in body:
        errors = body.get("Errors") or []
        described = "; ".join(f"{e.get('number', '?')} {e.get('field', '')}: {e.get('description', '')}" for e in errors)
        raise NppesError(f"query rejected: {described or 'Errors envelope'}")
    results = body.get("results") or []
    if not isinstance(results, list):
        raise NppesError("unexpected 'results' (not a list)")
    return results


# --- names ------------------------------------------------------------------------------------


@lru_cache(maxsize=16_384)
def normalize_name(name: str) -> str:
    """Lowercase words without punctuation, parentheticals, legal suffixes or a leading "the";
    abbreviations expanded, "saint" read as "st", "&" read as "and". Memoized: matching asks for
    the same few names again and again (37,671 calls for 3,052 names in a 10k backfill)."""
    text = _PARENTHETICAL.sub(" ", name).lower().replace("&", " and ").replace(".", "").replace("'", "")
    words = [ABBREVIATIONS.get(w, w) for w in re.sub(r"[^a-z0-9]+", " ", text).split()]
    words = ["st" if w == "saint" else w for w in words]
    while words and words[-1] in LEGAL_SUFFIXES:
        words.pop()
    if len(words) > 1 and words[0] == "the":
        words.pop(0)
    return " ".join(words)


def name_forms(name: str, city: str | None = None) -> list[str]:
    """The names a typed organization name stands for: each side of a "dba" / "aka", and each
    without a trailing city name (``Mercy Med Ctr Redding`` typed for MERCY MEDICAL CENTER in
    Redding); parentheticals dropped. The typed name's own form comes first."""
    text = _PARENTHETICAL.sub(" ", name)
    parts = [p.strip(" ,;:-") for p in _DBA.split(text)]
    forms: list[str] = []
    city_words = normalize_name(city).split() if city else []
    for part in (p for p in parts if normalize_name(p)):
        forms.append(part)
        words = normalize_name(part).split()
        if city_words and len(words) > len(city_words) and words[-len(city_words):] == city_words:
            forms.append(_drop_trailing_words(part, len(city_words)))
    return list(dict.fromkeys(forms)) or [name]


def _drop_trailing_words(text: str, count: int) -> str:
    words = text.split()
    while words and count and normalize_name(words[-1]) == "":
        words.pop()
    return " ".join(words[: len(words) - count]).rstrip(" ,;:-")


def name_similarity(left: str, right: str) -> float:
    """0..1: the better of the character ratio in order and with words sorted."""
    a, b = normalize_name(left), normalize_name(right)
    if not a or not b:
        return 0.0
    if a == b:
        return 1.0
    in_order = _ratio(a, b)
    sorted_words = _ratio(" ".join(sorted(a.split())), " ".join(sorted(b.split())))
    return max(in_order, sorted_words)


def _ratio(a: str, b: str) -> float:
    """SequenceMatcher's ratio, made symmetric (its matching blocks depend on the order)."""
    return max(SequenceMatcher(None, a, b, autojunk=False).ratio(), SequenceMatcher(None, b, a, autojunk=False).ratio())


def best_name_score(name: str, org: NppesOrg, city: str | None = None) -> float:
    """The best similarity of any form of the typed name (``name_forms``) to any registered name.
    Names whose words differ (one name has a word the other lacks: HEALTH / HEALTHCARE) count
    only when nearly equal, so a shorter name never matches a longer namesake."""
    forms = name_forms(name, city)
    return max(_word_checked(form, candidate) for form in forms for candidate in (org.name, *org.other_names))


def _word_checked(typed: str, registered: str) -> float:
    score = name_similarity(typed, registered)
    a, b = set(normalize_name(typed).split()), set(normalize_name(registered).split())
    if score < NEAR_EXACT_SIMILARITY and not (a <= b or b <= a):
        return min(score, DIFFERENT_WORDS_CAP)
    return score


def query_names(name: str, city: str | None = None, max_queries: int = DEFAULT_MAX_QUERIES) -> list[str]:
    """The ``organization_name`` searches to try, in order, at most ``max_queries``
    (``query_plan`` flattened)."""
    return [query for group in query_plan(name, city, max_queries) for query in group]


def query_plan(name: str, city: str | None = None, max_queries: int = DEFAULT_MAX_QUERIES) -> list[list[str]]:
    """The ``organization_name`` searches to try, in groups decided on together, at most
    ``max_queries`` in all.

    The registry matches ``organization_name`` exactly (case-insensitive, punctuation as stored)
    or, with a trailing ``*`` after at least two characters, as a prefix of the legal or any other
    (DBA) name. So a query is a prefix of words the registry spells one way: abbreviations
    expanded (MED CTR -> MEDICAL CENTER, HOSP -> HOSPITAL), "The", legal suffixes and
    parentheticals dropped, cut before a word whose spelling varies (MARY'S / MARYS, D. / D, an
    "&" or a comma). ST. / ST / SAINT, MOUNT / MT. / MT and FORT / FT. / FT are each searched, the
    typed one first, as one group (a namesake under another spelling makes the match ambiguous).
    Then each other form of the name (``name_forms``: the DBA side, without a trailing city), then
    the first one with "THE " in front, then with its dotted acronyms as typed (C.S.P. rather than
    CSP), then a broader prefix of it (``_broader``)."""
    forms = name_forms(name, city)
    groups = [_query_prefixes(form) for form in forms]
    first = groups[0][0] if groups and groups[0] else ""
    if first:
        groups += [[f"THE {first}"], _query_prefixes(forms[0], dotted=True), [_broader(first)]]
    plan: list[list[str]] = []
    seen: set[str] = set()
    budget = max_queries
    for group in groups:
        queries = [f"{q}*" for q in group if len(q) >= MIN_WILDCARD_CHARS and f"{q}*" not in seen][:budget]
        if queries:
            plan.append(queries)
            seen.update(queries)
            budget -= len(queries)
        if budget <= 0:
            break
    if not plan:
        bare = re.sub(r"[^A-Z0-9]+", "", name.upper())
        return [[bare]] if bare else []
    return plan


def _broader(prefix: str) -> str:
    """Up to the first word ending in S with the S dropped (CHILDRENS may be registered CHILDREN'S),
    else the first two words."""
    words = prefix.split()
    for position, word in enumerate(words):
        if position and _PLAIN_WORD.fullmatch(word) and word.endswith("S") and len(word) > 3:
            return " ".join([*words[:position], word[:-1]])
    return " ".join(words[:2]) if len(words) > 2 and all(_PLAIN_WORD.fullmatch(w) for w in words[:2]) else ""


def _query_prefixes(form: str, dotted: bool = False) -> list[str]:
    """The query prefixes (without the ``*``) of one form of a name: one per spelling of its
    variable words."""
    words = _PARENTHETICAL.sub(" ", form).upper().replace("&", " & ").split()
    if len(words) > 1 and words[0] == "THE":
        words.pop(0)
    while len(words) > 1 and re.sub(r"[^A-Z]", "", words[-1]).lower() in LEGAL_SUFFIXES:
        words.pop()
    spelled: list[tuple[str, ...]] = []
    for word in words:
        after_saint = bool(spelled) and spelled[-1][-1] in ("SAINT", "ST")
        if after_saint and _PLAIN_WORD.fullmatch(word) and word.endswith("S") and len(word) > 3:
            spelled.append((word[:-1],))  # ST LUKES may be registered ST. LUKE'S: LUKE, then anything
            break
        alternatives, stop = _query_word(word, len(" ".join(a[0] for a in spelled)), dotted)
        if alternatives:
            spelled.append(alternatives)
        if stop:
            break
    prefixes = [""]
    for alternatives in spelled:
        prefixes = [f"{p} {a}".strip() for p in prefixes for a in alternatives]
    return [p for p in prefixes if p]


def _query_word(word: str, prefix_length: int, dotted: bool = False) -> tuple[tuple[str, ...], bool]:
    """(the spellings of ``word`` to search, whether the prefix ends after it)."""
    cut_here = prefix_length >= _MIN_CUT_PREFIX
    bare = word.rstrip(",;:")
    ends_clause = word != bare and cut_here
    key = bare.replace(".", "")
    if word in ("&", "AND"):
        return ((), True) if cut_here else ((word,), False)
    if key in SPELLINGS:
        return tuple(dict.fromkeys((bare, *SPELLINGS[key]))), ends_clause
    if key.lower() in ABBREVIATIONS and bare in (key, key + "."):
        return (ABBREVIATIONS[key.lower()].upper(),), ends_clause
    if _DOTTED_ACRONYM.fullmatch(bare):
        return (bare if dotted else key,), ends_clause  # CSP, or C.S.P. as typed
    if _PLAIN_WORD.fullmatch(bare):
        return (bare,), ends_clause
    if _PLAIN_WORD.fullmatch(bare.rstrip(".")):
        return (bare.rstrip("."),), True  # the "D." of a name: with or without its period
    stem = _PLAIN_WORD.match(bare)  # MARY'S, WINSTON-SALEM: the part before the punctuation, then anything
    if stem and len(stem.group(0)) + prefix_length < _MIN_CUT_PREFIX:
        return (bare, re.sub(r"[^A-Z0-9]", "", bare)), ends_clause  # O'BRIEN: as typed or OBRIEN, and go on
    return ((stem.group(0),) if stem else ()), True


# --- choosing a candidate ----------------------------------------------------------------------


@dataclass(frozen=True)
class MatchDecision:
    org: NppesOrg | None
    confidence: float
    note: str | None
    ambiguous: bool = False


def pick_match(
    records: Sequence[Mapping[str, Any]],
    name: str,
    state: str,
    city: str | None = None,
    threshold: float = DEFAULT_MATCH_THRESHOLD,
    margin: float = DEFAULT_AMBIGUITY_MARGIN,
    lead_city: str | None = None,
) -> MatchDecision:
    """The one candidate practising in ``state`` (and ``city`` when given) whose name clears
    ``threshold`` with no rival within ``margin``. ``lead_city`` is the lead's city: a typed name
    ending in it also matches without it."""
    where = f"{state}{', ' + city.upper() if city else ''}"
    label = f"{name!r} in {where}"
    candidates = _candidates(records, state, city)
    if not candidates:
        return MatchDecision(None, 0.0, f"NPPES: no organization found for {label}")
    forms_city = lead_city or city
    scored = sorted(((best_name_score(name, org, forms_city), org) for org in candidates), key=lambda pair: -pair[0])
    best_score, best = scored[0]
    if best_score < threshold:
        return MatchDecision(None, best_score, f"NPPES: weak match for {label}: best {best.name!r} scored {best_score:.2f} < {threshold:.2f}")
    rivals = [score for score, _ in scored[1:] if best_score - score <= margin]
    if rivals:
        return MatchDecision(None, best_score, f"NPPES: ambiguous match for {label}: {len(rivals) + 1} candidates within {margin:.2f}", True)
    return MatchDecision(best, best_score, None)


def pick_match_near(
    records: Sequence[Mapping[str, Any]],
    name: str,
    state: str,
    city: str | None,
    threshold: float = DEFAULT_MATCH_THRESHOLD,
    margin: float = DEFAULT_AMBIGUITY_MARGIN,
) -> MatchDecision:
    """With the lead's city known, only organizations practising there (at any practice location)
    are candidates: a same-named organization elsewhere in the state is a namesake, not this one.
    Without a city, across the state."""
    if not city:
        return pick_match(records, name, state, None, threshold, margin)
    decision = pick_match(records, name, state, city, threshold, margin, city)
    if decision.org is None and not decision.ambiguous and not _candidates(records, state, city):
        elsewhere = pick_match(records, name, state, None, threshold, margin, city)
        if elsewhere.org is not None or elsewhere.ambiguous:
            note = (f"NPPES: no organization practising in {city.upper()} matched {name!r}; a namesake elsewhere"
                    f" in {state} is not taken")
            return MatchDecision(None, elsewhere.confidence, note)
    return decision


def _candidates(records: Sequence[Mapping[str, Any]], state: str, city: str | None) -> list[NppesOrg]:
    by_npi: dict[str, NppesOrg] = {}
    for raw in records:
        org = parse_record(raw)
        if org.is_organization and org.located_in(state, city):
            by_npi.setdefault(org.npi, org)
    return list(by_npi.values())


# --- HTTP ---------------------------------------------------------------------------------------




@dataclass
class ClientStats:
    """Shared by every batch (and thread) of one provider."""

    requests: int = 0
    retries: int = 0
    in_flight: int = 0
    max_in_flight: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def started(self) -> None:
        with self.lock:
            self.requests += 1
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)

    def finished(self) -> None:
        with self.lock:
            self.in_flight -= 1


@dataclass
class Breaker:
    """After ``failures`` failed lookups in a row, lookups are skipped for ``cooldown`` seconds
    (across batches), then tried again."""

    failures: int
    cooldown: float
    clock: Callable[[], float] = time.monotonic
    _in_a_row: int = 0
    _open_until: float = float("-inf")
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def is_open(self) -> bool:
        return self.clock() < self._open_until

    def failed(self) -> None:
        with self._lock:
            self._in_a_row += 1
            if self._in_a_row >= self.failures:
                self._open_until = self.clock() + self.cooldown
                self._in_a_row = 0

    def succeeded(self) -> None:
        with self._lock:
            self._in_a_row = 0


class RequestSlots:
    """At most ``size`` requests in flight across every event loop and thread of this process
    (flows enrich several pages at once, each ``enrich_batch`` in its own loop)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._slots = threading.BoundedSemaphore(size)

    async def acquire(self) -> None:
        delay = SLOT_POLL_SECONDS
        while not self._slots.acquire(blocking=False):
            await asyncio.sleep(delay)
            delay = min(delay * 2, MAX_SLOT_POLL_SECONDS)

    def release(self) -> None:
        self._slots.release()


class SearchMemo:
    """The run's name searches (query -> records, truncated), so a query that several leads'
    names lead to (``MERCY HOSPITAL*`` in GA from leads in two cities) is sent once per run, also
    while it is still under way for another lookup (of this batch or of a batch in another thread).
    The registry's answer does not change within a run. Bounded by the records it holds, an
    answer with none counting as one (most name searches find nothing: counting only records let
    those pile up for the whole run, about 1.4 KB each); the oldest answered searches are dropped
    first. A failed search is forgotten, and the lookups waiting on it get its error."""

    def __init__(self, max_records: int = 5_000) -> None:
        self.max_records = max_records
        self._searches: dict[tuple[tuple[str, str], ...], Future] = {}
        self._records = 0
        self._lock = threading.Lock()
        self.hits = 0

    def claim(self, params: Mapping[str, str]) -> tuple[Future, bool]:
        """The search's future, and whether the caller must send it (True) or wait for it."""
        key = tuple(sorted(params.items()))
        with self._lock:
            future = self._searches.get(key)
            if future is not None:
                self.hits += 1
                return future, False
            future = self._searches[key] = Future()
            return future, True

    def answered(self, params: Mapping[str, str], future: Future, answer: tuple[list[Mapping[str, Any]], bool]) -> None:
        with self._lock:
            self._records += _weight(answer)
            while self._records > self.max_records and self._searches:
                oldest_key = next((k for k, f in self._searches.items() if f.done()), None)
                if oldest_key is None:
                    break
                self._records -= _weight(self._searches.pop(oldest_key).result())
        future.set_result(answer)

    def failed(self, params: Mapping[str, str], future: Future, error: BaseException) -> None:
        with self._lock:
            self._searches.pop(tuple(sorted(params.items())), None)
        future.set_exception(error)


def _weight(answer: tuple[list[Mapping[str, Any]], bool]) -> int:
    return max(1, len(answer[0]))


@dataclass
class NppesClient:
    """Async GETs against the registry with bounded concurrency and retries on transient errors.

    ``http`` is an async transport: the provider's ``KeepAliveTransport`` on its own loop, or an
    injected one (an ASGI app in tests) in the calling loop."""

    http: httpx.AsyncBaseTransport
    url: str
    slots: RequestSlots
    attempts: int = DEFAULT_ATTEMPTS
    backoff_seconds: float = DEFAULT_BACKOFF_SECONDS
    stats: ClientStats = field(default_factory=ClientStats)
    timeout: dict[str, float | None] = field(default_factory=lambda: httpx.Timeout(DEFAULT_TIMEOUT_SECONDS).as_dict())

    retry: RetryPolicy | None = None  # None: one built from attempts and backoff_seconds
    memo: SearchMemo | None = None  # the run's answered searches

    def __post_init__(self) -> None:
        self._semaphore = asyncio.Semaphore(self.slots.size)  # this loop's share, so few tasks poll
        if self.retry is None:
            self.retry = RetryPolicy(attempts=self.attempts, base_wait=self.backoff_seconds,
                                     max_wait=MAX_BACKOFF_SECONDS)

    async def get(self, params: Mapping[str, str]) -> Any:
        """The decoded body; transient failures are retried by the one retry policy
        (``connectors.retry``), set up only once a first attempt has failed."""
        query = {"version": API_VERSION, **params}
        try:
            return _decode(await self._send(query))
        except Exception as error:  # noqa: BLE001 - classified right below
            if not is_retryable(error):
                raise
            failure = error
        response = await self.retry.call_async(lambda: self._send(query), first_failure=failure,
                                               on_retry=self._count_retry)
        return _decode(response)

    def _count_retry(self) -> None:
        self.stats.retries += 1

    async def search(self, params: Mapping[str, str], max_results: int = PAGE_LIMIT + MAX_SKIP) -> tuple[list[Mapping[str, Any]], bool]:
        """Every record up to ``max_results``, paging by limit/skip; True when the reach was hit.
        A search the run already answered is not sent again (``memo``)."""
        if self.memo is None or max_results != PAGE_LIMIT + MAX_SKIP:
            return await self._search(params, max_results)
        future, mine = self.memo.claim(params)
        if not mine:
            return await asyncio.wrap_future(future)
        try:
            answer = await self._search(params, max_results)
        except BaseException as error:
            self.memo.failed(params, future, error)
            raise
        self.memo.answered(params, future, answer)
        return answer

    async def _search(self, params: Mapping[str, str], max_results: int) -> tuple[list[Mapping[str, Any]], bool]:
        records: list[Mapping[str, Any]] = []
        skip = 0
        while True:
            try:
                page = records_of(await self.get({**params, "limit": str(PAGE_LIMIT), "skip": str(skip)}))
            except NppesError as error:
                if not records or not str(error).startswith("query rejected"):
                    raise
                return records, True  # a later page refused (the API's reach shrank): keep what came
            records.extend(page)
            if len(page) < PAGE_LIMIT:
                return records, False
            skip += PAGE_LIMIT
            if skip > MAX_SKIP or len(records) >= max_results:
                return records, True

    async def _send(self, query: Mapping[str, str]) -> httpx.Response:
        async with self._semaphore:
            await self.slots.acquire()
            self.stats.started()
            try:
                response = await self._get(query)
            finally:
                self.stats.finished()
                self.slots.release()
        if response.status_code == 429 or response.status_code >= 500:
            raise NppesTransientError(response.status_code, response.headers)
        if response.status_code >= 400:
            raise NppesError(f"HTTP {response.status_code}")
        return response

    async def _get(self, query: Mapping[str, str]) -> httpx.Response:
        """One GET straight through the async transport."""
        response = await self.http.handle_async_request(self._request(query))
        await response.aread()
        return response

    def _request(self, query: Mapping[str, str]) -> httpx.Request:
        """The registry needs no cookies, auth or redirects: requests go straight to the transport
        (httpx.Client's handling of them cost a third of a lookup's CPU)."""
        return httpx.Request("GET", self.url, params=query, extensions={"timeout": self.timeout})


def _decode(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        kind = response.headers.get("content-type", "unknown content type")
        raise NppesError(f"non-JSON response ({kind}; registry maintenance?)") from None


# --- the provider -------------------------------------------------------------------------------


@dataclass
class NppesProvider:
    url: str = field(default_factory=settings.nppes_url)
    concurrency: int = DEFAULT_CONCURRENCY
    timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS
    attempts: int = DEFAULT_ATTEMPTS
    backoff_seconds: float = DEFAULT_BACKOFF_SECONDS
    match_threshold: float = DEFAULT_MATCH_THRESHOLD
    ambiguity_margin: float = DEFAULT_AMBIGUITY_MARGIN
    max_queries: int = DEFAULT_MAX_QUERIES
    breaker_failures: int = DEFAULT_BREAKER_FAILURES
    breaker_cooldown_seconds: float = DEFAULT_BREAKER_COOLDOWN_SECONDS
    taxonomy_csv: str | None = None
    fillable: frozenset[str] = frozenset({"org_type", "org_kind", "specialty", "care_setting", "location_count", "state", "npi",
                                          "company_name"})
    name: str = "nppes"
    label: str = "NPPES"
    cacheable: bool = True
    key_requirement: str = "an NPI, or company name and state; payers and pharma companies: an NPI"
    skip_industries: frozenset[str] = OUTSIDE_REGISTRY_INDUSTRIES  # no name search for these CRM industries
    client_stats: ClientStats = field(default_factory=ClientStats)
    transport: httpx.AsyncBaseTransport | None = None
    retry: RetryPolicy | None = None  # None: attempts and backoff_seconds, with real waits
    _slots: RequestSlots | None = field(default=None, repr=False)
    _breaker: Breaker | None = field(default=None, repr=False)
    _ssl_context: ssl.SSLContext | None = field(default=None, repr=False)
    _pool: tuple[KeepAliveTransport, LoopThread] | None = field(default=None, repr=False)
    _memo: SearchMemo = field(default_factory=SearchMemo, repr=False)

    @classmethod
    def from_config(cls, spec: Mapping[str, Any], base_dir: str = ".", url: str | None = None) -> NppesProvider:
        taxonomy_csv = os.path.expandvars(str(spec.get("taxonomy_csv") or "")) or None
        if taxonomy_csv and not Path(taxonomy_csv).is_absolute():
            taxonomy_csv = str(Path(base_dir) / taxonomy_csv)
        options = {k: spec[k] for k in ("concurrency", "timeout_seconds", "attempts", "backoff_seconds",
                                        "match_threshold", "ambiguity_margin", "max_queries", "breaker_failures",
                                        "breaker_cooldown_seconds") if k in spec}
        provider = cls(url=url or spec.get("url") or settings.nppes_url(), taxonomy_csv=taxonomy_csv, **options)
        if spec.get("fields"):
            unknown = set(spec["fields"]) - ENRICHABLE_FIELDS
            if unknown:
                raise ValueError(f"enrichment config: nppes fields names unknown fields {sorted(unknown)}")
            provider.fillable = frozenset(spec["fields"])
        if spec.get("name"):
            provider.name = spec["name"]
        if "skip_industries" in spec:
            provider.skip_industries = frozenset(normalize_industry(v) for v in spec["skip_industries"] or ())
        return provider

    def lookup_keys(self, lead: Lead) -> list[LookupKey]:
        keys = []
        npi = re.sub(r"\D", "", lead.npi or "")
        if len(npi) == 10:
            keys.append(LookupKey(f"npi:{npi}", {"number": npi}, f"NPI {npi}"))
        if lead.org_type in OUTSIDE_REGISTRY or normalize_industry(lead.industry) in self.skip_industries:
            return keys  # the registry lists providers: searching it by a payer's name only finds namesakes
        state = state_code(lead.state)
        name = (lead.company_name or "").strip()
        if name and state in STATE_CODES and normalize_name(name):
            city = (lead.city or "").strip().upper()
            query = {"name": name, "state": state, **({"city_hint": city} if city else {})}
            label = f"{name!r} in {city.title() + ', ' if city else ''}{state}"
            keys.append(LookupKey(f"name:{normalize_name(name)}|{state}{'|' + city if city else ''}", query, label))
        return keys

    async def fetch_many(self, keys: Sequence[LookupKey]) -> dict[str, Lookup]:
        """Each key's lookup, ``concurrency`` requests at most in flight across every batch.

        The lookups run on the provider's own event loop thread (``LoopThread``), handed over as
        one batch, and send through its one ``KeepAliveTransport``, whose connections every batch
        reuses for the provider's life. Before, each request went to a worker thread and back
        (a synchronous transport in a thread pool): that hand-off cost about as much CPU as the
        request itself on the 2-vCPU machine. An injected async ``transport`` (an ASGI app in
        tests) is used in the calling loop instead, with the same gate."""
        if self.transport is not None:
            async with self.transport:
                return await self._fetch_gated(self._client(self.transport), keys)
        http, loop = self._pooled_http()
        return await loop.run(self._fetch_gated(self._client(http), keys))

    def _client(self, http: httpx.AsyncBaseTransport) -> NppesClient:
        timeout = httpx.Timeout(self.timeout_seconds, connect=min(self.timeout_seconds, DEFAULT_CONNECT_TIMEOUT_SECONDS))
        return NppesClient(http, self.url, self._request_slots(), self.attempts, self.backoff_seconds,
                           self.client_stats, timeout.as_dict(), self.retry, self._memo)

    async def _fetch_gated(self, client: NppesClient, keys: Sequence[LookupKey]) -> dict[str, Lookup]:
        gate = asyncio.Semaphore(self.concurrency)  # lookups under way: the breaker is asked as each starts

        async def gated(key: LookupKey) -> Lookup:
            async with gate:
                return await self._fetch_one(client, key)

        results = await asyncio.gather(*(gated(key) for key in keys))
        return {key.cache_key: result for key, result in zip(keys, results)}

    def _pooled_http(self) -> tuple[KeepAliveTransport, LoopThread]:
        """The provider's one transport and the loop thread it runs on, made on first use; closed
        when the provider is garbage-collected (or the process ends)."""
        with self.client_stats.lock:
            if self._pool is None:
                http, loop = KeepAliveTransport(self._tls_locked()), LoopThread(name="nppes")
                self._pool = (http, loop)
                weakref.finalize(self, _close_pool, http, loop)
            return self._pool

    def _tls_locked(self) -> ssl.SSLContext:
        """One TLS context for the provider: building one costs tens of milliseconds (the caller
        holds ``client_stats.lock``)."""
        if self._ssl_context is None:
            self._ssl_context = httpx.create_ssl_context()
        return self._ssl_context

    @property
    def breaker(self) -> Breaker:
        with self.client_stats.lock:
            if self._breaker is None:
                self._breaker = Breaker(self.breaker_failures, self.breaker_cooldown_seconds)
            return self._breaker

    def _request_slots(self) -> RequestSlots:
        with self.client_stats.lock:
            if self._slots is None or self._slots.size != self.concurrency:
                self._slots = RequestSlots(self.concurrency)
            return self._slots

    def findings(self, payload: dict[str, Any]) -> Findings:
        org = NppesOrg.from_payload(payload)
        descriptions = load_nucc_descriptions(self.taxonomy_csv) if self.taxonomy_csv else None
        classification = classify(list(org.taxonomies), descriptions)
        fields: dict[str, Any] = {"npi": org.npi, "company_name": org.name, "state": org.state or None,
                                  "location_count": org.location_count or None}
        facts: dict[str, Any] = {"nppes_npi": org.npi, "nppes_last_updated": payload.get("last_updated")}
        if classification:
            kind = next((k for k in (federal_kind_of_name(n, classification) for n in (org.name, *org.other_names)) if k),
                        classification.org_kind)
            fields.update(specialty=classification.specialty, org_type=classification.org_type,
                          care_setting=classification.care_setting, org_kind=kind)
            facts.update(nppes_category=classification.category, nppes_taxonomy_code=classification.code)
        return Findings(fields, f"npi:{org.npi}", org.official or None, facts)

    def stats(self) -> dict[str, int]:
        return {"requests": self.client_stats.requests, "retries": self.client_stats.retries,
                "max_in_flight": self.client_stats.max_in_flight, "searches_reused": self._memo.hits}

    async def _fetch_one(self, client: NppesClient, key: LookupKey) -> Lookup:
        breaker = self.breaker
        if breaker.is_open():
            return Lookup("error", note=f"NPPES: skipped {key.label}: registry unavailable ({self.breaker_failures} failed lookups in a row)")
        try:
            lookup = await (self._by_npi(client, key) if "number" in key.query else self._by_name(client, key))
        except (NppesError, NppesTransientError, httpx.HTTPError) as error:
            if _registry_down(error):
                breaker.failed()
            return Lookup("error", note=f"NPPES: lookup failed for {key.label}: {_describe(error)}")
        breaker.succeeded()
        return lookup

    async def _by_npi(self, client: NppesClient, key: LookupKey) -> Lookup:
        records = records_of(await client.get({"number": key.query["number"]}))
        orgs = [parse_record(r) for r in records]
        if not orgs:
            return Lookup("miss", note=f"NPPES: {key.label} not found")
        org = orgs[0]
        if not org.is_organization:
            return Lookup("miss", note=f"NPPES: {key.label} is an individual ({org.enumeration_type}), not an organization")
        return Lookup("found", org.to_payload(), 1.0)

    async def _by_name(self, client: NppesClient, key: LookupKey) -> Lookup:
        """A short waterfall of ``query_plan`` searches (at most ``max_queries``), scored over
        every record found so far; it stops after the group that gives a match or an ambiguous one."""
        name, state = key.query["name"], key.query["state"]
        city = key.query.get("city") or key.query.get("city_hint")
        params = {"state": state, "enumeration_type": "NPI-2"}
        if key.query.get("city"):
            params["city"] = key.query["city"]
        found: dict[str, Mapping[str, Any]] = {}
        truncated = False
        decision = MatchDecision(None, 0.0, f"NPPES: no organization found for {name!r} in {state}")
        for group in query_plan(name, city, self.max_queries):
            before = len(found)
            for organization_name in group:
                records, cut = await client.search({"organization_name": organization_name, **params})
                truncated = truncated or cut
                for record in records:
                    found.setdefault(clean(record.get("number")), record)
            if len(found) == before:
                continue
            decision = pick_match_near(list(found.values()), name, state, city, self.match_threshold, self.ambiguity_margin)
            if decision.org is not None or decision.ambiguous:
                break
        reach = f" (search stopped at the API's reach, at most {PAGE_LIMIT + MAX_SKIP:,} results; more may exist)" if truncated else ""
        if decision.org is None:
            return Lookup("miss", confidence=decision.confidence, note=f"{decision.note}{reach}")
        note = f"NPPES: matched {key.label}{reach}" if truncated else None
        aliases = (f"npi:{decision.org.npi}",)
        return Lookup("found", decision.org.to_payload(), decision.confidence, note, aliases=aliases)


def _close_pool(http: KeepAliveTransport, loop: LoopThread) -> None:
    """Close the pooled connections on their loop, then end the loop's thread."""
    loop.close(before=http.aclose())


def _registry_down(error: BaseException) -> bool:
    """A failure that says the registry is unreachable, not that this one query was bad."""
    return not isinstance(error, NppesError) or str(error).startswith("non-JSON")


def _describe(error: BaseException) -> str:
    if isinstance(error, httpx.TimeoutException):
        return "timed out"
    if isinstance(error, httpx.HTTPError):
        return f"{type(error).__name__}"
    return str(error)
