"""What a user sees when something goes wrong, and tables at 80 columns: real `dprm` subprocesses.

Every bad input is one line on stderr naming the file (or option) and the problem, exit code 2, no
traceback; anything else is a bug: exit 1, one line saying so, the traceback behind ``--debug``.
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from pipelines.cli import clean_errors

DPRM = [sys.executable, "-m", "pipelines.cli"]
TRADES = b"ts,symbol,price,size,side\n" + b"".join(
    b"2024-01-01T%02d:%02d:%02dZ,BTCUSDT,42000.5,0.1,1\n" % (i // 3600, i // 60 % 60, i % 60)
    for i in range(40_000)
)


def run(args: list[str], home: Path, columns: int = 200, **env: str) -> subprocess.CompletedProcess:
    full = {k: v for k, v in os.environ.items() if k != "DPRM_DEBUG"}
    full.update({"DPRM_HOME": str(home), "COLUMNS": str(columns), **env})
    return subprocess.run([*DPRM, *args], capture_output=True, text=True, env=full, timeout=600)


def one_line_error(r: subprocess.CompletedProcess, *needles: str) -> str:
    """Exit 2 and exactly one stderr line starting 'error:' that holds every needle."""
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr and "Aborted" not in r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, r.stderr
    for n in needles:
        assert n in lines[0], (n, lines[0])
    return lines[0]


@pytest.fixture
def mapping(tmp_path: Path) -> Path:
    m = tmp_path / "trades.toml"
    m.write_text('kind = "trades"\n')
    return m


def ingest(path: Path, home: Path, mapping: Path) -> subprocess.CompletedProcess:
    return run(["data", "ingest", str(path), "--format", "generic", "--mapping", str(mapping),
                "--dataset", "t"], home)


# ---- each corrupt input: one line naming the file, exit 2 ---------------------------------------


def test_corrupt_gzip_zlib_error(tmp_path: Path, mapping: Path) -> None:
    raw = bytearray(gzip.compress(TRADES))
    raw[20:60] = b"\x00" * 40
    p = tmp_path / "trades.csv.gz"
    p.write_bytes(bytes(raw))
    one_line_error(ingest(p, tmp_path / "home", mapping), "trades.csv.gz: corrupt gzip data",
                   "Error -3 while decompressing")


def test_corrupt_gzip_inside_a_folder_names_the_file(tmp_path: Path) -> None:
    raw = bytearray(gzip.compress(TRADES))
    raw[20:60] = b"\x00" * 40
    folder = tmp_path / "drop"
    folder.mkdir()
    (folder / "trades.csv.gz").write_bytes(bytes(raw))  # format detection reads its first line
    one_line_error(run(["data", "ingest", str(folder)], tmp_path / "home"),
                   f"{folder / 'trades.csv.gz'}: corrupt gzip data")


def test_not_gzip_bad_gzip_file(tmp_path: Path, mapping: Path) -> None:
    p = tmp_path / "trades.csv.gz"
    p.write_bytes(b"plain text, not gzip\n" * 20)
    one_line_error(ingest(p, tmp_path / "home", mapping), "trades.csv.gz: not a gzip file",
                   "Not a gzipped file")


def test_truncated_gzip_is_not_just_aborted(tmp_path: Path, mapping: Path) -> None:
    raw = gzip.compress(TRADES)
    p = tmp_path / "trades.csv.gz"
    p.write_bytes(raw[: len(raw) // 2])
    one_line_error(ingest(p, tmp_path / "home", mapping), "trades.csv.gz: truncated compressed file",
                   "end-of-stream marker")


def test_unknown_key_in_a_mapping_toml(tmp_path: Path) -> None:
    p = tmp_path / "trades.csv"
    p.write_bytes(TRADES[:500])
    m = tmp_path / "m.toml"
    m.write_text('kind = "trades"\nbogus = 1\n')
    line = one_line_error(ingest(p, tmp_path / "home", m), f"{m}: unknown key(s) ['bogus']",
                          "for format 'generic'")
    assert "'kind'" in line and "'mapping'" in line  # the keys it does accept
    m.write_text("kind = [\n")
    one_line_error(ingest(p, tmp_path / "home", m), f"{m}: invalid TOML in the mapping file")


def test_dprm_home_that_is_a_file(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.write_text("not a folder")
    one_line_error(run(["data", "list"], home), f"DPRM_HOME={home} is not a folder")


def test_garbage_bytes_with_a_csv_name(tmp_path: Path) -> None:
    p = tmp_path / "BTCUSDT-trades-2024-01-01.csv"
    p.write_bytes(bytes(range(128, 256)) * 64)
    one_line_error(run(["data", "ingest", str(p)], tmp_path / "home"),
                   "BTCUSDT-trades-2024-01-01.csv: not UTF-8 text")


def test_garbage_bytes_with_a_parquet_name(tmp_path: Path) -> None:
    p = tmp_path / "klines_1m.parquet"
    p.write_bytes(b"\x00garbage\xff" * 300)
    one_line_error(run(["data", "ingest", str(p), "--format", "binance_klines_parquet"],
                       tmp_path / "home"), "klines_1m.parquet: ", "parquet")
    # without --format the name alone does not make it a known format: also one line with the name
    one_line_error(run(["data", "ingest", str(p)], tmp_path / "home"),
                   "klines_1m.parquet: cannot detect the format")


# ---- options ------------------------------------------------------------------------------------


def test_horizons_that_are_not_numbers_name_the_option(tmp_path: Path) -> None:
    one_line_error(run(["evaluate", "--data", "x", "--horizons", "a"], tmp_path),
                   "--horizons 'a': 'a' is not an integer")
    one_line_error(run(["evaluate", "--data", "x", "--horizons", "1,0"], tmp_path),
                   "--horizons '1,0': 0 is not >= 1")


def test_start_after_end_is_one_line(tmp_path: Path) -> None:
    r = run(["evaluate", "--data", "x", "--start", "2026-03-30", "--end", "2025-09-01"], tmp_path)
    one_line_error(r, "--start 2026-03-30 is after --end 2025-09-01")
    assert "Warning" not in r.stderr
    one_line_error(run(["evaluate", "--data", "x", "--start", "soon"], tmp_path),
                   "--start 'soon' is not a date")
    cfg = tmp_path / "c.toml"
    cfg.write_text('[evaluate]\nstart = "2026-03-01"\nend = "2026-01-01"\n')
    one_line_error(run(["evaluate", "--data", "x", "-c", str(cfg)], tmp_path),
                   "invalid setting 'end'", "before start 2026-03-01")


def test_messages_name_the_cli_option_not_python(tmp_path: Path) -> None:
    p = tmp_path / "candles.csv"
    p.write_text("1704067200000,42000,42100,41900,42050,1.5,1704067259999,63000,10,0.7,29400,0\n")
    line = one_line_error(run(["data", "ingest", str(p), "--format", "binance_klines_csv"],
                              tmp_path / "home"), "candles.csv", "--symbol BTCUSDT")
    assert "symbol=" not in line


def test_help_defaults_are_the_settings_models_defaults() -> None:
    from pipelines.cli import HELP_DEFAULTS, config_help_defaults

    assert config_help_defaults() == HELP_DEFAULTS


def test_every_help_shows_the_config_defaults(tmp_path: Path) -> None:
    from pipelines.config import EvaluateConfig, FeaturesConfig, SimulateConfig

    ev = EvaluateConfig()
    r = run(["evaluate", "--help"], tmp_path, columns=200)
    assert r.returncode == 0
    for text in (f"[default: ({ev.freq})]", f"[default: ({ev.grid})]",
                 f"[default: ({','.join(map(str, ev.horizons))})]", f"[default: ({ev.window})]",
                 f"[default: ({ev.target})]", "[default: (the data's first)]",
                 "[default: (the ladder)]"):
        assert text in r.stdout, text
    r = run(["data", "simulate", "--help"], tmp_path, columns=200)
    sim = SimulateConfig()
    for text in (f"[default: ({sim.n_days})]", f"[default: ({sim.seed})]",
                 f"[default: ({sim.dataset})]"):
        assert text in r.stdout, text
    r = run(["features", "build", "--help"], tmp_path, columns=200)
    assert f"[default: ({FeaturesConfig().freq})]" in r.stdout
    for cmd in ("train", "forecast", "monitor"):
        r = run([cmd, "--help"], tmp_path, columns=200)
        assert "[default: (1D)]" in r.stdout and "[default: (embedded)]" in r.stdout, cmd
    assert "--debug" in run(["--help"], tmp_path).stdout


# ---- a bug is a bug: exit 1, the traceback behind --debug ---------------------------------------

bug_app = typer.Typer(pretty_exceptions_enable=False)


@bug_app.command()
@clean_errors
def crash(kind: str = "bug") -> None:
    """Raise a bug (a KeyError, not a DPRMError) or a user error."""
    if kind == "bug":
        raise KeyError("rv_var")
    from features.errors import ConfigError

    raise ConfigError("--window 0 must be >= 1")


def test_an_unexpected_exception_is_reported_as_a_bug(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DPRM_DEBUG", raising=False)
    r = CliRunner().invoke(bug_app, ["--kind", "bug"])
    assert r.exit_code == 1
    out = r.stderr if hasattr(r, "stderr") and r.stderr else r.output
    assert "internal error (a bug in dprm, not in your input): KeyError: 'rv_var'" in out
    assert "dprm --debug" in out and "Traceback" not in out
    monkeypatch.setenv("DPRM_DEBUG", "1")
    r = CliRunner().invoke(bug_app, ["--kind", "bug"])
    out = r.stderr if hasattr(r, "stderr") and r.stderr else r.output
    assert r.exit_code == 1 and "Traceback" in out and "KeyError: 'rv_var'" in out


def test_a_user_error_is_exit_2_and_debug_adds_the_traceback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DPRM_DEBUG", raising=False)
    r = CliRunner().invoke(bug_app, ["--kind", "user"])
    assert r.exit_code == 2 and "Traceback" not in r.output
    assert "error: --window 0 must be >= 1" in r.output
    monkeypatch.setenv("DPRM_DEBUG", "1")
    r = CliRunner().invoke(bug_app, ["--kind", "user"])
    assert r.exit_code == 2 and "Traceback" in r.output


def test_debug_option_of_the_real_cli_shows_the_traceback(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.write_text("a file")
    r = run(["--debug", "data", "list"], home)
    assert r.returncode == 2 and "Traceback" in r.stderr and "ConfigError" in r.stderr
    assert "error: DPRM_HOME=" in r.stderr
    r = run(["data", "list"], home, DPRM_DEBUG="1")
    assert r.returncode == 2 and "Traceback" in r.stderr


# ---- tables at 80 columns and --json -------------------------------------------------------------


def _fits(out: str, width: int = 80) -> None:
    too_wide = [ln for ln in out.splitlines() if len(ln) > width]
    assert not too_wide, too_wide
    assert "…" not in out  # folded, never cut


def column(out: str, k: int) -> str:
    """Column ``k`` of a one-row rich table, its folded pieces joined (spaces dropped)."""
    cells = [ln.split("│")[1:-1] for ln in out.splitlines() if ln.startswith("│")]
    return "".join(c[k].strip() for c in cells).replace(" ", "")


@pytest.fixture(scope="module")
def ingested(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Path:
    home = tmp_path_factory.mktemp("cli80") / "home"
    src = data_dir / "binance_daily_realized_measures_btc_eth_2018_2026" / "btc_measures.csv"
    r = run(["data", "ingest", str(src)], home)
    assert r.returncode == 0, r.stderr
    return home


@pytest.mark.slow
def test_data_tables_at_80_columns_and_as_json(ingested: Path, data_dir: Path) -> None:
    ds = "binance_daily_realized_measures_btc_eth_2018_2026"
    src = data_dir / ds / "btc_measures.csv"
    r = run(["data", "list"], ingested, columns=80)
    assert r.returncode == 0, r.stderr
    _fits(r.stdout)
    assert column(r.stdout, 0) == ds and "BTCUSDT" in r.stdout and "3,012" in r.stdout
    r = run(["data", "list", "--json"], ingested, columns=80)
    rows = json.loads(r.stdout)["rows"]
    assert [(x["dataset"], x["table"], x["symbol"], x["rows"]) for x in rows] == [
        (ds, "realized_1d", "BTCUSDT", 3012)]
    assert {"kind", "interval", "first", "last", "partitions"} <= set(rows[0])

    r = run(["data", "ingest", str(src)], ingested, columns=80)
    _fits(r.stdout)
    assert column(r.stdout, -1) == "alreadyingested:nothingadded"
    r = run(["data", "ingest", str(src), "--json"], ingested, columns=80)
    rep = json.loads(r.stdout)["rows"]
    assert rep[0]["rows_added"] == 0 and rep[0]["note"] == "already ingested: nothing added"

    r = run(["data", "validate"], ingested, columns=80)
    assert r.returncode == 0, r.stderr
    _fits(r.stdout)
    r = run(["data", "validate", "--json"], ingested, columns=80)
    v = json.loads(r.stdout)["rows"]
    assert v[0]["rows_stored"] == 3012 and v[0]["table"] == "realized_1d"

    r = run(["features", "build", ds, "--json"], ingested, columns=80)
    assert r.returncode == 0, r.stderr
    f = json.loads(r.stdout)["rows"]
    assert f[0]["dataset"] == ds and f[0]["rows"] > 2900
    r = run(["features", "build", ds], ingested, columns=80)
    _fits(r.stdout)


@pytest.mark.slow
def test_evaluate_at_80_columns_and_as_json(ingested: Path) -> None:
    ds = "binance_daily_realized_measures_btc_eth_2018_2026"
    args = ["evaluate", "--data", ds, "--models", "ewma_0.94,random_walk,log_har", "--horizons",
            "1", "--start", "2025-12-01"]
    r = run(args, ingested, columns=80)
    assert r.returncode == 0, r.stderr
    _fits(r.stdout)
    assert "log_har" in r.stdout
    r = run([*args, "--json"], ingested, columns=80)
    assert r.returncode == 0, r.stderr
    tables = json.loads(r.stdout)
    realized = tables[0]["rows"]
    assert {x["model_id"] for x in realized} == {"ewma_0.94", "random_walk", "log_har"}
    assert all(x["target"] == "realized" and x["n"] > 50 for x in realized)
    assert tables[-1] == {"title": "skipped models", "failures": []}


def test_models_list_at_80_columns_shows_the_champion(tmp_path: Path) -> None:
    import numpy as np
    import pandas as pd

    from models import registry as R
    from models.ewma import EWMAVol, RandomWalkVol

    home = tmp_path / "home"
    ts = pd.date_range("2024-01-01", periods=300, freq="D", tz="UTC")
    rv = np.exp(np.random.default_rng(3).normal(-8, 0.5, len(ts)))
    data = pd.DataFrame({"ts": ts, "symbol": "BTCUSDT", "rv_var": rv, "n_obs": 288.0})
    env_uri = os.environ.pop("MLFLOW_TRACKING_URI", None)
    try:
        for members in ({"rw": RandomWalkVol(min_obs=None)}, {"ewma": EWMAVol(min_obs=None)}):
            ref = R.register_challenger(members, home=home, training_data=data, horizons=(1,))
        R.promote(ref.version, home=home, mode="manual", approver="ann", reason="test")
    finally:
        if env_uri is not None:
            os.environ["MLFLOW_TRACKING_URI"] = env_uri
    r = run(["models", "list"], home, columns=80)
    assert r.returncode == 0, r.stderr
    _fits(r.stdout)
    assert "champion" in r.stdout
    r = run(["models", "list", "--json"], home, columns=80)
    rows = json.loads(r.stdout)["rows"]
    assert [(x["version"], x["aliases"]) for x in rows] == [(1, ""), (2, "champion")]
    assert {"run_id", "gate_reason", "members"} <= set(rows[0])


# ---- the correlation retry reads the typed error's number, not its message ------------------------


def test_correlation_window_retry_uses_the_typed_periods(tmp_path: Path) -> None:
    import numpy as np
    import pandas as pd

    from features.ingest import ingest_file
    from features.store import DataStore
    from pipelines.config import EvaluateConfig
    from pipelines.steps import evaluate_correlation

    rng = np.random.default_rng(11)
    days = pd.date_range("2024-01-02", periods=300, freq="D", tz="UTC")
    rows = []
    for sym, first in (("BTCUSDT", 0), ("ETHUSDT", 170)):  # ETH trades only the last 130 days
        close = 100 * np.exp(np.cumsum(rng.normal(0, 0.02, len(days))))
        for t, c in zip(days[first:], close[first:], strict=True):
            rows.append((t.isoformat(), sym, c, c * 1.01, c * 0.99, c, 10.0))
    src = tmp_path / "bars.csv"
    pd.DataFrame(rows, columns=["ts", "symbol", "open", "high", "low", "close", "volume"]).to_csv(
        src, index=False)
    home = tmp_path / "home"
    ingest_file(DataStore(home / "data"), src, dataset="pair", fmt="generic", kind="bars",
                table="bars_1d", interval="1D")
    cfg = EvaluateConfig(target="correlation", freq="1D", horizons=(1,), mcs_reps=100)
    result, _ = evaluate_correlation(home, "pair", cfg)
    # span 299 periods -> window 149; the common sample (130 closes, 129 returns) is too short
    # for it, so the retry takes half of it from InsufficientHistoryError.periods
    assert result.settings["window"] == 129 // 2
