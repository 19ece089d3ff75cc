"""Switching the state store: a Salesforce sync on SQLite, ``state copy`` to PostgreSQL, and the
next sync on PostgreSQL writes nothing; without the copy, the same sync rewrites leads."""

from __future__ import annotations

import pytest

from sandbox.environment import environment, sandbox_environment
from flows.sync import sync_leads
from state.copy import copy_state
from sandbox import start_sandbox

pytestmark = [pytest.mark.prefect, pytest.mark.postgres]


def _env(handle, url: str, home) -> dict[str, str]:
    return {**sandbox_environment(handle), "LEADFLOW_DATABASE_URL": url, "LEADFLOW_HOME": str(home)}


def test_a_sync_after_copying_the_state_to_postgres_writes_nothing(prefect_server, postgres_url, tmp_path):
    sqlite_url = f"sqlite:///{tmp_path / 'state.db'}"
    with start_sandbox(40, random_seed=5) as handle:
        with environment(_env(handle, sqlite_url, tmp_path)):
            first = sync_leads("salesforce")
        assert first["changed"] > 0 and first["tasks_created"] > 0 and first["failed"] == 0
        with environment(_env(handle, f"sqlite:///{tmp_path / 'empty.db'}", tmp_path)):
            control = sync_leads("salesforce", dry_run=True)  # what a store that did not move would do
        assert control["changed"] > 0
        copy_state(sqlite_url, postgres_url)
        with environment(_env(handle, postgres_url, tmp_path)):
            after = sync_leads("salesforce")
    assert (after["changed"], after["tasks_created"], after["failed"]) == (0, 0, 0), after
