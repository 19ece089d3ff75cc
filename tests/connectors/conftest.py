"""Fixtures for the connector tests: a running sandbox, state engines, fast retries."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest



@pytest.fixture()
def sandbox() -> Iterator[Any]:
    from sandbox import start_sandbox

    with start_sandbox() as running:
        yield running


@pytest.fixture()
def engine(sqlite_url):
    from state.schema import make_engine

    eng = make_engine(sqlite_url)
    yield eng
    eng.dispose()
