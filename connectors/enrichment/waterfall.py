"""Firmographic enrichment: providers in configured order, each filling the fields still blank.

``build_waterfall()`` reads ``connectors/enrichment/enrichment.yaml`` (or a given path) and returns a
``Waterfall``; ``Waterfall.enrich_batch(leads, now)`` returns one ``EnrichmentOutcome`` per lead:
a copy of the lead with filled fields, which provider set each field (when, from which record,
with what match confidence), notes explaining what was not enriched, and a contact hint.

A provider turns a lead into lookup keys (most specific first), fetches a batch of distinct keys
at once, and derives canonical fields from what it fetched. Found values and misses are cached in
the state store by provider and key, so a backfill never looks the same organization up twice.
Patient leads are never enriched, and notes never carry patient data.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections import Counter
from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any

import yaml
from sqlalchemy import Engine

from connectors.enrichment.base import (  # noqa: F401 - the providers' contract, re-exported
    ENRICHABLE_FIELDS,
    EnrichmentProvider,
    Findings,
    Lookup,
    LookupKey,
)
from state.cache import DEFAULT_MISS_TTL, DEFAULT_TTL, EnrichmentCache, as_utc
from leadflow.canonical import CareSetting, Lead, LeadKind, OrgKind, OrgType, coerce_enum
from state.schema import engine_for

logger = logging.getLogger(__name__)

DEFAULT_CONFIG_PATH = Path(__file__).with_name("enrichment.yaml")
class FieldPolicy(StrEnum):
    fill_blank = "fill_blank"  # only when the lead has no value yet
    higher_confidence = "higher_confidence"  # also over an earlier provider's value of lower confidence
    overwrite = "overwrite"  # always, even over the CRM's value
    never = "never"


@dataclass(frozen=True)
class Provenance:
    provider: str
    at: datetime  # when this run set the field
    confidence: float
    source_key: str  # e.g. "nppes:npi:1568946812", "reference:row:12"
    fetched_at: datetime | None = None  # when the provider's data was looked up (cache age)


@dataclass
class EnrichmentOutcome:
    lead: Lead
    provenance: dict[str, Provenance] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    contact_hint: dict[str, str] | None = None
    facts: dict[str, Any] = field(default_factory=dict)  # no canonical field: category, taxonomy code ...

    @property
    def filled(self) -> list[str]:
        return sorted(self.provenance)


@dataclass
class _Working:
    original: Lead
    values: dict[str, Any]
    outcome: EnrichmentOutcome


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


class Waterfall:
    def __init__(
        self,
        providers: Sequence[EnrichmentProvider],
        cache: EnrichmentCache | None = None,
        field_policy: Mapping[str, FieldPolicy | str] | None = None,
        default_policy: FieldPolicy | str = FieldPolicy.fill_blank,
    ) -> None:
        self.providers = list(providers)
        self.cache = cache
        self.default_policy = FieldPolicy(default_policy)
        self.field_policy = {name: FieldPolicy(policy) for name, policy in (field_policy or {}).items()}
        self._counts: dict[str, Counter[str]] = {p.name: Counter() for p in self.providers}
        self._leads: Counter[str] = Counter()
        self._lock = threading.Lock()  # flows call enrich_batch from several threads at once
        self._in_flight: dict[tuple[str, str], Future] = {}

    def policy(self, field_name: str) -> FieldPolicy:
        return self.field_policy.get(field_name, self.default_policy)

    def enrich_batch(self, leads: Sequence[Lead], now: datetime) -> list[EnrichmentOutcome]:
        """Sync entry point for flows: runs its own event loop (in a helper thread if this thread
        already runs one)."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(self.enrich_batch_async(leads, now))
        with ThreadPoolExecutor(max_workers=1) as pool:
            return pool.submit(asyncio.run, self.enrich_batch_async(leads, now)).result()

    async def enrich_batch_async(self, leads: Sequence[Lead], now: datetime) -> list[EnrichmentOutcome]:
        now = as_utc(now)
        work = [self._start(lead) for lead in leads]
        for provider in self.providers:
            await self._run_provider(provider, [w for w in work if w.original.lead_kind is LeadKind.b2b], now)
        outcomes = [self._finish(w) for w in work]
        filled = [len(o.provenance) for o in outcomes if o.provenance]
        self._count_leads(leads=len(work), patient_leads_skipped=len(work) - sum(
            1 for w in work if w.original.lead_kind is not LeadKind.patient),
            leads_enriched=len(filled), fields_filled=sum(filled))
        return outcomes

    def stats(self) -> dict[str, Any]:
        """Totals since this waterfall was built (lookups, requests, cache hits and misses, lookups
        shared with a concurrent batch, found, no_match, errors, leads ...) and per provider."""
        with self._lock:
            by_provider = {p.name: {**self._counts[p.name], **p.stats()} for p in self.providers}
            leads = dict(self._leads)
        totals: Counter[str] = Counter()
        for counts in by_provider.values():
            totals.update({k: v for k, v in counts.items() if k in _TOTALLED})
        return {**{k: totals.get(k, 0) for k in _TOTALLED}, **leads, "by_provider": by_provider}

    def _start(self, lead: Lead) -> _Working:
        outcome = EnrichmentOutcome(lead=lead)
        if lead.lead_kind is LeadKind.patient:
            outcome.notes.append("patient lead: not enriched")
        values = {name: getattr(lead, name) for name in ENRICHABLE_FIELDS}
        return _Working(lead, values, outcome)

    def _finish(self, work: _Working) -> EnrichmentOutcome:
        outcome = work.outcome
        if outcome.provenance:
            outcome.lead = _copy_lead(work.original, {name: work.values[name] for name in outcome.provenance})
        return outcome

    def _count_leads(self, **counts: int) -> None:
        with self._lock:
            self._leads.update({k: v for k, v in counts.items() if v})

    def _wants(self, provider: EnrichmentProvider, work: _Working) -> bool:
        return any(self._may_set(name, work, provider, confidence=1.0) for name in provider.fillable)

    def _may_set(self, name: str, work: _Working, provider: EnrichmentProvider, confidence: float) -> bool:
        policy = self.policy(name)
        if policy is FieldPolicy.never or name not in provider.fillable:
            return False
        if policy is FieldPolicy.overwrite or _blank(work.values.get(name)):
            return True
        earlier = work.outcome.provenance.get(name)
        return policy is FieldPolicy.higher_confidence and earlier is not None and earlier.confidence < confidence

    async def _run_provider(self, provider: EnrichmentProvider, work: list[_Working], now: datetime) -> None:
        pending: dict[int, list[LookupKey]] = {}
        for index, item in enumerate(work):
            if not self._wants(provider, item):
                continue
            keys = provider.lookup_keys(item.original)
            if keys:
                pending[index] = keys
            else:
                item.outcome.notes.append(f"{provider.label}: not looked up (needs {provider.key_requirement})")
        while pending:
            wanted: dict[str, LookupKey] = {}
            for keys in pending.values():
                wanted.setdefault(keys[0].cache_key, keys[0])
            results = await self._resolve(provider, wanted, now)
            retry: dict[int, list[LookupKey]] = {}
            findings: dict[str, Findings] = {}
            for index, keys in pending.items():
                lookup = results[keys[0].cache_key]
                if lookup.status == "found":
                    if keys[0].cache_key not in findings:
                        findings[keys[0].cache_key] = provider.findings(lookup.payload or {})
                    self._apply(provider, work[index], lookup, findings[keys[0].cache_key], now)
                    continue
                work[index].outcome.notes.append(_miss_note(provider, keys[0], lookup))
                if len(keys) > 1:
                    retry[index] = keys[1:]
            pending = retry

    async def _resolve(self, provider: EnrichmentProvider, wanted: dict[str, LookupKey], now: datetime) -> dict[str, Lookup]:
        """Each wanted key from the cache, from a lookup another batch has in flight, or fetched;
        fetched results are cached before other batches waiting on them are released."""
        claimed, waiting = self._claim(provider, wanted)
        try:
            results = self._from_cache(provider, claimed, now)
            to_fetch = [key for name, key in claimed.items() if name not in results]
            results.update(await self._fetch(provider, to_fetch, now))
        except Exception as error:  # noqa: BLE001 - enrichment is optional: a provider failure never fails the page
            failure = _failed(provider, error)
            results = {name: failure for name in claimed}
            self._count(provider, errors=len(claimed))
        except BaseException as error:
            failure = _failed(provider, error)
            self._release(provider, {name: failure for name in claimed})
            raise
        self._release(provider, results)
        self._count(provider, shared_lookups=len(waiting))
        for name, future in waiting.items():
            results[name] = await asyncio.wrap_future(future)
        return results

    def _claim(self, provider: EnrichmentProvider, wanted: dict[str, LookupKey]) -> tuple[dict[str, LookupKey], dict[str, Future]]:
        claimed: dict[str, LookupKey] = {}
        waiting: dict[str, Future] = {}
        with self._lock:
            for name, key in wanted.items():
                running = self._in_flight.get((provider.name, name))
                if running is not None:
                    waiting[name] = running
                else:
                    self._in_flight[(provider.name, name)] = Future()
                    claimed[name] = key
        return claimed, waiting

    def _release(self, provider: EnrichmentProvider, results: dict[str, Lookup]) -> None:
        with self._lock:
            futures = {name: self._in_flight.pop((provider.name, name)) for name in results}
        for name, future in futures.items():
            future.set_result(results[name])

    def _from_cache(self, provider: EnrichmentProvider, claimed: dict[str, LookupKey], now: datetime) -> dict[str, Lookup]:
        if self.cache is None or not provider.cacheable or not claimed:
            return {}
        hits = {key: _from_cache(entry.payload, entry.fetched_at) for key, entry in self.cache.get_many(provider.name, claimed, now).items()}
        self._count(provider, cache_hits=len(hits), cache_misses=len(claimed) - len(hits))
        return hits

    async def _fetch(self, provider: EnrichmentProvider, keys: list[LookupKey], now: datetime) -> dict[str, Lookup]:
        if not keys:
            return {}
        fetched = await provider.fetch_many(keys)
        results: dict[str, Lookup] = {}
        outcomes: Counter[str] = Counter()
        for key in keys:
            lookup = fetched.get(key.cache_key) or Lookup("error", note=f"{provider.label}: no answer for {key.label}")
            results[key.cache_key] = Lookup(lookup.status, lookup.payload, lookup.confidence, lookup.note, now, aliases=lookup.aliases)
            outcomes[_OUTCOME_COUNTER[lookup.status]] += 1
        self._count(provider, lookups=len(keys), **outcomes)
        if self.cache is not None and provider.cacheable:
            self.cache.put_many(provider.name, _cacheable(results, keys), now)
        return results

    def _count(self, provider: EnrichmentProvider, **counts: int) -> None:
        with self._lock:
            self._counts[provider.name].update(counts)

    def _apply(self, provider: EnrichmentProvider, work: _Working, lookup: Lookup, findings: Findings, now: datetime) -> None:
        outcome = work.outcome
        source_key = f"{provider.name}:{findings.source_key}"
        for name, raw in findings.fields.items():
            value = _canonical_value(name, raw)
            if _blank(value) or not self._may_set(name, work, provider, lookup.confidence):
                continue
            work.values[name] = value
            outcome.provenance[name] = Provenance(provider.name, now, round(lookup.confidence, 3), source_key, lookup.fetched_at)
        if findings.contact_hint and outcome.contact_hint is None:
            outcome.contact_hint = {**findings.contact_hint, "source": source_key}
        for name, value in findings.facts.items():
            outcome.facts.setdefault(name, value)
        if lookup.note:
            outcome.notes.append(lookup.note)


def _failed(provider: EnrichmentProvider, error: BaseException) -> Lookup:
    logger.warning("%s lookup failed: %s", provider.label, type(error).__name__, exc_info=error)
    return Lookup("error", note=f"{provider.label}: lookup failed ({type(error).__name__})")


def _copy_lead(lead: Lead, updates: dict[str, Any]) -> Lead:
    """A copy with ``updates``; its lists are its own (nested models are immutable in practice)."""
    lists = {name: list(getattr(lead, name)) for name in ("events", "reasons", "warnings")}
    return lead.model_copy(update={**lists, **updates})


def _canonical_value(name: str, value: Any) -> Any:
    enum = _ENUM_FIELDS.get(name)
    return coerce_enum(enum, value) if enum is not None and value is not None else value


_ENUM_FIELDS = {"org_type": OrgType, "org_kind": OrgKind, "care_setting": CareSetting}
_OUTCOME_COUNTER = {"found": "found", "miss": "no_match", "error": "errors"}
_TOTALLED = ("lookups", "requests", "cache_hits", "cache_misses", "shared_lookups", "found", "no_match", "errors")


def _from_cache(payload: dict[str, Any] | None, fetched_at: datetime) -> Lookup:
    if payload is None:
        return Lookup("miss", fetched_at=fetched_at, cached=True)
    return Lookup("found", payload.get("data"), float(payload.get("confidence", 0.0)), None, fetched_at, True)


def _cacheable(results: dict[str, Lookup], keys: Sequence[LookupKey]) -> dict[str, dict[str, Any] | None]:
    """Found payloads and misses to cache (errors are not), plus each found record's aliases."""
    entries: dict[str, dict[str, Any] | None] = {}
    for key in keys:
        lookup = results[key.cache_key]
        if lookup.status == "miss":
            entries[key.cache_key] = None
        elif lookup.status == "found":
            entries[key.cache_key] = {"data": lookup.payload, "confidence": lookup.confidence}
            for alias in lookup.aliases:
                entries.setdefault(alias, {"data": lookup.payload, "confidence": 1.0})
    return entries


def _miss_note(provider: EnrichmentProvider, key: LookupKey, lookup: Lookup) -> str:
    if lookup.note:
        return lookup.note
    when = f" (cached miss from {lookup.fetched_at:%Y-%m-%d})" if lookup.cached and lookup.fetched_at else ""
    return f"{provider.label}: no usable match for {key.label}{when}"


# --- configuration -----------------------------------------------------------------------------


def load_config(config_path: str | Path | None = None) -> dict[str, Any]:
    path = Path(config_path) if config_path else DEFAULT_CONFIG_PATH
    with open(path, encoding="utf-8") as handle:
        config = yaml.safe_load(handle) or {}
    config["_base_dir"] = str(path.resolve().parent)
    config["_path"] = str(path)
    return config


def build_waterfall(
    config_path: str | Path | None = None,
    engine: Engine | None = None,
    nppes_url: str | None = None,
) -> Waterfall:
    """A waterfall from the YAML config (default connectors/enrichment/enrichment.yaml) and the environment.

    ``engine`` is the state store for the cache (default: ``state.schema.engine_for()``);
    ``nppes_url`` overrides LEADFLOW_NPPES_URL.
    """
    config = load_config(config_path)
    providers = [_build_provider(spec, config, nppes_url) for spec in config.get("providers", [])]
    providers = [p for p in providers if p is not None]
    cache_config = config.get("cache") or {}
    cache = None
    if cache_config.get("enabled", True):
        cache = EnrichmentCache(
            engine or engine_for(None),
            ttl=timedelta(days=float(cache_config.get("ttl_days", DEFAULT_TTL.days))),
            miss_ttl=timedelta(days=float(cache_config.get("miss_ttl_days", DEFAULT_MISS_TTL.days))),
        )
    policies = dict(config.get("field_policy") or {})
    default_policy = policies.pop("default", FieldPolicy.fill_blank)
    unknown = set(policies) - ENRICHABLE_FIELDS
    if unknown:
        raise ValueError(f"enrichment config: field_policy names unknown fields {sorted(unknown)}")
    return Waterfall(providers, cache, policies, default_policy)


def _build_provider(spec: dict[str, Any], config: dict[str, Any], nppes_url: str | None) -> EnrichmentProvider | None:
    kind = spec.get("type")
    if spec.get("enabled", True) is False:
        return None
    if kind == "nppes":
        from connectors.enrichment.nppes import NppesProvider

        return NppesProvider.from_config(spec, base_dir=config["_base_dir"], url=nppes_url)
    if kind == "reference_file":
        from connectors.enrichment.reference import ReferenceFileProvider

        path = _resolve_path(spec.get("path"), config["_base_dir"])
        if path is None:
            return None
        if not path.exists():
            raise FileNotFoundError(f"enrichment config: reference file {path} does not exist")
        return ReferenceFileProvider.from_config({**spec, "path": str(path)}, base_dir=config["_base_dir"])
    if kind == "crm_industry":
        from connectors.enrichment.industry import IndustryProvider

        return IndustryProvider.from_config(spec, path=config.get("_path", "enrichment config"))
    raise ValueError(f"enrichment config: unknown provider type {kind!r}")


def _resolve_path(raw: str | None, base_dir: str) -> Path | None:
    """The configured path, or None when it is empty or names an unset environment variable."""
    expanded = os.path.expandvars(os.path.expanduser(str(raw or ""))).strip()
    if not expanded or "$" in expanded:
        return None
    path = Path(expanded)
    return path if path.is_absolute() else Path(base_dir) / path
