"""CRM credentials blocks (``leadflow.credentials_blocks``) on the shared Prefect test server: typed
fields, secrets masked, read by the connector factory when the environment variables are absent."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from connectors.crm.factory import MissingCredential, connector_from_env
from leadflow.credentials_blocks import HubSpotCredentials, MissingCredentialsBlock, SalesforceCredentials

pytestmark = pytest.mark.prefect

ENV = ["HUBSPOT_ACCESS_TOKEN", "HUBSPOT_HOST", "SALESFORCE_INSTANCE_URL", "SALESFORCE_DOMAIN", "SALESFORCE_USERNAME",
       "SALESFORCE_PASSWORD", "SALESFORCE_SECURITY_TOKEN", "SALESFORCE_CLIENT_ID", "SALESFORCE_CLIENT_SECRET",
       "SALESFORCE_SESSION_ID", "LEADFLOW_HUBSPOT_BLOCK", "LEADFLOW_SALESFORCE_BLOCK"]
BLOCKS = [(HubSpotCredentials, "leadflow-hubspot"), (SalesforceCredentials, "leadflow-salesforce"),
          (SalesforceCredentials, "acme-prod")]


@pytest.fixture(autouse=True)
def clean(monkeypatch):
    """No variable from the outside, and no block left on the shared server for other tests."""
    for name in ENV:
        monkeypatch.delenv(name, raising=False)
    yield
    for cls, name in BLOCKS:
        try:
            cls.delete(name)
        except Exception:  # noqa: BLE001 - a block this test did not save
            pass


def test_the_block_types_register_with_the_prefect_cli(prefect_server):
    from prefect.settings import PREFECT_API_URL

    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value(), "PYTHONPATH": os.getcwd()}
    done = subprocess.run([sys.executable, "-m", "prefect", "block", "register", "-m", "leadflow.credentials_blocks"],
                          env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 new block types" in " ".join(done.stdout.split()) or "leadflow HubSpot credentials" in done.stdout


def test_hubspot_settings_come_from_the_block_when_the_variables_are_absent(prefect_server, sandbox, engine):
    HubSpotCredentials(access_token=sandbox.hubspot_token, host=sandbox.url).save("leadflow-hubspot", overwrite=True)
    loaded = HubSpotCredentials.load("leadflow-hubspot")
    assert sandbox.hubspot_token not in repr(loaded) and "**********" in repr(loaded)
    conn = connector_from_env("hubspot", engine)
    assert conn.config.host == sandbox.url
    assert conn.config.access_token.get_secret_value() == sandbox.hubspot_token
    assert sandbox.hubspot_token not in repr(conn.config)
    os.environ["HUBSPOT_HOST"] = "http://127.0.0.1:1"  # the variable wins over the block
    try:
        assert connector_from_env("hubspot", engine).config.host == "http://127.0.0.1:1"
    finally:
        del os.environ["HUBSPOT_HOST"]


def test_a_salesforce_block_logs_in_to_the_sandbox(prefect_server, sandbox, engine, monkeypatch):
    creds = sandbox.credentials
    SalesforceCredentials(instance_url=sandbox.url, domain=sandbox.url, username=creds.username,
                          password=creds.password, security_token=creds.security_token).save("acme-prod")
    monkeypatch.setenv("LEADFLOW_SALESFORCE_BLOCK", "acme-prod")
    conn = connector_from_env("salesforce", engine)
    assert conn.describe("Lead")["name"] == "Lead"
    assert conn.config.session_id is None and conn.config.username == creds.username
    loaded = SalesforceCredentials.load("acme-prod")
    assert loaded.password.get_secret_value() == creds.password
    for text in (repr(loaded), repr(conn.config)):
        assert "password=SecretStr('**********')" in text


def test_a_named_block_that_does_not_exist_is_one_clear_error(prefect_server, engine, monkeypatch):
    monkeypatch.setenv("LEADFLOW_SALESFORCE_BLOCK", "acme-prod")
    with pytest.raises(MissingCredentialsBlock, match="LEADFLOW_SALESFORCE_BLOCK=acme-prod"):
        connector_from_env("salesforce", engine)
    monkeypatch.delenv("LEADFLOW_SALESFORCE_BLOCK")
    with pytest.raises(MissingCredential, match="field access_token of Prefect block 'leadflow-hubspot'"):
        connector_from_env("hubspot", engine)
