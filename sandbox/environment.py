"""Pointing leadflow at a running sandbox: the environment variables its connectors read, and a
context manager that sets them for a block (the demo, the benchmark and the tests share these)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


def sandbox_environment(handle: Any) -> dict[str, str]:
    """The environment variables that point leadflow's connectors at a running sandbox."""
    creds = handle.salesforce
    return {
        "HUBSPOT_ACCESS_TOKEN": handle.hubspot_token,
        "HUBSPOT_HOST": handle.url,
        "SALESFORCE_INSTANCE_URL": handle.url,
        "SALESFORCE_SESSION_ID": creds.session_id,
        "SALESFORCE_USERNAME": creds.username,
        "SALESFORCE_PASSWORD": creds.password,
        "SALESFORCE_DOMAIN": handle.url,  # where a re-login goes when the session expires
        "LEADFLOW_NPPES_URL": handle.nppes_url,
    }


@contextmanager
def environment(values: dict[str, str]) -> Iterator[None]:
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
