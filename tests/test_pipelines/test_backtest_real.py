"""Slow real-data backtests: the full method x portfolio grid on the embedded champion's window,
BTC/ETH on Binance's daily bars with the DVOL option books, and the FHS-EWMA yardstick on the
Bitstamp/Coinbase BTC history. They assert that the statistics are right (recomputed from the
long table), not which model wins; the figures go to the README and the issue note."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from margin import backtest as stats
from pipelines import backtest as bt
from pipelines.bundles import issue_bundle
from pipelines.flow_config import ForecastFlowConfig
from tests.test_pipelines.workspaces import copy_workspace

pytestmark = pytest.mark.slow


def _check_statistics(run: bt.BacktestRun) -> None:
    """Every summary row recomputed from the parquet on disk."""
    f = pd.read_parquet(run.out_dir / "backtest.parquet")
    rows = {(r["portfolio"], r["method"], r["apc"]): r for r in run.summary["rows"]}
    assert len(rows) == f.groupby(["portfolio", "method", "apc"]).ngroups
    for (pf, m, ap), g in f.groupby(["portfolio", "method", "apc"]):
        r = rows[(pf, m, ap)]
        g = g.sort_values("date")
        b = g["breach"].to_numpy()
        assert r["breaches"] == int(b.sum()) and r["n"] == len(g)
        zones = stats.window_zones(b, 250, 0.01)
        assert r["red_windows"] == sum(z["zone"] == "red" for z in zones)
        assert r["yellow_windows"] == sum(z["zone"] == "yellow" for z in zones)
        assert r["mean_margin_pct"] == pytest.approx(
            100 * np.mean(g["margin_usd"] / g["notional_usd"]), rel=1e-9)
        if ap == "none" and g["var99_usd"].notna().all():
            x = int((g["realized_loss_usd"] > g["var99_usd"]).sum())
            assert r["var_breaches"] == x
            assert r["p_pof"] == pytest.approx(stats.kupiec_pof(x, len(g), 0.01)[1], rel=1e-9)
            assert r["p_cc"] == pytest.approx(
                stats.christoffersen(g["var_breach"].to_numpy(), 0.01)["p_cc"], rel=1e-9)
            assert r["z2"] == pytest.approx(stats.az_z2(
                g["realized_loss_usd"], g["var975_usd"], g["es975_usd"], 0.025), rel=1e-9)
            assert -3.0 < r["z2_crit5"] < 0.0
        assert (g["n_failures"] == 0).all(), (pf, m)
    # Holm: adjusted >= raw, and the order of the raw p-values is kept
    pr = [(r["p_cc"], r["p_cc_holm"]) for r in run.summary["rows"] if r.get("p_cc") is not None]
    assert all(h >= p - 1e-15 for p, h in pr)
    srt = sorted(pr)
    assert all(a[1] <= b[1] + 1e-15 for a, b in zip(srt, srt[1:], strict=False))


@pytest.fixture(scope="module")
def champion_home(registered_template: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = copy_workspace(registered_template, tmp_path_factory.mktemp("btr") / "home")
    issue_bundle(home, ForecastFlowConfig())
    return home


def test_full_grid_on_the_embedded_champion_window(champion_home: Path) -> None:
    """Every method (GARCH and LightGBM seeded by walk-forward) on every reference portfolio the
    embedded data supports, over the champion's issued window."""
    run = bt.run_backtest(champion_home, "embedded", start="2018-07-02", end="2018-12-28",
                          methods=tuple(bt.METHODS), portfolios=bt.PORTFOLIOS)
    _check_statistics(run)
    meta = run.summary["meta"]
    assert set(meta["portfolios"]) == set(bt.PORTFOLIOS) - set(bt.PERP_BOOKS)  # no perpetual
    assert any(s.startswith("garch_1_1") for s in meta["seeded"])
    assert any(s.startswith("lgbm") for s in meta["seeded"])
    f = run.frame
    opt = f[f["portfolio"].isin(bt.OPTION_BOOKS)]
    assert opt["pnl_source"].str.startswith("model-reconstructed").all()
    # the delta-hedged book is hedged: its daily loss is far below the naked call's notional risk
    dh = f[(f["portfolio"] == "delta_hedged") & (f["method"] == "fixed") & (f["apc"] == "none")]
    lg = f[(f["portfolio"] == "long") & (f["method"] == "fixed") & (f["apc"] == "none")]
    assert dh["realized_loss_usd"].abs().mean() < 0.5 * lg["realized_loss_usd"].abs().mean()


def _crypto_home(tmp: Path, data_dir: Path) -> Path:
    home = tmp / "home"
    ds = bt.prepare_dataset(home, data_dir / "binance_spot_daily_multi_asset_2017_2026", "binance")
    from features.ingest import ingest_file
    from features.store import DataStore

    ingest_file(DataStore(home / "data"), data_dir / "deribit_dvol_daily_2021_2025h1" /
                "dvol_daily.parquet", dataset=ds)
    return home


def test_btc_eth_daily_2020_2025_with_dvol_option_books(tmp_path: Path, data_dir: Path) -> None:
    home = _crypto_home(tmp_path, data_dir)
    run = bt.run_backtest(home, "binance", start="2020-01-01", end="2025-09-24",
                          methods=("dprm_ewma", "fhs_ewma_94", "fhs_ewma_97", "hvar", "fixed",
                                   "deribit"),
                          portfolios=("long", "short", "pair", "straddle"),
                          symbols=["BTCUSDT", "ETHUSDT"])
    _check_statistics(run)
    f = run.frame
    lin = f[f["portfolio"] == "long"]
    assert lin["date"].nunique() >= 2090  # 2020-01-01 .. 2025-09-24, every calendar day
    st = f[f["portfolio"] == "straddle"]["date"]
    assert st.min() >= pd.Timestamp("2021-03-25", tz="UTC")  # DVOL starts 2021-03-24
    assert st.max() <= pd.Timestamp("2025-07-01", tz="UTC")
    assert run.summary["meta"]["seeded"]  # no champion trained here: EWMA walked forward
    leads = {r["method"]: r["crash_leads"] for r in run.summary["rows"]
             if r["portfolio"] == "long" and r["apc"] == "buffer"}
    assert set(leads["fhs_ewma_94"]) >= {"2020-03-12", "2021-05-19", "2022-06-13", "2022-11-09"}


def test_fhs_ewma_yardstick_on_bitstamp_btc(tmp_path: Path, data_dir: Path) -> None:
    """The issue's yardstick (BTC linear, 1-day MPOR, VaR99, 2020-01-01..2025-09-24: FHS-EWMA 0.94
    averages 9.6% of notional with 15 breaches) reproduced within sampling differences (our
    EWMA starts from its own history and filters close-to-close returns)."""
    home = tmp_path / "home"
    ds = bt.prepare_dataset(home, data_dir / "btcusd_daily_bitstamp_coinbase_2011_2025", "btc")
    run = bt.run_backtest(home, ds, start="2020-01-01", end="2025-09-24",
                          methods=("fhs_ewma_94_var", "fhs_ewma_94"), portfolios=("long",))
    _check_statistics(run)
    r = {(x["method"], x["apc"]): x for x in run.summary["rows"]}
    y = r[("fhs_ewma_94_var", "none")]
    assert 2090 <= y["n"] <= 2095
    assert 8 <= y["breaches"] <= 25, y["breaches"]
    assert 7.0 < y["mean_margin_pct"] < 13.0, y["mean_margin_pct"]
    buf = r[("fhs_ewma_94_var", "buffer")]
    assert buf["breaches"] <= y["breaches"]  # the buffered margin is never below the base
    f = run.frame[run.frame["method"] == "fhs_ewma_94_var"]
    unc = f[f["apc"].isin(["none", "buffer"])]  # no cap: never below the base margin
    assert (unc["margin_usd"] >= unc["base_margin_usd"] - 1e-9).all()
    cap = f[f["apc"] == "buffer_cap"].sort_values("date")["margin_usd"].to_numpy()
    assert (cap[1:] <= cap[:-1] * 1.10 * (1 + 1e-12)).all()  # the 10% daily cap holds
    assert math.isfinite(buf["pc_max_30d"])


def test_spot_perpetual_basis_book_on_binance(tmp_path: Path, data_dir: Path) -> None:
    """The basis book (long BTC spot, short the same coins of the USD-M perpetual) on Binance's
    daily spot bars with the perpetuals' marks and funding: its clean loss and its funding carry
    recomputed from the raw files, and the hedge far below the outright book's margin."""
    home = tmp_path / "home"
    ds = bt.prepare_dataset(home, data_dir / "binance_spot_daily_multi_asset_2017_2026", "bn")
    pds = bt.ingest_only(home, data_dir / "binance_usdm_perp_btc_eth_bnb_ltc", "bnperp")
    run = bt.run_backtest(home, ds, start="2025-01-01", end="2025-04-30",
                          methods=("dprm_ewma", "fhs_ewma_94"), portfolios=("long", "basis"),
                          symbols=["BTCUSDT", "ETHUSDT"], perp_dataset=pds)
    _check_statistics(run)
    f = run.frame[run.frame["apc"] == "none"]
    b = f[f["portfolio"] == "basis"]
    assert b["date"].nunique() >= 115
    assert (b["pnl_source"] == "market: spot close and perpetual mark").all()
    assert f[f["portfolio"] == "long"]["carry_usd"].isna().all()
    # independent: the raw spot closes, the raw 1h mark candles (close of the 23:00 bar) and
    # the raw funding events
    spot = pd.read_parquet(data_dir / "binance_spot_daily_multi_asset_2017_2026" / "klines_1d.parquet")
    spot = spot[spot["symbol"] == "BTCUSDT"].drop_duplicates("open_time").set_index("open_time")
    mk = pd.read_parquet(data_dir / "binance_usdm_perp_btc_eth_bnb_ltc" / "mark_price_1h.parquet")
    mk = mk[(mk["symbol"] == "BTCUSDT") & (mk["open_time"].dt.hour == 23)]
    mk = mk.drop_duplicates("open_time").set_index(mk["open_time"].dt.normalize()
                                                   .drop_duplicates())["close"]
    fu = pd.read_parquet(data_dir / "binance_usdm_perp_btc_eth_bnb_ltc" / "funding_rate.parquet")
    fu = fu[fu["symbol"] == "BTCUSDT"]
    fu = fu.groupby(fu["funding_time"].dt.round("1min"))["funding_rate"].last()  # ms-apart twins
    d = b[b["method"] == "dprm_ewma"].sort_values("date")
    checked = 0
    for r in d.itertuples(index=False):
        day0 = (r.date - pd.Timedelta(microseconds=1)).normalize()
        day1 = day0 + pd.Timedelta(days=1)  # MPOR 1 day on a 24/7 market
        s0, s1 = spot.at[day0, "close"], spot.at[day1, "close"]
        m0, m1 = mk.loc[day0], mk.loc[day1]
        q = bt.NOTIONAL_USD / s0
        assert r.realized_loss_usd == pytest.approx(-(q * (s1 - s0) - q * (m1 - m0)), rel=1e-9,
                                                    abs=1e-6)
        ev = fu[(fu.index > day1) & (fu.index <= day1 + pd.Timedelta(days=1))]
        assert len(ev) == 3
        assert r.carry_usd == pytest.approx(q * m0 * ev.sum(), rel=1e-9)
        checked += 1
    assert checked >= 115
    long_m = f[(f["portfolio"] == "long") & (f["method"] == "dprm_ewma")].set_index("date")
    hedge = d.set_index("date")["base_margin_usd"]
    assert (hedge > 0).all()
    assert (hedge < 0.2 * long_m["base_margin_usd"].reindex(hedge.index)).all()
