from __future__ import annotations

import pytest
import respx
from enrichment_support import KEEPALIVE, NPPES_TEST_URL, registry_answer


@pytest.fixture()
def nppes_api():
    """respx serving the recorded records through the stand-in's search logic."""
    with respx.mock(using=KEEPALIVE, assert_all_called=False) as nppes_mock:
        yield nppes_mock.get(NPPES_TEST_URL).mock(side_effect=registry_answer)
