"""Context joins and intraday recency: against pandas/numpy references, no look-ahead, errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from features.context import asof_context, intraday_recency


def _days(n: int, start: str = "2024-01-02") -> pd.DatetimeIndex:
    return pd.date_range(start, periods=n, freq="D", tz="UTC").as_unit("ns")


def _primary(n: int = 10) -> pd.DataFrame:
    ts = _days(n)
    return pd.DataFrame(
        {
            "ts": np.concatenate([ts, ts]),
            "symbol": ["BTCUSDT"] * n + ["ETHUSDT"] * n,
            "rv_var": np.arange(2 * n, dtype=float) + 1,
        }
    )


def _naive_asof(primary: pd.DataFrame, context: pd.DataFrame, col: str, tol=None) -> np.ndarray:
    out = []
    for _, r in primary.iterrows():
        c = context[(context["symbol"] == r["symbol"]) & (context["ts"] <= r["ts"])]
        if tol is not None:
            c = c[c["ts"] >= r["ts"] - pd.Timedelta(tol)]
        out.append(c.sort_values("ts")[col].iloc[-1] if len(c) else np.nan)
    return np.asarray(out, dtype=float)


def test_asof_context_equals_a_naive_reference_and_keeps_primary_order(rng):
    prim = _primary(12).sample(frac=1.0, random_state=1)  # shuffled rows, odd index
    t = pd.date_range("2023-12-30", "2024-01-14", freq="7h", tz="UTC").as_unit("ns")
    ctx = pd.DataFrame(
        {
            "ts": np.concatenate([t, t]),
            "symbol": ["BTCUSDT-PERP"] * len(t) + ["ETHUSDT-PERP"] * len(t),
            "funding_rate": rng.normal(size=2 * len(t)),
        }
    )
    smap = {"BTCUSDT-PERP": "BTCUSDT", "ETHUSDT-PERP": "ETHUSDT"}
    out = asof_context(prim, ctx, symbol_map=smap, prefix="fund_")
    assert out.index.equals(prim.index)
    assert list(out.columns) == [*prim.columns, "fund_funding_rate"]
    mapped = ctx.assign(symbol=ctx["symbol"].map(smap))
    ref = _naive_asof(prim, mapped, "funding_rate")
    np.testing.assert_array_equal(out["fund_funding_rate"].to_numpy(), ref)
    out_tol = asof_context(prim, ctx, symbol_map=smap, prefix="fund_", tolerance="3h")
    ref_tol = _naive_asof(prim, mapped, "funding_rate", tol="3h")
    np.testing.assert_array_equal(out_tol["fund_funding_rate"].to_numpy(), ref_tol)
    assert np.isnan(ref_tol).any() and not np.isnan(ref_tol).all()


def test_asof_context_takes_an_exact_match_but_never_a_later_row():
    prim = _primary(3)
    ts = _days(3)
    ctx = pd.DataFrame(
        {"ts": [ts[1], ts[1] + pd.Timedelta("1ns")], "symbol": "BTCUSDT", "x": [1.0, 2.0]}
    )
    out = asof_context(prim, ctx, prefix="c_")
    btc = out[out["symbol"] == "BTCUSDT"]["c_x"].to_numpy()
    np.testing.assert_array_equal(btc, [np.nan, 1.0, 2.0])
    assert out[out["symbol"] == "ETHUSDT"]["c_x"].isna().all()  # no context for ETH


def test_asof_context_ignores_any_change_after_the_row():
    prim = _primary(20)
    t = pd.date_range("2024-01-01", periods=30 * 24, freq="h", tz="UTC").as_unit("ns")
    ctx = pd.DataFrame({"ts": t, "symbol": "BTCUSDT", "x": np.sin(np.arange(len(t)))})
    base = asof_context(prim, ctx, prefix="c_")
    cut = prim["ts"].iloc[9]
    perturbed = ctx.copy()
    perturbed.loc[perturbed["ts"] > cut, "x"] = 1e6
    pert = asof_context(prim, perturbed, prefix="c_")
    early = (prim["ts"] <= cut).to_numpy()
    np.testing.assert_array_equal(base["c_x"].to_numpy()[early], pert["c_x"].to_numpy()[early])
    assert not np.array_equal(base["c_x"].to_numpy()[~early], pert["c_x"].to_numpy()[~early])


def test_asof_context_errors():
    prim = _primary(3)
    ctx = pd.DataFrame({"ts": _days(3), "symbol": "A", "x": 1.0})
    with pytest.raises(ValueError, match="prefix must be a non-empty string"):
        asof_context(prim, ctx, prefix="")
    with pytest.raises(ValueError, match="context lacks column"):
        asof_context(prim, ctx.drop(columns="symbol"), prefix="c_")
    with pytest.raises(ValueError, match="no feature column"):
        asof_context(prim, ctx[["ts", "symbol"]], prefix="c_")
    with pytest.raises(ValueError, match="already has column"):
        asof_context(prim.assign(c_x=1.0), ctx, prefix="c_")
    with pytest.raises(ValueError, match="duplicate rows for symbol 'A'"):
        asof_context(prim, pd.concat([ctx, ctx]), prefix="c_")
    two = pd.concat([ctx, ctx.assign(symbol="B")])
    with pytest.raises(ValueError, match="maps several context symbols"):
        asof_context(prim, two, symbol_map={"A": "BTCUSDT", "B": "BTCUSDT"}, prefix="c_")
    with pytest.raises(ValueError, match="tolerance must be a non-negative"):
        asof_context(prim, ctx, prefix="c_", tolerance="-1h")
    with pytest.raises(TypeError, match="primary must be a pandas DataFrame"):
        asof_context([1], ctx, prefix="c_")


def _hourly(rng: np.random.Generator, days: int = 4, step: str = "1h") -> pd.DataFrame:
    t = pd.date_range(
        "2024-01-01", periods=days * pd.Timedelta("1D") // pd.Timedelta(step), freq=step, tz="UTC"
    ).as_unit("ns") + pd.Timedelta(step)
    lp = np.cumsum(rng.normal(scale=0.01, size=len(t)))
    return pd.DataFrame({"ts": t, "symbol": "BTCUSDT", "close": 100 * np.exp(lp)})


def test_intraday_recency_equals_a_pandas_reference(rng):
    bars = _hourly(rng, days=5)
    bars = bars.drop(index=[30, 31])  # a gap: returns across it are not counted
    days = _days(4, "2024-01-02")
    out = intraday_recency(bars, days, hours=(1, 4, 12), min_coverage=0.5)
    s = bars.set_index("ts")["close"]
    r = np.log(s).diff()
    step_ok = s.index.to_series().diff() == pd.Timedelta("1h")
    r = r[step_ok.to_numpy()]
    for k in (1, 4, 12):
        for i, d in enumerate(days):
            win = r[(r.index > d - pd.Timedelta(hours=k)) & (r.index <= d)]
            assert out[f"n_last{k}h"].iloc[i] == len(win)
            if len(win) >= 0.5 * k:
                assert out[f"rv_last{k}h_var"].iloc[i] == pytest.approx(
                    float((win**2).sum()), rel=1e-12
                )
            else:
                assert np.isnan(out[f"rv_last{k}h_var"].iloc[i])


def test_intraday_recency_has_no_look_ahead_and_respects_coverage(rng):
    bars = _hourly(rng, days=5, step="5min")
    rows = pd.DataFrame({"ts": _days(3, "2024-01-02"), "symbol": "BTCUSDT"})
    base = intraday_recency(bars, rows, hours=(1, 4))
    pert = bars.copy()
    cut = rows["ts"].iloc[1]
    pert.loc[pert["ts"] > cut, "close"] *= np.exp(rng.normal(size=(pert["ts"] > cut).sum()))
    p = intraday_recency(pert, rows, hours=(1, 4))
    pd.testing.assert_frame_equal(base.iloc[:2], p.iloc[:2])
    assert not base.iloc[2:].equals(p.iloc[2:])
    # drop most bars of the last hour before the first close: below 80% coverage -> NaN
    first = rows["ts"].iloc[0]
    thin = bars[~((bars["ts"] > first - pd.Timedelta("50min")) & (bars["ts"] <= first))]
    t = intraday_recency(thin, rows, hours=(1,))
    assert np.isnan(t["rv_last1h_var"].iloc[0]) and np.isfinite(t["rv_last1h_var"].iloc[1])


@settings(max_examples=25, deadline=None)
@given(k=st.integers(1, 6), seed=st.integers(0, 10_000))
def test_recency_of_the_whole_day_is_the_daily_rv(k, seed):
    rng = np.random.default_rng(seed)
    bars = _hourly(rng, days=3)
    days = _days(2, "2024-01-03")
    out = intraday_recency(bars, days, hours=(24, k))
    s = np.log(bars.set_index("ts")["close"])
    for i, d in enumerate(days):
        day = s[(s.index > d - pd.Timedelta("25h")) & (s.index <= d)]
        assert out["rv_last24h_var"].iloc[i] == pytest.approx(float((day.diff() ** 2).sum()))
        assert out[f"rv_last{k}h_var"].iloc[i] <= out["rv_last24h_var"].iloc[i] + 1e-15


def test_intraday_recency_errors(rng):
    bars = _hourly(rng, days=2)
    days = _days(1, "2024-01-02")
    with pytest.raises(ValueError, match="hours must be distinct ints >= 1"):
        intraday_recency(bars, days, hours=(0,))
    with pytest.raises(ValueError, match="min_coverage must be in"):
        intraday_recency(bars, days, min_coverage=0)
    with pytest.raises(ValueError, match="bars.close must be finite and > 0"):
        intraday_recency(bars.assign(close=-1.0), days)
    with pytest.raises(ValueError, match="bars lacks column"):
        intraday_recency(bars.drop(columns="close"), days)
    two_h = bars.iloc[::2]
    with pytest.raises(ValueError, match="hours=1 is not a multiple of the bar length"):
        intraday_recency(two_h, days, hours=(1,))
