"""Tests of the seeded market simulator: contract, reproducibility, closed forms and stylized facts."""

from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from scipy import stats

from features.schema import validate
from features.simulate import (
    DEFAULT_ASSETS,
    IV,
    JUMP_VAR,
    QV,
    AssetConfig,
    SimConfig,
    SimResult,
    simulate,
)

MINUTE = pd.Timedelta("1min")


# ---- fixtures --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sim() -> SimResult:
    """Eight default days (Wed 2025-01-01 .. Wed 2025-01-08, one weekend)."""
    return simulate(SimConfig(n_days=8), 7)


@pytest.fixture(scope="module")
def stressed() -> SimResult:
    """Four days with frequent stress spells, crypto symbols only."""
    cfg = SimConfig(n_days=4, stress_calm_mean_days=1.0, stress_mean_hours=8.0).select(
        "BTCUSDT", "ETHUSDT", "SOLUSDT"
    )
    return simulate(cfg, 11)


def _log_closes(bars: pd.DataFrame) -> pd.DataFrame:
    """Log 1-minute closes, one column per symbol, indexed by bar close."""
    return np.log(bars.pivot(index="ts", columns="symbol", values="close"))


def _open_log_price(bars: pd.DataFrame) -> pd.Series:
    return np.log(bars.groupby("symbol")["open"].first())


def _grid_returns(bars: pd.DataFrame, every: str) -> pd.DataFrame:
    """Previous-tick log returns on a regular grid of bar closes (first return from the first open)."""
    lc = _log_closes(bars)
    start = lc.index[0] - MINUTE
    grid = pd.date_range(start + pd.Timedelta(every), lc.index[-1], freq=every)
    sampled = lc.loc[grid]
    first = pd.DataFrame([_open_log_price(bars)[sampled.columns]], index=[start])
    return pd.concat([first, sampled]).diff().iloc[1:]


# ---- configuration -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n_days": -3}, "The 'n_days' parameter of SimConfig must be > 0. Got -3 instead."),
        ({"n_days": 0}, "The 'n_days' parameter of SimConfig must be > 0. Got 0 instead."),
        (
            {"start": "2025-01-01T06:00Z"},
            "The 'start' parameter of SimConfig must be a UTC midnight",
        ),
        ({"start": "yesterday-ish"}, "The 'start' parameter of SimConfig must be a timestamp"),
        ({"base_step": "7s"}, "The 'base_step' parameter of SimConfig must be a whole number of"),
        (
            {"base_step": "-1s"},
            "The 'base_step' parameter of SimConfig must be a positive duration",
        ),
        ({"base_step": "soon"}, "The 'base_step' parameter of SimConfig must be a duration string"),
        (
            {"truth_interval": "7min"},
            "The 'truth_interval' parameter of SimConfig must be a multiple",
        ),
        (
            {"base_step": "2s", "book_every": "5s"},
            "The 'book_every' parameter of SimConfig must be a",
        ),
        (
            {"book_levels": 0},
            "The 'book_levels' parameter of SimConfig must be >= 1. Got 0 instead.",
        ),
        (
            {"weekend_var_ratio": 1.5},
            "The 'weekend_var_ratio' parameter of SimConfig must be > 0 and",
        ),
        ({"stress_var_mult": 0.5}, "The 'stress_var_mult' parameter of SimConfig must be >= 1."),
        ({"vol_fast_sd": -0.1}, "The 'vol_fast_sd' parameter of SimConfig must be >= 0."),
        ({"vol_common_weight": 1.2}, "The 'vol_common_weight' parameter of SimConfig must be >= 0"),
        (
            {"common_jump_frac": 2.0},
            "The 'common_jump_frac' parameter of SimConfig must be >= 0 and",
        ),
        (
            {"quotes_per_trade": float("nan")},
            "The 'quotes_per_trade' parameter of SimConfig must be",
        ),
        ({"assets": ()}, "The 'assets' parameter of SimConfig must be a non-empty tuple"),
        (
            {"assets": DEFAULT_ASSETS[:1] * 2},
            "The 'assets' parameter of SimConfig must be a tuple with",
        ),
    ],
    ids=lambda v: v if isinstance(v, str) and len(v) < 25 else None,
)
def test_config_validation_messages(kwargs: dict, message: str) -> None:
    with pytest.raises(ValidationError, match=re.escape(message)):
        SimConfig(**kwargs)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"vol_ann": -0.2},
            "The 'vol_ann' parameter of AssetConfig must be > 0. Got -0.2 instead.",
        ),
        (
            {"calm_loading": 1.0},
            "The 'calm_loading' parameter of AssetConfig must be > -1 and < 1.",
        ),
        (
            {"tick_size": 200.0},
            "The 'tick_size' parameter of AssetConfig must be < start_price=100.0",
        ),
        ({"symbol": ""}, "The 'symbol' parameter of AssetConfig must be a non-empty string"),
    ],
)
def test_asset_validation_messages(kwargs: dict, message: str) -> None:
    base = {
        "symbol": "X",
        "start_price": 100.0,
        "vol_ann": 0.5,
        "tick_size": 0.01,
        "trades_per_day": 100.0,
    }
    with pytest.raises(ValidationError, match=re.escape(message)):
        AssetConfig(**(base | kwargs))


def test_config_defaults_and_select() -> None:
    cfg = SimConfig()
    assert cfg.symbols == ("BTCUSDT", "ETHUSDT", "SOLUSDT", "STABLEIDX")
    assert [a.vol_ann for a in cfg.assets] == [0.55, 0.70, 0.95, 0.08]
    assert cfg.n_days == 60
    assert cfg.start_ts == pd.Timestamp("2025-01-01", tz="UTC")
    # about 1M trades over the default run
    assert 0.9e6 < cfg.n_days * sum(a.trades_per_day for a in cfg.assets) < 1.1e6
    assert cfg.select("SOLUSDT", "BTCUSDT").symbols == ("SOLUSDT", "BTCUSDT")
    with pytest.raises(ValueError, match=re.escape("The 'symbols' parameter of SimConfig.select")):
        cfg.select("DOGEUSDT")
    with pytest.raises(ValidationError):
        cfg.n_days = 3  # frozen


@pytest.mark.parametrize("bad", [None, 1.5, "7", -1, True])
def test_simulate_rejects_bad_random_state(bad: object) -> None:
    cfg = SimConfig(n_days=1).select("BTCUSDT")
    with pytest.raises(ValueError, match="The 'random_state' parameter of simulate must be"):
        simulate(cfg, bad)  # type: ignore[arg-type]


def test_simulate_rejects_non_config() -> None:
    with pytest.raises(ValueError, match="The 'config' parameter of simulate must be a SimConfig"):
        simulate({"n_days": 1}, 0)  # type: ignore[arg-type]


# ---- reproducibility -----------------------------------------------------------------------------


def _all_frames(res: SimResult) -> dict[str, pd.DataFrame]:
    return {name: f for name, (_, f) in res.tables().items()} | res.truth()


def test_same_seed_identical_different_seed_differs() -> None:
    cfg = SimConfig(n_days=1).select("BTCUSDT", "STABLEIDX")
    a, b = simulate(cfg, 5), simulate(cfg, 5)
    c = simulate(cfg, np.random.default_rng(5))
    d = simulate(cfg, 6)
    for name, frame in _all_frames(a).items():
        pd.testing.assert_frame_equal(frame, _all_frames(b)[name])
        pd.testing.assert_frame_equal(frame, _all_frames(c)[name])
    assert not a.trades["price"].equals(d.trades["price"])
    assert not np.allclose(a.truth_bars[IV], d.truth_bars[IV])


def test_component_streams_are_independent() -> None:
    """Changing the quote rate or the book leaves prices, trades and the truth unchanged."""
    cfg = SimConfig(n_days=1).select("ETHUSDT", "SOLUSDT")
    a = simulate(cfg, 3)
    b = simulate(cfg.model_copy(update={"quotes_per_trade": 5.0, "book_levels": 2}), 3)
    pd.testing.assert_frame_equal(a.trades, b.trades)
    pd.testing.assert_frame_equal(a.truth_bars, b.truth_bars)
    assert len(b.quotes) > 2 * len(a.quotes)


# ---- contract ------------------------------------------------------------------------------------


def test_frames_follow_the_schema(sim: SimResult) -> None:
    tables = sim.tables()
    spot = {"trades", "quotes", "book", "bars_1m"}
    assert set(tables) == spot | {"funding", "futures_1m", "options"}
    for kind, frame in tables.values():
        validate(frame, kind)
        assert len(frame) > 0
    for name in spot:
        frame = tables[name][1]
        assert set(frame["symbol"].unique()) == set(sim.config.symbols)
        # sorted by time overall, hence per symbol
        assert frame["ts"].is_monotonic_increasing
        for _, g in frame.groupby("symbol"):
            assert g["ts"].is_monotonic_increasing
    assert set(sim.truth()) == {"truth_bars", "truth_corr", "truth_daily"}
    start = sim.config.start_ts
    end = start + pd.Timedelta(days=sim.config.n_days)
    for frame in (sim.trades, sim.quotes, sim.book):
        assert frame["ts"].min() >= start and frame["ts"].max() < end
    summary = sim.summary()
    assert summary.loc["trades", "rows"] == len(sim.trades)
    assert (summary["memory_mb"] > 0).all()


def test_trade_and_quote_content(sim: SimResult) -> None:
    ticks = {a.symbol: a.tick_size for a in sim.config.assets}
    tr = sim.trades
    assert set(np.unique(tr["side"])) == {-1, 1}
    assert (tr["price"] > 0).all() and (tr["size"] > 0).all()
    q = sim.quotes
    assert (q["bid_px"] < q["ask_px"]).all()
    for sym, tick in ticks.items():
        for frame, col in ((tr, "price"), (q, "bid_px"), (q, "ask_px")):
            x = frame.loc[frame["symbol"] == sym, col].to_numpy() / tick
            np.testing.assert_allclose(x, np.round(x), atol=1e-6, rtol=0)
        ids = tr.loc[tr["symbol"] == sym, "trade_id"].to_numpy()
        np.testing.assert_array_equal(ids, np.arange(1, len(ids) + 1))
    # buyers pay more than sellers within the same minute (bid-ask bounce)
    minute = tr["ts"].dt.floor("1min")
    mean_px = tr.assign(minute=minute).groupby(["symbol", "minute", "side"])["price"].mean()
    wide = mean_px.unstack("side").dropna()
    assert ((wide[1] - wide[-1]) > 0).mean() > 0.6


def test_book_levels_are_ordered_on_ticks(sim: SimResult) -> None:
    book = sim.book
    n_levels = sim.config.book_levels
    every = pd.Timedelta(sim.config.book_every)
    snaps = book["ts"].unique()
    assert len(snaps) == sim.config.n_days * pd.Timedelta(days=1) // every
    assert (pd.Series(snaps).diff().dropna() == every).all()
    assert len(book) == len(snaps) * len(sim.config.symbols) * 2 * n_levels
    wide = book.pivot_table(index=["ts", "symbol"], columns=["side", "level"], values="px")
    bids = wide[1].to_numpy()
    asks = wide[-1].to_numpy()
    assert (np.diff(bids, axis=1) < 0).all()
    assert (np.diff(asks, axis=1) > 0).all()
    assert (bids[:, 0] < asks[:, 0]).all()
    assert (book["sz"] > 0).all()
    assert book["level"].min() == 0 and book["level"].max() == n_levels - 1  # 0 = best


def test_bars_are_trade_ohlcv_stamped_at_close(sim: SimResult) -> None:
    """Oracle: pandas resample of the trades over [close - 1 min, close)."""
    bars = sim.bars_1m
    start = sim.config.start_ts
    n_min = sim.config.n_days * 1440
    for sym, g in bars.groupby("symbol"):
        expected_ts = pd.date_range(start + MINUTE, periods=n_min, freq="1min")
        np.testing.assert_array_equal(g["ts"].to_numpy(), expected_ts.to_numpy())
        t = sim.trades[sim.trades["symbol"] == sym].set_index("ts")
        rs = t["price"].resample("1min", label="right", closed="left")
        ref = pd.DataFrame(
            {
                "open": rs.first(),
                "high": rs.max(),
                "low": rs.min(),
                "close": rs.last(),
                "volume": t["size"].resample("1min", label="right", closed="left").sum(),
                "trade_count": rs.count().astype(float),
            }
        )
        got = g.set_index("ts").loc[ref.index]
        has = ref["trade_count"] > 0
        for col in ("open", "high", "low", "close"):
            np.testing.assert_allclose(got.loc[has, col], ref.loc[has, col], rtol=0, atol=0)
        np.testing.assert_allclose(got["volume"], ref["volume"], rtol=1e-12)
        np.testing.assert_array_equal(got["trade_count"], ref["trade_count"])
        # empty minutes repeat the previous close with zero volume
        full = g.set_index("ts")
        empty = full["trade_count"] == 0
        prev_close = full["close"].shift(1)
        np.testing.assert_array_equal(full.loc[empty, "open"].iloc[1:], prev_close[empty].iloc[1:])
        assert (full.loc[empty, "volume"] == 0).all()
        assert (full["high"] >= full[["open", "close"]].max(axis=1)).all()
        assert (full["low"] <= full[["open", "close"]].min(axis=1)).all()


# ---- ground truth: closed forms and invariants -------------------------------------------------


def test_truth_layout_and_daily_sums(sim: SimResult) -> None:
    tb, td = sim.truth_bars, sim.truth_daily
    n_sym = len(sim.config.symbols)
    assert len(tb) == sim.config.n_days * 288 * n_sym
    assert len(td) == sim.config.n_days * n_sym
    assert tb["ts"].iloc[0] == sim.config.start_ts + pd.Timedelta("5min")
    assert td["ts"].iloc[0] == sim.config.start_ts + pd.Timedelta(days=1)
    np.testing.assert_allclose(tb[QV], tb[IV] + tb[JUMP_VAR], rtol=1e-15)
    assert (tb[IV] > 0).all() and (tb[JUMP_VAR] >= 0).all()
    day = (tb["ts"] - pd.Timedelta("5min")).dt.floor("D") + pd.Timedelta(days=1)
    sums = (
        tb.assign(day=day).groupby(["day", "symbol"], sort=False)[[IV, JUMP_VAR, "n_jumps"]].sum()
    )
    np.testing.assert_allclose(td[IV].to_numpy(), sums[IV].to_numpy(), rtol=1e-12)
    np.testing.assert_allclose(td[JUMP_VAR].to_numpy(), sums[JUMP_VAR].to_numpy(), rtol=1e-12)
    np.testing.assert_array_equal(td["n_jumps"].to_numpy(), sums["n_jumps"].to_numpy())
    assert set(tb["regime"]) <= {"calm", "stress"}


def test_deterministic_variance_closed_form() -> None:
    """Without stochastic vol, stress or jumps the daily IV is vol_ann^2/365 times the week factor."""
    ratio = 0.5
    cfg = SimConfig(
        n_days=5,
        start="2025-01-03",
        vol_fast_sd=0.0,
        vol_slow_sd=0.0,
        stress_calm_mean_days=1e6,
        jumps_per_day=0.0,
        weekend_var_ratio=ratio,
        base_step="5s",
    ).select("BTCUSDT", "STABLEIDX")
    res = simulate(cfg, 0)
    weekday = 7.0 / (5.0 + 2.0 * ratio)
    expected_week = np.array(
        [weekday, ratio * weekday, ratio * weekday, weekday, weekday]
    )  # F S S M T
    for a in cfg.assets:
        iv = res.truth_daily.loc[res.truth_daily["symbol"] == a.symbol, IV].to_numpy()
        np.testing.assert_allclose(iv, a.vol_ann**2 / 365.0 * expected_week, rtol=1e-9)
    assert (res.truth_daily[JUMP_VAR] == 0).all()
    # the intraday pattern: the US-open hour is the most volatile hour of the day (UTC)
    tb = res.truth_bars[res.truth_bars["symbol"] == "BTCUSDT"]
    hour = (tb["ts"] - pd.Timedelta("5min")).dt.hour
    by_hour = tb.groupby(hour)[IV].sum()
    assert by_hour.idxmax() == 14
    assert by_hour.idxmin() in range(4, 11)


def test_calm_truth_corr_is_product_of_loadings() -> None:
    """Constant loadings and volatility ratios: the correlation is exactly L_a L_b in every bar.

    With stochastic volatility the integrated correlation is L_a L_b times
    int s_a s_b / sqrt(int s_a^2 int s_b^2) <= 1 (Cauchy-Schwarz), i.e. slightly smaller.
    """
    base = SimConfig(n_days=1, loading_sd=0.0, stress_calm_mean_days=1e6, base_step="5s")
    loads = {a.symbol: a.calm_loading for a in base.assets}
    for kwargs, exact in (({"vol_fast_sd": 0.0, "vol_slow_sd": 0.0}, True), ({}, False)):
        cfg = base.model_copy(update=kwargs)
        tc = simulate(cfg, 2).truth_corr
        product = np.where(
            tc["symbol_a"] == tc["symbol_b"],
            1.0,
            tc["symbol_a"].map(loads) * tc["symbol_b"].map(loads),
        )
        if exact:
            np.testing.assert_allclose(tc["corr"].to_numpy(), product, rtol=1e-12, atol=1e-12)
        else:
            assert (tc["corr"].to_numpy() <= product + 1e-12).all()
            np.testing.assert_allclose(tc["corr"].to_numpy(), product, rtol=0.02)


@pytest.mark.parametrize("common_jump_frac", [0.0, 0.5, 1.0])
def test_jump_counts_and_sizes(common_jump_frac: float) -> None:
    """Poisson counts and N(0, (mult * daily vol)^2) sizes, checked with scipy."""
    mult, per_day, n_days = 0.5, 40.0, 3
    cfg = SimConfig(
        n_days=n_days,
        jumps_per_day=per_day,
        jump_sd_daily_vol_mult=mult,
        common_jump_frac=common_jump_frac,
        stress_calm_mean_days=1e6,
        base_step="5s",
    ).select("BTCUSDT", "ETHUSDT")
    res = simulate(cfg, 4)
    td = res.truth_daily
    counts = res.truth_bars.pivot(index="ts", columns="symbol", values="n_jumps")
    same_bar = ((counts["BTCUSDT"] > 0) & (counts["ETHUSDT"] > 0)).sum()
    if common_jump_frac == 1.0:  # only market-wide jumps: every jump hits both symbols
        np.testing.assert_array_equal(counts["BTCUSDT"], counts["ETHUSDT"])
    elif common_jump_frac == 0.0:  # independent: 864 bars * (120/864)^2 ~ 17 co-jump bars by chance
        assert same_bar <= 30
    else:  # ~60 market-wide jumps on top of the chance coincidences
        assert same_bar >= 45
    for a in cfg.assets:
        d = td[td["symbol"] == a.symbol]
        n = int(d["n_jumps"].sum())
        lo, hi = stats.poisson.ppf([0.0005, 0.9995], per_day * n_days)
        assert lo <= n <= hi
        jump_var_per_jump = a.vol_ann**2 / 365.0 * mult**2
        # sum of n squared N(0, s^2) draws is s^2 chi2(n)
        lo, hi = stats.chi2.ppf([0.0005, 0.9995], n) * jump_var_per_jump
        assert lo <= d[JUMP_VAR].sum() <= hi


def test_truth_corr_matrices_psd_unit_diagonal(sim: SimResult, stressed: SimResult) -> None:
    for res in (sim, stressed):
        n = len(res.config.symbols)
        tc = res.truth_corr
        mats = tc["corr"].to_numpy().reshape(-1, n, n)
        assert len(mats) == len(res.truth_bars) // n
        np.testing.assert_allclose(mats[:, np.arange(n), np.arange(n)], 1.0, rtol=0, atol=1e-15)
        np.testing.assert_allclose(mats, np.transpose(mats, (0, 2, 1)), atol=1e-15)
        assert np.linalg.eigvalsh(mats).min() >= -1e-12
        first = res.corr_matrix(tc["ts"].iloc[0])
        assert list(first.index) == list(res.config.symbols)
        np.testing.assert_allclose(first.to_numpy(), mats[0])
    with pytest.raises(ValueError, match="The 'ts' parameter of SimResult.corr_matrix"):
        sim.corr_matrix("1999-01-01")


def test_trade_rate_matches_target_closed_form() -> None:
    """Constant volatility: trades per day are Poisson with mean ``trades_per_day``."""
    cfg = SimConfig(
        n_days=2,
        vol_fast_sd=0.0,
        vol_slow_sd=0.0,
        intraday_us_open_amp=0.0,
        intraday_midnight_amp=0.0,
        weekend_var_ratio=1.0,
        stress_calm_mean_days=1e6,
        jumps_per_day=0.0,
        base_step="5s",
    ).select("BTCUSDT", "STABLEIDX")
    res = simulate(cfg, 8)
    counts = res.trades.groupby("symbol").size()
    for a in cfg.assets:
        lo, hi = stats.poisson.ppf([0.0005, 0.9995], a.trades_per_day * cfg.n_days)
        assert lo <= counts[a.symbol] <= hi
        lo, hi = stats.poisson.ppf([0.0005, 0.9995], a.trades_per_day * cfg.n_days * 2.0)
        assert lo <= (res.quotes["symbol"] == a.symbol).sum() <= hi


# ---- stylized facts ------------------------------------------------------------------------------


def test_volatility_clustering_and_fat_tails(sim: SimResult) -> None:
    r1 = _grid_returns(sim.bars_1m, "1min")
    n = len(r1)
    for sym in sim.config.symbols:
        x = r1[sym].to_numpy()
        a = np.abs(x - x.mean())
        acf = np.array([np.corrcoef(a[:-k], a[k:])[0, 1] for k in range(1, 11)])
        assert (acf > 2.0 / math.sqrt(n)).all(), (sym, acf)  # one-sided 2.3%
        assert acf.mean() > 5.0 / math.sqrt(n), (sym, acf)
        assert stats.kurtosis(x, fisher=False) > 3.0 + 1.0, sym


def test_five_minute_rv_tracks_integrated_variance(sim: SimResult) -> None:
    r5 = _grid_returns(sim.bars_1m, "5min")
    td = sim.truth_daily
    tb = sim.truth_bars
    ratios = []
    for sym in sim.config.symbols:
        x = r5[sym].to_numpy()
        rv_day = (x**2).reshape(sim.config.n_days, 288).sum(axis=1)
        qv_day = td.loc[td["symbol"] == sym, QV].to_numpy()
        ratios.append(rv_day / qv_day)
        # 4-hour bars: RV from 48 five-minute returns against the true quadratic variation
        rv_4h = (x**2).reshape(-1, 48).sum(axis=1)
        qv_4h = tb.loc[tb["symbol"] == sym, QV].to_numpy().reshape(-1, 48).sum(axis=1)
        assert np.corrcoef(rv_4h, qv_4h)[0, 1] > 0.8, sym
        assert np.corrcoef(np.log(rv_4h), np.log(qv_4h))[0, 1] > 0.8, sym
    ratios = np.concatenate(ratios)
    assert abs(ratios.mean() - 1.0) < 0.10
    assert abs(np.median(ratios) - 1.0) < 0.10


def test_spread_and_trade_count_rise_with_volatility(sim: SimResult) -> None:
    bar = pd.Timedelta("5min")
    q = sim.quotes
    rel_spread = 2 * (q["ask_px"] - q["bid_px"]) / (q["ask_px"] + q["bid_px"])
    spread = rel_spread.groupby([q["symbol"], q["ts"].dt.floor(bar) + bar]).mean()
    tr = sim.trades
    count = tr.groupby([tr["symbol"], tr["ts"].dt.floor(bar) + bar]).size()
    for sym in sim.config.symbols:
        iv = sim.truth_bars.loc[sim.truth_bars["symbol"] == sym].set_index("ts")[IV]
        hi, lo = iv >= iv.quantile(0.75), iv <= iv.quantile(0.25)
        s = spread.loc[sym].reindex(iv.index)
        c = count.loc[sym].reindex(iv.index, fill_value=0)
        assert s[hi].mean() > 1.5 * s[lo].mean(), sym
        assert c[hi].mean() > 1.5 * c[lo].mean(), sym
        assert stats.spearmanr(iv, c).statistic > 0.3, sym


def test_bid_ask_bounce_negative_autocorrelation(sim: SimResult) -> None:
    """Roll: consecutive trade-to-trade returns are negatively autocorrelated."""
    tr = sim.trades[sim.trades["symbol"] == "BTCUSDT"]
    r = np.diff(np.log(tr["price"].to_numpy()))
    rho = np.corrcoef(r[:-1], r[1:])[0, 1]
    assert rho < -3.0 / math.sqrt(len(r))


def test_stress_regime_raises_realized_correlation(stressed: SimResult) -> None:
    r5 = _grid_returns(stressed.bars_1m, "5min")
    regime = stressed.truth_bars.drop_duplicates("ts").set_index("ts")["regime"].loc[r5.index]
    assert (regime == "stress").sum() >= 30  # enough stress bars to measure
    calm = r5[regime == "calm"].corr()
    stress = r5[regime == "stress"].corr()
    syms = list(stressed.config.symbols)
    for i, a in enumerate(syms):
        for b in syms[i + 1 :]:
            assert stress.loc[a, b] > calm.loc[a, b] + 0.2, (a, b)
            assert stress.loc[a, b] > 0.7
    # the truth agrees, and stress bars are more volatile
    tc = stressed.truth_corr
    off = tc[tc["symbol_a"] != tc["symbol_b"]]
    by_regime = off.groupby("regime")["corr"].mean()
    assert by_regime["stress"] > by_regime["calm"] + 0.2
    tb = stressed.truth_bars
    assert (
        tb.loc[tb["regime"] == "stress", IV].median()
        > 2 * tb.loc[tb["regime"] == "calm", IV].median()
    )


@pytest.mark.slow
def test_default_run_weekend_effect_and_size() -> None:
    res = simulate(SimConfig(), 2025)
    assert 0.75e6 < len(res.trades) < 1.3e6
    td = res.truth_daily
    weekend = (td["ts"] - pd.Timedelta(days=1)).dt.day_of_week >= 5
    assert weekend.sum() == 4 * 17  # 60 days from Wed 2025-01-01: 17 weekend days
    for sym, g in td.groupby("symbol"):
        we = weekend[g.index]
        assert g.loc[we, IV].mean() < 0.8 * g.loc[~we, IV].mean(), sym


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    symbols=st.lists(
        st.sampled_from([a.symbol for a in DEFAULT_ASSETS]), min_size=1, max_size=4, unique=True
    ),
    base_step=st.sampled_from(["10s", "30s", "60s"]),
    truth_interval=st.sampled_from(["5min", "15min", "1h"]),
    seed=st.integers(0, 2**32 - 1),
)
def test_truth_invariants_property(
    symbols: list[str], base_step: str, truth_interval: str, seed: int
) -> None:
    """Any symbols, grid and truth interval: consistent bar/day truth, PSD unit-diagonal matrices."""
    cfg = SimConfig(
        n_days=1,
        base_step=base_step,
        truth_interval=truth_interval,
        book_every="5min",
        stress_calm_mean_days=0.5,
        stress_mean_hours=4.0,
    ).select(*symbols)
    res = simulate(cfg, seed)
    n = len(symbols)
    n_bars = pd.Timedelta(days=1) // pd.Timedelta(truth_interval)
    tb, td = res.truth_bars, res.truth_daily
    assert len(tb) == n_bars * n and len(td) == n
    np.testing.assert_allclose(
        td.set_index("symbol")[IV], tb.groupby("symbol")[IV].sum()[td["symbol"]], rtol=1e-12
    )
    assert ((tb["stress_frac"] >= 0) & (tb["stress_frac"] <= 1)).all()
    assert (tb["regime"] == np.where(tb["stress_frac"] >= 0.5, "stress", "calm")).all()
    mats = res.truth_corr["corr"].to_numpy().reshape(n_bars, n, n)
    np.testing.assert_allclose(mats[:, np.arange(n), np.arange(n)], 1.0, atol=1e-15)
    assert np.linalg.eigvalsh(mats).min() >= -1e-12
    assert (np.abs(mats) <= 1 + 1e-12).all()
    for kind, frame in res.tables().values():
        validate(frame, kind)
        assert frame["ts"].is_monotonic_increasing
    assert list(res.bars_1m["symbol"].iloc[:n]) == symbols
