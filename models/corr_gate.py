"""The promotion gate of the correlation champion (pure: no MLflow; the registry calls it).

The challenger's model, the champion's model and the two baselines (EWMA and the rolling sample
correlation, :mod:`models.catalog`) are re-estimated by :func:`models.corr_evaluation.walk_forward_corr`
on the same origins (the last ``n_origins`` of the data with known targets), every one with the
same common volatility forecast so that only the correlation differs. The checks, on the mean
Stein loss over the gate horizons:

- ``stein_vs_champion``: challenger <= ``max_stein_ratio`` x champion (skipped on the first
  promotion). Where the targets are singular (outer products of fewer returns than symbols) the
  Stein column holds the loss up to a model-free constant (:mod:`models.corr_evaluation`), so the
  comparison is the difference ``challenger - champion <= (ratio - 1) |champion|``, which is the
  ratio test whenever the loss is positive;
- ``beats_ewma`` and ``beats_rolling``: challenger strictly below each baseline.

The decision reports (without gating on them) the challenger's GMV variance and Mahalanobis ratio
relative to EWMA, and its share of PSD-repaired matrices.
"""

from __future__ import annotations

import warnings
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, field_validator
from sklearn.base import clone

from models import catalog
from models.corr_evaluation import CorrEvaluationResult, walk_forward_corr
from models.corr_package import CorrelationPackage
from models.gate import CheckResult, GateDecision, check_horizons
from models.run_record import data_fingerprint

__all__ = ["CorrGateConfig", "evaluate_corr_gate"]

CORR_BASELINES = ("ewma_corr", "rolling_corr")


class CorrGateConfig(BaseModel):
    """Settings of the correlation gate."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    horizons: tuple[int, ...] = (1, 5)
    n_origins: int = Field(250, ge=10, description="last origins scored (with known targets)")
    window: int = Field(250, ge=20, description="estimation window of every model (periods)")
    window_type: Literal["rolling", "expanding"] = Field(
        "expanding", description="as the cycle's correlation training (at least ``window``)")
    refit_every: int = Field(20, ge=1)
    max_stein_ratio: float = Field(1.0, gt=0)
    vol_lam: float = Field(0.94, gt=0, lt=1)
    mcs_reps: int = Field(100, ge=10)
    random_state: int = 0

    @field_validator("horizons")
    @classmethod
    def _horizons(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        return check_horizons(v)


def _mean_over_horizons(summary: pd.DataFrame, col: str) -> dict[str, float]:
    return summary.groupby("model_id")[col].mean().to_dict()


def _stein_check(stein: dict[str, float], thr: float) -> CheckResult:
    if "champion" not in stein:
        return CheckResult("stein_vs_champion", None, None, thr, "no champion (first promotion)")
    ch, cp = stein["challenger"], stein["champion"]
    ok = ch - cp <= (thr - 1.0) * abs(cp)
    ratio = ch / cp if cp > 0 and ch > 0 else None
    shown = f"ratio {ratio:.4f}" if ratio is not None else f"difference {ch - cp:+.6g}"
    return CheckResult(
        "stein_vs_champion", bool(ok), ratio if ratio is not None else ch - cp, thr,
        f"Stein challenger {ch:.6g} vs champion {cp:.6g}: {shown} "
        f"({'within' if ok else 'beyond'} {thr:g})",
    )


def _below(stein: dict[str, float], base: str, label: str) -> CheckResult:
    name = f"beats_{label}"
    if base not in stein:
        return CheckResult(name, False, None, None, f"the baseline {base} could not be scored")
    ch, b = stein["challenger"], stein[base]
    ok = ch < b
    return CheckResult(name, bool(ok), ch - b, 0.0,
                       f"Stein challenger {ch:.6g} {'<' if ok else '>='} {base} {b:.6g}")


def gate_evaluation(
    challenger: CorrelationPackage,
    champion: CorrelationPackage | None,
    data: pd.DataFrame,
    cfg: CorrGateConfig,
) -> CorrEvaluationResult:
    """The walk-forward of challenger, champion and baselines on the gate's origins."""
    models: dict[str, Any] = {"challenger": clone(challenger.model)}
    if champion is not None:
        models["champion"] = clone(champion.model)
    models["ewma_corr"] = catalog.build("ewma_corr")
    models["rolling_corr"] = catalog.build("rolling_corr", window=cfg.window)
    # the estimation window holds at least every model's own window (a 250-period shrinkage)
    window = max([cfg.window, *(int(getattr(m, "window", 0) or 0) for m in models.values())])
    panel = challenger.panel(data)
    need = window + max(cfg.horizons) + 2
    if len(panel) <= need:
        raise ValueError(f"the correlation gate needs more than {need} periods; the data have {len(panel)}")
    start = panel.ts[max(window, len(panel) - cfg.n_origins - max(cfg.horizons))]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # skipped models are in .skipped
        return walk_forward_corr(
            models, panel, horizons=cfg.horizons, window=window, window_type=cfg.window_type,
            refit_every=cfg.refit_every,
            start=start, vol_lam=cfg.vol_lam, benchmark="ewma_corr", mcs_reps=cfg.mcs_reps,
            random_state=cfg.random_state,
        )


def evaluate_corr_gate(
    challenger: CorrelationPackage,
    champion: CorrelationPackage | None,
    data: pd.DataFrame,
    config: CorrGateConfig | None = None,
    *,
    challenger_version: str = "",
    champion_version: str | None = None,
) -> GateDecision:
    """Run the correlation gate's checks on ``data`` (a long price frame: ts, symbol, close)."""
    cfg = config if isinstance(config, CorrGateConfig) else CorrGateConfig()
    ev = gate_evaluation(challenger, champion, data, cfg)
    if "challenger" in ev.skipped:
        raise ValueError(f"the challenger could not be evaluated: {ev.skipped['challenger']}")
    summ = ev.summary()
    stein = _mean_over_horizons(summ, "stein_qlike")
    checks = (
        _stein_check(stein, cfg.max_stein_ratio),
        _below(stein, "ewma_corr", "ewma"),
        _below(stein, "rolling_corr", "rolling"),
    )
    gmv = _mean_over_horizons(summ, "gmv_var")
    maha = _mean_over_horizons(summ, "mahalanobis_ratio")
    rep = _mean_over_horizons(summ, "repaired_share")
    extra = {
        "gmv_ratio_vs_ewma": gmv["challenger"] / gmv["ewma_corr"],
        "gmv_ratio_vs_rolling": gmv["challenger"] / gmv["rolling_corr"],
        "mahalanobis_ratio": maha["challenger"],
        "mahalanobis_ratio_ewma": maha["ewma_corr"],
        "repaired_share": rep["challenger"],
    }
    if "champion" in gmv:
        extra["gmv_ratio_vs_champion"] = gmv["challenger"] / gmv["champion"]
    origins = ev.per_origin["origin_ts"]
    return GateDecision(
        passed=all(c.passed is not False for c in checks),
        checks=checks,
        config=cfg,  # type: ignore[arg-type]
        n_origins=int(origins.nunique()),
        origins_start=str(origins.min()),
        origins_end=str(origins.max()),
        qlike={k: float(v) for k, v in stein.items() if np.isfinite(v)},
        challenger_version=challenger_version,
        champion_version=champion_version,
        data_fingerprint=data_fingerprint(data),
        loss="stein",
        extra=extra,
    )
