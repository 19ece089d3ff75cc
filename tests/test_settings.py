"""Settings are read when used, not when a module is imported."""

from __future__ import annotations

from pathlib import Path

from leadflow import settings


def test_leadflow_home_set_after_import_is_obeyed(monkeypatch, tmp_path):
    monkeypatch.delenv("LEADFLOW_DATABASE_URL", raising=False)
    monkeypatch.setenv("LEADFLOW_HOME", str(tmp_path / "home"))
    assert settings.state_dir() == tmp_path / "home"
    assert settings.database_url() == f"sqlite:///{tmp_path / 'home' / 'leadflow.db'}"
    monkeypatch.delenv("LEADFLOW_HOME")
    assert settings.state_dir() == Path(".leadflow")
