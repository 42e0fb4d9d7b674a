"""Oracle: HAR-family QLIKE figures on Binance BTC/ETH daily realized measures, 2022-01-01..2026-03-30.

Definitions (the library's defaults): h-period target = mean RV over t+1..t+h; regressors RV_t,
mean RV_{t-4..t}, mean RV_{t-21..t}; log-HAR on log RV with averages over the logs, target the log of
the mean RV, bias correction exp(0.5 x residual variance of the window); HARQ adds RV_t x sqrt(RQ_t);
rolling window of the last 1,000 observations, refit at every origin on the rows whose targets are
complete at the origin (1000 - h rows); days with fewer than 250 five-minute returns dropped from
the sample; forecasts outside the window's target range replaced by the window mean. QLIKE is
averaged over the origins (dates 2022-01-01..2026-03-30, i.e. closes ts = date + 1 day) whose
target, from the cleaned series, lies inside the data.
"""

from __future__ import annotations

import pandas as pd
import pytest

from models.evaluation import walk_forward
from models.har import HARQVol, HARVol, LogHARDoWVol, LogHARVol

pytestmark = pytest.mark.realdata

FOLDER = "binance_daily_realized_measures_btc_eth_2018_2026"
RENAME = {
    "RV": "rv_var",
    "BV": "bv_var",
    "RQ": "rq_var2",
    "RS_plus": "rs_pos_var",
    "RS_minus": "rs_neg_var",
    "nobs": "n_obs",
}

# HAR QLIKE, then log-HAR, HARQ, log-HAR-DoW as % change of QLIKE relative to HAR
REFERENCE = {
    ("BTCUSDT", 1): (0.3746, -6.4, -8.5, -26.3),
    ("BTCUSDT", 5): (0.2604, -4.5, -4.4, -10.8),
    ("ETHUSDT", 1): (0.3530, -16.6, -9.5, -29.0),
    ("ETHUSDT", 5): (0.2836, -17.2, -5.6, -21.4),
}
MODELS = ("har", "log_har", "harq", "log_har_dow")


def read_measures(path, symbol: str) -> pd.DataFrame:
    """The CSV as a canonical realized frame: ts = date + 1 day (the day's close, UTC)."""
    raw = pd.read_csv(path)
    out = raw.rename(columns=RENAME)[list(RENAME.values())].astype("float64")
    out.insert(0, "symbol", symbol)
    out.insert(0, "ts", pd.to_datetime(raw["date"], utc=True) + pd.Timedelta(days=1))
    return out


def read_with_project_reader(path) -> pd.DataFrame:
    """The same file through the project's reader (features.readers.read_source)."""
    from features.readers import read_source

    return pd.concat([c.frame for c in read_source(path)], ignore_index=True)


@pytest.fixture(scope="module")
def measures(data_dir) -> pd.DataFrame:
    folder = data_dir / FOLDER
    if not folder.is_dir():
        pytest.skip(f"{folder} not found")
    return pd.concat(
        [read_with_project_reader(folder / f"{c}_measures.csv") for c in ("btc", "eth")],
        ignore_index=True,
    )


@pytest.fixture(scope="module")
def result(measures):
    models = {
        "har": HARVol(),
        "log_har": LogHARVol(),
        "harq": HARQVol(),
        "log_har_dow": LogHARDoWVol(),
    }
    return walk_forward(
        models,
        measures,
        horizons=(1, 5),
        start="2022-01-02",
        end="2026-03-31",
        window=1000,
        window_type="rolling",
        refit_every=1,
        min_obs=250,
        benchmark="har",
        mcs_reps=100,
    )


def test_inputs(measures, data_dir):
    """The project reader agrees with a plain pandas reading of the CSVs."""
    folder = data_dir / FOLDER
    direct = pd.concat(
        [
            read_measures(folder / "btc_measures.csv", "BTCUSDT"),
            read_measures(folder / "eth_measures.csv", "ETHUSDT"),
        ],
        ignore_index=True,
    )
    pd.testing.assert_frame_equal(measures[list(direct.columns)], direct, check_dtype=False)
    assert len(measures) == 2 * 3012
    assert (measures["n_obs"] < 250).groupby(measures["symbol"]).sum().tolist() == [14, 14]


@pytest.mark.parametrize("key", list(REFERENCE), ids=lambda k: f"{k[0]}-h{k[1]}")
def test_qlike_matches_reference_within_half_a_percent(result, key):
    sym, h = key
    har, *pcts = REFERENCE[key]
    expected = dict(zip(MODELS, [har, *(har * (1 + p / 100) for p in pcts)], strict=True))
    L = result.losses
    got = L[
        (L["symbol"] == sym)
        & (L["horizon"] == h)
        & (L["regime"] == "all")
        & (L["target"] == "realized")
    ].set_index("model_id")
    # every origin of the out-of-sample range whose target is inside the data
    assert (got["n"] == (1550 if h == 1 else 1546)).all()
    for model, value in expected.items():
        assert got.loc[model, "qlike"] == pytest.approx(value, rel=0.005), model
    ratios = got["qlike"] / got.loc["har", "qlike"]
    for model, pct in zip(MODELS[1:], pcts, strict=True):
        assert 100 * (ratios[model] - 1) == pytest.approx(pct, abs=0.5), model


def test_no_fallbacks_needed_for_these_models(result):
    ev = result.forecasts[result.forecasts["evaluated"]]
    assert ev["fallback_reason"].isna().all()
