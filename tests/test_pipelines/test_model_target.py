"""The model follows the dataset: default names, the champion checked against the data it is
asked to forecast (frequency, dataset, symbols), on a real SQLite registry."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from features.errors import ModelError
from models import registry as R
from models.har import HARVol
from pipelines import steps
from pipelines.flow_config import CycleConfig, ForecastFlowConfig, MonitorFlowConfig, model_name_for
from tests.test_models.test_registry import HS, realized_frame


def test_default_model_names_follow_the_dataset() -> None:
    assert model_name_for("embedded") == "dprm-forecaster"
    assert model_name_for("sim") == "dprm-forecaster-sim"
    assert ForecastFlowConfig().registered_model == "dprm-forecaster"
    assert ForecastFlowConfig(dataset="sim").registered_model == "dprm-forecaster-sim"
    assert ForecastFlowConfig(dataset="sim", model_name="x").registered_model == "x"
    # the cycle pushes its dataset into every step; the model name follows it
    c = CycleConfig(dataset="sim", freq="1h").resolved()
    assert {c.train.registered_model, c.forecast.registered_model, c.monitor.registered_model} == {
        "dprm-forecaster-sim"
    }


def test_champion_is_checked_against_the_data(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("MPLCONFIGDIR", str(tmp_path / "mpl"))
    home = tmp_path
    data = realized_frame(np.random.default_rng(5), n=400, symbols=("BTCUSDT", "ETHUSDT"))
    ref = R.register_challenger(
        {"har": HARVol(horizons=HS, window=300)},
        home=home,
        training_data=data,
        horizons=HS,
        name="dprm-forecaster-sim",
        tags={"dprm.dataset": "sim", "dprm.freq": "1D"},
    )
    R.promote(
        ref.version, home=home, mode="manual", approver="a", reason="b", name="dprm-forecaster-sim"
    )
    cfg = ForecastFlowConfig(dataset="sim", freq="1D")
    info = steps.check_champion(home, cfg)
    assert (info["name"], info["version"]) == ("dprm-forecaster-sim", "1")
    # a symbol the champion was not fitted on is left out and named
    extra = data[data["symbol"] == "BTCUSDT"].assign(symbol="SOLUSDT")
    wider = steps._champion_data(info, pd.concat([data, extra], ignore_index=True), cfg)
    assert sorted(wider[0]["symbol"].unique()) == ["BTCUSDT", "ETHUSDT"] and wider[1] == ["SOLUSDT"]
    with pytest.raises(
        ModelError,
        match=r"fitted on symbols \['BTCUSDT', 'ETHUSDT'\]; sim/1D has "
        r"\['SOLUSDT'\]: none in common; pass --model NAME",
    ):
        steps._champion_data(info, extra, cfg)
    # another frequency is refused, named or not
    for c in (
        MonitorFlowConfig(dataset="sim", freq="1h"),
        ForecastFlowConfig(dataset="sim", freq="1h", model_name="dprm-forecaster-sim"),
    ):
        with pytest.raises(
            ModelError,
            match=r"the champion of 'dprm-forecaster-sim' \(version 1\) "
            r"was trained on sim/1D, not sim/1h: pass --model NAME",
        ):
            steps.check_champion(home, c)
    # another dataset only when the model is named explicitly
    other = ForecastFlowConfig(dataset="other", freq="1D", model_name="dprm-forecaster-sim")
    assert steps.check_champion(home, other)["version"] == "1"
    # a dataset whose own model has no champion: None (the baseline), not an error
    assert steps.check_champion(home, ForecastFlowConfig(dataset="other", freq="1D")) is None
