"""Shared fixtures: the real-data directory and a seeded random generator."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


def data_dir_path() -> Path:
    """The real-data directory: ``DPRM_DATA_DIR`` or ``../shared/data`` beside the project."""
    return Path(os.environ.get("DPRM_DATA_DIR", ROOT.parent / "shared" / "data")).resolve()


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """Real public market data; tests needing it skip with the reason when it is absent."""
    path = data_dir_path()
    if not path.is_dir():
        pytest.skip(f"real data not found at {path} (set DPRM_DATA_DIR to ../shared/data)")
    return path


@pytest.fixture
def rng() -> np.random.Generator:
    """A seeded generator, passed explicitly to whatever needs randomness."""
    return np.random.default_rng(20261124)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """On pytest-xdist workers only, put the end-to-end files (``tests/test_pipelines``, minutes
    each) before the many quick ones, so that with ``--dist loadfile`` no long file starts last and
    runs alone at the end. A run in one process keeps the collection order."""
    if not hasattr(config, "workerinput"):
        return
    items.sort(key=lambda item: "test_pipelines" not in item.path.parts)  # stable
