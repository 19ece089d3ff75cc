"""The suite owns its fixtures: with ``../shared`` out of reach, only the tests of NUCC's full file
(which may not be committed) stay out, skipped locally and failed under CI."""

from __future__ import annotations

import os
import subprocess
import sys

from fixture_files import NPPES_FIXTURES, PROJECT_ROOT, TAXONOMY_SAMPLE_CSV

OUTSIDE_FILE_TESTS = {"tests/enrichment/test_nppes_records.py::test_every_non_individual_nucc_code_has_a_category",
                      "tests/enrichment/test_nppes_records.py::"
                      "test_every_active_nucc_hospital_code_has_a_kind_and_the_kind_matches_its_name",
                      "tests/enrichment/test_nppes_records.py::test_the_full_nucc_file_gives_the_same_spellings"}


def _pytest_without_shared(tmp_path, **env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items()
             if k not in ("CI", "LEADFLOW_REQUIRE_POSTGRES") and not k.startswith("PYTEST")}
    clean.update(LEADFLOW_SHARED_DIR=str(tmp_path / "no-shared"), PYTHONPATH=str(PROJECT_ROOT), **env)
    return subprocess.run([sys.executable, "-m", "pytest", "tests/enrichment", "-q", "-rsE", "-p", "no:cacheprovider"],
                          cwd=PROJECT_ROOT, env=clean, capture_output=True, text=True, timeout=600)


def test_the_nppes_responses_and_the_taxonomy_sample_are_in_the_repository():
    assert NPPES_FIXTURES.is_relative_to(PROJECT_ROOT) and len(list(NPPES_FIXTURES.glob("*.json"))) == 12
    assert (NPPES_FIXTURES / "SOURCES.md").is_file()  # where each body came from, and the licences
    header = TAXONOMY_SAMPLE_CSV.read_text(encoding="utf-8").splitlines()[0]
    assert header == "Code,Grouping,Classification,Specialization,Definition,Notes,Display Name,Section"


def test_without_shared_only_the_full_nucc_tests_skip(tmp_path):
    run = _pytest_without_shared(tmp_path)
    assert run.returncode == 0, run.stdout[-3000:]
    skipped = [line for line in run.stdout.splitlines() if line.startswith("SKIPPED")]
    assert len(skipped) == len(OUTSIDE_FILE_TESTS), run.stdout[-3000:]
    assert all("NUCC taxonomy code set not found" in line and "LEADFLOW_SHARED_DIR" in line for line in skipped)


def test_under_ci_a_missing_nucc_file_fails_the_suite(tmp_path):
    run = _pytest_without_shared(tmp_path, CI="true")
    assert run.returncode != 0
    failed = {line.split(" - ")[0].removeprefix("ERROR ") for line in run.stdout.splitlines() if line.startswith("ERROR ")}
    assert failed == OUTSIDE_FILE_TESTS, run.stdout[-3000:]
    assert "required under CI" in run.stdout and "SKIPPED" not in run.stdout
