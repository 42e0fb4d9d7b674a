"""The registry through the real `dprm` command line (subprocesses, a real SQLite MLflow store):
the model follows the dataset, `--model` picks another, `models list` shows every model, a wiped
or corrupt registry fails closed with one line, and an unreachable server fails in seconds.

The trained workspace (the embedded data at 1D and a 20-day simulation at 1h, with a small
candidate set) is the session's ``registered_template`` (tests/test_pipelines/conftest.py), copied
per test; the commands under test run as real subprocesses.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.test_pipelines.workspaces import copy_workspace

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
DPRM = [sys.executable, "-m", "pipelines.cli"]


def run(
    args: list[str], home: Path, timeout: float = 900, **env: str
) -> subprocess.CompletedProcess:
    """``dprm ARGS`` in a fresh process with ``DPRM_HOME=home`` (and ``env``)."""
    full = {**os.environ, "DPRM_HOME": str(home), "COLUMNS": "200", **env}
    return subprocess.run(
        [*DPRM, *args], capture_output=True, text=True, env=full, cwd=ROOT, timeout=timeout
    )


def one_line_error(r: subprocess.CompletedProcess) -> str:
    """The error line of a failed command (exit 2, one line on stderr, no traceback)."""
    assert r.returncode == 2, (r.returncode, r.stdout[-2000:], r.stderr[-3000:])
    assert "Traceback" not in r.stderr and "Traceback" not in r.stdout, r.stderr[-3000:]
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("error: ")
    return lines[0]


@pytest.fixture
def home(registered_template: Path, tmp_path: Path) -> Path:
    """A private copy of the session's trained workspace (``registered_template``)."""
    return copy_workspace(registered_template, tmp_path / "home")


def test_every_model_is_listed_and_forecast_follows_the_dataset(home: Path, tmp_path: Path) -> None:
    r = run(["models", "list"], home)
    assert r.returncode == 0, r.stderr
    rows = [ln for ln in r.stdout.splitlines() if "champion" in ln]
    assert any("dprm-forecaster " in ln and "embedded/1D" in ln for ln in rows), r.stdout
    assert any("dprm-forecaster-sim" in ln and "sim/1h" in ln for ln in rows), r.stdout

    # the default model of sim is sim's own; the forecast says which one it used
    r = run(
        ["forecast", "--dataset", "sim", "--freq", "1h"], home, PREFECT_HOME=str(tmp_path / "p")
    )
    assert r.returncode == 0, r.stderr[-3000:]
    latest = json.loads((home / "forecasts" / "sim" / "1h" / "latest.json").read_text())
    assert (latest["model"], latest["version"], latest["source"]) == (
        "dprm-forecaster-sim",
        "1",
        "champion",
    )
    # another dataset's model is refused in one line, before any flow runs
    for cmd in ("forecast", "monitor"):
        r = run([cmd, "--dataset", "sim", "--freq", "1h", "--model", "dprm-forecaster"], home)
        line = one_line_error(r)
        assert (
            "the champion of 'dprm-forecaster' (version 1) was trained on embedded/1D, "
            "not sim/1h: pass --model NAME" in line
        )
        assert "monitoring" not in r.stdout and "report" not in r.stdout  # no stale report
    # training sim into the embedded model is refused (the gate would compare different data)
    r = run(["train", "--dataset", "sim", "--freq", "1h", "--model", "dprm-forecaster"], home)
    assert (
        "registered model 'dprm-forecaster' holds versions trained on embedded/1D; this run "
        "trains sim/1h: name another model with --model" in one_line_error(r)
    )
    # `models show` needs --model when several models exist, and shows the one named
    line = one_line_error(run(["models", "show", "champion"], home))
    assert "2 registered models (dprm-forecaster, dprm-forecaster-sim): pass --model NAME" in line
    r = run(["models", "show", "champion", "--model", "dprm-forecaster-sim"], home)
    assert r.returncode == 0, r.stderr
    shown = json.loads(r.stdout)
    assert (shown["name"], shown["version"], shown["aliases"]) == (
        "dprm-forecaster-sim",
        "1",
        ["champion"],
    )
    assert (shown["tags"]["dprm.dataset"], shown["tags"]["dprm.freq"]) == ("sim", "1h")


def test_monitor_uses_the_dataset_model(home: Path, tmp_path: Path) -> None:
    # (whether the simulator's checks breach is the monitor's business, not the registry's)
    r = run(["monitor", "--dataset", "sim", "--freq", "1h"], home, PREFECT_HOME=str(tmp_path / "p"))
    assert r.returncode in (0, 1), r.stderr[-3000:]
    report = json.loads((home / "reports" / "monitor" / "sim_1h" / "latest.json").read_text())
    assert report["context"]["champion"].startswith("dprm-forecaster-sim v1")
    assert report["context"]["dataset"] == "sim"


@pytest.mark.parametrize("damage", ["empty", "garbage", "fresh"])
def test_wiped_or_corrupt_registry_fails_closed(
    home: Path, embedded_template: Path, damage: str
) -> None:
    db = home / "mlflow.db"
    if damage == "empty":
        db.write_bytes(b"")  # `: > $DPRM_HOME/mlflow.db`
        expect = (
            f"the MLflow store {db} is empty (0 bytes) but the promotion log "
            f"{home / 'registry' / 'promotions.jsonl'} names version 1 of 'dprm-forecaster', "
            "version 1 of 'dprm-forecaster-sim' as champion: the registry was wiped"
        )
    elif damage == "garbage":
        db.write_bytes(os.urandom(4096))
        expect = f"the MLflow store {db} is not an SQLite database"
    else:  # a working but different store in its place (the template's new, empty store)
        shutil.copy(embedded_template / "mlflow.db", db)
        expect = (
            f"the promotion log {home / 'registry' / 'promotions.jsonl'} names version 1 of "
            f"'dprm-forecaster' as champion, but the registry sqlite:///{db} has no model of "
            "that name"
        )
    forecasts = home / "forecasts"
    before = sorted(p.name for p in forecasts.rglob("*")) if forecasts.exists() else []
    for args in (
        ["forecast"],
        ["monitor"],
        ["models", "list"],
        ["models", "show", "1", "--model", "dprm-forecaster"],
        ["train"],
    ):
        line = one_line_error(run(args, home))
        assert expect in line, (args, line)
    after = sorted(p.name for p in forecasts.rglob("*")) if forecasts.exists() else []
    assert after == before  # no EWMA fallback was served


# ---- an unreachable tracking server ------------------------------------------------------------
def closed_port_uri() -> str:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return f"http://127.0.0.1:{port}"


@pytest.fixture
def silent_uri() -> Iterator[str]:
    """A loopback port that accepts connections and never answers."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)
    srv.settimeout(0.2)
    conns: list[socket.socket] = []
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            try:
                conns.append(srv.accept()[0])
            except TimeoutError:
                continue
            except OSError:
                return

    t = threading.Thread(target=loop, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{srv.getsockname()[1]}"
    finally:
        stop.set()
        t.join(5)
        for c in conns:
            c.close()
        srv.close()


COMMANDS = [
    ["models", "list"],
    ["models", "show", "1"],
    ["models", "promote", "1", "--mode", "manual", "--approver", "a", "--reason", "b"],
    ["models", "rollback", "--approver", "a", "--reason", "b"],
    ["train"],
    ["forecast", "--dataset", "sim", "--freq", "1h"],
    ["monitor"],
    ["demo"],
]


@pytest.mark.parametrize("args", COMMANDS, ids=lambda a: "-".join(a[:2]))
def test_unreachable_server_fails_fast_with_one_line(args: list[str], tmp_path: Path) -> None:
    uri = closed_port_uri()
    t0 = time.monotonic()
    r = run(args, tmp_path / "home", timeout=120, MLFLOW_TRACKING_URI=uri)
    elapsed = time.monotonic() - t0
    line = one_line_error(r)
    assert f"the MLflow tracking server {uri} is unreachable" in line
    assert elapsed < 30, elapsed  # generous: the hang this catches was 250 s


def test_silent_server_fails_fast_with_one_line(tmp_path: Path, silent_uri: str) -> None:
    t0 = time.monotonic()
    r = run(["models", "list"], tmp_path / "home", timeout=120, MLFLOW_TRACKING_URI=silent_uri)
    elapsed = time.monotonic() - t0
    line = one_line_error(r)
    assert f"the MLflow tracking server {silent_uri} is unreachable (ReadTimeout" in line
    assert elapsed < 30, elapsed
