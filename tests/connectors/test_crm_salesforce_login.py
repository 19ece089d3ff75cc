"""Salesforce logins through the real simple-salesforce, with ``SALESFORCE_DOMAIN`` naming the login
host: password (SOAP) and client credentials (OAuth token endpoint) against the sandbox, and the
one line a refused login gives."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from connectors.crm.factory import connector_from_env
from connectors.crm.salesforce_login import SalesforceDomainError, SalesforceLoginRefused, login_base_url
from crm_harness import calls

ENV = ["SALESFORCE_INSTANCE_URL", "SALESFORCE_DOMAIN", "SALESFORCE_USERNAME", "SALESFORCE_PASSWORD",
       "SALESFORCE_SECURITY_TOKEN", "SALESFORCE_CLIENT_ID", "SALESFORCE_CLIENT_SECRET", "SALESFORCE_SESSION_ID",
       "PREFECT_API_URL", "LEADFLOW_SALESFORCE_BLOCK"]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for name in ENV:
        monkeypatch.delenv(name, raising=False)


@pytest.mark.parametrize(("domain", "instance", "base"), [
    ("login", "https://acme.my.salesforce.com", "https://login.salesforce.com"),
    ("test", "https://acme.my.salesforce.com", "https://test.salesforce.com"),
    ("acme.my.salesforce.com", "https://x", "https://acme.my.salesforce.com"),
    ("acme--uat.sandbox.my", "https://x", "https://acme--uat.sandbox.my.salesforce.com"),
    ("http://127.0.0.1:27431/", "https://x", "http://127.0.0.1:27431"),
    (None, "https://acme.my.salesforce.com/", "https://acme.my.salesforce.com"),
    (None, "http://127.0.0.1:27431", "http://127.0.0.1:27431"),
])
def test_the_login_host_is_the_setting_or_the_instance(domain, instance, base):
    assert login_base_url(domain, instance) == base


@pytest.mark.parametrize("domain", ["ftp://login.salesforce.com", "acme corp", "https://x.example/path"])
def test_a_bad_domain_names_the_setting(domain):
    with pytest.raises(SalesforceDomainError, match="SALESFORCE_DOMAIN"):
        login_base_url(domain, "https://acme.my.salesforce.com")


def _login_env(monkeypatch, sandbox, login: str) -> None:
    creds = sandbox.credentials
    monkeypatch.setenv("SALESFORCE_INSTANCE_URL", "https://acme.my.salesforce.com")  # not where it logs in
    monkeypatch.setenv("SALESFORCE_DOMAIN", sandbox.url)
    if login == "password":
        monkeypatch.setenv("SALESFORCE_USERNAME", creds.username)
        monkeypatch.setenv("SALESFORCE_PASSWORD", creds.password)
        monkeypatch.setenv("SALESFORCE_SECURITY_TOKEN", creds.security_token)
    else:
        monkeypatch.setenv("SALESFORCE_CLIENT_ID", creds.client_id)
        monkeypatch.setenv("SALESFORCE_CLIENT_SECRET", creds.client_secret)


@pytest.mark.parametrize(("login", "endpoint"), [("password", "salesforce.soap.login"),
                                                 ("client_credentials", "salesforce.oauth.token")])
def test_logins_reach_the_sandbox_through_the_domain_setting(sandbox, engine, monkeypatch, login, endpoint):
    _login_env(monkeypatch, sandbox, login)
    conn = connector_from_env("salesforce", engine)
    assert conn.describe("Lead")["name"] == "Lead"
    sf = conn.sf
    assert sf.sf_instance == sandbox.url.removeprefix("http://")  # the instance the login answered with
    assert calls(sandbox, endpoint) == {endpoint: 1}


def test_a_wrong_password_says_so_in_one_line_without_it(sandbox, engine, monkeypatch):
    _login_env(monkeypatch, sandbox, "password")
    monkeypatch.setenv("SALESFORCE_PASSWORD", "wrong-Pa55word")
    conn = connector_from_env("salesforce", engine)
    with pytest.raises(SalesforceLoginRefused) as refused:
        conn.describe("Lead")
    line = str(refused.value)
    assert line == f"Salesforce refused the login for user {sandbox.credentials.username}: INVALID_LOGIN"
    assert calls(sandbox, "salesforce.soap.login") == {"salesforce.soap.login": 1}  # refused at once, not retried


def test_a_wrong_client_secret_is_refused_by_name(sandbox, engine, monkeypatch):
    _login_env(monkeypatch, sandbox, "client_credentials")
    monkeypatch.setenv("SALESFORCE_CLIENT_SECRET", "not-the-SECRET")
    with pytest.raises(SalesforceLoginRefused, match=r"client id .*: invalid_client$") as refused:
        connector_from_env("salesforce", engine).describe("Lead")
    assert "SECRET" not in str(refused.value)


def test_client_credentials_refuse_login_and_test_before_any_request(sandbox, engine, monkeypatch):
    _login_env(monkeypatch, sandbox, "client_credentials")
    monkeypatch.setenv("SALESFORCE_DOMAIN", "login")
    with pytest.raises(SalesforceDomainError, match="My Domain"):
        connector_from_env("salesforce", engine).describe("Lead")


def test_crm_check_prints_the_refusal_as_one_line(sandbox, monkeypatch, tmp_path):
    from leadflow.cli import app

    monkeypatch.setenv("LEADFLOW_DATABASE_URL", f"sqlite:///{tmp_path / 'cli.db'}")
    _login_env(monkeypatch, sandbox, "password")
    monkeypatch.setenv("SALESFORCE_PASSWORD", "wrong-Pa55word")
    result = CliRunner().invoke(app, ["crm", "check", "--crm", "salesforce"])
    assert result.exit_code == 6  # the CLI's one error table: a refused credential
    [line] = result.output.strip().splitlines()
    assert line.startswith("error: salesforce: ") and "refused the credential SALESFORCE_USERNAME" in line
    assert line.endswith("(INVALID_LOGIN)")
    assert "wrong-Pa55word" not in result.output
