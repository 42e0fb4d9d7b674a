"""Tests of the oracle floor: the simulator's hidden state, conditional_iv and the oracle forecasts."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from features.simulate import (
    IV,
    STATE_COLUMNS,
    SimConfig,
    SimResult,
    conditional_iv,
    simulate,
)
from models.losses import qlike
from models.oracle import oracle_forecasts, oracle_vol_forecasts, truth_var

# factors off, no stress effect, no jumps: the variance path is deterministic
DETERMINISTIC = dict(
    vol_fast_sd=0.0,
    vol_slow_sd=0.0,
    stress_var_mult=1.0,
    jumps_per_day=0.0,
    base_step="10s",
)


@pytest.fixture(scope="module")
def det() -> SimResult:
    """Fri 2025-01-03 .. Mon 2025-01-06: deterministic variance across a weekend."""
    cfg = SimConfig(n_days=4, start="2025-01-03", **DETERMINISTIC).select("BTCUSDT", "STABLEIDX")
    return simulate(cfg, 0)


@pytest.fixture(scope="module")
def sv() -> SimResult:
    """Six days of stochastic volatility with frequent stress spells."""
    cfg = SimConfig(
        n_days=6, base_step="10s", stress_calm_mean_days=1.0, stress_mean_hours=8.0
    ).select("BTCUSDT", "SOLUSDT")
    return simulate(cfg, 21)


def _next_truth(sim: SimResult, state: pd.DataFrame, h: int) -> np.ndarray:
    """Sum of the truth bars' iv_var over the h bars after each state row (NaN past the end)."""
    iv = sim.truth_bars.pivot(index="ts", columns="symbol", values=IV)
    summed = iv.rolling(h).sum().shift(-h)
    return np.array(
        [summed.at[t, s] for t, s in zip(state["ts"], state["symbol"], strict=True)], dtype=float
    )


# ---- the recorded state --------------------------------------------------------------------------


def test_truth_state_layout(sv: SimResult) -> None:
    st = sv.truth_state
    assert st is not None
    assert list(st.columns) == ["ts", "symbol", *STATE_COLUMNS]
    pd.testing.assert_series_equal(st["ts"], sv.truth_bars["ts"], check_names=False)
    pd.testing.assert_series_equal(st["symbol"], sv.truth_bars["symbol"], check_names=False)
    # the common parts are shared by the symbols of a bar; the regime flag agrees with stress_frac
    g = st.groupby("ts")
    assert (g["vol_fast_common"].nunique() == 1).all()
    assert (g["stressed"].nunique() == 1).all()
    assert 0.05 < st["stressed"].mean() < 0.95
    # a bar entirely in stress ends stressed (and entirely calm ends calm)
    full = sv.truth_bars["stress_frac"]
    assert st.loc[full == 1.0, "stressed"].all()
    assert not st.loc[full == 0.0, "stressed"].any()
    # stationary OU factors: sample sd near the configured sd
    assert 0.15 < st["vol_fast_idio"].std() < 0.35


def test_state_does_not_change_the_other_frames() -> None:
    """The state is seeded like every other frame, and truth() keeps its evaluation keys."""
    cfg = SimConfig(n_days=1, base_step="10s").select("ETHUSDT")
    a, b = simulate(cfg, 4), simulate(cfg, 4)
    pd.testing.assert_frame_equal(a.truth_state, b.truth_state)
    pd.testing.assert_frame_equal(a.truth_bars, b.truth_bars)
    assert set(a.truth()) == {"truth_bars", "truth_corr", "truth_daily"}


# ---- conditional_iv: closed forms ----------------------------------------------------------------


def test_deterministic_conditional_iv_equals_truth_and_closed_form(det: SimResult) -> None:
    cfg = det.config
    st = det.truth_state
    ex = conditional_iv(cfg, st, (1, 12, 288))
    for h in (1, 12, 288):
        y = _next_truth(det, st, h)
        ok = ~np.isnan(y)
        assert ok.sum() > 100
        np.testing.assert_allclose(ex[h].to_numpy()[ok], y[ok], rtol=1e-9)
    # from a midnight, one day ahead: vol_ann^2 / 365 x the week factor of the day (Sat .. Tue; the
    # last window lies past the simulated span, which conditional_iv allows)
    ratio = cfg.weekend_var_ratio
    weekday = 7.0 / (5.0 + 2.0 * ratio)
    week = {1: ratio * weekday, 2: ratio * weekday, 3: weekday, 4: weekday}
    midnights = st[st["ts"].dt.hour.eq(0) & st["ts"].dt.minute.eq(0)]
    got = conditional_iv(cfg, midnights, 288)[288]
    for (_, row), value in zip(midnights.iterrows(), got, strict=True):
        day = (row["ts"] - cfg.start_ts).days
        vol = {a.symbol: a.vol_ann for a in cfg.assets}[row["symbol"]]
        assert value == pytest.approx(vol**2 / 365.0 * week[day], rel=1e-9)


def test_one_step_ahead_regime_and_factor_closed_form() -> None:
    """One diffusion step ahead: base x season x week x M^stressed x exp(2 m_1 + 2 v_1 - 2 Var f)."""
    cfg = SimConfig(n_days=1, base_step="60s", stress_var_mult=3.0).select("BTCUSDT")
    state = pd.DataFrame(
        {
            "ts": pd.to_datetime(["2025-01-01T14:30Z", "2025-01-01T14:30Z"], utc=True),
            "symbol": ["BTCUSDT", "BTCUSDT"],
            "vol_fast_common": [0.2, 0.2],
            "vol_slow_common": [-0.1, -0.1],
            "vol_fast_idio": [0.3, 0.3],
            "vol_slow_idio": [0.05, 0.05],
            "stressed": [False, True],
        }
    )
    got = conditional_iv(cfg, state, 1, bar="60s")[1].to_numpy()
    dt = 60.0
    pf = 0.5 ** (dt / (cfg.vol_fast_half_life_hours * 3600))
    ps = 0.5 ** (dt / (cfg.vol_slow_half_life_days * 86400))
    wc, wi = np.sqrt(cfg.vol_common_weight), np.sqrt(1 - cfg.vol_common_weight)
    m = wc * (pf * 0.2 + ps * -0.1) + wi * (pf * 0.3 + ps * 0.05)
    v = cfg.vol_fast_sd**2 * (1 - pf**2) + cfg.vol_slow_sd**2 * (1 - ps**2)
    fv = cfg.vol_fast_sd**2 + cfg.vol_slow_sd**2
    hours = np.arange(1440) / 60.0
    bump = lambda c, w: np.exp(-0.5 * ((hours - c) / w) ** 2)  # noqa: E731
    season = (
        1
        + cfg.intraday_us_open_amp * bump(14.5, 1.25)
        + cfg.intraday_midnight_amp * (bump(0.0, 1.5) + bump(24.0, 1.5))
    )
    season = season / season.mean()
    week = 7.0 / (5.0 + 2.0 * cfg.weekend_var_ratio)  # a Wednesday
    base = 0.55**2 / (365 * 86400) * dt
    calm = base * season[14 * 60 + 30] * week * np.exp(2 * m + 2 * v - 2 * fv)
    np.testing.assert_allclose(got, [calm, 3.0 * calm], rtol=1e-12)


def test_conditional_iv_matches_next_bar_truth_with_slow_factors() -> None:
    """Nearly frozen factors: the next bar's true IV is the conditional expectation (checks that the
    recorded state is the state at the bar close, aligned with truth_bars)."""
    cfg = SimConfig(
        n_days=2,
        base_step="10s",
        vol_fast_half_life_hours=1e5,
        vol_slow_half_life_days=1e5,
        stress_calm_mean_days=0.5,
        stress_mean_hours=6.0,
        jumps_per_day=0.0,
    ).select("BTCUSDT", "SOLUSDT")
    sim = simulate(cfg, 3)
    st = sim.truth_state
    assert st["stressed"].any() and not st["stressed"].all()
    ex = conditional_iv(cfg, st, 1)[1].to_numpy()
    y = _next_truth(sim, st, 1)
    ok = ~np.isnan(y)
    rel = np.abs(y[ok] / ex[ok] - 1.0)
    # the expectation mixes in the ~1% chance of a regime switch within the next 5 minutes
    assert np.median(rel) < 0.02
    assert np.mean(rel < 0.05) > 0.97


def test_monte_carlo_converges_to_exact(sv: SimResult) -> None:
    cfg = sv.config.model_copy(update={"base_step": "60s"})
    st = sv.truth_state
    rows = pd.concat([st[st["stressed"]].iloc[:2], st[~st["stressed"]].iloc[:2]])
    rows = rows.assign(ts=rows["ts"].dt.floor("min"))
    hs = (1, 6, 24)
    ex = conditional_iv(cfg, rows, hs, method="exact")
    errs = {}
    for n in (50, 4000):
        mc = conditional_iv(cfg, rows, hs, method="mc", n_paths=n, random_state=5)
        errs[n] = float(np.abs(mc / ex - 1.0).to_numpy().mean())
    assert errs[4000] < 0.02
    assert errs[4000] < errs[50]


def test_seeded_reproducibility(sv: SimResult) -> None:
    cfg = sv.config
    rows = sv.truth_state.iloc[:3]
    kw = dict(bar="60s", method="mc", n_paths=20)
    a = conditional_iv(cfg, rows, 2, random_state=1, **kw)
    b = conditional_iv(cfg, rows, 2, random_state=np.random.default_rng(1), **kw)
    c = conditional_iv(cfg, rows, 2, random_state=2, **kw)
    pd.testing.assert_frame_equal(a, b)
    assert not np.allclose(a.to_numpy(), c.to_numpy())
    # exact needs no randomness
    pd.testing.assert_frame_equal(
        conditional_iv(cfg, rows, 2, random_state=1), conditional_iv(cfg, rows, 2)
    )


# ---- the oracle ----------------------------------------------------------------------------------


def test_truth_var_aggregates_truth_bars(sv: SimResult) -> None:
    tv = truth_var(sv, "1h")
    assert len(tv) == 6 * 24 * 2
    assert tv["ts"].iloc[0] == sv.config.start_ts + pd.Timedelta("1h")
    first = sv.truth_bars[sv.truth_bars["ts"] <= sv.config.start_ts + pd.Timedelta("1h")]
    expected = first.groupby("symbol")[IV].sum()
    got = tv[tv["ts"] == tv["ts"].iloc[0]].set_index("symbol")[IV]
    np.testing.assert_allclose(got[expected.index], expected, rtol=1e-12)
    np.testing.assert_allclose(tv[IV].sum(), sv.truth_bars[IV].sum(), rtol=1e-12)


def test_oracle_is_exact_on_deterministic_market(det: SimResult) -> None:
    """Deterministic variance: the oracle's per-hour average equals the realized truth exactly."""
    fcs = oracle_vol_forecasts(det, "1h", (1, 24))
    tv = truth_var(det, "1h").pivot(index="ts", columns="symbol", values=IV)
    for sym, fc in fcs.items():
        assert fc.horizon_unit == "1h" and fc.model_id == "oracle"
        for h in (1, 24):
            target = tv[sym].rolling(h).mean().shift(-h).reindex(fc.variance.index)
            ok = target.notna()
            np.testing.assert_allclose(fc.variance.loc[ok, h], target[ok], rtol=1e-9)


def test_oracle_beats_random_walk_on_truth(sv: SimResult) -> None:
    table = oracle_forecasts(sv, "1h", (1, 6))
    tv = truth_var(sv, "1h").pivot(index="ts", columns="symbol", values=IV)
    for h in (1, 6):
        part = table[table["horizon"] == h]
        y = np.array(
            [
                tv[s].rolling(h).mean().shift(-h).get(t, np.nan)
                for s, t in zip(part["symbol"], part["origin_ts"], strict=True)
            ]
        )
        rw = np.array([tv.at[t, s] for s, t in zip(part["symbol"], part["origin_ts"], strict=True)])
        ok = ~np.isnan(y) & ~np.isnan(rw)
        f = part["forecast_var"].to_numpy()[ok]
        q_oracle = qlike(y[ok], f).mean()
        q_rw = qlike(y[ok], rw[ok]).mean()
        assert q_oracle < 0.6 * q_rw
        # forecast efficiency: the truth is on average the oracle's forecast
        assert np.mean(y[ok] / f) == pytest.approx(1.0, abs=0.1)


def test_oracle_origins_subset_and_frame(sv: SimResult) -> None:
    origins = pd.to_datetime(["2025-01-02T00:00Z", "2025-01-03T12:00Z"], utc=True)
    table = oracle_forecasts(sv, "1h", (1, 3), origins=origins)
    assert set(table["origin_ts"]) == set(origins)
    assert len(table) == 2 * 2 * 2
    full = oracle_forecasts(sv, "1h", (1, 3))
    merged = table.merge(full, on=["symbol", "origin_ts", "horizon"], suffixes=("", "_full"))
    np.testing.assert_allclose(merged["forecast_var"], merged["forecast_var_full"], rtol=1e-12)


# ---- error paths ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"horizon_bars": 0}, "The 'horizon_bars' parameter of conditional_iv must be an int >= 1"),
        ({"method": "magic"}, "The 'method' parameter of conditional_iv must be one of"),
        ({"n_paths": 0}, "The 'n_paths' parameter of conditional_iv must be an int >= 1"),
        ({"bar": "15s"}, "The 'bar' parameter of conditional_iv must be a multiple of base_step"),
        ({"bar": "soon"}, "The 'bar' parameter of conditional_iv must be a duration string"),
        ({"method": "mc"}, "The 'random_state' parameter of conditional_iv must be an int seed"),
    ],
)
def test_conditional_iv_errors(sv: SimResult, kwargs: dict, message: str) -> None:
    args = {"horizon_bars": 1} | kwargs
    with pytest.raises(ValueError, match=message):
        conditional_iv(sv.config, sv.truth_state.iloc[:2], **args)


def test_conditional_iv_bad_state(sv: SimResult) -> None:
    st = sv.truth_state.iloc[:2]
    with pytest.raises(ValueError, match="The 'config' parameter of conditional_iv must be a Sim"):
        conditional_iv({}, st, 1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"must be a frame with columns \['stressed'\]"):
        conditional_iv(sv.config, st.drop(columns="stressed"), 1)
    with pytest.raises(ValueError, match="must be rows of the symbols"):
        conditional_iv(sv.config, st.assign(symbol="XYZ"), 1)
    with pytest.raises(ValueError, match="must be rows whose ts is on the 10s grid"):
        conditional_iv(sv.config, st.assign(ts=st["ts"] + pd.Timedelta("3s")), 1)
    with pytest.raises(ValueError, match="must be rows whose ts is on the 10s grid"):
        conditional_iv(sv.config, st.assign(ts=st["ts"] - pd.Timedelta(days=2)), 1)


def test_oracle_errors(sv: SimResult) -> None:
    with pytest.raises(ValueError, match="The 'freq' parameter of truth_var must be a positive"):
        truth_var(sv, "7min")
    with pytest.raises(ValueError, match="The 'sim' parameter of oracle_vol_forecasts must be a"):
        oracle_vol_forecasts(sv.truth_bars, "1h")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="The 'horizons' parameter of oracle_vol_forecasts"):
        oracle_vol_forecasts(sv, "1h", (0,))
    with pytest.raises(ValueError, match="The 'origins' parameter of oracle_vol_forecasts"):
        oracle_vol_forecasts(sv, "1h", (1,), origins=["2030-01-01T00:00Z"])
    no_state = dataclasses.replace(sv, truth_state=None)
    with pytest.raises(ValueError, match="must be a SimResult with truth_state"):
        oracle_vol_forecasts(no_state, "1h")
    with pytest.raises(ValueError, match="The 'origins' parameter of oracle_forecasts"):
        oracle_forecasts(sv, "1h", (1,), origins=[])
