"""The remote round trip: a real ``mlflow server`` process (SQLite backend, local artifact root,
one worker, a free loopback port), MLFLOW_TRACKING_URI pointing at it, an evaluation run, a HAR
registered, promoted and loaded back through the server. The server is always stopped."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from features.schema import SYMBOL, TS
from models import gate as G
from models import package as P
from models import promotion_log as L
from models import registry as R
from models.evaluation import walk_forward
from models.ewma import EWMAVol, RandomWalkVol
from models.har import HARVol

STARTUP_TIMEOUT_S = 120


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def realized_frame(rng: np.random.Generator, n: int = 500) -> pd.DataFrame:
    """Daily realized variance of one symbol: latent log-variance AR(1) observed with noise."""
    x = np.empty(n)
    x[0] = -8.0
    eps = rng.normal(0.0, 0.2, n)
    for t in range(1, n):
        x[t] = -8.0 * 0.02 + 0.98 * x[t - 1] + eps[t]
    frame = pd.DataFrame(
        {
            TS: pd.date_range("2022-01-02", periods=n, freq="D", tz="UTC"),
            SYMBOL: "BTCUSDT",
            "rv_var": np.exp(x + rng.normal(0.0, 0.5, n)),
            "n_obs": 288.0,
        }
    )
    frame[SYMBOL] = frame[SYMBOL].astype("str")
    return frame


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Start ``mlflow server`` and yield its URL; stop it (process group) whatever happens."""
    root = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    bin_dir = Path(sys.executable).parent
    exe = bin_dir / "mlflow"
    if not exe.exists():
        pytest.skip(f"mlflow executable not found beside {sys.executable}")
    env = {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "MLFLOW_LOGGING_LEVEL": "WARNING",
        "MPLCONFIGDIR": str(root / "mpl"),
    }
    env.pop("MLFLOW_TRACKING_URI", None)
    log = open(root / "server.log", "wb")
    proc = subprocess.Popen(
        [
            str(exe),
            "server",
            "--backend-store-uri",
            f"sqlite:///{root / 'mlflow.db'}",
            "--artifacts-destination",
            str(root / "artifacts"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        cwd=root,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"mlflow server exited with {proc.returncode}: "
                    f"{(root / 'server.log').read_text()[-2000:]}"
                )
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"mlflow server not ready after {STARTUP_TIMEOUT_S} s: "
                    f"{(root / 'server.log').read_text()[-2000:]}"
                )
            time.sleep(0.25)
        yield url
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        log.close()


def test_remote_round_trip(
    mlflow_server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlflow import MlflowClient

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    monkeypatch.setenv("MPLCONFIGDIR", str(tmp_path / "mpl"))
    data = realized_frame(np.random.default_rng(11))
    assert R.tracking_uri(tmp_path) == mlflow_server
    models = {"har": HARVol(horizons=(1, 5), window=300), "ewma": EWMAVol(), "rw": RandomWalkVol()}
    res = walk_forward(
        models, data, horizons=(1, 5), start=data[TS].iloc[-100], window=300, mcs_reps=20
    )
    run_id = R.log_evaluation_run(res, home=tmp_path, models=models, data=data)
    client = MlflowClient(mlflow_server)
    exp = client.get_experiment_by_name("dprm-volatility")
    assert exp.artifact_location.startswith("mlflow-artifacts:")  # the server stores artifacts
    metrics = client.get_run(run_id).data.metrics
    loss = res.losses.set_index(["model_id", "symbol", "horizon", "regime", "target"])
    assert (
        metrics["qlike/har/BTCUSDT/h5"]
        == loss.loc[("har", "BTCUSDT", 5, "all", "realized"), "qlike"]
    )
    bundle = P.ForecasterPackage.build(
        {"har": HARVol(horizons=(1, 5), window=300)}, training_data=data, horizons=(1, 5)
    )
    ref = R.register_challenger(bundle, home=tmp_path, training_data=data, evaluation_run_id=run_id)
    gate = G.GateConfig(
        horizons=(1, 5), n_origins=100, baselines=("random_walk", "ewma"), mcs_reps=20
    )
    promoted = R.promote(ref.version, home=tmp_path, data=data, gate_config=gate)
    assert promoted.promoted, promoted.decision.reason
    loaded = R.load_champion(home=tmp_path)
    assert loaded.ref.uri == f"models:/dprm-forecaster/{ref.version}"
    assert client.get_run(loaded.ref.run_id).data.tags["mlflow.parentRunId"] == run_id
    out = loaded.predict(data, origins="all")
    pd.testing.assert_frame_equal(out, bundle.predict(data, origins="all"), check_exact=True)
    tags = client.get_model_version("dprm-forecaster", ref.version).tags
    assert tags["gate.status"] == "passed" and tags["dprm.status"] == "champion"
    assert [e["action"] for e in L.read_promotion_log(tmp_path)] == [
        "register_challenger",
        "promote",
    ]
