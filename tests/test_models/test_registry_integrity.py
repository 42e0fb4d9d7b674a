"""The registry tells the truth or fails: the registry/promotion-log cross-check, corrupt and wiped
stores, the per-model lock on registration and promotion, and bounded MLflow network calls.

Real parts only: a real SQLite MLflow store (one migrated per session, copied per test), real
threads and processes holding the OS file lock, real sockets for the unreachable server.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from features.errors import RegistryError
from models import package as P
from models import promotion_log as L
from models import registry as R
from models.har import HARVol
from tests.test_models.test_registry import HS, realized_frame

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def data() -> pd.DataFrame:
    return realized_frame(np.random.default_rng(20261202), n=420)


@pytest.fixture
def champion_home(home: Path, data: pd.DataFrame) -> Path:
    """A workspace whose registry has version 1 as champion (promoted manually, logged)."""
    ref = R.register_challenger(
        {"har": HARVol(horizons=HS, window=300)}, home=home, training_data=data, horizons=HS
    )
    R.promote(ref.version, home=home, mode="manual", approver="alice", reason="first model")
    return home


def reopen(monkeypatch: pytest.MonkeyPatch) -> None:
    """Forget which stores this process has opened (a new CLI process starts this way)."""
    monkeypatch.setattr(R, "_INITIALISED", set())


# ---- cross-check ---------------------------------------------------------------------------------
def test_consistent_registry_verifies(champion_home: Path) -> None:
    assert R.verify_registry(champion_home) == {"dprm-forecaster": "1"}
    assert R.champion_version(champion_home) == "1"
    assert L.log_champions(champion_home) == {"dprm-forecaster": "1"}
    assert R.load_champion(home=champion_home).ref.version == "1"
    # a model neither side knows has no champion, and that is not an error
    assert R.champion_version(champion_home, "dprm-forecaster-sim") is None


@pytest.mark.parametrize(
    ("damage", "match"),
    [
        (
            "empty",
            r"mlflow\.db is empty \(0 bytes\) but the promotion log .*promotions\.jsonl "
            r"names version 1 of 'dprm-forecaster' as champion: the registry was wiped",
        ),
        (
            "missing",
            r"mlflow\.db is missing but the promotion log .*names version 1 of "
            r"'dprm-forecaster' as champion",
        ),
        ("garbage", r"mlflow\.db is not an SQLite database \(it starts with b'GARBAGE!'\)"),
        (
            "fresh",
            r"the promotion log .*promotions\.jsonl names version 1 of 'dprm-forecaster' "
            r"as champion, but the registry sqlite:///.*mlflow\.db has no model of that "
            r"name: the registry was wiped, replaced or edited outside dprm",
        ),
        (
            "truncated",
            r"the MLflow store sqlite:///.*mlflow\.db cannot be opened \(.*DatabaseError.*\); "
            r"restore it from a backup",
        ),
    ],
    ids=["empty-file", "missing-file", "garbage-bytes", "fresh-store", "truncated"],
)
def test_wiped_or_corrupt_store_is_one_registry_error(
    champion_home: Path,
    template_db: Path,
    data: pd.DataFrame,
    monkeypatch: pytest.MonkeyPatch,
    damage: str,
    match: str,
) -> None:
    db = champion_home / "mlflow.db"
    if damage == "empty":
        db.write_bytes(b"")
    elif damage == "missing":
        db.unlink()
    elif damage == "garbage":
        db.write_bytes(b"GARBAGE!" * 500)
    elif damage == "truncated":  # a valid header, then a third of the pages
        raw = db.read_bytes()
        db.write_bytes(raw[: len(raw) // 3])
    else:
        shutil.copy(template_db, db)  # a valid store that never saw the promotion
    before = db.read_bytes() if db.exists() else None
    log_before = L.promotion_log_path(champion_home).read_bytes()
    reopen(monkeypatch)
    for call in (
        lambda: R.verify_registry(champion_home),
        lambda: R.load_champion(home=champion_home),
        lambda: R.champion_version(champion_home),
        lambda: R.register_challenger(
            {"har": HARVol(horizons=HS, window=300)},
            home=champion_home,
            training_data=data,
            horizons=HS,
        ),
        lambda: R.rollback(home=champion_home, approver="bob", reason="x", to_version=1),
    ):
        with pytest.raises(RegistryError, match=match):
            call()
    # nothing was written: the damaged store is left as found, the log unchanged
    assert (db.read_bytes() if db.exists() else None) == before
    assert L.promotion_log_path(champion_home).read_bytes() == log_before


def test_champion_version_deleted_or_alias_moved_outside_dprm(
    champion_home: Path, data: pd.DataFrame
) -> None:
    from mlflow import MlflowClient

    client = MlflowClient(R.tracking_uri(champion_home))
    ref2 = R.register_challenger(
        {"har": HARVol(horizons=HS, window=250)},
        home=champion_home,
        training_data=data,
        horizons=HS,
    )
    # an alias moved by hand (not through dprm) to another version
    client.set_registered_model_alias("dprm-forecaster", "champion", ref2.version)
    with pytest.raises(
        RegistryError,
        match=r"the registry .* has version 2 of 'dprm-forecaster' as champion, but the "
        r"promotion log .* names version 1: the alias was moved outside dprm",
    ):
        R.verify_registry(champion_home)
    # the logged champion's version deleted (its alias goes with it)
    client.set_registered_model_alias("dprm-forecaster", "champion", "1")
    client.delete_model_version("dprm-forecaster", "1")
    match = (
        r"names version 1 of 'dprm-forecaster' as champion, but the registry .* has no "
        r"champion alias on it"
    )
    with pytest.raises(RegistryError, match=match):
        R.load_champion(home=champion_home)
    with pytest.raises(RegistryError, match=match):
        R.register_challenger(
            {"har": HARVol(horizons=HS, window=200)},
            home=champion_home,
            training_data=data,
            horizons=HS,
        )
    with pytest.raises(RegistryError, match=match):
        R.promote(2, home=champion_home, mode="manual", approver="a", reason="b")
    assert R.list_versions(home=champion_home)["version"].tolist() == [2]


def test_a_move_killed_between_log_and_alias_is_completed(
    champion_home: Path, data: pd.DataFrame
) -> None:
    """Promotions write the log line first; a run killed before the alias moved leaves the
    registry one move behind the log, and the next check completes that move."""
    from mlflow import MlflowClient

    client = MlflowClient(R.tracking_uri(champion_home))
    ref2 = R.register_challenger(
        {"har": HARVol(horizons=HS, window=250)},
        home=champion_home,
        training_data=data,
        horizons=HS,
    )
    mv2 = client.get_model_version("dprm-forecaster", ref2.version)
    # the state promote() leaves when killed right after its log line
    L.append_promotion_log(
        champion_home,
        {
            "action": "promote",
            "name": "dprm-forecaster",
            "alias": "champion",
            "from_version": "1",
            "to_version": "2",
            "candidate_version": "2",
            "who": "gate",
            "mode": "auto",
            "reason": "",
            "gate": None,
            "run_id": mv2.run_id,
        },
    )
    assert str(client.get_registered_model("dprm-forecaster").aliases["champion"]) == "1"
    assert R.champion_version(champion_home) == "2"
    versions = R.list_versions(home=champion_home).set_index("version")
    assert versions.loc[2, "aliases"] == "champion" and versions.loc[2, "status"] == "champion"
    assert versions.loc[1, "status"] == "retired"
    # a move the registry cannot complete (its target is not the logged run) stays an error
    L.append_promotion_log(
        champion_home,
        {
            "action": "rollback",
            "name": "dprm-forecaster",
            "alias": "champion",
            "from_version": "2",
            "to_version": "1",
            "candidate_version": "1",
            "who": "bob",
            "mode": "manual",
            "reason": "x",
            "gate": None,
            "run_id": "not-the-run",
        },
    )
    with pytest.raises(
        RegistryError,
        match="has version 2 of 'dprm-forecaster' as champion, "
        "but the promotion log .* names version 1",
    ):
        R.verify_registry(champion_home)


def test_champion_without_any_log_entry_is_an_error(home: Path, data: pd.DataFrame) -> None:
    from mlflow import MlflowClient

    ref = R.register_challenger(
        {"har": HARVol(horizons=HS, window=300)}, home=home, training_data=data, horizons=HS
    )
    MlflowClient(R.tracking_uri(home)).set_registered_model_alias(
        "dprm-forecaster", "champion", ref.version
    )
    with pytest.raises(RegistryError, match="names no champion: the alias was moved outside"):
        R.load_champion(home=home)


def test_corrupt_promotion_log_is_a_registry_error(champion_home: Path) -> None:
    log = L.promotion_log_path(champion_home)
    log.write_bytes(log.read_bytes() + b"{not json\n")
    with pytest.raises(RegistryError, match=r"promotions\.jsonl: line 3 is not a JSON record"):
        R.verify_registry(champion_home)


def test_list_versions_of_every_model(home: Path, data: pd.DataFrame) -> None:
    bundle = {"har": HARVol(horizons=HS, window=300)}
    R.register_challenger(bundle, home=home, training_data=data, horizons=HS)
    R.register_challenger(
        bundle,
        home=home,
        training_data=data,
        horizons=HS,
        name="dprm-forecaster-sim",
        tags={"dprm.dataset": "sim", "dprm.freq": "1h"},
    )
    every = R.list_versions(home=home, name=None)
    assert list(every.columns) == list(P.VERSION_COLUMNS)
    assert every[["model", "version", "aliases", "dataset", "freq"]].values.tolist() == [
        ["dprm-forecaster", 1, "challenger", "", ""],
        ["dprm-forecaster-sim", 1, "challenger", "sim", "1h"],
    ]
    assert R.registered_model_names(home) == ["dprm-forecaster", "dprm-forecaster-sim"]
    assert R.list_versions(home=home, name="dprm-forecaster-sim")["model"].tolist() == [
        "dprm-forecaster-sim"
    ]
    assert R.list_versions(home=home, name="nope").empty


# ---- the per-model lock --------------------------------------------------------------------------
def test_model_lock_serializes_threads_and_is_reentrant(tmp_path: Path) -> None:
    held, release, results = threading.Event(), threading.Event(), {}

    def holder() -> None:
        with L.model_lock(tmp_path, "m"), L.model_lock(tmp_path, "m"):  # re-entrant
            held.set()
            release.wait(30)

    t = threading.Thread(target=holder)
    t.start()
    assert held.wait(30)

    def contender() -> None:
        try:
            with L.model_lock(tmp_path, "m", timeout_s=0.3):
                results["got"] = True
        except RegistryError as exc:
            results["error"] = str(exc)

    c = threading.Thread(target=contender)
    c.start()
    c.join(30)
    assert "held by another process for more than 0.3 s" in results["error"]
    with L.model_lock(tmp_path, "other", timeout_s=0.3):  # another model is not blocked
        pass
    release.set()
    t.join(30)
    with L.model_lock(tmp_path, "m", timeout_s=5) as path:
        assert path == tmp_path.resolve() / "registry" / "locks" / "m.lock"


def test_model_lock_excludes_another_process(tmp_path: Path) -> None:
    code = textwrap.dedent(
        f"""
        import sys, time
        from models import promotion_log as L
        with L.model_lock({str(tmp_path)!r}, "dprm-forecaster"):
            print("held", flush=True)
            sys.stdin.readline()
        """
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:
        assert proc.stdout.readline().strip() == "held"
        with pytest.raises(RegistryError, match=r"'dprm-forecaster' are held by another process"):
            with L.model_lock(tmp_path, "dprm-forecaster", timeout_s=0.5):
                pass
        proc.stdin.write("\n")
        proc.stdin.flush()
        assert proc.wait(30) == 0
        with L.model_lock(tmp_path, "dprm-forecaster", timeout_s=5):
            pass
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def test_concurrent_registration_in_threads_registers_in_turn(
    home: Path, data: pd.DataFrame
) -> None:
    """Writers in two threads: each registration and promotion runs whole under the lock, so
    the versions are 1 and 2 and the log's chain stays intact."""
    errors: list[BaseException] = []

    def register(window: int) -> None:
        try:
            R.register_challenger(
                {"har": HARVol(horizons=HS, window=window)},
                home=home,
                training_data=data,
                horizons=HS,
            )
        except BaseException as exc:  # collected and re-raised by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=register, args=(w,)) for w in (250, 300)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    assert R.list_versions(home=home)["version"].tolist() == [1, 2]
    log = L.read_promotion_log(home)
    assert [e["action"] for e in log] == ["register_challenger", "register_challenger"]
    assert sorted(e["to_version"] for e in log) == ["1", "2"]


# ---- bounded network calls -----------------------------------------------------------------------
@pytest.fixture
def silent_server() -> Iterator[tuple[str, list[socket.socket]]]:
    """A TCP server on a loopback port that accepts connections and never answers."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)
    srv.settimeout(0.2)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            accepted.append(conn)

    t = threading.Thread(target=loop, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{srv.getsockname()[1]}", accepted
    finally:
        stop.set()
        t.join(5)
        for c in accepted:
            c.close()
        srv.close()


def closed_port_uri() -> str:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return f"http://127.0.0.1:{port}"


def test_mlflow_settings_are_bounded_in_a_fresh_process() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_HTTP_REQUEST")}
    code = (
        "import models.registry\n"
        "from mlflow.environment_variables import MLFLOW_HTTP_REQUEST_TIMEOUT as T, "
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES as M, MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR as B\n"
        "print(T.get(), M.get(), B.get())\n"
        "from pipelines.flow_config import engine_environment\n"
        "import os\n"
        "for k in ('MLFLOW_HTTP_REQUEST_TIMEOUT', 'MLFLOW_HTTP_REQUEST_MAX_RETRIES'):\n"
        "    os.environ.pop(k)\n"
        "engine_environment()\n"
        "print(T.get(), M.get())\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["5", "1", "1", "5", "1"]


def test_unreachable_server_is_one_registry_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    uri = closed_port_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    with pytest.raises(
        RegistryError,
        match=rf"the MLflow tracking server {uri} is unreachable \(ConnectionError, timeout 5 s\)",
    ):
        R.init_store(tmp_path)


def test_silent_server_times_out_in_the_probe(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, silent_server: tuple[str, list]
) -> None:
    uri, accepted = silent_server
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    t0 = time.monotonic()
    with pytest.raises(RegistryError, match=rf"{uri} is unreachable \(ReadTimeout, timeout 5 s\)"):
        R.verify_registry(tmp_path)
    assert time.monotonic() - t0 < 30  # generous: catches a hang, not a benchmark
    assert len(accepted) == 1


def test_mlflow_client_itself_retries_once_against_a_silent_server(
    silent_server: tuple[str, list],
) -> None:
    """Past the probe, MLflow's own requests use the bounded settings: one attempt plus one
    retry, each timing out (counted as connections on the server's socket)."""
    uri, accepted = silent_server
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_HTTP_REQUEST")}
    code = (
        "import models.registry\n"
        "from mlflow import MlflowClient\n"
        "from mlflow.exceptions import MlflowException\n"
        "try:\n"
        f"    MlflowClient({uri!r}).search_experiments(max_results=1)\n"
        "except MlflowException:\n"
        "    print('failed')\n"
    )
    t0 = time.monotonic()
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT, timeout=120
    )
    assert out.stdout.strip() == "failed", out.stderr[-2000:]
    assert time.monotonic() - t0 < 60
    assert len(accepted) == 2  # the request and its one retry
