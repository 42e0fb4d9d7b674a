"""The `dprm` command line, run as a real subprocess against a temporary workspace."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

DPRM = [sys.executable, "-m", "pipelines.cli"]


def run(args: list[str], home: Path, drop_env: tuple[str, ...] = (), **kw) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in drop_env}
    env.update({"DPRM_HOME": str(home), "COLUMNS": "200"})
    return subprocess.run([*DPRM, *args], capture_output=True, text=True, env=env, timeout=600, **kw)


def test_help_is_fast_and_lists_commands(tmp_path) -> None:
    t0 = time.perf_counter()
    r = run(["--help"], tmp_path)
    assert r.returncode == 0 and "data" in r.stdout and "demo" in r.stdout
    assert time.perf_counter() - t0 < 10
    for sub in (["data", "--help"], ["data", "ingest", "--help"], ["data", "validate", "--help"],
                ["data", "simulate", "--help"], ["data", "list", "--help"], ["demo", "--help"],
                ["features", "build", "--help"], ["features", "show", "--help"], ["evaluate", "--help"],
                ["train", "--help"], ["forecast", "--help"], ["monitor", "--help"], ["deploy", "--help"],
                ["models", "list", "--help"], ["models", "show", "--help"], ["models", "promote", "--help"],
                ["models", "rollback", "--help"], ["surface", "--help"], ["portfolio", "--help"],
                ["portfolio", "show", "--help"]):
        r = run(sub, tmp_path)
        assert r.returncode == 0, sub
    # heavy libraries stay out of the --help path
    code = "import sys, pipelines.cli; print(any(m in sys.modules for m in ('pandas','prefect','mlflow','arch')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.strip() == "False"


def test_malformed_file_gives_one_line_error_with_file_line_column(tmp_path) -> None:
    bad = tmp_path / "BTCUSDT-trades-2024-01-01.csv"
    bad.write_text("1,42000.5,0.1,4200.05,1704067200000,True,True\n"
                   "2,42001.0,0.2,8400.2,1704067200001,False,True\n"
                   "3,abc,0.2,8400.2,1704067200002,False,True\n")
    r = run(["data", "ingest", str(bad), "--format", "binance_trades_csv"], tmp_path / "home")
    assert r.returncode == 2
    err = r.stderr.strip()
    assert "Traceback" not in r.stderr and len(err.splitlines()) <= 2
    assert bad.name in err and "line 3" in err and "price" in err


def test_bad_input_exit_codes(tmp_path) -> None:
    r = run(["data", "ingest", str(tmp_path / "missing.csv")], tmp_path)
    assert r.returncode == 2 and "missing.csv" in r.stderr and "Traceback" not in r.stderr
    r = run(["data", "validate", "nope"], tmp_path)
    assert r.returncode == 2 and "dataset 'nope' not found" in r.stderr
    unknown = tmp_path / "x.bin"
    unknown.write_bytes(b"\x00\x01")
    r = run(["data", "ingest", str(unknown)], tmp_path)
    assert r.returncode == 2 and "cannot detect the format" in r.stderr
    r = run(["features", "show", "nothing"], tmp_path)
    assert r.returncode == 2 and "dprm features build nothing" in r.stderr
    r = run(["evaluate", "--data", "nope"], tmp_path)
    assert r.returncode == 2 and "'nope' is neither an ingested dataset" in r.stderr
    r = run(["deploy"], tmp_path, drop_env=("PREFECT_API_URL",))
    assert r.returncode == 2 and "PREFECT_API_URL is not set" in r.stderr
    cfg = tmp_path / "c.toml"
    cfg.write_text("[simulate]\nn_days = -3\n")
    r = run(["data", "simulate", "--config", str(cfg)], tmp_path)
    assert r.returncode == 2 and "n_days" in r.stderr


def test_ingest_real_file_then_validate_and_list(tmp_path, data_dir) -> None:
    src = data_dir / "binance_daily_realized_measures_btc_eth_2018_2026" / "btc_measures.csv"
    home = tmp_path / "home"
    r = run(["data", "ingest", str(src)], home)
    assert r.returncode == 0, r.stderr
    assert "3,012" in r.stdout and "wrote" in r.stdout
    again = run(["data", "ingest", str(src)], home)
    assert "already ingested" in again.stdout
    r = run(["data", "validate"], home)
    assert r.returncode == 0, r.stderr
    rep = json.loads((home / "data" / "binance_daily_realized_measures_btc_eth_2018_2026"
                      / "validation.json").read_text())
    assert rep["tables"]["realized_1d"]["rows_out"] == 3012
    r = run(["data", "list"], home)
    assert "BTCUSDT" in r.stdout and "realized_1d" in r.stdout


def test_evaluate_adds_a_learned_model_on_its_own_schedule(tmp_path, data_dir) -> None:
    import pandas as pd

    src = data_dir / "binance_daily_realized_measures_btc_eth_2018_2026" / "btc_measures.csv"
    home = tmp_path / "home"
    r = run(["evaluate", "--data", str(src), "--models", "log_har_dow,harq,lgbm,nope"], home)
    assert r.returncode == 2 and "unknown model(s) ['nope']" in r.stderr and "lgbm" in r.stderr
    r = run(["evaluate", "--data", str(src), "--models", "log_har_dow,harq,lgbm", "--horizons", "1",
             "--start", "2025-09-01", "--end", "2026-03-30"], home)
    assert r.returncode == 0, r.stderr
    out = Path(r.stdout.split("wrote")[-1].replace("\n", "").strip())
    fc = pd.read_parquet(out / "forecasts.parquet")
    assert set(fc["model_id"]) == {"log_har_dow", "harq", "lgbm"}
    summary = pd.read_csv(out / "summary.csv")
    # the ratio is relative to the best ladder model, never to the learned one
    assert set(summary["benchmark"].dropna()) <= {"log_har_dow", "harq"}
    lg = fc[(fc["model_id"] == "lgbm") & fc["evaluated"]]
    assert len(lg) > 150 and lg["forecast_var"].gt(0).all()
