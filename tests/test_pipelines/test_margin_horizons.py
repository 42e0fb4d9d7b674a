"""The cycle's default horizons follow the data's frequency (the margin horizons), through the
cycle's frequency override too; an explicit setting wins; a bad frequency is named."""

from __future__ import annotations

import pytest

from models.forecast import margin_horizons
from pipelines.flow_config import (
    CorrTrainFlowConfig,
    CycleConfig,
    ForecastFlowConfig,
    TrainFlowConfig,
)


def test_margin_horizons_per_frequency() -> None:
    assert margin_horizons("1D") == (1, 2, 5)
    assert margin_horizons("1h") == (1, 4, 24)
    assert margin_horizons("15min") == (1, 4, 16, 96)
    assert margin_horizons("4h") == (1, 6)
    assert margin_horizons("7D") == (1,)
    with pytest.raises(ValueError, match="horizon_unit must be a pandas duration"):
        margin_horizons("hourly")


def test_cycle_steps_take_the_horizons_of_the_pushed_frequency() -> None:
    c = CycleConfig(dataset="sim", freq="1h").resolved()
    assert c.train.horizons == c.correlation.horizons == c.forecast.horizons == (1, 4, 24)
    d = CycleConfig().resolved()
    assert d.train.horizons == d.forecast.horizons == (1, 2, 5)
    # an explicit setting is kept when the cycle pushes another frequency
    e = CycleConfig(freq="1h", train=TrainFlowConfig(horizons=(1, 3))).resolved()
    assert e.train.horizons == (1, 3) and e.forecast.horizons == (1, 4, 24)
    # a step built alone derives them from its own frequency, and survives a round trip
    t = TrainFlowConfig(freq="15min")
    assert TrainFlowConfig.model_validate(t.model_dump()).horizons == (1, 4, 16, 96)
    assert ForecastFlowConfig(freq="1h").horizons == CorrTrainFlowConfig(freq="1h").horizons
    with pytest.raises(ValueError, match="freq: horizon_unit must be a pandas duration"):
        TrainFlowConfig(freq="often")
