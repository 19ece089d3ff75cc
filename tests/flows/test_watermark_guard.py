"""The watermark moves only when a run read its whole window: ``sync --limit N`` stops early on
purpose and must leave the unread leads for the next run."""

from __future__ import annotations

import pytest

from state import leads as state
from sandbox.environment import environment, sandbox_environment
from flows.sync import sync_leads
from state.schema import make_engine
from sandbox import start_sandbox

pytestmark = pytest.mark.prefect


def test_a_limited_sync_leaves_the_watermark_for_the_leads_it_did_not_read(prefect_server, tmp_path, monkeypatch):
    from connectors.crm import factory

    build = factory.connector_from_env
    monkeypatch.setattr(factory, "connector_from_env", lambda crm, **kw: build(crm, page_size=10, **kw))
    url = f"sqlite:///{tmp_path / 'w.db'}"
    with start_sandbox(30, random_seed=4) as handle, \
            environment({**sandbox_environment(handle), "LEADFLOW_DATABASE_URL": url, "LEADFLOW_HOME": str(tmp_path)}):
        engine = make_engine(url)
        limited = sync_leads("salesforce", limit=5)
        assert 0 < limited["read"] < 30
        assert state.get_watermark(engine, "salesforce", "Lead") is None
        full = sync_leads("salesforce")
        assert limited["read"] + full["read"] >= 30
        assert state.get_watermark(engine, "salesforce", "Lead") is not None
        engine.dispose()
