from __future__ import annotations

import pytest
from enrichment_support import NPPES_FIXTURES


@pytest.fixture(scope="session", autouse=True)
def _fixtures_present() -> None:
    if not NPPES_FIXTURES.is_dir():
        pytest.skip(f"NPPES fixtures not found at {NPPES_FIXTURES}")
