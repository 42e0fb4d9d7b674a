"""Tests of the simulated crypto derivatives: perpetual funding, inverse futures, option chain."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from scipy.stats import norm

from features.readers.deribit import instrument_name
from features.schema import validate
from features.simulate import (
    STATE_COLUMNS,
    DerivativesConfig,
    SimConfig,
    SimResult,
    black76_undiscounted,
    conditional_iv,
    deribit_expiries,
    expected_variance,
    simulate,
    ssvi_total_var,
)

SPOT = ("trades", "quotes", "book", "bars_1m", "truth_bars", "truth_corr", "truth_daily",
        "truth_state")


@pytest.fixture(scope="module")
def sim() -> SimResult:
    """Three days across the 2025-01-31 monthly expiry, frequent stress spells."""
    cfg = SimConfig(
        n_days=3, start="2025-01-29T00:00Z", stress_calm_mean_days=1.0, stress_mean_hours=8.0
    ).select("BTCUSDT", "ETHUSDT", "STABLEIDX")
    return simulate(cfg, 3)


# ---- configuration -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"bar": "7min"}, "The 'bar' parameter of DerivativesConfig must be a duration dividing"),
        ({"funding_interval": "90s"}, "The 'funding_interval' parameter of DerivativesConfig must "
         "be a multiple of bar=1min"),
        ({"smile_eta": 1.5}, "The 'smile_eta' parameter of DerivativesConfig must be > 0 and "
         r"<= 1.33"),
        ({"smile_gamma": 0.7}, "The 'smile_gamma' parameter of DerivativesConfig must be > 0 and "
         "<= 0.5"),
        ({"strikes_per_expiry": 2}, "The 'strikes_per_expiry' parameter of DerivativesConfig must "
         "be >= 3"),
        ({"option_weekly": 0, "option_monthly": 0, "option_quarterly": 0},
         "The 'option_weekly' parameter of DerivativesConfig must be > 0 when"),
        ({"underlyings": ("BTCUSDT", "BTCUSDT")}, "must be a tuple of unique symbols"),
    ],
)
def test_derivatives_config_messages(kwargs: dict, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        DerivativesConfig(**kwargs)


def test_sim_config_checks_derivatives_against_assets() -> None:
    with pytest.raises(ValidationError, match="underlyings among the assets"):
        SimConfig(derivatives=DerivativesConfig(underlyings=("DOGEUSDT",)))
    with pytest.raises(ValidationError, match="a bar that is a multiple of base_step=120s"):
        SimConfig(base_step="120s", truth_interval="10min", book_every="10min")
    with pytest.raises(ValidationError, match="options_every a multiple of truth_interval=3h"):
        SimConfig(truth_interval="3h")
    assert SimConfig().select("SOLUSDT").derivatives.underlyings == ()
    assert SimConfig().select("ETHUSDT", "SOLUSDT").derivatives.underlyings == ("ETHUSDT",)


def test_deribit_expiry_calendar() -> None:
    s, e = pd.Timestamp("2025-01-01", tz="UTC"), pd.Timestamp("2025-12-31", tz="UTC")
    q = deribit_expiries(s, e, "quarterly")
    assert [str(t.date()) for t in q] == ["2025-03-28", "2025-06-27", "2025-09-26", "2025-12-26"]
    m = deribit_expiries(s, e, "monthly")
    assert [str(t.date()) for t in m[:3]] == ["2025-01-31", "2025-02-28", "2025-03-28"]
    assert len(m) == 12 and (m.hour == 8).all() and (m.dayofweek == 4).all()
    w = deribit_expiries(s, s + pd.Timedelta(days=14), "weekly")
    assert [str(t.date()) for t in w] == ["2025-01-03", "2025-01-10"]
    with pytest.raises(ValueError, match="The 'kind' parameter of deribit_expiries must be one"):
        deribit_expiries(s, e, "daily")


# ---- the spot market is unchanged ----------------------------------------------------------


def test_spot_market_identical_with_and_without_derivatives() -> None:
    cfg = SimConfig(n_days=1, base_step="10s").select("BTCUSDT", "ETHUSDT")
    a = simulate(cfg, 5)
    b = simulate(cfg.model_copy(update={"derivatives": DerivativesConfig(underlyings=())}), 5)
    for name in SPOT:
        pd.testing.assert_frame_equal(getattr(a, name), getattr(b, name))
    assert b.funding is None and b.options is None and set(b.tables()) == {
        "trades", "quotes", "book", "bars_1m"}
    assert a.options is not None and len(a.options) > 0


# digests of the spot frames computed with the simulator before derivatives existed (commit
# 39d7b93), SimConfig(n_days=1, base_step="10s").select("BTCUSDT", "ETHUSDT"), seed 5
PRE_DERIVATIVES_DIGESTS = {
    "trades": "c09a99a9e8845bf8", "quotes": "2d860a665e964b47", "book": "02fcce27a90d42da",
    "bars_1m": "f5c392777fcdd535", "truth_bars": "ec2764b2f41fcd98",
    "truth_corr": "f70f71e1a07166ab", "truth_daily": "a3fa558ea8275730",
    "truth_state": "044fe498b7ea9a50",
}


def test_spot_market_bit_identical_to_the_simulator_before_derivatives() -> None:
    import hashlib

    res = simulate(SimConfig(n_days=1, base_step="10s").select("BTCUSDT", "ETHUSDT"), 5)
    got = {name: hashlib.blake2b(pd.util.hash_pandas_object(getattr(res, name), index=False)
                                 .to_numpy().tobytes(), digest_size=8).hexdigest()
           for name in SPOT}
    assert got == PRE_DERIVATIVES_DIGESTS


# ---- contract --------------------------------------------------------------------------------


def test_derivative_tables_follow_the_schema(sim: SimResult) -> None:
    tables = sim.tables()
    for name in ("funding", "futures_1m", "options"):
        kind, frame = tables[name]
        validate(frame, kind)
        assert frame["ts"].is_monotonic_increasing
        assert frame["ts"].min() > sim.config.start_ts
    assert set(sim.funding["symbol"]) == {"BTCUSDT-PERP", "ETHUSDT-PERP"}
    assert set(sim.futures_bars["symbol"]) == {
        f"{c}-{d}" for c in ("BTC", "ETH") for d in ("31JAN25", "28FEB25", "28MAR25", "27JUN25")}
    o = sim.options
    names = [instrument_name(u, e, k, t) for u, e, k, t in
             zip(o["underlying"], o["expiry"], o["strike"], o["option_type"], strict=True)]
    assert list(o["symbol"]) == names  # the Deribit reader's naming
    assert set(o["underlying"]) == {"BTC", "ETH"}
    assert (o["expiry"] > o["ts"]).all() and (o["expiry"].dt.hour == 8).all()
    snaps = pd.date_range(sim.config.start_ts + pd.Timedelta("4h"), periods=18, freq="4h")
    assert (pd.DatetimeIndex(o["ts"].unique()) == snaps).all()


# ---- perpetual and funding -------------------------------------------------------------------


def test_funding_rate_is_the_binance_formula_of_the_premium(sim: SimResult) -> None:
    der = sim.config.derivatives
    f = sim.funding.copy()
    # index = the efficient price: the spot bars trade around it
    spot = sim.bars_1m.set_index(["ts", "symbol"])["close"]
    btc = f[f["symbol"] == "BTCUSDT-PERP"].set_index("ts")
    rel = spot.xs("BTCUSDT", level="symbol").loc[btc.index] / btc["index_px"] - 1
    assert rel.abs().median() < 5e-4 and rel.abs().max() < 0.01  # last trade vs minute end
    f["premium"] = f["mark_px"] / f["index_px"] - 1
    f["period"] = (f["ts"] - pd.Timedelta("1ns")).dt.floor("8h")
    avg = f.groupby(["symbol", "period"])["premium"].transform(lambda x: x.expanding().mean())
    expect = np.clip(avg + np.clip(der.funding_interest - avg, -0.0005, 0.0005), -0.0075, 0.0075)
    np.testing.assert_allclose(f["funding_rate"], expect, rtol=1e-9, atol=1e-15)
    # the premium is mean-reverting around its mean (bps)
    assert abs(f["premium"].mean() * 1e4 - der.premium_mean_bps) < 3 * der.premium_sd_bps


# ---- inverse futures -------------------------------------------------------------------------


def test_futures_converge_to_the_index_at_expiry(sim: SimResult) -> None:
    fb = sim.futures_bars
    jan = fb[fb["symbol"] == "BTC-31JAN25"]
    expiry = pd.Timestamp("2025-01-31T08:00Z")
    assert jan["ts"].max() == expiry  # listed up to its settlement bar, not after
    index = sim.funding[sim.funding["symbol"] == "BTCUSDT-PERP"].set_index("ts")["index_px"]
    np.testing.assert_allclose(jan.set_index("ts").loc[expiry, "close"], index.loc[expiry],
                               rtol=1e-12)
    # annualized basis ln(F/S)/tau of the June future stays near its configured mean
    jun = fb[fb["symbol"] == "BTC-27JUN25"].set_index("ts")
    tau = (pd.Timestamp("2025-06-27T08:00Z") - jun.index).total_seconds() / (365 * 86400)
    basis = np.log(jun["close"] / index.loc[jun.index]) / tau
    der = sim.config.derivatives
    assert abs(basis.mean() - der.basis_mean_ann) < 4 * der.basis_sd_ann
    assert (jun["high"] >= jun[["open", "close"]].max(axis=1)).all()
    assert (jun["low"] <= jun[["open", "close"]].min(axis=1)).all()


# ---- option chain ----------------------------------------------------------------------------


def test_option_marks_satisfy_parity_and_black76(sim: SimResult) -> None:
    o = sim.options
    tau = (o["expiry"] - o["ts"]).dt.total_seconds().to_numpy() / (365 * 86400)
    f, k, iv = o["underlying_px"].to_numpy(), o["strike"].to_numpy(), o["mark_iv"].to_numpy()
    # independent Black-76 (scipy.stats.norm), premium in the coin = USD price / forward
    d1 = (np.log(f / k) + 0.5 * iv**2 * tau) / (iv * np.sqrt(tau))
    d2 = d1 - iv * np.sqrt(tau)
    call = f * norm.cdf(d1) - k * norm.cdf(d2)
    put = k * norm.cdf(-d2) - f * norm.cdf(-d1)
    usd = np.where(o["option_type"] == "C", call, put)
    np.testing.assert_allclose(o["mark_px"], usd / f, rtol=1e-9, atol=1e-12)
    wide = o.pivot_table(index=["ts", "underlying", "expiry", "strike"], columns="option_type",
                         values=["mark_px", "underlying_px"])
    fw = wide[("underlying_px", "C")]
    kk = wide.index.get_level_values("strike")
    np.testing.assert_allclose(wide[("mark_px", "C")] - wide[("mark_px", "P")], (fw - kk) / fw,
                               atol=1e-12)
    # quotes bracket the mark; a missing bid only where the bid would be under one tick
    has_bid = o["bid_px"].notna()
    assert (o.loc[has_bid, "bid_px"] <= o.loc[has_bid, "mark_px"]).all()
    assert (o["ask_px"] >= o["mark_px"]).all()
    assert (o.loc[~has_bid, "mark_px"] < 0.01).all()


def test_smiles_are_free_of_static_arbitrage(sim: SimResult) -> None:
    """Call marks decrease and are convex in the strike; total variance grows with expiry."""
    c = sim.options[sim.options["option_type"] == "C"]
    for (_, _, _), g in c.groupby(["ts", "underlying", "expiry"]):
        g = g.sort_values("strike")
        usd = (g["mark_px"] * g["underlying_px"]).to_numpy()
        k = g["strike"].to_numpy()
        slope = np.diff(usd) / np.diff(k)
        assert (slope <= 1e-12).all() and (slope >= -1 - 1e-12).all()
        assert (np.diff(slope) >= -1e-9).all()
    # calendar: ATM-forward total variance (SSVI theta) non-decreasing in expiry
    o = sim.options
    tau = (o["expiry"] - o["ts"]).dt.total_seconds() / (365 * 86400)
    o = o.assign(w=o["mark_iv"] ** 2 * tau, k=np.log(o["strike"] / o["underlying_px"]))
    for (_, _), g in o.groupby(["ts", "underlying"]):
        atm = g.loc[g.groupby("expiry")["k"].apply(lambda x: x.abs().idxmin())]
        theta = atm.sort_values("expiry")["w"].to_numpy()
        # the nearest strike is not exactly ATM: allow the smile's small curvature
        assert (np.diff(theta) > -0.02 * theta[1:]).all()


def test_smile_follows_the_volatility_state(sim: SimResult) -> None:
    """ATM total variance = iv_premium^2 x the expected variance to expiry at the snapshot's
    hidden state; stress snapshots carry higher short-dated implied vol."""
    der = sim.config.derivatives
    o = sim.options
    state = sim.truth_state.set_index(["ts", "symbol"])
    spot_of = {"BTC": "BTCUSDT", "ETH": "ETHUSDT"}
    rows = o.drop_duplicates(["ts", "underlying", "expiry"]).reset_index(drop=True)
    st = state.loc[list(zip(rows["ts"], rows["underlying"].map(spot_of), strict=True))]
    st = st.reset_index()
    tau_s = (rows["expiry"] - rows["ts"]).dt.total_seconds().to_numpy()
    ev = np.array([expected_variance(sim.config, st.iloc[[i]], float(tau_s[i])).iloc[0, 0]
                   for i in range(len(st))])
    rho = np.where(st["stressed"], der.smile_rho_stress, der.smile_rho_calm)
    theta = der.iv_premium**2 * ev
    # every quoted strike's vol is the SSVI smile of that theta
    m = o.merge(rows.assign(theta=theta, rho=rho)[["ts", "underlying", "expiry", "theta", "rho"]],
                on=["ts", "underlying", "expiry"])
    tau = (m["expiry"] - m["ts"]).dt.total_seconds() / (365 * 86400)
    w = ssvi_total_var(np.log(m["strike"] / m["underlying_px"]).to_numpy(), m["theta"].to_numpy(),
                       m["rho"].to_numpy(), der.smile_eta, der.smile_gamma)
    np.testing.assert_allclose(m["mark_iv"] ** 2 * tau, w, rtol=1e-12)
    short = rows.assign(theta=theta, stressed=st["stressed"].to_numpy(),
                        atm_vol=np.sqrt(theta / (tau_s / (365 * 86400))))
    short = short[short.groupby(["ts", "underlying"])["expiry"].transform("min") == short["expiry"]]
    btc = short[short["underlying"] == "BTC"]
    assert btc["stressed"].any() and (~btc["stressed"]).any()
    assert btc.loc[btc["stressed"], "atm_vol"].mean() > 1.2 * btc.loc[~btc["stressed"],
                                                                        "atm_vol"].mean()


def test_expected_variance_matches_conditional_iv_on_a_flat_calendar() -> None:
    """Without the intraday/weekday calendar and jumps, the continuous-time expectation equals the
    simulator's exact discrete one (conditional_iv) up to the time step."""
    cfg = SimConfig(n_days=2, base_step="60s", truth_interval="1h", intraday_us_open_amp=0.0,
                    intraday_midnight_amp=0.0, weekend_var_ratio=1.0, stress_calm_mean_days=0.5,
                    stress_mean_hours=6.0).select("BTCUSDT")
    res = simulate(cfg, 9)
    state = res.truth_state.iloc[::7].reset_index(drop=True)
    exact = conditional_iv(cfg, state, [6, 48], bar="1h")
    cont = expected_variance(cfg, state, [6 * 3600.0, 48 * 3600.0], jumps=False)
    np.testing.assert_allclose(cont.to_numpy(), exact.to_numpy(), rtol=5e-3)
    with_jumps = expected_variance(cfg, state, 48 * 3600.0)
    assert (with_jumps.iloc[:, 0] > cont.iloc[:, 1]).all()
    with pytest.raises(ValueError, match="The 'horizon_s' parameter of expected_variance must"):
        expected_variance(cfg, state, -1.0)
    with pytest.raises(ValueError, match="The 'state' parameter of expected_variance must be a"):
        expected_variance(cfg, state.drop(columns=list(STATE_COLUMNS[:1])), 60.0)


def test_black76_undiscounted_limits() -> None:
    f, k = np.array([100.0, 100.0, 100.0]), np.array([90.0, 100.0, 110.0])
    np.testing.assert_allclose(black76_undiscounted(f, k, np.zeros(3), np.array([True] * 3)),
                               [10.0, 0.0, 0.0])
    np.testing.assert_allclose(black76_undiscounted(f, k, np.zeros(3), np.array([False] * 3)),
                               [0.0, 0.0, 10.0])
    # ATM closed form: F (2 N(sd/2) - 1)
    sd = 0.3
    np.testing.assert_allclose(black76_undiscounted(100.0, 100.0, sd**2, True),
                               100 * (2 * norm.cdf(sd / 2) - 1), rtol=1e-14)


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**32 - 1),
    underlyings=st.sampled_from([("BTCUSDT",), ("ETHUSDT",), ("BTCUSDT", "ETHUSDT")]),
    rho=st.floats(-0.9, 0.5),
    premium=st.floats(0.8, 1.5),
)
def test_chain_invariants_property(seed: int, underlyings: tuple[str, ...], rho: float,
                                   premium: float) -> None:
    """Any seed, skew and premium: parity holds on the marks, bid <= ask, a listed strike stays
    listed, and every vol and price is finite and non-negative."""
    der = DerivativesConfig(underlyings=underlyings, smile_rho_calm=rho, smile_rho_stress=rho,
                            smile_eta=min(0.7, 2 / (1 + abs(rho))), iv_premium=premium)
    cfg = SimConfig(n_days=1, base_step="60s", book_every="5min", derivatives=der).select(
        "BTCUSDT", "ETHUSDT")
    res = simulate(cfg, seed)
    o = res.options
    validate(o, "options")
    wide = o.pivot_table(index=["ts", "underlying", "expiry", "strike"], columns="option_type",
                         values=["mark_px", "underlying_px"])
    f = wide[("underlying_px", "C")]
    k = wide.index.get_level_values("strike")
    np.testing.assert_allclose(wide[("mark_px", "C")] - wide[("mark_px", "P")], (f - k) / f,
                               atol=1e-12)
    has_bid = o["bid_px"].notna()
    assert (o.loc[has_bid, "bid_px"] <= o.loc[has_bid, "ask_px"]).all()
    assert set(o["underlying"]) == {u.removesuffix("USDT") for u in underlyings}
    # a strike listed for an expiry at one snapshot is quoted at every later one
    for (_, _), g in o.groupby(["underlying", "expiry"]):
        snaps = sorted(g["ts"].unique())
        for a, b in zip(snaps, snaps[1:], strict=False):
            assert set(g.loc[g["ts"] == a, "strike"]) <= set(g.loc[g["ts"] == b, "strike"])
    assert np.isfinite(o["mark_iv"]).all() and (o["mark_iv"] > 0).all()
    assert (o["mark_px"] >= 0).all() and (o["ask_px"] >= der.option_tick).all()
