"""Sandbox fixtures. Reusable by other suites: ``sandbox_server`` (module-scoped, seeded
sandbox), ``hubspot_client``, ``salesforce_client`` (real clients against it), ``sandbox_faults``
(set faults for one test, cleared afterwards); ``sandbox_support.small_seed`` builds raw seeds."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from sandbox import SandboxHandle, start_sandbox

SEED_LEADS = 60


@pytest.fixture(scope="module")
def sandbox_server() -> Iterator[SandboxHandle]:
    """One in-process sandbox per test module, seeded with 60 generated leads per CRM."""
    with start_sandbox(SEED_LEADS, random_seed=7) as handle:
        yield handle


@pytest.fixture(scope="module")
def hubspot_client(sandbox_server: SandboxHandle) -> Any:
    return sandbox_server.hubspot_client()


@pytest.fixture(scope="module")
def salesforce_client(sandbox_server: SandboxHandle) -> Any:
    return sandbox_server.salesforce_client("session")


@pytest.fixture()
def sandbox_faults(sandbox_server: SandboxHandle) -> Iterator[Any]:
    """``sandbox_faults(spec)`` / ``sandbox_faults(rate_limits=...)`` for one test; all cleared after it."""

    def apply(spec: Any = None, rate_limits: Any = None, seed: int | None = None) -> None:
        if spec is not None:
            sandbox_server.set_faults(spec, seed)
        if rate_limits is not None:
            sandbox_server.set_rate_limits(rate_limits)

    yield apply
    sandbox_server.set_faults(None)
    sandbox_server.set_rate_limits(None)
    sandbox_server.reset_limits()
    sandbox_server.restore_salesforce_session()
