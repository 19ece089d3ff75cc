"""In-memory record tables with the indexes the sandbox's hot paths need.

A ``Table`` keeps records as plain dicts keyed by id, plus:

- a ``SortedList`` of ``(modified_ms, sort_key, id)``, so "changed since T, oldest first" is a
  bisect and a slice instead of a scan and a sort, and moving a written record costs O(log n)
  (a plain sorted list's ``del`` moved the entries after it: 33 us a write at 500,000 records);
- a sorted list of sort keys (creation order), for id-ordered paging;
- equality indexes built on first use per field and maintained on every write.
"""

from __future__ import annotations

import time
from bisect import bisect_left, bisect_right, insort
from collections.abc import Callable, Hashable, Iterable, Iterator
from datetime import datetime, timezone
from functools import partial
from typing import Any

from sortedcontainers import SortedList

_last_ms = 0


def now_ms() -> int:
    """Wall-clock epoch milliseconds, never going backwards within the process."""
    global _last_ms
    ms = int(time.time() * 1000)
    if ms < _last_ms:
        ms = _last_ms
    _last_ms = ms
    return ms


def iso_z(ms: int) -> str:
    """HubSpot's datetime rendering: ``2024-01-05T12:34:56.789Z``."""
    t = time.gmtime(ms // 1000)
    return "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ" % (t.tm_year, t.tm_mon, t.tm_mday, t.tm_hour, t.tm_min, t.tm_sec,
                                                   ms % 1000)


def iso_sf(ms: int) -> str:
    """Salesforce's datetime rendering: ``2024-01-05T12:34:56.000+0000``."""
    t = time.gmtime(ms // 1000)
    return "%04d-%02d-%02dT%02d:%02d:%02d.%03d+0000" % (t.tm_year, t.tm_mon, t.tm_mday, t.tm_hour, t.tm_min,
                                                       t.tm_sec, ms % 1000)


def parse_datetime_ms(value: str) -> int | None:
    """Epoch ms from an ISO-8601 string (``Z`` or offset, date only allowed) or an epoch-ms string."""
    text = value.strip()
    if not text:
        return None
    if text.lstrip("-").isdigit():
        return int(text)
    try:
        if text.endswith("Z"):
            text = text[:-1] + "+00:00"
        if len(text) >= 5 and text[-5] in "+-" and text[-3] != ":" and "T" in text:
            text = text[:-2] + ":" + text[-2:]
        dt = datetime.fromisoformat(text)
    except ValueError:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return int(dt.timestamp() * 1000)


class Table:
    """Records of one object type; see the module docstring."""

    def __init__(self, name: str, sort_key: Callable[[str], Any] = str):
        self.name = name
        self.sort_key = sort_key
        self.records: dict[str, dict[str, Any]] = {}
        self.modified: dict[str, int] = {}
        self.created: dict[str, int] = {}
        self._by_mod: SortedList = SortedList()
        self._by_id: list[tuple[Any, str]] = []
        self._ids_sorted = True
        self._eq: dict[str, dict[Hashable, set[str]]] = {}
        self._eq_key: dict[str, Callable[[Any], Hashable]] = {}
        # called after each insert/update with (table name, id, fields written, created?): sandbox/notify.py
        self.on_write: Callable[[str, str, dict[str, Any], bool], None] | None = None

    def __len__(self) -> int:
        return len(self.records)

    def __contains__(self, record_id: str) -> bool:
        return record_id in self.records

    def get(self, record_id: str) -> dict[str, Any] | None:
        return self.records.get(record_id)

    def bulk_load(self, rows: Iterable[tuple[str, dict[str, Any], int, int]]) -> None:
        """Insert many ``(id, record, created_ms, modified_ms)`` rows, sorting the indexes once."""
        entries: list[tuple[int, Any, str]] = []
        for record_id, record, created, modified in rows:
            self.records[record_id] = record
            self.created[record_id] = created
            self.modified[record_id] = modified
            key = self.sort_key(record_id)
            entries.append((modified, key, record_id))
            self._by_id.append((key, record_id))
        self._by_mod.update(entries)
        self._by_id.sort()
        for field in list(self._eq):
            self._build_eq(field)

    def insert(self, record_id: str, record: dict[str, Any], created: int, modified: int) -> None:
        self.records[record_id] = record
        self.created[record_id] = created
        self.modified[record_id] = modified
        key = self.sort_key(record_id)
        self._by_mod.add((modified, key, record_id))
        entry = (key, record_id)
        if self._by_id and self._by_id[-1] > entry:
            insort(self._by_id, entry)
        else:
            self._by_id.append(entry)
        for field, index in self._eq.items():
            value = self._eq_key[field](record.get(field))
            index.setdefault(value, set()).add(record_id)
        if self.on_write is not None:
            self.on_write(self.name, record_id, record, True)

    def update(self, record_id: str, changes: dict[str, Any], modified: int) -> None:
        """Apply ``changes`` (None deletes a field) and move the record in the time index."""
        record = self.records[record_id]
        for field, index in self._eq.items():
            if field in changes:
                old = self._eq_key[field](record.get(field))
                bucket = index.get(old)
                if bucket is not None:
                    bucket.discard(record_id)
        for field, value in changes.items():
            if value is None:
                record.pop(field, None)
            else:
                record[field] = value
        for field, index in self._eq.items():
            if field in changes:
                index.setdefault(self._eq_key[field](record.get(field)), set()).add(record_id)
        self.touch(record_id, modified)
        if self.on_write is not None:
            self.on_write(self.name, record_id, changes, False)

    def touch(self, record_id: str, modified: int) -> None:
        old = self.modified[record_id]
        key = self.sort_key(record_id)
        if old != modified:
            self._by_mod.discard((old, key, record_id))
            self._by_mod.add((modified, key, record_id))
            self.modified[record_id] = modified

    def by_modified(self, low: int | None = None, low_inclusive: bool = True,
                    high: int | None = None, high_inclusive: bool = False) -> list[tuple[int, Any, str]]:
        """Index entries with ``low <(=) modified <(=) high``, oldest first."""
        return _between(self._by_mod, low, low_inclusive, high, high_inclusive)

    def by_key(self, low: Any = None, low_inclusive: bool = True, high: Any = None,
               high_inclusive: bool = True) -> list[tuple[Any, str]]:
        """Id-index entries with ``low <(=) sort_key <(=) high``, in id order."""
        return _between(self._by_id, low, low_inclusive, high, high_inclusive)

    def ids_in_order(self) -> list[tuple[Any, str]]:
        return self._by_id

    def ids_from(self, key: Any, inclusive: bool) -> Iterator[str]:
        index = self._by_id
        start = bisect_left(index, (key,)) if inclusive else bisect_right(index, (key, _Top()))
        for position in range(start, len(index)):
            yield index[position][1]

    def lookup(self, field: str, key: Hashable, normalize: Callable[[Any], Hashable] = lambda v: v) -> set[str]:
        """Ids whose ``normalize(record[field])`` equals ``key``, via an index built on first use
        (one ``normalize`` per field: the first one given)."""
        if field not in self._eq:
            self._eq_key[field] = normalize
            self._build_eq(field)
        return self._eq[field].get(key, set())

    def _build_eq(self, field: str) -> None:
        normalize = self._eq_key[field]
        index: dict[Hashable, set[str]] = {}
        for record_id, record in self.records.items():
            index.setdefault(normalize(record.get(field)), set()).add(record_id)
        self._eq[field] = index


class IdColumn:
    """A read-only view of one column of index entries: ``len`` and slicing without copying ids."""

    def __init__(self, entries: list[tuple[Any, ...]], column: int):
        self.entries, self.column = entries, column

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, item: slice) -> list[str]:
        column = self.column
        return [entry[column] for entry in self.entries[item]]

    def __iter__(self) -> Iterator[str]:
        column = self.column
        return (entry[column] for entry in self.entries)

    def reversed(self) -> "IdColumn":
        return IdColumn(self.entries[::-1], self.column)


class _Top:
    """Compares greater than anything: ``(t, _Top())`` sorts after every ``(t, ...)`` entry."""

    def __lt__(self, other: object) -> bool:
        return False

    def __gt__(self, other: object) -> bool:
        return True

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Top)

    __hash__ = object.__hash__


def _between(index: list | SortedList, low: Any, low_inclusive: bool, high: Any, high_inclusive: bool) -> list:
    """The entries of a sorted ``(key, ...)`` index whose key lies between ``low`` and ``high``."""
    if isinstance(index, SortedList):
        left, right = index.bisect_left, index.bisect_right
    else:
        left, right = partial(bisect_left, index), partial(bisect_right, index)
    start = 0
    if low is not None:
        start = left((low,)) if low_inclusive else right((low, _Top()))
    stop = len(index)
    if high is not None:
        stop = right((high, _Top())) if high_inclusive else left((high,))
    return index[start:stop] if start < stop else []
