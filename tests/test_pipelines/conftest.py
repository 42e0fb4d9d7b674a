"""Pipeline test fixtures: one Prefect test harness per session and a prepared workspace.

The environment is set when this file is imported, before prefect or mlflow: Prefect's state in a
temporary folder, telemetry off, quiet logs, a long start-up timeout for the temporary API server,
and no inherited ``PREFECT_API_URL`` / ``MLFLOW_TRACKING_URI`` (tests must never reach a real
server by accident).

Fixtures
--------
prefect_harness : session-scoped ``prefect_test_harness`` (a temporary API on a fresh database,
    10-15 s to start); yields the API URL. Use it only on tests that run flows.
embedded_template : session-scoped workspace with the embedded arch data ingested, its daily
    features built and the MLflow store initialised (no Prefect involved).
embedded_home : a private copy of the template for one test, with ``DPRM_HOME`` pointing at it.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

_PREFECT_TMP = Path(tempfile.mkdtemp(prefix="dprm-prefect-test-"))
os.environ.update(
    PREFECT_HOME=str(_PREFECT_TMP),
    PREFECT_RESULTS_LOCAL_STORAGE_PATH=str(_PREFECT_TMP / "storage"),
    PREFECT_SERVER_ANALYTICS_ENABLED="false",
    DO_NOT_TRACK="1",
    PREFECT_LOGGING_LEVEL="WARNING",
    PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="120",
    MLFLOW_DISABLE_TELEMETRY="true",
    MLFLOW_LOGGING_LEVEL="WARNING",
    MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT="true",
    MPLCONFIGDIR=str(_PREFECT_TMP / "mpl"),
)
for _var in ("PREFECT_API_URL", "MLFLOW_TRACKING_URI", "DPRM_RUNNER", "DPRM_DASK_ADDRESS"):
    os.environ.pop(_var, None)

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def prefect_harness() -> Iterator[str]:
    """A Prefect test harness for the whole session; yields its API URL."""
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield str(PREFECT_API_URL.value())


@pytest.fixture(scope="session")
def embedded_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A workspace with the embedded data, its 1D features and an initialised MLflow store."""
    from pipelines import steps
    from pipelines.flow_config import FeaturesFlowConfig, IngestFlowConfig

    home = tmp_path_factory.mktemp("embedded-template") / "home"
    steps.ingest_source(home, "embedded", IngestFlowConfig())
    steps.build_features(home, FeaturesFlowConfig())
    from models import registry

    registry.init_store(home)
    return home


@pytest.fixture
def embedded_home(embedded_template: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private copy of the embedded workspace; ``DPRM_HOME`` points at it for the test."""
    home = tmp_path / "home"
    shutil.copytree(embedded_template, home)
    monkeypatch.setenv("DPRM_HOME", str(home))
    return home
