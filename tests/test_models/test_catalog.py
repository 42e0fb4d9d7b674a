"""The model catalog: every entry builds and fits on a small simulated panel (or is skipped with its
declared reason), aliases resolve, unknown names list the catalog, and a missing input gives one
reason string wherever it is asked for."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from features.errors import ConfigError
from features.realized import realized_measures
from features.schema import CLOSE, RV, SYMBOL, TRADE_COUNT, TS
from features.simulate import SimConfig, simulate
from models import catalog
from models.base import BaseForecaster
from models.corr import BaseCorrForecaster, returns_panel

FAST = {  # learned models: a few small trees so the whole catalog fits in seconds
    "n_estimators": 20,
    "learning_rate": 0.2,
    "early_stopping_rounds": 10,
    "min_train": 100,
    "validation_size": 60,
    "min_child_samples": 20,
}


@pytest.fixture(scope="module")
def sim() -> dict[str, pd.DataFrame]:
    """30 simulated days of two assets: hourly realized measures of the 1-minute bars (with the
    trade count per hour) and the hourly return panel with realized covariances."""
    cfg = SimConfig(n_days=30)
    res = simulate(cfg.select("BTCUSDT", "ETHUSDT"), random_state=0)
    bars = res.tables()["bars_1m"][1]
    rm = realized_measures(bars, bar="1h", grid="5min", price_col=CLOSE)
    counts = (bars.set_index(TS).groupby(SYMBOL)[TRADE_COUNT]
              .resample("1h", closed="right", label="right").sum().reset_index())
    rm = rm.merge(counts, on=[TS, SYMBOL], how="left")
    return {"hourly": rm[rm["valid"].astype(bool)].reset_index(drop=True),
            "panel": returns_panel(bars, freq="1h")}


def _overrides(entry: catalog.CatalogEntry) -> dict:
    if entry.name in ("lgbm", "har_boost"):
        return dict(FAST)
    if entry.name == "diurnal_boost":
        from models.diurnal import DiurnalHARVol

        return {**FAST, "base": DiurnalHARVol(horizons=(1,), log=True, profile_stat="log", window=200,
                                              window_type="rolling")}
    if entry.name.startswith("filtered"):
        return {"window": 500}
    if entry.name == "qlike_combo":
        return {"window": 300, "lookback": 100}
    if entry.tags and "garch" in entry.tags:
        return {"window": 500, "refit_every": 50}
    return {}


@pytest.mark.parametrize("name", catalog.names())
def test_every_entry_builds_and_fits_or_is_skipped_with_its_reason(name: str, sim) -> None:
    entry = catalog.resolve(name)
    hourly = sim["hourly"]
    reason = catalog.missing_inputs(entry, hourly, intraday=True, n_symbols=2)
    if reason is not None:
        assert entry.inputs.context, f"{name} is skipped although it declares no context: {reason}"
        pytest.skip(reason)
    model = entry.build((1,), **_overrides(entry))
    if "min_obs" in model.get_params(deep=False):  # hourly bars hold ~60 observations each
        model = entry.build((1,), **_overrides(entry), min_obs=None)
    if entry.target == "volatility":
        assert isinstance(model, BaseForecaster)
        model.fit(hourly)
        fcs = model.predict(hourly, horizons=(1,)).values()
        last = np.array([f.variance[1].iloc[-1] for f in fcs])
        assert np.all(np.isfinite(last)) and np.all(last > 0)
    else:
        assert isinstance(model, BaseCorrForecaster)
        panel = sim["panel"]
        model.fit(panel)
        fc = model.predict(panel, horizons=(1,))
        assert fc is not None


@pytest.mark.parametrize(("alias", "canonical"), [("loghar", "log_har"), ("rw", "random_walk"),
                                                  ("ewma_0.94", "ewma"), ("harj", "har_j"),
                                                  ("harcj", "har_cj"), ("loghar_dow", "log_har_dow"),
                                                  ("garch", "garch_1_1")])
def test_aliases_resolve_to_one_canonical_entry(alias: str, canonical: str) -> None:
    assert catalog.canonical_name(alias) == canonical
    assert catalog.resolve(alias) is catalog.CATALOG[canonical]
    assert type(catalog.build(alias)) is type(catalog.build(canonical))
    assert catalog.build(alias).get_params() == catalog.build(canonical).get_params()


def test_every_old_model_kind_is_in_the_catalog() -> None:
    from pipelines.flow_config import MODEL_KINDS

    for kind in MODEL_KINDS:
        assert catalog.resolve(kind, "volatility").target == "volatility"


def test_unknown_name_is_a_config_error_listing_the_catalog() -> None:
    with pytest.raises(ConfigError, match=r"unknown model 'lstm'; the catalog has: random_walk, "
                                          r"ewma, .*qlike_combo.*\(aliases: .*loghar=log_har"):
        catalog.resolve("lstm")
    with pytest.raises(ConfigError, match=r"model 'dcc' forecasts correlation, not volatility"):
        catalog.resolve("dcc", "volatility")
    with pytest.raises(ConfigError, match=r"model 'har': .*unexpected keyword argument 'lam'"):
        catalog.build("har", lam=0.9)


def test_missing_inputs_gives_one_reason_string() -> None:
    cols = [TS, SYMBOL, RV]
    want = ("model 'shar' needs column(s) ['rs_pos_var', 'rs_neg_var'] "
            "(inputs: rv_var, rs_pos_var, rs_neg_var)")
    assert catalog.missing_inputs("shar", cols) == want
    assert catalog.missing_inputs(catalog.resolve("shar"), pd.DataFrame(columns=cols)) == want
    assert catalog.missing_inputs("har", cols) is None
    assert catalog.missing_inputs("gjr_t", cols) == ("model 'gjr_t' needs column(s) ['close'] "
                                                    "(inputs: close)")
    assert catalog.missing_inputs("gjr_t", [*cols, CLOSE], has_close=False) == catalog.missing_inputs(
        "gjr_t", cols)
    assert catalog.missing_inputs("diurnal_har", cols, intraday=False) == (
        "model 'diurnal_har' needs intraday (sub-daily) bars (inputs: rv_var; intraday)")
    assert "needs at least 2 symbols; has 1" in catalog.missing_inputs("dcc", [*cols, CLOSE],
                                                                       n_symbols=1)


def test_catalog_records_are_json_ready() -> None:
    import json

    recs = catalog.catalog_records()
    assert [r["name"] for r in recs] == catalog.names()
    assert {r["target"] for r in recs} == {"volatility", "correlation"}
    json.dumps(recs)
