"""Where the tests' data files are (imported by tests/conftest.py and the enrichment helpers).

In the repository: the recorded NPPES API responses (public CMS data; sources and licences in
``tests/fixtures/nppes/SOURCES.md``) and ``tests/fixtures/taxonomy_sample.csv``, a three-code
taxonomy file in NUCC's column layout written for these tests.

Outside it: NUCC's full taxonomy code set (© American Medical Association; it may not be committed)
at ``$LEADFLOW_SHARED_DIR/data/nucc_taxonomy.csv`` (default ``../shared`` beside the checkout). A
test that needs it asks ``require_outside_file``: locally it skips with the reason; under CI
(``CI=true`` or ``LEADFLOW_REQUIRE_POSTGRES=1``) a missing file fails the test.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parent.parent
FIXTURES = PROJECT_ROOT / "tests" / "fixtures"
NPPES_FIXTURES = FIXTURES / "nppes"
TAXONOMY_SAMPLE_CSV = FIXTURES / "taxonomy_sample.csv"
SHARED = Path(os.environ.get("LEADFLOW_SHARED_DIR") or PROJECT_ROOT.parent / "shared")
NUCC_TAXONOMY_CSV = SHARED / "data" / "nucc_taxonomy.csv"


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes") or \
        os.environ.get("LEADFLOW_REQUIRE_POSTGRES") == "1"


def require_outside_file(path: Path, what: str) -> Path:
    """``path`` when it exists; else skip (locally) or fail (CI), naming the file and the setting."""
    if path.is_file():
        return path
    message = (f"{what} not found at {path}: it is not in the repository; set LEADFLOW_SHARED_DIR to the "
               "folder holding data/nucc_taxonomy.csv")
    if in_ci():
        pytest.fail(f"{message} (required under CI)", pytrace=False)
    pytest.skip(message)
