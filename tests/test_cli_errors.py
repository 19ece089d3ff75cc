"""The ``leadflow`` command's errors and exit codes, through the real CLI (typer's CliRunner, or a
subprocess where Prefect must start fresh) against the sandbox with the real HubSpot client.

Every bad input gives one line naming what failed, its documented exit code, no traceback (unless
``--debug``) and never the credential: the HubSpot token is a sentinel string searched for in
everything the command printed.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from connectors.crm.factory import connector_from_env
from connectors.crm.setup import hubspot_setup
from sandbox.environment import environment, sandbox_environment
from leadflow.cli import app
from leadflow.errors import describe, redact
from sandbox import start_sandbox

ROOT = Path(__file__).resolve().parent.parent
SENTINEL = "SENTINEL-tok-7f3a9c1e5b"
LEADS = 15
runner = CliRunner()


@pytest.fixture(autouse=True)
def _restore_file_settings(monkeypatch):
    """``--model`` / ``--mapping`` set LEADFLOW_MODEL / LEADFLOW_MAPPING_<CRM> for the process."""
    for name in ("LEADFLOW_MODEL", "LEADFLOW_MAPPING_HUBSPOT", "LEADFLOW_MAPPING_SALESFORCE"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="module")
def sandbox():
    with start_sandbox(LEADS, random_seed=21) as handle:
        yield handle


@pytest.fixture()
def run_env(sandbox, tmp_path):
    env = {**sandbox_environment(sandbox), "LEADFLOW_DATABASE_URL": f"sqlite:///{tmp_path / 'state.db'}",
           "LEADFLOW_HOME": str(tmp_path / "home")}
    with environment(env):
        yield env


@pytest.fixture()
def hubspot_ready(run_env, sandbox):
    hubspot_setup(connector_from_env("hubspot"))
    sandbox.reset_stats()
    return run_env


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


def assert_one_error_line(result, code: int, *fragments: str) -> str:
    """Exactly one ``error:`` line, the exit code, no traceback, no sentinel; the line."""
    output = result.output
    assert result.exit_code == code, output
    errors = [line for line in _lines(output) if line.startswith("error:")]
    assert len(errors) == 1, output
    assert "Traceback" not in output and SENTINEL not in output
    for fragment in fragments:
        assert fragment in errors[0], errors[0]
    return errors[0]


# --- credentials refused, host unreachable ---------------------------------------------------------

def test_crm_setup_with_a_wrong_hubspot_token_is_one_line_exit_6(run_env, sandbox):
    os.environ["HUBSPOT_ACCESS_TOKEN"] = SENTINEL
    result = runner.invoke(app, ["crm", "setup", "--crm", "hubspot"])
    assert_one_error_line(result, 6, "HUBSPOT_ACCESS_TOKEN", sandbox.url, "401")
    assert len(_lines(result.output)) == 1


def test_sync_with_a_wrong_hubspot_token_is_one_line_exit_6(prefect_server, run_env, sandbox):
    os.environ["HUBSPOT_ACCESS_TOKEN"] = SENTINEL
    result = runner.invoke(app, ["sync", "--crm", "hubspot"])
    assert_one_error_line(result, 6, "refused the credential HUBSPOT_ACCESS_TOKEN", "401 INVALID_AUTHENTICATION")


def test_a_whole_sync_process_prints_one_line_for_a_wrong_token(prefect_server, run_env, tmp_path):
    """In a process of its own (CliRunner cannot see what Prefect's log handlers print): the
    complete output of a failed run is the one line, not Prefect's report of the flow's failure."""
    from prefect.settings import PREFECT_API_URL

    env = {**_fresh_cli_env(tmp_path), **run_env, "HUBSPOT_ACCESS_TOKEN": SENTINEL,
           "PREFECT_API_URL": PREFECT_API_URL.value()}
    done = subprocess.run([sys.executable, "-m", "leadflow.cli", "sync", "--crm", "hubspot"], env=env, cwd=str(ROOT),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 6, done.stderr
    assert _lines(done.stdout + done.stderr) == [
        f"error: hubspot: {run_env['HUBSPOT_HOST']} refused the credential HUBSPOT_ACCESS_TOKEN "
        "(401 INVALID_AUTHENTICATION)"]


def test_a_refused_salesforce_session_is_one_line_exit_6(prefect_server, run_env, monkeypatch, sandbox):
    for name in ("SALESFORCE_USERNAME", "SALESFORCE_PASSWORD"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SALESFORCE_SESSION_ID", SENTINEL)
    for command in (["crm", "setup", "--crm", "salesforce"], ["sync", "--crm", "salesforce"]):
        assert_one_error_line(runner.invoke(app, command), 6, "refused the credential SALESFORCE_SESSION_ID",
                              "INVALID_SESSION_ID")


def test_debug_prints_the_traceback_but_never_the_token(run_env):
    os.environ["HUBSPOT_ACCESS_TOKEN"] = SENTINEL
    result = runner.invoke(app, ["--debug", "crm", "setup", "--crm", "hubspot"])
    assert result.exit_code == 6
    assert "Traceback (most recent call last)" in result.output and "UnauthorizedException" in result.output
    assert _lines(result.output)[-1].startswith("error: hubspot:")
    assert SENTINEL not in result.output


def test_leadflow_debug_variable_is_the_same_switch(run_env, monkeypatch):
    os.environ["HUBSPOT_ACCESS_TOKEN"] = SENTINEL
    monkeypatch.setenv("LEADFLOW_DEBUG", "1")
    result = runner.invoke(app, ["crm", "setup", "--crm", "hubspot"])
    assert result.exit_code == 6 and "Traceback" in result.output and SENTINEL not in result.output


def test_sync_against_an_unreachable_host_names_host_and_setting_exit_7(prefect_server, run_env):
    port = _closed_port()
    os.environ.update({"HUBSPOT_HOST": f"http://127.0.0.1:{port}", "HUBSPOT_ACCESS_TOKEN": SENTINEL})
    result = runner.invoke(app, ["sync", "--crm", "hubspot"])
    assert_one_error_line(result, 7, f"cannot reach 127.0.0.1:{port}", "HUBSPOT_HOST")


# --- bad mapping and model files: stopped before Prefect and before any CRM call ----------------

def _typo_mapping(tmp_path: Path) -> Path:
    text = (ROOT / "mappings" / "hubspot.yaml").read_text()
    assert "\n  lead_score:" in text
    path = tmp_path / "hubspot-typo.yaml"
    path.write_text(text.replace("\n  lead_score:", "\n  lead_scor:", 1))
    return path


def _model_with_weight(tmp_path: Path, weight: int) -> Path:
    text = (ROOT / "scoring" / "default_model.yaml").read_text()
    marker = "weights: {fit: 30,"
    assert marker in text
    path = tmp_path / f"model-{weight}.yaml"
    path.write_text(text.replace(marker, f"weights: {{fit: {weight},", 1))
    return path


@pytest.mark.parametrize("command", [["sync"], ["rescore"], ["backfill", "--since", "2024-01-01",
                                                             "--until", "2025-01-01"]])
def test_a_typo_in_a_mapping_is_file_and_key_exit_2_with_no_crm_call(command, run_env, sandbox, tmp_path):
    os.environ["HUBSPOT_ACCESS_TOKEN"] = SENTINEL
    path = _typo_mapping(tmp_path)
    sandbox.reset_stats()
    result = runner.invoke(app, [*command, "--crm", "hubspot", "--mapping", str(path)])
    assert_one_error_line(result, 2, str(path), "fields.lead_scor", "unknown canonical field")
    assert sandbox.stats()["total"] == 0


def test_the_mapping_variable_is_validated_the_same_way(run_env, sandbox, tmp_path, monkeypatch):
    monkeypatch.setenv("LEADFLOW_MAPPING_HUBSPOT", str(_typo_mapping(tmp_path)))
    result = runner.invoke(app, ["sync", "--crm", "hubspot"])
    assert_one_error_line(result, 2, "fields.lead_scor")


def test_a_mapping_for_the_other_crm_is_refused(run_env, tmp_path):
    result = runner.invoke(app, ["sync", "--crm", "hubspot", "--mapping", str(ROOT / "mappings" / "salesforce.yaml")])
    assert_one_error_line(result, 2, "salesforce.yaml: crm:", "not hubspot")


@pytest.mark.parametrize("command", [["sync", "--crm", "hubspot"], ["rescore", "--crm", "hubspot"]])
def test_a_model_weight_of_300_is_file_and_key_exit_2(command, run_env, sandbox, tmp_path):
    path = _model_with_weight(tmp_path, 300)
    sandbox.reset_stats()
    result = runner.invoke(app, [*command, "--model", str(path)])
    assert_one_error_line(result, 2, str(path), "segments.health_system.weights.fit", "out of range: 300")
    assert sandbox.stats()["total"] == 0


def test_the_model_variable_and_explain_refuse_it_too(run_env, tmp_path, monkeypatch):
    path = _model_with_weight(tmp_path, 300)
    monkeypatch.setenv("LEADFLOW_MODEL", str(path))
    assert_one_error_line(runner.invoke(app, ["backfill", "--crm", "hubspot", "--since", "2024-01-01",
                                              "--until", "2025-01-01"]), 2, "weights.fit")
    leads = tmp_path / "leads.json"
    leads.write_text(json.dumps({"crm": "hubspot", "crm_id": "1"}))
    assert_one_error_line(runner.invoke(app, ["explain", "--lead-file", str(leads), "--model", str(path)]), 2,
                          "weights.fit")


def test_a_missing_credential_is_named_exit_2(run_env, monkeypatch):
    monkeypatch.delenv("HUBSPOT_ACCESS_TOKEN")
    assert_one_error_line(runner.invoke(app, ["sync", "--crm", "hubspot"]), 2, "HUBSPOT_ACCESS_TOKEN is not set")


def test_a_malformed_setting_is_named_exit_2(run_env, monkeypatch):
    monkeypatch.setenv("LEADFLOW_HUBSPOT_RATE_LIMIT", "lots")
    assert_one_error_line(runner.invoke(app, ["sync", "--crm", "hubspot"]), 2, "LEADFLOW_HUBSPOT_RATE_LIMIT='lots'")


def test_bad_cli_input_is_one_line_exit_2(run_env):
    result = runner.invoke(app, ["backfill", "--crm", "hubspot", "--since", "last week", "--until", "2025-01-01"])
    assert_one_error_line(result, 2, "--since", "ISO-8601")
    result = runner.invoke(app, ["backfill", "--crm", "hubspot", "--since", "2025-01-01", "--until", "2024-01-01"])
    assert_one_error_line(result, 2, "--until", "must be after --since")


# --- honest exit codes of a run -------------------------------------------------------------------

def test_a_run_stopped_by_its_budget_exits_4_and_says_so(prefect_server, hubspot_ready, monkeypatch):
    monkeypatch.setenv("LEADFLOW_API_MAX_CALLS", "2")
    result = runner.invoke(app, ["sync", "--crm", "hubspot", "--json", "--quiet"])
    assert result.exit_code == 4, result.output
    summary = json.loads(result.stdout)
    assert summary["outcome"] == "stopped_early" and summary["stopped_early"]


def test_a_run_with_a_quarantined_lead_exits_3_and_the_next_clean_run_0(prefect_server, hubspot_ready, sandbox):
    contacts = sandbox.dump_state(api="hubspot", object="contacts")["hubspot"]["contacts"]
    bad = contacts[0]["id"]
    sandbox.state.hubspot.write("contacts", bad, {"leadflow_lead_score": "140"})
    result = runner.invoke(app, ["backfill", "--crm", "hubspot", "--since", "2000-01-01", "--until", "2100-01-01"])
    assert result.exit_code == 3, result.output
    assert "Outcome: partial" in result.output
    assert "hubspot: page 1," in result.output and "of the window" in result.output  # progress on stderr
    sandbox.state.hubspot.write("contacts", bad, {"leadflow_lead_score": "40"})
    result = runner.invoke(app, ["sync", "--crm", "hubspot", "--json", "--quiet"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["outcome"] == "success"
    assert "page 1" not in result.output  # --quiet


def test_a_lock_held_by_another_run_is_one_line_exit_5(prefect_server, hubspot_ready):
    from state.locks import acquire
    from leadflow import settings
    from state.schema import engine_for

    acquire(engine_for(settings.database_url()), "hubspot", holder="someone-else")
    assert_one_error_line(runner.invoke(app, ["sync", "--crm", "hubspot"]), 5, "hubspot")


def test_the_original_exception_is_classified_through_a_prefect_flow_and_task(prefect_server):
    from prefect import flow, task

    from state.locks import RunLocked
    from mappings import MappingError

    @task(retries=0, persist_result=False)
    def locked() -> None:
        raise RunLocked("hubspot: another leadflow run holds the lock")

    @flow(retries=0)
    def outer(which: str) -> None:
        if which == "task":
            locked.submit().result()
        raise MappingError("m.yaml", "fields.x", "unknown canonical field 'x'")

    for which, code in (("task", 5), ("flow", 2)):
        with pytest.raises(Exception) as caught:
            outer(which)
        assert describe(caught.value)[0] == code
        wrapped = RuntimeError("wrapper")
        wrapped.__cause__ = caught.value
        assert describe(wrapped)[0] == code


def _classified_examples() -> list[tuple[BaseException, int, str]]:
    import requests
    import urllib3
    from hubspot.crm.contacts.exceptions import ApiException
    from simple_salesforce.exceptions import SalesforceAuthenticationFailed, SalesforceRefusedRequest

    from connectors.retry import QuotaExhausted
    from state.locks import RunLocked
    from leadflow.prefect_env import PrefectStartTimeout
    from mappings import MappingError

    scopes = ApiException(status=403, reason="Forbidden")
    scopes.body = json.dumps({"category": "MISSING_SCOPES", "message": "missing scopes"})
    pool = urllib3.HTTPConnectionPool("crm.example", 8443)
    unreachable = requests.ConnectionError(urllib3.exceptions.MaxRetryError(pool, "/crm/v3", None))
    limit = SalesforceRefusedRequest("https://x/services", 403, "Lead",
                                     b'[{"errorCode": "REQUEST_LIMIT_EXCEEDED", "message": "TotalRequests Limit exceeded."}]')
    return [
        (MappingError("m.yaml", "fields.x", "unknown canonical field 'x'"), 2, "m.yaml: fields.x"),
        (scopes, 6, "HUBSPOT_ACCESS_TOKEN (403 MISSING_SCOPES)"),
        (SalesforceAuthenticationFailed("INVALID_LOGIN", "Invalid username, password, security token"), 6,
         "SALESFORCE_"),
        (unreachable, 7, "cannot reach crm.example:8443"),
        (RunLocked("hubspot: another leadflow run holds the lock"), 5, "hubspot: another"),
        (QuotaExhausted("daily API limit reached: 429 DAILY"), 4, "the next run resumes"),
        (PrefectStartTimeout(180), 8, "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"),
        (RuntimeError("Timed out while attempting to connect to ephemeral Prefect API server."), 8, "did not start"),
        (limit, 4, "REQUEST_LIMIT_EXCEEDED"),
    ]


def test_the_error_table():
    for exc, code, fragment in _classified_examples():
        got, line = describe(exc)
        assert (got, fragment in line) == (code, True), (exc, line)


# --- redaction -----------------------------------------------------------------------------------

def test_redaction_removes_credentials_of_every_shape(monkeypatch):
    monkeypatch.setenv("SALESFORCE_PASSWORD", "hunter2-pw")
    texts = [
        "GET https://x.my.salesforce.com/services?access_token=abc123&x=1",
        "headers: {'Authorization': 'Bearer abc123'}",
        "postgresql://leadflow:abc123@db:5432/leadflow",
        "<sessionId>abc123</sessionId>",
        '{"client_secret": "abc123"}',
        "login failed for password hunter2-pw",
    ]

    for text in texts:
        assert "abc123" not in redact(text) and "hunter2-pw" not in redact(text), redact(text)
    assert redact("OAuth 2.0 authentication") == "OAuth 2.0 authentication"


def test_an_unexpected_error_points_at_debug_and_never_leaks_a_secret(monkeypatch):
    monkeypatch.setenv("HUBSPOT_ACCESS_TOKEN", SENTINEL)
    code, line = describe(KeyError(f"boom with {SENTINEL} and https://h/?token=zzz999"))
    assert code == 1 and "run with --debug for the traceback" in line
    assert SENTINEL not in line and "zzz999" not in line


# --- Prefect start-up ----------------------------------------------------------------------------

def _fresh_cli_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "LEADFLOW_", "HUBSPOT_"))}
    env.update({"PYTHONPATH": str(ROOT), "PREFECT_HOME": str(tmp_path / "prefect"),
                "LEADFLOW_HOME": str(tmp_path / "home"), "HUBSPOT_ACCESS_TOKEN": SENTINEL,
                "HUBSPOT_HOST": f"http://127.0.0.1:{_closed_port()}", **extra})
    return env


def test_leadflow_raises_prefects_start_limit_unless_the_user_set_one(tmp_path):
    probe = ("import leadflow.cli; from prefect.settings import PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS as s, "
             "PREFECT_SERVER_ANALYTICS_ENABLED as a; print(s.value(), a.value())")
    for extra, expected in (({}, "180 False"), ({"PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "77"}, "77 False")):
        done = subprocess.run([sys.executable, "-c", probe], env=_fresh_cli_env(tmp_path, **extra), cwd=str(ROOT),
                              capture_output=True, text=True, timeout=120)
        assert done.stdout.split()[-2:] == expected.split(), done.stderr


def test_a_prefect_server_slower_than_the_limit_is_one_line_naming_the_setting_exit_8(tmp_path):
    """A start limit of 1 s stands in for a machine where the temporary server starts slowly (a first
    start migrates a fresh database: 10 s on an idle 2-core machine)."""
    env = _fresh_cli_env(tmp_path, PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="1")
    done = subprocess.run([sys.executable, "-m", "leadflow.cli", "sync", "--crm", "hubspot"], env=env, cwd=str(ROOT),
                          capture_output=True, text=True, timeout=180)
    output = done.stdout + done.stderr
    assert done.returncode == 8, output
    assert _lines(output) == [
        "starting a temporary Prefect server (set PREFECT_API_URL to use a running one)...",
        "error: the temporary Prefect server did not start within 1 s: raise "
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS, or set PREFECT_API_URL to a running Prefect server",
    ]


def test_an_invalid_prefect_setting_is_bad_input(tmp_path):
    env = _fresh_cli_env(tmp_path, PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="soon")
    done = subprocess.run([sys.executable, "-m", "leadflow.cli", "sync", "--crm", "hubspot", "--quiet"], env=env,
                          cwd=str(ROOT), capture_output=True, text=True, timeout=180)
    assert done.returncode == 2, done.stderr
    assert _lines(done.stderr) == ["error: PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS='soon': expected "
                                   "whole seconds, e.g. 180"]
