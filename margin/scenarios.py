"""Scenarios over the margin period of risk, scaled by the risk-forecast bundle.

Everything here is a function of the bundle, the market state's funding carry, the parameters and
the MPOR: no clock, no I/O, randomness only from ``params.mc_seed``. One :class:`Scenarios` value
holds the factor scenarios of a set of underlyings; the engine turns each named set into a
:class:`margin.revalue.ScenarioSet` (adding each option's implied-vol shift) and revalues the book.

Factors per scenario and underlying ``u`` (MPOR ``h`` days; ``sigma_u`` = the bundle's forecast
``h``-day log-return vol ``sqrt(h x forecast_var x scale)``). The bundle's daily ("1D") forecasts
are used where it has them; a bundle with only intraday forecasts (a crypto venue's hourly cycle)
serves the same MPOR in its own periods (:func:`margin_unit`: ``h`` days = ``24 h`` periods of
"1h", the hourly residuals summed 24 at a time in FHS, the 24-period correlation forecast):

- ``log_return`` x: the index's log return over the MPOR;
- ``iv_log_shock``: a change of log implied vol at the reference tenor on top of the spot-vol
  dynamics (non-zero in the stress grid only), scaled per option by the tenor factor;
- ``basis_shift_ann``: change of the annualized log basis of dated futures and option forwards,
  ``basis_shock_sd_ann x sqrt(h) x N(0, 1)`` (independent, seeded);
- ``funding``: funding paid by perpetual longs over the MPOR as a fraction of notional: the current
  carry ``carry_ann x h / 365`` plus ``funding_shock_sd_per_day x sqrt(h) x N(0, 1)``.

Sets (names as in :attr:`Scenarios.sets`):

- ``fhs`` **filtered historical simulation**: the bundle's residual history (``z = ret /
  sigma_issued``, the 1-day vol issued at the previous close, never an in-sample fit) on the last
  ``fhs_lookback_days`` dates where every underlying has one; an ``h``-day vector is the sum of
  ``h`` consecutive daily vectors ("overlapping": one per end date) or of ``h`` vectors drawn with
  replacement ("compound"), divided by ``sqrt(h)``; the scenario is that times ``sigma_u``. With
  ``h = 1`` and a forecast equal to the issued vol it is plain historical simulation.
- ``mc:<matrix>`` **parametric Monte Carlo** under the forecast / stressed-high / stressed-low
  correlation: ``Y = E L'`` (``E`` iid normal, ``L`` the Cholesky factor), a t-copula
  ``U = t_nu(Y / sqrt(W / nu))`` with ``W ~ chi2(nu)`` (``nu`` the bundle's ``copula_df``;
  Gaussian ``U = Phi(Y)`` if None), marginals the bundle's unit-variance innovation distribution
  ``F_u^-1(U_u)``, times ``sigma_u``. The same ``E`` and ``W`` for every matrix (common random
  numbers).
- ``fhs:stressed``, ``mc:stressed``: the same standardized draws times the stressed vol
  ``max(sigma_u, sqrt(h) x q(sigma_issued))`` (``q`` = the ``stress_vol_quantile`` of the issued
  vols over the residual history): the stressed-period measure of the blend.
- ``fhs:<matrix>`` (with ``fhs_recorrelate``): FHS vectors re-correlated to that matrix.
- ``grid`` **stress grid** (exchange risk-array style): for each underlying alone and for all
  together, ``grid_n_moves`` log returns across ``+/- max(k sigma_u, grid_min_range)``, each with
  the implied vol unchanged, up and down (vol-of-vol quantiles at ``iv_shock_level`` and
  ``1 - iv_shock_level`` of the MPOR horizon nearest to ``h``).

Implied-vol dynamics of an option (:func:`option_vol`): with ``x`` its underlying's log return,
``k0 = ln(K / F0)``, the smile's slope ``s1`` and curvature ``s2`` in log-moneyness at ``k0``,

    sticky_moneyness:  vol1 = max(vol0 - s1 x + s2 x^2 / 2, floor) x exp(beta x + f(DTE) shock)
    sticky_strike:     vol1 = vol0 x exp(beta x + f(DTE) shock)

(the smile moves with the forward: the strike's new moneyness is ``k0 - x``; a second-order Taylor
expansion of the smile there), ``beta`` the bundle's spot-vol beta, ``f`` the vol-of-vol tenor
factor.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from numba import njit, prange
from numpy.typing import NDArray
from scipy.special import ndtr, ndtri, stdtr, stdtrit

from features.errors import DataError, ModelError
from margin.instruments import UNDERLYINGS
from margin.params import MarginParams
from margin.revalue import ScenarioSet
from models.forecast import Innovation, RiskForecastBundle, VolOfVol, parse_horizon_unit

__all__ = [
    "FactorSet",
    "Scenarios",
    "build_scenarios",
    "bundle_symbol",
    "fhs_standardized",
    "horizon_vol",
    "horizon_vols",
    "margin_unit",
    "mc_standardized",
    "option_vol",
    "option_vol_shifts",
    "recorrelate",
    "tenor_factor",
    "to_scenario_set",
]

_UNIT = "1D"
_DAY = pd.Timedelta(days=1)
_CLIP = 1e-15
_STREAM_MC, _STREAM_CHI2, _STREAM_FACTORS_FHS, _STREAM_FACTORS_MC, _STREAM_BOOT = range(5)


def bundle_symbol(underlying: str) -> str:
    """The bundle symbol that carries an underlying's forecasts (its index symbol: BTC ->
    BTCUSDT, SP500 -> SP500)."""
    u = UNDERLYINGS.get(underlying)
    return underlying if u is None else u.index


def _rng(seed: int, stream: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), int(stream)])


def _source_horizon(hs: Sequence[int], h: int) -> int:
    below = [x for x in hs if x < h]
    return h if h in hs else (max(below) if below else min(hs))


def margin_unit(bundle: RiskForecastBundle) -> tuple[str, int]:
    """The bundle unit margin scales with and its periods per day: "1D" (1) when the bundle has
    daily forecasts, else the coarsest intraday unit that divides a day ("1h": 24; a crypto
    venue's intraday bundle reaches a 1-day MPOR as 24 hourly periods)."""
    if _UNIT in bundle.units:
        return _UNIT, 1
    found = []
    for u in bundle.units:
        p = parse_horizon_unit(u)
        if p < _DAY and _DAY % p == pd.Timedelta(0):
            found.append((p, u))
    if not found:
        raise ModelError(f"the bundle has no daily forecasts nor an intraday unit that divides a "
                         f"day (units {list(bundle.units)}); margin needs one of them")
    p, u = max(found)
    return u, int(_DAY // p)


def horizon_vols(bundle: RiskForecastBundle, symbols: Sequence[str], h: int, unit: str = _UNIT
                 ) -> tuple[NDArray[np.float64], tuple[int, ...], NDArray[np.float64]]:
    """Forecast ``h``-period log-return vols of ``symbols`` (periods of ``unit``, scaled), the
    bundle horizon each comes from and its variance scale: ``h`` itself if the bundle holds it,
    else the largest held horizon below ``h`` (the smallest if none is below), its per-period
    average variance ``forecast_var x scale`` times ``h`` (the bundle's units: ``vol(s, k)^2 = k x
    forecast_var x scale``). One read of the vol table."""
    src = _source_horizon(bundle.horizons(unit), h)
    vt = bundle.vol_table
    rows = np.flatnonzero((vt["unit"].to_numpy() == unit) & (vt["horizon"].to_numpy() == src))
    at = {s: int(r) for s, r in zip(vt["symbol"].to_numpy()[rows].tolist(), rows, strict=True)}
    idx = np.array([at[s] for s in symbols], dtype=np.int64)
    scale = vt["scale"].to_numpy(dtype=np.float64)[idx]
    var = vt["forecast_var"].to_numpy(dtype=np.float64)[idx] * scale
    return (np.sqrt(var * h), (src,) * len(symbols), scale)


def horizon_vol(bundle: RiskForecastBundle, symbol: str, h: int, unit: str = _UNIT
                ) -> tuple[float, int]:
    """The forecast ``h``-period log-return vol of one symbol and its source horizon (see
    :func:`horizon_vols`)."""
    v, src, _ = horizon_vols(bundle, [symbol], h, unit)
    return float(v[0]), src[0]


# ---- standardized draws --------------------------------------------------------------------------


def fhs_standardized(z: NDArray[np.float64], h: int, rule: str, *, n_compound: int = 1000,
                     seed: int = 0) -> NDArray[np.float64]:
    """Unit-variance ``h``-day vectors from daily residual vectors ``z`` (array of shape
    (n_dates, n_symbols), oldest first): 'overlapping' = sums of ``h`` consecutive rows (shape
    (n_dates - h + 1, n_symbols)), 'compound' = sums of ``h`` rows drawn with replacement (shape
    (n_compound, n_symbols)); each divided by ``sqrt(h)``."""
    z = np.asarray(z, dtype=np.float64)
    if h == 1:
        return z.copy()
    if rule == "overlapping":
        c = np.vstack([np.zeros((1, z.shape[1])), np.cumsum(z, axis=0)])
        return (c[h:] - c[:-h]) / math.sqrt(h)
    if rule == "compound":
        idx = _rng(seed, _STREAM_BOOT).integers(0, z.shape[0], size=(n_compound, h))
        return z[idx].sum(axis=1) / math.sqrt(h)
    raise ModelError(f"unknown FHS multi-day rule {rule!r}; expected 'overlapping' or 'compound'")


def _ppf(u: NDArray[np.float64], inn: Innovation | None) -> NDArray[np.float64]:
    """Unit-variance inverse CDF of one innovation distribution (normal if None)."""
    if inn is None or inn.name == "normal":
        return ndtri(u)
    nu = float(inn.params["nu"])
    if inn.name == "t":
        return stdtrit(nu, u) * math.sqrt((nu - 2.0) / nu)
    from arch.univariate.distribution import SkewStudent  # Hansen's skewed t, unit variance

    return np.asarray(SkewStudent().ppf(u, [nu, float(inn.params["lambda"])]), dtype=np.float64)


def mc_standardized(corrs: Mapping[str, NDArray[np.float64]], n: int, seed: int, *,
                    copula_df: float | None, marginals: Sequence[Innovation | None]
                    ) -> dict[str, NDArray[np.float64]]:
    """Unit-variance Monte Carlo vectors (array of shape (n, n_symbols)) per correlation matrix:
    t-copula (Gaussian if ``copula_df`` is None) with the given marginals (None = normal); the
    same normal and chi-square draws for every matrix."""
    m = len(marginals)
    e = _rng(seed, _STREAM_MC).standard_normal((n, m))
    w = None if copula_df is None else _rng(seed, _STREAM_CHI2).chisquare(copula_df, n) / copula_df
    out = {}
    for name, r in corrs.items():
        lc = _cholesky(np.asarray(r, dtype=np.float64), name)
        y = e @ lc.T
        u = ndtr(y) if w is None else stdtr(copula_df, y / np.sqrt(w)[:, None])
        u = np.clip(u, _CLIP, 1.0 - _CLIP)
        out[name] = np.column_stack([_ppf(u[:, j], marginals[j]) for j in range(m)]) if m else y
    return out


def _cholesky(r: NDArray[np.float64], name: str) -> NDArray[np.float64]:
    """Cholesky factor of a correlation matrix; a PSD-but-singular one gets a 1e-12 ridge."""
    try:
        return np.linalg.cholesky(r)
    except np.linalg.LinAlgError:
        try:
            return np.linalg.cholesky(r + 1e-12 * np.eye(len(r)))
        except np.linalg.LinAlgError:
            raise ModelError(f"the {name} correlation matrix is not positive semi-definite") from None


def recorrelate(z: NDArray[np.float64], target: NDArray[np.float64]) -> NDArray[np.float64]:
    """``z`` (n, m) mapped so its sample correlation (about zero, as the residuals have mean ~0)
    equals ``target``: ``z A^-T B^T`` with ``A``, ``B`` the Cholesky factors of ``z``'s second
    moment matrix (scaled to a correlation) and of ``target``; each column keeps unit second
    moment."""
    n = z.shape[0]
    s = z.T @ z / n
    d = np.sqrt(np.diag(s))
    a = _cholesky(s / d[:, None] / d[None, :], "FHS sample")
    b = _cholesky(np.asarray(target, dtype=np.float64), "target")
    white = np.linalg.solve(a, (z / d).T).T
    return white @ b.T


# ---- option implied vol --------------------------------------------------------------------------


def tenor_factor(vov: VolOfVol | None, dte_days: float, fallback_tenor_days: float = 30.0) -> float:
    """The vol-of-vol tenor factor at ``dte_days``: the bundle's rule, else
    ``(fallback_tenor / max(DTE, 7)) ** 0.5``."""
    if vov is not None:
        return vov.tenor_factor(max(dte_days, 1e-9))
    return float((fallback_tenor_days / max(dte_days, 7.0)) ** 0.5)


def option_vol(x: NDArray[np.float64], shock: NDArray[np.float64], vol0: float, slope: float,
               curvature: float, beta: float, factor: float, dynamics: str,
               floor: float) -> NDArray[np.float64]:
    """An option's implied vol in each scenario (see the module docstring): ``x`` the
    underlying's log returns, ``shock`` the reference-tenor d log IV shocks (both arrays of shape
    (n_scenarios,))."""
    lvl = np.exp(beta * x + factor * shock)
    if dynamics == "sticky_strike":
        return vol0 * lvl
    base = np.maximum(vol0 - slope * x + 0.5 * curvature * x * x, min(floor, vol0))
    return base * lvl


@njit(cache=True, parallel=True, nogil=True, error_model="numpy")
def _vol_shift_kernel(x, shock, und, vol0, slope, curv, e1, factor, moneyness, floor, out):
    n, m = out.shape
    for s in prange(n):  # each element on its own: identical bytes for any thread count
        for o in range(m):
            u = und[o]
            xs = x[s, u]
            lvl = e1[s, u]  # exp(beta_u x), shared by the underlying's options
            if shock[s, u] != 0.0:
                lvl *= math.exp(factor[o] * shock[s, u])
            base = vol0[o]
            if moneyness:
                base = max(vol0[o] - slope[o] * xs + 0.5 * curv[o] * xs * xs, min(floor, vol0[o]))
            out[s, o] = base * lvl - vol0[o]


def option_vol_shifts(x: NDArray[np.float64], shock: NDArray[np.float64], und: NDArray[np.int64],
                      vol0: NDArray[np.float64], slope: NDArray[np.float64],
                      curvature: NDArray[np.float64], beta_und: NDArray[np.float64],
                      factor: NDArray[np.float64], dynamics: str, floor: float
                      ) -> NDArray[np.float64]:
    """:func:`option_vol` minus ``vol0`` for many options at once (compiled): ``x`` and ``shock``
    arrays of shape (n_scenarios, n_underlyings), ``beta_und`` one spot-vol beta per underlying,
    the rest one entry per option (``und`` its underlying's column); returns the kernel's
    ``vol_shift``, (n_scenarios, n_options). ``exp(beta x + f shock)`` is computed as
    ``exp(beta x) exp(f shock)`` (equal to rounding)."""
    out = np.empty((x.shape[0], len(vol0)))
    x = np.ascontiguousarray(x)
    e1 = np.exp(x * np.asarray(beta_und, dtype=np.float64)[None, :])
    _vol_shift_kernel(x, np.ascontiguousarray(shock),
                      np.asarray(und, dtype=np.int64), np.asarray(vol0, dtype=np.float64),
                      np.asarray(slope, dtype=np.float64), np.asarray(curvature, dtype=np.float64),
                      e1, np.asarray(factor, dtype=np.float64),
                      dynamics == "sticky_moneyness", float(floor), out)
    return out


# ---- the scenario sets ---------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class FactorSet:
    """Factor scenarios of one set, arrays of shape (n_scenarios, n_underlyings) in
    :attr:`Scenarios.underlyings` order; ``labels`` names each scenario (for explain)."""

    name: str
    log_return: NDArray[np.float64]
    iv_log_shock: NDArray[np.float64]
    basis_shift_ann: NDArray[np.float64]
    funding: NDArray[np.float64]
    labels: tuple[str, ...]

    @property
    def n(self) -> int:
        """Number of scenarios."""
        return self.log_return.shape[0]


@dataclass(frozen=True, eq=False)
class Scenarios:
    """The day's scenario sets for a set of underlyings (see the module docstring).

    Attributes
    ----------
    underlyings : margin underlyings ("BTC"), sorted; ``symbols`` the bundle symbols behind them.
    mpor_days : the MPOR ``h``; ``dt_yr = h / 365`` (ACT/365) the time every contract ages.
    sigma, sigma_stressed : forecast and stressed ``h``-day vols per underlying.
    sigma_source_horizon : the bundle horizon each forecast vol came from (periods of ``unit``);
        ``variance_scale`` the bundle's variance scale applied to it.
    beta : spot-vol beta per underlying (bundle or fallback); ``vol_of_vol`` per underlying
        (None where the bundle has none).
    sets : name -> :class:`FactorSet`.
    pools : pooled measure sets: "forecast", "stressed", "corr:<matrix>" -> set names.
    notes : what was skipped or fell back, and why.
    fhs_dates : end dates (intraday units: end times) of the FHS scenarios ("overlapping"), or
        empty.
    unit, periods_per_day : the bundle unit the vols, residuals and correlations come from
        (:func:`margin_unit`) and its periods per day: the MPOR is ``mpor_days x periods_per_day``
        periods of it.
    """

    underlyings: tuple[str, ...]
    symbols: tuple[str, ...]
    mpor_days: int
    dt_yr: float
    sigma: NDArray[np.float64]
    sigma_stressed: NDArray[np.float64]
    sigma_source_horizon: tuple[int, ...]
    variance_scale: NDArray[np.float64]
    beta: NDArray[np.float64]
    vol_of_vol: tuple[VolOfVol | None, ...]
    sets: Mapping[str, FactorSet]
    pools: Mapping[str, tuple[str, ...]]
    matrices: Mapping[str, NDArray[np.float64]]
    notes: tuple[str, ...] = field(default=())
    fhs_dates: tuple[str, ...] = field(default=())
    unit: str = _UNIT
    periods_per_day: int = 1


def _vov(bundle: RiskForecastBundle, u: str) -> VolOfVol | None:
    return bundle.vol_of_vol.get(u) or bundle.vol_of_vol.get(bundle_symbol(u))


def _nearest(keys: Sequence[float], x: float) -> float:
    return min(keys, key=lambda k: (abs(k - x), k))


def iv_shocks(vov: VolOfVol | None, h: int, params: MarginParams) -> tuple[float, float]:
    """(down <= 0, up >= 0) d log implied vol at the reference tenor over ``h`` days: the
    vol-of-vol quantiles at ``1 - iv_shock_level`` and ``iv_shock_level`` (nearest stored), or
    ``iv_shock_fallback_log`` without a vol-of-vol."""
    if vov is None:
        return params.iv_shock_fallback_log
    row = vov.quantiles[int(_nearest(list(vov.quantiles), h))]
    lv = list(row)
    dn, up = row[_nearest(lv, 1.0 - params.iv_shock_level)], row[_nearest(lv, params.iv_shock_level)]
    return (min(dn, 0.0), max(up, 0.0))


def residual_panel(bundle: RiskForecastBundle, symbols: Sequence[str], as_of: pd.Timestamp,
                   lookback: int, unit: str = _UNIT, value: str = "z"
                   ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The bundle's residual history of ``symbols`` in ``unit`` up to ``as_of``: ``value`` ("z"
    or "ret") on the last ``lookback`` times every symbol has one (oldest first), and every
    issued sigma."""
    r = bundle.residuals
    ts_all = pd.DatetimeIndex(r["ts"]).as_unit("ns").asi8
    sym_all = r["symbol"].to_numpy()
    sel = (r["unit"].to_numpy() == unit) & (ts_all <= pd.Timestamp(as_of).as_unit("ns").value)
    code = {s: j for j, s in enumerate(symbols)}
    col = np.array([code.get(x, -1) for x in sym_all[sel].tolist()], dtype=np.int64)
    mine = col >= 0
    rows = np.flatnonzero(sel)[mine]
    col = col[mine]
    times, pos = np.unique(ts_all[rows], return_inverse=True)  # sorted
    m = len(symbols)
    z = np.full((len(times), m), np.nan)
    sg = np.full((len(times), m), np.nan)
    z[pos, col] = r[value].to_numpy(dtype=np.float64)[rows]
    sg[pos, col] = r["sigma_issued"].to_numpy(dtype=np.float64)[rows]
    index = pd.DatetimeIndex(pd.to_datetime(times, unit="ns", utc=True))
    keep = ~np.isnan(z).any(axis=1)
    zf = pd.DataFrame(z[keep], index=index[keep], columns=list(symbols)).iloc[-lookback:]
    return zf, pd.DataFrame(sg, index=index, columns=list(symbols))


def build_scenarios(underlyings: Sequence[str], bundle: RiskForecastBundle, params: MarginParams,
                    mpor_days: int, *, as_of: object,
                    funding_carry_ann: Mapping[str, float] | None = None) -> Scenarios:
    """Every scenario set for ``underlyings`` over an MPOR of ``mpor_days`` days.

    Parameters
    ----------
    underlyings : margin underlyings; each needs a bundle symbol (:func:`bundle_symbol`).
    bundle : the risk-forecast bundle: its "1D" forecasts, else its intraday unit
        (:func:`margin_unit`; an MPOR of ``h`` days is then ``h x 24`` periods of "1h").
    params : the margin parameters.
    mpor_days : the MPOR ``h`` (days).
    as_of : the market state's time: residuals after it are ignored (no look-ahead).
    funding_carry_ann : underlying -> the perpetual's annualized funding carry (0 where absent).

    Raises
    ------
    ModelError : the bundle has neither "1D" forecasts nor an intraday unit dividing a day, or a
        symbol is not in it.
    """
    unds = tuple(sorted(set(underlyings)))
    syms = tuple(bundle_symbol(u) for u in unds)
    unit, ppd = margin_unit(bundle)
    missing = [s for s in syms if s not in bundle.symbols]
    if missing:
        raise ModelError(f"symbols {missing} are not in the bundle {list(bundle.symbols)}")
    t = pd.Timestamp(as_of)
    t = (t.tz_localize("UTC") if t.tzinfo is None else t.tz_convert("UTC"))
    t = min(t, bundle.as_of)
    h = int(mpor_days)
    hp = h * ppd  # the MPOR in periods of the unit
    m = len(unds)
    notes: list[str] = []
    sigma, src_h, vscale = horizon_vols(bundle, syms, hp, unit)
    what = "day" if unit == _UNIT else f"x {unit}"
    for s, k in zip(syms, src_h, strict=True):
        if k != hp:
            notes.append(f"{s}: no {hp}-{what} forecast; used the {k}-{what} per-period average "
                         f"x {hp}")
    for sym in syms:
        if sym in bundle.stale:
            notes.append(f"{sym}: stale forecast in the bundle ({bundle.stale[sym].note()})")
    vovs = tuple(_vov(bundle, u) for u in unds)
    beta = np.array([params.spot_vol_beta_fallback if v is None or v.spot_vol_beta is None
                     else float(v.spot_vol_beta) for v in vovs])
    carry = np.array([float((funding_carry_ann or {}).get(u, 0.0)) for u in unds])
    # correlation matrices of the symbols, from the bundle's order
    pos = [bundle.symbols.index(s) for s in syms]
    hs = bundle.horizons(unit)
    h_corr = hp if hp in hs else _nearest(list(hs), hp)
    sub = np.ix_(pos, pos)
    matrices = {"forecast": np.asarray(bundle.correlation(int(h_corr), unit))[sub]}
    if bundle.stressed is not None:
        matrices["high"] = np.asarray(bundle.stressed.high)[sub]
        matrices["low"] = np.asarray(bundle.stressed.low)[sub]
    else:
        notes.append("the bundle has no stressed correlation: correlation stress uses the "
                     "forecast matrix only")
    # ---- FHS
    z_panel, s_panel = residual_panel(bundle, syms, t, params.fhs_lookback_days * ppd, unit)
    sets: dict[str, FactorSet] = {}
    std: dict[str, NDArray[np.float64]] = {}
    labels: dict[str, tuple[str, ...]] = {}
    q_sig = np.array([float(np.quantile(s_panel[s].dropna().to_numpy(), params.stress_vol_quantile))
                      if s_panel[s].notna().any() else 0.0 for s in syms]) if m else np.zeros(0)
    sigma_st = np.maximum(sigma, q_sig * math.sqrt(hp))
    fhs_dates: tuple[str, ...] = ()
    use_fhs = "fhs" in params.scenario_sources
    if use_fhs and len(z_panel) < max(params.fhs_min_obs, hp):
        notes.append(f"FHS skipped: {len(z_panel)} common residual dates < fhs_min_obs "
                     f"{max(params.fhs_min_obs, hp)}")
        use_fhs = False
    if use_fhs:
        zf = fhs_standardized(z_panel.to_numpy(), hp, params.fhs_multi_day,
                              n_compound=params.fhs_n_compound, seed=params.mc_seed)
        if params.fhs_multi_day == "overlapping":
            fhs_dates = tuple(np.datetime_as_string(
                z_panel.index[hp - 1:].tz_convert(None).to_numpy(),
                unit="D" if unit == _UNIT else "m").tolist())
            labels["fhs"] = tuple(f"fhs {d}" for d in fhs_dates)
        else:
            labels["fhs"] = tuple(f"fhs draw {i}" for i in range(zf.shape[0]))
        if params.fhs_recorrelate:
            for name, r in matrices.items():
                std["fhs" if name == "forecast" else f"fhs:{name}"] = recorrelate(zf, r)
        else:
            std["fhs"] = zf
    use_mc = "mc" in params.scenario_sources
    if use_mc:
        if params.mc_dof_source == "bundle":
            marg = [bundle.innovations.get(s) for s in syms]
            cdf = bundle.copula_df
        elif params.mc_dof_source == "normal":
            marg, cdf = [None] * m, None
        else:
            marg = [Innovation("t", {"nu": params.mc_dof}) for _ in syms]
            cdf = params.mc_dof
        mc = mc_standardized(matrices, params.mc_n_scenarios, params.mc_seed, copula_df=cdf,
                             marginals=marg)
        for name, y in mc.items():
            std[f"mc:{name}"] = y
    sq = math.sqrt(h)
    nb = {"fhs": _rng(params.mc_seed, _STREAM_FACTORS_FHS), "mc": _rng(params.mc_seed,
                                                                         _STREAM_FACTORS_MC)}
    shocks = {}
    for fam, rng in nb.items():
        n_f = next((v.shape[0] for k, v in std.items() if k.split(":")[0] == fam), 0)
        shocks[fam] = (rng.standard_normal((n_f, m)), rng.standard_normal((n_f, m)))

    def make(name: str, zstd: NDArray[np.float64], scale: NDArray[np.float64]) -> None:
        fam = name.split(":")[0]
        nb_, nf_ = shocks[fam]
        lab = labels.get(fam) or tuple(f"{name} #{i}" for i in range(zstd.shape[0]))
        sets[name] = FactorSet(
            name, zstd * scale, np.zeros_like(zstd), params.basis_shock_sd_ann * sq * nb_,
            carry * h / 365.0 + params.funding_shock_sd_per_day * sq * nf_,
            lab if fam == "fhs" else tuple(f"{name} #{i}" for i in range(zstd.shape[0])))

    pools: dict[str, tuple[str, ...]] = {}
    fc = [k for k in ("fhs", "mc:forecast") if k in std]
    if not fc:
        raise ModelError("no forecast scenarios: FHS was skipped and Monte Carlo is off "
                         "(scenario_sources); enable 'mc' or provide residual history")
    for k in fc:
        make(k, std[k], sigma)
    pools["forecast"] = tuple(fc)
    st_names = []
    for k in fc:
        nm = "fhs:stressed" if k == "fhs" else "mc:stressed"
        make(nm, std[k], sigma_st)
        st_names.append(nm)
    pools["stressed"] = tuple(st_names)
    for mat in matrices:
        names = []
        if "fhs" in std:
            key = "fhs" if (mat == "forecast" or not params.fhs_recorrelate) else f"fhs:{mat}"
            if key not in sets:
                make(key, std[key], sigma)
            names.append(key)
        if f"mc:{mat}" in std:
            if f"mc:{mat}" not in sets:
                make(f"mc:{mat}", std[f"mc:{mat}"], sigma)
            names.append(f"mc:{mat}")
        pools[f"corr:{mat}"] = tuple(names)
    sets["grid"] = _grid(unds, sigma, vovs, h, carry, params)
    pools["grid"] = ("grid",)
    return Scenarios(unds, syms, h, h / 365.0, sigma, sigma_st, src_h, vscale, beta, vovs, sets,
                     pools, matrices, tuple(notes), fhs_dates, unit, ppd)


def _grid(unds: tuple[str, ...], sigma: NDArray[np.float64], vovs: Sequence[VolOfVol | None],
          h: int, carry: NDArray[np.float64], params: MarginParams) -> FactorSet:
    m = len(unds)
    k = params.grid_k_sigma
    steps = np.linspace(-1.0, 1.0, params.grid_n_moves)
    rng_u = np.maximum(k * sigma, params.grid_min_range)
    iv = [iv_shocks(v, h, params) for v in vovs]
    xs, shocks, labels = [], [], []
    groups = [(u, [j]) for j, u in enumerate(unds)] + ([("all", list(range(m)))] if m > 1 else [])
    for gname, members in groups:
        for s in steps:
            for state in ("iv flat", "iv up", "iv down"):
                x = np.zeros(m)
                sh = np.zeros(m)
                for j in members:
                    x[j] = s * rng_u[j]
                    sh[j] = 0.0 if state == "iv flat" else (iv[j][1] if state == "iv up"
                                                            else iv[j][0])
                xs.append(x)
                shocks.append(sh)
                labels.append(f"grid {gname} {s * k:+.2f} sigma, {state}")
    x = np.array(xs).reshape(-1, m)
    return FactorSet("grid", x, np.array(shocks).reshape(-1, m), np.zeros_like(x),
                     np.broadcast_to(carry * h / 365.0, x.shape).copy(), tuple(labels))


def to_scenario_set(scen: Scenarios, fs: FactorSet,
                    vol_shift: NDArray[np.float64] | None) -> ScenarioSet:
    """The revaluation kernel's :class:`~margin.revalue.ScenarioSet` of one factor set, with the
    options' absolute vol shifts (array of shape (n_scenarios, n_options), or None)."""
    if fs.log_return.shape[1] != len(scen.underlyings):
        raise DataError("factor set and scenarios disagree on the underlyings", column="log_return")
    return ScenarioSet(scen.underlyings, fs.log_return, scen.dt_yr, vol_shift, fs.basis_shift_ann,
                       fs.funding)
