"""``dprm train`` as orchestration: a walk-forward evaluation, one tracked run, then the chosen
forecasters registered as the ``challenger`` (moved here from :mod:`models.registry`, which keeps
only what talks to MLflow).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from sklearn.base import clone

from models.base import BaseForecaster
from models.evaluation import POOLED, EvaluationResult, walk_forward
from models.promotion_log import ModelRef
from models.registry import log_evaluation_run, register_challenger
from models.schedule import WalkForward


@dataclass(frozen=True)
class TrainResult:
    """What :func:`train_and_register` did: the evaluation, its run, the chosen primary member and
    the registered challenger."""

    evaluation: EvaluationResult
    evaluation_run_id: str
    primary: str
    ref: ModelRef


def train_and_register(
    models: Mapping[str, BaseForecaster],
    data: pd.DataFrame,
    *,
    home: Path,
    horizons: Sequence[int] = (1, 5, 22),
    primary: str | None = None,
    members: Sequence[str] | None = None,
    start: pd.Timestamp | str | None = None,
    schedule: WalkForward | None = None,
    window: int = 1000,
    window_type: str = "rolling",
    refit_every: int = 1,
    min_obs: float | None = 250,
    mcs_reps: int = 1000,
    random_state: int = 0,
    config: Any = None,
    feature_set_version: str = "1",
    description: str | None = None,
) -> TrainResult:
    """``dprm train``: walk-forward evaluation, one tracked run, then the bundle as challenger.

    Parameters
    ----------
    models : configuration name -> unfitted forecaster (the candidates and baselines).
    data : canonical realized frame (full history).
    home : the workspace.
    horizons : forecast horizons (periods).
    primary : the champion member; None = the model with the lowest pooled QLIKE averaged over the
        horizons.
    members : names bundled with the primary (e.g. an EWMA fallback); None = the primary only.
    schedule : the walk-forward schedule; None = ``WalkForward(window, window_type, refit_every)``.
    start, window, window_type, refit_every, min_obs, mcs_reps, random_state : passed to
        :func:`models.evaluation.walk_forward`.
    config, feature_set_version : logged with the evaluation run.
    description : the model version's description.
    """
    hs = tuple(sorted(int(h) for h in horizons))
    result = walk_forward(
        models,
        data,
        horizons=hs,
        start=start,
        schedule=schedule or WalkForward(window, window_type, refit_every),  # type: ignore[arg-type]
        min_obs=min_obs,
        mcs_reps=mcs_reps,
        random_state=random_state,
    )
    run_id = log_evaluation_run(
        result,
        home=home,
        models=models,
        data=data,
        config=config,
        feature_set_version=feature_set_version,
    )
    if primary is None:
        loss = result.losses[
            (result.losses["symbol"] == POOLED)
            & (result.losses["regime"] == "all")
            & (result.losses["target"] == "realized")
        ]
        primary = str(loss.groupby("model_id")["qlike"].mean().idxmin())
    if primary not in models:
        raise ValueError(f"primary {primary!r} is not one of the models {list(models)}")
    names = [primary, *[m for m in (members or []) if m != primary]]
    unknown = [m for m in names if m not in models]
    if unknown:
        raise ValueError(f"members {unknown} are not among the models {list(models)}")
    chosen = {}
    for m in names:
        est = clone(models[m])
        if "min_obs" in est.get_params(deep=False):
            est.set_params(min_obs=min_obs)
        chosen[m] = est
    ref = register_challenger(
        chosen,
        home=home,
        training_data=data,
        primary=primary,
        horizons=hs,
        evaluation_run_id=run_id,
        description=description,
    )
    return TrainResult(result, run_id, primary, ref)
