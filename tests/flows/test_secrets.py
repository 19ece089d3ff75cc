"""Credentials from Prefect Secret blocks, on the shared Prefect test server."""

import pytest
from typer.testing import CliRunner

from leadflow.cli import app
from leadflow.secrets import SECRET_VARIABLES, block_name, credential, save_credential

pytestmark = pytest.mark.prefect


@pytest.fixture(autouse=True)
def no_blocks_left_behind():
    """The Prefect test server is shared by the whole session: a Secret block left here would
    answer other tests' credential lookups (e.g. the factory's missing-variable errors)."""
    yield
    from prefect.blocks.system import Secret

    for variable in [v for names in SECRET_VARIABLES.values() for v in names]:
        try:
            Secret.delete(block_name(variable))
        except Exception:  # noqa: BLE001 - a block that was never saved
            pass


def test_a_secret_block_is_used_when_the_variable_is_unset(prefect_server, monkeypatch):
    monkeypatch.delenv("HUBSPOT_ACCESS_TOKEN", raising=False)
    assert block_name("HUBSPOT_ACCESS_TOKEN") == "leadflow-hubspot-access-token"
    save_credential("HUBSPOT_ACCESS_TOKEN", "pat-from-block")
    token = credential("HUBSPOT_ACCESS_TOKEN")
    assert token.get_secret_value() == "pat-from-block" and "pat-from-block" not in repr(token)
    monkeypatch.setenv("HUBSPOT_ACCESS_TOKEN", "pat-from-env")
    assert credential("HUBSPOT_ACCESS_TOKEN").get_secret_value() == "pat-from-env"


def test_crm_connect_prompts_without_echoing(prefect_server, monkeypatch):
    monkeypatch.delenv("SALESFORCE_PASSWORD", raising=False)
    result = CliRunner().invoke(app, ["crm", "connect", "--crm", "salesforce"], input="s3cret-pw\n\n\n\n")
    assert result.exit_code == 0, result.output
    assert "s3cret-pw" not in result.output
    assert "saved Secret block leadflow-salesforce-password" in result.output
    assert credential("SALESFORCE_PASSWORD").get_secret_value() == "s3cret-pw"
    assert credential("SALESFORCE_CLIENT_SECRET") is None
