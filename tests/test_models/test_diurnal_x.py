"""Tests of models.diurnal_x: the diurnal HAR-X against a direct OLS, no look-ahead, the booster."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from features.schema import RV, SYMBOL, TS
from models.base import MissingInputsError
from models.diurnal import DiurnalHARVol
from models.diurnal_x import DiurnalBoostVol, DiurnalHARXVol
from models.forecast import only

N_HOURS = 24 * 30


def _frame(seed: int = 0, symbols: tuple[str, ...] = ("AAA", "BBB")) -> pd.DataFrame:
    """Hourly RV with a diurnal pattern, persistence and two exogenous columns (one negative)."""
    rng = np.random.default_rng(seed)
    ts = pd.date_range("2024-01-01 01:00", periods=N_HOURS, freq="1h", tz="UTC")
    frames = []
    for s in symbols:
        shape = 1.0 + 0.6 * np.sin(2 * np.pi * (ts.hour.to_numpy() - 15) / 24)
        z1 = rng.normal(size=N_HOURS)
        z2 = rng.uniform(-1.0, 0.0, size=N_HOURS)
        lv = np.zeros(N_HOURS)
        for t in range(1, N_HOURS):
            lv[t] = 0.9 * lv[t - 1] + 0.15 * z1[t - 1] + 0.3 * rng.normal()
        rv = 1e-5 * shape * np.exp(lv)
        frames.append(pd.DataFrame({TS: ts, SYMBOL: s, RV: rv, "z1": z1, "z2": z2}))
    return pd.concat(frames, ignore_index=True)


def _model(**over: object) -> DiurnalHARXVol:
    params: dict[str, object] = dict(
        horizons=(1,),
        lags=(1, 6, 24),
        log=True,
        profile_stat="log",
        window=120,
        exog=("z1", "z2"),
    )
    params.update(over)
    return DiurnalHARXVol(**params)  # type: ignore[arg-type]


def _direct_ols(g: pd.DataFrame, exog: tuple[str, ...], lags: tuple[int, ...]) -> np.ndarray:
    """The HAR-X coefficients by a direct computation (loops + pandas + numpy.linalg.lstsq)."""
    rv = g[RV].to_numpy()
    hour = ((g[TS] - pd.Timedelta("1ns")).dt.hour).to_numpy()
    n = len(rv)
    lrv = np.log(rv)
    prev_shape = np.full(n, np.nan)  # shape of row j's bucket from rows <= j - 1
    for j in range(1, n):
        past = hour[:j]
        gm = np.array(
            [lrv[:j][past == b].mean() if (past == b).sum() >= 5 else np.nan for b in range(24)]
        )
        if np.isfinite(gm).all():
            p = np.exp(gm)
            prev_shape[j] = p[hour[j]] / p.mean()
    la = pd.Series(np.log(rv / prev_shape))
    cols = [la.rolling(k).mean().to_numpy() for k in lags]
    cols += [g[c].to_numpy() for c in exog]
    X = np.column_stack([np.ones(n), *cols])
    y = np.r_[la.to_numpy()[1:], np.nan]
    ok = np.isfinite(X).all(axis=1) & np.isfinite(y)
    coef, *_ = np.linalg.lstsq(X[ok], y[ok], rcond=None)
    return coef


def test_coefficients_equal_direct_ols() -> None:
    X = _frame()
    m = _model().fit(X)
    for sym, g in X.groupby(SYMBOL):
        ref = _direct_ols(g.reset_index(drop=True), ("z1", "z2"), (1, 6, 24))
        got = m.state_[sym][1].coef
        np.testing.assert_allclose(got, ref, rtol=1e-8, atol=1e-10)
        assert m.state_[sym][1].names[-2:] == ("z1", "z2")


def test_no_exog_equals_diurnal_har() -> None:
    X = _frame(1)
    start = X[TS].iloc[300]
    a = _model(exog=()).walk_forward(X, (1,), start=start)
    b = DiurnalHARVol(
        horizons=(1,), lags=(1, 6, 24), log=True, profile_stat="log", window=120
    ).walk_forward(X, (1,), start=start)
    for s in a:
        pd.testing.assert_frame_equal(a[s].variance, b[s].variance, rtol=1e-12)


def test_no_look_ahead() -> None:
    X = _frame(2)
    cut = X[TS].iloc[500]
    start = X[TS].iloc[300]
    base = _model().walk_forward(X, (1,), start=start)
    Y = X.copy()
    later = Y[TS] > cut
    Y.loc[later, RV] *= np.random.default_rng(9).uniform(0.2, 5.0, later.sum())
    Y.loc[later, "z1"] = 7.0
    Y.loc[later, "z2"] = -3.0
    alt = _model().walk_forward(Y, (1,), start=start)
    for s in base:
        # the forecast from origin t uses rows <= t only (its target t+1 may be altered)
        a = base[s].variance.loc[:cut]
        b = alt[s].variance.loc[:cut]
        assert len(a) > 100
        pd.testing.assert_frame_equal(a, b, rtol=1e-12)
        assert not np.allclose(
            base[s].variance.loc[cut:].iloc[2:], alt[s].variance.loc[cut:].iloc[2:]
        )


def test_walk_forward_matches_refit_predict() -> None:
    X = _frame(3, symbols=("AAA",))
    i = 400
    origin = X[TS].iloc[i]
    wf = _model(window=120).walk_forward(X, (1,), start=origin, end=origin)["AAA"]
    # expanding fit on the rows whose targets are complete at the origin (rows <= i - 1 as rows
    # of the regression), then predict at the origin
    fit = _model().fit(X.iloc[: i + 1])
    pred = only(fit.predict(X.iloc[: i + 1]))
    # the fit on rows <= i uses targets up to row i: exactly the walk-forward sample at origin i
    np.testing.assert_allclose(wf.variance.iloc[0, 0], pred.variance.loc[origin].iloc[0], rtol=1e-9)


def test_missing_and_negative_exog() -> None:
    X = _frame(4, symbols=("AAA",))
    with pytest.raises(MissingInputsError, match="zz"):
        _model(exog=("zz",)).fit(X)
    m = _model(exog=("z2",)).fit(X)  # all-negative column keeps every row
    assert m.n_dropped_["AAA"] == 0
    Y = X.copy()
    Y.loc[Y.index[400], "z2"] = np.nan  # a missing exog value: no forecast at that origin only
    f = _model(exog=("z2",)).walk_forward(Y, (1,), start=Y[TS].iloc[350])["AAA"].variance
    assert Y[TS].iloc[400] not in f.index
    assert Y[TS].iloc[399] in f.index and Y[TS].iloc[401] in f.index


def test_boost_no_look_ahead() -> None:
    X = _frame(5)
    cut = X[TS].iloc[560]
    start = X[TS].iloc[480]
    base = _model(exog=("z1",))

    def run(Z: pd.DataFrame) -> dict:
        b = DiurnalBoostVol(
            base=base,
            feature_columns=["z1", "z2"],
            refit_every=48,
            min_train=200,
            validation_size=48,
            n_estimators=30,
            min_child_samples=20,
        )
        return b.walk_forward(Z, (1,), start=start)

    a = run(X)
    Y = X.copy()
    later = Y[TS] > cut
    Y.loc[later, RV] *= 3.0
    Y.loc[later, "z1"] = 5.0
    b = run(Y)
    for s in a:
        assert len(a[s].variance.loc[:cut]) > 50
        pd.testing.assert_frame_equal(a[s].variance.loc[:cut], b[s].variance.loc[:cut], rtol=1e-12)
