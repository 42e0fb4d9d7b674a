"""`dprm surface` as a real subprocess on the real Deribit snapshots (raw files and the store)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

DPRM = [sys.executable, "-m", "pipelines.cli"]
ETH_FILE = "eth_option_chain_2024-01-08.parquet"


def run(
    args: list[str], home: Path, data_dir: Path, columns: int = 200
) -> subprocess.CompletedProcess:
    env = dict(os.environ, DPRM_HOME=str(home), DPRM_DATA_DIR=str(data_dir), COLUMNS=str(columns))
    return subprocess.run([*DPRM, *args], capture_output=True, text=True, env=env, timeout=600)


@pytest.fixture
def snapshots(data_dir: Path) -> Path:
    return data_dir / "deribit_option_snapshots_2024"


@pytest.mark.slow
def test_json_report_on_the_raw_snapshots(tmp_path, data_dir, snapshots) -> None:
    r = run(["surface", "--data", str(snapshots), "--json"], tmp_path, data_dir)
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    by = {u["underlying"]: u for u in rep["underlyings"]}
    assert sorted(by) == ["BTC", "ETH"]
    eth, btc = by["ETH"], by["BTC"]
    assert eth["snapshot"].startswith("2024-01-08T11:19:41")
    assert len(eth["slices"]) == 11 and len(btc["slices"]) == 11
    # measured on the ETH chain: 309 of 326 strikes' fitted prices inside the bid-ask spread
    assert eth["n_quotes"] == 326
    assert eth["inside_pct"] == pytest.approx(100 * 309 / 326, abs=1e-9)
    assert btc["inside_pct"] is None  # marks only: no spread to be inside
    assert {s["forward_source"] for s in btc["slices"]} == {"parity"}
    for s in eth["slices"]:
        assert set(s) >= {
            "expiry",
            "forward",
            "n_quotes",
            "rmse_vol_pts",
            "inside_pct",
            "butterfly",
            "calendar",
            "params",
        }
    # DVOL at or before each snapshot, from the real file, independently read
    dvol = pd.read_parquet(data_dir / "deribit_dvol_daily_2021_2025h1" / "dvol_daily.parquet")
    eth_day = dvol[
        (dvol["symbol"].str.upper() == "ETH")
        & (pd.to_datetime(dvol["date"]) == pd.Timestamp("2024-01-07"))
    ]
    assert eth["dvol"]["vol"] == pytest.approx(float(eth_day["close"].iloc[0]) / 100, rel=1e-12)
    assert eth["dvol"]["ts"].startswith("2024-01-08T00:00")
    for u in (eth, btc):
        png = Path(u["png"])
        assert png.parent == tmp_path / "reports" / "surface"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_table_fits_80_columns_and_names_the_plot(tmp_path, data_dir, snapshots) -> None:
    r = run(["surface", "--data", str(snapshots / ETH_FILE)], tmp_path, data_dir, columns=80)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    # everything but the two lines that name a file path (kept whole so it can be copied)
    table = [ln for ln in lines if not ln.startswith(("wrote ", "data: "))]
    assert max(len(line) for line in table) <= 80, [ln for ln in table if len(ln) > 80]
    assert "fitted prices inside bid-ask: 94.8% of 326 strikes" in r.stdout
    header = next(ln for ln in lines if ln.split()[:1] == ["expiry"])
    for col in ("forward", "n", "rmse vp", "in %", "bfly", "cal"):
        assert col in header
    assert any(ln.lstrip().startswith("23FEB24") for ln in lines)
    wrote = [ln for ln in lines if ln.startswith("wrote ")]
    assert wrote and Path(wrote[-1].removeprefix("wrote ")).is_file()


@pytest.mark.slow
def test_store_dataset_gives_the_same_fit_and_stale_chains_are_not_fitted(
    tmp_path, data_dir, snapshots
) -> None:
    r = run(
        ["data", "ingest", str(snapshots / ETH_FILE), "--dataset", "ethopt"], tmp_path, data_dir
    )
    assert r.returncode == 0, r.stderr
    r = run(
        ["surface", "--data", "ethopt", "--as-of", "2024-01-08T12:00", "--json"], tmp_path, data_dir
    )
    assert r.returncode == 0, r.stderr
    eth = json.loads(r.stdout)["underlyings"][0]
    assert eth["inside_pct"] == pytest.approx(100 * 309 / 326, abs=1e-9)
    # two days later the same chain is stale: reported, not fitted
    r = run(
        ["surface", "--data", "ethopt", "--as-of", "2024-01-10T12:00", "--json"], tmp_path, data_dir
    )
    assert r.returncode == 0, r.stderr
    eth = json.loads(r.stdout)["underlyings"][0]
    assert eth["slices"] == [] and eth["png"] is None
    assert [f["reason"] for f in eth["failures"]] == ["stale"]
    assert "older than 1 days" in eth["failures"][0]["message"]


@pytest.mark.parametrize(
    ("args", "text"),
    [
        pytest.param(
            ["--as-of", "not-a-time"], "'as-of' option must be a timestamp", id="bad-as-of"
        ),
        pytest.param(["--underlying", "SOL"], "underlying 'SOL' not in", id="unknown-underlying"),
        pytest.param(
            ["--forward", "index"], "'forward_source' parameter must be one of", id="bad-forward"
        ),
    ],
)
def test_bad_options_exit_2_with_one_line(tmp_path, data_dir, snapshots, args, text) -> None:
    r = run(["surface", "--data", str(snapshots / ETH_FILE), *args], tmp_path, data_dir)
    assert r.returncode == 2
    assert text in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_unknown_data_exits_2(tmp_path, data_dir) -> None:
    r = run(["surface", "--data", str(tmp_path / "nothing-here")], tmp_path, data_dir)
    assert r.returncode == 2
    assert "is neither a dataset" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_help_lists_the_options(tmp_path, data_dir) -> None:
    r = run(["surface", "--help"], tmp_path, data_dir)
    assert r.returncode == 0
    for opt in ("--data", "--as-of", "--underlying", "--forward", "--dvol", "--json"):
        assert opt in r.stdout
