"""Fixtures for the scoring tests; lead builders live in scoring_leads.py."""

from __future__ import annotations

import pytest

from scoring import QualificationModel, load_model


@pytest.fixture(scope="session")
def model() -> QualificationModel:
    return load_model()
