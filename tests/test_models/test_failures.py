"""Failures as data in the models: fallback codes, skipped models, GARCH's minimum history, and the
typed too-little-history error that replaced parsing a message."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from features.errors import Failure, FailureReason, ModelError
from models.base import InsufficientHistoryError
from models.corr_evaluation import evaluate_correlation_frame
from models.evaluation import SkippedModelWarning, walk_forward
from models.ewma import EWMAVol, RandomWalkVol
from models.forecast import only
from models.garch import GarchVol
from models.har import HARQVol, HARVol

SYM = "BTCUSDT"


def daily(n: int, seed: int = 5, symbols: tuple[str, ...] = (SYM,)) -> pd.DataFrame:
    """A daily realized frame with closes: log variance AR(1) around -8, returns drawn from it."""
    rng = np.random.default_rng(seed)
    ts = pd.date_range("2024-01-01", periods=n, freq="D", tz="UTC")
    parts = []
    for sym in symbols:
        x = np.empty(n)
        x[0] = -8.0
        for t in range(1, n):
            x[t] = -8.0 * 0.05 + 0.95 * x[t - 1] + rng.normal(0, 0.2)
        rv = np.exp(x)
        close = 100.0 * np.exp(np.cumsum(np.sqrt(rv) * rng.standard_normal(n)))
        parts.append(pd.DataFrame({"ts": ts, "symbol": sym, "rv_var": rv, "close": close,
                                   "n_obs": 288.0}))
    return pd.concat(parts, ignore_index=True)


def test_garch_on_40_days_is_skipped_with_insufficient_history() -> None:
    data = daily(40)
    models = {"ewma": EWMAVol(min_obs=None), "rw": RandomWalkVol(min_obs=None),
              "garch_1_1": GarchVol(window=50, refit_every=5, min_obs=None)}
    with pytest.warns(SkippedModelWarning, match=r"skips model 'garch_1_1': needs at least 250 "
                                                 r"rows in its estimation window; has at most 40"):
        res = walk_forward(models, data, horizons=(1,), window=50, own_schedule=["garch_1_1"],
                           min_obs=None, mcs_reps=100)
    assert res.failures == (Failure(FailureReason.INSUFFICIENT_HISTORY, "garch_1_1",
                                    res.skipped["garch_1_1"]),)
    assert res.skipped == {"garch_1_1": "needs at least 250 rows in its estimation window; has at "
                                        "most 40 (window 50, 40 rows per symbol)"}
    # never in a table, never in the MCS
    assert "garch_1_1" not in set(res.summary()["model_id"])
    assert "garch_1_1" not in set(res.mcs["model_id"])
    assert set(res.forecasts["model_id"]) == {"ewma", "rw"}


def test_garch_with_enough_history_is_kept() -> None:
    data = daily(400)
    assert GarchVol(min_fit_obs=250).min_history() == 250 and EWMAVol().min_history() == 1
    res = walk_forward({"ewma": EWMAVol(min_obs=None),
                        "garch": GarchVol(window=300, refit_every=20, min_obs=None)},
                       data, horizons=(1,), start=data["ts"].iloc[320], window=300,
                       own_schedule=["garch"], min_obs=None, mcs_reps=100)
    assert res.failures == () and "garch" in set(res.summary()["model_id"])


def test_missing_inputs_is_a_failure_with_its_code() -> None:
    data = daily(400)
    with pytest.warns(SkippedModelWarning, match=r"skips model 'harq'.*rq_var2"):
        res = walk_forward({"har": HARVol(window=300), "harq": HARQVol(window=300)}, data,
                           horizons=(1,), start=data["ts"].iloc[350], window=300, min_obs=None,
                           mcs_reps=100)
    (f,) = res.failures
    assert (f.reason, f.subject) == (FailureReason.MISSING_INPUTS, "harq")
    assert "rq_var2" in f.message and res.skipped == {"harq": f.message}


def test_no_model_evaluable_is_a_model_error_listing_the_failures() -> None:
    with pytest.raises(ModelError, match=r"no model could be evaluated: garch: needs at least "
                                         r"250 rows"):
        with pytest.warns(SkippedModelWarning):
            walk_forward({"garch": GarchVol(window=50)}, daily(30), horizons=(1,), window=50,
                         min_obs=None)


def test_garch_fallback_reasons_carry_failure_codes() -> None:
    data = daily(60)
    fc = only(GarchVol(min_fit_obs=100).fit(data).predict(data, horizons=(1,)))
    assert fc.fallback_reason.str.endswith(" [insufficient_history]").all()
    assert fc.fallback_reason.iloc[0] == Failure(
        FailureReason.INSUFFICIENT_HISTORY, SYM,
        "ewma fallback (lambda 0.94): too few observations: 59 returns < min_fit_obs=100").note()
    flat = data.assign(close=50.0)
    flat.loc[flat.index[-5:], "close"] = [50.5, 50.2, 50.9, 50.1, 50.3]
    fc = only(GarchVol(min_fit_obs=20).fit(flat.iloc[:50]).predict(flat, horizons=(1,)))
    assert fc.fallback_reason.str.endswith("(constant prices) [invalid_value]").all()


def test_har_insanity_filter_reason_carries_its_code() -> None:
    data = daily(400)
    spike = data.copy()
    spike.loc[spike.index[-1], "rv_var"] = spike["rv_var"].max() * 1e4
    m = HARVol(window=300, horizons=(1,)).fit(data.iloc[:399])
    fc = only(m.predict(spike, horizons=(1,)))
    assert fc.fallback_reason.iloc[-1] == (
        "h=1: forecast outside the window's target range (or not > 0), replaced by the window "
        "mean [invalid_value]")


def test_correlation_too_short_raises_the_typed_error_with_its_periods() -> None:
    frame = daily(120, symbols=("BTCUSDT", "ETHUSDT"))[["ts", "symbol", "close"]]
    with pytest.raises(InsufficientHistoryError, match=r"no origin to evaluate: 119 periods, "
                                                       r"window 200") as info:
        evaluate_correlation_frame(frame, freq="1D", horizons=(1,), window=200, realized=False)
    assert info.value.periods == 119 and info.value.needed == 202
    assert isinstance(info.value, ModelError) and isinstance(info.value, ValueError)


def test_skipped_correlation_models_are_failures_with_their_codes() -> None:
    frame = daily(160, symbols=("BTCUSDT", "ETHUSDT"))[["ts", "symbol", "close"]]
    with pytest.warns(UserWarning, match="walk_forward_corr skips model 'har_scalar'"):
        res = evaluate_correlation_frame(frame, freq="1D", horizons=(1,), window=60,
                                         realized=False)
    codes = {f.subject: f.reason for f in res.failures}
    assert codes["har_scalar"] is FailureReason.MISSING_INPUTS
    assert {f.subject: f.message for f in res.failures} == dict(res.skipped)
    assert not set(codes) & set(res.forecasts)
