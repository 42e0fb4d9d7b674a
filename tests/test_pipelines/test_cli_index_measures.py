"""`dprm data ingest` of an equity index's daily realized measures (issue 14, part 4): the symbol
comes from the file name or --symbol, is never given a quote currency, and carries the NYSE
calendar (252 sessions a year, rows at the 16:00 New York close), run as real subprocesses."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from features.readers.realized import undo_london_midnight_shift

DPRM = [sys.executable, "-m", "pipelines.cli"]
ROOT = Path(__file__).resolve().parents[2]


def run(args: list[str], home: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "DPRM_HOME": str(home), "COLUMNS": "200"}
    return subprocess.run([*DPRM, *args], capture_output=True, text=True, env=env, timeout=600,
                          cwd=ROOT)


def write_dji(data_dir: Path, path: Path) -> pd.DataFrame:
    """Oxford-Man DJI 5-minute RV of June-July 2017 (dates corrected) as a measures CSV."""
    wide = pd.read_parquet(data_dir / "oxford_man_realized_30_indices_2013_2017" / "wide_rv5.parquet")
    dates = pd.DatetimeIndex(undo_london_midnight_shift(wide["DATE"]))
    rv = wide["DJI"].to_numpy()
    keep = np.isfinite(rv) & (dates >= "2017-06-01") & (dates <= "2017-07-31")
    raw = pd.DataFrame({"date": dates[keep].strftime("%Y-%m-%d"), "RV": rv[keep],
                        "RQ": rv[keep] ** 2, "RS_plus": rv[keep] / 2, "RS_minus": rv[keep] / 2,
                        "delta_J": 0.0, "BV": rv[keep], "nobs": 78})
    raw.to_csv(path, index=False)
    return raw


def symbols(home: Path, dataset: str) -> dict:
    man = json.loads((home / "data" / dataset / "manifest.json").read_text())
    return man["tables"]["realized_1d"]["symbols"]


def test_ingest_an_index_by_file_name_and_by_symbol(data_dir: Path, tmp_path: Path) -> None:
    home = tmp_path / "home"
    raw = write_dji(data_dir, tmp_path / "djia_measures.csv")
    r = run(["data", "ingest", str(tmp_path / "djia_measures.csv"), "--dataset", "idx"], home)
    assert r.returncode == 0, r.stderr
    meta = symbols(home, "idx")
    assert list(meta) == ["DJIA"]  # not DJIAUSDT
    assert meta["DJIA"]["calendar"] == "XNYS" and meta["DJIA"]["annualization"] == 252
    listing = json.loads(run(["data", "list", "idx", "--json"], home).stdout)["rows"]
    assert [(x["symbol"], x["rows"]) for x in listing] == [("DJIA", len(raw))]
    assert listing[0]["first"] == "2017-06-01 20:00:00+00:00"  # 16:00 New York (EDT)
    (tmp_path / "index_measures.csv").write_text((tmp_path / "djia_measures.csv").read_text())
    r = run(["data", "ingest", str(tmp_path / "index_measures.csv"), "--dataset", "spx",
             "--symbol", "SPX"], home)
    assert r.returncode == 0, r.stderr
    assert {k: v["annualization"] for k, v in symbols(home, "spx").items()} == {"SPX": 252}
