"""A seeded multi-asset market-microstructure simulator with ground truth.

The simulated market is the default demo data of DPRM and the ground truth against which volatility and
correlation forecasts are evaluated: unlike real data, the integrated variance of every bar is known.

Model (per symbol ``i``, on a regular diffusion grid of step ``dt`` = ``base_step``)
-----------------------------------------------------------------------------------
- Efficient log price ``X_i``: ``dX_i = -sigma_i^2 dt / 2 + sigma_i sqrt(dt) z_i + J_i``.
  The increment of step ``k`` happens at ``t_k``; the price is constant on ``[t_k, t_k + dt)``, so a bar
  ``[a, b)`` (stamped by its close ``b``) holds the increments of the steps starting in ``[a, b)``.
- Instantaneous variance: ``sigma_i^2(t) = base_i * season(t) * week(t) * stress(t)
  * exp(2 f_i(t) - 2 Var f_i)`` where ``f_i`` is a sum of a fast and a slow Ornstein-Uhlenbeck log-vol
  factor, each part common to all symbols and part idiosyncratic (volatility clustering with a long
  memory feel and co-movement of volatilities). ``season`` is an intraday UTC pattern (the US-open hump
  around 14:30 UTC plus a bump around the UTC midnight daily close) with mean 1 over the day; ``week``
  lowers variance on Saturdays and Sundays and keeps the weekly mean at 1.
- Correlation: a one-factor model ``z_i = rho_i f + sqrt(1 - rho_i^2) e_i`` with loadings
  ``rho_i(t) = tanh(atanh(L_i[regime]) + u(t))`` (``u`` a slow OU common to all symbols), so the
  instantaneous correlation ``rho_i rho_j`` is positive semi-definite by construction.
- Regime: a continuous-time Markov chain calm <-> stress (rare, short stress spells). In stress the
  loadings move to their stress values (correlations toward 1), variance is multiplied by
  ``stress_var_mult`` and jumps arrive ``stress_jump_mult`` times more often.
- Jumps: Poisson arrivals, normal log sizes with standard deviation ``jump_sd_daily_vol_mult`` times the
  symbol's base daily volatility. A share ``common_jump_frac`` of each symbol's jumps are market-wide
  co-jumps (all symbols at once, sizes correlated through the current loadings, so in stress they move
  together); the rest are idiosyncratic. ``truth_corr`` describes the diffusive part only.
- Trades: a Cox process whose intensity is proportional to ``(sigma / base sigma)^intensity_vol_elasticity``,
  scaled so that calm-regime days average ``trades_per_day``. Trade price = efficient price
  times ``exp(side * half_spread + eta)`` rounded to the tick away from the mid (buys up, sells down);
  ``side`` is the aggressor (+1 buy, -1 sell), ``eta`` i.i.d. normal microstructure noise.
- Half spread: ``half_spread_1m_vol_mult`` times the instantaneous 1-minute volatility (the spread widens
  with volatility), at least one tick wide after rounding.
- Quotes: a second Cox process (``quotes_per_trade`` times the trade rate) of best bid/ask around the
  noisy efficient price; sizes thin out when volatility rises.
- Book: snapshots every ``book_every`` of ``book_levels`` levels per side, spaced by whole ticks.
- 1-minute bars: OHLCV of the trades per minute (``ts`` = bar close); a minute without trades repeats the
  previous close with zero volume, as exchanges do.

Ground truth
------------
``truth_bars`` (per symbol and ``truth_interval`` bar) and ``truth_daily`` (per symbol and UTC day):
``iv_var`` (the integrated diffusive variance, the sum of ``sigma^2 dt`` over the bar), ``jump_var`` (the
sum of squared jumps), ``qv_var`` (their sum, the quadratic variation that realized variance estimates),
``n_jumps``, ``stress_frac`` (fraction of the bar spent in stress) and ``regime`` ("stress" when
``stress_frac >= 0.5``, else "calm"). ``truth_corr`` holds per truth bar the full correlation matrix in long
format (``ts, symbol_a, symbol_b, corr, regime``): the integrated correlation of the diffusive returns
``int sigma_a sigma_b rho_ab dt / sqrt(int sigma_a^2 dt int sigma_b^2 dt)``, which equals the
instantaneous correlation when loadings are constant over the bar and is PSD with a unit diagonal.

``truth_state`` (``SimResult.truth_state``, per symbol and truth bar close) records the hidden state the
variance dynamics depend on: the common and idiosyncratic fast and slow OU factor values at the bar's
last diffusion step and the regime at the close. :func:`conditional_iv` turns it into the true
conditional expectation of the future ``iv_var`` (the forecasting floor of the oracle in
``models.oracle``); recording it draws no random numbers, so every other frame is unchanged.

Derivatives (:class:`DerivativesConfig`, default for BTCUSDT and ETHUSDT)
------------------------------------------------------------------------
Written on the efficient price ``S`` of the spot symbol (the "index"), sampled at each derivatives
bar close (1 minute):

- Perpetual ``<SPOT>-PERP`` (table ``funding``): ``mark = S exp(p)`` with ``p`` an OU log premium;
  ``funding_rate`` is the current period's rate by Binance's formula ``P + clamp(I - P, -c, c)``
  (``P`` the average premium index ``mark / S - 1`` since the period began, ``I`` the interest
  component), capped; at a funding time it is the rate paid.
- Inverse futures ``<COIN>-<DDMMMYY>`` (Deribit names; table ``futures_1m``, OHLC without volume):
  the next ``futures_monthly`` last-Friday and ``futures_quarterly`` quarter-end expiries (08:00 UTC),
  ``F = S exp(b tau)`` with ``b`` an OU annualized basis, listed until their expiry bar (``F = S``).
- Option chain (table ``options``) every ``options_every``: the next weekly/monthly/quarterly
  expiries, strikes around the forward ``F = S exp(b tau)`` (kept listed until expiry), calls and
  puts, marks by undiscounted Black-76 in the coin (Deribit's convention), ``mark_iv`` the SSVI smile
  whose at-the-money total variance ``theta = iv_premium^2 E[integrated variance to expiry | state]``
  (:func:`expected_variance`: the smile follows the volatility state) and whose skew is
  ``smile_rho_stress`` in the stress regime, else ``smile_rho_calm``; bid/ask at the mid vol (mark
  vol + noise) -+ a half spread that widens in the wings, on the coin tick.

All randomness comes from the generator passed to :func:`simulate`; each model component draws from
its own child stream (``Generator.spawn``), so for example changing the quote rate leaves the price
path unchanged; the derivatives draw from an eighth stream spawned after the others, so the spot
market is bit-identical with or without them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, model_validator
from scipy.signal import lfilter

from features.schema import (
    ASK_PX,
    ASK_SZ,
    BID_PX,
    BID_SZ,
    CLOSE,
    EXPIRY,
    FUNDING_RATE,
    HIGH,
    INDEX_PX,
    LEVEL,
    LOW,
    MARK_IV,
    MARK_PX,
    OPEN,
    OPTION_TYPE,
    PRICE,
    PX,
    QUOTE_VOLUME,
    SIDE,
    SIZE,
    STRIKE,
    SYMBOL,
    SZ,
    TAKER_BUY_VOLUME,
    TRADE_COUNT,
    TRADE_ID,
    TS,
    TS_DTYPE,
    UNDERLYING,
    UNDERLYING_PX,
    VOLUME,
    conform,
)
from features.symbols import deribit_code

__all__ = [
    "DEFAULT_ASSETS",
    "DerivativesConfig",
    "black76_undiscounted",
    "coin_of",
    "deribit_code",
    "deribit_expiries",
    "expected_variance",
    "ssvi_total_var",
    "IV",
    "JUMP_VAR",
    "QV",
    "AssetConfig",
    "SimConfig",
    "STATE_COLUMNS",
    "SimResult",
    "conditional_iv",
    "simulate",
]

IV = "iv_var"
"""Integrated diffusive variance of the efficient log price over a period (log-return units squared)."""
JUMP_VAR = "jump_var"
"""Sum of squared log jumps over a period."""
QV = "qv_var"
"""Quadratic variation ``iv_var + jump_var``: what realized variance estimates."""
N_JUMPS = "n_jumps"
STRESS_FRAC = "stress_frac"
REGIME = "regime"
SYMBOL_A = "symbol_a"
SYMBOL_B = "symbol_b"
CORR = "corr"
CALM, STRESS = "calm", "stress"

_DAY_S = 86_400
_NS = 1_000_000_000
_YEAR_DAYS = 365.0


def _fail(owner: str, name: str, expected: str, value: object) -> ValueError:
    return ValueError(
        f"The '{name}' parameter of {owner} must be {expected}. Got {value!r} instead."
    )


def _check(
    owner: str,
    name: str,
    value: float,
    *,
    gt: float | None = None,
    ge: float | None = None,
    lt: float | None = None,
    le: float | None = None,
) -> None:
    """Raise the standard message when ``value`` is not finite or outside the given bounds."""
    parts = []
    if gt is not None:
        parts.append(f"> {gt}")
    if ge is not None:
        parts.append(f">= {ge}")
    if lt is not None:
        parts.append(f"< {lt}")
    if le is not None:
        parts.append(f"<= {le}")
    expected = " and ".join(parts) if parts else "finite"
    ok = math.isfinite(value)
    ok = ok and (gt is None or value > gt) and (ge is None or value >= ge)
    ok = ok and (lt is None or value < lt) and (le is None or value <= le)
    if not ok:
        raise _fail(owner, name, expected, value)


class AssetConfig(BaseModel):
    """Per-symbol parameters of the simulated market.

    Attributes
    ----------
    symbol : the canonical symbol.
    start_price : efficient price at the start, in quote currency (> 0).
    vol_ann : annualized base volatility (365-day year) of the efficient log price, before the
        intraday, weekend and stress multipliers (> 0).
    tick_size : price increment (> 0).
    trades_per_day : average number of trades per calm UTC day (> 0).
    calm_loading, stress_loading : one-factor loadings in (-1, 1) in the calm and stress regimes; the
        correlation of two symbols is the product of their loadings.
    trade_notional : median trade notional in quote currency (> 0); sizes are log-normal.
    depth_notional : median quoted size at the best level in quote currency (> 0).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    symbol: str
    start_price: float
    vol_ann: float
    tick_size: float
    trades_per_day: float
    calm_loading: float = 0.7
    stress_loading: float = 0.95
    trade_notional: float = 2_000.0
    depth_notional: float = 50_000.0

    @model_validator(mode="after")
    def _validate(self) -> AssetConfig:
        owner = "AssetConfig"
        if not self.symbol:
            raise _fail(owner, "symbol", "a non-empty string", self.symbol)
        for name in (
            "start_price",
            "vol_ann",
            "tick_size",
            "trades_per_day",
            "trade_notional",
            "depth_notional",
        ):
            _check(owner, name, getattr(self, name), gt=0)
        for name in ("calm_loading", "stress_loading"):
            _check(owner, name, getattr(self, name), gt=-1, lt=1)
        if self.tick_size >= self.start_price:
            raise _fail(owner, "tick_size", f"< start_price={self.start_price}", self.tick_size)
        return self


DEFAULT_ASSETS: tuple[AssetConfig, ...] = (
    AssetConfig(
        symbol="BTCUSDT",
        start_price=60_000.0,
        vol_ann=0.55,
        tick_size=0.1,
        trades_per_day=5_500,
        calm_loading=0.75,
        stress_loading=0.97,
        trade_notional=5_000.0,
        depth_notional=250_000.0,
    ),
    AssetConfig(
        symbol="ETHUSDT",
        start_price=3_000.0,
        vol_ann=0.70,
        tick_size=0.01,
        trades_per_day=4_500,
        calm_loading=0.72,
        stress_loading=0.96,
        trade_notional=3_000.0,
        depth_notional=150_000.0,
    ),
    AssetConfig(
        symbol="SOLUSDT",
        start_price=150.0,
        vol_ann=0.95,
        tick_size=0.001,
        trades_per_day=3_700,
        calm_loading=0.62,
        stress_loading=0.93,
        trade_notional=1_500.0,
        depth_notional=60_000.0,
    ),
    AssetConfig(
        symbol="STABLEIDX",
        start_price=100.0,
        vol_ann=0.08,
        tick_size=0.0001,
        trades_per_day=3_000,
        calm_loading=0.25,
        stress_loading=0.80,
        trade_notional=1_000.0,
        depth_notional=100_000.0,
    ),
)
"""The default market: three crypto pairs and a low-volatility stable index (about 1M trades in 60 days)."""


def _timedelta(owner: str, name: str, value: str) -> pd.Timedelta:
    try:
        td = pd.Timedelta(value)
    except (ValueError, TypeError):
        raise _fail(owner, name, "a duration string such as '1s' or '5min'", value) from None
    if pd.isna(td) or td <= pd.Timedelta(0):
        raise _fail(owner, name, "a positive duration", value)
    return td


class DerivativesConfig(BaseModel):
    """Parameters of the simulated crypto derivatives (perpetual, inverse futures, option chain).

    Each listed spot symbol gets a perpetual, Deribit-style inverse futures and an option chain, all
    written on the efficient price of the spot symbol (the "index"); see :func:`simulate`'s
    "Derivatives" notes. Every field has a default; ``underlyings=()`` turns derivatives off.

    Attributes
    ----------
    underlyings : spot symbols (among the simulated assets) that get derivatives; a symbol that
        :meth:`SimConfig.select` drops is dropped here too.
    bar : bar length of the futures bars and of the perpetual's mark/funding rows (a multiple of
        ``base_step`` that divides one day).
    premium_mean_bps, premium_sd_bps, premium_half_life_hours : stationary mean, standard deviation
        and half-life of the perpetual's log premium of mark over index (basis points; sd >= 0,
        half-life > 0).
    funding_interval : funding period (a multiple of ``bar`` dividing one day; 8h on Binance).
    funding_interest : interest component per funding period (0.0001 = 0.01%, Binance's).
    funding_clamp : bound of ``interest - premium`` in the funding formula (>= 0).
    funding_cap : bound of the absolute funding rate per period (> 0).
    basis_mean_ann, basis_sd_ann, basis_half_life_days : the futures' annualized log basis
        ``ln(F / S) / tau``: stationary mean, standard deviation (>= 0) and half-life (> 0).
    futures_monthly, futures_quarterly : how many of the next monthly (last Friday) and quarterly
        (last Friday of Mar/Jun/Sep/Dec) expiries are listed as futures at any time (>= 0).
    options_every : interval between option-chain snapshots (a multiple of ``bar`` and of
        ``truth_interval`` dividing one day).
    option_weekly, option_monthly, option_quarterly : how many of the next Friday, monthly and
        quarterly expiries the chain lists (>= 0, at least one in total).
    strikes_per_expiry : target number of strikes added around the forward per expiry and snapshot
        (>= 3); a strike once listed stays listed until its expiry, as on Deribit.
    strike_range_sd : strikes span ``F exp(+-strike_range_sd sqrt(w_atm))`` (> 0).
    iv_premium : implied over expected realized volatility (the variance risk premium, >= 1 typical,
        > 0).
    smile_rho_calm, smile_rho_stress : SSVI correlation (skew) in the calm and stress regimes, in
        (-1, 1).
    smile_eta, smile_gamma : SSVI power-law curvature ``phi(theta) = eta theta^-gamma
        (1 + theta)^(gamma - 1)``; ``eta (1 + |rho|) <= 2`` and ``0 < gamma <= 1/2`` keep the
        smile free of static arbitrage (Gatheral and Jacquier 2014).
    option_half_spread_vol : half bid-ask spread in volatility units at the money (0.01 = 1 vol
        point); it widens in the wings (>= 0).
    option_quote_noise_vol : standard deviation of the quotes' mid around the mark, in volatility
        units (>= 0).
    option_tick : price tick of the options in the coin (> 0); a bid below one tick is no bid.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    underlyings: tuple[str, ...] = ("BTCUSDT", "ETHUSDT")
    bar: str = "1min"
    premium_mean_bps: float = 2.0
    premium_sd_bps: float = 6.0
    premium_half_life_hours: float = 4.0
    funding_interval: str = "8h"
    funding_interest: float = 0.0001
    funding_clamp: float = 0.0005
    funding_cap: float = 0.0075
    basis_mean_ann: float = 0.08
    basis_sd_ann: float = 0.03
    basis_half_life_days: float = 7.0
    futures_monthly: int = 2
    futures_quarterly: int = 2
    options_every: str = "4h"
    option_weekly: int = 2
    option_monthly: int = 2
    option_quarterly: int = 2
    strikes_per_expiry: int = 11
    strike_range_sd: float = 2.5
    iv_premium: float = 1.1
    smile_rho_calm: float = -0.2
    smile_rho_stress: float = -0.5
    smile_eta: float = 0.7
    smile_gamma: float = 0.5
    option_half_spread_vol: float = 0.01
    option_quote_noise_vol: float = 0.002
    option_tick: float = 0.0001

    @model_validator(mode="after")
    def _validate(self) -> DerivativesConfig:
        owner = "DerivativesConfig"
        if len(set(self.underlyings)) != len(self.underlyings):
            raise _fail(owner, "underlyings", "a tuple of unique symbols", self.underlyings)
        day = pd.Timedelta(days=1)
        bar = _timedelta(owner, "bar", self.bar)
        if day.value % bar.value:
            raise _fail(owner, "bar", "a duration dividing one day", self.bar)
        for name in ("funding_interval", "options_every"):
            td = _timedelta(owner, name, getattr(self, name))
            if td.value % bar.value or day.value % td.value:
                raise _fail(
                    owner, name, f"a multiple of bar={self.bar} that divides one day",
                    getattr(self, name),
                )
        for name in ("premium_half_life_hours", "basis_half_life_days", "strike_range_sd",
                     "iv_premium", "option_tick", "funding_cap"):
            _check(owner, name, getattr(self, name), gt=0)
        for name in ("premium_sd_bps", "basis_sd_ann", "funding_clamp",
                     "option_half_spread_vol", "option_quote_noise_vol"):
            _check(owner, name, getattr(self, name), ge=0)
        for name in ("premium_mean_bps", "basis_mean_ann", "funding_interest"):
            _check(owner, name, getattr(self, name))
        for name in ("futures_monthly", "futures_quarterly", "option_weekly", "option_monthly",
                     "option_quarterly"):
            if getattr(self, name) < 0:
                raise _fail(owner, name, ">= 0", getattr(self, name))
        if self.option_weekly + self.option_monthly + self.option_quarterly < 1:
            raise _fail(owner, "option_weekly", "> 0 when option_monthly and option_quarterly "
                        "are 0 (the chain needs an expiry)", self.option_weekly)
        if self.strikes_per_expiry < 3:
            raise _fail(owner, "strikes_per_expiry", ">= 3", self.strikes_per_expiry)
        for name in ("smile_rho_calm", "smile_rho_stress"):
            _check(owner, name, getattr(self, name), gt=-1, lt=1)
        _check(owner, "smile_gamma", self.smile_gamma, gt=0, le=0.5)
        rho = max(abs(self.smile_rho_calm), abs(self.smile_rho_stress))
        _check(owner, "smile_eta", self.smile_eta, gt=0, le=2.0 / (1.0 + rho))
        return self


class SimConfig(BaseModel):
    """Parameters of :func:`simulate`; every field has a default (the demo market).

    Attributes
    ----------
    assets : per-symbol parameters (:class:`AssetConfig`), in output order; symbols must be unique.
    n_days : number of simulated UTC days (> 0).
    start : start time, a UTC midnight ("2025-01-01T00:00Z" is a Wednesday).
    base_step : diffusion step (divides one day).
    truth_interval : bar length of ``truth_bars``/``truth_corr`` (a multiple of ``base_step`` that
        divides one day).
    book_every : interval between book snapshots (a multiple of ``base_step`` that divides one day);
        the default 60 s keeps the 60-day book at about 3.5M rows (10 s would be 21M).
    book_levels : levels per side in the book snapshots (>= 1).
    quotes_per_trade : quote updates per trade (> 0).
    intensity_vol_elasticity : trade and quote intensity is proportional to
        ``(sigma / base sigma) ** intensity_vol_elasticity`` (>= 0).
    vol_fast_sd, vol_slow_sd : stationary standard deviations of the fast and slow OU log-volatility
        factors (>= 0).
    vol_fast_half_life_hours, vol_slow_half_life_days : their half-lives (> 0).
    vol_common_weight : share of each factor's variance common to all symbols, in [0, 1].
    intraday_us_open_amp : height of the variance hump around 14:30 UTC relative to the base (>= 0).
    intraday_midnight_amp : height of the variance bump around 00:00 UTC (>= 0).
    weekend_var_ratio : Saturday/Sunday variance over weekday variance, in (0, 1].
    jumps_per_day : calm-regime Poisson jump intensity per symbol and day (>= 0).
    jump_sd_daily_vol_mult : jump log-size standard deviation in units of the base daily volatility
        (>= 0).
    common_jump_frac : share of each symbol's jumps that are market-wide co-jumps, in [0, 1].
    stress_calm_mean_days : mean length of a calm spell in days (> 0).
    stress_mean_hours : mean length of a stress spell in hours (> 0).
    stress_var_mult : variance multiplier in stress (>= 1).
    stress_jump_mult : jump-intensity multiplier in stress (>= 1).
    loading_sd, loading_half_life_days : stationary standard deviation and half-life of the common OU
        shift of the loadings in ``atanh`` space (sd >= 0, half-life > 0).
    half_spread_1m_vol_mult : half spread as a multiple of the instantaneous 1-minute volatility (>= 0).
    noise_1m_vol_mult : standard deviation of the i.i.d. log-price noise of trades and quotes, as a
        multiple of the symbol's base 1-minute volatility (>= 0).
    trade_size_sigma : log-normal sigma of trade notionals (>= 0).
    level_gap_spread_mult : distance between book levels in units of the current spread (> 0; at least
        one tick).
    derivatives : the simulated perpetuals, inverse futures and option chains
        (:class:`DerivativesConfig`); they draw from their own random stream, so the spot market
        above is identical with or without them.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    assets: tuple[AssetConfig, ...] = DEFAULT_ASSETS
    n_days: int = 60
    start: str = "2025-01-01T00:00Z"
    base_step: str = "1s"
    truth_interval: str = "5min"
    book_every: str = "60s"
    book_levels: int = 5
    quotes_per_trade: float = 2.0
    intensity_vol_elasticity: float = 1.0
    vol_fast_sd: float = 0.25
    vol_fast_half_life_hours: float = 1.0
    vol_slow_sd: float = 0.30
    vol_slow_half_life_days: float = 2.0
    vol_common_weight: float = 0.6
    intraday_us_open_amp: float = 1.0
    intraday_midnight_amp: float = 0.3
    weekend_var_ratio: float = 0.55
    jumps_per_day: float = 0.5
    jump_sd_daily_vol_mult: float = 0.5
    common_jump_frac: float = 0.5
    stress_calm_mean_days: float = 15.0
    stress_mean_hours: float = 12.0
    stress_var_mult: float = 4.0
    stress_jump_mult: float = 3.0
    loading_sd: float = 0.25
    loading_half_life_days: float = 3.0
    half_spread_1m_vol_mult: float = 0.1
    noise_1m_vol_mult: float = 0.1
    trade_size_sigma: float = 1.0
    level_gap_spread_mult: float = 1.0
    derivatives: DerivativesConfig = DerivativesConfig()

    @model_validator(mode="after")
    def _validate(self) -> SimConfig:
        owner = "SimConfig"
        if len(self.assets) == 0:
            raise _fail(owner, "assets", "a non-empty tuple of AssetConfig", self.assets)
        symbols = [a.symbol for a in self.assets]
        if len(set(symbols)) != len(symbols):
            raise _fail(owner, "assets", "a tuple with unique symbols", symbols)
        if self.n_days <= 0:
            raise _fail(owner, "n_days", "> 0", self.n_days)
        if self.book_levels < 1:
            raise _fail(owner, "book_levels", ">= 1", self.book_levels)
        try:
            ts = pd.Timestamp(self.start)
        except (ValueError, TypeError):
            raise _fail(
                owner, "start", "a timestamp string such as '2025-01-01T00:00Z'", self.start
            ) from None
        ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
        if ts != ts.normalize():
            raise _fail(owner, "start", "a UTC midnight", self.start)
        day = pd.Timedelta(days=1)
        step = _timedelta(owner, "base_step", self.base_step)
        if step.value % 1_000_000 or day.value % step.value:
            raise _fail(
                owner,
                "base_step",
                "a whole number of milliseconds dividing one day",
                self.base_step,
            )
        for name in ("truth_interval", "book_every"):
            td = _timedelta(owner, name, getattr(self, name))
            if td.value % step.value or day.value % td.value:
                raise _fail(
                    owner,
                    name,
                    f"a multiple of base_step={self.base_step} that divides one day",
                    getattr(self, name),
                )
        for name in (
            "quotes_per_trade",
            "vol_fast_half_life_hours",
            "vol_slow_half_life_days",
            "stress_calm_mean_days",
            "stress_mean_hours",
            "loading_half_life_days",
            "level_gap_spread_mult",
        ):
            _check(owner, name, getattr(self, name), gt=0)
        for name in (
            "intensity_vol_elasticity",
            "vol_fast_sd",
            "vol_slow_sd",
            "intraday_us_open_amp",
            "intraday_midnight_amp",
            "jumps_per_day",
            "jump_sd_daily_vol_mult",
            "loading_sd",
            "half_spread_1m_vol_mult",
            "noise_1m_vol_mult",
            "trade_size_sigma",
        ):
            _check(owner, name, getattr(self, name), ge=0)
        _check(owner, "vol_common_weight", self.vol_common_weight, ge=0, le=1)
        _check(owner, "common_jump_frac", self.common_jump_frac, ge=0, le=1)
        _check(owner, "weekend_var_ratio", self.weekend_var_ratio, gt=0, le=1)
        _check(owner, "stress_var_mult", self.stress_var_mult, ge=1)
        _check(owner, "stress_jump_mult", self.stress_jump_mult, ge=1)
        der = self.derivatives
        unknown = [u for u in der.underlyings if u not in symbols]
        if unknown:
            raise _fail(owner, "derivatives", f"underlyings among the assets {symbols}", unknown[0])
        if der.underlyings:
            if pd.Timedelta(der.bar).value % step.value:
                raise _fail(owner, "derivatives", f"a bar that is a multiple of base_step="
                            f"{self.base_step}", der.bar)
            if pd.Timedelta(der.options_every).value % pd.Timedelta(self.truth_interval).value:
                raise _fail(owner, "derivatives", f"options_every a multiple of truth_interval="
                            f"{self.truth_interval}", der.options_every)
        return self

    @property
    def symbols(self) -> tuple[str, ...]:
        """The simulated symbols, in output order."""
        return tuple(a.symbol for a in self.assets)

    @property
    def start_ts(self) -> pd.Timestamp:
        """``start`` as a UTC timestamp."""
        ts = pd.Timestamp(self.start)
        return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")

    def select(self, *symbols: str) -> SimConfig:
        """A copy simulating only ``symbols`` (in the given order).

        Raises ``ValueError`` naming an unknown symbol.
        """
        by_symbol = {a.symbol: a for a in self.assets}
        for s in symbols:
            if s not in by_symbol:
                raise _fail("SimConfig.select", "symbols", f"among {list(by_symbol)}", s)
        der = self.derivatives.model_copy(
            update={"underlyings": tuple(u for u in self.derivatives.underlyings if u in symbols)}
        )
        return self.model_copy(
            update={"assets": tuple(by_symbol[s] for s in symbols), "derivatives": der}
        )


@dataclass(frozen=True, eq=False)
class SimResult:
    """The simulated market and its ground truth.

    Attributes
    ----------
    config : the configuration that produced it.
    trades, quotes, book, bars_1m : canonical frames (kinds "trades", "quotes", "book", "bars"),
        sorted by ``ts`` then symbol (in config order); ``bars_1m.ts`` is the bar close.
    truth_bars : per symbol and truth bar (``ts`` = bar close): ``iv_var``, ``jump_var``, ``qv_var``,
        ``n_jumps``, ``stress_frac``, ``regime``.
    truth_corr : per truth bar the full integrated correlation matrix in long format
        (``ts, symbol_a, symbol_b, corr, regime``), symbols in config order.
    truth_daily : as ``truth_bars`` per UTC day (``ts`` = the next midnight).
    truth_state : the hidden state of the variance process at every truth-bar close, per symbol
        (``ts, symbol, vol_fast_common, vol_slow_common, vol_fast_idio, vol_slow_idio, stressed``):
        the input of :func:`conditional_iv`. Kept out of :meth:`truth` (whose keys are the evaluation
        targets); None when the result was built without it.
    funding : kind "funding": per perpetual (``BTCUSDT-PERP``) and derivatives bar close, the
        funding rate of the current funding period as known then (at a funding time, the rate
        paid), ``mark_px`` and ``index_px``; None without derivatives.
    futures_bars : kind "bars": per inverse future (``BTC-28MAR25``) and bar close while listed,
        the OHLC of its price (no volume: the futures are not traded in the simulation).
    options : kind "options": the option chain snapshots (Deribit names and units: prices in the
        coin, ``underlying_px`` the forward, ``mark_iv`` a fraction).
    """

    config: SimConfig
    trades: pd.DataFrame
    quotes: pd.DataFrame
    book: pd.DataFrame
    bars_1m: pd.DataFrame
    truth_bars: pd.DataFrame
    truth_corr: pd.DataFrame
    truth_daily: pd.DataFrame
    truth_state: pd.DataFrame | None = None
    funding: pd.DataFrame | None = None
    futures_bars: pd.DataFrame | None = None
    options: pd.DataFrame | None = None

    def tables(self) -> dict[str, tuple[str, pd.DataFrame]]:
        """Market tables for the store: table name -> (table kind, canonical frame).

        The spot market ("trades", "quotes", "book", "bars_1m") and, when derivatives were
        simulated, "funding" (perpetual funding, mark and index), "futures_1m" (inverse futures'
        bars, a table the feature build does not read as spot prices) and "options" (the chain).
        """
        out = {
            "trades": ("trades", self.trades),
            "quotes": ("quotes", self.quotes),
            "book": ("book", self.book),
            "bars_1m": ("bars", self.bars_1m),
        }
        if self.funding is not None:
            out["funding"] = ("funding", self.funding)
        if self.futures_bars is not None:
            out["futures_1m"] = ("bars", self.futures_bars)
        if self.options is not None:
            out["options"] = ("options", self.options)
        return out

    def truth(self) -> dict[str, pd.DataFrame]:
        """Ground-truth frames: "truth_bars", "truth_corr" and "truth_daily"."""
        return {
            "truth_bars": self.truth_bars,
            "truth_corr": self.truth_corr,
            "truth_daily": self.truth_daily,
        }

    def summary(self) -> pd.DataFrame:
        """Rows and in-memory size (MB, deep) of every frame, indexed by table name."""
        frames = {name: f for name, (_, f) in self.tables().items()} | self.truth()
        return pd.DataFrame(
            {
                "rows": [len(f) for f in frames.values()],
                "memory_mb": [f.memory_usage(deep=True).sum() / 1e6 for f in frames.values()],
            },
            index=pd.Index(list(frames), name="table"),
        )

    def corr_matrix(self, ts: pd.Timestamp | str) -> pd.DataFrame:
        """The true correlation matrix of the truth bar closing at ``ts`` (symbols in config order)."""
        t = pd.Timestamp(ts)
        t = t.tz_localize("UTC") if t.tzinfo is None else t.tz_convert("UTC")
        rows = self.truth_corr[self.truth_corr[TS] == t]
        if rows.empty:
            raise ValueError(
                f"The 'ts' parameter of SimResult.corr_matrix must be a truth bar close between "
                f"{self.truth_corr[TS].min()} and {self.truth_corr[TS].max()}. Got {ts!r} instead."
            )
        order = list(self.config.symbols)
        return rows.pivot(index=SYMBOL_A, columns=SYMBOL_B, values=CORR).loc[order, order]


# ---------------------------------------------------------------------------------------------
# simulation
# ---------------------------------------------------------------------------------------------


def _as_generator(random_state: int | np.random.Generator) -> np.random.Generator:
    if isinstance(random_state, np.random.Generator):
        return random_state
    if isinstance(random_state, (int, np.integer)) and not isinstance(random_state, bool):
        if random_state < 0:
            raise _fail(
                "simulate", "random_state", "a non-negative int or a numpy Generator", random_state
            )
        return np.random.default_rng(int(random_state))
    raise _fail("simulate", "random_state", "an int or a numpy Generator", random_state)


def _intraday_var_season(hours: np.ndarray, us_open_amp: float, midnight_amp: float) -> np.ndarray:
    """Intraday variance multiplier at UTC ``hours`` (not normalized)."""

    def bump(center: float, width: float) -> np.ndarray:
        return np.exp(-0.5 * ((hours - center) / width) ** 2)

    return 1.0 + us_open_amp * bump(14.5, 1.25) + midnight_amp * (bump(0.0, 1.5) + bump(24.0, 1.5))


def _ou(
    rng: np.random.Generator, n_steps: int, phi: float, sd: float, x_prev: np.ndarray
) -> np.ndarray:
    """Exact AR(1) discretization of stationary OU paths: ``x_k = phi x_{k-1} + sd sqrt(1-phi^2) e_k``.

    ``x_prev`` has shape (n_paths,); returns shape (n_steps, n_paths).
    """
    n_paths = x_prev.shape[0]
    if sd == 0.0:
        return np.zeros((n_steps, n_paths))
    innov = rng.standard_normal((n_steps, n_paths)) * (sd * math.sqrt(1.0 - phi * phi))
    out, _ = lfilter([1.0], [1.0, -phi], innov, axis=0, zi=(phi * x_prev)[None, :])
    return out


def _arrivals(rng: np.random.Generator, mass: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Arrival times of a point process with piecewise-constant intensity on a grid.

    ``mass[k]`` is the expected count in step ``k`` (> 0). Returns the step index of each arrival and
    its position inside the step as a fraction in [0, 1), in time order (exact time change of a
    Poisson process).
    """
    cum = np.cumsum(mass)
    total = float(cum[-1])
    n = int(rng.poisson(total))
    pos = np.sort(rng.uniform(0.0, total, n))
    k = np.minimum(np.searchsorted(cum, pos, side="right"), len(mass) - 1)
    frac = np.clip((pos - (cum[k] - mass[k])) / mass[k], 0.0, np.nextafter(1.0, 0.0))
    return k, frac


def _decimals(tick: float) -> int:
    return max(0, int(math.ceil(-math.log10(tick) - 1e-9))) + 2


def _round_up(px: np.ndarray, tick: float) -> np.ndarray:
    return np.round(np.ceil(px / tick - 1e-9) * tick, _decimals(tick))


def _round_down(px: np.ndarray, tick: float) -> np.ndarray:
    return np.maximum(np.round(np.floor(px / tick + 1e-9) * tick, _decimals(tick)), tick)


def _regime_switch_times(cfg: SimConfig, rng: np.random.Generator, horizon_s: float) -> np.ndarray:
    """Times (seconds from start) of calm<->stress switches; the chain starts calm."""
    calm_mean_s = cfg.stress_calm_mean_days * _DAY_S
    stress_mean_s = cfg.stress_mean_hours * 3600.0
    times: list[float] = []
    t, stressed = 0.0, False
    while True:
        t += float(rng.exponential(stress_mean_s if stressed else calm_mean_s))
        if t >= horizon_s:
            return np.asarray(times, dtype=float)
        times.append(t)
        stressed = not stressed


@dataclass
class _Out:
    """Per-symbol lists of daily arrays, concatenated at the end."""

    parts: dict[str, list[list[np.ndarray]]]

    @classmethod
    def new(cls, n_sym: int, names: tuple[str, ...]) -> _Out:
        return cls({name: [[] for _ in range(n_sym)] for name in names})

    def add(self, i: int, **arrays: np.ndarray) -> None:
        for name, arr in arrays.items():
            self.parts[name][i].append(arr)

    def get(self, name: str, i: int, dtype: Any) -> np.ndarray:
        chunks = self.parts[name][i]
        return np.concatenate(chunks).astype(dtype, copy=False) if chunks else np.empty(0, dtype)


def simulate(config: SimConfig, random_state: int | np.random.Generator) -> SimResult:
    """Simulate the market described by ``config``.

    Parameters
    ----------
    config : the market parameters (:class:`SimConfig`).
    random_state : a non-negative int seed or a ``np.random.Generator``; the same seed gives identical
        frames.

    Returns
    -------
    SimResult
        Canonical trades, quotes, book snapshots and 1-minute bars with the ground truth (integrated
        variance, jump variance, correlation matrices and the regime per truth bar and per day), and
        the derivatives tables (funding, futures bars, options) when ``config.derivatives`` lists
        underlyings.
    """
    if not isinstance(config, SimConfig):
        raise _fail("simulate", "config", "a SimConfig", type(config).__name__)
    rng = _as_generator(random_state)
    (rng_regime, rng_vol, rng_price, rng_jump, rng_trade, rng_quote, rng_book) = rng.spawn(7)

    cfg = config
    assets = cfg.assets
    n = len(assets)
    dt = pd.Timedelta(cfg.base_step).value / _NS
    dt_ns = pd.Timedelta(cfg.base_step).value
    spd = round(_DAY_S / dt)  # steps per day
    spb = round(pd.Timedelta(cfg.truth_interval).value / dt_ns)  # steps per truth bar
    bpd = spd // spb  # truth bars per day
    book_stride = round(pd.Timedelta(cfg.book_every).value / dt_ns)
    start = cfg.start_ts
    start_ns = start.value

    # --- per-symbol constants
    base_var_s = np.array([a.vol_ann**2 / (_YEAR_DAYS * _DAY_S) for a in assets])  # per second
    base_vol_1m = np.sqrt(base_var_s * 60.0)
    log_p0 = np.log([a.start_price for a in assets])
    jump_sd = cfg.jump_sd_daily_vol_mult * np.sqrt(base_var_s * _DAY_S)
    noise_sd = cfg.noise_1m_vol_mult * base_vol_1m
    atanh_calm = np.arctanh([a.calm_loading for a in assets])
    atanh_stress = np.arctanh([a.stress_loading for a in assets])
    ticks = [a.tick_size for a in assets]

    # --- deterministic multipliers: intraday season (mean 1 over the day), weekday/weekend
    hours = np.arange(spd) * dt / 3600.0
    season = _intraday_var_season(hours, cfg.intraday_us_open_amp, cfg.intraday_midnight_amp)
    season /= season.mean()
    log_season = np.log(season)
    w_weekday = 7.0 / (5.0 + 2.0 * cfg.weekend_var_ratio)
    w_weekend = cfg.weekend_var_ratio * w_weekday
    factor_var = cfg.vol_fast_sd**2 + cfg.vol_slow_sd**2
    # intensity normalization: E[(sigma^2 / base)^(c)] with c = elasticity / 2, calm regime
    c = cfg.intensity_vol_elasticity / 2.0
    intensity_norm = (
        float(np.mean(season**c))
        * (5.0 * w_weekday**c + 2.0 * w_weekend**c)
        / 7.0
        * math.exp(2.0 * c * c * factor_var - 2.0 * c * factor_var)
    )
    trade_rate_s = np.array([a.trades_per_day for a in assets]) / _DAY_S / intensity_norm
    quote_rate_s = trade_rate_s * cfg.quotes_per_trade

    # --- OU coefficients and initial (stationary) states
    phi_fast = 0.5 ** (dt / (cfg.vol_fast_half_life_hours * 3600.0))
    phi_slow = 0.5 ** (dt / (cfg.vol_slow_half_life_days * _DAY_S))
    phi_load = 0.5 ** (dt / (cfg.loading_half_life_days * _DAY_S))
    fast_state = rng_vol.standard_normal(n + 1) * cfg.vol_fast_sd
    slow_state = rng_vol.standard_normal(n + 1) * cfg.vol_slow_sd
    load_state = rng_vol.standard_normal(1) * cfg.loading_sd
    x_state = np.zeros(n)
    w_common = math.sqrt(cfg.vol_common_weight)
    w_idio = math.sqrt(1.0 - cfg.vol_common_weight)

    switches = _regime_switch_times(cfg, rng_regime, cfg.n_days * _DAY_S)
    jump_rate_s = cfg.jumps_per_day / _DAY_S
    pairs = [(a, b) for a in range(n) for b in range(a + 1, n)]

    trade_out = _Out.new(n, ("ts", "price", "size", "side"))
    quote_out = _Out.new(n, ("ts", "bid", "bid_sz", "ask", "ask_sz"))
    book_out = _Out.new(n, ("ts", "side", "level", "px", "sz"))
    iv_days, jv_days, nj_days, cov_days, stress_days = [], [], [], [], []
    state_fast_days, state_slow_days, state_stress_days = [], [], []
    close_steps = (np.arange(bpd) + 1) * spb - 1  # last diffusion step of each truth bar
    steps = np.arange(spd)
    levels = np.arange(1, cfg.book_levels + 1)
    der = cfg.derivatives
    der_idx = [cfg.symbols.index(u) for u in der.underlyings]
    der_spb = round(pd.Timedelta(der.bar).value / dt_ns)  # diffusion steps per derivatives bar
    der_ohlc_days: list[np.ndarray] = []

    for day in range(cfg.n_days):
        day_ns = start_ns + day * _DAY_S * _NS
        t_s = day * _DAY_S + steps * dt
        stress = (np.searchsorted(switches, t_s, side="right") % 2).astype(bool)
        weekend = (start + pd.Timedelta(days=day)).day_of_week >= 5
        log_week = math.log(w_weekend if weekend else w_weekday)

        # stochastic volatility
        fast = _ou(rng_vol, spd, phi_fast, cfg.vol_fast_sd, fast_state)
        slow = _ou(rng_vol, spd, phi_slow, cfg.vol_slow_sd, slow_state)
        fast_state, slow_state = fast[-1].copy(), slow[-1].copy()
        f = w_common * (fast[:, :1] + slow[:, :1]) + w_idio * (fast[:, 1:] + slow[:, 1:])
        log_rel_var = (
            log_season[:, None]
            + log_week
            + 2.0 * f
            - 2.0 * factor_var
            + np.where(stress, math.log(cfg.stress_var_mult), 0.0)[:, None]
        )
        rel_var = np.exp(log_rel_var)  # sigma^2 / base sigma^2, shape (spd, n)
        var_step = rel_var * (base_var_s * dt)
        vol_step = np.sqrt(var_step)
        # latent state at each truth-bar close (no random draws: the other frames are unchanged)
        state_fast_days.append(fast[close_steps])
        state_slow_days.append(slow[close_steps])
        close_s = day * _DAY_S + (close_steps + 1) * dt
        state_stress_days.append(np.searchsorted(switches, close_s, side="right") % 2 == 1)
        del fast, slow, f

        # correlation: one-factor loadings
        u = _ou(rng_vol, spd, phi_load, cfg.loading_sd, load_state)
        load_state = u[-1].copy()
        rho = np.tanh(np.where(stress[:, None], atanh_stress, atanh_calm) + u)
        z = rho * rng_price.standard_normal((spd, 1))
        z += np.sqrt(1.0 - rho * rho) * rng_price.standard_normal((spd, n))
        dx = vol_step * z - 0.5 * var_step
        del z, u

        # jumps
        jump_mass = jump_rate_s * dt * np.where(stress, cfg.stress_jump_mult, 1.0)
        jv = np.zeros((bpd, n))
        nj = np.zeros((bpd, n))
        if cfg.jumps_per_day > 0:
            # market-wide jumps hit every symbol at once, sizes correlated through the loadings
            kc, _ = _arrivals(rng_jump, jump_mass * cfg.common_jump_frac)
            zc = rng_jump.standard_normal((len(kc), 1))
            zi = rng_jump.standard_normal((len(kc), n))
            common = jump_sd * (rho[kc] * zc + np.sqrt(1.0 - rho[kc] ** 2) * zi)
            for i in range(n):
                k, _ = _arrivals(rng_jump, jump_mass * (1.0 - cfg.common_jump_frac))
                k = np.concatenate([kc, k])
                size = np.concatenate(
                    [common[:, i], rng_jump.standard_normal(len(k) - len(kc)) * jump_sd[i]]
                )
                np.add.at(dx[:, i], k, size)
                jv[:, i] = np.bincount(k // spb, weights=size * size, minlength=bpd)
                nj[:, i] = np.bincount(k // spb, minlength=bpd)
        x = x_state + np.cumsum(dx, axis=0)
        x_state = x[-1].copy()
        del dx
        if der_idx:  # efficient log-price OHLC per derivatives bar (no random draws)
            lp = (log_p0[der_idx] + x[:, der_idx]).reshape(-1, der_spb, len(der_idx))
            der_ohlc_days.append(
                np.stack([lp[:, 0], lp.max(axis=1), lp.min(axis=1), lp[:, -1]], axis=-1)
            )
            del lp

        # truth
        iv_days.append(var_step.reshape(bpd, spb, n).sum(axis=1))
        jv_days.append(jv)
        nj_days.append(nj)
        stress_days.append(stress.reshape(bpd, spb).mean(axis=1))
        cov = np.empty((bpd, len(pairs)))
        for p, (a, b) in enumerate(pairs):
            cov[:, p] = (
                (vol_step[:, a] * vol_step[:, b] * rho[:, a] * rho[:, b])
                .reshape(bpd, spb)
                .sum(axis=1)
            )
        cov_days.append(cov)
        del rho, var_step

        # microstructure: half spread from the instantaneous 1-minute volatility
        half_spread = cfg.half_spread_1m_vol_mult * np.sqrt(rel_var) * base_vol_1m
        intensity_mult = rel_var**c
        for i in range(n):
            tick = ticks[i]
            logp = log_p0[i] + x[:, i]

            # trades
            k, frac = _arrivals(rng_trade, trade_rate_s[i] * dt * intensity_mult[:, i])
            m = len(k)
            side = (rng_trade.integers(0, 2, m) * 2 - 1).astype(np.int8)
            eta = rng_trade.standard_normal(m) * noise_sd[i]
            raw = np.exp(logp[k] + side * half_spread[k, i] + eta)
            price = np.where(side > 0, _round_up(raw, tick), _round_down(raw, tick))
            notional = _notional(assets[i].trade_notional, cfg.trade_size_sigma, rng_trade, m)
            trade_out.add(
                i,
                ts=day_ns + k * dt_ns + (frac * dt_ns).astype(np.int64),
                price=price,
                size=notional / price,
                side=side,
            )

            # quotes
            k, frac = _arrivals(rng_quote, quote_rate_s[i] * dt * intensity_mult[:, i])
            bid, ask = _best_quotes(rng_quote, logp[k], half_spread[k, i], noise_sd[i], tick)
            depth = assets[i].depth_notional / np.sqrt(np.sqrt(rel_var[k, i]))
            bid_sz = depth * np.exp(0.5 * rng_quote.standard_normal(len(k))) / bid
            ask_sz = depth * np.exp(0.5 * rng_quote.standard_normal(len(k))) / ask
            quote_out.add(
                i,
                ts=day_ns + k * dt_ns + (frac * dt_ns).astype(np.int64),
                bid=bid,
                bid_sz=bid_sz,
                ask=ask,
                ask_sz=ask_sz,
            )

            # book snapshots
            ks = steps[::book_stride]
            bid, ask = _best_quotes(rng_book, logp[ks], half_spread[ks, i], noise_sd[i], tick)
            gap = np.maximum(np.round(cfg.level_gap_spread_mult * (ask - bid) / tick), 1.0) * tick
            off = (levels - 1)[None, :] * gap[:, None]  # (n_snap, levels)
            bid_px = np.maximum(np.round(bid[:, None] - off, _decimals(tick)), tick)
            ask_px = np.round(ask[:, None] + off, _decimals(tick))
            depth = (assets[i].depth_notional / np.sqrt(np.sqrt(rel_var[ks, i])))[
                :, None
            ] * np.sqrt(levels)[None, :]
            shape = (len(ks), cfg.book_levels)
            bid_sz = depth * np.exp(0.3 * rng_book.standard_normal(shape)) / bid_px
            ask_sz = depth * np.exp(0.3 * rng_book.standard_normal(shape)) / ask_px
            snap_ts = np.repeat(day_ns + ks * dt_ns, 2 * cfg.book_levels)
            book_out.add(
                i,
                ts=snap_ts,
                side=np.tile(np.repeat(np.array([1, -1], np.int8), cfg.book_levels), len(ks)),
                level=np.tile(np.concatenate([levels, levels]) - 1, len(ks)),  # 0 = best
                px=np.concatenate([bid_px, ask_px], axis=1).ravel(),
                sz=np.concatenate([bid_sz, ask_sz], axis=1).ravel(),
            )
        del x, rel_var, half_spread, intensity_mult

    symbols = cfg.symbols
    trades = _trades_frame(trade_out, symbols)
    bars = _bars_frame(trade_out, cfg, symbols)
    quotes = _long_frame(
        quote_out,
        symbols,
        {
            BID_PX: ("bid", float),
            BID_SZ: ("bid_sz", float),
            ASK_PX: ("ask", float),
            ASK_SZ: ("ask_sz", float),
        },
        "quotes",
    )
    book = _long_frame(
        book_out,
        symbols,
        {SIDE: ("side", np.int8), LEVEL: ("level", np.int16), PX: ("px", float), SZ: ("sz", float)},
        "book",
    )
    truth_bars, truth_corr, truth_daily = _truth_frames(
        cfg,
        np.concatenate(iv_days),
        np.concatenate(jv_days),
        np.concatenate(nj_days),
        np.concatenate(cov_days),
        np.concatenate(stress_days),
        pairs,
        spb * dt_ns,
    )
    state_fast = np.concatenate(state_fast_days)
    state_slow = np.concatenate(state_slow_days)
    state_stress = np.concatenate(state_stress_days)
    truth_state = _state_frame(cfg, state_fast, state_slow, state_stress, spb * dt_ns)
    funding = futures = options = None
    if der_idx:
        # spawned after the seven market streams: the market above is unchanged by derivatives
        (rng_der,) = rng.spawn(1)
        funding, futures, options = _derivatives(
            cfg, rng_der, np.concatenate(der_ohlc_days), state_fast, state_slow, state_stress
        )
    return SimResult(
        cfg, trades, quotes, book, bars, truth_bars, truth_corr, truth_daily, truth_state,
        funding, futures, options,
    )


def _notional(median: float, sigma: float, rng: np.random.Generator, m: int) -> np.ndarray:
    """``m`` log-normal trade notionals with the given median and log-sigma."""
    return median * np.exp(sigma * rng.standard_normal(m))


def _best_quotes(
    rng: np.random.Generator,
    logp: np.ndarray,
    half_spread: np.ndarray,
    noise_sd: float,
    tick: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Best bid and ask around the noisy efficient price, on the tick grid, never crossed."""
    mid = logp + rng.standard_normal(len(logp)) * noise_sd
    bid = _round_down(np.exp(mid - half_spread), tick)
    ask = _round_up(np.exp(mid + half_spread), tick)
    ask = np.where(ask <= bid, np.round(bid + tick, _decimals(tick)), ask)
    return bid, ask


def _order(ts_parts: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Concatenated ts and symbol codes, and the stable order by (ts, symbol code)."""
    codes = np.concatenate([np.full(len(t), i, np.int16) for i, t in enumerate(ts_parts)])
    ts = np.concatenate(ts_parts)
    return ts, codes, np.lexsort((codes, ts))


def _symbol_column(codes: np.ndarray, symbols: tuple[str, ...]) -> pd.Series:
    return pd.Series(pd.Categorical.from_codes(codes, categories=list(symbols))).astype("str")


def _ts_column(ns: np.ndarray) -> pd.Series:
    return pd.Series(pd.to_datetime(ns, unit="ns", utc=True)).astype(TS_DTYPE)


def _trades_frame(out: _Out, symbols: tuple[str, ...]) -> pd.DataFrame:
    n = len(symbols)
    ts, codes, order = _order([out.get("ts", i, np.int64) for i in range(n)])
    ids = np.concatenate([np.arange(1, len(out.get("ts", i, np.int64)) + 1) for i in range(n)])
    frame = pd.DataFrame(
        {
            TS: _ts_column(ts[order]),
            SYMBOL: _symbol_column(codes[order], symbols),
            PRICE: np.concatenate([out.get("price", i, float) for i in range(n)])[order],
            SIZE: np.concatenate([out.get("size", i, float) for i in range(n)])[order],
            SIDE: np.concatenate([out.get("side", i, np.int8) for i in range(n)])[order],
            TRADE_ID: ids[order],
        }
    )
    out = conform(frame, "trades")
    # conform() returns optional nullable-integer columns as numpy int64; restore the schema dtype
    out[TRADE_ID] = out[TRADE_ID].astype("Int64")
    return out


def _long_frame(
    out: _Out, symbols: tuple[str, ...], columns: dict[str, tuple[str, Any]], kind: str
) -> pd.DataFrame:
    n = len(symbols)
    ts, codes, order = _order([out.get("ts", i, np.int64) for i in range(n)])
    data: dict[str, Any] = {
        TS: _ts_column(ts[order]),
        SYMBOL: _symbol_column(codes[order], symbols),
    }
    for col, (name, dtype) in columns.items():
        data[col] = np.concatenate([out.get(name, i, dtype) for i in range(n)])[order]
    return conform(pd.DataFrame(data), kind)


def _bars_frame(out: _Out, cfg: SimConfig, symbols: tuple[str, ...]) -> pd.DataFrame:
    """1-minute OHLCV bars of the trades, every minute of every symbol, ``ts`` = bar close."""
    minute_ns = 60 * _NS
    n_min = cfg.n_days * 1440
    start_ns = cfg.start_ts.value
    close_ns = start_ns + (np.arange(n_min, dtype=np.int64) + 1) * minute_ns
    cols: dict[str, list[np.ndarray]] = {
        k: [] for k in (OPEN, HIGH, LOW, CLOSE, VOLUME, QUOTE_VOLUME, TRADE_COUNT, TAKER_BUY_VOLUME)
    }
    for i, asset in enumerate(cfg.assets):
        ts = out.get("ts", i, np.int64)
        px = out.get("price", i, float)
        sz = out.get("size", i, float)
        side = out.get("side", i, np.int8)
        mi = (ts - start_ns) // minute_ns
        counts = np.bincount(mi, minlength=n_min).astype(float)
        has = counts > 0
        ends = np.cumsum(counts).astype(np.int64)
        starts = ends - counts.astype(np.int64)
        close = np.full(n_min, np.nan)
        open_ = np.full(n_min, np.nan)
        high = np.full(n_min, np.nan)
        low = np.full(n_min, np.nan)
        if len(px):
            s = starts[has]
            close[has] = px[ends[has] - 1]
            open_[has] = px[s]
            high[has] = np.maximum.reduceat(px, s)
            low[has] = np.minimum.reduceat(px, s)
        p0 = float(
            np.round(
                np.round(asset.start_price / asset.tick_size) * asset.tick_size,
                _decimals(asset.tick_size),
            )
        )
        prev_close = pd.Series(close).ffill().shift(1).fillna(p0).to_numpy()
        for arr in (open_, high, low, close):
            arr[~has] = prev_close[~has]
        cols[OPEN].append(open_)
        cols[HIGH].append(high)
        cols[LOW].append(low)
        cols[CLOSE].append(close)
        cols[VOLUME].append(np.bincount(mi, weights=sz, minlength=n_min))
        cols[QUOTE_VOLUME].append(np.bincount(mi, weights=sz * px, minlength=n_min))
        cols[TRADE_COUNT].append(counts)
        cols[TAKER_BUY_VOLUME].append(np.bincount(mi, weights=sz * (side > 0), minlength=n_min))
    n = len(symbols)
    ts, codes, order = _order([close_ns] * n)
    data: dict[str, Any] = {
        TS: _ts_column(ts[order]),
        SYMBOL: _symbol_column(codes[order], symbols),
    }
    for col, parts in cols.items():
        data[col] = np.concatenate(parts)[order]
    return conform(pd.DataFrame(data), "bars")


def _truth_frames(
    cfg: SimConfig,
    iv: np.ndarray,
    jv: np.ndarray,
    nj: np.ndarray,
    cov: np.ndarray,
    stress_frac: np.ndarray,
    pairs: list[tuple[int, int]],
    bar_ns: int,
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Long truth frames from per-bar arrays of shape (n_bars, n_symbols) / (n_bars, n_pairs)."""
    symbols = cfg.symbols
    n = len(symbols)
    n_bars = iv.shape[0]
    start_ns = cfg.start_ts.value
    close_ns = start_ns + (np.arange(n_bars, dtype=np.int64) + 1) * bar_ns

    def per_symbol(
        ts_ns: np.ndarray, iv_: np.ndarray, jv_: np.ndarray, nj_: np.ndarray, sf: np.ndarray
    ) -> pd.DataFrame:
        m = len(ts_ns)
        return pd.DataFrame(
            {
                TS: _ts_column(np.repeat(ts_ns, n)),
                SYMBOL: _symbol_column(np.tile(np.arange(n, dtype=np.int16), m), symbols),
                IV: iv_.ravel(),
                JUMP_VAR: jv_.ravel(),
                QV: (iv_ + jv_).ravel(),
                N_JUMPS: nj_.ravel().astype(np.int64),
                STRESS_FRAC: np.repeat(sf, n),
                REGIME: pd.Series(np.repeat(np.where(sf >= 0.5, STRESS, CALM), n)).astype("str"),
            }
        )

    truth_bars = per_symbol(close_ns, iv, jv, nj, stress_frac)
    bpd = n_bars // cfg.n_days
    day_ns = start_ns + (np.arange(cfg.n_days, dtype=np.int64) + 1) * _DAY_S * _NS

    def daily(a: np.ndarray) -> np.ndarray:
        return a.reshape(cfg.n_days, bpd, *a.shape[1:]).sum(axis=1)

    truth_daily = per_symbol(day_ns, daily(iv), daily(jv), daily(nj), daily(stress_frac) / bpd)

    # correlation matrices: integrated covariance normalized by the integrated variances
    corr = np.empty((n_bars, n, n))
    sd = np.sqrt(iv)
    corr[:, np.arange(n), np.arange(n)] = 1.0
    for p, (a, b) in enumerate(pairs):
        corr[:, a, b] = corr[:, b, a] = cov[:, p] / (sd[:, a] * sd[:, b])
    regime = np.where(stress_frac >= 0.5, STRESS, CALM)
    truth_corr = pd.DataFrame(
        {
            TS: _ts_column(np.repeat(close_ns, n * n)),
            SYMBOL_A: _symbol_column(
                np.tile(np.repeat(np.arange(n, dtype=np.int16), n), n_bars), symbols
            ),
            SYMBOL_B: _symbol_column(np.tile(np.arange(n, dtype=np.int16), n * n_bars), symbols),
            CORR: corr.ravel(),
            REGIME: pd.Series(np.repeat(regime, n * n)).astype("str"),
        }
    )
    return truth_bars, truth_corr, truth_daily


# ---------------------------------------------------------------------------------------------
# hidden state and the true conditional expectation of future integrated variance
# ---------------------------------------------------------------------------------------------

VOL_FAST_COMMON = "vol_fast_common"
VOL_SLOW_COMMON = "vol_slow_common"
VOL_FAST_IDIO = "vol_fast_idio"
VOL_SLOW_IDIO = "vol_slow_idio"
STRESSED = "stressed"
STATE_COLUMNS = (VOL_FAST_COMMON, VOL_SLOW_COMMON, VOL_FAST_IDIO, VOL_SLOW_IDIO, STRESSED)
"""Columns of ``SimResult.truth_state`` besides ``ts`` and ``symbol``."""

_CHUNK_CELLS = 4_000_000  # rows x steps per vectorised block of :func:`conditional_iv`


def _state_frame(
    cfg: SimConfig, fast: np.ndarray, slow: np.ndarray, stressed: np.ndarray, bar_ns: int
) -> pd.DataFrame:
    """Long state frame from per-bar arrays: factors of shape (n_bars, n_symbols + 1) (column 0 is
    the common part) and the regime flag of shape (n_bars,)."""
    n = len(cfg.symbols)
    n_bars = fast.shape[0]
    close_ns = cfg.start_ts.value + (np.arange(n_bars, dtype=np.int64) + 1) * bar_ns
    return pd.DataFrame(
        {
            TS: _ts_column(np.repeat(close_ns, n)),
            SYMBOL: _symbol_column(np.tile(np.arange(n, dtype=np.int16), n_bars), cfg.symbols),
            VOL_FAST_COMMON: np.repeat(fast[:, 0], n),
            VOL_SLOW_COMMON: np.repeat(slow[:, 0], n),
            VOL_FAST_IDIO: fast[:, 1:].ravel(),
            VOL_SLOW_IDIO: slow[:, 1:].ravel(),
            STRESSED: np.repeat(stressed.astype(bool), n),
        }
    )


@dataclass(frozen=True)
class _Dynamics:
    """The constants of the variance process of :func:`simulate` (same formulas)."""

    dt: float
    spd: int
    season: np.ndarray  # (spd,) intraday multiplier, mean 1
    week: np.ndarray  # (7,) multiplier by weekday (Monday = 0)
    base_var_step: dict[str, float]  # per symbol, base variance per diffusion step
    phi_fast: float
    phi_slow: float
    w_common: float
    w_idio: float
    to_stress_rate: float  # calm -> stress, per second
    to_calm_rate: float  # stress -> calm, per second


def _dynamics(cfg: SimConfig) -> _Dynamics:
    dt = pd.Timedelta(cfg.base_step).value / _NS
    spd = round(_DAY_S / dt)
    hours = np.arange(spd) * dt / 3600.0
    season = _intraday_var_season(hours, cfg.intraday_us_open_amp, cfg.intraday_midnight_amp)
    season /= season.mean()
    w_weekday = 7.0 / (5.0 + 2.0 * cfg.weekend_var_ratio)
    week = np.array([w_weekday] * 5 + [cfg.weekend_var_ratio * w_weekday] * 2)
    return _Dynamics(
        dt=dt,
        spd=spd,
        season=season,
        week=week,
        base_var_step={a.symbol: a.vol_ann**2 / (_YEAR_DAYS * _DAY_S) * dt for a in cfg.assets},
        phi_fast=0.5 ** (dt / (cfg.vol_fast_half_life_hours * 3600.0)),
        phi_slow=0.5 ** (dt / (cfg.vol_slow_half_life_days * _DAY_S)),
        w_common=math.sqrt(cfg.vol_common_weight),
        w_idio=math.sqrt(1.0 - cfg.vol_common_weight),
        to_stress_rate=1.0 / (cfg.stress_calm_mean_days * _DAY_S),
        to_calm_rate=1.0 / (cfg.stress_mean_hours * 3600.0),
    )


def _calendar(cfg: SimConfig, dyn: _Dynamics, k: np.ndarray) -> np.ndarray:
    """Deterministic multiplier ``season x week`` of global diffusion steps ``k`` (any shape)."""
    dow = (cfg.start_ts.day_of_week + k // dyn.spd) % 7
    return dyn.season[k % dyn.spd] * dyn.week[dow]


def _stress_prob(dyn: _Dynamics, s0: np.ndarray, elapsed_s: np.ndarray) -> np.ndarray:
    """P(stress at ``elapsed_s`` after a time the regime was ``s0``): two-state Markov chain."""
    a, b = dyn.to_stress_rate, dyn.to_calm_rate
    pi = a / (a + b)
    return pi + (s0[:, None] - pi) * np.exp(-(a + b) * elapsed_s)[None, :]


def conditional_iv(
    config: SimConfig,
    state: pd.DataFrame,
    horizon_bars: int | tuple[int, ...] | list[int],
    *,
    bar: str | None = None,
    method: str = "exact",
    n_paths: int = 1000,
    random_state: int | np.random.Generator | None = None,
) -> pd.DataFrame:
    """True expectation of the integrated diffusive variance over the next bars, given the state.

    For each row of ``state`` (rows of ``SimResult.truth_state``: the hidden state at the close
    ``ts``) and each ``h`` of ``horizon_bars``: ``E[ sum of sigma^2 dt over (ts, ts + h x bar] |
    state ]``, the expectation of the sum of the ``iv_var`` of those bars. It includes the intraday
    season, the weekend factor, both OU log-vol factors and the calm/stress chain; it **excludes
    jumps**, as ``iv_var`` does (jumps are in ``jump_var``/``qv_var``).

    With ``method="exact"`` (default) the expectation is in closed form, summed over every
    diffusion step: given the factor values ``x0`` at the close, ``x_j`` is normal with mean
    ``phi^j x0`` and variance ``sd^2 (1 - phi^(2j))``, so ``E exp(2 f_j - 2 Var f) =
    exp(2 m_j + 2 v_j - 2 Var f)``; the regime is independent of the factors with
    ``P(stress at s) = pi + (s0 - pi) exp(-(a + b) s)``. ``method="mc"`` is a brute-force check: it
    simulates ``n_paths`` paths of the factors (the simulator's own recursion) and of the regime
    chain (exact per-step transitions) forward from each row and averages the path sums.

    Parameters
    ----------
    config : the configuration that produced the state.
    state : frame with ``ts``, ``symbol`` and :data:`STATE_COLUMNS`; ``ts`` on the ``base_step``
        grid, at or after the start.
    horizon_bars : one or several horizons (ints >= 1), in bars of length ``bar``.
    bar : bar length (a multiple of ``base_step``); None = ``config.truth_interval``.
    method : "exact" or "mc".
    n_paths : Monte Carlo paths per row (``method="mc"`` only; >= 1).
    random_state : seed or generator (``method="mc"`` only; required there).

    Returns
    -------
    DataFrame indexed like ``state``, one column per horizon (int): the expected total integrated
    variance over the window (log-return units squared; divide by ``h`` for a per-bar average).
    """
    owner = "conditional_iv"
    if not isinstance(config, SimConfig):
        raise _fail(owner, "config", "a SimConfig", type(config).__name__)
    if not isinstance(state, pd.DataFrame):
        raise _fail(owner, "state", "a DataFrame (rows of SimResult.truth_state)", type(state))
    missing = [c for c in (TS, SYMBOL, *STATE_COLUMNS) if c not in state.columns]
    if missing:
        raise _fail(owner, "state", f"a frame with columns {missing}", list(state.columns))
    hs = (horizon_bars,) if isinstance(horizon_bars, (int, np.integer)) else tuple(horizon_bars)
    if not hs or any(
        isinstance(h, bool) or not isinstance(h, (int, np.integer)) or h < 1 for h in hs
    ):
        raise _fail(owner, "horizon_bars", "an int >= 1 or a sequence of them", horizon_bars)
    hs = tuple(int(h) for h in hs)
    if method not in ("exact", "mc"):
        raise _fail(owner, "method", "one of 'exact', 'mc'", method)
    if isinstance(n_paths, bool) or not isinstance(n_paths, (int, np.integer)) or n_paths < 1:
        raise _fail(owner, "n_paths", "an int >= 1", n_paths)
    dt_ns = pd.Timedelta(config.base_step).value
    bar_td = _timedelta(owner, "bar", config.truth_interval if bar is None else bar)
    if bar_td.value % dt_ns:
        raise _fail(owner, "bar", f"a multiple of base_step={config.base_step}", bar)
    unknown = sorted(set(state[SYMBOL].astype(str)) - set(config.symbols))
    if unknown:
        raise _fail(owner, "state", f"rows of the symbols {list(config.symbols)}", unknown[0])
    ts_ns = pd.to_datetime(state[TS], utc=True).to_numpy(dtype="datetime64[ns]").view(np.int64)
    offset = ts_ns - config.start_ts.value
    bad = (offset < 0) | (offset % dt_ns != 0)
    if bad.any():
        raise _fail(
            owner,
            "state",
            f"rows whose ts is on the {config.base_step} grid at or after {config.start_ts}",
            state[TS].iloc[int(np.argmax(bad))],
        )
    rng = None
    if method == "mc":
        if random_state is None:
            raise _fail(owner, "random_state", "an int seed or a Generator with method='mc'", None)
        rng = _as_generator(random_state)

    dyn = _dynamics(config)
    spb = bar_td.value // dt_ns
    n_steps = max(hs) * spb
    read = np.asarray(hs) * spb - 1  # cumulative-sum index of each horizon
    k0 = offset // dt_ns  # global index of the first diffusion step after the close
    base = state[SYMBOL].astype(str).map(dyn.base_var_step).to_numpy(dtype=float)
    cols = {c: state[c].to_numpy(dtype=float) for c in STATE_COLUMNS}
    out = np.empty((len(state), len(hs)))
    if method == "exact":
        step = max(1, _CHUNK_CELLS // n_steps)
        for lo in range(0, len(state), step):
            sl = slice(lo, lo + step)
            out[sl] = _exact_iv(
                config, dyn, k0[sl], base[sl], {c: v[sl] for c, v in cols.items()}, n_steps
            )[:, read]
    else:
        assert rng is not None
        step = max(1, _CHUNK_CELLS // (n_steps * n_paths))
        for lo in range(0, len(state), step):
            sl = slice(lo, lo + step)
            out[sl] = _mc_iv(
                config,
                dyn,
                k0[sl],
                base[sl],
                {c: v[sl] for c, v in cols.items()},
                n_steps,
                n_paths,
                rng,
            )[:, read]
    return pd.DataFrame(out, index=state.index, columns=pd.Index(hs, name="horizon_bars"))


def _exact_iv(
    cfg: SimConfig,
    dyn: _Dynamics,
    k0: np.ndarray,
    base: np.ndarray,
    cols: dict[str, np.ndarray],
    n_steps: int,
) -> np.ndarray:
    """Closed-form expected cumulative IV over steps 1..n_steps after each close, (rows, n_steps)."""
    j = np.arange(1, n_steps + 1, dtype=float)
    g_fast = dyn.phi_fast**j
    g_slow = dyn.phi_slow**j
    a = dyn.w_common * cols[VOL_FAST_COMMON] + dyn.w_idio * cols[VOL_FAST_IDIO]
    b = dyn.w_common * cols[VOL_SLOW_COMMON] + dyn.w_idio * cols[VOL_SLOW_IDIO]
    shrink = 2.0 * (cfg.vol_fast_sd**2 * g_fast**2 + cfg.vol_slow_sd**2 * g_slow**2)
    log_factor = 2.0 * (a[:, None] * g_fast[None, :] + b[:, None] * g_slow[None, :]) - shrink
    p_stress = _stress_prob(dyn, cols[STRESSED], (j - 1.0) * dyn.dt)
    regime = 1.0 + (cfg.stress_var_mult - 1.0) * p_stress
    cal = _calendar(cfg, dyn, k0[:, None] + np.arange(n_steps)[None, :])
    return np.cumsum(base[:, None] * cal * regime * np.exp(log_factor), axis=1)


def _mc_iv(
    cfg: SimConfig,
    dyn: _Dynamics,
    k0: np.ndarray,
    base: np.ndarray,
    cols: dict[str, np.ndarray],
    n_steps: int,
    n_paths: int,
    rng: np.random.Generator,
) -> np.ndarray:
    """Monte Carlo mean of the cumulative IV over steps 1..n_steps after each close."""
    r = len(k0)

    def paths(name: str, phi: float, sd: float) -> np.ndarray:
        x = _ou(rng, n_steps, phi, sd, np.repeat(cols[name], n_paths))
        if sd == 0.0:  # _ou returns zeros; keep the (then constant zero) state
            x = np.broadcast_to(np.repeat(cols[name], n_paths)[None, :], x.shape)
        return x

    fc = paths(VOL_FAST_COMMON, dyn.phi_fast, cfg.vol_fast_sd)
    fi = paths(VOL_FAST_IDIO, dyn.phi_fast, cfg.vol_fast_sd)
    sc = paths(VOL_SLOW_COMMON, dyn.phi_slow, cfg.vol_slow_sd)
    si = paths(VOL_SLOW_IDIO, dyn.phi_slow, cfg.vol_slow_sd)
    f = dyn.w_common * (fc + sc) + dyn.w_idio * (fi + si)  # (n_steps, r * n_paths)
    factor_var = cfg.vol_fast_sd**2 + cfg.vol_slow_sd**2
    # regime chain observed at step starts: exact transition probabilities over one step
    a, b = dyn.to_stress_rate, dyn.to_calm_rate
    decay = 1.0 - math.exp(-(a + b) * dyn.dt)
    p_to_stress, p_to_calm = a / (a + b) * decay, b / (a + b) * decay
    s = np.repeat(cols[STRESSED] > 0.5, n_paths)
    u = rng.uniform(size=(max(n_steps - 1, 0), r * n_paths))
    stressed = np.empty((n_steps, r * n_paths), dtype=bool)
    stressed[0] = s
    for k in range(1, n_steps):
        s = np.where(s, u[k - 1] >= p_to_calm, u[k - 1] < p_to_stress)
        stressed[k] = s
    mult = np.where(stressed, cfg.stress_var_mult, 1.0)
    cal = _calendar(cfg, dyn, k0[:, None] + np.arange(n_steps)[None, :])  # (r, n_steps)
    var = np.exp(2.0 * f - 2.0 * factor_var) * mult  # (n_steps, r * n_paths)
    var = var.reshape(n_steps, r, n_paths).mean(axis=2).T  # (r, n_steps)
    return np.cumsum(base[:, None] * cal * var, axis=1)


# ---------------------------------------------------------------------------------------------
# derivatives: perpetual with funding, inverse futures, option chain
# ---------------------------------------------------------------------------------------------

_EXPIRY_HOUR = pd.Timedelta(hours=8)  # Deribit expiries settle at 08:00 UTC
_QUOTES = ("USDT", "USDC", "USD")


def coin_of(symbol: str) -> str:
    """The coin of a simulated spot symbol ("BTCUSDT" -> "BTC"; a symbol without a quote suffix
    is its own coin)."""
    for q in _QUOTES:
        if symbol.endswith(q) and len(symbol) > len(q):
            return symbol[: -len(q)]
    return symbol


def deribit_expiries(start: pd.Timestamp, end: pd.Timestamp, kind: str) -> pd.DatetimeIndex:
    """Deribit expiry times (08:00 UTC) in ``[start, end]``.

    ``kind`` is "weekly" (every Friday), "monthly" (the last Friday of each month) or
    "quarterly" (the last Friday of March, June, September and December).
    """
    if kind not in ("weekly", "monthly", "quarterly"):
        raise _fail("deribit_expiries", "kind", "one of 'weekly', 'monthly', 'quarterly'", kind)
    days = pd.date_range(start.normalize(), end.normalize(), freq="D")
    fridays = days[days.day_of_week == 4]
    if kind != "weekly":
        fridays = fridays[(fridays + pd.Timedelta(days=7)).month != fridays.month]
    if kind == "quarterly":
        fridays = fridays[fridays.month % 3 == 0]
    exp = (fridays + _EXPIRY_HOUR).as_unit("ns")
    return exp[(exp >= start) & (exp <= end)]


def _next_k(expiries_ns: np.ndarray, t_ns: np.ndarray, k: int, *, strict: bool) -> np.ndarray:
    """Boolean (len(t_ns), len(expiries_ns)): expiry j is among the next ``k`` at time t
    (``> t`` when strict, else ``>= t``)."""
    first = np.searchsorted(expiries_ns, t_ns, side="right" if strict else "left")
    rank = np.arange(len(expiries_ns))[None, :] - first[:, None]
    return (rank >= 0) & (rank < k)


def ssvi_total_var(
    k: np.ndarray, theta: np.ndarray, rho: np.ndarray, eta: float, gamma: float
) -> np.ndarray:
    """SSVI total implied variance ``w(k) = theta/2 (1 + rho phi k + sqrt((phi k + rho)^2 + 1 -
    rho^2))`` with ``phi = eta theta^-gamma (1 + theta)^(gamma - 1)`` (Gatheral and Jacquier 2014).

    ``k`` is the log-moneyness ``ln(K / F)``, ``theta`` the at-the-money total variance
    ``sigma_atm^2 tau`` (broadcast against ``k``); ``w(0) = theta``.
    """
    phi = eta * theta ** (-gamma) * (1.0 + theta) ** (gamma - 1.0)
    return 0.5 * theta * (1.0 + rho * phi * k + np.sqrt((phi * k + rho) ** 2 + 1.0 - rho * rho))


def black76_undiscounted(
    forward: np.ndarray, strike: np.ndarray, total_var: np.ndarray, is_call: np.ndarray
) -> np.ndarray:
    """Black-76 price without discounting (Deribit's convention, rate 0), in the forward's units.

    ``total_var`` is ``sigma^2 tau``; at zero total variance the price is the intrinsic value.
    """
    from scipy.special import ndtr

    f, kk = np.asarray(forward, float), np.asarray(strike, float)
    sd = np.sqrt(np.maximum(np.asarray(total_var, float), 0.0))
    with np.errstate(divide="ignore", invalid="ignore"):
        d1 = np.where(sd > 0, (np.log(f / kk) + 0.5 * sd * sd) / np.where(sd > 0, sd, 1.0), 0.0)
    d2 = d1 - sd
    call = np.where(sd > 0, f * ndtr(d1) - kk * ndtr(d2), np.maximum(f - kk, 0.0))
    put = call - (f - kk)  # put-call parity, undiscounted
    return np.where(is_call, call, np.maximum(put, 0.0))


def _expected_var(
    cfg: SimConfig,
    sym: np.ndarray,
    cols: dict[str, np.ndarray],
    tau_s: np.ndarray,
    *,
    jumps: bool,
    n_nodes: int = 400,
) -> np.ndarray:
    """E[integrated variance over (t, t + tau_s)] per row, without the intraday and weekday
    calendar (both average to 1 over whole days/weeks): trapezoid on a geometric grid."""
    dyn = _dynamics(cfg)
    base_var_s = np.array([a.vol_ann**2 / (_YEAR_DAYS * _DAY_S) for a in cfg.assets])[sym]
    u = np.concatenate([[0.0], np.geomspace(1e-7, 1.0, n_nodes)])
    s = tau_s[:, None] * u[None, :]
    g_f = 0.5 ** (s / (cfg.vol_fast_half_life_hours * 3600.0))
    g_s = 0.5 ** (s / (cfg.vol_slow_half_life_days * _DAY_S))
    a = dyn.w_common * cols[VOL_FAST_COMMON] + dyn.w_idio * cols[VOL_FAST_IDIO]
    b = dyn.w_common * cols[VOL_SLOW_COMMON] + dyn.w_idio * cols[VOL_SLOW_IDIO]
    log_factor = 2.0 * (a[:, None] * g_f + b[:, None] * g_s) - 2.0 * (
        cfg.vol_fast_sd**2 * g_f**2 + cfg.vol_slow_sd**2 * g_s**2
    )
    ra, rb = dyn.to_stress_rate, dyn.to_calm_rate
    pi = ra / (ra + rb)
    p = pi + (cols[STRESSED][:, None] - pi) * np.exp(-(ra + rb) * s)
    rate = base_var_s[:, None] * np.exp(log_factor) * (1.0 + (cfg.stress_var_mult - 1.0) * p)
    if jumps and cfg.jumps_per_day > 0:
        jump_var = (cfg.jump_sd_daily_vol_mult**2) * base_var_s * _DAY_S
        lam = cfg.jumps_per_day / _DAY_S * (1.0 + (cfg.stress_jump_mult - 1.0) * p)
        rate = rate + lam * jump_var[:, None]
    return np.trapezoid(rate, s, axis=1)


def expected_variance(
    config: SimConfig,
    state: pd.DataFrame,
    horizon_s: float | list[float] | tuple[float, ...],
    *,
    jumps: bool = True,
) -> pd.DataFrame:
    """Expected integrated variance over the next ``horizon_s`` seconds given the hidden state:
    the at-the-money total variance of the simulated option smiles (before ``iv_premium``).

    Like :func:`conditional_iv` (both factors' mean reversion and the calm/stress chain) but in
    continuous time over any horizon, without the intraday and weekday calendar (which averages
    to 1 over whole days and weeks) and, with ``jumps`` (default), plus the expected jump variance
    (intensity x squared jump size, regime-weighted), as an option prices it.

    Parameters
    ----------
    config : the configuration that produced the state.
    state : rows of ``SimResult.truth_state`` (``symbol`` and :data:`STATE_COLUMNS`).
    horizon_s : one or several horizons in seconds (> 0).
    jumps : add the expected jump variance.

    Returns
    -------
    DataFrame indexed like ``state``, one column per horizon: total variance (log-return units^2).
    """
    owner = "expected_variance"
    if not isinstance(config, SimConfig):
        raise _fail(owner, "config", "a SimConfig", type(config).__name__)
    missing = [c for c in (SYMBOL, *STATE_COLUMNS) if c not in state.columns]
    if missing:
        raise _fail(owner, "state", f"a frame with columns {missing}", list(state.columns))
    hs = [horizon_s] if isinstance(horizon_s, (int, float)) else list(horizon_s)
    if not hs or any(not math.isfinite(h) or h <= 0 for h in hs):
        raise _fail(owner, "horizon_s", "a positive number of seconds or a list of them", horizon_s)
    unknown = sorted(set(state[SYMBOL].astype(str)) - set(config.symbols))
    if unknown:
        raise _fail(owner, "state", f"rows of the symbols {list(config.symbols)}", unknown[0])
    sym = state[SYMBOL].astype(str).map({s: i for i, s in enumerate(config.symbols)}).to_numpy()
    cols = {c: state[c].to_numpy(dtype=float) for c in STATE_COLUMNS}
    out = np.column_stack(
        [_expected_var(config, sym, cols, np.full(len(state), float(h)), jumps=jumps) for h in hs]
    )
    return pd.DataFrame(out, index=state.index, columns=pd.Index(hs, name="horizon_s"))


def _nice_step(x: float) -> float:
    """The smallest 1, 2, 2.5, 5 x 10^n at or above ``x`` (> 0)."""
    e = 10.0 ** math.floor(math.log10(x))
    for m in (1.0, 2.0, 2.5, 5.0, 10.0):
        if m * e >= x * (1 - 1e-12):
            return m * e
    return 10.0 * e  # pragma: no cover - the loop always returns


def _strike_text(strike: float) -> str:
    return str(int(strike)) if float(strike).is_integer() else repr(float(strike)).replace(".", "d")


def _derivatives(
    cfg: SimConfig,
    rng: np.random.Generator,
    ohlc: np.ndarray,
    state_fast: np.ndarray,
    state_slow: np.ndarray,
    state_stress: np.ndarray,
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Funding, futures bars and option chain from the efficient log-price OHLC per derivatives
    bar (shape (n_bars, n_underlyings, 4)) and the hidden variance state per truth bar."""
    der = cfg.derivatives
    rng_prem, rng_basis, rng_quote = rng.spawn(3)
    start = cfg.start_ts
    start_ns = start.value
    bar_ns = pd.Timedelta(der.bar).value
    n_bars, nd, _ = ohlc.shape
    close_ns = start_ns + (np.arange(n_bars, dtype=np.int64) + 1) * bar_ns
    bar_s = bar_ns / _NS
    unds = der.underlyings
    coins = [coin_of(u) for u in unds]
    index_px = np.exp(ohlc[:, :, 3])

    # perpetual: mark = index x exp(premium), premium an OU; Binance-style funding per period
    sd_p = der.premium_sd_bps / 1e4
    phi_p = 0.5 ** (bar_s / (der.premium_half_life_hours * 3600.0))
    prem = der.premium_mean_bps / 1e4 + _ou(
        rng_prem, n_bars, phi_p, sd_p, rng_prem.standard_normal(nd) * sd_p
    )
    mark_px = index_px * np.exp(prem)
    bpi = round(pd.Timedelta(der.funding_interval).value / bar_ns)
    premium_index = np.expm1(prem)
    cum = np.cumsum(premium_index, axis=0)
    j = np.arange(n_bars)
    first = (j // bpi) * bpi
    before = np.where(first[:, None] > 0, cum[np.maximum(first - 1, 0)], 0.0)
    avg = (cum - before) / (j - first + 1)[:, None]
    rate = avg + np.clip(der.funding_interest - avg, -der.funding_clamp, der.funding_clamp)
    rate = np.clip(rate, -der.funding_cap, der.funding_cap)
    perp_symbols = tuple(f"{u}-PERP" for u in unds)
    ts, codes, order = _order([close_ns] * nd)
    funding = conform(
        pd.DataFrame(
            {
                TS: _ts_column(ts[order]),
                SYMBOL: _symbol_column(codes[order], perp_symbols),
                FUNDING_RATE: rate.T.ravel()[order],
                MARK_PX: mark_px.T.ravel()[order],
                INDEX_PX: index_px.T.ravel()[order],
            }
        ),
        "funding",
    )

    # inverse futures: F = S exp(basis x tau), basis an OU per underlying
    end = start + pd.Timedelta(days=cfg.n_days)
    far = end + pd.Timedelta(days=400)
    sd_b = der.basis_sd_ann
    phi_b = 0.5 ** (bar_s / (der.basis_half_life_days * _DAY_S))
    basis = der.basis_mean_ann + _ou(
        rng_basis, n_bars, phi_b, sd_b, rng_basis.standard_normal(nd) * sd_b
    )
    year_ns = _YEAR_DAYS * _DAY_S * _NS
    monthly = deribit_expiries(start, far, "monthly")
    quarterly = deribit_expiries(start, far, "quarterly")
    fut_exp = monthly.union(quarterly)
    live = np.zeros((n_bars, len(fut_exp)), dtype=bool)
    for sel, k in ((monthly, der.futures_monthly), (quarterly, der.futures_quarterly)):
        if k > 0:
            cols_ = fut_exp.get_indexer(sel)
            live[:, cols_] |= _next_k(sel.asi8, close_ns, k, strict=False)
    fut_parts: dict[str, list[np.ndarray]] = {c: [] for c in ("ts", "sym", *"ohlc")}
    fut_symbols: list[str] = []
    for i, coin in enumerate(coins):
        for jx, exp in enumerate(fut_exp):
            rows = np.flatnonzero(live[:, jx])
            if not len(rows):
                continue
            tau = (exp.value - close_ns[rows]) / year_ns
            px = np.exp(ohlc[rows, i, :] + (basis[rows, i] * tau)[:, None])
            fut_symbols.append(f"{coin}-{deribit_code(exp)}")
            fut_parts["ts"].append(close_ns[rows])
            fut_parts["sym"].append(np.full(len(rows), len(fut_symbols) - 1, np.int16))
            for c, col in zip("ohlc", range(4), strict=True):
                fut_parts[c].append(px[:, col])
    f_ts = np.concatenate(fut_parts["ts"])
    f_sym = np.concatenate(fut_parts["sym"])
    order = np.lexsort((f_sym, f_ts))
    futures = conform(
        pd.DataFrame(
            {
                TS: _ts_column(f_ts[order]),
                SYMBOL: _symbol_column(f_sym[order], tuple(fut_symbols)),
                **{
                    name: np.concatenate(fut_parts[c])[order]
                    for name, c in ((OPEN, "o"), (HIGH, "h"), (LOW, "l"), (CLOSE, "c"))
                },
            }
        ),
        "bars",
    )

    # option chain: SSVI smile whose ATM total variance is the expected variance to expiry
    every_ns = pd.Timedelta(der.options_every).value
    truth_ns = pd.Timedelta(cfg.truth_interval).value
    n_snap = cfg.n_days * _DAY_S * _NS // every_ns
    snap_ns = start_ns + (np.arange(n_snap, dtype=np.int64) + 1) * every_ns
    snap_bar = (snap_ns - start_ns) // bar_ns - 1
    snap_truth = (snap_ns - start_ns) // truth_ns - 1
    weekly = deribit_expiries(start, far, "weekly")
    opt_exp = weekly.union(monthly)
    live_o = np.zeros((n_snap, len(opt_exp)), dtype=bool)
    for sel, k in ((weekly, der.option_weekly), (monthly, der.option_monthly),
                   (quarterly, der.option_quarterly)):
        if k > 0:
            live_o[:, opt_exp.get_indexer(sel)] |= _next_k(sel.asi8, snap_ns, k, strict=True)
    si, ei = np.nonzero(live_o)  # (snapshot, expiry) pairs, in time order
    n_pairs = len(si)
    rep_s, rep_e = np.tile(si, nd), np.tile(ei, nd)
    und = np.repeat(np.arange(nd), n_pairs)
    sym_idx = np.array([cfg.symbols.index(u) for u in unds])[und]
    tb = snap_truth[rep_s]
    cols = {
        VOL_FAST_COMMON: state_fast[tb, 0],
        VOL_FAST_IDIO: state_fast[tb, 1 + sym_idx],
        VOL_SLOW_COMMON: state_slow[tb, 0],
        VOL_SLOW_IDIO: state_slow[tb, 1 + sym_idx],
        STRESSED: state_stress[tb].astype(float),
    }
    t_ns = snap_ns[rep_s]
    exp_ns = opt_exp.asi8[rep_e]
    tau_s = (exp_ns - t_ns) / _NS
    theta = der.iv_premium**2 * _expected_var(cfg, sym_idx, cols, tau_s, jumps=True)
    rho = np.where(cols[STRESSED] > 0.5, der.smile_rho_stress, der.smile_rho_calm)
    bi = snap_bar[rep_s]
    spot = index_px[bi, und]
    fwd = spot * np.exp(basis[bi, und] * tau_s * _NS / year_ns)
    parts: dict[str, list[Any]] = {c: [] for c in ("row", "strike")}
    n_k = der.strikes_per_expiry
    listed: dict[tuple[int, int], np.ndarray] = {}  # (underlying, expiry) -> strikes listed so far
    for r in range(len(theta)):  # rows in time order per underlying
        sd = math.sqrt(theta[r])
        lo = fwd[r] * math.exp(-der.strike_range_sd * sd)
        hi = fwd[r] * math.exp(der.strike_range_sd * sd)
        step = _nice_step((hi - lo) / (n_k - 1))
        ks = np.arange(math.ceil(lo / step), math.floor(hi / step) + 1) * step
        ks = np.round(ks[ks > 0], 10)
        # a listed strike stays listed until its expiry, as on Deribit
        key = (int(und[r]), int(rep_e[r]))
        ks = np.union1d(listed.get(key, ks[:0]), ks)
        listed[key] = ks
        parts["row"].append(np.full(len(ks), r))
        parts["strike"].append(ks)
    row = np.repeat(np.concatenate(parts["row"]), 2)
    strike = np.repeat(np.concatenate(parts["strike"]), 2)
    is_call = np.tile(np.array([True, False]), len(row) // 2)
    f_r, th_r, rho_r, tau_r = fwd[row], theta[row], rho[row], tau_s[row]
    kk = np.log(strike / f_r)
    w = ssvi_total_var(kk, th_r, rho_r, der.smile_eta, der.smile_gamma)
    tau_y = tau_r / (_YEAR_DAYS * _DAY_S)
    iv = np.sqrt(w / tau_y)
    mark = black76_undiscounted(f_r, strike, w, is_call) / f_r
    mid_iv = iv + rng_quote.standard_normal(len(row)) * der.option_quote_noise_vol
    half = der.option_half_spread_vol * (1.0 + 0.5 * np.abs(kk) / np.sqrt(th_r))
    tick = der.option_tick
    iv_bid = mid_iv - half
    bid = black76_undiscounted(f_r, strike, np.maximum(iv_bid, 0.0) ** 2 * tau_y, is_call) / f_r
    bid = np.round(np.floor(bid / tick + 1e-9) * tick, 10)
    bid = np.where((iv_bid > 0) & (bid >= tick), bid, np.nan)
    ask = black76_undiscounted(f_r, strike, (mid_iv + half) ** 2 * tau_y, is_call) / f_r
    ask = np.maximum(np.round(np.ceil(ask / tick - 1e-9) * tick, 10), tick)
    coin_r = np.array(coins)[und[row]]
    exp_r = exp_ns[row]
    names = [
        f"{c}-{deribit_code(pd.Timestamp(e, tz='UTC'))}-{_strike_text(k)}-{'C' if call else 'P'}"
        for c, e, k, call in zip(coin_r, exp_r, strike, is_call, strict=True)
    ]
    options = conform(
        pd.DataFrame(
            {
                TS: _ts_column(t_ns[row]),
                SYMBOL: pd.Series(names, dtype="str"),
                UNDERLYING: pd.Series(coin_r, dtype="str"),
                EXPIRY: _ts_column(exp_r),
                STRIKE: strike,
                OPTION_TYPE: pd.Series(np.where(is_call, "C", "P"), dtype="str"),
                BID_PX: bid,
                ASK_PX: ask,
                MARK_PX: mark,
                MARK_IV: iv,
                UNDERLYING_PX: f_r,
            }
        ),
        "options",
    )
    options = options.sort_values([TS, SYMBOL], kind="stable").reset_index(drop=True)
    return funding, futures, options
