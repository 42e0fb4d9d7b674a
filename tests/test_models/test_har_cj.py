"""HAR-CJ with significant jumps: the BNS statistic against the numba realized-measure engine, the
C/J split by hand, coefficients against statsmodels OLS, and the untested split kept as an option."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
from scipy import stats

from features.realized import realized_measures
from models.base import MissingInputsError
from models.har import HARCJVol, bns_ratio_z
from tests.test_models.test_har import simulate_realized


def test_bns_ratio_z_equals_the_realized_measure_engine(rng):
    # 20 days of 1-minute prices, a jump on two of them; features.realized computes bns_z (numba)
    n_days, per_day = 20, 1440
    ts = pd.date_range("2024-01-01", periods=n_days * per_day, freq="1min", tz="UTC")
    r = rng.normal(0.0, 0.001, len(ts))
    r[5 * per_day + 700] += 0.02
    r[12 * per_day + 100] -= 0.03
    prices = pd.DataFrame({"ts": ts, "symbol": "X", "price": 100 * np.exp(np.cumsum(r))})
    rm = realized_measures(prices, bar="1D", grid="1min", subsample=False, kernel=False)
    rm = rm[rm["n_obs"] > 100]
    z = bns_ratio_z(rm["rv_var"], rm["bv_var"], rm["tpq_var2"], rm["n_obs"])
    np.testing.assert_allclose(z, rm["bns_z"].to_numpy(), rtol=1e-9, atol=1e-12)
    crit = stats.norm.ppf(0.999)
    assert set(np.flatnonzero(z > crit)) >= {5, 12}
    assert np.mean(z > crit) <= 0.2  # the diffusive days are (mostly) not flagged


def test_bns_ratio_z_by_hand_and_undefined_days():
    theta = np.pi**2 / 4 + np.pi - 5
    rv, bv, q, n = 2.0e-4, 1.5e-4, 6.0e-8, 288.0
    expected = ((rv - bv) / rv) / np.sqrt(theta / n * max(1.0, q / bv**2))
    z = bns_ratio_z(np.array([rv, 0.0]), np.array([bv, 1e-4]), np.array([q, q]), np.array([n, n]))
    assert z[0] == pytest.approx(expected, rel=1e-12)
    assert np.isnan(z[1])


def test_har_cj_split_and_coefficients_equal_ols(rng):
    f = simulate_realized(rng, 400)  # BV = 0.6..1.0 x RV: both kinds of days
    alpha, h, window = 0.999, 1, 300
    m = HARCJVol(horizons=(h,), window=window, jump_alpha=alpha, min_obs=None).fit(f)
    z = bns_ratio_z(f["rv_var"], f["bv_var"], f["rq_var2"], f["n_obs"])
    sig = z > stats.norm.ppf(alpha)
    assert 0 < sig.sum() < len(f)  # both kinds of days present
    j = pd.Series(np.where(sig, f["rv_var"] - f["bv_var"], 0.0))
    c = f["rv_var"].reset_index(drop=True) - j
    X = pd.DataFrame(
        {
            "c_d": c,
            "c_w": c.rolling(5).mean(),
            "c_m": c.rolling(22).mean(),
            "j_d": j,
            "j_w": j.rolling(5).mean(),
            "j_m": j.rolling(22).mean(),
        }
    )
    y = f["rv_var"].reset_index(drop=True).rolling(h).mean().shift(-h)
    d = pd.concat([X, y.rename("y")], axis=1).iloc[len(f) - window :].dropna()
    ols = sm.OLS(d["y"], sm.add_constant(d[X.columns])).fit()
    np.testing.assert_allclose(
        m.coef_["BTCUSDT"].loc[h].to_numpy(), ols.params.to_numpy(), rtol=1e-8
    )
    # C equals BV on jump days and RV otherwise
    np.testing.assert_allclose(c[sig], f["bv_var"].to_numpy()[sig])


def test_har_cj_untested_split_and_inputs(rng):
    f = simulate_realized(rng, 400)  # BV = 0.6..1.0 x RV: both kinds of days
    loose = HARCJVol(horizons=(1,), jump_alpha=None, window=300, min_obs=None).fit(
        f.drop(columns=["rq_var2", "n_obs"])
    )
    strict = HARCJVol(horizons=(1,), window=300, min_obs=None).fit(f)
    assert not np.allclose(loose.coef_["BTCUSDT"].to_numpy(), strict.coef_["BTCUSDT"].to_numpy())
    with pytest.raises(MissingInputsError, match=r"rq_var2"):
        HARCJVol().fit(f.drop(columns="rq_var2"))
    with pytest.raises(ValueError, match="jump_alpha"):
        HARCJVol(jump_alpha=1.5).fit(f)
