"""Fixtures shared by the model tests: one migrated MLflow store per session, copied per test
(migrating takes seconds, copying milliseconds)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def template_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One migrated SQLite store per session."""
    from models import registry as R

    saved = os.environ.pop("MLFLOW_TRACKING_URI", None)
    try:
        home = tmp_path_factory.mktemp("mlflow-template")
        R.init_store(home)
    finally:
        if saved is not None:
            os.environ["MLFLOW_TRACKING_URI"] = saved
    return home / "mlflow.db"


@pytest.fixture
def home(tmp_path: Path, template_db: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A workspace with a private copy of the migrated store."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("MPLCONFIGDIR", str(tmp_path / "mpl"))
    shutil.copy(template_db, tmp_path / "mlflow.db")
    return tmp_path
