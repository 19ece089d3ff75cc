"""The webhook tests use the shipped mappings and model, whatever an earlier in-process CLI test
left in the environment (``configure_run`` sets ``LEADFLOW_MAPPING_<CRM>`` / ``LEADFLOW_MODEL``)."""

import pytest


@pytest.fixture(autouse=True)
def shipped_mappings(monkeypatch):
    for name in ("LEADFLOW_MAPPING_HUBSPOT", "LEADFLOW_MAPPING_SALESFORCE", "LEADFLOW_MODEL"):
        monkeypatch.delenv(name, raising=False)
