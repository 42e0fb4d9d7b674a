"""Realized measures per symbol and bar from tick or sampled prices.

The hot path of the feature engine. Prices (trades, quote mids or bar closes) are sorted by
``(symbol, ts)`` as int64 nanoseconds, cut into bars with one linear pass, and every bar is
measured by a numba kernel running in parallel over bars; no Python code runs per bar or per tick.

Sampling conventions (documented choices)
-----------------------------------------
- **Bars** are right-closed ``(S, E]`` and stamped by their close ``E`` (the canonical ``ts``), so a
  price series stamped by bar close (1-minute closes) falls into the bar it closes. On 24/7 calendars
  bars are aligned to the UTC epoch (``"1D"`` bars are UTC days). On exchange calendars
  (:data:`features.symbols.CALENDARS`) only prices inside the session ``[open, close]`` are used, the
  bar is the session (or session pieces of length ``bar`` from the open, the last one shorter) and
  the overnight return is excluded.
- **Grid**: previous-tick sampling at ``grid``: the price at grid time ``S + k*grid`` is the last price
  at or before it (the close of the interval ``(S+(k-1)grid, S+k*grid]``, forward-filled across empty
  intervals). This equals ``resample(grid, closed="right", label="right").last().ffill()``.
- **Opening price** (the grid point ``S``): on 24/7 calendars and for session pieces after the first,
  the previous bar's last price if it lies within one grid step of ``S`` (in ``(S-grid, S]``);
  otherwise the opening point is unobserved and the bar's returns start at its first observed grid
  point. For the first bar of a session it is the first in-session price if that lies within one grid
  step after the open (the previous close is overnight and never used).
- **Coverage** is the share of the bar's grid intervals holding at least one price; ``valid`` is
  ``coverage >= min_coverage``. Gaps are flagged, never filled beyond previous-tick sampling.
- **Missing bars**: with ``include_empty=True`` (default) every bar between a symbol's first and last
  observed bar gets a row; bars without prices have ``n_obs`` 0, ``coverage`` 0, ``valid`` False and
  NaN measures. Bars with a single price likewise have NaN measures and ``n_obs`` 0.
- **Dense estimators** (``rk_var``, ``tsrv_var``) use every price inside the bar (tick time).

Units: every ``*_var`` column is a variance of log returns over the bar (not annualized); ``*_var2``
are quarticities (variance squared); ``bns_z`` is a standard-normal test statistic.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from numba import njit, prange

from features.schema import PRICE, SYMBOL, TS, DataError
from features.symbols import CALENDARS

__all__ = [
    "MEASURE_COLUMNS",
    "PARZEN_C_STAR",
    "parse_duration",
    "realized_measures",
    "symbol_codes",
    "timestamps_ns",
]

PARZEN_C_STAR = 3.5134
"""c* of the Parzen kernel in the BNHLS (2009) bandwidth H* = c* xi^(4/5) n^(3/5)."""

_MU1 = math.sqrt(2.0 / math.pi)  # E|Z|
_MU43 = 2.0 ** (2.0 / 3.0) * math.gamma(7.0 / 6.0) / math.gamma(0.5)  # E|Z|^(4/3)
_MINRV_C = math.pi / (math.pi - 2.0)
_MEDRV_C = math.pi / (6.0 - 4.0 * math.sqrt(3.0) + math.pi)
_BNS_THETA = math.pi**2 / 4.0 + math.pi - 5.0

_MIN_GRID = pd.Timedelta("1s")
_MAX_GRID = pd.Timedelta("30min")
_OMEGA_SPACING_NS = 120 * 10**9  # BNHLS: every q-th tick about 2 minutes apart for omega^2
_SPARSE_STEP_NS = 1200 * 10**9  # BNHLS: 20-minute sparse RV as the IV proxy in xi^2
_SPARSE_OFFSETS = 20

# output column order of the kernel
_K_COLS = (
    "rv_var",
    "rv_ss_var",
    "rk_var",
    "tsrv_var",
    "bv_var",
    "medrv_var",
    "minrv_var",
    "rs_pos_var",
    "rs_neg_var",
    "rq_var2",
    "tpq_var2",
    "jv_var",
    "bns_z",
    "n_obs",
    "coverage",
    "close",
)
(
    _RV,
    _RVSS,
    _RK,
    _TSRV,
    _BV,
    _MEDRV,
    _MINRV,
    _RSP,
    _RSN,
    _RQ,
    _TPQ,
    _JV,
    _BNS,
    _NOBS,
    _COV,
    _CLOSE,
) = range(len(_K_COLS))

MEASURE_COLUMNS: tuple[str, ...] = (*_K_COLS[:-1], "valid", "close")
"""All measure columns :func:`realized_measures` can return, in output order (after ts, symbol)."""


# ---------------------------------------------------------------------------------------------
# numba kernels
# ---------------------------------------------------------------------------------------------
@njit(cache=True)
def _string_runs(offsets, data):  # pragma: no cover - numba
    """Start index of each run of equal strings in an arrow string array (offsets, data)."""
    n = offsets.shape[0] - 1
    out = np.empty(n, np.int64)
    k = 0
    for i in range(n):
        if i == 0:
            out[k] = 0
            k += 1
            continue
        a0, a1 = offsets[i - 1], offsets[i]
        b0, b1 = offsets[i], offsets[i + 1]
        same = (a1 - a0) == (b1 - b0)
        if same:
            for j in range(b1 - b0):
                if data[a0 + j] != data[b0 + j]:
                    same = False
                    break
        if not same:
            out[k] = i
            k += 1
    return out[:k]


@njit(cache=True)
def _scan(codes, ts, px):  # pragma: no cover - numba
    """One pass: (sorted by (code, ts), index of the first price that is not finite and > 0 or -1)."""
    ok = True
    for i in range(ts.shape[0]):
        p = px[i]
        if not (p > 0.0 and p < np.inf):
            return ok, i
        if i > 0 and ok:
            if codes[i] < codes[i - 1] or (codes[i] == codes[i - 1] and ts[i] < ts[i - 1]):
                ok = False
    return ok, -1


@njit(cache=True)
def _bars_continuous(codes, ts, bar_ns, lo, end, code, fill):  # pragma: no cover - numba
    """Cut sorted ticks into epoch-aligned right-closed bars; returns the number of bars and, when
    ``fill``, writes each bar's first tick index, close time and symbol code."""
    nb = 0
    cur_end = np.int64(0)
    cur_code = np.int64(-1)
    for i in range(ts.shape[0]):
        t = ts[i]
        c = codes[i]
        if c != cur_code or t > cur_end or t <= cur_end - bar_ns:
            e = -((-t) // bar_ns) * bar_ns
            if fill:
                lo[nb] = i
                end[nb] = e
                code[nb] = c
            nb += 1
            cur_end = e
            cur_code = c
    return nb


@njit(cache=True)
def _bars_session(
    codes, ts, opens, closes, bar_ns, lo, hi, end, code, fill
):  # pragma: no cover - numba
    """Cut sorted ticks into session bars ``[open, open+L], (open+L, open+2L], ..., (.., close]``.

    Ticks outside every session are skipped (they lie between bars' index ranges). Returns the
    number of bars and, when ``fill``, writes each bar's tick range, close time and symbol code.
    """
    ns = opens.shape[0]
    nb = 0
    cur_code = np.int64(-1)
    cur_sess = np.int64(-1)
    cur_piece = np.int64(-1)
    prev_i = np.int64(0)
    j = 0
    for i in range(ts.shape[0]):
        t = ts[i]
        c = codes[i]
        if c != cur_code:
            j = 0
        while j < ns and closes[j] < t:
            j += 1
        if j >= ns or t < opens[j]:
            continue
        k = np.int64(0) if t == opens[j] else (t - opens[j] - 1) // bar_ns
        if c != cur_code or j != cur_sess or k != cur_piece:
            if fill:
                if nb > 0:
                    hi[nb - 1] = prev_i + 1
                lo[nb] = i
                end[nb] = min(opens[j] + (k + 1) * bar_ns, closes[j])
                code[nb] = c
            nb += 1
            cur_code = c
            cur_sess = j
            cur_piece = k
        prev_i = i
    if fill and nb > 0:
        hi[nb - 1] = prev_i + 1
    return nb


@njit(cache=True)
def _subsampled_rv(fine, m, kk):  # pragma: no cover - numba
    """Average over the ``m`` offsets of a fine grid (step grid/m, kk coarse steps) of the RV on
    each offset's coarse grid, each scaled to the full bar by kk / (returns observed)."""
    acc = 0.0
    used = 0
    nf = fine.shape[0] - 1
    for off in range(m):
        prev = np.nan
        s = 0.0
        nr = 0
        j = off
        while j <= nf:
            v = fine[j]
            if not np.isnan(v):
                if not np.isnan(prev):
                    d = v - prev
                    s += d * d
                    nr += 1
                prev = v
            j += m
        if nr > 0:
            acc += s * kk / nr
            used += 1
    if used == 0:
        return np.nan
    return acc / used


@njit(cache=True)
def _sample_dense(ts, lx, i0, i1, start, step, npts):  # pragma: no cover - numba
    """Previous-tick sample of log prices lx[i0:i1] at start + j*step, j = 0..npts (NaN before the
    first tick, forward-filled after)."""
    out = np.full(npts + 1, np.nan)
    bound = start
    j = 0
    for i in range(i0, i1):
        t = ts[i]
        while t > bound and j < npts:
            j += 1
            bound += step
        out[j] = lx[i - i0]
    for j in range(1, npts + 1):
        if np.isnan(out[j]):
            out[j] = out[j - 1]
    return out


@njit(cache=True)
def _parzen(x):  # pragma: no cover - numba
    if x <= 0.5:
        return 1.0 - 6.0 * x * x + 6.0 * x * x * x
    if x <= 1.0:
        return 2.0 * (1.0 - x) ** 3
    return 0.0


@njit(cache=True)
def _dense_measures(ts, lx, i0, i1, start, end, jitter):  # pragma: no cover - numba
    """Realized kernel (Parzen, BNHLS 2009 bandwidth, end-point jittering) and TSRV (small-sample
    adjusted) from the tick log prices lx (= log price[i0:i1])."""
    nt = i1 - i0
    if nt < 2 * jitter + 2:
        return np.nan, np.nan
    # --- xi^2 = omega^2 / IV: omega^2 from q-sparse RVs of the ticks, IV from sparse subsampled RV
    span = ts[i1 - 1] - ts[i0]
    if span > 0:
        q = int(round(nt * _OMEGA_SPACING_NS / span))
    else:
        q = nt
    q = max(1, min(q, nt - 1))
    om_acc = 0.0
    om_used = 0
    for off in range(q):
        s = 0.0
        nz = 0
        j = off + q
        while j < nt:
            d = lx[j] - lx[j - q]
            if d != 0.0:
                s += d * d
                nz += 1
            j += q
        if nz > 0:
            om_acc += s / (2.0 * nz)
            om_used += 1
    omega2 = om_acc / om_used if om_used > 0 else 0.0
    bar_len = end - start
    sstep = min(_SPARSE_STEP_NS, bar_len // 12)
    fstep = max(sstep // _SPARSE_OFFSETS, 1)
    m = sstep // fstep
    kk = bar_len // sstep
    fine = _sample_dense(ts, lx, i0, i1, start, fstep, kk * m)
    iv_sparse = _subsampled_rv(fine, m, kk)
    if iv_sparse > 0.0:
        xi2 = omega2 / iv_sparse
    elif omega2 > 0.0:
        xi2 = 1.0
    else:
        xi2 = 0.0
    # --- realized kernel on the jittered series
    n = nt - 1 - 2 * (jitter - 1)  # number of jittered returns
    x = np.empty(n)
    p0 = 0.0
    pn = 0.0
    for k in range(jitter):
        p0 += lx[k]
        pn += lx[nt - jitter + k]
    p0 /= jitter
    pn /= jitter
    prev = p0
    for j in range(1, n):
        cur = lx[j + jitter - 1]
        x[j - 1] = cur - prev
        prev = cur
    x[n - 1] = pn - prev
    h_star = PARZEN_C_STAR * xi2**0.4 * n**0.6
    hh = int(math.ceil(h_star))
    hh = max(1, min(hh, n - 1))
    rk = 0.0
    for j in range(n):
        rk += x[j] * x[j]
    for h in range(1, hh + 1):
        w = _parzen(h / (hh + 1.0))
        if w == 0.0:
            continue
        g = 0.0
        for j in range(h, n):
            g += x[j] * x[j - h]
        rk += 2.0 * w * g
    # --- two-scale RV (Zhang, Mykland, Ait-Sahalia 2005), K = c* n^(2/3), c* = (12 xi^4)^(1/3)
    nr = nt - 1
    kt = int(math.ceil((12.0 * xi2 * xi2) ** (1.0 / 3.0) * nr ** (2.0 / 3.0)))
    kt = max(2, min(kt, nr // 2))
    if kt < 2:
        return rk, np.nan
    rv_all = 0.0
    for j in range(1, nt):
        d = lx[j] - lx[j - 1]
        rv_all += d * d
    rv_k = 0.0
    for j in range(kt, nt):
        d = lx[j] - lx[j - kt]
        rv_k += d * d
    rv_k /= kt
    nbar = (nr - kt + 1.0) / kt
    tsrv = (rv_k - nbar / nr * rv_all) / (1.0 - nbar / nr)
    return rk, tsrv


@njit(cache=True)
def _one_bar(
    ts, px, i0, i1, start, end, seed_i, session_first, grid, m, dense, jitter, out
):  # pragma: no cover - numba
    kk = (end - start) // grid
    nt = i1 - i0
    if nt <= 0:
        out[_COV] = 0.0
        return
    out[_CLOSE] = px[i1 - 1]
    h = grid // m
    nf = kk * m
    fine = np.full(nf + 1, np.nan)
    if session_first:
        if ts[i0] - start < grid:
            fine[0] = px[i0]
    elif seed_i >= 0 and ts[seed_i] > start - grid:
        fine[0] = px[seed_i]
    bound = start
    j = 0
    for i in range(i0, i1):
        t = ts[i]
        while t > bound:
            j += 1
            bound += h
        fine[j] = px[i]
    # coverage (before forward filling), logs, forward fill
    seen = 0
    last_k = -1
    first = -1
    for j in range(nf + 1):
        v = fine[j]
        if not np.isnan(v):
            if j > 0 or session_first:
                k = max((j + m - 1) // m, 1)
                if k != last_k:
                    seen += 1
                    last_k = k
            fine[j] = math.log(v)
            if first < 0:
                first = j
        elif first >= 0:
            fine[j] = fine[j - 1]
    out[_COV] = seen / kk
    if nt < 2:
        return
    k0 = (first + m - 1) // m
    n = kk - k0
    if n < 1:
        return
    r = np.empty(n)
    for i in range(n):
        r[i] = fine[(k0 + i + 1) * m] - fine[(k0 + i) * m]
    rv = 0.0
    rsp = 0.0
    rsn = 0.0
    r4 = 0.0
    bv = 0.0
    minrv = 0.0
    medrv = 0.0
    tpq = 0.0
    for i in range(n):
        a = r[i]
        a2 = a * a
        rv += a2
        if a > 0.0:
            rsp += a2
        else:
            rsn += a2
        r4 += a2 * a2
        if i >= 1:
            b = abs(r[i - 1])
            aa = abs(a)
            bv += aa * b
            mn = min(aa, b)
            minrv += mn * mn
        if i >= 2:
            c = abs(r[i - 2])
            b = abs(r[i - 1])
            aa = abs(a)
            md = max(min(aa, b), min(max(aa, b), c))
            medrv += md * md
            tpq += (aa * b * c) ** (4.0 / 3.0)
    out[_NOBS] = n
    out[_RV] = rv
    out[_RSP] = rsp
    out[_RSN] = rsn
    out[_RQ] = n / 3.0 * r4
    if n >= 2:
        bvv = math.pi / 2.0 * n / (n - 1.0) * bv
        out[_BV] = bvv
        out[_MINRV] = _MINRV_C * n / (n - 1.0) * minrv
        out[_JV] = max(rv - bvv, 0.0)
    if n >= 3:
        out[_MEDRV] = _MEDRV_C * n / (n - 2.0) * medrv
        tq = n * n / (n - 2.0) * _MU43 ** (-3.0) * tpq
        out[_TPQ] = tq
        bvv = out[_BV]
        if rv > 0.0:
            adj = tq / (bvv * bvv) if bvv > 0.0 else 1.0
            adj = max(1.0, adj)
            out[_BNS] = ((rv - bvv) / rv) / math.sqrt(_BNS_THETA / n * adj)
        else:
            out[_BNS] = 0.0
    if m > 1:
        out[_RVSS] = _subsampled_rv(fine, m, kk)
    else:
        out[_RVSS] = rv
    if dense:
        lx = np.empty(nt)
        for i in range(nt):
            lx[i] = math.log(px[i0 + i])
        rk, tsrv = _dense_measures(ts, lx, i0, i1, start, end, jitter)
        out[_RK] = rk
        out[_TSRV] = tsrv


@njit(cache=True, parallel=True)
def _measure_bars(
    ts, px, lo, hi, start, end, seed, session_first, grid, m, dense, jitter
):  # pragma: no cover - numba
    nb = lo.shape[0]
    out = np.full((nb, len(_K_COLS)), np.nan)
    for b in prange(nb):
        out[b, _NOBS] = 0.0
        _one_bar(
            ts,
            px,
            lo[b],
            hi[b],
            start[b],
            end[b],
            seed[b],
            session_first[b],
            grid,
            m,
            dense,
            jitter,
            out[b],
        )
    return out


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------
def parse_duration(value: str | pd.Timedelta, name: str) -> int:
    """A positive fixed duration ("5min", "1h", "1D", a Timedelta) in integer nanoseconds.

    Raises ``ValueError`` naming the parameter when the value is not a positive fixed duration.
    """
    try:
        td = pd.Timedelta(value)
    except (ValueError, TypeError):
        raise ValueError(
            f"The '{name}' parameter must be a fixed duration such as '5min', '1h' or '1D'. "
            f"Got {value!r} instead."
        ) from None
    if pd.isna(td) or td.value <= 0:
        raise ValueError(
            f"The '{name}' parameter must be a positive duration. Got {value!r} instead."
        )
    return int(td.value)


def timestamps_ns(col: pd.Series, name: str = TS) -> np.ndarray:
    """The int64 UTC nanoseconds of a datetime column (tz-aware or naive UTC) without copying."""
    dtype = col.dtype
    if isinstance(dtype, pd.DatetimeTZDtype) or (isinstance(dtype, np.dtype) and dtype.kind == "M"):
        if isinstance(dtype, pd.DatetimeTZDtype):
            arr = col.dt.tz_convert("UTC").array if str(dtype.tz) != "UTC" else col.array
        else:
            arr = col.array
        if getattr(arr, "unit", "ns") != "ns":
            arr = arr.as_unit("ns")
        out = np.asarray(arr.asi8, dtype=np.int64)
        nat = out == np.iinfo(np.int64).min
        if nat.any():
            i = int(np.flatnonzero(nat)[0])
            raise DataError(f"missing timestamp at row {i}; expected a UTC time", column=name)
        return out
    raise DataError(f"column has dtype {dtype}; expected datetime64[ns, UTC]", column=name)


def symbol_codes(col: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Integer codes (int64, per row) and the symbol names they index.

    Categoricals use their codes; arrow-backed strings sorted in runs are run-end encoded (fast for
    partitioned data); anything else goes through :func:`pandas.factorize`.
    """
    if isinstance(col.dtype, pd.CategoricalDtype):
        codes = col.cat.codes.to_numpy().astype(np.int64)
        if (codes < 0).any():
            i = int(np.flatnonzero(codes < 0)[0])
            raise DataError(f"missing symbol at row {i}", column=SYMBOL)
        return codes, np.asarray(col.cat.categories, dtype=object)
    n = len(col)
    if n and isinstance(col.dtype, pd.StringDtype) and col.dtype.storage == "pyarrow":
        import pyarrow as pa

        arr = pa.array(col.array)
        chunks = arr.chunks if isinstance(arr, pa.ChunkedArray) else [arr]
        starts, values = [], []
        base = 0
        for ch in chunks:
            if ch.null_count:
                break
            ch = ch.cast(pa.large_string()) if ch.type != pa.large_string() else ch
            bufs = ch.buffers()
            offsets = np.frombuffer(bufs[1], dtype=np.int64)[ch.offset : ch.offset + len(ch) + 1]
            data = (
                np.frombuffer(bufs[2], dtype=np.uint8)
                if bufs[2] is not None
                else np.zeros(1, np.uint8)
            )
            st = _string_runs(offsets, data)
            if len(values) + st.shape[0] > max(n // 16, 1):
                break
            starts.append(st + base)
            values.extend(ch.take(pa.array(st)).to_pylist())
            base += len(ch)
        else:
            run_codes, names = pd.factorize(np.asarray(values, dtype=object))
            st = np.concatenate(starts) if starts else np.zeros(0, np.int64)
            if run_codes.size and (run_codes == 0).all():
                return np.zeros(n, np.int64), np.asarray(names, dtype=object)
            lengths = np.diff(np.append(st, n))
            return np.repeat(run_codes.astype(np.int64), lengths), np.asarray(names, dtype=object)
    codes, names = pd.factorize(col, use_na_sentinel=True)
    if (codes < 0).any():
        i = int(np.flatnonzero(codes < 0)[0])
        raise DataError(f"missing symbol at row {i}", column=SYMBOL)
    return codes.astype(np.int64), np.asarray(names, dtype=object)


def _sessions(calendar: str, ts_min: int, ts_max: int) -> tuple[np.ndarray, np.ndarray]:
    """Session open/close times (UTC ns, sorted) of an exchange calendar covering [ts_min, ts_max]."""
    cal = CALENDARS[calendar]
    lo = pd.Timestamp(ts_min, tz="UTC").tz_convert(cal.tz).normalize().tz_localize(None)
    hi = pd.Timestamp(ts_max, tz="UTC").tz_convert(cal.tz).normalize().tz_localize(None)
    days = pd.date_range(lo - pd.Timedelta("1D"), hi + pd.Timedelta("1D"), freq="D")
    if cal.weekdays_only:
        days = days[days.day_of_week < 5]
    opens = (days + pd.Timedelta(cal.open_time + ":00")).tz_localize(
        cal.tz, ambiguous="NaT", nonexistent="shift_forward"
    )
    closes = (days + pd.Timedelta(cal.close_time + ":00")).tz_localize(
        cal.tz, ambiguous="NaT", nonexistent="shift_forward"
    )
    keep = ~(opens.isna() | closes.isna())
    o = opens[keep].tz_convert("UTC").as_unit("ns").asi8
    c = closes[keep].tz_convert("UTC").as_unit("ns").asi8
    return np.asarray(o, dtype=np.int64), np.asarray(c, dtype=np.int64)


def _expand_empty(
    code: np.ndarray, end: np.ndarray, lo: np.ndarray, hi: np.ndarray, all_ends: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Insert empty bars (lo == hi) so that each symbol has every bar of the sorted ``all_ends``
    between its first and last observed bar."""
    f_code, f_end, f_lo, f_hi = [], [], [], []
    bounds = np.flatnonzero(np.diff(code)) + 1
    for sl in np.split(np.arange(code.shape[0]), bounds):
        e = end[sl]
        full = all_ends[np.searchsorted(all_ends, e[0]) : np.searchsorted(all_ends, e[-1]) + 1]
        pos = np.searchsorted(full, e)
        flo = np.zeros(full.shape[0], np.int64)
        fhi = np.zeros(full.shape[0], np.int64)
        flo[pos] = lo[sl]
        fhi[pos] = hi[sl]
        f_code.append(np.full(full.shape[0], code[sl[0]], np.int64))
        f_end.append(full)
        f_lo.append(flo)
        f_hi.append(fhi)
    return np.concatenate(f_code), np.concatenate(f_end), np.concatenate(f_lo), np.concatenate(f_hi)


def _bar_table(
    codes: np.ndarray, ts: np.ndarray, bar_ns: int, calendar: str, include_empty: bool
) -> tuple[np.ndarray, ...]:
    """(lo, hi, start, end, code, first_of_session) per bar, sorted by (code, end)."""
    cal = CALENDARS[calendar]
    session = not (cal.open_time == "00:00" and cal.close_time == "24:00")
    if not session:
        args = (codes, ts, np.int64(bar_ns))
        z = np.empty(0, np.int64)
        nb = _bars_continuous(*args, z, z, z, False)
        lo, end, code = (np.empty(nb, np.int64) for _ in range(3))
        _bars_continuous(*args, lo, end, code, True)
        hi = np.append(lo[1:], ts.shape[0]) if nb else np.empty(0, np.int64)
        if include_empty and nb:
            all_ends = np.arange(end.min(), end.max() + bar_ns, bar_ns, dtype=np.int64)
            lo, hi, end, code = _reorder4(_expand_empty(code, end, lo, hi, all_ends))
        start = end - bar_ns
        return lo, hi, start, end, code, np.zeros(code.shape[0], np.bool_)
    if ts.shape[0]:
        opens, closes = _sessions(calendar, int(ts.min()), int(ts.max()))
    else:
        opens = closes = np.empty(0, np.int64)
    args = (codes, ts, opens, closes, np.int64(bar_ns))
    z = np.empty(0, np.int64)
    nb = _bars_session(*args, z, z, z, z, False)
    lo, hi, end, code = (np.empty(nb, np.int64) for _ in range(4))
    _bars_session(*args, lo, hi, end, code, True)
    if include_empty and nb:
        pieces = [
            np.minimum(np.arange(o + bar_ns, c + bar_ns, bar_ns), c)
            for o, c in zip(opens, closes, strict=True)
        ]
        all_ends = np.unique(np.concatenate(pieces)).astype(np.int64)
        lo, hi, end, code = _reorder4(_expand_empty(code, end, lo, hi, all_ends))
    o = opens[np.searchsorted(closes, end)] if nb else np.empty(0, np.int64)
    piece = (end - o - 1) // bar_ns
    start = o + piece * bar_ns
    return lo, hi, start, end, code, piece == 0


def _reorder4(t: tuple[np.ndarray, ...]) -> tuple[np.ndarray, ...]:
    code, end, lo, hi = t
    return lo, hi, end, code


def _check_prices(px: np.ndarray, price_col: str) -> None:
    ok = px > 0.0  # NaN compares False
    if not ok.all():
        i = int(np.flatnonzero(~ok)[0])
        raise DataError(
            f"price {float(px[i])!r} at row {i} is not a finite positive number; log returns need "
            "prices > 0",
            column=price_col,
        )
    if not np.isfinite(px).all():
        i = int(np.flatnonzero(~np.isfinite(px))[0])
        raise DataError(f"price {float(px[i])!r} at row {i} is not finite", column=price_col)


# ---------------------------------------------------------------------------------------------
# public API
# ---------------------------------------------------------------------------------------------
def realized_measures(
    prices: pd.DataFrame,
    *,
    bar: str = "1D",
    grid: str = "5min",
    price_col: str = PRICE,
    min_coverage: float = 0.85,
    subsample: bool = True,
    kernel: bool = True,
    calendar: str = "24/7",
    n_offsets: int = 10,
    jitter: int = 2,
    include_empty: bool = True,
) -> pd.DataFrame:
    """Realized variance and its robust relatives per symbol and bar.

    Parameters
    ----------
    prices : frame with ``ts`` (datetime64[ns, UTC]), ``symbol`` and ``price_col``: a canonical
        trades table, quote mids or bar closes (stamped by their close). Any row order.
    bar : bar length ("5min", "1h", "1D"); on exchange calendars "1D" (or longer) is the session.
    grid : previous-tick sampling step for the sparse measures, from "1s" to "30min"; must divide
        ``bar`` (and the session length on exchange calendars).
    price_col : the price column.
    min_coverage : a bar is ``valid`` when at least this share of its grid intervals hold a price.
    subsample : also return ``rv_ss_var``, the grid RV averaged over ``n_offsets`` offsets of the grid
        (each offset's RV scaled to the full bar by ``expected / observed`` returns).
    kernel : also return the dense-data estimators ``rk_var`` (Parzen realized kernel, BNHLS 2009
        bandwidth, end-point jittering over ``jitter`` prices) and ``tsrv_var`` (two-scale RV,
        small-sample adjusted, K = (12 xi^4)^(1/3) n^(2/3)).
    calendar : a key of :data:`features.symbols.CALENDARS` ("24/7", "XNYS", ...).
    n_offsets : number of grid offsets for ``rv_ss_var`` (the grid step must be a multiple).
    jitter : prices averaged at each end of the bar for the realized kernel (1 = no jittering).
    include_empty : emit rows (``valid`` False, NaN measures) for bars without prices between a
        symbol's first and last observed bar.

    Returns
    -------
    DataFrame, one row per (symbol, bar) sorted by symbol then ts, with ``ts`` the bar close (UTC),
    ``symbol`` and the measures: ``rv_var``, ``rv_ss_var``, ``rk_var``, ``tsrv_var``, ``bv_var``
    (pi/2 n/(n-1) sum|r_i||r_{i-1}|), ``medrv_var``, ``minrv_var``, ``rs_pos_var``, ``rs_neg_var``,
    ``rq_var2`` (n/3 sum r^4), ``tpq_var2`` (tri-power quarticity), ``jv_var`` (max(RV-BV, 0)),
    ``bns_z`` (BNS ratio jump statistic with the tri-power quarticity; 0 when RV is 0), ``n_obs``
    (grid returns in the bar), ``coverage``, ``valid`` and ``close`` (the bar's last price).
    """
    bar_ns = parse_duration(bar, "bar")
    grid_ns = parse_duration(grid, "grid")
    if not _MIN_GRID.value <= grid_ns <= _MAX_GRID.value:
        raise ValueError(
            f"The 'grid' parameter must be between 1s and 30min. Got {grid!r} instead."
        )
    if not 0.0 <= min_coverage <= 1.0:
        raise ValueError(
            f"The 'min_coverage' parameter must be in [0, 1]. Got {min_coverage!r} instead."
        )
    if calendar not in CALENDARS:
        raise ValueError(
            f"The 'calendar' parameter must be one of {sorted(CALENDARS)}. Got {calendar!r} instead."
        )
    if not isinstance(n_offsets, int | np.integer) or n_offsets < 1 or grid_ns % n_offsets:
        raise ValueError(
            "The 'n_offsets' parameter must be a positive integer dividing the grid step "
            f"({grid_ns} ns). Got {n_offsets!r} instead."
        )
    if not isinstance(jitter, int | np.integer) or jitter < 1:
        raise ValueError(f"The 'jitter' parameter must be an integer >= 1. Got {jitter!r} instead.")
    for c in (TS, SYMBOL, price_col):
        if c not in prices.columns:
            raise DataError(
                f"prices frame is missing column '{c}'; got columns {list(prices.columns)}",
                column=c,
            )
    cal = CALENDARS[calendar]
    session = not (cal.open_time == "00:00" and cal.close_time == "24:00")
    if session:
        sess_ns = int(
            (pd.Timedelta(cal.close_time + ":00") - pd.Timedelta(cal.open_time + ":00")).value
        )
        bar_ns = min(bar_ns, sess_ns)
        if sess_ns % grid_ns or (sess_ns % bar_ns) % grid_ns:
            raise ValueError(
                f"The 'grid' parameter must divide the {calendar} session "
                f"({cal.open_time}-{cal.close_time}) and its bars. Got {grid!r} instead."
            )
    if bar_ns % grid_ns:
        raise ValueError(
            f"The 'grid' parameter must divide the bar length ({bar!r}). Got {grid!r} instead."
        )

    ts = timestamps_ns(prices[TS])
    px = np.asarray(prices[price_col].to_numpy(), dtype=np.float64)
    codes, names = symbol_codes(prices[SYMBOL])
    is_sorted, bad = _scan(codes, ts, px)
    if bad >= 0:
        _check_prices(px, price_col)
    if not is_sorted:
        order = np.lexsort((ts, codes))
        ts, px, codes = ts[order], px[order], codes[order]
    lo, hi, start, end, code, first_of_session = _bar_table(
        codes, ts, bar_ns, calendar, include_empty
    )
    # seed = index of the last tick before the bar, when it belongs to the same symbol
    seed = np.full(code.shape[0], -1, np.int64)
    if code.size:
        sym_first = np.searchsorted(codes, code, side="left")
        cand = lo - 1
        ok = (cand >= sym_first) & (hi > lo)
        seed[ok] = cand[ok]

    m = int(n_offsets) if subsample else 1
    res = _measure_bars(
        ts,
        px,
        lo,
        hi,
        start,
        end,
        seed,
        first_of_session,
        np.int64(grid_ns),
        np.int64(m),
        bool(kernel),
        np.int64(jitter),
    )
    out = {
        TS: pd.DatetimeIndex(end.astype("datetime64[ns]"), tz="UTC"),
        SYMBOL: pd.array(names[code] if code.size else np.empty(0, object), dtype="str"),
    }
    for k, name in enumerate(_K_COLS[:-2]):
        if name in ("rv_ss_var",) and not subsample:
            continue
        if name in ("rk_var", "tsrv_var") and not kernel:
            continue
        out[name] = res[:, k]
    out["n_obs"] = res[:, _NOBS]
    out["coverage"] = res[:, _COV]
    out["valid"] = (res[:, _COV] >= min_coverage) & (res[:, _NOBS] > 0) & ~np.isnan(res[:, _RV])
    out["close"] = res[:, _CLOSE]
    frame = pd.DataFrame(out)
    return frame
