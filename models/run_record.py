"""What an evaluation or registration run records, without MLflow: provenance (package version, git
commit, data fingerprint), the evaluation's flat metrics, its plot and importance tables, the
config as TOML, and the run's params, tags and artifact folder. :mod:`models.registry` sends them
to MLflow (:func:`models.registry.log_evaluation_run`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.exceptions import NotFittedError
from sklearn.utils.validation import check_is_fitted

from features.schema import SYMBOL, TS, to_utc_ns
from models.base import BaseForecaster, jsonable
from models.evaluation import POOLED, EvaluationResult

TAG_MAX = 4000
"""Longest MLflow tag value written (longer values are cut)."""
_METRIC_NAME_BAD = re.compile(r"[^A-Za-z0-9_\-./ ]")


# ---- provenance ----------------------------------------------------------------------------------
def dprm_version() -> str:
    """The installed ``dprm`` version ("unknown" when not installed)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("dprm")
    except PackageNotFoundError:
        return "unknown"


def git_commit() -> str | None:
    """The project's git commit (with "-dirty" when the work tree has changes), or None."""
    cwd = Path(__file__).resolve().parent
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
        if head.returncode != 0:
            return None
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    commit = head.stdout.strip()
    return f"{commit}-dirty" if dirty.returncode == 0 and dirty.stdout.strip() else commit


def data_fingerprint(frame: pd.DataFrame) -> str:
    """SHA-256 of a frame's columns, dtypes and values (row order matters), hex."""
    h = hashlib.sha256()
    h.update(json.dumps([[str(c), str(t)] for c, t in frame.dtypes.items()]).encode())
    h.update(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())
    return h.hexdigest()


def to_toml(mapping: Mapping[str, Any]) -> str:
    """A small TOML writer for configs: nested mappings of str, int, float, bool, lists and
    timestamps (written as strings); ``None`` values are left out (TOML has no null)."""

    def value(v: Any) -> str:
        if isinstance(v, (bool, np.bool_)):
            return "true" if v else "false"
        if isinstance(v, (int, np.integer)):
            return str(int(v))
        if isinstance(v, (float, np.floating)):
            f = float(v)
            if math.isnan(f):
                return "nan"
            if math.isinf(f):
                return "inf" if f > 0 else "-inf"
            return repr(f)
        if isinstance(v, (list, tuple)):
            return "[" + ", ".join(value(x) for x in v if x is not None) + "]"
        return json.dumps(str(v))

    def key(k: str) -> str:
        return k if re.fullmatch(r"[A-Za-z0-9_-]+", k) else json.dumps(k)

    lines: list[str] = []

    def table(prefix: list[str], m: Mapping[str, Any]) -> None:
        scalars = {k: v for k, v in m.items() if not isinstance(v, Mapping) and v is not None}
        subs = {k: v for k, v in m.items() if isinstance(v, Mapping)}
        if prefix and (scalars or not subs):
            lines.append(f"[{'.'.join(key(p) for p in prefix)}]")
        for k, v in scalars.items():
            lines.append(f"{key(str(k))} = {value(v)}")
        if scalars:
            lines.append("")
        for k, v in subs.items():
            table([*prefix, str(k)], v)

    table([], mapping)
    return "\n".join(lines).rstrip() + "\n"


def config_dict(config: Any) -> dict[str, Any]:
    """A command's configuration (mapping, pydantic model or dataclass; None = empty) as a dict."""
    if config is None:
        return {}
    if hasattr(config, "model_dump"):
        return config.model_dump(mode="json")
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        return dataclasses.asdict(config)
    if isinstance(config, Mapping):
        return dict(config)
    raise TypeError(
        f"config must be a mapping, a pydantic model or a dataclass; got {type(config).__name__}"
    )


def _metric_key(*parts: object) -> str:
    return _METRIC_NAME_BAD.sub("_", "/".join(str(p) for p in parts))


# ---- evaluation runs -----------------------------------------------------------------------------
def evaluation_metrics(result: EvaluationResult, symbol: str | None = None) -> dict[str, float]:
    """The metrics of an evaluation as a flat dict.

    Names: ``<loss>[_<regime>][_truth]/<model>/<symbol>/h<h>`` for every loss in ``result.losses``
    (``qlike``, ``qlike_ratio``, ``mse``, ``mse_log``, ``rmspe``, ``n``; regime suffix for "calm"
    and "stressed"; ``_truth`` for losses against the simulated truth), ``dm_stat``, ``dm_pvalue``,
    ``mcs_pvalue`` and ``in_mcs`` (1/0) likewise. With ``symbol`` only that symbol's rows are kept
    and the symbol part is left out of the names (the per-symbol child runs).
    """
    out: dict[str, float] = {}

    def name(stat: str, model: str, sym: str, h: int) -> str:
        return (
            _metric_key(stat, model, f"h{h}") if symbol else _metric_key(stat, model, sym, f"h{h}")
        )

    loss = result.losses if symbol is None else result.losses[result.losses["symbol"] == symbol]
    for r in loss.itertuples(index=False):
        suffix = ("" if r.regime == "all" else f"_{r.regime}") + (
            "" if r.target == "realized" else f"_{r.target}"
        )
        for stat in ("qlike", "qlike_ratio", "mse", "mse_log", "rmspe", "n"):
            out[name(f"{stat}{suffix}", r.model_id, r.symbol, int(r.horizon))] = float(
                getattr(r, stat)
            )
    for frame, stats in (
        (result.dm, ("dm_stat", "dm_pvalue")),
        (result.mcs, ("mcs_pvalue", "in_mcs")),
    ):
        part = frame if symbol is None else frame[frame["symbol"] == symbol]
        for r in part.itertuples(index=False):
            suffix = "" if r.target == "realized" else f"_{r.target}"
            for stat in stats:
                out[name(f"{stat}{suffix}", r.model_id, r.symbol, int(r.horizon))] = float(
                    getattr(r, stat)
                )
    return out


def plot_evaluation(result: EvaluationResult, path: Path) -> None:
    """Write the evaluation's plot (forecast vs realized volatility of up to 3 symbols, QLIKE by
    horizon) as a PNG at ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fc = result.forecasts[result.forecasts["evaluated"]]
    h0 = int(fc["horizon"].min())
    symbols = sorted(fc["symbol"].unique())[:3]
    fig, axes = plt.subplots(len(symbols) + 1, 1, figsize=(10, 3.2 * (len(symbols) + 1)))
    axes = np.atleast_1d(axes)
    for ax, sym in zip(axes, symbols, strict=False):
        part = fc[(fc["symbol"] == sym) & (fc["horizon"] == h0)]
        first = part[part["model_id"] == part["model_id"].iloc[0]]
        ax.plot(
            first["origin_ts"],
            np.sqrt(first["realized_var"]),
            color="0.6",
            lw=0.8,
            label="realized",
        )
        for model, g in part.groupby("model_id"):
            ax.plot(g["origin_ts"], np.sqrt(g["forecast_var"]), lw=1.0, label=str(model))
        ax.set_yscale("log")
        ax.set_title(f"{sym}: forecast vs realized volatility per period, h={h0}")
        ax.legend(fontsize=7, ncol=4)
    loss = result.losses[
        (result.losses["symbol"] == POOLED)
        & (result.losses["regime"] == "all")
        & (result.losses["target"] == "realized")
    ]
    ax = axes[-1]
    for model, g in loss.groupby("model_id"):
        g = g.sort_values("horizon")
        ax.plot(g["horizon"], g["qlike"], marker="o", label=str(model))
    ax.set_xlabel("horizon (periods)")
    ax.set_ylabel("mean QLIKE (pooled)")
    ax.set_title("QLIKE by horizon")
    ax.legend(fontsize=7, ncol=4)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def feature_importance(models: Mapping[str, BaseForecaster]) -> dict[str, pd.DataFrame]:
    """Importance tables of fitted models that have them (``feature_importances_`` or HAR's
    ``coef_``, one row per symbol and horizon)."""
    out: dict[str, pd.DataFrame] = {}
    for name, m in models.items():
        try:
            check_is_fitted(m, "state_")
        except NotFittedError:
            continue
        imp = getattr(m, "feature_importances_", None)
        if imp is not None:
            out[name] = pd.DataFrame(imp) if not isinstance(imp, pd.DataFrame) else imp
            continue
        if hasattr(type(m), "coef_"):
            coef = m.coef_
            frames = [c.assign(symbol=s).reset_index() for s, c in coef.items()]
            out[name] = pd.concat(frames, ignore_index=True)
    return out


def evaluation_run_tags(
    result: EvaluationResult,
    *,
    target: str,
    feature_set_version: str,
    run_name: str | None = None,
    data: pd.DataFrame | None = None,
    tags: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The tags of an evaluation run: name, kind, target, ``dprm.version``, feature-set version,
    benchmark, skipped models, the git commit (when known), the data's fingerprint (when given)
    and the caller's ``tags`` (which win)."""
    commit = git_commit()
    run_tags = {
        "mlflow.runName": run_name or f"evaluate-{target}",
        "dprm.kind": "evaluation",
        "dprm.target": target,
        "dprm.version": dprm_version(),
        "dprm.feature_set_version": feature_set_version,
        "dprm.benchmark": json.dumps({f"{s}/h{h}": m for (s, h), m in result.benchmark.items()}),
        "dprm.skipped": json.dumps(dict(result.skipped)),
        "dprm.n_configurations": str(result.n_configurations),
    }
    if commit:
        run_tags["mlflow.source.git.commit"] = commit
        run_tags["git.commit"] = commit
    if data is not None:
        run_tags["data.fingerprint"] = data_fingerprint(data)
    run_tags.update(tags or {})
    return run_tags


def evaluation_run_params(
    result: EvaluationResult,
    *,
    feature_set_version: str,
    models: Mapping[str, BaseForecaster] | None = None,
    data: pd.DataFrame | None = None,
) -> dict[str, Any]:
    """The params of an evaluation run: feature-set version, evaluation settings (``eval.*``),
    every model's class and hyperparameters (``model.<name>.*``) and the data window
    (``data.*``)."""
    params: dict[str, Any] = {
        "feature_set_version": feature_set_version,
        "n_configurations": result.n_configurations,
    }
    for k, v in result.settings.items():
        params[f"eval.{k}"] = v
    for name, m in (models or {}).items():
        cls = type(m)
        params[f"model.{name}.class"] = f"{cls.__module__}.{cls.__qualname__}"
        for k, v in m.get_params(deep=False).items():
            params[f"model.{name}.{k}"] = v
    if data is not None:
        ts = pd.DatetimeIndex(to_utc_ns(data[TS]))
        params.update(
            {
                "data.start_ts": ts.min(),
                "data.end_ts": ts.max(),
                "data.n_rows": len(data),
                "data.symbols": sorted(data[SYMBOL].astype(str).unique()),
            }
        )
    return params


def write_evaluation_artifacts(
    result: EvaluationResult,
    stage: Path,
    *,
    target: str,
    feature_set_version: str,
    models: Mapping[str, BaseForecaster] | None = None,
    config: Any = None,
) -> None:
    """Write an evaluation run's artifacts under ``stage``: ``evaluation/*.parquet`` (forecasts,
    losses, DM, MCS) and ``summary.csv``, ``plots/evaluation.png``,
    ``feature_importance/<model>.csv`` and ``config/config.toml``."""
    (stage / "evaluation").mkdir()
    result.forecasts.to_parquet(stage / "evaluation" / "forecasts.parquet", index=False)
    for nm in ("losses", "dm", "mcs"):
        getattr(result, nm).to_parquet(stage / "evaluation" / f"{nm}.parquet", index=False)
    result.summary().to_csv(stage / "evaluation" / "summary.csv", index=False)
    (stage / "plots").mkdir()
    plot_evaluation(result, stage / "plots" / "evaluation.png")
    importance = feature_importance(models or {})
    if importance:
        (stage / "feature_importance").mkdir()
        for name, frame in importance.items():
            frame.to_csv(stage / "feature_importance" / f"{name}.csv", index=False)
    (stage / "config").mkdir()
    cfg = {
        "target": target,
        "feature_set_version": feature_set_version,
        "evaluation": {k: v for k, v in result.settings.items() if v is not None},
        **config_dict(config),
    }
    (stage / "config" / "config.toml").write_text(to_toml(cfg))


def evaluation_symbols(result: EvaluationResult) -> list[str]:
    """The evaluated symbols (the pooled row left out), sorted: one child run each."""
    return sorted(s for s in result.losses["symbol"].unique() if s != POOLED)


def param_value(v: Any) -> str:
    """A run param as MLflow stores it: lists as JSON, a Generator as "Generator", else str (cut)."""
    if isinstance(v, (list, tuple)):
        try:
            return json.dumps([jsonable(x) for x in v])
        except TypeError:  # estimators inside (a combination's members): their repr
            return str(v)[:6000]
    if isinstance(v, np.random.Generator):
        return "Generator"
    return str(v)[:6000]
