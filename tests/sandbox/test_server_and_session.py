"""Starting the sandbox as a subprocess (``leadflow sandbox serve``), admin endpoints, and
``leadflow.http_session``."""

from __future__ import annotations

import httpx
import pytest

from leadflow.http_session import LoopbackSession, is_loopback
from sandbox import start_sandbox_process


def test_subprocess_serves_all_three_apis_with_cli_flags():
    with start_sandbox_process(25, faults="nppes.search:status=503,count=1",
                               rate_limits="hubspot=100/10s,salesforce_daily=500") as sb:
        assert sb.process.poll() is None
        contacts = sb.hubspot_client().crm.contacts.basic_api.get_page(limit=100)
        assert len(contacts.results) == 25
        sf = sb.salesforce_client("password")
        assert sf.query("SELECT COUNT() FROM Lead")["totalSize"] == 25
        assert sf.api_usage["api-usage"].total == 500
        assert httpx.get(sb.nppes_url, params={"version": "2.1", "state": "GA"}).status_code == 503
        assert httpx.get(sb.nppes_url, params={"version": "2.1", "state": "GA"}).status_code == 200
        stats = sb.stats()
        assert stats["endpoints"]["hubspot.contacts.list"] == {"200": 1}
        assert stats["endpoints"]["nppes.search"] == {"503": 1, "200": 1} and stats["total"] >= 5
        state = sb.dump_state(api="salesforce", object="Lead")
        assert len(state["salesforce"]["Lead"]) == 25
        with pytest.raises(RuntimeError):
            sb.state  # noqa: B018 - direct access is in-process only
    assert sb.process.poll() is not None


def test_admin_state_and_health(sandbox_server):
    health = httpx.get(f"{sandbox_server.url}/_sandbox/health").json()
    assert "hubspot.contacts.search" in health["endpoints"] and "salesforce.composite.update" in health["endpoints"]
    one = sandbox_server.dump_state(api="hubspot", object="contacts", id="10001")
    assert [c["id"] for c in one["hubspot"]["contacts"]] == ["10001"]
    assert "email" in one["hubspot"]["contacts"][0]["properties"]
    before = sandbox_server.stats()["total"]
    sandbox_server.reset_stats()
    assert sandbox_server.stats()["total"] == 0 <= before


def test_loopback_session_rewrites_only_to_loopback():
    session = LoopbackSession("http://127.0.0.1:8765")
    assert session.rewrite("https://127.0.0.1:8765/services/data/v59.0/query/") == \
        "http://127.0.0.1:8765/services/data/v59.0/query/"
    assert session.rewrite("https://login.salesforce.com/services/oauth2/token") == \
        "http://127.0.0.1:8765/services/oauth2/token"
    assert session.rewrite("https://leadflow-sandbox.my.salesforce.com/services/oauth2/token?x=1") == \
        "http://127.0.0.1:8765/services/oauth2/token?x=1"
    assert session.rewrite("https://acme.my.salesforce.com/services/data/") == "https://acme.my.salesforce.com/services/data/"
    assert session.rewrite("https://localhost:9/x") == "http://localhost:9/x"
    plain = LoopbackSession()
    assert plain.rewrite("https://login.salesforce.com/x") == "https://login.salesforce.com/x"
    with pytest.raises(ValueError):
        LoopbackSession("http://10.0.0.5:8765")
    with pytest.raises(ValueError):
        LoopbackSession("https://acme.my.salesforce.com")
    assert is_loopback("::1") and is_loopback("127.0.0.2") and not is_loopback("example.org")


def test_unknown_routes_answer_in_each_api_shape(sandbox_server):
    hubspot = httpx.get(f"{sandbox_server.url}/crm/v3/objects/tickets", headers={"Authorization": "Bearer sandbox-token"})
    assert hubspot.status_code == 404 and hubspot.json()["status"] == "error"
    salesforce = httpx.get(f"{sandbox_server.url}/services/data/v59.0/sobjects/Account/describe",
                           headers={"Authorization": "Bearer sandbox-session"})
    assert salesforce.status_code == 404 and salesforce.json()[0]["errorCode"] == "NOT_FOUND"
    old_version = httpx.get(f"{sandbox_server.url}/services/data/v20.0/limits/",
                            headers={"Authorization": "Bearer sandbox-session"})
    assert old_version.status_code == 404
