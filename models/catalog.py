"""The model catalog: every forecaster by one name and one factory, used everywhere a model is named.

``dprm evaluate --models``, a flow's :class:`~pipelines.flow_config.ModelSpec` ``kind``, the
monitor's baselines, the promotion gate's baselines and the benchmarks resolve names here, so a
model added once is available everywhere. Each :class:`CatalogEntry` declares

- ``name`` (canonical, lower-case) and ``aliases`` (older names kept so stored configurations,
  registered models and tests keep working: ``loghar`` -> ``log_har``, ``rw`` -> ``random_walk``);
- ``factory(horizons=None, **overrides) -> estimator``: the model with the catalog's defaults,
  ``overrides`` replacing constructor parameters (``horizons=None`` keeps the class default);
- ``target``: ``"volatility"`` (a :class:`~models.base.BaseForecaster`) or ``"correlation"`` (a
  :class:`~models.corr.BaseCorrForecaster`);
- ``inputs`` (:class:`ModelInputs`): the feature-frame columns it needs, whether it needs close
  prices, context columns, intraday bars, or several symbols;
- a one-line ``description``.

:func:`missing_inputs` turns an entry and what a dataset has into one skip reason (or None), the
same string wherever a model is skipped for lack of inputs. An unknown name is a
:class:`~features.errors.ConfigError` listing the catalog (exit code 2 at the command line).

Model classes are imported inside the factories, so importing the catalog is cheap.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from features.errors import ConfigError
from features.schema import BV, CLOSE, N_OBS, RQ, RS_NEG, RS_POS, RV, TRADE_COUNT

Target = Literal["volatility", "correlation"]

__all__ = [
    "ALIASES",
    "CATALOG",
    "CatalogEntry",
    "ModelInputs",
    "build",
    "canonical_name",
    "catalog_records",
    "missing_inputs",
    "names",
    "resolve",
]


@dataclass(frozen=True)
class ModelInputs:
    """What a model needs from a dataset.

    Attributes
    ----------
    columns : feature-frame columns besides ``ts`` and ``symbol`` (e.g. ``rv_var``, ``bv_var``).
    close : needs close prices (returns), e.g. GARCH and the correlation models.
    context : context columns (exogenous regressors or booster features) that must be present.
    intraday : needs sub-daily bars (a diurnal profile).
    min_symbols : symbols needed at once (2 for a correlation model).
    """

    columns: tuple[str, ...] = (RV,)
    close: bool = False
    context: tuple[str, ...] = ()
    intraday: bool = False
    min_symbols: int = 1

    def describe(self) -> str:
        """A short text of the inputs, e.g. ``"rv_var, bv_var; close; intraday"``."""
        parts = [", ".join(self.columns)] if self.columns else []
        if self.close:
            parts.append("close")
        if self.context:
            parts.append("context " + ", ".join(self.context))
        if self.intraday:
            parts.append("intraday")
        if self.min_symbols > 1:
            parts.append(f">= {self.min_symbols} symbols")
        return "; ".join(parts)


@dataclass(frozen=True)
class CatalogEntry:
    """One named model: its factory, target, declared inputs and description (see module doc).

    ``own_schedule`` marks models that keep their own estimation window and refit cadence in a
    walk-forward evaluation (GARCH, the learned models and their combinations).
    """

    name: str
    factory: Callable[..., Any]
    target: Target
    inputs: ModelInputs
    description: str
    aliases: tuple[str, ...] = ()
    own_schedule: bool = False
    horizon_free: bool = False
    tags: tuple[str, ...] = ()

    def build(self, horizons: Sequence[int] | None = None, **overrides: Any) -> Any:
        """An unfitted model: the factory's defaults with ``overrides`` (constructor parameters);
        ``horizons=None`` keeps the model's default horizons. Unknown parameters are a
        :class:`~features.errors.ConfigError` naming the model."""
        hs = None if horizons is None else tuple(int(h) for h in horizons)
        try:
            return self.factory(hs, **overrides)
        except TypeError as exc:
            raise ConfigError(f"model {self.name!r}: {exc}") from None


# ---- factories ------------------------------------------------------------------------------------
def _with_horizons(cls: type, horizons: tuple[int, ...] | None, defaults: Mapping[str, Any],
                   overrides: Mapping[str, Any]) -> Any:
    params = {**defaults, **overrides}
    if horizons is not None:
        params["horizons"] = horizons
    return cls(**params)


def _class(module: str, name: str, horizon_free: bool = False, **defaults: Any) -> Callable[..., Any]:
    """A factory of ``module.name`` with ``defaults``; horizon-free models ignore ``horizons``."""

    def factory(horizons: tuple[int, ...] | None = None, **overrides: Any) -> Any:
        import importlib
        import inspect

        cls = getattr(importlib.import_module(module), name)
        if horizon_free or "horizons" not in inspect.signature(cls).parameters:
            return cls(**{**defaults, **overrides})
        return _with_horizons(cls, horizons, defaults, overrides)

    factory.__doc__ = f"{module}.{name}({defaults or ''}) with overrides."
    return factory


def _har_boost(horizons: tuple[int, ...] | None = None, *, base: Any = None, **overrides: Any) -> Any:
    """LightGBM on the log-HAR-DoW residual; the base is an expanding log-HAR-DoW (500 rows)."""
    from models.combine import HARBoostVol
    from models.har import LogHARDoWVol

    hs = horizons or (1, 5)
    if base is None:
        base = LogHARDoWVol(window=500, window_type="expanding", horizons=hs,
                            **({"min_obs": overrides["min_obs"]} if "min_obs" in overrides else {}))
    return HARBoostVol(base=base, horizons=hs, **overrides)


def _qlike_combo(
    horizons: tuple[int, ...] | None = None,
    *,
    window: int = 1000,
    window_type: str = "rolling",
    refit_every: int = 1,
    min_obs: float | None = 250,
    random_state: int | None = 0,
    lookback: int = 250,
    power: float = 8.0,
    learned_refit_every: int = 21,
    **overrides: Any,
) -> Any:
    """QLIKE-weighted combination of log-HAR-DoW (``window``, ``window_type``, ``refit_every``) and
    two LightGBMs (direct, and with the weekly log-HAR offset; expanding, retrained every
    ``learned_refit_every`` periods); the daily crypto champion's specification."""
    from models.combine import QLIKEWeightedVol
    from models.har import LogHARDoWVol
    from models.lgbm import LGBMVol

    hs = horizons or (1, 5)
    return QLIKEWeightedVol(
        members=[
            ("log_har_dow", LogHARDoWVol(window=window, window_type=window_type,
                                         refit_every=refit_every, min_obs=min_obs, horizons=hs)),
            ("lgbm", LGBMVol(horizons=hs, min_obs=min_obs, random_state=random_state,
                             refit_every=learned_refit_every)),
            ("lgbm_offw", LGBMVol(horizons=hs, offset_feature="lrv_w", min_obs=min_obs,
                                  random_state=random_state, refit_every=learned_refit_every)),
        ],
        horizons=hs, lookback=lookback, power=power, min_obs=min_obs, **overrides)


def _diurnal_boost(horizons: tuple[int, ...] | None = None, *, base: Any = None, **overrides: Any) -> Any:
    """LightGBM on the diurnal log-HAR's residual (its base a log diurnal HAR)."""
    from models.diurnal import DiurnalHARVol
    from models.diurnal_x import DiurnalBoostVol

    hs = horizons or (1,)
    if base is None:
        base = DiurnalHARVol(horizons=hs, log=True, profile_stat="log")
    return DiurnalBoostVol(base=base, horizons=hs, **overrides)


def _corr(name: str, **defaults: Any) -> Callable[..., Any]:
    """A correlation model factory (correlation models take horizons at predict time)."""
    return _class("models.corr", name, horizon_free=True, **defaults)


HAR_INPUTS = ModelInputs((RV,))
_V = "volatility"
_C = "correlation"

_ENTRIES: tuple[CatalogEntry, ...] = (
    # ---- the ladder -------------------------------------------------------------------------------
    CatalogEntry("random_walk", _class("models.ewma", "RandomWalkVol", horizon_free=True), _V,
                 HAR_INPUTS, "last period's realized variance, flat over horizons",
                 aliases=("rw", "persistence"), horizon_free=True, tags=("ladder", "baseline")),
    CatalogEntry("ewma", _class("models.ewma", "EWMAVol", horizon_free=True), _V, HAR_INPUTS,
                 "RiskMetrics EWMA of realized variance (lambda 0.94)",
                 aliases=("ewma_0.94",), horizon_free=True, tags=("ladder", "baseline")),
    CatalogEntry("har", _class("models.har", "HARVol"), _V, HAR_INPUTS,
                 "HAR (Corsi 2009): daily, weekly, monthly realized variance", tags=("ladder",)),
    CatalogEntry("log_har", _class("models.har", "LogHARVol"), _V, HAR_INPUTS,
                 "HAR on log realized variance, bias-corrected", aliases=("loghar",),
                 tags=("ladder",)),
    CatalogEntry("har_j", _class("models.har", "HARJVol"), _V, ModelInputs((RV, BV)),
                 "HAR with a jump component (RV - BV)", aliases=("harj",), tags=("ladder",)),
    CatalogEntry("har_cj", _class("models.har", "HARCJVol"), _V, ModelInputs((RV, BV, RQ, N_OBS)),
                 "HAR with separate continuous and jump components", aliases=("harcj",),
                 tags=("ladder",)),
    CatalogEntry("shar", _class("models.har", "SHARVol"), _V, ModelInputs((RV, RS_POS, RS_NEG)),
                 "semivariance HAR (Patton-Sheppard 2015)", tags=("ladder",)),
    CatalogEntry("harq", _class("models.har", "HARQVol"), _V, ModelInputs((RV, RQ)),
                 "HARQ: daily slope scaled by realized quarticity", tags=("ladder",)),
    CatalogEntry("log_har_dow", _class("models.har", "LogHARDoWVol"), _V, HAR_INPUTS,
                 "log-HAR with day-of-week dummies", aliases=("loghar_dow",), tags=("ladder",)),
    CatalogEntry("harq_dow", _class("models.har", "HARQDoWVol"), _V, ModelInputs((RV, RQ)),
                 "HARQ with day-of-week dummies", tags=("ladder",)),
    CatalogEntry("log_har_dow_x", _class("models.har", "LogHARDoWXVol", exog=("rec4_x",)), _V,
                 ModelInputs((RV,), context=("rec4_x",)),
                 "log-HAR-DoW with exogenous context regressors (HAR-X)", tags=("context",)),
    # ---- GARCH through arch -----------------------------------------------------------------------
    CatalogEntry("garch_1_1", _class("models.garch", "GarchVol", vol="GARCH", dist="normal"), _V,
                 ModelInputs((), close=True), "GARCH(1,1), normal innovations (arch)",
                 aliases=("garch",), own_schedule=True, tags=("garch",)),
    CatalogEntry("gjr_t", _class("models.garch", "GarchVol", vol="GJR", o=1, dist="t"), _V,
                 ModelInputs((), close=True), "GJR-GARCH(1,1,1), Student-t innovations (arch)",
                 own_schedule=True, tags=("garch",)),
    CatalogEntry("egarch_t", _class("models.garch", "GarchVol", vol="EGARCH", o=1, dist="t"), _V,
                 ModelInputs((), close=True), "EGARCH(1,1,1), Student-t innovations (arch)",
                 own_schedule=True, tags=("garch",)),
    # ---- learned models and combinations ----------------------------------------------------------
    CatalogEntry("lgbm", _class("models.lgbm", "LGBMVol"), _V, HAR_INPUTS,
                 "LightGBM on log realized variance, expanding, retrained every 21 periods",
                 own_schedule=True, tags=("learned",)),
    CatalogEntry("har_boost", _har_boost, _V, HAR_INPUTS,
                 "LightGBM on the residual of an expanding log-HAR-DoW",
                 own_schedule=True, tags=("learned",)),
    CatalogEntry("qlike_combo", _qlike_combo, _V, HAR_INPUTS,
                 "QLIKE-weighted combination of log-HAR-DoW and two LightGBMs",
                 own_schedule=True, tags=("learned", "combination")),
    # ---- intraday: diurnal and filtered -----------------------------------------------------------
    CatalogEntry("diurnal_har", _class("models.diurnal", "DiurnalHARVol"), _V,
                 ModelInputs((RV,), intraday=True),
                 "HAR on deseasonalized intraday variance times the diurnal profile",
                 tags=("intraday",)),
    CatalogEntry("diurnal_har_x", _class("models.diurnal_x", "DiurnalHARXVol"), _V,
                 ModelInputs((RV,), intraday=True),
                 "diurnal HAR with exogenous regressors (none by default)", tags=("intraday",)),
    CatalogEntry("diurnal_boost", _diurnal_boost, _V, ModelInputs((RV,), intraday=True),
                 "LightGBM on the residual of a log diurnal HAR", own_schedule=True,
                 tags=("intraday", "learned")),
    CatalogEntry("filtered_logvol", _class("models.filtered", "FilteredLogVol"), _V,
                 ModelInputs((RV,), intraday=True),
                 "filtered log variance: EWMA components with a Fourier diurnal shape",
                 tags=("intraday",)),
    CatalogEntry("filtered_activity",
                 _class("models.filtered", "FilteredLogVol", activity_col=TRADE_COUNT), _V,
                 ModelInputs((RV, TRADE_COUNT), intraday=True),
                 "filtered log variance with trade activity as a regressor", tags=("intraday",)),
    # ---- correlation (models/corr.py) -------------------------------------------------------------
    CatalogEntry("ewma_corr", _corr("EWMACorr", lam=0.94), _C, ModelInputs((), close=True, min_symbols=2),
                 "RiskMetrics EWMA correlation (lambda 0.94)", horizon_free=True),
    CatalogEntry("rolling_corr", _corr("RollingCorr", window=250), _C,
                 ModelInputs((), close=True, min_symbols=2),
                 "sample correlation of the last 250 returns", horizon_free=True),
    CatalogEntry("lw_identity", _corr("ShrinkageCorr", window=250, target="identity"), _C,
                 ModelInputs((), close=True, min_symbols=2),
                 "Ledoit-Wolf shrinkage toward the identity", horizon_free=True),
    CatalogEntry("lw_constant", _corr("ShrinkageCorr", window=250, target="constant_correlation"), _C,
                 ModelInputs((), close=True, min_symbols=2),
                 "Ledoit-Wolf shrinkage toward constant correlation", horizon_free=True),
    CatalogEntry("dcc", _corr("DCCCorr"), _C, ModelInputs((), close=True, min_symbols=2),
                 "DCC-GARCH(1,1) (Engle 2002)", horizon_free=True),
    CatalogEntry("adcc", _corr("DCCCorr", asymmetric=True), _C,
                 ModelInputs((), close=True, min_symbols=2),
                 "asymmetric DCC (Cappiello-Engle-Sheppard 2006)", horizon_free=True),
    CatalogEntry("har_corr_scalar", _corr("RealizedCorrHAR", pooling="scalar"), _C,
                 ModelInputs((), close=True, intraday=True, min_symbols=2),
                 "HAR on Fisher-z realized correlations, pooled slopes", horizon_free=True),
    CatalogEntry("har_corr_pair", _corr("RealizedCorrHAR", pooling="pair"), _C,
                 ModelInputs((), close=True, intraday=True, min_symbols=2),
                 "HAR on Fisher-z realized correlations, one regression per pair",
                 horizon_free=True),
    CatalogEntry("lgbm_corr", _class("models.corr_lgbm", "LGBMCorr", num_threads=1), _C,
                 ModelInputs((), close=True, min_symbols=2),
                 "LightGBM on Fisher-z pair correlations, pooled, Higham-repaired",
                 horizon_free=True),
)

CATALOG: dict[str, CatalogEntry] = {e.name: e for e in _ENTRIES}
"""Canonical name -> entry."""

ALIASES: dict[str, str] = {a: e.name for e in _ENTRIES for a in e.aliases}
"""Older or alternative name -> canonical name."""

assert not set(ALIASES) & set(CATALOG), "an alias must not shadow a canonical name"


def names(target: Target | None = None) -> list[str]:
    """Canonical names (of one ``target``, or all), in catalog order."""
    return [n for n, e in CATALOG.items() if target is None or e.target == target]


def canonical_name(name: str) -> str:
    """The canonical name of ``name`` (itself or an alias); ConfigError listing the catalog."""
    key = str(name).strip()
    if key in CATALOG:
        return key
    if key in ALIASES:
        return ALIASES[key]
    listing = ", ".join(CATALOG)
    alias = ", ".join(f"{a}={c}" for a, c in ALIASES.items())
    raise ConfigError(f"unknown model {name!r}; the catalog has: {listing} (aliases: {alias})")


def resolve(name: str, target: Target | None = None) -> CatalogEntry:
    """The entry of ``name`` (canonical or alias); a :class:`ConfigError` listing the catalog for an
    unknown name, or when the model's target is not ``target``."""
    entry = CATALOG[canonical_name(name)]
    if target is not None and entry.target != target:
        raise ConfigError(f"model {name!r} forecasts {entry.target}, not {target}; the {target} "
                          f"models are: {', '.join(names(target))}")
    return entry


def build(name: str, horizons: Sequence[int] | None = None, **overrides: Any) -> Any:
    """An unfitted model by catalog name: ``resolve(name).build(horizons, **overrides)``."""
    return resolve(name).build(horizons, **overrides)


def missing_inputs(
    entry: CatalogEntry | str,
    available: Iterable[str] | Any,
    *,
    has_close: bool | None = None,
    intraday: bool | None = None,
    n_symbols: int | None = None,
) -> str | None:
    """Why ``entry`` cannot run on a dataset, or None when it can: the one skip reason used wherever
    a model is left out for lack of inputs.

    Parameters
    ----------
    entry : a catalog entry or name.
    available : the dataset's columns (an iterable of names, or a DataFrame whose columns count).
    has_close : whether usable close prices exist (None: the ``close`` column is present).
    intraday : whether the bars are sub-daily (None: not checked).
    n_symbols : symbols available at once (None: not checked).
    """
    e = resolve(entry) if isinstance(entry, str) else entry
    cols = set(getattr(available, "columns", available))
    missing = [c for c in (*e.inputs.columns, *e.inputs.context) if c not in cols]
    close = (CLOSE in cols) if has_close is None else has_close
    if e.inputs.close and not close:
        missing.append(CLOSE)
    reasons = []
    if missing:
        reasons.append(f"needs column(s) {missing}")
    if e.inputs.intraday and intraday is False:
        reasons.append("needs intraday (sub-daily) bars")
    if n_symbols is not None and n_symbols < e.inputs.min_symbols:
        reasons.append(f"needs at least {e.inputs.min_symbols} symbols; has {n_symbols}")
    if not reasons:
        return None
    return f"model {e.name!r} " + " and ".join(reasons) + f" (inputs: {e.inputs.describe()})"


def catalog_records() -> list[dict[str, Any]]:
    """One JSON-ready record per entry: name, aliases, target, inputs, description."""
    return [
        {
            "name": e.name,
            "aliases": list(e.aliases),
            "target": e.target,
            "inputs": e.inputs.describe(),
            "columns": list(e.inputs.columns),
            "close": e.inputs.close,
            "context": list(e.inputs.context),
            "intraday": e.inputs.intraday,
            "min_symbols": e.inputs.min_symbols,
            "own_schedule": e.own_schedule,
            "description": e.description,
        }
        for e in CATALOG.values()
    ]

