"""The `dprm data` commands against a damaged, killed or misused store (issue 12: items 1, 6, 9,
10 and empty inputs), run as real subprocesses."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

DPRM = [sys.executable, "-m", "pipelines.cli"]
ROOT = Path(__file__).resolve().parents[2]


def run(args: list[str], home: Path, env_extra: dict[str, str] | None = None,
        **kw) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "DPRM_TEST_KILL_AT"}
    env.update({"DPRM_HOME": str(home), "COLUMNS": "200", **(env_extra or {})})
    return subprocess.run([*DPRM, *args], capture_output=True, text=True, env=env, timeout=600,
                          cwd=ROOT, **kw)


def errors(r: subprocess.CompletedProcess) -> list[str]:
    return [line for line in r.stderr.splitlines() if line.startswith("error:")]


@pytest.fixture
def src(tmp_path: Path) -> Path:
    """A 200-row trades CSV over several days, 15 of every 100 rows without a symbol."""
    n = 200
    ts = pd.date_range("2024-01-01", periods=n, freq="47min", tz="UTC")
    sym = np.array(["BTCUSDT"] * n, dtype=object)
    sym[::7] = ""
    pd.DataFrame({"time": ts.strftime("%Y-%m-%d %H:%M:%S"), "sym": sym,
                  "px": np.round(np.linspace(100, 101, n), 4), "qty": 1.0, "qty2": 2.0,
                  "side": 1}).to_csv(tmp_path / "t.csv", index=False)
    (tmp_path / "m.toml").write_text('kind = "trades"\nmapping = {ts = "time", symbol = "sym", '
                                     'price = "px", size = "qty"}\n')
    (tmp_path / "nosym.toml").write_text('kind = "trades"\nmapping = {ts = "time", price = "px", '
                                         'size = "qty"}\n')
    return tmp_path


def ingest(src: Path, home: Path, *extra: str, mapping: str = "m.toml") -> subprocess.CompletedProcess:
    return run(["data", "ingest", str(src / "t.csv"), "--format", "generic", "--mapping",
                str(src / mapping), "--dataset", "d", *extra], home)


# ---- item 9 and validate ------------------------------------------------------------------
def test_dropped_rows_are_shown_in_ingest_and_validate(src: Path, tmp_path: Path) -> None:
    home = tmp_path / "home"
    r = ingest(src, home)
    assert r.returncode == 0, r.stderr
    n_empty = len(range(0, 200, 7))
    assert f"{n_empty} row(s) dropped: empty_symbol={n_empty}" in r.stdout
    v = run(["data", "validate", "d"], home)
    assert v.returncode == 0 and f"empty_symbol={n_empty}" in v.stdout
    j = json.loads(run(["data", "validate", "d", "--json"], home).stdout)
    t = j["datasets"][0]["tables"]["trades"]
    assert j["ok"] and t["counts"]["empty_symbol"] == n_empty and t["rows_out"] == 200 - n_empty
    man = json.loads((home / "data" / "d" / "manifest.json").read_text())
    rec = next(iter(man["sources"].values()))
    assert rec["tables"]["trades"]["rows_out"] == 200 - n_empty


# ---- item 1: validate detects, repair repairs ------------------------------------------------
def test_validate_reports_store_problems_and_repair_fixes_them(src: Path, tmp_path: Path) -> None:
    home = tmp_path / "home"
    assert ingest(src, home).returncode == 0
    d = home / "data" / "d" / "trades" / "symbol=BTCUSDT"
    files = sorted(d.iterdir())
    files[0].unlink()
    pd.read_parquet(files[1]).iloc[:-2].to_parquet(files[1])
    r = run(["data", "validate"], home)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    lines = errors(r)
    assert any("1 missing partition" in x for x in lines)
    assert any("1 stale partition" in x and "rows" in x for x in lines)
    assert any("dprm data repair d" in x for x in lines)
    j = run(["data", "validate", "--json"], home)
    assert j.returncode == 2
    doc = json.loads(j.stdout)
    assert not doc["ok"] and len(doc["datasets"][0]["store"]["missing"]) == 1
    rep = run(["data", "repair", "d"], home)
    assert rep.returncode == 0, rep.stderr
    assert "rebuilt the manifest from the files for 1 stale" in rep.stdout
    assert "re-ingested 1 source(s)" in rep.stdout and "consistent now" in rep.stdout
    assert run(["data", "validate", "d"], home).returncode == 0
    again = run(["data", "repair", "d", "--json"], home)
    assert again.returncode == 0 and json.loads(again.stdout)["datasets"][0]["ok"]


def _partitions(home: Path, dataset: str) -> dict[str, tuple[int, str]]:
    man = json.loads((home / "data" / dataset / "manifest.json").read_text())
    return {rel: (m["rows"], m["digest"]) for rel, m in man["tables"]["bars_1m"]["partitions"].items()}


def _rows_by_symbol(parts: dict[str, tuple[int, str]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for rel, (rows, _) in parts.items():
        sym = rel.split("/")[1].split("=", 1)[1]
        out[sym] = out.get(sym, 0) + rows
    return out


@pytest.mark.slow
@pytest.mark.parametrize("point", ["merge:9", "manifest:6"])
def test_the_issue_reproduction_killed_ingest_then_rerun(data_dir: Path, tmp_path: Path, point: str) -> None:
    """`dprm data ingest klines_1m.parquet --dataset m1`, SIGKILLed while writing, then rerun:
    the store equals a clean ingest's (rows and digests; 173,917 BTCUSDT rows, where the issue's
    run kept 113,429) and validate finds no problem."""
    f = data_dir / "binance_spot_btc_eth_1m" / "klines_1m.parquet"
    if not f.exists():
        pytest.skip(f"{f} not found")
    home = tmp_path / "home"
    k = run(["data", "ingest", str(f), "--dataset", "m1"], home, {"DPRM_TEST_KILL_AT": point})
    assert k.returncode == -signal.SIGKILL
    r = run(["data", "ingest", str(f), "--dataset", "m1"], home)
    assert r.returncode == 0, r.stderr
    assert run(["data", "validate", "m1"], home).returncode == 0
    clean = tmp_path / "clean"
    assert run(["data", "ingest", str(f), "--dataset", "m1"], clean).returncode == 0
    assert _partitions(home, "m1") == _partitions(clean, "m1")
    assert _rows_by_symbol(_partitions(home, "m1"))["BTCUSDT"] == 173_917


# ---- item 6: names ----------------------------------------------------------------------------
@pytest.mark.parametrize(("args", "field"), [
    (["--dataset", ".."], "dataset"),
    (["--dataset", "."], "dataset"),
    (["--dataset", "a/b"], "dataset"),
    (["--symbol", "../x"], "symbol"),
])
def test_bad_names_are_one_line_and_write_nothing(src: Path, tmp_path: Path, args: list[str],
                                                  field: str) -> None:
    home = tmp_path / "ws" / "home"
    base = ["data", "ingest", str(src / "t.csv"), "--format", "generic", "--mapping",
            str(src / ("nosym.toml" if field == "symbol" else "m.toml"))]
    if "--dataset" not in args:
        base += ["--dataset", "d"]
    r = run([*base, *args], home)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert len(errors(r)) == 1 and f"invalid {field} name" in errors(r)[0]
    assert not [p for p in (tmp_path / "ws").rglob("*") if p.is_file() and ".locks" not in p.parts]


def test_table_dotdot_in_a_mapping(src: Path, tmp_path: Path) -> None:
    (src / "evil.toml").write_text('kind = "trades"\ntable = ".."\nmapping = {ts = "time", '
                                   'symbol = "sym", price = "px", size = "qty"}\n')
    home = tmp_path / "ws" / "home"
    r = ingest(src, home, mapping="evil.toml")
    assert r.returncode == 2 and "invalid table name '..'" in r.stderr
    assert not list((tmp_path / "ws").rglob("*.parquet"))


# ---- item 10: a corrected re-ingest -------------------------------------------------------------
def test_corrected_symbol_on_the_command_line_replaces(src: Path, tmp_path: Path) -> None:
    home = tmp_path / "home"
    assert ingest(src, home, "--symbol", "WRONG", mapping="nosym.toml").returncode == 0
    again = ingest(src, home, "--symbol", "WRONG", mapping="nosym.toml")
    assert "already ingested" in again.stdout
    fixed = ingest(src, home, "--symbol", "BTCUSDT", mapping="nosym.toml")
    assert fixed.returncode == 0 and "replaced an earlier ingest" in fixed.stdout
    listing = run(["data", "list", "d"], home).stdout
    assert "BTCUSDT" in listing and "WRONG" not in listing


# ---- empty inputs ---------------------------------------------------------------------------
def test_empty_inputs_warn_and_create_no_dataset(src: Path, tmp_path: Path) -> None:
    home = tmp_path / "home"
    (tmp_path / "header.csv").write_text("time,sym,px,qty,side\n")
    (tmp_path / "zero.csv").write_text("")
    (tmp_path / "emptydir").mkdir()
    for args in (["data", "ingest", str(tmp_path / "header.csv"), "--format", "generic", "--mapping",
                  str(src / "m.toml"), "--dataset", "e"],
                 ["data", "ingest", str(tmp_path / "zero.csv"), "--dataset", "e"],
                 ["data", "ingest", str(tmp_path / "emptydir"), "--dataset", "e"]):
        r = run(args, home)
        assert r.returncode == 0, r.stderr
        assert "warning:" in r.stderr and "Traceback" not in r.stderr
        assert "nothing" in r.stderr
    assert "no datasets" in run(["data", "list"], home).stdout
    assert not (home / "data" / "e").exists()


def test_repair_and_validate_have_help(tmp_path: Path) -> None:
    for sub in (["data", "repair", "--help"], ["data", "validate", "--help"]):
        r = run(sub, tmp_path)
        assert r.returncode == 0 and "--json" in r.stdout
