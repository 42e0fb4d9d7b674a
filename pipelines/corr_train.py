"""Training the correlation champion: the cycle's ``correlation`` step (no Prefect, no printing).

:func:`train_correlation` reads the dataset's prices (:func:`correlation_prices`), compares the
correlation candidates of :class:`~pipelines.flow_config.CorrTrainFlowConfig` by walk-forward on
the last ``eval_periods`` origins (:func:`models.corr_evaluation.walk_forward_corr`: Stein loss,
GMV variance, Mahalanobis ratio, the share of PSD-repaired matrices), logs the comparison to the
``dprm-correlation`` MLflow experiment, fits the best non-baseline candidate on all the prices,
registers it as the challenger of the dataset's correlation model and promotes it through the
correlation gate (:mod:`models.corr_gate`). A rerun on the same data and settings finds the
version registered with the same training key and registers nothing new.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from features.errors import DataError
from models import catalog
from models.corr import returns_panel
from models.corr_evaluation import CorrEvaluationResult, walk_forward_corr
from models.corr_gate import CorrGateConfig
from models.corr_package import CorrelationPackage
from models.run_record import data_fingerprint
from pipelines.flow_config import CorrTrainFlowConfig
from pipelines.steps import correlation_prices, find_version


def candidate_models(cfg: CorrTrainFlowConfig) -> dict[str, Any]:
    """Catalog name -> unfitted correlation model with the flow's window and seed."""
    out = {}
    for name in cfg.candidates:
        entry = catalog.resolve(name, "correlation")
        params = entry.build().get_params(deep=False)
        kw: dict[str, Any] = {}
        if "window" in params:
            kw["window"] = cfg.window
        if "random_state" in params:
            kw["random_state"] = cfg.seed
        out[entry.name] = entry.build(**kw)
    return out


def evaluate_candidates(
    frame: pd.DataFrame, panel_freq: str | None, cfg: CorrTrainFlowConfig
) -> tuple[CorrEvaluationResult, Any]:
    """The walk-forward comparison on the last ``eval_periods`` origins (expanding window of at
    least ``window`` periods, re-estimated every ``refit_every``) and the panel it ran on."""
    models = candidate_models(cfg)
    panel = returns_panel(frame, freq=panel_freq, realized=True)
    hs = tuple(cfg.horizons)
    if len(panel) <= cfg.window + max(hs) + 10:
        raise DataError(f"{cfg.dataset}: {len(panel)} synchronized periods; the correlation "
                        f"training needs more than {cfg.window + max(hs) + 10}")
    start = panel.ts[max(cfg.window, len(panel) - cfg.eval_periods - max(hs))]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # skipped models are in .skipped
        ev = walk_forward_corr(models, panel, horizons=hs, window=cfg.window,
                               window_type="expanding", refit_every=cfg.refit_every, start=start,
                               benchmark="ewma_corr", mcs_reps=cfg.mcs_reps, random_state=cfg.seed)
    return ev, panel


def score_table(ev: CorrEvaluationResult) -> list[dict[str, Any]]:
    """Per model (mean over horizons): Stein loss, GMV variance ratio and Stein difference vs EWMA,
    Mahalanobis ratio, share of repaired matrices; sorted best (lowest Stein) first."""
    summ = ev.summary()
    cols = ["stein_qlike", "stein_diff", "gmv_ratio", "mahalanobis_ratio", "repaired_share"]
    g = summ.groupby("model_id")[cols].mean().sort_values("stein_qlike")
    return [{"model": str(k), **{c: float(v) for c, v in row.items()}} for k, row in g.iterrows()]


def train_key(cfg: CorrTrainFlowConfig, data_fp: str, challenger: str) -> str:
    """Identity of one correlation training outcome (data, settings, chosen model)."""
    settings = cfg.model_dump(mode="json", exclude={"promote", "register_model"})
    settings["model_name"] = cfg.registered_model
    doc = json.dumps({"fp": data_fp, "cfg": settings, "challenger": challenger}, sort_keys=True)
    return hashlib.blake2b(doc.encode(), digest_size=16).hexdigest()


def train_correlation(home: Path | str, cfg: CorrTrainFlowConfig) -> dict[str, Any]:
    """Evaluate, register and promote the dataset's correlation model (see the module docs);
    returns a JSON-ready summary: scores, skipped candidates, challenger, version, gate status
    and reason, champion version and the registered model."""
    from models import registry
    from models.promotion_log import model_lock

    home = Path(home).resolve()
    frame, panel_freq = correlation_prices(home, cfg.dataset, cfg.freq)
    ev, panel = evaluate_candidates(frame, panel_freq, cfg)
    scores = score_table(ev)
    baselines = set(cfg.baselines)
    ranked = [s["model"] for s in scores if np.isfinite(s["stein_qlike"])]
    if not ranked:
        raise DataError(f"{cfg.dataset}: no correlation candidate could be evaluated: "
                        f"{dict(ev.skipped)}")
    challenger = next((m for m in ranked if m not in baselines), ranked[0])
    out: dict[str, Any] = {
        "dataset": cfg.dataset, "freq": cfg.freq, "panel_freq": panel_freq or "rows",
        "symbols": list(panel.symbols), "n_origins": int(ev.per_origin["origin_ts"].nunique()),
        "scores": scores, "skipped": dict(ev.skipped), "challenger": challenger,
        "model": cfg.registered_model,
    }
    if not cfg.register_model:
        return out
    name = cfg.registered_model
    with model_lock(home, name):  # from "find this training key" to the promotion, as train
        registry.verify_registry(home, name)
        out.update(_register_and_promote(home, cfg, ev, panel, frame, panel_freq, challenger))
    return out


def _register_and_promote(home: Path, cfg: CorrTrainFlowConfig, ev: CorrEvaluationResult,
                          panel: Any, frame: pd.DataFrame, panel_freq: str | None,
                          challenger: str) -> dict[str, Any]:
    from models import registry

    name = cfg.registered_model
    data_fp = data_fingerprint(frame)
    key = train_key(cfg, data_fp, challenger)
    found = find_version(home, name, key)
    tags = {"dprm.train_key": key, "dprm.dataset": cfg.dataset, "dprm.freq": cfg.freq}
    out: dict[str, Any] = {}
    if found is None:
        summary = ev.summary()
        run_id = registry.log_run(
            home=home, target="correlation", run_name=f"train-correlation-{cfg.dataset}",
            params={"candidates": list(cfg.candidates), "horizons": list(cfg.horizons),
                    "window": cfg.window, "refit_every": cfg.refit_every,
                    "eval_periods": cfg.eval_periods, "panel_freq": panel_freq or "rows",
                    "symbols": list(panel.symbols), "challenger": challenger,
                    **{f"skipped.{k}": v for k, v in ev.skipped.items()}},
            metrics={f"{r.model_id}.h{int(r.horizon)}.{c}": float(getattr(r, c))
                     for r in summary.itertuples()
                     for c in ("stein_qlike", "gmv_var", "mahalanobis_ratio", "repaired_share")},
            tags={**tags, "dprm.kind": "evaluation"},
            artifacts={"summary.csv": summary.to_csv(index=False).encode(),
                       "skipped.json": json.dumps(dict(ev.skipped), indent=1).encode()},
        )
        entry = catalog.resolve(challenger, "correlation")
        model = candidate_models(cfg.model_copy(update={"candidates": (entry.name,)}))[entry.name]
        package = CorrelationPackage.build(entry.name, model, horizons=tuple(cfg.horizons),
                                           freq=panel_freq, training_data=panel)
        package.manifest["train"] = {"start_ts": str(panel.ts[0]), "end_ts": str(panel.ts[-1]),
                                     "n_rows": len(frame), "data_fingerprint": data_fp}
        ref = registry.register_challenger(
            package, home=home, training_data=frame, target="correlation", name=name,
            horizons=tuple(cfg.horizons), evaluation_run_id=run_id, tags=tags,
            description=f"{entry.name} on {cfg.dataset}/{cfg.freq} (train key {key})")
        version, status = ref.version, "pending"
    else:
        version, status = str(found["version"]), found["tags"].get("gate.status", "pending")
    champion = registry.champion_version(home, name)
    promoted, reason = False, ""
    if champion == version:
        status, reason = "passed", "already the champion"
    elif cfg.promote and status == "pending":
        gate = CorrGateConfig(horizons=tuple(cfg.horizons), n_origins=cfg.eval_periods,
                              window=cfg.window, refit_every=cfg.refit_every,
                              mcs_reps=cfg.mcs_reps, random_state=cfg.seed)
        res = registry.promote(version, home=home, data=frame, name=name, gate_config=gate)
        promoted = res.promoted
        status = "passed" if promoted else "rejected"
        reason = "" if res.decision is None else res.decision.reason
        if promoted:
            champion = version
        if res.decision is not None:
            out["gate"] = {"stein": dict(res.decision.qlike), **dict(res.decision.extra)}
    out.update(version=version, promoted=promoted, gate_status=status, gate_reason=reason,
               champion_version=champion)
    return out
