"""Realized covariance and correlation across symbols on a synchronized grid.

Synchronization
---------------
- ``previous_tick``: every symbol is sampled at the grid ``S, S+grid, ..., E`` of each right-closed
  bar ``(S, E]`` with the previous-tick rule of :mod:`features.realized` (the previous bar's last
  price seeds the open when it lies within one grid step). Returns start at the first grid point
  where every symbol of the bar has a price.
- ``refresh_time`` (Barndorff-Nielsen, Hansen, Lunde and Shephard 2011): ``tau_1`` is the first time
  every symbol has traded in the bar and ``tau_{j+1}`` the first time every symbol has traded again
  after ``tau_j``; with ``grid`` given, refresh times are also at least ``grid`` apart
  (``tau_{j+1} = max(tau_j + grid, refresh time after tau_j)``). Prices are previous-tick at each
  ``tau``. ``grid=None`` gives the pure refresh-time clock.

The realized covariance is the sum of outer products of the synchronized log returns (PSD by
construction); eigenvalues are floored at ``min_eig`` and the correlation matrix is repaired with
:func:`nearest_correlation` when rounding leaves it outside the PSD cone (``repaired`` True).
Symbols without at least two prices in a bar are left out of that bar's matrix.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from numba import njit

from features.realized import parse_duration, symbol_codes, timestamps_ns
from features.schema import PRICE, SYMBOL, TS, DataError

__all__ = ["is_psd", "nearest_correlation", "realized_covariance"]

_PSD_TOL = 1e-12


def is_psd(m: np.ndarray, tol: float = 1e-10) -> bool:
    """Whether ``m`` is a symmetric positive semi-definite matrix.

    Parameters
    ----------
    m : array of shape (n, n).
    tol : relative tolerance: asymmetry up to ``tol * max|m|`` and eigenvalues down to
        ``-tol * max(1, largest |eigenvalue|)`` are accepted (round-off).
    """
    a = np.asarray(m, dtype=np.float64)
    if a.ndim != 2 or a.shape[0] != a.shape[1] or not np.isfinite(a).all():
        return False
    if a.size == 0:
        return True
    scale = max(1.0, float(np.max(np.abs(a))))
    if np.max(np.abs(a - a.T)) > tol * scale:
        return False
    w = np.linalg.eigvalsh(0.5 * (a + a.T))
    return bool(w[0] >= -tol * max(1.0, float(np.max(np.abs(w)))))


def _psd_part(a: np.ndarray, floor: float = 0.0) -> np.ndarray:
    w, v = np.linalg.eigh(0.5 * (a + a.T))
    out = (v * np.maximum(w, floor)) @ v.T
    return 0.5 * (out + out.T)


def nearest_correlation(c: np.ndarray, tol: float = 1e-10, max_iter: int = 10_000) -> np.ndarray:
    """The nearest correlation matrix in Frobenius norm (Higham 2002, alternating projections with
    Dykstra's correction, unit weights).

    Parameters
    ----------
    c : symmetric array of shape (n, n) (an approximate correlation matrix).
    tol : stop when successive iterates change by less than ``tol`` (relative Frobenius norm).
    max_iter : iteration limit; raises ``RuntimeError`` when reached.

    Returns
    -------
    array of shape (n, n): symmetric, unit diagonal, positive semi-definite (a final congruence
    ``D^-1/2 X D^-1/2`` of the PSD iterate keeps it exactly in the cone despite round-off).
    """
    a = np.asarray(c, dtype=np.float64)
    if a.ndim != 2 or a.shape[0] != a.shape[1]:
        raise ValueError(f"The 'c' parameter must be a square matrix. Got shape {a.shape} instead.")
    if not np.isfinite(a).all():
        raise ValueError("The 'c' parameter must be finite. Got NaN or inf entries instead.")
    if not tol > 0:
        raise ValueError(f"The 'tol' parameter must be > 0. Got {tol!r} instead.")
    a = 0.5 * (a + a.T)
    n = a.shape[0]
    if n == 0:
        return a.copy()
    y = a.copy()
    np.fill_diagonal(y, 1.0)
    ds = np.zeros_like(a)
    x = y
    for _ in range(max_iter):
        r = y - ds
        x = _psd_part(r)
        ds = x - r
        y_new = x.copy()
        np.fill_diagonal(y_new, 1.0)
        delta = np.linalg.norm(y_new - y) / max(np.linalg.norm(y_new), 1e-300)
        y = y_new
        if delta < tol and np.linalg.norm(y - x) / np.linalg.norm(y) < max(tol, 1e-8):
            break
    else:
        raise RuntimeError(
            f"nearest_correlation did not converge in {max_iter} iterations (tol={tol}); "
            "increase max_iter or tol"
        )
    x = _psd_part(y, 0.0)
    d = np.sqrt(np.clip(np.diag(x), 1e-300, None))
    out = x / np.outer(d, d)
    out = 0.5 * (out + out.T)
    np.fill_diagonal(out, 1.0)
    return np.clip(out, -1.0, 1.0)


@njit(cache=True)
def _refresh_times(ts, lo, hi, min_step, end):  # pragma: no cover - numba
    """Refresh times (<= ``end``) of the symbols whose ticks are ts[lo[i]:hi[i]], at least
    ``min_step`` apart (0: no minimum)."""
    d = lo.shape[0]
    ptr = lo.copy()
    nmax = 1
    for i in range(d):
        nmax += hi[i] - lo[i]
    out = np.empty(nmax, np.int64)
    n = 0
    # tau_1: every symbol has a tick
    tau = np.int64(-(2**62))
    for i in range(d):
        if ptr[i] >= hi[i]:
            return out[:0]
        tau = max(tau, ts[ptr[i]])
    while tau <= end:
        out[n] = tau
        n += 1
        nxt = tau + min_step if min_step > 0 else np.int64(-(2**62))
        for i in range(d):
            p = ptr[i]
            while p < hi[i] and ts[p] <= tau:
                p += 1
            ptr[i] = p
            if p >= hi[i]:
                return out[:n]
            nxt = max(nxt, ts[p])
        tau = nxt
    return out[:n]


def _prev_tick(ts: np.ndarray, lx: np.ndarray, times: np.ndarray) -> np.ndarray:
    """Log price at each of ``times`` = last tick at or before it (NaN before the first)."""
    idx = np.searchsorted(ts, times, side="right") - 1
    out = np.where(idx >= 0, lx[np.maximum(idx, 0)], np.nan)
    return out


def realized_covariance(
    prices: pd.DataFrame,
    *,
    bar: str = "1D",
    grid: str | None = "5min",
    sync: str = "previous_tick",
    min_eig: float = 0.0,
    price_col: str = PRICE,
) -> pd.DataFrame:
    """Realized covariance and correlation matrices per bar, in long format.

    Parameters
    ----------
    prices : frame with ``ts`` (UTC), ``symbol`` and ``price_col`` (trades, mids or bar closes).
    bar : bar length (right-closed, UTC-epoch aligned, stamped by its close).
    grid : sampling step for ``previous_tick`` (required) or minimum spacing of refresh times
        (``None``: pure refresh time).
    sync : "previous_tick" or "refresh_time".
    min_eig : floor of the covariance eigenvalues (variance units, >= 0).
    price_col : the price column.

    Returns
    -------
    DataFrame with one row per (ts, symbol_a, symbol_b), all ordered pairs including the diagonal:
    ``cov_var`` (covariance of log returns over the bar), ``corr``, ``n_refresh`` (the number of
    synchronized observations of the pair: refresh times of the pair alone, or grid intervals in
    which both traded) and ``repaired`` (the bar's correlation matrix went through
    :func:`nearest_correlation`).
    """
    if sync not in ("previous_tick", "refresh_time"):
        raise ValueError(
            f"The 'sync' parameter must be 'previous_tick' or 'refresh_time'. Got {sync!r} instead."
        )
    bar_ns = parse_duration(bar, "bar")
    if grid is None:
        if sync == "previous_tick":
            raise ValueError(
                "The 'grid' parameter is required with sync='previous_tick'. Got None."
            )
        grid_ns = 0
    else:
        grid_ns = parse_duration(grid, "grid")
        if bar_ns % grid_ns:
            raise ValueError(
                f"The 'grid' parameter must divide the bar length ({bar!r}). Got {grid!r} instead."
            )
    if not (np.isfinite(min_eig) and min_eig >= 0):
        raise ValueError(f"The 'min_eig' parameter must be >= 0. Got {min_eig!r} instead.")
    for c in (TS, SYMBOL, price_col):
        if c not in prices.columns:
            raise DataError(
                f"prices frame is missing column '{c}'; got columns {list(prices.columns)}",
                column=c,
            )
    ts = timestamps_ns(prices[TS])
    px = np.asarray(prices[price_col].to_numpy(), dtype=np.float64)
    ok = px > 0
    if not ok.all():
        i = int(np.flatnonzero(~ok)[0])
        raise DataError(
            f"price {float(px[i])!r} at row {i} is not a positive number", column=price_col
        )
    codes, names = symbol_codes(prices[SYMBOL])
    order = np.lexsort((ts, codes))
    ts, lx, codes = ts[order], np.log(px[order]), codes[order]
    n_sym = names.shape[0]
    sym_lo = np.searchsorted(codes, np.arange(n_sym), side="left")
    sym_hi = np.searchsorted(codes, np.arange(n_sym), side="right")
    ends = np.unique(-((-ts) // bar_ns) * bar_ns)
    rows: list[pd.DataFrame] = []
    for e in ends:
        s = e - bar_ns
        lo = sym_lo + np.array(
            [np.searchsorted(ts[sym_lo[i] : sym_hi[i]], s, side="right") for i in range(n_sym)]
        )
        hi = sym_lo + np.array(
            [np.searchsorted(ts[sym_lo[i] : sym_hi[i]], e, side="right") for i in range(n_sym)]
        )
        present = np.flatnonzero(hi - lo >= 2)
        if present.size == 0:
            continue
        if sync == "previous_tick":
            r, n_pair = _grid_returns(ts, lx, lo, hi, sym_lo, present, s, e, grid_ns)
        else:
            r, n_pair = _refresh_returns(ts, lx, lo, hi, present, grid_ns, e)
        rows.append(_bar_rows(e, names[present], r, n_pair, min_eig))
    if not rows:
        return pd.DataFrame(
            {
                TS: pd.Series(dtype="datetime64[ns, UTC]"),
                "symbol_a": pd.Series(dtype="str"),
                "symbol_b": pd.Series(dtype="str"),
                "cov_var": pd.Series(dtype="float64"),
                "corr": pd.Series(dtype="float64"),
                "n_refresh": pd.Series(dtype="int64"),
                "repaired": pd.Series(dtype="bool"),
            }
        )
    return pd.concat(rows, ignore_index=True)


def _grid_returns(ts, lx, lo, hi, sym_lo, present, s, e, grid_ns):
    times = np.arange(s, e + grid_ns, grid_ns, dtype=np.int64)
    k = times.shape[0] - 1
    cols, obs = [], []
    for i in present:
        a = lo[i]
        if a > sym_lo[i] and ts[a - 1] > s - grid_ns:
            a -= 1  # the previous bar's last price seeds the open (within one grid step)
        cols.append(_prev_tick(ts[a : hi[i]], lx[a : hi[i]], times))
        # grid intervals (1..k) holding at least one tick of this symbol
        j = np.unique(-((-(ts[lo[i] : hi[i]] - s)) // grid_ns))
        seen = np.zeros(k + 1, dtype=bool)
        seen[j[(j >= 1) & (j <= k)]] = True
        obs.append(seen)
    p = np.column_stack(cols)
    full = np.flatnonzero(~np.isnan(p).any(axis=1))
    k0 = full[0] if full.size else k
    r = np.diff(p[k0:], axis=0)
    ob = np.column_stack(obs)[k0 + 1 :].astype(np.int64)
    return r, ob.T @ ob


def _refresh_returns(ts, lx, lo, hi, present, grid_ns, end):
    d = present.shape[0]
    tau = _refresh_times(ts, lo[present], hi[present], np.int64(grid_ns), np.int64(end))
    p = np.column_stack([_prev_tick(ts[lo[i] : hi[i]], lx[lo[i] : hi[i]], tau) for i in present])
    r = np.diff(p, axis=0) if p.shape[0] > 1 else np.zeros((0, d))
    n_pair = np.zeros((d, d), np.int64)
    for a in range(d):
        for b in range(a, d):
            idx = present[[a, b]] if a != b else present[[a]]
            n = _refresh_times(ts, lo[idx], hi[idx], np.int64(grid_ns), np.int64(end)).shape[0]
            n_pair[a, b] = n_pair[b, a] = n
    return r, n_pair


def _bar_rows(e, names, r, n_pair, min_eig) -> pd.DataFrame:
    d = names.shape[0]
    cov = r.T @ r if r.shape[0] else np.full((d, d), np.nan)
    repaired = False
    if np.isfinite(cov).all():
        cov = 0.5 * (cov + cov.T)
        w = np.linalg.eigvalsh(cov)
        if w[0] < min_eig:
            cov = _psd_part(cov, min_eig)
        sd = np.sqrt(np.clip(np.diag(cov), 0.0, None))
        pos = sd > 0
        corr = np.full((d, d), np.nan)
        if pos.any():
            sub = cov[np.ix_(pos, pos)] / np.outer(sd[pos], sd[pos])
            sub = 0.5 * (sub + sub.T)
            np.fill_diagonal(sub, 1.0)
            if not is_psd(sub, tol=_PSD_TOL) or np.abs(sub).max() > 1.0:
                sub = nearest_correlation(sub)
                repaired = True
            corr[np.ix_(pos, pos)] = sub
        np.fill_diagonal(corr, 1.0)
    else:
        corr = np.full((d, d), np.nan)
    ia, ib = np.meshgrid(np.arange(d), np.arange(d), indexing="ij")
    ia, ib = ia.ravel(), ib.ravel()
    return pd.DataFrame(
        {
            TS: pd.DatetimeIndex(np.full(d * d, e).astype("datetime64[ns]"), tz="UTC"),
            "symbol_a": pd.array(names[ia], dtype="str"),
            "symbol_b": pd.array(names[ib], dtype="str"),
            "cov_var": cov[ia, ib],
            "corr": corr[ia, ib],
            "n_refresh": n_pair[ia, ib].astype(np.int64),
            "repaired": np.full(d * d, repaired),
        }
    )
