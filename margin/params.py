"""Margin parameters: one pydantic model, every field defaulted and documented, loadable from TOML.

:class:`MarginParams` is everything :func:`margin.calculator.compute_margin` needs besides the
portfolio, the market state and the risk-forecast bundle. Its :attr:`MarginParams.params_hash`
(SHA-256 of the canonical JSON of every field) is recorded with each margin number.

TOML: a file with the fields at the top level or under a ``[margin]`` table, e.g.::

    [margin]
    measure = "es"
    es_confidence = 0.975
    mc_n_scenarios = 2000
    [margin.mpor_days]
    future = 3
"""

from __future__ import annotations

import hashlib
import json
import tomllib
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from features.errors import ConfigError

__all__ = ["DEFAULT_MPOR_DAYS", "MarginParams", "load_params"]

DEFAULT_MPOR_DAYS: dict[str, int] = {"spot": 1, "perpetual": 1, "option": 1, "future": 2}
"""Margin period of risk per product kind, in days (crypto 1 day; dated futures 2 days)."""


class DeribitParams(BaseModel):
    """Deribit-style portfolio margin parameters: the values of Deribit's public API response to
    ``private/pme/simulate`` for BTC/USD (``price_range`` 0.16, ``volatility_range_up`` 0.5,
    ``volatility_range_down`` 0.25, ``short_term_vega_power`` 0.3, ``long_term_vega_power``
    0.13, ``min_volatility_for_shock_up`` 0.5, ``extended_table_factor`` 1, ``max_delta_shock``
    0.1, ``delta_total_liq_shock_threshold`` 20 M, ``mm_factor`` 0.8) and its help page (9 price
    points, the extended moves). The extended dampener's value is the API's USD one (25,000);
    how Deribit applies it is not public (our formula: ``D ln(1 + L / D)``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    price_range: float = Field(0.16, gt=0.0, lt=1.0)
    price_points: int = Field(9, ge=3)
    volatility_range_up: float = Field(0.5, ge=0.0)
    volatility_range_down: float = Field(0.25, ge=0.0)
    short_term_vega_power: float = Field(0.30, ge=0.0)
    long_term_vega_power: float = Field(0.13, ge=0.0)
    min_volatility_for_shock_up: float = Field(0.5, ge=0.0)
    extended_table_factor: float = Field(1.0, ge=0.0)
    extended_dampener: float = Field(25_000.0, gt=0.0)
    max_delta_shock: float = Field(0.1, ge=0.0)
    delta_total_liq_shock_threshold: float = Field(20_000_000.0, ge=0.0)
    mm_factor: float = Field(0.8, gt=0.0, le=1.0)


class SpanParams(BaseModel):
    """SPAN-style method parameters (an exchange sets these per product; these defaults are
    stand-ins, documented in the README)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    price_scan: dict[str, float] = Field(default_factory=dict, description=(
        "Price scan range per underlying as a simple return (empty: the historical stand-in)."))
    scan_quantile: float = Field(0.99, gt=0.5, lt=1.0, description=(
        "Stand-in scan range: this quantile of |MPOR log returns| over the lookback."))
    vol_scan: float = Field(0.05, ge=0.0, description="Vol scan range (absolute vol).")
    extreme_multiple: float = Field(2.0, gt=1.0, description=(
        "Extreme scenarios 15/16 move this multiple of the scan range (3 is also in use)."))
    extreme_cover: float = Field(0.35, gt=0.0, le=1.0, description=(
        "Share of the extreme scenarios' loss counted."))
    intra_spread_rate: float = Field(0.01, ge=0.0, description=(
        "Intra-commodity spread charge per unit of underlying spread across expiries, as a "
        "fraction of its price."))
    inter_credits: dict[str, float] = Field(
        default_factory=lambda: {"BTC/ETH": 0.5, "NASDAQ/SP500": 0.6}, description=(
            "Inter-commodity credit rate ('A/B' -> rate) on the smaller scanning risk of two "
            "underlyings whose deltas offset."))
    short_option_minimum: float = Field(0.005, ge=0.0, description=(
        "Short-option minimum per net short option, as a fraction of the underlying's price per "
        "unit."))
    im_over_mm: float = Field(1.1, ge=1.0, description=(
        "IM / MM (CME's speculative initial is 110% of maintenance)."))


class MarginParams(BaseModel):
    """Parameters of the margin engine (see ``margin/calculator.py`` for how each is used)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # ---- risk measure -------------------------------------------------------------------------
    es_confidence: float = Field(0.975, gt=0.5, lt=1.0, description=(
        "Expected-shortfall confidence: ES is the mean loss of the ceil(n (1 - c)) worst "
        "scenarios."))
    var_confidence: float = Field(0.99, gt=0.5, lt=1.0, description=(
        "Value-at-risk confidence: VaR is the ceil(n c)-th smallest loss."))
    measure: Literal["es", "var"] = Field("es", description=(
        "The measure the requirement uses (both are reported); every comparison uses one."))
    scenario_sources: tuple[Literal["fhs", "mc"], ...] = Field(("fhs", "mc"), description=(
        "Which forecast-scaled scenario sets are pooled (equal weight per scenario) for the "
        "market-risk measure: filtered historical simulation, parametric Monte Carlo."))

    # ---- margin period of risk ----------------------------------------------------------------
    mpor_days: dict[str, int] = Field(default_factory=lambda: dict(DEFAULT_MPOR_DAYS),
                                      description=(
        "MPOR in days per product kind (spot, perpetual, option, future). A portfolio's "
        "scenarios use the longest MPOR of the kinds it holds."))

    # ---- filtered historical simulation -------------------------------------------------------
    fhs_lookback_days: int = Field(1500, ge=10, description=(
        "Residual history used: the last N daily dates (at or before as_of) on which every "
        "scenario underlying has a residual."))
    fhs_min_obs: int = Field(50, ge=1, description=(
        "Fewer common residual dates than this: FHS is skipped (recorded in explain)."))
    fhs_multi_day: Literal["overlapping", "compound"] = Field("overlapping", description=(
        "How an h-day scenario is built from daily residual vectors z_t: 'overlapping' = the "
        "sum of h consecutive vectors (one scenario per end date, overlapping windows); "
        "'compound' = the sum of h vectors drawn with replacement (seeded, fhs_n_compound "
        "scenarios). Either sum is divided by sqrt(h) (unit variance) and multiplied by the "
        "forecast h-day volatility."))
    fhs_n_compound: int = Field(1000, ge=1, description="Scenarios drawn by 'compound'.")
    fhs_recorrelate: bool = Field(False, description=(
        "Re-correlate the FHS residual vectors to the forecast correlation (z -> z A^-1 B with A, B "
        "the Cholesky factors of the sample and the forecast correlation). It keeps each "
        "residual's rank-1 shape but mixes tails across assets: sample correlation becomes the "
        "forecast exactly, tail dependence moves toward that of the linear mix."))

    # ---- parametric Monte Carlo ---------------------------------------------------------------
    mc_n_scenarios: int = Field(1000, ge=10, description="Monte Carlo scenarios per matrix.")
    mc_seed: int = Field(20_240_601, ge=0, description="Seed of every random draw.")
    mc_dof_source: Literal["bundle", "normal", "fixed"] = Field("bundle", description=(
        "Marginals and dependence of the Monte Carlo: 'bundle' = each symbol's innovation "
        "distribution (normal, t, skew-t; unit variance) with a t-copula of the bundle's "
        "copula_df (Gaussian copula if None); 'normal' = Gaussian marginals and copula; "
        "'fixed' = unit-variance t marginals and t-copula, both with mc_dof."))
    mc_dof: float = Field(5.0, gt=2.0, description="Degrees of freedom for 'fixed'.")

    # ---- stress grid --------------------------------------------------------------------------
    grid_k_sigma: float = Field(3.0, gt=0.0, description=(
        "Grid price moves span +/- k sigma sqrt(h) (sigma sqrt(h) = forecast h-day vol)."))
    grid_n_moves: int = Field(7, ge=3, description="Price points across the range (odd: has 0).")
    grid_min_range: float = Field(0.03, ge=0.0, description=(
        "Floor of the grid's range as a log return: it spans at least +/- this."))
    grid_floor_share: float = Field(0.75, ge=0.0, le=1.0, description=(
        "Margin >= this share of the worst grid loss."))
    iv_shock_level: float = Field(0.99, gt=0.5, lt=1.0, description=(
        "Grid IV shocks: up = the vol-of-vol quantile at this level of d log IV over the MPOR, "
        "down = the one at 1 - level (nearest stored level/horizon), times the tenor factor "
        "(reference_tenor / max(DTE, min_tenor))^p."))
    iv_shock_fallback_log: tuple[float, float] = Field((-0.25, 0.35), description=(
        "(down, up) d log IV at the reference tenor when the bundle has no vol-of-vol for the "
        "underlying."))
    iv_fallback_tenor_days: float = Field(30.0, gt=0.0, description=(
        "Reference tenor of the fallback shocks (exponent 0.5, minimum tenor 7 days)."))

    # ---- implied-vol dynamics, basis, funding --------------------------------------------------
    iv_dynamics: Literal["sticky_moneyness", "sticky_strike"] = Field(
        "sticky_moneyness", description=(
            "Implied vol in a scenario with log return x: 'sticky_moneyness' = the smile moves "
            "with the forward (second-order Taylor of the smile in log-moneyness at the "
            "strike), 'sticky_strike' = the strike's vol stays; both times exp(beta x), beta = "
            "the bundle's spot-vol beta."))
    spot_vol_beta_fallback: float = Field(0.0, description=(
        "Spot-vol beta where the bundle has none for the underlying."))
    iv_floor: float = Field(0.01, gt=0.0, description="Lowest implied vol in any scenario.")
    basis_shock_sd_ann: float = Field(0.01, ge=0.0, description=(
        "Std dev of the change of a future's annualized log basis per sqrt(day) (an independent "
        "normal factor per underlying, seeded)."))
    funding_shock_sd_per_day: float = Field(0.0005, ge=0.0, description=(
        "Std dev of the perpetual funding paid over one day beyond its current carry, as a "
        "fraction of notional per sqrt(day)."))

    # ---- stress blend, correlation stress ------------------------------------------------------
    blend_x: float = Field(0.75, ge=0.0, le=1.0, description=(
        "Blend x * forecast measure + (1 - x) * stressed-period measure. The stressed measure "
        "reuses the standardized scenarios scaled by each symbol's stressed vol = max(forecast "
        "vol, the stress_vol_quantile of its issued vols over the residual history)."))
    stress_vol_quantile: float = Field(0.99, gt=0.0, lt=1.0, description=(
        "Quantile of issued vols that defines the stressed-period vol."))
    correlation_break_alpha: float = Field(0.3, ge=0.0, le=1.0, description=(
        "Correlation-break cap M >= M_div + alpha (sum of standalone per-underlying margins - "
        "M_div)."))

    # ---- add-ons (each a separate component; on the net exposure, not the gross) ---------------
    addons: bool = Field(True, description=(
        "Charge the liquidity, concentration and short-option-minimum add-ons."))
    default_half_spread: float = Field(0.0005, gt=0.0, lt=0.5, description=(
        "Relative half spread used where the market state has no liquidity for an underlying "
        "(5 bp: a liquid crypto pair's order of magnitude); recorded in explain. Without "
        "liquidity data there is no impact and no concentration term."))
    impact_y: float = Field(1.0, ge=0.0, description=(
        "Coefficient Y of the square-root impact law, cost = Y sigma_1d sqrt(Q / ADV) per unit "
        "of notional Q: of order 1 across markets (Toth et al. 2011, Phys. Rev. X 1, 021006; "
        "Bouchaud et al. 2018, Trades, Quotes and Prices, ch. 12) and in Bitcoin (Donier and "
        "Bonart 2015, Market Microstructure and Liquidity 1, 1550008)."))
    impact_threshold_adv: float = Field(0.01, ge=0.0, description=(
        "Net exposure above this share of ADV pays market impact on top of the half spread."))
    vega_half_spread_vol: float = Field(0.005, ge=0.0, description=(
        "Close-out cost of net vega per expiry: this absolute implied-vol half spread (0.005 = "
        "half a vol point) times |net vega per unit of vol|."))
    concentration_threshold: float = Field(0.05, gt=0.0, description=(
        "Concentration add-on: zero while |net exposure| / capacity <= this share."))
    concentration_k: float = Field(1.0, ge=0.0, description=(
        "Concentration add-on = k x max(0, share / threshold - 1)^power x the underlying's "
        "standalone market-risk measure."))
    concentration_power: float = Field(2.0, ge=1.0, description=(
        "Exponent of the concentration add-on (>= 1: convex in size)."))
    capacity_adv_days: float = Field(5.0, gt=0.0, description=(
        "Market capacity where the market state has no open interest: this many days of ADV."))
    short_option_min_fraction: float = Field(0.1, ge=0.0, description=(
        "Short-option minimum: each net short option contract needs at least this fraction of "
        "the outright margin of its underlying quantity (the larger of the long and short "
        "1-unit measures over the forecast scenarios), as SPAN's and Deribit's floors do; the "
        "component tops the risk-based margin up to that floor."))

    # ---- the methods risk teams compare against (margin.methods) -------------------------------
    fixed_tiers: tuple[tuple[float, float, float], ...] = Field(
        ((50_000.0, 0.008, 0.004), (600_000.0, 0.01, 0.005), (3_000_000.0, 0.0133, 0.0065),
         (12_000_000.0, 0.02, 0.01), (70_000_000.0, 0.04, 0.02), (100_000_000.0, 0.05, 0.025),
         (230_000_000.0, 0.1, 0.05), (480_000_000.0, 0.2, 0.1), (600_000_000.0, 0.25, 0.125),
         (800_000_000.0, 0.3333, 0.15), (1_200_000_000.0, 0.5, 0.25),
         (1_800_000_000.0, 1.0, 0.5)), description=(
            "'fixed' method: leverage brackets (notional cap in USD, IM rate, MM rate), caps "
            "increasing, in the shape of a crypto venue's published USD-M perpetual brackets "
            "(maintenance rates 0.4% to 50%; IM = 2 x MM in the first bracket): configure your "
            "venue's own."))
    fixed_short_option: tuple[float, float, float] = Field((0.15, 0.10, 0.075), description=(
        "'fixed' method, short options (a, b, c): IM = max(a - OTM / S, b) x S + mark, MM = c x "
        "S + mark per unit of underlying, the shape of a crypto options venue's standard "
        "(non-portfolio) margin."))
    span: SpanParams = Field(default_factory=lambda: SpanParams(), description=(
        "'span' method: SPAN-style parameters."))
    deribit: DeribitParams = Field(default_factory=lambda: DeribitParams(), description=(
        "'deribit' method: Deribit-style portfolio margin parameters."))
    stress_hypothetical: tuple[tuple[str, dict[str, float]], ...] = Field(
        (("crypto crash -40%, ETH/SOL -50%", {"BTC": -0.40, "ETH": -0.50, "SOL": -0.50}),
         ("crypto squeeze +50%", {"BTC": 0.50, "ETH": 0.60, "SOL": 0.60}),
         ("BTC up 20%, ETH down 20% (decoupling)", {"BTC": 0.20, "ETH": -0.20}),
         ("equity crash -20%", {"SP500": -0.20, "NASDAQ": -0.25}),
         ("equity rally +10%", {"SP500": 0.10, "NASDAQ": 0.12})), description=(
            "Stress-loss report: hypothetical joint moves (name, underlying -> simple return), "
            "implied vol up; a scenario applies to the books holding any of its underlyings."))
    ewma_lambda: float = Field(0.94, gt=0.0, lt=1.0, description=(
        "'fhs_ewma' method: EWMA decay of the filtering volatility (0.94 RiskMetrics daily; 0.97 "
        "is also in use)."))

    # ---- maintenance margin -------------------------------------------------------------------
    mm_rule: Literal["ratio", "confidence"] = Field("ratio", description=(
        "'ratio': MM = IM / im_over_mm (OKX style IM = 1.3 MM); 'confidence': MM = the same "
        "chain at mm_confidence."))
    im_over_mm: float = Field(1.3, ge=1.0, description="IM / MM for 'ratio'.")
    mm_confidence: float = Field(0.95, gt=0.5, lt=1.0, description=(
        "The measure's confidence for 'confidence' (ES or VaR per 'measure')."))

    @model_validator(mode="after")
    def _check(self) -> MarginParams:
        unknown = sorted(set(self.mpor_days) - set(DEFAULT_MPOR_DAYS))
        if unknown:
            raise ValueError(f"mpor_days keys must be among {sorted(DEFAULT_MPOR_DAYS)}; got "
                             f"{unknown}")
        bad = {k: v for k, v in self.mpor_days.items() if v < 1}
        if bad:
            raise ValueError(f"mpor_days must be >= 1 day; got {bad}")
        if not self.scenario_sources:
            raise ValueError("scenario_sources must name at least one of 'fhs', 'mc'")
        lo, hi = self.iv_shock_fallback_log
        caps = [t[0] for t in self.fixed_tiers]
        if not caps or caps != sorted(caps) or len(set(caps)) != len(caps) or any(
                not (0 < t[2] <= t[1]) for t in self.fixed_tiers):
            raise ValueError("fixed_tiers must be (cap, im_rate, mm_rate) with increasing caps "
                             f"and 0 < mm_rate <= im_rate; got {self.fixed_tiers}")
        if not lo <= 0 <= hi:
            raise ValueError(f"iv_shock_fallback_log must be (down <= 0, up >= 0); got "
                             f"{self.iv_shock_fallback_log}")
        return self

    def mpor(self, kind: str) -> int:
        """MPOR in days of one product kind ("spot", "perpetual", "option", "future")."""
        return int({**DEFAULT_MPOR_DAYS, **self.mpor_days}[kind])

    def confidence(self) -> float:
        """The confidence of the measure the requirement uses."""
        return self.es_confidence if self.measure == "es" else self.var_confidence

    @property
    def params_hash(self) -> str:
        """SHA-256 of the canonical JSON of every field (sorted keys, defaults included)."""
        doc = json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(doc.encode()).hexdigest()


def load_params(text: str) -> MarginParams:
    """MarginParams from TOML text (the caller reads the file: margin does no I/O).

    The fields sit at the top level or under ``[margin]``. Raises ``ConfigError`` naming the
    problem (TOML syntax, unknown or invalid field).
    """
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"cannot parse margin parameters (TOML): {exc}") from None
    doc = doc.get("margin", doc)
    try:
        return MarginParams.model_validate(doc)
    except ValueError as exc:
        raise ConfigError(f"invalid margin parameters: {exc}") from None
