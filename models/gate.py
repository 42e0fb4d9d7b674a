"""The promotion gate: pure rules on plain inputs (no MLflow; :func:`models.registry.promote` loads
the packages and calls :func:`evaluate_gate`).

Gate checks (defaults, :class:`GateConfig`)
-------------------------------------------
All scores are recomputed by :func:`models.evaluation.walk_forward` on the **same** origins for the
challenger's and the champion's primary members and the baseline ladder (each re-estimated on the
data available at every origin), pooled over symbols, QLIKE averaged over the gate horizons:

- ``qlike_vs_champion``: QLIKE(challenger) / QLIKE(champion) <= ``max_qlike_ratio`` (1.00);
- ``beats_best_baseline``: QLIKE(challenger) / min over baselines <= ``max_ratio_to_best_baseline``;
- ``interval_calibration``: when the challenger has quantiles, the share of realized variances at
  or below each quantile is within ``calibration_tolerance`` of its level (skipped otherwise);
- ``forecast_change``: the stand-in for the margin-change check (margin does not exist yet): the
  median absolute relative change of the 1-period volatility forecast, champion -> challenger, on
  the latest ``change_lookback`` origins of the data (the served models, parameters fixed) is
  <= ``max_median_vol_change`` (25 %). A margin check registers with :func:`register_gate_check`.

The first version ever promoted has no champion to compare with: the champion checks are skipped
(recorded as such) and the baseline checks still apply.
"""

from __future__ import annotations

import getpass
import json
import re
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, field_validator
from sklearn.base import clone

from features.errors import ConfigError
from features.schema import TS
from models import catalog
from models.base import BaseForecaster, jsonable
from models.evaluation import POOLED, EvaluationResult, walk_forward
from models.package import ForecasterPackage, canonical_input, class_path
from models.promotion_log import CHAMPION, MODEL_NAME, ModelRef
from models.run_record import TAG_MAX, data_fingerprint
from models.schedule import WalkForward

GATE_BASELINES = ("random_walk", "ewma", "har", "log_har")
"""The catalog names the gate may compare a challenger with (built by :func:`models.catalog.build`
for the gate horizons)."""


def check_horizons(v: tuple[int, ...]) -> tuple[int, ...]:
    """Gate horizons: distinct ints >= 1, sorted (a ValueError naming them otherwise)."""
    if not v or any(h < 1 for h in v) or len(set(v)) != len(v):
        raise ValueError(f"horizons must be distinct ints >= 1; got {list(v)}")
    return tuple(sorted(v))


class GateConfig(BaseModel):
    """Settings of the promotion gate (see the module docs for the checks).

    ``window``/``window_type``/``refit_every`` None = each model's own setting; a model that keeps
    its own schedule (``own_schedule``: GARCH, LightGBM, their combinations) is always scored on
    it, as in the training evaluation.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    checks: tuple[str, ...] = (
        "qlike_vs_champion",
        "beats_best_baseline",
        "interval_calibration",
        "forecast_change",
    )
    horizons: tuple[int, ...] = (1, 5)
    n_origins: int = Field(250, ge=10, description="last origins scored (with known targets)")
    window: int | None = Field(None, ge=10)
    window_type: Literal["rolling", "expanding"] | None = None
    refit_every: int | None = Field(None, ge=1)
    min_obs: float | None = Field(250, ge=0)
    baselines: tuple[str, ...] = ("random_walk", "ewma", "har")
    max_qlike_ratio: float = Field(1.0, gt=0)
    max_ratio_to_best_baseline: float = Field(1.0, gt=0)
    calibration_tolerance: float = Field(0.05, gt=0, lt=0.5)
    max_median_vol_change: float = Field(0.25, gt=0)
    change_lookback: int = Field(1, ge=1, description="latest origins per symbol compared")
    mcs_reps: int = Field(200, ge=10)
    random_state: int = 0

    @field_validator("horizons")
    @classmethod
    def _horizons(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        return check_horizons(v)

    @field_validator("baselines")
    @classmethod
    def _baselines(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [b for b in v if b not in GATE_BASELINES]
        if unknown:
            raise ValueError(f"unknown baseline(s) {unknown}; known: {sorted(GATE_BASELINES)}")
        return v


@dataclass(frozen=True)
class CheckResult:
    """One gate check: ``passed`` is None when the check did not apply (skipped, with why)."""

    name: str
    passed: bool | None
    value: float | None
    threshold: float | None
    detail: str

    def as_tag(self) -> str:
        """ "pass|fail|skip value=... threshold=...: detail"."""
        word = {True: "pass", False: "fail", None: "skip"}[self.passed]
        v = "" if self.value is None else f" value={self.value:.6g}"
        t = "" if self.threshold is None else f" threshold={self.threshold:.6g}"
        return f"{word}{v}{t}: {self.detail}"


@dataclass(frozen=True)
class GateContext:
    """What a gate check sees.

    Attributes
    ----------
    config : the gate settings.
    evaluation : the walk-forward of "challenger", "champion" (when there is one) and the baselines
        on the same origins.
    qlike : model -> pooled QLIKE averaged over the gate horizons.
    challenger, champion : the bundles (champion None on the first promotion).
    latest : "challenger"/"champion" -> the primary member's forecasts on the latest data.
    baselines : names of the baseline models in ``evaluation``.
    """

    config: GateConfig
    evaluation: EvaluationResult
    qlike: Mapping[str, float]
    challenger: ForecasterPackage
    champion: ForecasterPackage | None
    latest: Mapping[str, pd.DataFrame]
    baselines: tuple[str, ...]


GateCheck = Callable[[GateContext], CheckResult]
_CHECKS: dict[str, GateCheck] = {}


def register_gate_check(name: str, check: GateCheck) -> None:
    """Make ``check`` available to :class:`GateConfig`'s ``checks`` under ``name`` (e.g. a margin
    change on reference portfolios, once margin exists)."""
    if not re.fullmatch(r"[a-z0-9_]+", name):
        raise ValueError(f"gate check name must match [a-z0-9_]+; got {name!r}")
    _CHECKS[name] = check


def gate_checks() -> list[str]:
    """Names of the registered gate checks."""
    return sorted(_CHECKS)


def _check_qlike_vs_champion(ctx: GateContext) -> CheckResult:
    thr = ctx.config.max_qlike_ratio
    if ctx.champion is None or "champion" not in ctx.qlike:
        return CheckResult("qlike_vs_champion", None, None, thr, "no champion (first promotion)")
    ratio = ctx.qlike["challenger"] / ctx.qlike["champion"]
    ok = ratio <= thr
    return CheckResult(
        "qlike_vs_champion",
        ok,
        ratio,
        thr,
        f"QLIKE challenger {ctx.qlike['challenger']:.6g} / champion "
        f"{ctx.qlike['champion']:.6g} = {ratio:.4f} ({'<=' if ok else '>'} {thr:g})",
    )


def _check_beats_best_baseline(ctx: GateContext) -> CheckResult:
    thr = ctx.config.max_ratio_to_best_baseline
    scored = {b: ctx.qlike[b] for b in ctx.baselines if b in ctx.qlike}
    if not scored:
        return CheckResult(
            "beats_best_baseline",
            False,
            None,
            thr,
            f"no baseline of {list(ctx.baselines)} could be scored",
        )
    best = min(scored, key=scored.get)
    ratio = ctx.qlike["challenger"] / scored[best]
    ok = ratio <= thr
    return CheckResult(
        "beats_best_baseline",
        ok,
        ratio,
        thr,
        f"QLIKE challenger / best baseline {best} ({scored[best]:.6g}) = "
        f"{ratio:.4f} ({'<=' if ok else '>'} {thr:g})",
    )


def _check_interval_calibration(ctx: GateContext) -> CheckResult:
    tol = ctx.config.calibration_tolerance
    fc = ctx.evaluation.forecasts
    fc = fc[(fc["model_id"] == "challenger") & fc["evaluated"]]
    qcols = [c for c in fc.columns if c.startswith("q_") and fc[c].notna().any()]
    if not qcols:
        return CheckResult(
            "interval_calibration", None, None, tol, "the challenger has no quantiles"
        )
    worst, parts = 0.0, []
    for c in qcols:
        level = float(c[2:])
        sub = fc[fc[c].notna()]
        hit = float((sub["realized_var"] <= sub[c]).mean())
        worst = max(worst, abs(hit - level))
        parts.append(f"{c}: {hit:.3f}")
    ok = worst <= tol
    return CheckResult(
        "interval_calibration",
        ok,
        worst,
        tol,
        f"largest |hit rate - level| {worst:.4f} ({', '.join(parts)})",
    )


def _check_forecast_change(ctx: GateContext) -> CheckResult:
    thr = ctx.config.max_median_vol_change
    if ctx.champion is None or "champion" not in ctx.latest:
        return CheckResult("forecast_change", None, None, thr, "no champion (first promotion)")
    keys = ["symbol", "origin_ts"]
    a, b = ctx.latest["challenger"], ctx.latest["champion"]
    h = min(set(a["horizon"]) & set(b["horizon"]))
    m = a[a["horizon"] == h][[*keys, "forecast_var"]].merge(
        b[b["horizon"] == h][[*keys, "forecast_var"]], on=keys, suffixes=("_ch", "_cp")
    )
    if m.empty:
        return CheckResult(
            "forecast_change",
            False,
            None,
            thr,
            "challenger and champion share no symbol/origin on the latest data",
        )
    change = np.abs(np.sqrt(m["forecast_var_ch"] / m["forecast_var_cp"]) - 1.0)
    med = float(np.median(change))
    ok = med <= thr
    return CheckResult(
        "forecast_change",
        ok,
        med,
        thr,
        f"median |vol_challenger / vol_champion - 1| of the h={h} forecast on "
        f"{len(m)} latest symbol-origins = {med:.4f} ({'<=' if ok else '>'} {thr:g}); "
        "stand-in for the margin-change check",
    )


for _name, _fn in (
    ("qlike_vs_champion", _check_qlike_vs_champion),
    ("beats_best_baseline", _check_beats_best_baseline),
    ("interval_calibration", _check_interval_calibration),
    ("forecast_change", _check_forecast_change),
):
    register_gate_check(_name, _fn)


@dataclass(frozen=True)
class GateDecision:
    """The gate's outcome: ``passed`` unless some check failed (skipped checks do not fail)."""

    passed: bool
    checks: tuple[CheckResult, ...]
    config: GateConfig
    n_origins: int
    origins_start: str
    origins_end: str
    qlike: Mapping[str, float]
    challenger_version: str
    champion_version: str | None
    data_fingerprint: str
    loss: str = "qlike"
    """What ``qlike`` holds: "qlike" (volatility) or "stein" (correlation: mean Stein loss)."""
    extra: Mapping[str, float] = field(default_factory=dict)
    """Figures reported with the decision that no check gates (correlation: GMV variance and
    Mahalanobis ratios)."""

    @property
    def reason(self) -> str:
        """The failing checks' details ("" when it passed)."""
        return "; ".join(f"{c.name}: {c.detail}" for c in self.checks if c.passed is False)

    def summary(self) -> dict[str, Any]:
        """A JSON-able summary (logged in the promotion log)."""
        return {
            "status": "passed" if self.passed else "rejected",
            "checks": {
                c.name: {"passed": c.passed, "value": c.value, "threshold": c.threshold}
                for c in self.checks
            },
            "n_origins": self.n_origins,
            "origins": [self.origins_start, self.origins_end],
            "qlike": {k: float(v) for k, v in self.qlike.items()},
            "loss": self.loss,
            **({"extra": {k: float(v) for k, v in self.extra.items()}} if self.extra else {}),
            "challenger_version": self.challenger_version,
            "champion_version": self.champion_version,
            "data_fingerprint": self.data_fingerprint,
        }


def config_key(v: Any) -> Any:
    """A JSON-able identity of a configuration value; estimators nested in it (a combination's
    members) as their class and parameters."""
    if hasattr(v, "get_params") and not isinstance(v, type):
        return [class_path(v), config_key(v.get_params(deep=False))]
    if isinstance(v, Mapping):
        return {str(k): config_key(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [config_key(x) for x in v]
    return jsonable(v)


def evaluate_gate(
    challenger: ForecasterPackage,
    champion: ForecasterPackage | None,
    data: pd.DataFrame,
    config: GateConfig | None = None,
    *,
    challenger_version: str = "",
    champion_version: str | None = None,
) -> GateDecision:
    """Run the gate's checks (no MLflow involved; :func:`models.registry.promote` calls it).

    Parameters
    ----------
    challenger, champion : bundles; their primary members are re-estimated by a walk-forward on the
        same origins (the last ``n_origins`` of ``data`` with known targets) with the baselines.
    data : canonical realized frame (full history).
    config : gate settings (default :class:`GateConfig`).
    """
    cfg = config or GateConfig()
    unknown = [c for c in cfg.checks if c not in _CHECKS]
    if unknown:
        raise ValueError(f"unknown gate check(s) {unknown}; registered: {gate_checks()}")
    hs = cfg.horizons
    wanted: dict[str, BaseForecaster] = {
        "challenger": clone(challenger.members[challenger.primary])
    }
    if champion is not None:
        wanted["champion"] = clone(champion.members[champion.primary])
    for b in cfg.baselines:
        wanted[b] = catalog.build(b, hs)
    # identical configurations (a re-fit of the champion's spec, a challenger equal to a baseline)
    # give identical walk-forward forecasts: evaluate each once and share its scores
    models: dict[str, BaseForecaster] = {}
    same_as: dict[str, str] = {}
    seen: dict[str, str] = {}
    schedule = WalkForward(cfg.window, cfg.window_type, cfg.refit_every)
    # a model that keeps its own schedule (GARCH, LightGBM, their combinations) is scored on it
    own = {n: WalkForward() for n, m in wanted.items() if type(m).own_schedule}
    for name, m in wanted.items():
        # the horizons and min_obs walk_forward imposes, and the schedule it runs each model on,
        # so that the key below is the effective configuration
        names = m.get_params(deep=False)
        m.set_params(**{k: v for k, v in (("horizons", hs), ("min_obs", cfg.min_obs)) if k in names})
        effective = {**m.get_params(deep=False),
                     **{k: v for k, v in own.get(name, schedule).over(WalkForward.of(m))
                        .as_dict().items() if k in names}}
        key = json.dumps([class_path(m), config_key(effective)], sort_keys=True)
        if key in seen:
            same_as[name] = seen[key]
        else:
            seen[key] = name
            models[name] = m
    X = canonical_input(data)
    ts = np.sort(X[TS].unique())
    if len(ts) <= max(hs) + 1:
        raise ConfigError(f"data has {len(ts)} distinct ts; the gate needs more than {max(hs) + 1}")
    start = pd.Timestamp(ts[max(0, len(ts) - cfg.n_origins - max(hs))])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # skipped models are reported in .skipped
        ev = walk_forward(
            models,
            X,
            horizons=hs,
            start=start,
            schedule=schedule,
            schedules={n: own[n] for n in own if n in models},
            min_obs=cfg.min_obs,
            baselines=[b for b in cfg.baselines if b in models] or None,
            mcs_reps=cfg.mcs_reps,
            random_state=cfg.random_state,
        )
    if "challenger" in ev.skipped:
        raise ConfigError(f"the challenger could not be evaluated: {ev.skipped['challenger']}")
    loss = ev.losses[
        (ev.losses["symbol"] == POOLED)
        & (ev.losses["regime"] == "all")
        & (ev.losses["target"] == "realized")
    ]
    qlike = loss.groupby("model_id")["qlike"].mean().to_dict()
    for name, rep in same_as.items():
        if rep in qlike:
            qlike[name] = qlike[rep]
    latest = {"challenger": _latest(challenger, X, cfg.change_lookback)}
    if champion is not None:
        latest["champion"] = _latest(champion, X, cfg.change_lookback)
    ctx = GateContext(
        cfg, ev, qlike, challenger, champion, latest, tuple(b for b in cfg.baselines if b in qlike)
    )
    results = tuple(_CHECKS[name](ctx) for name in cfg.checks)
    evaluated = ev.forecasts[ev.forecasts["evaluated"]]
    return GateDecision(
        passed=all(r.passed is not False for r in results),
        checks=results,
        config=cfg,
        n_origins=int(evaluated["origin_ts"].nunique()),
        origins_start=str(evaluated["origin_ts"].min()),
        origins_end=str(evaluated["origin_ts"].max()),
        qlike=qlike,
        challenger_version=challenger_version,
        champion_version=champion_version,
        data_fingerprint=data_fingerprint(data),
    )


def _latest(package: ForecasterPackage, X: pd.DataFrame, lookback: int) -> pd.DataFrame:
    table = package.predict(X, origins="all", members=[package.primary])
    last = table.groupby("symbol")["origin_ts"].transform(
        lambda s: s >= np.sort(s.unique())[-min(lookback, s.nunique())]
    )
    return table[last].reset_index(drop=True)


def gate_tags(
    decision: GateDecision | None, *, mode: str, who: str, status: str, reason: str
) -> dict[str, str]:
    """The ``gate.*`` tags of a decided version: status, mode, who, when and why, and with a
    decision its config, champion, origins, data fingerprint, QLIKE and every check."""
    tags = {
        "gate.status": status,
        "gate.mode": mode,
        "gate.decided_by": who,
        "gate.decided_at": pd.Timestamp.now(tz="UTC").isoformat(),
        "gate.reason": reason[:TAG_MAX],
    }
    if decision is not None:
        tags.update(
            {
                "gate.config": json.dumps(decision.config.model_dump(mode="json"))[:TAG_MAX],
                "gate.champion_version": decision.champion_version or "none",
                "gate.n_origins": str(decision.n_origins),
                "gate.origins": f"{decision.origins_start}..{decision.origins_end}",
                "gate.data_fingerprint": decision.data_fingerprint,
                f"gate.{decision.loss}": json.dumps(
                    {k: round(float(v), 10) for k, v in decision.qlike.items()}
                ),
                **({"gate.extra": json.dumps({k: round(float(v), 6)
                                              for k, v in decision.extra.items()})[:TAG_MAX]}
                   if decision.extra else {}),
            }
        )
        for c in decision.checks:
            tags[f"gate.check.{c.name}"] = c.as_tag()[:TAG_MAX]
    return tags


@dataclass(frozen=True)
class PromotionOutcome:
    """What a promotion request comes to: whether ``champion`` moves, the ``gate.status`` tag
    ("passed", "override", "not_run" or "rejected"), the reason recorded and who decided."""

    promoted: bool
    status: str
    reason: str
    who: str


def check_promotion_request(
    mode: str, approver: str | None, reason: str, *, has_data: bool
) -> None:
    """Refuse a malformed request (:class:`~features.errors.ConfigError`): ``mode`` "auto" or
    "manual"; "manual" needs a named approver and a reason; "auto" needs data for the gate."""
    if mode not in ("auto", "manual"):
        raise ConfigError(f"mode must be 'auto' or 'manual'; got {mode!r}")
    if mode == "manual" and not (approver and approver.strip()):
        raise ConfigError(f"manual promotion needs a named approver; got approver={approver!r}")
    if mode == "manual" and not reason.strip():
        raise ConfigError("manual promotion needs a reason; got an empty reason")
    if mode == "auto" and not has_data:
        raise ConfigError("auto promotion runs the gate and needs data=<canonical realized frame>")


def check_rollback_request(approver: str | None, reason: str) -> None:
    """Refuse a rollback without a named approver or a reason (:class:`ConfigError`)."""
    if not (approver and approver.strip()):
        raise ConfigError(f"rollback needs a named approver; got approver={approver!r}")
    if not reason.strip():
        raise ConfigError("rollback needs a reason; got an empty reason")


def promotion_outcome(
    decision: GateDecision | None, *, mode: str, approver: str | None, reason: str
) -> PromotionOutcome:
    """ "auto": promoted when the gate ran and passed; "manual": always promoted (an override when
    the gate did not pass or did not run). The reason is the caller's, else the gate's."""
    who = approver.strip() if approver else f"gate (run by {getpass.getuser()})"
    passed = decision is not None and decision.passed
    promoted = passed if mode == "auto" else True
    if promoted:
        status = "passed" if passed else ("override" if decision is not None else "not_run")
        why = reason or (decision.reason if decision is not None else "")
    else:
        status = "rejected"
        why = decision.reason if decision is not None else reason
    return PromotionOutcome(promoted, status, why, who)


@dataclass(frozen=True)
class PromotionResult:
    """What :func:`promote` or :func:`rollback` did.

    Attributes
    ----------
    promoted : whether ``champion`` now points at ``version``.
    version : the version considered.
    previous_champion : the champion before (None if there was none).
    decision : the gate's decision (None when the gate did not run).
    log_entry : the line appended to the promotion log.
    """

    promoted: bool
    version: str
    previous_champion: str | None
    decision: GateDecision | None
    log_entry: Mapping[str, Any]

    @property
    def ref(self) -> ModelRef | None:
        """The new champion's reference (None when not promoted)."""
        if not self.promoted:
            return None
        name = str(self.log_entry.get("name", MODEL_NAME))
        return ModelRef(
            name,
            self.version,
            CHAMPION,
            self.log_entry.get("run_id"),
            f"models:/{name}/{self.version}",
        )
