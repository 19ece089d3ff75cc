"""Injected faults and rate limits: the SPEC syntax, its parser, and the per-request decisions.

Fault SPEC: rules separated by ``;``; a rule is ``TARGET:PARAM,PARAM,...``.

- ``TARGET`` is an endpoint name (``hubspot.contacts.batch_update``, ``hubspot.tasks.batch_upsert``,
  ``salesforce.composite.upsert``; sandbox/README.md lists them) or an ``fnmatch`` glob
  (``hubspot.*``, ``*``). ``salesforce.session`` is the target of session expiry.
- exactly one action:

  ``status=CODE``          answer CODE with the API's own error body (429 bodies name
                           ``TEN_SECONDLY_ROLLING`` for HubSpot; Salesforce 403s are
                           ``REQUEST_LIMIT_EXCEEDED``); ``retry_after=SECONDS`` adds a
                           ``Retry-After`` header (HubSpot documents none on its 429s; proxies
                           and 503s send one)
  ``delay=SECONDS``        answer normally after SECONDS (a slow API)
  ``timeout=SECONDS``      hold the request SECONDS (longer than the client's timeout), then
                           process it anyway, as a real server would: a write still happens
                           (an upsert too), after the client has given up and perhaps retried
  ``drop``                 close the connection without an answer; the request is not applied
  ``drop=after``           apply the request, then close the connection without an answer
  ``record_error=CODE``    per-record failure in a batch write (Salesforce SaveResult
                           ``statusCode`` such as ``UNABLE_TO_LOCK_ROW``; a HubSpot 207 error
                           ``category`` such as ``OBJECT_NOT_FOUND``); optional ``message=TEXT``
  ``expire_after=N``       (target ``salesforce.session``) every session dies after N API calls

- selectors (all optional; without any, every matching request is hit):

  ``rate=F``     a fraction 0..1 of matching requests (or records, for ``record_error``),
                 drawn from a generator seeded by the fault seed and the rule's position,
                 so the same requests in the same order get the same faults
  ``ids=A|B``    only requests that touch one of these record ids (or, for
                 ``record_error``, only these records)
  ``count=N``    at most N hits, then the rule is spent
  ``skip=N``     let the first N matching requests through

Example: ``hubspot.contacts.batch_update:status=500,rate=0.2;salesforce.composite.update:record_error=UNABLE_TO_LOCK_ROW,ids=00Q..1|00Q..2``

Rate-limit SPEC: comma-separated ``NAME=VALUE``:
``hubspot=190/10s`` (burst, per rolling window; ``s`` or ``ms``), ``hubspot_daily=625000``,
``hubspot_search=5/1s`` (the search bucket; off unless given), ``salesforce_daily=15000``.
A limit that is not given is not enforced; its headers still show HubSpot Professional /
Salesforce Enterprise defaults (190/10 s, 625,000/day; 100,000/day).
"""

from __future__ import annotations

import fnmatch
import random
import re
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

ACTIONS = ("status", "delay", "timeout", "drop", "record_error", "expire_after")


class SpecError(ValueError):
    """A fault or rate-limit SPEC that does not parse; the message names the rule."""


@dataclass
class FaultRule:
    target: str
    action: str
    value: Any = None
    rate: float | None = None
    ids: frozenset[str] | None = None
    count: int | None = None
    skip: int = 0
    message: str | None = None
    retry_after: float | None = None  # with status: a Retry-After header of this many seconds
    hits: int = 0
    seen: int = 0
    rng: random.Random = field(default_factory=random.Random, repr=False)

    def matches(self, endpoint: str) -> bool:
        return self.target == endpoint or fnmatch.fnmatchcase(endpoint, self.target)

    def spent(self) -> bool:
        return self.count is not None and self.hits >= self.count

    def draw(self) -> bool:
        """One deterministic trial against ``rate`` (True when no rate is set)."""
        return self.rate is None or self.rng.random() < self.rate

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"target": self.target, self.action: self.value}
        for key in ("rate", "count", "message", "retry_after"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        if self.ids is not None:
            out["ids"] = sorted(self.ids)
        if self.skip:
            out["skip"] = self.skip
        out["hits"] = self.hits
        return out


def parse_fault_spec(spec: str | list[dict[str, Any]] | None, seed: int = 0) -> list[FaultRule]:
    """Rules from the text SPEC (module docstring) or its JSON form, a list of objects
    ``{"target": ..., "<action>": value, "rate"?, "ids"? (list or "a|b"), "count"?, "skip"?, "message"?}``."""
    if not spec:
        return []
    raw_rules = _split_text_spec(spec) if isinstance(spec, str) else [dict(rule) for rule in spec]
    rules = []
    for position, raw in enumerate(raw_rules):
        rule = _build_rule(raw, position)
        rule.rng = random.Random(f"{seed}:{position}:{rule.target}:{rule.action}")
        rules.append(rule)
    return rules


def _split_text_spec(spec: str) -> list[dict[str, Any]]:
    out = []
    for chunk in spec.split(";"):
        chunk = chunk.strip()
        if not chunk:
            continue
        target, sep, params = chunk.partition(":")
        if not sep or not target.strip():
            raise SpecError(f"fault rule {chunk!r}: expected TARGET:PARAM[,PARAM...]")
        raw: dict[str, Any] = {"target": target.strip()}
        for param in params.split(","):
            param = param.strip()
            if not param:
                continue
            key, has_value, value = param.partition("=")
            raw[key.strip()] = value.strip() if has_value else True
        out.append(raw)
    return out


def _build_rule(raw: dict[str, Any], position: int) -> FaultRule:
    where = f"fault rule {position + 1} ({raw.get('target', '?')})"
    target = str(raw.pop("target", "") or "").strip()
    if not target:
        raise SpecError(f"{where}: missing target")
    actions = [key for key in ACTIONS if key in raw]
    if len(actions) != 1:
        raise SpecError(f"{where}: expected exactly one of {', '.join(ACTIONS)}")
    action = actions[0]
    value = raw.pop(action)
    rule = FaultRule(target=target, action=action, value=_action_value(action, value, where))
    for key, val in raw.items():
        if key == "rate":
            rule.rate = _number(val, where, key, float)
            if not 0 <= rule.rate <= 1:
                raise SpecError(f"{where}: rate must be between 0 and 1")
        elif key == "ids":
            items = val if isinstance(val, list) else str(val).split("|")
            rule.ids = frozenset(str(item).strip() for item in items if str(item).strip())
        elif key in ("count", "skip"):
            setattr(rule, key, _number(val, where, key, int))
        elif key == "message":
            rule.message = str(val)
        elif key == "retry_after" and action == "status":
            rule.retry_after = _number(val, where, key, float)
        else:
            raise SpecError(f"{where}: unknown parameter {key!r}")
    return rule


def _action_value(action: str, value: Any, where: str) -> Any:
    if action == "status":
        return _number(value, where, action, int)
    if action in ("delay", "timeout"):
        return _number(value, where, action, float)
    if action == "expire_after":
        return _number(value, where, action, int)
    if action == "drop":
        if value in (True, "true", "before", ""):
            return "before"
        if value == "after":
            return "after"
        raise SpecError(f"{where}: drop takes no value or 'after'")
    if value is True or not str(value).strip():
        raise SpecError(f"{where}: {action} needs a value")
    return str(value).strip()


def _number(value: Any, where: str, key: str, kind: type) -> Any:
    try:
        return kind(value)
    except (TypeError, ValueError):
        raise SpecError(f"{where}: {key}={value!r} is not a number") from None


@dataclass
class Decision:
    """What the fault layer decided for one request."""

    status: int | None = None
    message: str | None = None
    delay: float = 0.0
    drop: str | None = None
    retry_after: float | None = None


class FaultSet:
    """The active rules; ``decide`` is called once per request, ``record_errors`` per batch write."""

    def __init__(self, rules: list[FaultRule] | None = None):
        self.rules = rules or []

    def decide(self, endpoint: str, ids: Callable[[], set[str]] | None = None) -> Decision:
        """``ids`` returns the record ids the request touches (called only when a rule needs them)."""
        decision = Decision()
        touched: set[str] | None = None
        for rule in self.rules:
            if rule.action in ("record_error", "expire_after") or not rule.matches(endpoint):
                continue
            if rule.spent():
                continue
            if rule.ids is not None:
                if touched is None:
                    touched = ids() if ids else set()
                if not rule.ids & touched:
                    continue
            rule.seen += 1
            if rule.seen <= rule.skip or not rule.draw():
                continue
            rule.hits += 1
            if rule.action == "status" and decision.status is None:
                decision.status, decision.message, decision.retry_after = rule.value, rule.message, rule.retry_after
            elif rule.action in ("delay", "timeout"):
                decision.delay += rule.value
            elif rule.action == "drop" and decision.drop is None:
                decision.drop = rule.value
        return decision

    def record_errors(self, endpoint: str, ids: list[str]) -> dict[str, tuple[str, str | None]]:
        """``{record id: (code, message)}`` for the records of a batch write that must fail."""
        out: dict[str, tuple[str, str | None]] = {}
        for rule in self.rules:
            if rule.action != "record_error" or not rule.matches(endpoint):
                continue
            for record_id in ids:
                if rule.spent() or record_id in out:
                    continue
                if rule.ids is not None and record_id not in rule.ids:
                    continue
                rule.seen += 1
                if rule.seen <= rule.skip or not rule.draw():
                    continue
                rule.hits += 1
                out[record_id] = (rule.value, rule.message)
        return out

    def session_budget(self) -> int | None:
        for rule in self.rules:
            if rule.action == "expire_after" and rule.matches("salesforce.session"):
                return int(rule.value)
        return None

    def to_list(self) -> list[dict[str, Any]]:
        return [rule.to_dict() for rule in self.rules]


_RATE = re.compile(r"^\s*(\d+)\s*/\s*(\d+(?:\.\d+)?)\s*(ms|s)\s*$")


@dataclass
class RateLimits:
    hubspot_max: int | None = None
    hubspot_interval_ms: int = 10_000
    hubspot_daily: int | None = None
    hubspot_search_max: int | None = None
    hubspot_search_interval_ms: int = 1_000
    salesforce_daily: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def parse_rate_limits(spec: str | dict[str, Any] | None) -> RateLimits:
    """``hubspot=190/10s,hubspot_daily=625000,hubspot_search=5/1s,salesforce_daily=15000``
    (or the same as a JSON object)."""
    limits = RateLimits()
    if not spec:
        return limits
    items = spec.items() if isinstance(spec, dict) else (
        part.split("=", 1) if "=" in part else (part, "") for part in spec.split(",") if part.strip()
    )
    for key, value in items:
        key, value = str(key).strip(), str(value).strip()
        if key in ("hubspot", "hubspot_search"):
            match = _RATE.match(value)
            if not match:
                raise SpecError(f"rate limit {key}={value!r}: expected N/10s or N/1000ms")
            count, span, unit = int(match[1]), float(match[2]), match[3]
            interval = int(span * (1000 if unit == "s" else 1))
            if key == "hubspot":
                limits.hubspot_max, limits.hubspot_interval_ms = count, interval
            else:
                limits.hubspot_search_max, limits.hubspot_search_interval_ms = count, interval
        elif key in ("hubspot_daily", "salesforce_daily"):
            try:
                setattr(limits, key, int(value))
            except ValueError:
                raise SpecError(f"rate limit {key}={value!r}: expected an integer") from None
        else:
            raise SpecError(f"rate limit {key!r}: expected hubspot, hubspot_daily, hubspot_search or salesforce_daily")
    return limits


class RollingWindow:
    """Requests in the last ``interval_ms``: HubSpot's TEN_SECONDLY_ROLLING policy."""

    def __init__(self) -> None:
        self._stamps: deque[float] = deque()

    def count(self, interval_ms: int, now: float | None = None) -> int:
        now = time.monotonic() if now is None else now
        horizon = now - interval_ms / 1000
        while self._stamps and self._stamps[0] <= horizon:
            self._stamps.popleft()
        return len(self._stamps)

    def add(self, now: float | None = None) -> None:
        self._stamps.append(time.monotonic() if now is None else now)

    def clear(self) -> None:
        self._stamps.clear()
