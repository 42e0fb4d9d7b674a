"""The margin backtest end to end on the embedded data with a real champion, ledger and Prefect:
the long table's numbers recomputed independently, no look-ahead, the statistics, resume after a
SIGKILL with byte-identical outputs, the report in a real headless Chromium."""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from margin import backtest as stats
from margin.apc import APCParams, apc_step
from margin.methods import compute_method
from margin.params import MarginParams
from models.bundle_build import build_bundle
from models.ledger import ForecastLedger
from pipelines import backtest as bt
from pipelines.bundles import issue_bundle, ledger_path
from pipelines.flow_config import ForecastFlowConfig
from tests.test_pipelines.workspaces import copy_workspace

START, END = "2018-09-04", "2018-11-30"


@pytest.fixture(scope="module")
def bt_template(registered_template: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The registered workspace with the embedded champion's bundle issued (its ledger history)."""
    home = copy_workspace(registered_template, tmp_path_factory.mktemp("bt") / "home")
    issue_bundle(home, ForecastFlowConfig())
    return home


@pytest.fixture(scope="module")
def run(bt_template: Path) -> bt.BacktestRun:
    return bt.run_backtest(bt_template, "embedded", start=START, end=END,
                           methods=("dprm", "fhs_ewma_94", "fixed"),
                           portfolios=("long", "pair", "straddle"), chunk_days=15)


def test_long_table_schema_and_one_row_per_key(run: bt.BacktestRun) -> None:
    f = run.frame
    assert set(bt.COLUMNS) <= set(f.columns)
    assert not f.duplicated(["date", "portfolio", "method", "apc"]).any()
    assert set(f["apc"]) == set(bt.APC_VARIANTS)
    fl = f[f["apc"] == "buffer_floor"]  # the floor replayed for the engine's methods alone
    assert set(fl["method"]) == {m for m in set(f["method"]) if bt.METHODS[m].method == "dprm"}
    assert (fl["margin_usd"] >= fl["floor_usd"] - 1e-9).all()
    assert (fl["margin_usd"] >= fl["base_margin_usd"] - 1e-9).all()
    assert f[f["method"].map(lambda m: bt.METHODS[m].method != "dprm")]["floor_usd"].isna().all()
    assert set(f["portfolio"]) == {"long", "pair", "straddle"}
    days = f["date"].drop_duplicates()
    assert days.min() >= pd.Timestamp(START, tz="UTC") and days.max() <= pd.Timestamp(END, tz="UTC")
    assert (f["n_failures"] == 0).all()
    opt = f[f["portfolio"] == "straddle"]["pnl_source"].unique()
    assert len(opt) == 1 and opt[0].startswith("model-reconstructed")
    assert set(f[f["portfolio"] != "straddle"]["pnl_source"]) == {"market"}
    on_disk = pd.read_parquet(run.out_dir / "backtest.parquet")
    pd.testing.assert_frame_equal(on_disk, f)


def test_realized_loss_is_the_frozen_book_revalued_by_hand(bt_template: Path,
                                                           run: bt.BacktestRun) -> None:
    from pipelines import steps

    data = steps.model_frame(bt_template, "embedded", "1D")
    closes = data.pivot_table(index="ts", columns="symbol", values="close", aggfunc="last")
    f = run.frame[(run.frame["method"] == "fixed") & (run.frame["apc"] == "none")]
    for pf in ("long", "pair"):
        g = f[f["portfolio"] == pf]
        for t, loss in zip(g["date"], g["realized_loss_usd"], strict=True):
            k = closes.index.get_loc(t)
            s0, s1 = closes.iloc[k], closes.iloc[k + 1]
            if pf == "long":  # +1 M of SP500 (the symbol with a vol index comes first)
                want = -1e6 / s0["SP500"] * (s1["SP500"] - s0["SP500"])
            else:
                want = -(1e6 / s0["SP500"] * (s1["SP500"] - s0["SP500"])
                         - 1e6 / s0["NASDAQ"] * (s1["NASDAQ"] - s0["NASDAQ"]))
            assert loss == pytest.approx(want, rel=1e-10, abs=1e-6)


def test_breach_flags_and_the_apc_replay_by_hand(run: bt.BacktestRun) -> None:
    f = run.frame
    assert (f["breach"] == (f["realized_loss_usd"] > f["margin_usd"])).all()
    none = f[f["apc"] == "none"]
    assert np.array_equal(none["margin_usd"].to_numpy(), none["base_margin_usd"].to_numpy())
    g = f[(f["apc"] == "buffer") & (f["portfolio"] == "long") & (f["method"] == "dprm")]
    prev, p = None, APCParams(tools=("buffer",))
    for _d, b, m in zip(g["date"], g["base_margin_usd"], g["margin_usd"], strict=True):
        want = 1.25 * b if prev is None else max(b, min(1.25 * b, prev * 1.05))
        assert m == pytest.approx(want, rel=1e-12)
        assert apc_step(None, "2000-01-01", b, p).margin == pytest.approx(1.25 * b)
        prev = m
        assert m >= b
    # the buffer then the floor: M_t = max(buffered M_t, F_t)
    g = f[(f["apc"] == "buffer_floor") & (f["portfolio"] == "long") & (f["method"] == "dprm")]
    prev = None
    for b, fl, m in zip(g["base_margin_usd"], g["floor_usd"], g["margin_usd"], strict=True):
        buf = 1.25 * b if prev is None else max(b, min(1.25 * b, prev * 1.05))
        assert m == pytest.approx(max(buf, fl), rel=1e-12)
        prev = m
    assert (g["floor_usd"] > 0).all()


def test_a_day_recomputes_from_the_ledger_at_that_day_only(bt_template: Path,
                                                            run: bt.BacktestRun) -> None:
    """The row's margin is the engine's on the bundle built from the ledger at t: rebuilt here
    independently (public builders, the stated market state), the same bundle id and margin;
    between fit days only the distribution fits are carried over (the next day's bundle differs)."""
    from pipelines import steps

    f = run.frame[(run.frame["apc"] == "none") & (run.frame["portfolio"] == "long")
                  & (run.frame["method"] == "dprm")]
    assert bt.REFIT_EVERY == 21
    row = f.iloc[21]  # a fit day: the residual distributions and the scale are fitted at t
    t = row["date"]
    ledger = ForecastLedger(ledger_path(bt_template))
    champ = bt._champion(bt_template, "embedded", "1D")
    from models.bundle_build import ModelRef
    ref = ModelRef(champ[0], champ[1], "champion")
    data = steps.model_frame(bt_template, "embedded", "1D")
    closes = data.pivot_table(index="ts", columns="symbol", values="close", aggfunc="last")
    closes = closes[["NASDAQ", "SP500"]].dropna()
    from features.store import DataStore
    from pipelines.market import store_vol_of_vol

    vov = store_vol_of_vol(DataStore(bt_template / "data"), "embedded", closes.loc[:t], t)
    assert set(vov) == {"SP500"}  # the VIX's vol-of-vol and spot-vol beta
    assert vov["SP500"].spot_vol_beta < -2  # equity implied vol rises when the index falls
    b = build_bundle(ledger, t, symbols=["NASDAQ", "SP500"], vol_models={"1D": ref},
                     closes={"1D": closes.loc[:t]},
                     corr_models={"1D": ModelRef("ewma_corr", "baseline", "fallback")},
                     horizons={"1D": (1, 2, 5)},
                     fallback_models={"1D": ModelRef("ewma", "baseline", "fallback")},
                     code_version=b_version(), scale_n_boot=199, fit_residual_distribution=True,
                     random_state=0, vol_of_vol=vov)
    assert b.bundle_id == row["bundle_id"]
    assert b.as_of == t
    s0 = {s: float(closes.at[t, s]) for s in ("SP500", "NASDAQ")}
    from margin.market_state import MarketState, Quote, UnderlyingState
    ms = MarketState(t, {s: UnderlyingState(s, spot=Quote(s0[s], "USD", "close", t),
                                            rate=Quote(0.025, "rate", "x", t),
                                            dividend_yield=Quote({"SP500": 0.02,
                                                                  "NASDAQ": 0.01}[s], "y", "x", t))
                         for s in s0})
    pf = bt.reference_portfolios(["long"], ["SP500", "NASDAQ"], t, s0, {}, 0.025, {})["long"]
    r = compute_method("dprm", pf, ms, b, MarginParams())
    assert r.im == pytest.approx(row["base_margin_usd"], rel=1e-12)
    # the APC floor: the same engine on the bundle with each symbol's long-run variance
    from pipelines.apc_state import long_run_bundle

    lr, used = long_run_bundle(b, 10.0)
    assert used["SP500"]["proxy"]  # the backtest's history is at most 6 years: the proxy
    assert compute_method("dprm", pf, ms, lr, MarginParams()).im == pytest.approx(
        row["floor_usd"], rel=1e-12)
    nxt = f.iloc[22]
    assert nxt["bundle_id"] != row["bundle_id"]
    b2 = build_bundle(ledger, nxt["date"], symbols=["NASDAQ", "SP500"], vol_models={"1D": ref},
                      closes={"1D": closes.loc[:nxt["date"]]},
                      corr_models={"1D": ModelRef("ewma_corr", "baseline", "fallback")},
                      horizons={"1D": (1, 2, 5)},
                      fallback_models={"1D": ModelRef("ewma", "baseline", "fallback")},
                      code_version=b_version(), random_state=0,
                      scale=b.vol_table[["unit", "symbol", "horizon", "scale", "scale_lo",
                                         "scale_hi"]], innovations=dict(b.innovations),
                      copula_df=b.copula_df, vol_of_vol=vov)
    assert b2.bundle_id == nxt["bundle_id"]


def test_no_look_ahead_a_shorter_window_gives_the_same_rows(bt_template: Path,
                                                             run: bt.BacktestRun) -> None:
    """Every row uses only information up to its day (and the loss to t + MPOR): a backtest
    ending a month earlier reproduces the common days' rows exactly, although the data, ledger
    and correlation seeding after it differ in what they could offer."""
    short = bt.run_backtest(bt_template, "embedded", start=START, end="2018-11-14",
                            methods=("dprm", "fhs_ewma_94", "fixed"),
                            portfolios=("long", "pair", "straddle"), chunk_days=15)
    assert short.out_dir != run.out_dir
    cols = ["date", "portfolio", "method", "apc", "base_margin_usd", "var99_usd",
            "realized_loss_usd", "bundle_id"]
    a = short.frame[cols].reset_index(drop=True)
    b = run.frame[run.frame["date"] <= a["date"].max()][cols].reset_index(drop=True)
    pd.testing.assert_frame_equal(a, b)


def b_version() -> str:
    from models.run_record import dprm_version
    return dprm_version()


def test_statistics_recompute_from_the_table(run: bt.BacktestRun) -> None:
    rows = {(r["portfolio"], r["method"], r["apc"]): r for r in run.summary["rows"]}
    f = run.frame
    for (pf, m), g in f[f["apc"] == "none"].groupby(["portfolio", "method"]):
        r = rows[(pf, m, "none")]
        assert r["n"] == len(g) and r["breaches"] == int(g["breach"].sum())
        if m != "fixed":  # a simulation method: VaR99 from its scenarios
            x = int(g["var_breach"].sum())
            assert r["var_breaches"] == x
            assert r["p_pof"] == pytest.approx(stats.kupiec_pof(x, len(g), 0.01)[1], rel=1e-12)
            assert r["z2"] == pytest.approx(stats.az_z2(
                g["realized_loss_usd"], g["var975_usd"], g["es975_usd"], 0.025), rel=1e-12)
            assert r["z2_crit5"] < 0
        else:
            assert "var_breaches" not in r  # no scenarios, no VaR coverage test
        pc = stats.procyclicality(g["margin_usd"].to_numpy())
        assert r["pc_max_30d"] == pytest.approx(pc["max_30d"])
    ref = rows[("long", "fhs_ewma_94", "none")]
    assert ref["cost_ratio"] == pytest.approx(1.0)
    assert math.isfinite(rows[("long", "dprm", "none")]["cost_ratio"])
    assert run.summary["meta"]["selection_overlap"] != "none"


def test_rerun_writes_the_same_bytes(bt_template: Path, run: bt.BacktestRun) -> None:
    before = (run.out_dir / "backtest.parquet").read_bytes(), (run.out_dir / "summary.json").read_bytes()
    again = bt.run_backtest(bt_template, "embedded", start=START, end=END,
                            methods=("dprm", "fhs_ewma_94", "fixed"),
                            portfolios=("long", "pair", "straddle"), chunk_days=15)
    assert again.out_dir == run.out_dir and again.resumed_chunks == len(list(
        (run.out_dir / "parts").glob("*.parquet")))
    assert (again.out_dir / "backtest.parquet").read_bytes() == before[0]
    assert (again.out_dir / "summary.json").read_bytes() == before[1]


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_killed_mid_run_resumes_to_identical_outputs(bt_template: Path, run: bt.BacktestRun,
                                                     tmp_path: Path, sig: int) -> None:
    """SIGKILL (or SIGTERM) after the first checkpointed chunk; the rerun recomputes only the
    missing chunks and writes the bytes of the uninterrupted run."""
    home = copy_workspace(bt_template, tmp_path / "home")
    shutil.rmtree(home / "backtest", ignore_errors=True)
    env = {**os.environ, "DPRM_HOME": str(home), "PREFECT_LOGGING_LEVEL": "WARNING"}
    cmd = [sys.executable, "-m", "pipelines.cli", "backtest", "--data", "embedded", "--start",
           START, "--end", END, "--methods", "dprm,fhs_ewma_94,fixed", "--portfolios",
           "long,pair,straddle", "--chunk-days", "15"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    parts = home / "backtest" / "embedded" / run.out_dir.name / "parts"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and not list(parts.glob("*.parquet")):
        time.sleep(0.2)
    os.killpg(proc.pid, sig)
    proc.wait(timeout=30)
    done = sorted(p.name for p in parts.glob("*.parquet"))
    assert 1 <= len(done) < 5, done  # killed mid-run (of 5 chunks)
    assert not (parts.parent / "backtest.parquet").exists()
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert (parts.parent / "backtest.parquet").read_bytes() == (
        run.out_dir / "backtest.parquet").read_bytes()
    assert (parts.parent / "summary.json").read_bytes() == (
        run.out_dir / "summary.json").read_bytes()


def test_bad_choices_are_clear_errors(bt_template: Path) -> None:
    from features.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown method"):
        bt.run_backtest(bt_template, "embedded", methods=("nope",))
    with pytest.raises(ConfigError, match="unknown portfolio"):
        bt.run_backtest(bt_template, "embedded", portfolios=("nope",))
    with pytest.raises(ConfigError, match="symbols"):
        bt.run_backtest(bt_template, "embedded", symbols=["BTCUSDT"])


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (Debian package "
                    "'chromium'; .ci/run installs it)")
def test_report_renders_in_headless_chromium(bt_template: Path, run: bt.BacktestRun,
                                            tmp_path: Path) -> None:
    from pipelines.backtest_report import write_report

    out = write_report(bt_template, "embedded", backtest_dir=run.out_dir)
    page = out["report"].read_text()
    import re

    # self-contained: nothing loaded from elsewhere (no external src/href, no stylesheet link)
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//)""", page) and "<link" not in page
    assert "dc:date" not in page  # no timestamp: the same inputs render the same bytes
    assert write_report(bt_template, "embedded", backtest_dir=run.out_dir,
                        log_mlflow=False)["report"].read_text() == page
    assert out["run_id"]  # logged to MLflow
    from mlflow.tracking import MlflowClient

    from models.registry_store import tracking_uri
    arts = {a.path for a in MlflowClient(tracking_uri(bt_template)).list_artifacts(out["run_id"])}
    assert {"report.html", "backtest.csv", "summary.json", "backtest.parquet"} <= arts
    profile = tmp_path / "chromium-profile"
    base = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
            f"--user-data-dir={profile}", "--window-size=1250,2600"]
    dom = subprocess.run([*base, "--dump-dom", out["report"].as_uri()], capture_output=True,
                         text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    body = dom.stdout[dom.stdout.index("<body"):dom.stdout.index(">", dom.stdout.index("<body"))]
    attrs = dict(kv.split("=", 1) for kv in body.replace('"', "").split()[1:])
    n_fig = 3 + 1  # a margin chart per portfolio and the procyclicality chart
    assert attrs["data-errors"] == "0" and attrs["data-figures"] == str(n_fig)
    assert attrs["data-charts"] == str(n_fig)  # every chart drew paths
    shot = tmp_path / "report.png"
    s = subprocess.run([*base, f"--screenshot={shot}", out["report"].as_uri()],
                       capture_output=True, text=True, timeout=120)
    assert s.returncode == 0 and shot.stat().st_size > 20_000
    (Path(os.environ.get("DPRM_TEST_ARTIFACTS", tmp_path)) / "backtest_report.png").write_bytes(
        shot.read_bytes())
    # the summary table holds every portfolio x method x variant
    assert page.count("<tr class=") == len(run.summary["rows"])
    assert json.loads((run.out_dir / "summary.json").read_text())["meta"]["run_key"] in page


def test_impulse_response_to_a_vol_step(tmp_path: Path) -> None:
    """A x2 step in volatility without sampling noise (every return exactly the day's vol): the
    FHS-EWMA margin rises at least at the EWMA's pace, sqrt(l^n + (1 - l^n) k^2) at n days after
    the step, and at most k times that (the new days' residuals, r / the lagging vol, are at most
    k: the filtered-history overshoot); hvar moves far less at first."""
    rows = bt.impulse_response(tmp_path / "home", multipliers=(2.0,), n_before=600, n_after=70,
                               window=62, methods=("fhs_ewma_94", "hvar"), noise=False)
    r = {(x["method"], x["apc"]): x for x in rows}
    f = r[("fhs_ewma_94", "none")]
    for n in (20, 60):
        ewma = math.sqrt(0.94**n + (1 - 0.94**n) * 4)
        assert ewma * 0.9 <= f[f"after_{n}d"] <= 2 * ewma, (n, f)
    assert f["after_60d"] >= 1.9
    assert r[("hvar", "none")]["after_5d"] < f["after_20d"]
    assert (tmp_path / "home" / "backtest" / "impulse.json").is_file()


def test_the_flow_on_dask_writes_the_bytes_of_the_threaded_run(
        bt_template: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The backtest flow with its chunks on Dask worker processes (the scale-out path) and on
    threads: the same table, byte for byte; the report task logs to MLflow."""
    from pipelines.flow_config import BacktestFlowConfig, RunnerConfig
    from pipelines.flows import run_backtest_flow

    outs = {}
    for kind in ("threads", "dask"):
        home = copy_workspace(bt_template, tmp_path / kind)
        monkeypatch.setenv("DPRM_HOME", str(home))
        outs[kind] = run_backtest_flow(BacktestFlowConfig(
            start=START, end="2018-10-31", methods=("dprm", "fixed"), portfolios=("long",),
            chunk_days=10, runner=RunnerConfig(kind=kind, dask_workers=2)))
    a = Path(outs["threads"]["out_dir"]) / "backtest.parquet"
    b = Path(outs["dask"]["out_dir"]) / "backtest.parquet"
    assert a.read_bytes() == b.read_bytes()
    assert outs["dask"]["report"]["run_id"] and Path(outs["dask"]["report"]["report"]).is_file()


def test_funding_carry_by_hand() -> None:
    """Short 2 coins of a perpetual marked at 100 over one day: the events after the close of t
    up to the close of t + 1 day (the event at t's own close excluded) times -q x mark; NaN with
    no event in the window; 0 for a book without a perpetual."""
    from margin.instruments import Perpetual, Spot
    from margin.portfolio import Portfolio, Position

    t0 = pd.Timestamp("2025-01-02T00:00Z")  # the close of 2025-01-01
    t1 = pd.Timestamp("2025-01-03T00:00Z")
    perp = Perpetual("XUSDT-PERP", "X")
    pf = Portfolio("b", (Position("s", Spot("X", "X"), 2.0, None, 0, "X"),
                         Position("p", perp, -2.0, None, 1, perp.name)), (), t0)
    ev = pd.Series([0.5, 0.001, 0.002, 0.003, 0.7],
                   index=pd.DatetimeIndex(["2025-01-02T00:00Z", "2025-01-02T08:00Z",
                                           "2025-01-02T16:00Z", "2025-01-03T00:00Z",
                                           "2025-01-03T08:00Z"]))
    got = bt.funding_carry(pf, t0, t1, {perp.name: 100.0}, {perp.name: ev})
    assert got == pytest.approx(2.0 * 100.0 * (0.001 + 0.002 + 0.003), rel=1e-12)
    assert np.isnan(bt.funding_carry(pf, t0, t1, {perp.name: 100.0}, {perp.name: ev[:1]}))
    assert np.isnan(bt.funding_carry(pf, t0, t1, {perp.name: 100.0}, {perp.name: None}))
    spot_only = Portfolio("s", pf.positions[:1], (), t0)
    assert bt.funding_carry(spot_only, t0, t1, {}, {}) == 0.0
