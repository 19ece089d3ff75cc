"""Constants and environment-driven settings, each read when it is used (a test or a command that
sets a variable later is obeyed). Credentials are read by leadflow/secrets.py and the connectors' factory."""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_HOME = ".leadflow"
DEFAULT_NPPES_URL = "https://npiregistry.cms.hhs.gov/api/"

HUBSPOT_BATCH_SIZE = 100
HUBSPOT_SEARCH_PAGE_SIZE = 200
HUBSPOT_SEARCH_RESULT_CAP = 10_000
SALESFORCE_COLLECTION_SIZE = 200
SALESFORCE_QUERY_PAGE_SIZE = 2_000
SALESFORCE_BULK_THRESHOLD = 10_000  # window reads of more leads use Bulk API 2.0 (Salesforce: 10k+ rows)
LOOKBACK_SECONDS = 300


def state_dir() -> Path:
    """LEADFLOW_HOME (default ./.leadflow), read when asked: the SQLite file, previews, the demo."""
    return Path(os.environ.get("LEADFLOW_HOME") or DEFAULT_HOME)


def database_url() -> str:
    """LEADFLOW_DATABASE_URL, or an SQLite file under LEADFLOW_HOME (default ./.leadflow)."""
    url = os.environ.get("LEADFLOW_DATABASE_URL")
    if url:
        return url
    home = state_dir()
    home.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{home / 'leadflow.db'}"


def freeze_heap_during_runs() -> bool:
    """LEADFLOW_GC_FREEZE (default on; 0 turns it off): see ``leadflow.runtime.frozen_heap``."""
    return os.environ.get("LEADFLOW_GC_FREEZE", "1").strip().lower() not in ("0", "off", "false", "no")


def nppes_url() -> str:
    return os.environ.get("LEADFLOW_NPPES_URL", DEFAULT_NPPES_URL)


def redact_url(url: str) -> str:
    """A database URL with its password replaced, fit for logs."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - never let a malformed URL leak through an error message
        return "<unparseable database url>"


CRMS = ("hubspot", "salesforce")


class SettingError(ValueError):
    """An environment setting has a value leadflow cannot use; the message names the variable."""


def model_path() -> Path | None:
    """LEADFLOW_MODEL: a qualification model file to use instead of scoring/default_model.yaml."""
    raw = os.environ.get("LEADFLOW_MODEL", "").strip()
    return Path(raw).expanduser() if raw else None


def mapping_variable(crm: str) -> str:
    return f"LEADFLOW_MAPPING_{crm.upper()}"


def mapping_path(crm: str) -> Path | None:
    """LEADFLOW_MAPPING_HUBSPOT / LEADFLOW_MAPPING_SALESFORCE: a mapping file to use instead of
    mappings/<crm>.yaml."""
    raw = os.environ.get(mapping_variable(crm), "").strip()
    return Path(raw).expanduser() if raw else None
