"""factory.py (environment, secrets) and ``leadflow crm setup|check``."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from connectors.crm.factory import MissingCredential, connector_from_env

ENV = ["HUBSPOT_ACCESS_TOKEN", "HUBSPOT_HOST", "SALESFORCE_INSTANCE_URL", "SALESFORCE_USERNAME", "SALESFORCE_PASSWORD",
       "SALESFORCE_SECURITY_TOKEN", "SALESFORCE_CLIENT_ID", "SALESFORCE_CLIENT_SECRET", "SALESFORCE_SESSION_ID",
       "PREFECT_API_URL"]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for name in ENV:
        monkeypatch.delenv(name, raising=False)


def test_missing_variables_are_named(engine, monkeypatch):
    with pytest.raises(MissingCredential, match="HUBSPOT_ACCESS_TOKEN"):
        connector_from_env("hubspot", engine)
    with pytest.raises(MissingCredential, match="SALESFORCE_INSTANCE_URL"):
        connector_from_env("salesforce", engine)
    monkeypatch.setenv("SALESFORCE_INSTANCE_URL", "https://acme.my.salesforce.com")
    with pytest.raises(MissingCredential, match="SALESFORCE_SESSION_ID"):
        connector_from_env("salesforce", engine)
    monkeypatch.setenv("SALESFORCE_USERNAME", "ops@acme.test")
    with pytest.raises(MissingCredential, match="SALESFORCE_PASSWORD"):
        connector_from_env("salesforce", engine)
    with pytest.raises(ValueError, match="unknown CRM"):
        connector_from_env("pipedrive", engine)


def test_secrets_never_in_reprs(engine, monkeypatch):
    monkeypatch.setenv("HUBSPOT_ACCESS_TOKEN", "pat-na1-SUPERSECRET")
    monkeypatch.setenv("SALESFORCE_INSTANCE_URL", "https://acme.my.salesforce.com")
    monkeypatch.setenv("SALESFORCE_USERNAME", "ops@acme.test")
    monkeypatch.setenv("SALESFORCE_PASSWORD", "hunter2-SUPERSECRET")
    monkeypatch.setenv("SALESFORCE_SECURITY_TOKEN", "tok-SUPERSECRET")
    hs = connector_from_env("hubspot", engine, max_calls=10)
    sf = connector_from_env("salesforce", engine)
    for obj in (hs, hs.config, hs.transport, sf, sf.config):
        assert "SUPERSECRET" not in repr(obj) and "SUPERSECRET" not in str(obj)
    assert hs.meter.budget.max_calls == 10
    with pytest.raises(TypeError, match="unknown connector option"):
        connector_from_env("hubspot", engine, bogus=1)


def test_cli_setup_and_check_against_the_sandbox(sandbox, monkeypatch, tmp_path):
    from leadflow.cli import app

    monkeypatch.setenv("LEADFLOW_DATABASE_URL", f"sqlite:///{tmp_path / 'cli.db'}")
    monkeypatch.setenv("HUBSPOT_ACCESS_TOKEN", sandbox.hubspot_token)
    monkeypatch.setenv("HUBSPOT_HOST", sandbox.url)
    monkeypatch.setenv("SALESFORCE_INSTANCE_URL", sandbox.url)
    monkeypatch.setenv("SALESFORCE_SESSION_ID", sandbox.credentials.session_id)
    runner = CliRunner()
    first = runner.invoke(app, ["crm", "setup", "--crm", "hubspot"])
    assert first.exit_code == 0, first.output
    assert "created: contacts.leadflow_lead_score (number/number)" in first.output
    created = [line for line in first.output.splitlines() if line.startswith("created: ")]
    assert "already there: contacts.email (string/text)" in first.output
    assert first.output.splitlines()[-1].startswith(f"{len(created)} created, ")
    again = runner.invoke(app, ["crm", "setup", "--crm", "hubspot"])
    assert again.exit_code == 0 and "created: " not in again.output, again.output
    lines = again.output.splitlines()
    assert "already there: contacts.leadflow_lead_score (number/number)" in lines
    assert "already there: contacts: property group leadflow" in lines
    assert lines[-1] == f"nothing to create: all {len(lines) - 1} already exist"
    sf = runner.invoke(app, ["crm", "setup", "--crm", "salesforce"])
    assert sf.exit_code == 0 and "mapped fields exist; nothing to create" in sf.output, sf.output
    assert "already there: Lead.Lead_Score__c" in sf.output
    check = runner.invoke(app, ["crm", "check", "--crm", "hubspot"])
    assert check.exit_code == 0 and '"auth": "ok"' in check.output and sandbox.hubspot_token not in check.output
    used, left = _allocation(check.output, "hubspot", r"625,000 \(response headers\)")
    assert used > 0 and used + left == 625_000
    sandbox.reset_stats()
    check = runner.invoke(app, ["crm", "check", "--crm", "salesforce"])
    assert check.exit_code == 0 and '"daily_api"' in check.output, check.output
    used, left = _allocation(check.output, "salesforce", r"100,000 \(limits resource \(DailyApiRequests\)\)")
    assert used > 0 and used + left == 100_000 and '"quota": {}' not in check.output


def _allocation(output: str, crm: str, tail: str) -> tuple[int, int]:
    import re

    match = re.search(rf"^{crm}: daily API allocation ([\d,]+) used, ([\d,]+) left of {tail}$", output, re.M)
    assert match, output
    return int(match[1].replace(",", "")), int(match[2].replace(",", ""))


def test_salesforce_setup_lists_missing_fields(sandbox, engine):
    from connectors.crm.factory import connector_for_sandbox
    from connectors.crm.setup import salesforce_setup
    from mappings import load_mapping

    mapping = load_mapping("salesforce")
    fields = dict(mapping.fields)
    fields["ehr_vendor"] = fields["ehr_vendor"].model_copy(update={"field": "EHR_System__c"})
    custom = mapping.model_copy(update={"fields": fields})
    sf = connector_for_sandbox(sandbox, "salesforce", engine, mapping=custom)
    report = salesforce_setup(sf)
    assert report.missing == [
        "Lead.EHR_System__c: Text(255) - for ehr_vendor (read); Setup > Object Manager > Lead > Fields & "
        "Relationships > New, API name EHR_System__c"
    ]


def test_run_limits_from_environment(engine, monkeypatch):
    monkeypatch.setenv("HUBSPOT_ACCESS_TOKEN", "t")
    monkeypatch.setenv("LEADFLOW_API_MAX_CALLS", "500")
    monkeypatch.setenv("LEADFLOW_API_DAILY_SHARE", "0.2")
    monkeypatch.setenv("LEADFLOW_PREFECT_RATE_LIMIT", "1")
    hs = connector_from_env("hubspot", engine)
    assert hs.meter.budget.max_calls == 500 and hs.meter.budget.daily_share == 0.2
    assert hs.meter.fleet is not None and hs.meter.fleet.name == "leadflow-hubspot-api"
    assert connector_from_env("hubspot", engine, max_calls=7).meter.budget.max_calls == 7


def test_hubspot_rate_limit_from_the_environment(engine, monkeypatch):
    """The portal's allowance sets the client-side limiter (its own window, no headroom); ``off`` leaves
    only the search bucket; a malformed value names the variable."""
    monkeypatch.setenv("HUBSPOT_ACCESS_TOKEN", "pat-test")
    default = connector_from_env("hubspot", engine)
    assert default.meter.limiters["default"].max_calls == 190
    monkeypatch.setenv("LEADFLOW_HUBSPOT_RATE_LIMIT", "250/10s")
    raised = connector_from_env("hubspot", engine)
    assert (raised.meter.limiters["default"].max_calls, raised.meter.limiters["default"].period) == (250, 10.0)
    monkeypatch.setenv("LEADFLOW_HUBSPOT_RATE_LIMIT", "off")
    off = connector_from_env("hubspot", engine)
    assert "default" not in off.meter.limiters and off.meter.limiters["search"].max_calls == 5
    monkeypatch.setenv("LEADFLOW_HUBSPOT_RATE_LIMIT", "190 per 10s")
    with pytest.raises(ValueError, match="LEADFLOW_HUBSPOT_RATE_LIMIT"):
        connector_from_env("hubspot", engine)
