"""Build a CRM connector from the environment (or a running sandbox).

``connector_from_env("hubspot")`` reads ``HUBSPOT_ACCESS_TOKEN`` and ``HUBSPOT_HOST``;
``connector_from_env("salesforce")`` reads ``SALESFORCE_INSTANCE_URL`` plus one of:
``SALESFORCE_SESSION_ID``; ``SALESFORCE_USERNAME``/``SALESFORCE_PASSWORD`` (and optionally
``SALESFORCE_SECURITY_TOKEN``); ``SALESFORCE_CLIENT_ID``/``SALESFORCE_CLIENT_SECRET``. Logins go to
``SALESFORCE_DOMAIN`` (``login``, ``test``, a My Domain host or a URL; see
``connectors/crm/salesforce_login.py``).
Each setting is read from its environment variable, else from the CRM's Prefect credentials block
(``leadflow/credentials_blocks.py``: ``LEADFLOW_HUBSPOT_BLOCK`` / ``LEADFLOW_SALESFORCE_BLOCK``,
default ``leadflow-hubspot`` / ``leadflow-salesforce``), else (secrets) from the variable's Prefect
Secret block (``leadflow.secrets``). Secrets are held as ``SecretStr``: they never appear in reprs,
logs or exceptions. A missing variable is a ``MissingCredential`` naming it and where it was looked for. An ``http://127.0.0.1:...`` Salesforce URL is
reached through ``leadflow.http_session`` (simple-salesforce forces https otherwise).

``LEADFLOW_MAPPING_HUBSPOT`` / ``LEADFLOW_MAPPING_SALESFORCE``: the mapping file to use instead of
``mappings/<crm>.yaml``.

Overrides: any config field (``max_calls``, ``daily_share``, ``page_size``, ``timeout``, ...) or
connector argument (``retry``, ``meter``, ``mapping``, ``mark_reads``).
``LEADFLOW_SALESFORCE_BULK_THRESHOLD``: window reads of more leads use Bulk API 2.0 (``0`` or
``off``: never; default ``settings.SALESFORCE_BULK_THRESHOLD``).
``LEADFLOW_SALESFORCE_SKIP_OWN_WRITES`` (``1``/``true``/``on``; default off): window reads leave
out leads last modified by leadflow's Salesforce user; requires a dedicated integration user (see
``connectors/crm/salesforce.py``). ``LEADFLOW_SALESFORCE_USER_ID``: that user's id (15 or 18
characters, ``005...``), pinned instead of asked of the userinfo endpoint.
"""

from __future__ import annotations

import os
import re
from dataclasses import fields as dc_fields
from typing import Any
from urllib.parse import urlparse

from pydantic import SecretStr
from sqlalchemy import Engine

from connectors.crm.hubspot import HubSpotConfig, HubSpotConnector
from connectors.crm.salesforce import SalesforceConfig, SalesforceConfigError, SalesforceConnector, checked_user_id
from connectors.crm.salesforce_login import login_base_url
from leadflow.secrets import block_name, credential, prefect_api_configured

CONNECTOR_ARGS = frozenset({"retry", "meter", "mapping", "mark_reads", "sf"})


class MissingCredential(ValueError):
    """A required environment variable (or Secret block) is not set; the message names it."""


class CrmBlock:
    """The CRM's Prefect credentials block (``leadflow/credentials_blocks.py``), loaded on the first
    lookup and only when a Prefect API is configured (a plain CLI run never imports Prefect)."""

    def __init__(self, crm: str, prefix: str):
        self.crm, self.prefix = crm, prefix
        self._loaded = False
        self._block: Any = None

    def get(self, variable: str) -> Any:
        """The block's field for ``variable`` (``SALESFORCE_CLIENT_SECRET`` -> ``client_secret``), or None."""
        if not self._loaded:
            self._loaded = True
            if prefect_api_configured():
                from leadflow.credentials_blocks import load_credentials_block

                self._block = load_credentials_block(self.crm)
        if self._block is None:
            return None
        return getattr(self._block, variable.removeprefix(self.prefix).lower(), None)

    def where(self, variable: str, secret: bool = True) -> str:
        """Where ``variable`` was looked for, for the missing-credential message."""
        places = ["environment variable"]
        if self.crm:
            named = os.environ.get(f"LEADFLOW_{self.crm.upper()}_BLOCK", "").strip() or f"leadflow-{self.crm}"
            places.append(f"field {variable.removeprefix(self.prefix).lower()} of Prefect block '{named}'")
        if secret:
            places.append(f"Prefect Secret block '{block_name(variable)}'")
        return ", ".join(places)


NO_BLOCK = CrmBlock("", "")
NO_BLOCK._loaded = True


def _secret(name: str, required: bool = False, block: CrmBlock = NO_BLOCK) -> SecretStr | None:
    """The environment variable, else the CRM block's field, else the variable's Secret block."""
    value: Any = SecretStr(os.environ[name]) if os.environ.get(name) else block.get(name)
    if value is None:
        value = credential(name)
    elif not isinstance(value, SecretStr):
        value = SecretStr(str(value))
    if required and value is None:
        raise MissingCredential(f"{name} is not set ({block.where(name)})")
    return value


def _plain(name: str, default: str | None = None, required: bool = False, block: CrmBlock = NO_BLOCK) -> str | None:
    value = os.environ.get(name) or block.get(name) or default
    if required and not value:
        raise MissingCredential(f"{name} is not set ({block.where(name, secret=False)})")
    return value


def _split(cls: type, overrides: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    names = {f.name for f in dc_fields(cls)}
    config = {k: v for k, v in overrides.items() if k in names}
    connector = {k: v for k, v in overrides.items() if k in CONNECTOR_ARGS}
    unknown = set(overrides) - set(config) - set(connector)
    if unknown:
        raise TypeError(f"unknown connector option(s): {', '.join(sorted(unknown))}")
    return config, connector


def is_loopback_http(url: str) -> bool:
    parsed = urlparse(url)
    return parsed.scheme == "http" and parsed.hostname in ("127.0.0.1", "localhost", "::1")


def loopback_session_factory(url: str):
    """Sessions that let simple-salesforce (https only) reach ``http://127.0.0.1:PORT``."""
    from leadflow.http_session import LoopbackSession

    return lambda: LoopbackSession(url)


def _run_options(crm: str, overrides: dict[str, Any]) -> dict[str, Any]:
    """Per-run limits from the environment (explicit overrides win):
    ``LEADFLOW_API_MAX_CALLS`` (calls per run), ``LEADFLOW_API_DAILY_SHARE`` (e.g. 0.2 of the
    daily quota left), ``LEADFLOW_PREFECT_RATE_LIMIT`` (``1`` for ``leadflow-<crm>-api``, or a name)."""
    out = dict(overrides)
    if "max_calls" not in out and os.environ.get("LEADFLOW_API_MAX_CALLS"):
        out["max_calls"] = int(os.environ["LEADFLOW_API_MAX_CALLS"])
    if "daily_share" not in out and os.environ.get("LEADFLOW_API_DAILY_SHARE"):
        out["daily_share"] = float(os.environ["LEADFLOW_API_DAILY_SHARE"])
    fleet = os.environ.get("LEADFLOW_PREFECT_RATE_LIMIT")
    if "fleet_rate_limit" not in out and fleet and fleet != "0":
        out["fleet_rate_limit"] = f"leadflow-{crm}-api" if fleet == "1" else fleet
    return out


RATE_SPEC = re.compile(r"^\s*(\d+)\s*/\s*(\d+(?:\.\d+)?)\s*(ms|s)\s*$")


def _hubspot_rate(overrides: dict[str, Any]) -> dict[str, Any]:
    """``burst_limit``/``burst_period`` from ``LEADFLOW_HUBSPOT_RATE_LIMIT`` unless overridden:
    the portal's allowance, ``190/10s`` by default (Professional, Enterprise), ``100/10s`` (Free,
    Starter), ``250/10s`` (API limit increase); ``off`` for a stand-in that enforces none."""
    name = "LEADFLOW_HUBSPOT_RATE_LIMIT"
    raw = os.environ.get(name, "").strip()
    if "burst_limit" in overrides or not raw:
        return overrides
    if raw.lower() == "off":
        return {**overrides, "burst_limit": None}
    match = RATE_SPEC.match(raw)
    if not match or int(match.group(1)) <= 0 or float(match.group(2)) <= 0:
        raise ValueError(f"{name}={raw!r}: expected calls per window such as 190/10s, or off")
    seconds = float(match.group(2)) / (1000 if match.group(3) == "ms" else 1)
    return {**overrides, "burst_limit": int(match.group(1)), "burst_period": seconds}


def _bulk_threshold(overrides: dict[str, Any]) -> dict[str, Any]:
    """``bulk_threshold`` from ``LEADFLOW_SALESFORCE_BULK_THRESHOLD`` unless overridden (``0``/``off``: None)."""
    name = "LEADFLOW_SALESFORCE_BULK_THRESHOLD"
    raw = os.environ.get(name, "").strip()
    if "bulk_threshold" in overrides or not raw:
        return overrides
    if raw.lower() in ("0", "off"):
        return {**overrides, "bulk_threshold": None}
    if not (raw.isascii() and raw.isdigit()):
        raise SalesforceConfigError(f"{name} must be a whole number of leads, 0 or 'off'; got {raw!r}")
    return {**overrides, "bulk_threshold": int(raw)}


TRUE_WORDS = frozenset({"1", "true", "on", "yes"})
FALSE_WORDS = frozenset({"0", "false", "off", "no"})


def _flag(name: str) -> bool | None:
    """The on/off environment variable ``name`` (None when unset or empty)."""
    raw = os.environ.get(name, "").strip().lower()
    if not raw:
        return None
    if raw in TRUE_WORDS | FALSE_WORDS:
        return raw in TRUE_WORDS
    raise SalesforceConfigError(f"{name} must be 1/true/on or 0/false/off; got {os.environ[name]!r}")


def own_writes_from_env(overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """``overrides`` plus ``skip_own_writes`` from ``LEADFLOW_SALESFORCE_SKIP_OWN_WRITES`` and
    ``integration_user_id`` from ``LEADFLOW_SALESFORCE_USER_ID``, unless overridden."""
    out = dict(overrides or {})
    skip = _flag("LEADFLOW_SALESFORCE_SKIP_OWN_WRITES")
    if "skip_own_writes" not in out and skip is not None:
        out["skip_own_writes"] = skip
    pinned = os.environ.get("LEADFLOW_SALESFORCE_USER_ID", "").strip()
    if "integration_user_id" not in out and pinned:
        out["integration_user_id"] = checked_user_id(pinned, "LEADFLOW_SALESFORCE_USER_ID")
    return out


def hubspot_config_from_env(**overrides: Any) -> HubSpotConfig:
    block = CrmBlock("hubspot", "HUBSPOT_")
    token = _secret("HUBSPOT_ACCESS_TOKEN", required=True, block=block)
    overrides = _hubspot_rate(_run_options("hubspot", overrides))
    return HubSpotConfig(access_token=token, host=_plain("HUBSPOT_HOST", "https://api.hubapi.com", block=block),
                         **overrides)


def salesforce_config_from_env(**overrides: Any) -> SalesforceConfig:
    block = CrmBlock("salesforce", "SALESFORCE_")
    url = _plain("SALESFORCE_INSTANCE_URL", required=True, block=block)
    overrides = own_writes_from_env(_bulk_threshold(_run_options("salesforce", overrides)))
    config = SalesforceConfig(
        instance_url=url,
        username=_plain("SALESFORCE_USERNAME", block=block),
        password=_secret("SALESFORCE_PASSWORD", block=block),
        security_token=_secret("SALESFORCE_SECURITY_TOKEN", block=block),
        client_id=_plain("SALESFORCE_CLIENT_ID", block=block),
        client_secret=_secret("SALESFORCE_CLIENT_SECRET", block=block),
        session_id=_secret("SALESFORCE_SESSION_ID", block=block),
        **{"domain": _plain("SALESFORCE_DOMAIN", block=block), **overrides},
    )
    if config.username and not config.password:
        raise MissingCredential("SALESFORCE_PASSWORD is not set (SALESFORCE_USERNAME is)")
    if config.client_id and not config.client_secret:
        raise MissingCredential("SALESFORCE_CLIENT_SECRET is not set (SALESFORCE_CLIENT_ID is)")
    if not (config.session_id or config.can_login):
        raise MissingCredential(
            "no Salesforce credentials: set SALESFORCE_SESSION_ID, or SALESFORCE_USERNAME and "
            "SALESFORCE_PASSWORD, or SALESFORCE_CLIENT_ID and SALESFORCE_CLIENT_SECRET"
        )
    login_url = login_base_url(config.domain, url)  # a bad SALESFORCE_DOMAIN fails here, before any request
    loopback = next((u for u in (url, login_url) if is_loopback_http(u)), None)
    if config.session_factory is None and loopback:
        config.session_factory = loopback_session_factory(loopback)
    return config


def connector_from_env(crm: str, engine: Engine | None = None, **overrides: Any) -> HubSpotConnector | SalesforceConnector:
    """The connector for ``crm`` ("hubspot" | "salesforce"), configured from the environment."""
    if engine is None:
        from leadflow import settings
        from state.schema import engine_for

        engine = engine_for(settings.database_url())
    overrides = _mapping_from_settings(crm, overrides)
    if crm == "hubspot":
        config_args, connector_args = _split(HubSpotConfig, overrides)
        return HubSpotConnector(hubspot_config_from_env(**config_args), engine, **connector_args)
    if crm == "salesforce":
        config_args, connector_args = _split(SalesforceConfig, overrides)
        return SalesforceConnector(salesforce_config_from_env(**config_args), engine, **connector_args)
    raise ValueError(f"unknown CRM {crm!r}: expected 'hubspot' or 'salesforce'")


def _mapping_from_settings(crm: str, overrides: dict[str, Any]) -> dict[str, Any]:
    """``mapping`` from ``LEADFLOW_MAPPING_<CRM>`` (``leadflow.settings.mapping_path``) unless overridden."""
    from leadflow import settings
    from mappings import load_mapping

    path = settings.mapping_path(crm) if crm in settings.CRMS else None
    if "mapping" in overrides or path is None:
        return overrides
    return {**overrides, "mapping": load_mapping(path)}


def _attr(obj: Any, *names: str) -> Any:
    for name in names:
        if isinstance(obj, dict) and name in obj:
            return obj[name]
        if hasattr(obj, name):
            return getattr(obj, name)
    return None


def connector_for_sandbox(sandbox: Any, crm: str, engine: Engine, **overrides: Any) -> HubSpotConnector | SalesforceConnector:
    """A connector pointed at a running sandbox (``sandbox.url`` and its credentials)."""
    url = str(sandbox.url).rstrip("/")
    creds = _attr(sandbox, "credentials") or sandbox
    if crm == "hubspot":
        config_args, connector_args = _split(HubSpotConfig, overrides)
        token = _attr(sandbox, "hubspot_token") or _attr(creds, "hubspot_token")
        return HubSpotConnector(HubSpotConfig(access_token=SecretStr(str(token)), host=url, **config_args), engine,
                                **connector_args)
    if crm == "salesforce":
        config_args, connector_args = _split(SalesforceConfig, overrides)
        config_args.setdefault("session_factory", loopback_session_factory(url))
        if "session_id" not in config_args and not config_args.get("username"):
            # a session id to start with, username-password to log in again when it expires
            session_id = _attr(creds, "session_id")
            config_args["session_id"] = SecretStr(str(session_id)) if session_id else None
            config_args["username"] = _attr(creds, "username")
            password = _attr(creds, "password")
            token = _attr(creds, "security_token")
            config_args["password"] = SecretStr(str(password)) if password else None
            config_args["security_token"] = SecretStr(str(token)) if token else None
            config_args.setdefault("domain", url)
        return SalesforceConnector(SalesforceConfig(instance_url=url, **config_args), engine, **connector_args)
    raise ValueError(f"unknown CRM {crm!r}: expected 'hubspot' or 'salesforce'")
