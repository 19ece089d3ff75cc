from __future__ import annotations

import pytest
from enrichment_support import NPPES_TEST_URL, registry_mock, registry_answer


@pytest.fixture()
def nppes_api():
    """respx serving the recorded records through the stand-in's search logic."""
    with registry_mock() as nppes_mock:
        yield nppes_mock.get(NPPES_TEST_URL).mock(side_effect=registry_answer)
