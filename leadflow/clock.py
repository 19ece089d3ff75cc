"""UTC time, one way: every timestamp leadflow stores or compares is an aware UTC datetime."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def utc(value: datetime | None) -> datetime | None:
    """``value`` in UTC; a naive value (SQLite hands stored datetimes back naive) is taken as UTC."""
    if value is None:
        return None
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


def utc_if_datetime(value: Any) -> Any:
    """``utc(value)`` for a datetime; any other value (a stored number, text or None) unchanged."""
    return utc(value) if isinstance(value, datetime) else value
