"""Fixtures shared by the model tests: a migrated MLflow store copied per test."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def registry_template_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One migrated SQLite store per session (migrating takes seconds, copying milliseconds)."""
    from models import registry as R

    saved = os.environ.pop("MLFLOW_TRACKING_URI", None)
    try:
        home = tmp_path_factory.mktemp("mlflow-shared-template")
        R.init_store(home)
    finally:
        if saved is not None:
            os.environ["MLFLOW_TRACKING_URI"] = saved
    return home / "mlflow.db"


@pytest.fixture
def registry_home(tmp_path: Path, registry_template_db: Path,
                  monkeypatch: pytest.MonkeyPatch) -> Path:
    """A workspace with a private copy of the migrated store."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    shutil.copy(registry_template_db, tmp_path / "mlflow.db")
    return tmp_path
