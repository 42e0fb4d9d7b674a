"""Where the registry lives and whether it can be reached: the tracking URI, the artifact root, the
SQLite file behind a local store and the one bounded probe of a remote server. No mlflow import
(:mod:`models.registry` is the only module that talks to MLflow)."""

from __future__ import annotations

import os
from pathlib import Path

from features.errors import RegistryError

PROBE_TIMEOUT_S = 5.0
"""Connect/read timeout of the reachability probe of a tracking server (one attempt)."""


def tracking_uri(home: Path) -> str:
    """The tracking URI: ``MLFLOW_TRACKING_URI`` if set, else ``sqlite:///<home>/mlflow.db``
    (``home``, the DPRM workspace, is created when the default is used)."""
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    home = Path(home).resolve()
    home.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{home / 'mlflow.db'}"


def artifact_root(home: Path) -> Path:
    """Where local stores keep artifacts: ``<home>/mlartifacts``."""
    return Path(home).resolve() / "mlartifacts"


def is_remote(uri: str) -> bool:
    """Whether ``uri`` is a tracking server (http(s), databricks) rather than a local store."""
    return uri.startswith(("http://", "https://", "databricks"))


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI (None for any other store)."""
    return Path(uri[len("sqlite:///") :]) if uri.startswith("sqlite:///") else None


def probe_server(uri: str) -> None:
    """One bounded request to ``<uri>/health``: a refused or timed-out connection is a
    :class:`RegistryError` naming the URI (any HTTP answer means the server is reachable)."""
    import requests

    try:
        requests.get(uri.rstrip("/") + "/health", timeout=PROBE_TIMEOUT_S)
    except requests.RequestException as exc:
        raise RegistryError(
            f"the MLflow tracking server {uri} is unreachable ({type(exc).__name__}, "
            f"timeout {PROBE_TIMEOUT_S:g} s); start it or fix MLFLOW_TRACKING_URI"
        ) from None


MLFLOW_ENV: dict[str, str] = {
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "MLFLOW_LOGGING_LEVEL": "WARNING",
    "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",
    "MLFLOW_SKIP_PIP_REQUIREMENTS_CHECK": "true",
    "MLFLOW_ENABLE_ASYNC_LOGGING": "false",
    # bounded network calls: an unreachable server fails in seconds, not after MLflow's default
    # 7 retries with exponential backoff (about 4 minutes)
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "5",
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "0.5",
}
"""MLflow settings :mod:`models.registry` puts in the environment (unless already set) before
MLflow is imported: no telemetry or chatter, synchronous logging, bounded network calls."""
