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
