"""Evaluation outputs: tables (parquet/CSV), plots (PNG), settings (JSON), written atomically."""

from __future__ import annotations

import io
import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from features.store import atomic_write_bytes, atomic_write_json, atomic_write_parquet


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return buf.getvalue()


def plots(result: Any) -> dict[str, bytes]:
    """Forecast vs realized over time (best model, h=1, per symbol) and QLIKE by horizon."""
    os.environ.setdefault("MPLCONFIGDIR", str(Path.home() / ".cache" / "dprm-mpl"))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out: dict[str, bytes] = {}
    summ = result.summary()
    pooled = summ[summ["symbol"] == "pooled"]
    fig, ax = plt.subplots(figsize=(8, 4))
    for model, g in pooled.groupby("model_id"):
        ax.plot(g["horizon"], g["qlike"], marker="o", label=model)
    ax.set_xlabel("horizon (periods)")
    ax.set_ylabel("QLIKE (pooled)")
    ax.set_title("Loss by horizon")
    ax.legend(fontsize=7, ncol=2)
    out["loss_by_horizon.png"] = _png(fig)
    plt.close(fig)
    fc = result.forecasts[result.forecasts["evaluated"] & (result.forecasts["horizon"] == result.forecasts["horizon"].min())]
    best = summ[(summ["symbol"] != "pooled")].sort_values("qlike").groupby("symbol").head(1)
    for row in best.itertuples():
        g = fc[(fc["symbol"] == row.symbol) & (fc["model_id"] == row.model_id)].sort_values("origin_ts")
        if g.empty:
            continue
        fig, ax = plt.subplots(figsize=(9, 3.5))
        ax.semilogy(g["target_end"], g["realized_var"], lw=0.6, color="0.6", label="realized")
        ax.semilogy(g["target_end"], g["forecast_var"], lw=0.9, label=f"{row.model_id} forecast")
        ax.set_title(f"{row.symbol}: forecast vs realized variance (h={int(g['horizon'].iloc[0])})")
        ax.legend(fontsize=8)
        out[f"forecast_vs_realized_{row.symbol}.png"] = _png(fig)
        plt.close(fig)
    return out


def write_evaluation(home: Path, dataset: str, cfg: Any, result: Any, extra: dict | None = None) -> Path:
    """Write an evaluation's forecast table, summary, DM, MCS, plots and settings to
    ``$DPRM_HOME/evaluations/<dataset>-<freq>-<UTC time>/``; returns the folder."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out = home / "evaluations" / f"{dataset}-{cfg.freq}-{stamp}"
    atomic_write_parquet(out / "forecasts.parquet", result.forecasts)
    summ = result.summary()
    atomic_write_parquet(out / "summary.parquet", summ)
    atomic_write_bytes(out / "summary.csv", summ.to_csv(index=False).encode())
    for name in ("losses", "dm", "mcs"):
        atomic_write_parquet(out / f"{name}.parquet", getattr(result, name))
    if "truth" in set(result.losses["target"]):
        truth = result.summary(target="truth")
        atomic_write_bytes(out / "summary_truth.csv", truth.to_csv(index=False).encode())
    for name, data in plots(result).items():
        atomic_write_bytes(out / name, data)
    atomic_write_json(out / "settings.json", {
        "dataset": dataset, "config": json.loads(cfg.model_dump_json()),
        "n_configurations": result.n_configurations, "skipped": dict(result.skipped),
        "failures": [f.to_dict() for f in getattr(result, "failures", ())],
        "benchmark": {f"{s}|h={h}": m for (s, h), m in result.benchmark.items()},
        **(extra or {}),
    })
    return out


def summary_table(result: Any, target: str = "realized") -> pd.DataFrame:
    """The compact comparison printed by the CLI: per symbol and horizon, each model's QLIKE,
    ratio to the benchmark, DM p-value and MCS membership."""
    s = result.summary(target=target)
    cols = ["symbol", "horizon", "model_id", "n", "qlike", "qlike_ratio", "qlike_stressed",
            "dm_pvalue", "in_mcs", "fallback_share"]
    return s[[c for c in cols if c in s.columns]]
