"""walk_forward: targets, losses, DM, MCS, stress flags, truth, skipping, a generic model, speed."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import ClassVar

import numpy as np
import pandas as pd
import pytest

from features.schema import RV
from models.base import BaseForecaster, SymbolPanel
from models.evaluation import walk_forward
from models.ewma import EWMAVol, RandomWalkVol
from models.har import (
    HARJVol,
    HARQDoWVol,
    HARQVol,
    HARVol,
    LogHARDoWVol,
    LogHARVol,
    SHARVol,
)
from models.losses import diebold_mariano, qlike
from tests.test_models.test_har import simulate_realized

SYMS = ("BTCUSDT", "ETHUSDT")


@pytest.fixture(scope="module")
def data() -> pd.DataFrame:
    return simulate_realized(np.random.default_rng(11), 700, symbols=SYMS, low_obs_every=53)


@pytest.fixture(scope="module")
def result(data):
    models = {
        "rw": RandomWalkVol(),
        "ewma": EWMAVol(),
        "har": HARVol(),
        "harq": HARQVol(),
        "log_har": LogHARVol(),
    }
    return walk_forward(
        models,
        data,
        horizons=(1, 5),
        start=data["ts"].iloc[400],
        window=300,
        mcs_reps=200,
        random_state=5,
    )


def realized_oracle(data: pd.DataFrame, sym: str, h: int) -> pd.Series:
    d = data[(data["symbol"] == sym) & (data["n_obs"] >= 250)].set_index("ts")["rv_var"]
    return d.rolling(h).mean().shift(-h)


def test_forecast_table_targets_and_common_sample(result, data):
    t = result.forecasts
    assert {"realized_var", "stressed", "evaluated", "fallback_reason"} <= set(t.columns)
    for sym in SYMS:
        for h in (1, 5):
            rows = t[(t["symbol"] == sym) & (t["horizon"] == h)]
            oracle = realized_oracle(data, sym, h).reindex(rows["origin_ts"]).to_numpy()
            np.testing.assert_allclose(rows["realized_var"].to_numpy(), oracle, rtol=1e-12)
            ev = rows[rows["evaluated"]]
            per_model = ev.groupby("model_id")["origin_ts"].apply(frozenset)
            assert per_model.nunique() == 1 and len(per_model) == 5
            assert ev["realized_var"].notna().all()
    # origins with n_obs < 250 are never forecast from
    low = data.loc[data["n_obs"] < 250, "ts"]
    assert not t["origin_ts"].isin(low).any()


def test_losses_equal_a_recomputation_from_the_table(result):
    t = result.forecasts[result.forecasts["evaluated"]]
    L = result.losses.set_index(["model_id", "symbol", "horizon", "regime", "target"])
    for (m, sym, h), g in t.groupby(["model_id", "symbol", "horizon"]):
        q = qlike(g["realized_var"], g["forecast_var"]).mean()
        assert L.loc[(m, sym, h, "all", "realized"), "qlike"] == pytest.approx(q, rel=1e-12)
        mse = ((g["forecast_var"] - g["realized_var"]) ** 2).mean()
        assert L.loc[(m, sym, h, "all", "realized"), "mse"] == pytest.approx(mse, rel=1e-12)
        stressed = g[g["stressed"]]
        if len(stressed):
            qs = qlike(stressed["realized_var"], stressed["forecast_var"]).mean()
            assert L.loc[(m, sym, h, "stressed", "realized"), "qlike"] == pytest.approx(qs)
    for (m, h), g in t.groupby(["model_id", "horizon"]):
        q = qlike(g["realized_var"], g["forecast_var"]).mean()
        assert L.loc[(m, "pooled", h, "all", "realized"), "qlike"] == pytest.approx(q, rel=1e-12)
        assert L.loc[(m, "pooled", h, "all", "realized"), "n"] == len(g)


def test_benchmark_ratio_dm_and_mcs(result):
    t = result.forecasts[result.forecasts["evaluated"]]
    allr = result.losses[
        (result.losses["regime"] == "all") & (result.losses["target"] == "realized")
    ]
    for (sym, h), g in allr.groupby(["symbol", "horizon"]):
        best = g.loc[g["qlike"].idxmin(), "model_id"]
        assert result.benchmark[(sym, h)] == best  # default: the best of the baselines
        assert g.set_index("model_id").loc[best, "qlike_ratio"] == 1.0
        mcs = result.mcs[(result.mcs["symbol"] == sym) & (result.mcs["horizon"] == h)]
        assert mcs.set_index("model_id").loc[best, "in_mcs"]
    sym, h = "BTCUSDT", 5
    bench = result.benchmark[(sym, h)]
    sub = t[(t["symbol"] == sym) & (t["horizon"] == h)]
    wide = sub.pivot(index="origin_ts", columns="model_id", values=["realized_var", "forecast_var"])
    other = next(m for m in ("rw", "har", "ewma") if m != bench)
    la = qlike(wide["realized_var"][other], wide["forecast_var"][other])
    lb = qlike(wide["realized_var"][bench], wide["forecast_var"][bench])
    ref = diebold_mariano(la, lb, h=h)
    row = result.dm[
        (result.dm["model_id"] == other)
        & (result.dm["symbol"] == sym)
        & (result.dm["horizon"] == h)
        & (result.dm["target"] == "realized")
    ].iloc[0]
    assert row["dm_stat"] == pytest.approx(ref.stat, rel=1e-10)
    assert row["dm_pvalue"] == pytest.approx(ref.pvalue, rel=1e-8)
    assert row["benchmark"] == bench


def test_stress_flags_mark_the_worst_one_percent(result, data):
    t = result.forecasts
    rows = t[
        (t["model_id"] == "har") & (t["symbol"] == "ETHUSDT") & (t["horizon"] == 1) & t["evaluated"]
    ]
    threshold_days = rows["realized_var"]  # h=1: the target is one day's RV
    share = rows["stressed"].mean()
    assert 0.005 <= share <= 0.03
    assert threshold_days[rows["stressed"]].min() >= threshold_days[~rows["stressed"]].max()
    # h=5 rows are stressed when any of their 5 target days is
    h5 = t[(t["model_id"] == "har") & (t["symbol"] == "ETHUSDT") & (t["horizon"] == 5)]
    assert h5["stressed"].mean() > share


def test_summary_is_tidy(result):
    s = result.summary()
    assert len(s) == 5 * 3 * 2
    for c in (
        "model_id",
        "symbol",
        "horizon",
        "n",
        "qlike",
        "qlike_ratio",
        "mse",
        "mse_log",
        "rmspe",
        "qlike_calm",
        "qlike_stressed",
        "dm_stat",
        "dm_pvalue",
        "in_mcs",
        "fallback_share",
    ):
        assert c in s.columns
    assert result.n_configurations == 5 and result.skipped == {}
    with pytest.raises(ValueError, match="no losses for target 'truth'"):
        result.summary("truth")


def test_truth_losses_and_skipped_models(data):
    rng = np.random.default_rng(2)
    truth = data[["ts", "symbol"]].assign(
        iv_var=data["rv_var"] * np.exp(rng.normal(0, 0.05, len(data)))
    )
    no_rq = data.drop(columns="rq_var2")
    models = {"har": HARVol(), "harq": HARQVol(), "ewma": EWMAVol()}
    with pytest.warns(UserWarning, match=r"skips model 'harq'.*rq_var2"):
        res = walk_forward(
            models,
            no_rq,
            horizons=(1,),
            start=data["ts"].iloc[450],
            window=300,
            truth=truth,
            mcs_reps=100,
        )
    assert set(res.skipped) == {"harq"} and res.n_configurations == 3
    t = res.forecasts[res.forecasts["evaluated"]]
    g = t[(t["model_id"] == "har") & (t["symbol"] == "BTCUSDT")]
    tv = truth[(truth["symbol"] == "BTCUSDT") & (data["n_obs"] >= 250)].set_index("ts")["iv_var"]
    np.testing.assert_allclose(g["truth_var"], tv.shift(-1).reindex(g["origin_ts"]), rtol=1e-12)
    L = res.losses.set_index(["model_id", "symbol", "horizon", "regime", "target"])
    q = qlike(g["truth_var"], g["forecast_var"]).mean()
    assert L.loc[("har", "BTCUSDT", 1, "all", "truth"), "qlike"] == pytest.approx(q, rel=1e-12)
    assert set(res.summary("truth")["model_id"]) == {"har", "ewma"}


class MedianVol(BaseForecaster):
    """A model without a fast path: the median of the last ``k`` RVs (uses the generic loop)."""

    model_id: ClassVar[str] = "median"
    state_from_data: ClassVar[bool] = False

    def __init__(self, k: int = 10, min_obs: float | None = 250) -> None:
        self.k = k
        self.min_obs = min_obs

    def _fit_panel(self, panel: SymbolPanel) -> int:
        return self.k

    def _predict_panel(self, panel: SymbolPanel, state: int, horizons: Sequence[int]):
        med = pd.Series(panel.col(RV)).rolling(state).median().to_numpy()
        return np.repeat(med[:, None], len(horizons), axis=1), None


def test_generic_model_alongside_fast_ones(data):
    d = data[data["symbol"] == "BTCUSDT"].iloc[:460]
    res = walk_forward(
        {"median": MedianVol(), "har": HARVol()},
        d,
        horizons=(1,),
        start=d["ts"].iloc[420],
        window=300,
        mcs_reps=50,
    )
    rows = res.forecasts[res.forecasts["model_id"] == "median"]
    clean = d[d["n_obs"] >= 250].set_index("ts")["rv_var"]
    expected = clean.rolling(10).median().reindex(rows["origin_ts"])
    np.testing.assert_allclose(rows["forecast_var"], expected, rtol=1e-12)
    assert (rows["data_cutoff_ts"] == rows["origin_ts"]).all()


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"models": {}}, "models must be a non-empty dict"),
        ({"models": {"x": object()}}, r"models\['x'\] must be a BaseForecaster"),
        ({"benchmark": "garch"}, "benchmark 'garch' is not one of the models"),
        ({"baselines": ["garch"]}, r"baselines \['garch'\] are not among the models"),
        ({"purge": 2}, "purge must be >= the longest horizon 5"),
        (
            {"truth": pd.DataFrame({"ts": [], "symbol": []})},
            r"truth is missing column\(s\) \['iv_var'\]",
        ),
        ({"stress_quantile": 1.0}, "stress_quantile must be in"),
        ({"own_schedule": ["lgbm"]}, r"own_schedule names \['lgbm'\] are not among the models"),
    ],
)
def test_errors(data, kw, match):
    args = {"models": {"har": HARVol()}, "horizons": (1, 5), "window": 300}
    args.update(kw)
    with pytest.raises((ValueError, TypeError), match=match):
        walk_forward(data=data, **args)


def test_own_schedule_keeps_a_models_window_and_refit_cadence(data):
    d = data[data["symbol"] == "BTCUSDT"]
    start = d["ts"].iloc[450]
    weekly = HARVol(window=200, window_type="expanding", refit_every=7)
    common = {"horizons": (1,), "start": start, "mcs_reps": 50}
    own = walk_forward(
        {"weekly": weekly, "har": HARVol()}, d, window=300, own_schedule=["weekly"], **common
    )
    direct = walk_forward(
        {"weekly": HARVol(), "har": HARVol()},
        d,
        window=200,
        window_type="expanding",
        refit_every=7,
        **common,
    )
    shared = walk_forward({"weekly": weekly, "har": HARVol()}, d, window=300, **common)

    def fc(res, name):
        f = res.forecasts
        return f[f["model_id"] == name].set_index("origin_ts")["forecast_var"]

    # the own-schedule model equals the same settings given to everyone; the others keep the shared
    pd.testing.assert_series_equal(fc(own, "weekly"), fc(direct, "weekly"))
    pd.testing.assert_series_equal(fc(own, "har"), fc(shared, "har"))
    assert not np.allclose(fc(own, "weekly"), fc(shared, "weekly"))


def test_refit_every_origin_ladder_is_fast(rng):
    """9 models x 2 symbols x ~3,000 days, refit at every origin (window 1,000): seconds."""
    big = simulate_realized(rng, 3000, symbols=SYMS)
    models = {
        "rw": RandomWalkVol(),
        "ewma": EWMAVol(),
        "har": HARVol(),
        "log_har": LogHARVol(),
        "har_j": HARJVol(),
        "shar": SHARVol(),
        "harq": HARQVol(),
        "log_har_dow": LogHARDoWVol(),
        "harq_dow": HARQDoWVol(),
    }
    t0 = time.perf_counter()
    res = walk_forward(models, big, horizons=(1, 5), window=1000, refit_every=1, mcs_reps=100)
    elapsed = time.perf_counter() - t0
    n = res.losses.query("symbol == 'BTCUSDT' and horizon == 1 and regime == 'all'")["n"]
    assert (n > 1900).all()
    assert elapsed < 30.0, f"walk_forward took {elapsed:.1f} s"
