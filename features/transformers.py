"""Feature transforms on long (symbol, ts) frames: HAR aggregates, lags, logs, market aggregates.

Every transform uses rows at or before each row's ``ts`` (trailing windows per symbol).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from features import schema as S

LOG_FLOOR_VAR = 1e-12
"""Floor applied before taking logs of variances (a zero-variance bar stays finite)."""


def _sorted(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.sort_values([S.SYMBOL, S.TS], kind="stable")


def log_var(values: pd.Series | np.ndarray) -> np.ndarray:
    """Natural log of a variance, floored at :data:`LOG_FLOOR_VAR`."""
    v = np.asarray(values, dtype="float64")
    return np.log(np.maximum(v, LOG_FLOOR_VAR))


def har_aggregates(
    frame: pd.DataFrame,
    cols: list[str],
    windows: tuple[int, ...] = (1, 5, 22),
    *,
    log: bool = True,
) -> pd.DataFrame:
    """Trailing means of ``cols`` over the last w rows of each symbol (HAR regressors).

    For each column c and window w: ``{c}_har{w}`` = mean of c over rows t-w+1..t, and with
    ``log=True`` also ``log_{c}_har{w}`` = mean of log(c) over the same rows (the log-HAR regressors
    average logs, not the log of averages). Needs w complete rows, otherwise NaN.
    """
    f = _sorted(frame)
    g = f.groupby(S.SYMBOL, sort=False)
    out = pd.DataFrame(index=f.index)
    for c in cols:
        for w in windows:
            out[f"{c}_har{w}"] = g[c].transform(lambda s, w=w: s.rolling(w, min_periods=w).mean())
            if log:
                lg = pd.Series(log_var(f[c]), index=f.index)
                out[f"log_{c}_har{w}"] = lg.groupby(f[S.SYMBOL], sort=False).transform(
                    lambda s, w=w: s.rolling(w, min_periods=w).mean())
    return out.loc[frame.index]


def lags(frame: pd.DataFrame, cols: list[str], lags_: tuple[int, ...] = (1, 2)) -> pd.DataFrame:
    """Values of ``cols`` k rows earlier for the same symbol: ``{c}_lag{k}``."""
    f = _sorted(frame)
    g = f.groupby(S.SYMBOL, sort=False)
    out = pd.DataFrame(index=f.index)
    for c in cols:
        for k in lags_:
            out[f"{c}_lag{k}"] = g[c].shift(k)
    return out.loc[frame.index]


def market_aggregates(frame: pd.DataFrame, cols: list[str]) -> pd.DataFrame:
    """Cross-sectional context at the same ``ts``: ``mkt_{c}`` (mean over symbols present) and
    ``rel_{c}`` (the symbol's log ratio to that mean, for variance-like columns)."""
    out = pd.DataFrame(index=frame.index)
    for c in cols:
        mkt = frame.groupby(S.TS)[c].transform("mean")
        out[f"mkt_{c}"] = mkt
        out[f"rel_{c}"] = log_var(frame[c]) - log_var(mkt)
    return out
