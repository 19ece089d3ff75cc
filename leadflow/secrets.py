"""Credentials: an environment variable, else a Prefect Secret block, never from code or files.

``credential("HUBSPOT_ACCESS_TOKEN")`` reads the variable; when it is unset, it loads the Secret
block ``leadflow-hubspot-access-token`` (only when a Prefect API is configured — ``PREFECT_API_URL``
in the environment or Prefect's settings — so a plain CLI run with no server never starts one). Values come back as ``SecretStr`` so they cannot leak into reprs,
logs or exceptions by accident.
"""

from __future__ import annotations

import os
import sys

from pydantic import SecretStr

SECRET_VARIABLES = {
    "hubspot": ("HUBSPOT_ACCESS_TOKEN",),
    "salesforce": ("SALESFORCE_PASSWORD", "SALESFORCE_SECURITY_TOKEN", "SALESFORCE_CLIENT_SECRET",
                   "SALESFORCE_SESSION_ID"),
}


def block_name(variable: str) -> str:
    return "leadflow-" + variable.lower().replace("_", "-")


def credential(variable: str) -> SecretStr | None:
    value = os.environ.get(variable)
    if value:
        return SecretStr(value)
    if not prefect_api_configured():
        return None
    return _from_block(block_name(variable))


def prefect_api_configured() -> bool:
    if os.environ.get("PREFECT_API_URL"):
        return True
    if "prefect" not in sys.modules:  # never import Prefect (or start a server) just to look
        return False
    from prefect.settings import PREFECT_API_URL

    return bool(PREFECT_API_URL.value())


def _from_block(name: str) -> SecretStr | None:
    from prefect.blocks.system import Secret

    try:
        return SecretStr(str(Secret.load(name).get()))
    except ValueError:  # no such block
        return None


def save_credential(variable: str, value: str) -> str:
    """Store a credential as a Prefect Secret block; returns the block's name."""
    from prefect.blocks.system import Secret

    name = block_name(variable)
    Secret(value=SecretStr(value)).save(name, overwrite=True)
    return name
