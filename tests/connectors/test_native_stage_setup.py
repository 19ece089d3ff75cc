"""``leadflow crm setup`` / ``crm check`` read the CRM's own stage and status options (HubSpot's
property definitions, the Salesforce Lead describe) and name, one line each, every value the
mapping's ``native_stages`` names that the CRM lacks: a problem (exit 1) with native stages on, a
note with them off."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from mappings import MAPPINGS_DIR


def _cli_env(monkeypatch, sandbox, tmp_path: Path) -> None:
    monkeypatch.setenv("LEADFLOW_DATABASE_URL", f"sqlite:///{tmp_path / 'cli.db'}")
    monkeypatch.setenv("HUBSPOT_ACCESS_TOKEN", sandbox.hubspot_token)
    monkeypatch.setenv("HUBSPOT_HOST", sandbox.url)
    monkeypatch.setenv("SALESFORCE_INSTANCE_URL", sandbox.url)
    monkeypatch.setenv("SALESFORCE_SESSION_ID", sandbox.credentials.session_id)


def _mapping(monkeypatch, tmp_path: Path, crm: str, enabled: bool, *replacements: tuple[str, str]) -> None:
    text = (MAPPINGS_DIR / f"{crm}.yaml").read_text()
    if enabled:
        text = text.replace("native_stages:\n  enabled: false", "native_stages:\n  enabled: true")
    for old, new in replacements:
        assert old in text
        text = text.replace(old, new)
    path = tmp_path / f"{crm}.yaml"
    path.write_text(text)
    monkeypatch.setenv(f"LEADFLOW_MAPPING_{crm.upper()}", str(path))


@pytest.mark.parametrize("crm", ["hubspot", "salesforce"])
def test_the_shipped_values_exist_in_the_sandbox_and_check_passes_either_way(sandbox, monkeypatch, tmp_path, crm):
    from leadflow.cli import app

    _cli_env(monkeypatch, sandbox, tmp_path)
    runner = CliRunner()
    for enabled in (False, True):
        _mapping(monkeypatch, tmp_path, crm, enabled)
        setup = runner.invoke(app, ["crm", "setup", "--crm", crm])
        assert setup.exit_code == 0 and "native_stages" not in setup.output, setup.output
        check = runner.invoke(app, ["crm", "check", "--crm", crm])
        assert check.exit_code == 0, check.output
        assert f'"enabled": {"true" if enabled else "false"}' in check.output and '"missing_values": []' in check.output


def test_hubspot_values_the_portal_lacks_are_one_line_each(sandbox, monkeypatch, tmp_path):
    from leadflow.cli import app

    _cli_env(monkeypatch, sandbox, tmp_path)
    runner = CliRunner()
    assert runner.invoke(app, ["crm", "setup", "--crm", "hubspot"]).exit_code == 0
    changes = (("accepted: [OPEN, IN_PROGRESS,", "accepted: [ACCEPTED, IN_PROGRESS,"),
               ("mql: marketingqualifiedlead,", "mql: mql,"),
               ("order: [subscriber, lead, marketingqualifiedlead,", "order: [subscriber, lead, mql,"))
    _mapping(monkeypatch, tmp_path, "hubspot", True, *changes)
    check = runner.invoke(app, ["crm", "check", "--crm", "hubspot"])
    assert check.exit_code == 1
    problems = [line for line in check.output.splitlines() if line.startswith("problem: ")]
    assert problems == [
        "problem: contacts.lifecyclestage: no option 'mql' (named in native_stages.write.values.mql)",
        "problem: contacts.hs_lead_status: no option 'ACCEPTED' (named in native_stages.read.accepted)",
    ]
    setup = runner.invoke(app, ["crm", "setup", "--crm", "hubspot"])
    assert setup.exit_code == 1 and len([ln for ln in setup.output.splitlines() if "no option" in ln]) == 2

    _mapping(monkeypatch, tmp_path, "hubspot", False, *changes)  # off: said, but not a failure
    check = runner.invoke(app, ["crm", "check", "--crm", "hubspot"])
    assert check.exit_code == 0
    assert "note: contacts.lifecyclestage: no option 'mql' (named in native_stages.write.values.mql); " \
           "native stages are off" in check.output.splitlines()


def test_salesforce_statuses_the_org_lacks_are_one_line_each(sandbox, monkeypatch, tmp_path):
    from leadflow.cli import app

    _cli_env(monkeypatch, sandbox, tmp_path)
    _mapping(monkeypatch, tmp_path, "salesforce", True, ("mql: Marketing Qualified}", "mql: MQL}"),
             ("accepted: [Working - Contacted]", "accepted: [Working - Contacted, Accepted]"))
    runner = CliRunner()
    for command in ("setup", "check"):
        out = runner.invoke(app, ["crm", command, "--crm", "salesforce"])
        assert out.exit_code == 1, out.output
        assert [line for line in out.output.splitlines() if line.startswith("problem: ")] == [
            "problem: Lead.Status: no option 'MQL' (named in native_stages.write.values.mql)",
            "problem: Lead.Status: no option 'Accepted' (named in native_stages.read.accepted)",
        ]
