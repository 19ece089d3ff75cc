"""Page progress of a run, for whoever listens in the same process (the CLI prints it).

``flows.sync`` calls ``page_done`` after each page is settled; with no listener it costs one empty
loop. A deployment run has no listener: its progress is in the Prefect UI (logs and, for backfills,
a progress artifact).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class PageProgress:
    crm: str
    pages: int  # pages settled so far in this run
    leads: int  # leads read so far
    cursor: datetime | None  # the last-modified time the window has been read up to


Listener = Callable[[PageProgress], None]
_listeners: list[Listener] = []


def listen(listener: Listener) -> Callable[[], None]:
    """Add ``listener``; the function that removes it."""
    _listeners.append(listener)
    return lambda: _listeners.remove(listener) if listener in _listeners else None


def page_done(crm: str, pages: int, leads: int, cursor: datetime | None) -> None:
    event = PageProgress(crm, pages, leads, cursor)
    for listener in list(_listeners):
        try:
            listener(event)
        except Exception:  # noqa: BLE001 - a display problem never fails a run
            pass
