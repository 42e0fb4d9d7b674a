"""The cycle's correlation step and the train flow's default candidates."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from models import registry as R
from pipelines import steps
from pipelines.corr_train import train_correlation
from pipelines.flow_config import CorrTrainFlowConfig, CycleConfig, ModelSpec, TrainFlowConfig


def test_default_candidates_cover_what_the_product_promises() -> None:
    kinds = {s.kind for s in TrainFlowConfig().candidates.values()}
    assert {"har", "loghar", "harq", "log_har_dow", "log_har_dow_x", "garch_1_1", "gjr_t",
            "lgbm", "qlike_combo", "ewma", "rw"} <= kinds
    assert "correlation" in CycleConfig().steps


def test_own_schedule_models_keep_their_schedule_when_trained() -> None:
    cfg = TrainFlowConfig(window=300, refit_every=2)
    lgbm = steps.training_model(ModelSpec(kind="lgbm"), cfg)
    assert (lgbm.window, lgbm.window_type, lgbm.refit_every) == (None, "expanding", 21)
    garch = steps.training_model(ModelSpec(kind="garch_1_1"), cfg)
    assert garch.refit_every == 5
    har = steps.training_model(ModelSpec(kind="har"), cfg)
    assert (har.window, har.refit_every) == (300, 2)


def test_train_correlation_registers_promotes_and_is_idempotent(embedded_home: Path) -> None:
    cfg = CorrTrainFlowConfig(candidates=("ewma_corr", "rolling_corr", "dcc", "lgbm_corr"),
                              eval_periods=120, mcs_reps=20)
    out = train_correlation(embedded_home, cfg)
    assert out["model"] == "dprm-correlation" and out["symbols"] == ["NASDAQ", "SP500"]
    stein = [s["stein_qlike"] for s in out["scores"]]
    assert stein == sorted(stein) and len(stein) == 4
    assert out["challenger"] not in cfg.baselines
    assert out["version"] == "1" and out["gate_status"] in ("passed", "rejected")
    gate = out["gate"]
    ok = gate["stein"]["challenger"] < min(gate["stein"]["ewma_corr"], gate["stein"]["rolling_corr"])
    assert out["promoted"] is ok, out["gate_reason"]
    assert np.isfinite(gate["gmv_ratio_vs_ewma"]) and np.isfinite(gate["mahalanobis_ratio"])
    again = train_correlation(embedded_home, cfg)
    assert again["version"] == "1"
    versions = R.list_versions(home=embedded_home, name=None)
    assert [str(v) for v in versions[versions["model"] == "dprm-correlation"]["version"]] == ["1"]
    shown = R.show_version("1", home=embedded_home, name="dprm-correlation")
    assert shown["tags"]["dprm.target"] == "correlation"


def test_the_champions_table_says_when_the_trained_model_was_rejected() -> None:
    from rich.console import Console

    from pipelines.cli import print_champions

    con = Console(width=100, record=True)
    print_champions(con, {
        "train": {"ranking": [{"model_id": "loghar", "qlike": 0.4, "qlike_ratio": 0.9}],
                  "challenger": "loghar", "version": "2", "champion_version": "1",
                  "model": "dprm-forecaster"},
        "correlation": {"scores": [{"model": "dcc", "stein_qlike": -9.2, "gmv_ratio": 1.01,
                                    "stein_diff": -0.01, "mahalanobis_ratio": 1.5}],
                        "challenger": "dcc", "version": "1", "champion_version": "1",
                        "model": "dprm-correlation"}})
    text = con.export_text()
    assert "loghar (rejected)" in text and "QLIKE 0.4000" in text
    assert "dcc (rejected)" not in text and "GMV 1.010" in text
    empty = Console(record=True)
    print_champions(empty, {})
    assert empty.export_text() == ""
