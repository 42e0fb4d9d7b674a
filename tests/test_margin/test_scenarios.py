"""Scenario sets: FHS equals plain historical simulation when forecast = issued vol, the multi-day
rules by hand, Monte Carlo correlation and variance within Monte Carlo error, re-correlation, the
stress grid's range and IV shocks, implied-vol dynamics, funding carry, seeding, no look-ahead."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pandas as pd
import pytest

from features.errors import ModelError
from margin.params import MarginParams
from margin.scenarios import (
    build_scenarios,
    fhs_standardized,
    horizon_vol,
    mc_standardized,
    option_vol,
    recorrelate,
)
from models.forecast import Innovation
from tests.test_margin.margin_fixtures import (
    AS_OF,
    DAILY_VOL,
    corr_matrix,
    hourly_bundle,
    make_bundle,
)

UNDS = ("BTC", "ETH")


def _panel(bundle, syms=("BTCUSDT", "ETHUSDT"), col="ret") -> np.ndarray:
    r = bundle.residuals
    return r[r["symbol"].isin(syms)].pivot(index="ts", columns="symbol", values=col)[
        list(syms)].to_numpy()


def test_fhs_is_plain_historical_simulation_when_forecast_equals_issued_vol() -> None:
    b = make_bundle()
    sc = build_scenarios(UNDS, b, MarginParams(scenario_sources=("fhs",)), 1, as_of=AS_OF)
    np.testing.assert_allclose(sc.sets["fhs"].log_return, _panel(b), rtol=1e-13, atol=0)
    assert sc.fhs_dates[-1] == f"{b.residuals['ts'].max():%Y-%m-%d}"


def test_fhs_rescales_by_forecast_over_issued_vol() -> None:
    issued = {s: v / 2 for s, v in DAILY_VOL.items()}
    b = make_bundle(issued_vol=issued)
    sc = build_scenarios(UNDS, b, MarginParams(scenario_sources=("fhs",)), 1, as_of=AS_OF)
    np.testing.assert_allclose(sc.sets["fhs"].log_return, 2 * _panel(b), rtol=1e-13)
    # the stressed vol is at least the forecast (here: the forecast, issued vols are lower)
    np.testing.assert_allclose(sc.sigma_stressed, sc.sigma)


@pytest.mark.parametrize("h", [1, 2, 3, 7])
def test_horizon_vol_uses_the_bundle_units(h: int) -> None:
    """sqrt(h x forecast_var x scale) of the held horizon (the largest below h when missing)."""
    b = make_bundle(scale=1.2)
    v, src = horizon_vol(b, "ETHUSDT", h)
    assert src == {1: 1, 2: 2, 3: 2, 7: 5}[h]
    assert v == pytest.approx(math.sqrt(b.variance("ETHUSDT", src) / src * h), rel=1e-14)
    assert v == pytest.approx(0.04 * math.sqrt(1.2 * h), rel=1e-14)


def test_multi_day_rules_by_hand() -> None:
    z = np.arange(10.0).reshape(5, 2)
    ov = fhs_standardized(z, 2, "overlapping")
    np.testing.assert_allclose(ov, (z[1:] + z[:-1]) / math.sqrt(2))
    comp = fhs_standardized(z, 3, "compound", n_compound=50, seed=4)
    assert comp.shape == (50, 2)
    np.testing.assert_array_equal(comp, fhs_standardized(z, 3, "compound", n_compound=50, seed=4))
    # each compound scenario is a sum of 3 rows / sqrt(3): column 1 - column 0 = 3 / sqrt(3)
    np.testing.assert_allclose(comp[:, 1] - comp[:, 0], math.sqrt(3))
    with pytest.raises(ModelError, match="unknown FHS multi-day rule"):
        fhs_standardized(z, 2, "bootstrap")


def test_fhs_two_day_scenarios_scale_with_the_two_day_forecast() -> None:
    b = make_bundle()
    sc = build_scenarios(UNDS, b, MarginParams(scenario_sources=("fhs",)), 2, as_of=AS_OF)
    z = _panel(b, col="z")
    want = (z[1:] + z[:-1]) / math.sqrt(2) * (np.array([0.03, 0.04]) * math.sqrt(2))
    np.testing.assert_allclose(sc.sets["fhs"].log_return, want, rtol=1e-12, atol=1e-15)
    assert sc.dt_yr == 2 / 365


@pytest.mark.parametrize("source", ["normal", "fixed", "bundle"])
def test_mc_correlation_matches_the_forecast_within_mc_error(source: str) -> None:
    rho, n = 0.6, 40_000
    b = make_bundle(rho=rho)
    p = MarginParams(scenario_sources=("mc",), mc_n_scenarios=n, mc_dof_source=source, mc_dof=6.0)
    sc = build_scenarios(UNDS, b, p, 1, as_of=AS_OF)
    x = sc.sets["mc:forecast"].log_return / sc.sigma
    r = np.corrcoef(x.T)[0, 1]
    se = (1 - rho**2) / math.sqrt(n)
    # elliptical cases (normal, and t marginals with the copula's dof) are exact in expectation;
    # the bundle's t(6) marginals under a t(6) copula are the same elliptical law
    assert abs(r - rho) < (4 if source == "normal" else 8) * se
    assert np.allclose(x.std(axis=0), 1.0, atol=0.03)  # unit-variance marginals
    # the same draws under the stressed matrices (common random numbers)
    xh = sc.sets["mc:high"].log_return / sc.sigma
    assert np.corrcoef(xh.T)[0, 1] == pytest.approx(0.9, abs=8 * (1 - 0.81) / math.sqrt(n))


def test_mc_is_seeded() -> None:
    kw = {"copula_df": 5.0, "marginals": [Innovation("t", {"nu": 5.0}), None]}
    a = mc_standardized({"f": corr_matrix(0.3, 2)}, 100, 7, **kw)["f"]
    assert np.array_equal(a, mc_standardized({"f": corr_matrix(0.3, 2)}, 100, 7, **kw)["f"])
    assert not np.array_equal(a, mc_standardized({"f": corr_matrix(0.3, 2)}, 100, 8, **kw)["f"])


def test_skewt_marginal_has_unit_variance() -> None:
    x = mc_standardized({"f": np.eye(1)}, 50_000, 1, copula_df=None,
                        marginals=[Innovation("skewt", {"nu": 6.0, "lambda": -0.2})])["f"]
    assert x.std() == pytest.approx(1.0, abs=0.03) and abs(x.mean()) < 0.03


def test_recorrelate_hits_the_target_exactly() -> None:
    rng = np.random.default_rng(2)
    z = rng.standard_t(4, size=(500, 3)) / math.sqrt(2)
    target = corr_matrix(-0.3, 3) + 0.0
    target[0, 1] = target[1, 0] = 0.5
    w = recorrelate(z, target)
    np.testing.assert_allclose(w.T @ w / len(w), target, atol=1e-12)
    b = make_bundle(rho=0.2)
    sc = build_scenarios(UNDS, b, MarginParams(scenario_sources=("fhs",), fhs_recorrelate=True),
                         1, as_of=AS_OF)
    assert {"fhs", "fhs:high", "fhs:low"} <= set(sc.sets)
    x = sc.sets["fhs:high"].log_return / sc.sigma
    assert (x.T @ x / len(x))[0, 1] == pytest.approx(0.5, abs=1e-12)  # high = rho + 0.3


def test_grid_range_and_iv_shocks() -> None:
    b = make_bundle()
    p = MarginParams(grid_k_sigma=3.0, grid_n_moves=5, grid_min_range=0.10)
    sc = build_scenarios(("BTC", "SP500"), b, p, 2, as_of=AS_OF)
    g = sc.sets["grid"]
    assert g.n == (2 + 1) * 5 * 3
    btc = g.log_return[:, 0]
    assert btc.max() == pytest.approx(3 * 0.03 * math.sqrt(2))  # 0.127 > the 0.10 floor
    assert g.log_return[:, 1].max() == pytest.approx(0.10)  # 3 x 1.41% < floor
    # BTC has vol-of-vol: 2-day 0.99 / 0.01 quantiles; SP500 none: the fallback shocks
    assert set(np.unique(g.iv_log_shock[:, 0])) == {-0.2, 0.0, 0.28}
    assert set(np.unique(g.iv_log_shock[:, 1])) == {-0.25, 0.0, 0.35}
    assert "grid all" in g.labels[-1]


def test_funding_carry_and_basis_factors() -> None:
    b = make_bundle()
    p = MarginParams(funding_shock_sd_per_day=0.0, basis_shock_sd_ann=0.02, mc_n_scenarios=20_000)
    sc = build_scenarios(UNDS, b, p, 2, as_of=AS_OF, funding_carry_ann={"BTC": 0.1095})
    f = sc.sets["mc:forecast"].funding
    np.testing.assert_allclose(f[:, 0], 0.1095 * 2 / 365)
    np.testing.assert_allclose(f[:, 1], 0.0)
    bs = sc.sets["mc:forecast"].basis_shift_ann
    assert bs.std() == pytest.approx(0.02 * math.sqrt(2), rel=0.03)


def test_option_vol_dynamics() -> None:
    x = np.array([-0.1, 0.0, 0.1])
    zero = np.zeros(3)
    ss = option_vol(x, zero, 0.5, 0.3, 1.0, -0.5, 1.0, "sticky_strike", 0.01)
    np.testing.assert_allclose(ss, 0.5 * np.exp(-0.5 * x))
    # a quadratic smile sigma(k) = 0.5 + 0.3 k + 0.5 k^2 at k0 = 0: the Taylor form is exact
    sm = option_vol(x, zero, 0.5, 0.3, 1.0, 0.0, 1.0, "sticky_moneyness", 0.01)
    k1 = -x
    np.testing.assert_allclose(sm, 0.5 + 0.3 * k1 + 0.5 * k1**2)
    up = option_vol(zero, np.full(3, 0.2), 0.5, 0.0, 0.0, 0.0, 2.0, "sticky_strike", 0.01)
    np.testing.assert_allclose(up, 0.5 * math.exp(0.4))


def test_residuals_after_as_of_are_ignored() -> None:
    """No look-ahead: a bundle whose history runs 10 days past the market state's as_of gives
    the same FHS scenarios as one that ends at it."""
    n = 300
    z = np.random.default_rng(5).standard_normal((n + 10, 5))
    late = make_bundle(residual_z=z, n_days=n + 10, as_of=AS_OF + pd.Timedelta(days=10))
    early = make_bundle(residual_z=z[:n], n_days=n)
    p = MarginParams(scenario_sources=("fhs",))
    a = build_scenarios(UNDS, late, p, 1, as_of=AS_OF - pd.Timedelta(days=1))
    b = build_scenarios(UNDS, early, p, 1, as_of=AS_OF - pd.Timedelta(days=1))
    np.testing.assert_array_equal(a.sets["fhs"].log_return, b.sets["fhs"].log_return)


def test_scenario_errors() -> None:
    b = make_bundle()
    with pytest.raises(ModelError, match="not in the bundle"):
        build_scenarios(("DOGE",), b, MarginParams(), 1, as_of=AS_OF)
    short = make_bundle(n_days=20)
    with pytest.raises(ModelError, match="no forecast scenarios"):
        build_scenarios(UNDS, short, MarginParams(scenario_sources=("fhs",)), 1, as_of=AS_OF)
    sc = build_scenarios(UNDS, short, MarginParams(), 1, as_of=AS_OF)
    assert "fhs" not in sc.sets and any("FHS skipped" in n for n in sc.notes)


def test_an_hourly_bundle_serves_a_daily_mpor_in_24_hourly_periods() -> None:
    """Only "1h" forecasts: the 1-day vol is sqrt(24 x the 24-hour per-hour variance), FHS sums
    24 consecutive hourly residual vectors (overlapping, one per hour) / sqrt(24), and the MC
    draws and the grid are those of a daily bundle with the same 1-day variance."""
    daily = make_bundle()
    hb = hourly_bundle(daily, n_hours=24 * 40)
    p = MarginParams(scenario_sources=("fhs", "mc"), fhs_min_obs=100)
    sc = build_scenarios(UNDS, hb, p, 1, as_of=AS_OF)
    assert (sc.unit, sc.periods_per_day, sc.sigma_source_horizon) == ("1h", 24, (24, 24))
    np.testing.assert_allclose(sc.sigma, [0.03, 0.04], rtol=1e-14)
    z = _panel(hb, col="z")
    c = np.vstack([np.zeros((1, 2)), np.cumsum(z, axis=0)])
    want = (c[24:] - c[:-24]) / math.sqrt(24) * np.array([0.03, 0.04])
    np.testing.assert_allclose(sc.sets["fhs"].log_return, want, rtol=1e-10, atol=1e-15)
    assert len(sc.fhs_dates) == 24 * 40 - 23 and sc.fhs_dates[-1].endswith(":00")
    d = build_scenarios(UNDS, daily, p, 1, as_of=AS_OF)
    np.testing.assert_allclose(sc.sets["mc:forecast"].log_return, d.sets["mc:forecast"].log_return,
                               rtol=1e-12)
    np.testing.assert_allclose(sc.sets["grid"].log_return, d.sets["grid"].log_return, rtol=1e-12)
    # two days = 48 hours: no 48-hour forecast, the 24-hour per-hour average x 48
    two = build_scenarios(UNDS, hb, p, 2, as_of=AS_OF)
    np.testing.assert_allclose(two.sigma, np.array([0.03, 0.04]) * math.sqrt(2), rtol=1e-14)
    assert any("no 48-x 1h forecast; used the 24-x 1h" in n for n in two.notes)


def test_a_bundle_without_a_day_dividing_unit_is_refused() -> None:
    hb = hourly_bundle(make_bundle())
    vt = hb.vol_table.query("symbol == 'BTCUSDT'").assign(unit="7h")
    bad = dataclasses.replace(hb, symbols=("BTCUSDT",), vol_table=vt, corr={}, residuals=None,
                              innovations={}, stressed=None, vol_of_vol={})
    with pytest.raises(ModelError, match="nor an intraday unit that divides a day"):
        build_scenarios(("BTC",), bad, MarginParams(), 1, as_of=AS_OF)
