"""Forward targets (the only look-ahead) and trailing transforms (no look-ahead)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from features import schema as S
from features.targets import forward_mean, target_name
from features.transformers import har_aggregates, lags, log_var, market_aggregates


def daily(rng: np.random.Generator, n: int = 60, symbols=("A", "B")) -> pd.DataFrame:
    frames = []
    for s in symbols:
        ts = pd.date_range("2024-01-02", periods=n, freq="D", tz="UTC")
        frames.append(pd.DataFrame({S.TS: ts, S.SYMBOL: s, S.RV: rng.lognormal(-8, 0.5, n),
                                    "valid": True}))
    return pd.concat(frames, ignore_index=True).sample(frac=1.0, random_state=1)


def test_forward_mean_matches_pandas_reference(rng) -> None:
    f = daily(rng)
    out = forward_mean(f, S.RV, (1, 5))
    for h in (1, 5):
        ref = (f.sort_values([S.SYMBOL, S.TS]).groupby(S.SYMBOL)[S.RV]
               .transform(lambda s, h=h: s.rolling(h).mean().shift(-h)))
        pd.testing.assert_series_equal(out[target_name(S.RV, h)], ref.loc[f.index], check_names=False,
                                       rtol=1e-12)
    # the target window ends h periods after t
    row = f.sort_values([S.SYMBOL, S.TS]).iloc[0]
    assert out.loc[row.name, "target_end_5"] == row[S.TS] + pd.Timedelta("5D")


def test_invalid_or_missing_periods_make_targets_nan(rng) -> None:
    f = daily(rng, n=10, symbols=("A",)).sort_values(S.TS).reset_index(drop=True)
    f.loc[4, "valid"] = False
    out = forward_mean(f, S.RV, (1, 3), interval=pd.Timedelta("1D"))
    t3 = out[target_name(S.RV, 3)]
    assert t3.iloc[1:4].isna().all() and t3.iloc[[0, 4, 5, 6]].notna().all()
    assert out[target_name(S.RV, 1)].iloc[3] != out[target_name(S.RV, 1)].iloc[3]  # NaN
    gap = f.drop(index=6).reset_index(drop=True)  # a missing day: spacing check
    out2 = forward_mean(gap, S.RV, (2,), interval=pd.Timedelta("1D"))
    assert np.isnan(out2[target_name(S.RV, 2)].iloc[4]) and np.isnan(out2[target_name(S.RV, 2)].iloc[5])
    assert out[target_name(S.RV, 1)].iloc[-1] != out[target_name(S.RV, 1)].iloc[-1]  # beyond the data
    with pytest.raises(ValueError, match="'horizons' parameter must contain integers >= 1"):
        forward_mean(f, S.RV, (0,))


def test_targets_are_strictly_after_t(rng) -> None:
    """Changing a period's value changes only targets of earlier rows."""
    f = daily(rng, n=30, symbols=("A",)).sort_values(S.TS).reset_index(drop=True)
    base = forward_mean(f, S.RV, (1, 5))
    g = f.copy()
    g.loc[10, S.RV] *= 50
    pert = forward_mean(g, S.RV, (1, 5))
    changed = ~np.isclose(base.iloc[:, [0, 2]].to_numpy(), pert.iloc[:, [0, 2]].to_numpy(), equal_nan=True)
    rows = np.flatnonzero(changed.any(axis=1))
    assert rows.min() >= 5 and rows.max() == 9


def test_trailing_transforms_do_not_look_ahead(rng) -> None:
    f = daily(rng, n=40).sort_values([S.SYMBOL, S.TS]).reset_index(drop=True)
    feats = pd.concat([har_aggregates(f, [S.RV]), lags(f, [S.RV])], axis=1)
    g = f.copy()
    future = g[S.TS] > pd.Timestamp("2024-01-25", tz="UTC")
    g.loc[future, S.RV] = rng.lognormal(-3, 1, int(future.sum()))
    feats2 = pd.concat([har_aggregates(g, [S.RV]), lags(g, [S.RV])], axis=1)
    past = ~future
    pd.testing.assert_frame_equal(feats.loc[past], feats2.loc[past])


def test_har_aggregates_by_hand() -> None:
    f = pd.DataFrame({S.TS: pd.date_range("2024-01-01", periods=6, tz="UTC"), S.SYMBOL: "A",
                      S.RV: [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]})
    out = har_aggregates(f, [S.RV], (1, 5))
    assert out[f"{S.RV}_har5"].tolist()[4:] == [3.0, 4.0]
    assert np.isnan(out[f"{S.RV}_har5"].iloc[3])
    assert out[f"log_{S.RV}_har5"].iloc[4] == pytest.approx(np.mean(np.log([1, 2, 3, 4, 5])))
    assert lags(f, [S.RV], (2,))[f"{S.RV}_lag2"].iloc[2] == 1.0


def test_market_aggregates() -> None:
    ts = pd.Timestamp("2024-01-01", tz="UTC")
    f = pd.DataFrame({S.TS: [ts, ts], S.SYMBOL: ["A", "B"], S.RV: [1.0, 3.0]})
    out = market_aggregates(f, [S.RV])
    assert out[f"mkt_{S.RV}"].tolist() == [2.0, 2.0]
    assert out[f"rel_{S.RV}"].iloc[0] == pytest.approx(np.log(0.5))
    assert np.isfinite(log_var(np.array([0.0]))).all()
