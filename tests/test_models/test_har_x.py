"""Log-HAR-DoW-X: exogenous regressors next to the log-HAR-DoW terms, checked against statsmodels
OLS on an independently built design; NaN / negative exog never drop rows; no look-ahead."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm

from models.base import MissingInputsError
from models.forecast import only
from models.har import LogHARDoWVol, LogHARDoWXVol, calendar_terms
from tests.test_models.test_har import simulate_realized


@pytest.fixture
def frame(rng) -> pd.DataFrame:
    f = simulate_realized(rng, 420)
    lrv = np.log(f["rv_var"].to_numpy())
    # news that predicts tomorrow: tomorrow's log RV surprise plus noise (shifted: known today)
    nxt = np.r_[lrv[1:], np.nan] - pd.Series(lrv).rolling(5).mean().to_numpy()
    f["news"] = 0.6 * nxt + rng.normal(0, 0.3, len(f))
    f.loc[f.index[:60], "news"] = np.nan  # the context starts late
    f["noise"] = rng.normal(0, 1, len(f))
    return f


def test_without_exog_it_is_log_har_dow(frame):
    a = only(LogHARDoWXVol(horizons=(1, 5), window=300).fit(frame).predict(frame))
    b = only(LogHARDoWVol(horizons=(1, 5), window=300).fit(frame).predict(frame))
    pd.testing.assert_frame_equal(a.variance, b.variance)


def test_coefficients_equal_ols_with_missing_exog_as_zero(frame):
    h, window = 1, 300
    m = LogHARDoWXVol(horizons=(h,), window=window, exog=["news", "noise"]).fit(frame)
    lrv = pd.Series(np.log(frame["rv_var"].to_numpy()))
    ts = pd.DatetimeIndex(frame["ts"])
    _, cal = calendar_terms(ts, pd.Timedelta("1D"), h)
    X = pd.DataFrame(
        {"d": lrv, "w": lrv.rolling(5).mean(), "m": lrv.rolling(22).mean()}
        | {"news": frame["news"].fillna(0.0).to_numpy(), "noise": frame["noise"].to_numpy()}
        | {f"c{k}": cal[:, k] for k in range(cal.shape[1])}
    )
    y = np.log(pd.Series(frame["rv_var"].to_numpy()).rolling(h).mean().shift(-h))
    d = pd.concat([X, y.rename("y")], axis=1).iloc[len(frame) - window :].dropna()
    ols = sm.OLS(d["y"], sm.add_constant(d[X.columns])).fit()
    coef = m.coef_["BTCUSDT"].loc[h]
    np.testing.assert_allclose(coef.to_numpy(), ols.params.to_numpy(), rtol=1e-8, atol=1e-10)
    assert list(coef.index[4:6]) == ["news", "noise"]  # then the calendar terms
    assert coef["news"] > 0.3  # the informative column is found
    # every row with an RV is kept although news is NaN and noise negative
    assert m.state_["BTCUSDT"][h].n == window - h


def test_exog_improves_the_forecast_and_has_no_look_ahead(frame, rng):
    start = frame["ts"].iloc[330]
    kw = dict(window=250)
    x = LogHARDoWXVol(horizons=(1,), exog=["news"]).walk_forward(frame, (1,), start=start, **kw)
    b = LogHARDoWVol(horizons=(1,)).walk_forward(frame, (1,), start=start, **kw)
    y = pd.Series(frame["rv_var"].to_numpy(), index=pd.DatetimeIndex(frame["ts"])).shift(-1)
    fx, fb = x["BTCUSDT"].variance[1], b["BTCUSDT"].variance[1]
    yy = y.reindex(fx.index)
    ok = yy.notna()

    def ql(f):
        r = yy[ok] / f[ok]
        return float((r - np.log(r) - 1).mean())

    assert ql(fx) < 0.9 * ql(fb)
    # alter every value after a cut (RV and exog): forecasts at origins up to it are unchanged
    cut = frame["ts"].iloc[380]
    pert = frame.copy()
    after = pert["ts"] > cut
    pert.loc[after, "news"] = rng.normal(5, 1, after.sum())
    pert.loc[after, "rv_var"] *= rng.uniform(0.1, 10, after.sum())
    x2 = LogHARDoWXVol(horizons=(1,), exog=["news"]).walk_forward(pert, (1,), start=start, **kw)
    v1, v2 = x["BTCUSDT"].variance, x2["BTCUSDT"].variance
    pd.testing.assert_frame_equal(v1[v1.index <= cut], v2[v2.index <= cut], rtol=1e-12)


def test_errors(frame):
    with pytest.raises(MissingInputsError, match=r"exogenous column\(s\) \['nope'\]"):
        LogHARDoWXVol(exog=["nope"]).fit(frame)
    with pytest.raises(ValueError, match="exog"):
        LogHARDoWXVol(exog="news").fit(frame)
