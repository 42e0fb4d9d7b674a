"""Vol-of-vol: quantiles of d log IV over the MPOR, the spot-vol beta, the tenor rule, real DVOL."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from features.errors import ConfigError, DataError
from models.volvol import implied_vol_of_vol, realized_vol_of_vol

DATA = Path(os.environ.get("DPRM_DATA_DIR", Path(__file__).resolve().parents[2].parent / "shared" / "data"))


def simulated(rng: np.random.Generator, n: int, beta: float):
    idx = pd.date_range("2021-01-01", periods=n, freq="D", tz="UTC")
    ds = rng.normal(0, 0.03, n)
    dv = beta * ds + rng.normal(0, 0.04, n)
    spot = pd.Series(30000 * np.exp(np.cumsum(ds)), index=idx)
    iv = pd.Series(60 * np.exp(np.cumsum(dv)), index=idx)
    return iv, spot


def test_known_beta_and_quantiles() -> None:
    rng = np.random.default_rng(12)
    iv, spot = simulated(rng, 3000, -0.8)
    v = implied_vol_of_vol(iv, spot, symbol="BTC", mpor_days=1)
    assert abs(v.spot_vol_beta + 0.8) < 3 * v.beta_se
    assert v.beta_se == pytest.approx(0.04 / (0.03 * np.sqrt(3000)), rel=0.1)
    dv = np.diff(np.log(iv.to_numpy()))
    assert v.quantiles[0.99] == pytest.approx(np.quantile(dv, 0.99), rel=1e-12)
    assert v.n_obs == 2999 and v.source == "implied:DVOL" and v.tenor_days == 30.0
    # slope = numpy's least squares (an independent oracle)
    assert v.spot_vol_beta == pytest.approx(np.polyfit(np.diff(np.log(spot.to_numpy())), dv, 1)[0],
                                            rel=1e-10)
    # a 5-day MPOR: overlapping 5-day changes, quantiles wider, same beta
    v5 = implied_vol_of_vol(iv, spot, symbol="BTC", mpor_days=5)
    assert v5.n_obs == 2995 and v5.quantiles[0.99] > v.quantiles[0.99]
    assert abs(v5.spot_vol_beta + 0.8) < 3 * v5.beta_se


def test_tenor_rule() -> None:
    iv, spot = simulated(np.random.default_rng(1), 400, 0.0)
    v = implied_vol_of_vol(iv, symbol="ETH")
    assert v.spot_vol_beta is None
    assert v.tenor_factor(30) == 1.0
    assert v.tenor_factor(120) == pytest.approx(0.5)
    assert v.tenor_factor(1) == pytest.approx((30 / 7) ** 0.5)  # floored at 7 days
    q = v.quantiles_for_tenor(7.5)
    assert q[0.99] == pytest.approx(2 * v.quantiles[0.99])
    with pytest.raises(ValueError, match="dte_days must be finite and > 0"):
        v.tenor_factor(0)


def test_gaps_are_not_bridged_and_bad_input_is_rejected() -> None:
    iv, spot = simulated(np.random.default_rng(2), 400, 0.0)
    gap = iv.drop(iv.index[100])
    v = implied_vol_of_vol(gap, symbol="BTC")
    assert v.n_obs == 400 - 1 - 2  # the two changes touching the missing day are gone
    with pytest.raises(DataError, match=r"column 'iv': iv must be finite and > 0; got -1.0"):
        implied_vol_of_vol(iv.where(iv.index != iv.index[3], -1.0), symbol="BTC")
    with pytest.raises(DataError, match="need 250 1-day changes of BTC's implied vol; got 99"):
        implied_vol_of_vol(iv.iloc[:100], symbol="BTC")
    with pytest.raises(ConfigError, match="'mpor_days' parameter must be an integer >= 1"):
        implied_vol_of_vol(iv, symbol="BTC", mpor_days=0)
    with pytest.raises(ConfigError, match="'levels' parameter must be distinct values"):
        implied_vol_of_vol(iv, symbol="BTC", levels=(0.5, 1.5))


def test_realized_source_uses_half_the_log_variance_change() -> None:
    iv, spot = simulated(np.random.default_rng(3), 500, 0.5)
    fvar = (iv / 100) ** 2 / 365
    v = realized_vol_of_vol(fvar, spot, symbol="SPX", model_id="ewma", horizon_days=1)
    ref = implied_vol_of_vol(iv, spot, symbol="SPX")
    assert v.source == "realized:ewma" and v.tenor_days == 1.0
    assert v.quantiles[0.05] == pytest.approx(ref.quantiles[0.05], rel=1e-10)
    assert v.spot_vol_beta == pytest.approx(ref.spot_vol_beta, rel=1e-10)


@pytest.mark.slow
def test_real_dvol_btc_eth() -> None:
    path = DATA / "deribit_dvol_daily_2021_2025h1" / "dvol_daily.parquet"
    klines = DATA / "binance_spot_daily_multi_asset_2017_2026" / "klines_1d.parquet"
    if not path.exists() or not klines.exists():
        pytest.skip(f"real DVOL data not found under {DATA} (set DPRM_DATA_DIR)")
    dv = pd.read_parquet(path)
    k = pd.read_parquet(klines, columns=["symbol", "open_time", "close"])
    for sym in ("BTC", "ETH"):
        d = dv[dv["symbol"] == sym]
        iv = pd.Series(d["close"].to_numpy(), index=pd.DatetimeIndex(d["date"]).tz_localize("UTC"))
        s = k[k["symbol"] == f"{sym}USDT"]
        spot = pd.Series(s["close"].to_numpy(),
                         index=pd.DatetimeIndex(s["open_time"]).as_unit("ns").normalize())
        v = implied_vol_of_vol(iv, spot, symbol=sym, mpor_days=1)
        assert v.n_obs > 1500 and v.start == pd.Timestamp("2021-03-24", tz="UTC")
        qs = list(v.quantiles.values())
        assert qs == sorted(qs) and qs[0] < 0 < qs[-1]
        # a daily 99% move of log DVOL between 5% and 40%
        assert 0.05 < v.quantiles[0.99] < 0.4
        assert np.isfinite(v.spot_vol_beta) and v.beta_se > 0
