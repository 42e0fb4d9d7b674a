"""WalkForward: one schedule object for every walk-forward (model, evaluation, gate)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from features.errors import ConfigError
from models import catalog
from models.evaluation import walk_forward
from models.har import HARVol, LogHARVol
from models.schedule import WalkForward, merge
from tests.test_models.test_har import simulate_realized


@pytest.fixture(scope="module")
def data() -> pd.DataFrame:
    return simulate_realized(np.random.default_rng(7), 600, symbols=("BTCUSDT",))


def _fc(res, name: str) -> pd.Series:
    f = res.forecasts
    return f[(f["model_id"] == name) & (f["horizon"] == 1)].set_index("origin_ts")["forecast_var"]


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"window": 0}, r"'window' parameter of WalkForward must be an int >= 1 or None\. Got 0"),
        ({"refit_every": 2.5}, r"'refit_every' parameter of WalkForward .* Got 2\.5"),
        ({"purge": True}, r"'purge' parameter of WalkForward .* Got True"),
        ({"window_type": "sliding"}, r"'window_type' parameter of WalkForward .* Got 'sliding'"),
    ],
)
def test_bad_fields_are_named(kw, match) -> None:
    with pytest.raises(ConfigError, match=match):
        WalkForward(**kw)


def test_of_reads_each_models_own_schedule() -> None:
    assert WalkForward.of(HARVol()) == WalkForward(1000, "rolling", 1)
    assert WalkForward.of(catalog.build("garch_1_1", (1,))) == WalkForward(1000, "rolling", 5)
    assert WalkForward.of(catalog.build("garch_1_1", (1,), window=None)).window_type == "expanding"
    assert WalkForward.of(catalog.build("lgbm", (1,))) == WalkForward(None, "expanding", 21)
    # a model with no schedule hyperparameters runs on walk_forward's defaults
    assert WalkForward.of(catalog.build("ewma")) == WalkForward(1000, "rolling", 1)


def test_over_and_merge_fill_only_what_is_left_open() -> None:
    base = WalkForward(500, "expanding", 7, 10)
    assert WalkForward(window=300).over(base) == WalkForward(300, "expanding", 7, 10)
    assert WalkForward().over(base) == base
    # keywords beat the schedule's fields; None keywords leave them
    assert merge(base, None, "rolling", None, None) == (500, "rolling", 7, 10)
    assert merge(None, None, None, None, None) == (None, None, None, None)


def test_model_walk_forward_takes_the_schedule_like_its_keywords(data) -> None:
    start = data["ts"].iloc[400]
    m = LogHARVol(min_obs=None)
    by_obj = m.walk_forward(data, (1,), start=start, schedule=WalkForward(window=250, refit_every=5))
    by_kw = m.walk_forward(data, (1,), start=start, window=250, refit_every=5)
    pd.testing.assert_frame_equal(by_obj["BTCUSDT"].variance, by_kw["BTCUSDT"].variance)
    # a keyword overrides the schedule's field
    over = m.walk_forward(data, (1,), start=start, schedule=WalkForward(window=250, refit_every=5),
                          refit_every=1)
    exact = m.walk_forward(data, (1,), start=start, window=250, refit_every=1)
    pd.testing.assert_frame_equal(over["BTCUSDT"].variance, exact["BTCUSDT"].variance)
    assert not np.allclose(by_obj["BTCUSDT"].variance, exact["BTCUSDT"].variance)


def test_evaluation_runs_each_model_on_its_schedule(data) -> None:
    start = data["ts"].iloc[400]
    common = {"horizons": (1,), "start": start, "min_obs": None, "mcs_reps": 50}
    weekly = WalkForward(window=200, window_type="expanding", refit_every=7)
    res = walk_forward({"weekly": HARVol(), "har": HARVol()}, data,
                       schedule=WalkForward(window=300), schedules={"weekly": weekly}, **common)
    alone = walk_forward({"weekly": HARVol()}, data, schedule=weekly, **common)
    shared = walk_forward({"har": HARVol()}, data, window=300, **common)
    pd.testing.assert_series_equal(_fc(res, "weekly"), _fc(alone, "weekly"))
    pd.testing.assert_series_equal(_fc(res, "har"), _fc(shared, "har"))
    assert not np.allclose(_fc(res, "weekly"), _fc(res, "har"))
    # own_schedule is WalkForward() for that model: the model's own hyperparameters
    own = walk_forward({"weekly": HARVol(window=200, window_type="expanding", refit_every=7)},
                       data, window=300, own_schedule=["weekly"], **common)
    pd.testing.assert_series_equal(_fc(own, "weekly"), _fc(alone, "weekly"))


def test_schedules_must_name_models(data) -> None:
    with pytest.raises(ConfigError, match=r"schedules names \['lgbm'\] are not among the models"):
        walk_forward({"har": HARVol()}, data, horizons=(1,), schedules={"lgbm": WalkForward()})


def test_catalog_own_schedule_agrees_with_the_model_classes() -> None:
    """The catalog's flag and the class attribute the gate and the train flow read are one fact."""
    for name in catalog.names("volatility"):
        entry = catalog.resolve(name)
        model = entry.build()
        assert type(model).own_schedule is entry.own_schedule, name
