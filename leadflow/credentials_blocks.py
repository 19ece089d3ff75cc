"""Prefect blocks holding one CRM connection each: ``HubSpotCredentials`` and ``SalesforceCredentials``.

Register the types once per Prefect server (``prefect block register -m leadflow.credentials_blocks``),
then create a block in the UI or in code::

    HubSpotCredentials(access_token="pat-...").save("leadflow-hubspot")

``connectors.crm.factory`` reads a setting from its environment variable first, then from the CRM's
block (named by ``LEADFLOW_HUBSPOT_BLOCK`` / ``LEADFLOW_SALESFORCE_BLOCK``, default
``leadflow-hubspot`` / ``leadflow-salesforce``; looked up only when a Prefect API is configured),
then from the per-variable Secret block of ``leadflow.secrets``. Each field is the variable's name
without its CRM prefix (``SALESFORCE_CLIENT_SECRET`` -> ``client_secret``). Secrets are
``SecretStr`` fields: Prefect stores them encrypted and shows them masked, and their reprs say
``'**********'``.
"""

from __future__ import annotations

import os
from typing import Any, Optional

from prefect.blocks.core import Block
from pydantic import Field, SecretStr

from leadflow.secrets import prefect_api_configured


class HubSpotCredentials(Block):
    """A HubSpot private-app token and the API host leadflow talks to."""

    _block_type_name = "leadflow HubSpot credentials"
    _block_type_slug = "leadflow-hubspot-credentials"
    _description = "HubSpot private-app access token (and API host) for leadflow."

    access_token: SecretStr = Field(description="Private-app or OAuth access token.")
    host: str = Field(default="https://api.hubapi.com", description="API host.")


class SalesforceCredentials(Block):
    """A Salesforce org and one way to log in to it: a session id, username-password (plus the
    security token), or a connected app's client credentials."""

    _block_type_name = "leadflow Salesforce credentials"
    _block_type_slug = "leadflow-salesforce-credentials"
    _description = "Salesforce instance, login host and credentials for leadflow."

    instance_url: Optional[str] = Field(default=None, description="e.g. https://acme.my.salesforce.com")
    domain: Optional[str] = Field(default=None, description="Login host: login, test, a My Domain host or a URL.")
    username: Optional[str] = Field(default=None)
    password: Optional[SecretStr] = Field(default=None)
    security_token: Optional[SecretStr] = Field(default=None)
    client_id: Optional[str] = Field(default=None, description="Connected app consumer key.")
    client_secret: Optional[SecretStr] = Field(default=None, description="Connected app consumer secret.")
    session_id: Optional[SecretStr] = Field(default=None, description="An existing session / access token.")


BLOCK_TYPES: dict[str, type[Block]] = {"hubspot": HubSpotCredentials, "salesforce": SalesforceCredentials}
BLOCK_VARIABLES = {"hubspot": "LEADFLOW_HUBSPOT_BLOCK", "salesforce": "LEADFLOW_SALESFORCE_BLOCK"}


class MissingCredentialsBlock(ValueError):
    """``LEADFLOW_<CRM>_BLOCK`` names a block that the Prefect server does not have."""


def block_name_for(crm: str) -> str:
    return os.environ.get(BLOCK_VARIABLES[crm], "").strip() or f"leadflow-{crm}"


def load_credentials_block(crm: str) -> Block | None:
    """The CRM's credentials block, or None (no Prefect API configured, or the default-named block
    does not exist). A block named explicitly by ``LEADFLOW_<CRM>_BLOCK`` must exist."""
    if not prefect_api_configured():
        return None
    name = block_name_for(crm)
    try:
        return BLOCK_TYPES[crm].load(name)
    except ValueError:  # no such block (or block type not registered yet)
        if os.environ.get(BLOCK_VARIABLES[crm], "").strip():
            raise MissingCredentialsBlock(f"{BLOCK_VARIABLES[crm]}={name}: no {BLOCK_TYPES[crm].__name__} "
                                          "block of that name on the Prefect server") from None
        return None
