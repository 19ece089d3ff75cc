"""Shared fixtures. The Prefect test server is started once per test process, on first use
(``prefect_server`` below); most tests never need it.

``make test`` runs the suite in two pytest-xdist worker processes (``--dist loadfile``: a file's
tests stay together and in order, as its module fixtures expect). Each worker has its own Prefect
home, state home and Prefect test server, so no test sees another process's blocks, artifacts or
flow runs; plain ``pytest`` runs the same suite in one process."""

from __future__ import annotations

import os
import tempfile
import uuid
from pathlib import Path

# Each test process gets a Prefect home and a leadflow home of its own (an xdist worker inherits the
# controller's environment, hence the marker), set before Prefect is imported anywhere. A CLI run that
# names no LEADFLOW_HOME then writes there, not into ./.leadflow of the checkout.
for _name, _prefix in (("PREFECT_HOME", "leadflow-prefect-"), ("LEADFLOW_HOME", "leadflow-home-")):
    _marker = f"LEADFLOW_TEST_OWN_{_name}"
    if os.environ.get(_name) in (None, os.environ.get(_marker)):
        os.environ[_name] = os.environ[_marker] = tempfile.mkdtemp(prefix=_prefix)
# An xdist worker is started with COLUMNS=80, and a rich Console made while COLUMNS is set keeps that
# width for good; without it the CLI's consoles follow the COLUMNS a test sets around its run.
os.environ.pop("COLUMNS", None)
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_BATCH_SIZE", "100")
os.environ.setdefault("PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_READ_BATCH_SIZE", "100")
os.environ.setdefault("PREFECT_SERVER_SERVICES_EVENT_PERSISTER_BATCH_SIZE", "200")
os.environ.setdefault("PREFECT_SERVER_LOGGING_LEVEL", "CRITICAL")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "300")
# A pipeline run starts with a full garbage collection before it freezes the heap
# (leadflow.runtime.frozen_heap). In a worker that walks the worker's objects once per run; in this
# process it walks everything every earlier test left alive, about a second per run by mid-suite,
# for a suite of a few hundred runs. The tests' in-process runs skip it (LEADFLOW_GC_FREEZE=0); the
# runs of the real CLI in a subprocess (tests/flows/test_crash_resume.py) keep the shipped default,
# and tests/test_runtime.py covers frozen_heap itself.
os.environ.setdefault("LEADFLOW_GC_FREEZE", "0")

import pytest

from fixture_files import NPPES_FIXTURES, NUCC_TAXONOMY_CSV, PROJECT_ROOT, require_outside_file  # noqa: F401

POSTGRES_URL = os.environ.get("LEADFLOW_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
REQUIRE_POSTGRES = os.environ.get("LEADFLOW_REQUIRE_POSTGRES") == "1"


def _postgres_problem() -> str | None:
    from sqlalchemy import create_engine, text

    try:
        engine = create_engine(POSTGRES_URL, connect_args={"connect_timeout": 3})
        with engine.connect() as conn:
            conn.execute(text("select 1"))
        engine.dispose()
        return None
    except Exception as exc:  # noqa: BLE001 - any failure means "not reachable here"
        return f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"


@pytest.fixture(autouse=True)
def _own_environment():
    """Each test leaves ``os.environ`` as it found it: a CLI run in the test process sets variables
    (``--mapping`` exports ``LEADFLOW_MAPPING_<CRM>``, a test sets a credential) that would otherwise
    reach later tests and the subprocesses they start."""
    saved = dict(os.environ)
    yield
    for name in set(os.environ) - set(saved):
        del os.environ[name]
    for name, value in saved.items():
        if os.environ.get(name) != value:
            os.environ[name] = value


@pytest.fixture(scope="session")
def postgres_base_url() -> str:
    problem = _postgres_problem()
    if problem:
        message = (
            f"PostgreSQL not reachable at {POSTGRES_URL} ({problem}). Set LEADFLOW_TEST_POSTGRES_URL "
            "to a database you can write to; CI (.ci/run) requires it."
        )
        if REQUIRE_POSTGRES:
            pytest.fail(message)
        pytest.skip(message)
    return POSTGRES_URL


@pytest.fixture()
def postgres_url(postgres_base_url: str):
    """A fresh schema in the test database, dropped afterwards."""
    from sqlalchemy import create_engine, text

    schema = f"lf_test_{uuid.uuid4().hex[:10]}"
    admin = create_engine(postgres_base_url)
    with admin.begin() as conn:
        conn.execute(text(f'create schema "{schema}"'))
    yield f"{postgres_base_url}?options=-csearch_path%3D{schema}"
    with admin.begin() as conn:
        conn.execute(text(f'drop schema "{schema}" cascade'))
    admin.dispose()


@pytest.fixture()
def nucc_taxonomy_csv() -> Path:
    """NUCC's full taxonomy file (outside the repository): skipped locally when absent, failed under CI."""
    return require_outside_file(NUCC_TAXONOMY_CSV, "NUCC taxonomy code set")


@pytest.fixture()
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'leadflow.db'}"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest) -> str:
    """The state store on SQLite and on PostgreSQL: a test using it runs on both."""
    if request.param == "sqlite":
        return request.getfixturevalue("sqlite_url")
    return request.getfixturevalue("postgres_url")


@pytest.fixture(scope="session")
def prefect_server():
    """One Prefect test server for the test process (each xdist worker has its own), started by the
    first test that asks for it (about 10 s idle; up to 300 s allowed on a loaded machine), with flow
    heartbeats off so a sync flow does not wait a second on exit."""
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=300):
        with temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
            yield


@pytest.fixture()
def sandbox():
    """A fresh in-process sandbox with the default seed (modules that need another seed define their own)."""
    from sandbox import start_sandbox

    with start_sandbox() as running:
        yield running


@pytest.fixture()
def engine(sqlite_url):
    """The state store on a fresh SQLite file."""
    from state.schema import make_engine

    eng = make_engine(sqlite_url)
    yield eng
    eng.dispose()
