"""MLflow tracking and the dprm-forecaster registry: evaluation runs, the parameter bundle (rebuilt,
not pickled), registration and aliases, the promotion gate both ways, manual approval, rollback,
the append-only promotion log and loading the champion in a fresh process.

Every test works in its own temporary store: one SQLite database is migrated per session and
copied per test (migrating takes seconds, copying milliseconds).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from features.errors import RegistryError
from features.schema import SYMBOL, TS
from models import forecast as F
from models import gate as G
from models import package as P
from models import promotion_log as L
from models import registry as R
from models import run_record as RR
from models.base import BaseForecaster, SymbolPanel
from models.evaluation import EvaluationResult, walk_forward
from models.ewma import EWMAVol, RandomWalkVol
from models.har import HARVol
from pipelines import train as T

HS = (1, 5)
GATE = G.GateConfig(horizons=HS, n_origins=150, baselines=("random_walk", "ewma"), mcs_reps=20)


def realized_frame(
    rng: np.random.Generator, n: int = 560, symbols: tuple[str, ...] = ("BTCUSDT", "ETHUSDT")
) -> pd.DataFrame:
    """A canonical daily realized frame: latent log variance AR(1) (phi 0.98) observed with noise
    (so smoothing models beat the random walk, as on real data); closes driven by the latent."""
    ts = pd.date_range("2022-01-02", periods=n, freq="D", tz="UTC")
    frames = []
    for k, sym in enumerate(symbols):
        x = np.empty(n)
        x[0] = -8.0 + k
        eps = rng.normal(0.0, 0.2, n)
        for t in range(1, n):
            x[t] = (-8.0 + k) * 0.02 + 0.98 * x[t - 1] + eps[t]
        rv = np.exp(x + rng.normal(0.0, 0.5, n) - 0.125)
        close = 100.0 * np.exp(np.cumsum(np.exp(x / 2) * rng.standard_normal(n)))
        frames.append(
            pd.DataFrame(
                {
                    TS: ts,
                    SYMBOL: sym,
                    "rv_var": rv,
                    "bv_var": 0.9 * rv,
                    "n_obs": 288.0,
                    "close": close,
                }
            )
        )
    out = pd.concat(frames, ignore_index=True)
    out[SYMBOL] = out[SYMBOL].astype("str")
    return out


@pytest.fixture(scope="module")
def data() -> pd.DataFrame:
    return realized_frame(np.random.default_rng(20261124))


def har(**kw) -> HARVol:
    return HARVol(horizons=HS, window=300, **kw)


# ---- pure pieces ---------------------------------------------------------------------------------
def test_tracking_uri_env_wins_over_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert R.tracking_uri(tmp_path) == f"sqlite:///{tmp_path.resolve() / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5999")
    assert R.tracking_uri(tmp_path) == "http://127.0.0.1:5999"
    assert os.environ["MLFLOW_DISABLE_TELEMETRY"] == "true"  # set before mlflow is imported


def test_to_toml_round_trips_through_tomllib() -> None:
    cfg = {
        "a": 1,
        "b": 0.1,
        "c": 'x"y',
        "d": [1, 2],
        "e": None,
        "flag": True,
        "nested": {"k": "v", "deeper": {"h": [1, 5, 22]}},
        "odd key": 3,
    }
    back = tomllib.loads(RR.to_toml(cfg))
    assert back == {k: v for k, v in cfg.items() if v is not None}


def test_bundle_rebuilds_har_and_ewma_exactly(data: pd.DataFrame, tmp_path: Path) -> None:
    members = {"har": har().fit(data), "ewma": EWMAVol(lam=0.9).fit(data)}
    bundle = P.ForecasterPackage.build(members, horizons=HS)
    manifest = bundle.save(tmp_path / "b")
    assert [m["storage"] for m in manifest["members"]] == ["json", "json"]
    loaded = P.ForecasterPackage.load(tmp_path / "b")
    out = loaded.predict(data, origins="all")
    pd.testing.assert_frame_equal(out, bundle.predict(data, origins="all"), check_exact=True)
    # independent oracle: the stored coefficients times the HAR regressors at the last origin
    state = json.loads((tmp_path / "b" / "members" / "har.json").read_text())["state"]
    for sym, g in data.groupby(SYMBOL):
        rv = g.sort_values(TS)["rv_var"].to_numpy()
        x = np.array([1.0, rv[-1], rv[-5:].mean(), rv[-22:].mean()])
        last = out[
            (out["model_id"] == "har") & (out["symbol"] == sym) & (out["origin_ts"] == g[TS].max())
        ]
        for h in HS:
            fit = state[sym][str(h)]
            f = float(np.dot(fit["coef"], x))
            if not fit["target_min"] <= f <= fit["target_max"]:  # the insanity filter
                f = fit["target_mean"]
            got = float(last.loc[last["horizon"] == h, "forecast_var"].iloc[0])
            assert got == pytest.approx(f, rel=1e-12)
        # EWMA: the recursion s_t = lam s_{t-1} + (1 - lam) x_t from s_0 = x_0
        s = rv[0]
        for v in rv[1:]:
            s = 0.9 * s + 0.1 * v
        e = out[(out["model_id"] == "ewma") & (out["symbol"] == sym) & (out["horizon"] == 1)]
        assert float(e["forecast_var"].iloc[-1]) == pytest.approx(s, rel=1e-12)
    last = loaded.predict(data)
    assert set(last.groupby(["model_id", "symbol"])["origin_ts"].nunique()) == {1}
    assert list(last.columns) == [c for c in F.FRAME_COLUMNS]
    assert last["model_version"].str.fullmatch(r"1\+[0-9a-f]{12}").all()


def test_bundle_rebuilds_garch_without_pickling(data: pd.DataFrame, tmp_path: Path) -> None:
    from models.garch import GarchVol

    rng = np.random.default_rng(5)
    n, var, r = 800, 1e-4, np.empty(800)
    for t in range(n):  # GARCH(1,1): omega 2e-6, alpha 0.08, beta 0.9
        r[t] = np.sqrt(var) * rng.standard_normal()
        var = 2e-6 + 0.08 * r[t] ** 2 + 0.9 * var
    one = pd.DataFrame(
        {
            TS: pd.date_range("2021-01-01", periods=n, freq="D", tz="UTC"),
            SYMBOL: "BTCUSDT",
            "close": 100.0 * np.exp(np.cumsum(r)),
        }
    )
    g = GarchVol(window=None, min_fit_obs=200, random_state=3).fit(one)
    assert g.fallback_reason_["BTCUSDT"] is None
    bundle = P.ForecasterPackage.build({"garch": g}, horizons=(1, 5))
    bundle.save(tmp_path / "b")
    text = (tmp_path / "b" / "members" / "garch.json").read_text()
    assert "omega" in text and "beta[1]" in text
    loaded = P.ForecasterPackage.load(tmp_path / "b")
    assert loaded.members["garch"].result_ == {"BTCUSDT": None}  # no arch object was stored
    pd.testing.assert_frame_equal(
        loaded.predict(one, origins="all"), bundle.predict(one, origins="all"), check_exact=True
    )
    assert "arch==" in " ".join(P.pip_requirements(loaded))


class ConstVol(BaseForecaster):
    """A forecaster without a codec: stored with joblib."""

    model_id = "const"

    def __init__(self, level: float = 1e-4) -> None:
        self.level = level

    def _fit_panel(self, panel: SymbolPanel) -> float:
        return float(self.level)

    def _predict_panel(self, panel, state, horizons):
        return np.full((len(panel), len(horizons)), state), None


def test_bundle_without_codec_falls_back_to_joblib(data: pd.DataFrame, tmp_path: Path) -> None:
    bundle = P.ForecasterPackage.build({"c": ConstVol(2e-4)}, training_data=data, horizons=HS)
    manifest = bundle.save(tmp_path / "b")
    assert manifest["members"][0]["storage"] == "joblib"
    assert manifest["train"]["data_fingerprint"] == RR.data_fingerprint(data)
    out = P.ForecasterPackage.load(tmp_path / "b").predict(data)
    assert (out["forecast_var"] == 2e-4).all()


def test_bundle_errors(data: pd.DataFrame) -> None:
    with pytest.raises(ValueError, match="primary 'x' is not one of the members"):
        P.ForecasterPackage.build({"rw": RandomWalkVol().fit(data)}, primary="x")
    with pytest.raises(ValueError, match=r"fitted for horizons \[1, 5\].*Refit"):
        P.ForecasterPackage.build({"har": har().fit(data)}, horizons=(1, 22))
    with pytest.raises(ValueError, match="is not fitted; fit it or pass training_data"):
        P.ForecasterPackage.build({"har": har()})
    bundle = P.ForecasterPackage.build({"rw": RandomWalkVol().fit(data)}, horizons=HS)
    with pytest.raises(ValueError, match="origins must be 'last' or 'all'; got 'first'"):
        bundle.predict(data, origins="first")


def test_forecast_frame_to_volforecasts(data: pd.DataFrame) -> None:
    members = {"har": har().fit(data), "rw": RandomWalkVol().fit(data)}
    bundle = P.ForecasterPackage.build(members, horizons=HS)
    table = bundle.predict(data, origins="all")
    fcs = P.forecast_frame_to_volforecasts(table, model_id="har")
    direct = members["har"].predict(data)
    for sym, fc in fcs.items():
        pd.testing.assert_frame_equal(
            fc.variance, direct[sym].variance, check_names=False, check_exact=True
        )
        assert fc.model_id == "har" and fc.annualization == 365.0
    with pytest.raises(ValueError, match=r"holds models \['har', 'rw'\]; pass model_id"):
        P.forecast_frame_to_volforecasts(table)
    with pytest.raises(ValueError, match="model_id 'x' is not in the table"):
        P.forecast_frame_to_volforecasts(table, model_id="x")


def _ctx_with_quantiles(realized: np.ndarray, q10: np.ndarray, q90: np.ndarray) -> G.GateContext:
    fc = pd.DataFrame(
        {
            "model_id": "challenger",
            "evaluated": True,
            "realized_var": realized,
            "q_0.1": q10,
            "q_0.9": q90,
        }
    )
    ev = EvaluationResult(fc, pd.DataFrame(), pd.DataFrame(), pd.DataFrame(), {}, {}, 1)
    return G.GateContext(GATE, ev, {"challenger": 1.0}, None, None, {}, ())  # type: ignore[arg-type]


def test_interval_calibration_check_against_hand_counts() -> None:
    y = np.arange(1.0, 101.0)  # 100 realized values
    ok = G._check_interval_calibration(
        _ctx_with_quantiles(y, np.full(100, 10.5), np.full(100, 90.5))
    )
    assert ok.passed is True and ok.value == pytest.approx(0.0)  # hit rates 0.10 and 0.90
    bad = G._check_interval_calibration(
        _ctx_with_quantiles(y, np.full(100, 20.5), np.full(100, 90.5))
    )
    assert bad.passed is False and bad.value == pytest.approx(0.10)  # q_0.1 covers 20 %
    none = G._check_interval_calibration(
        _ctx_with_quantiles(y, np.full(100, np.nan), np.full(100, np.nan))
    )
    assert none.passed is None and "no quantiles" in none.detail


def test_gate_config_and_check_registry_errors() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match=r"unknown baseline\(s\) \['garch'\]"):
        G.GateConfig(baselines=("garch",))
    with pytest.raises(ValidationError, match="horizons must be distinct ints >= 1"):
        G.GateConfig(horizons=(1, 1))
    with pytest.raises(ValueError, match=r"gate check name must match"):
        G.register_gate_check("Bad Name", lambda ctx: None)  # type: ignore[arg-type,return-value]


# ---- tracking ------------------------------------------------------------------------------------
def test_log_evaluation_run(home: Path, data: pd.DataFrame) -> None:
    from mlflow import MlflowClient

    models = {"har": har(), "ewma": EWMAVol(), "rw": RandomWalkVol()}
    res = walk_forward(
        models, data, horizons=HS, start=data[TS].iloc[-120], window=300, mcs_reps=20
    )
    run_id = R.log_evaluation_run(
        res,
        home=home,
        models=models,
        data=data,
        config={"train": {"horizons": list(HS)}},
        feature_set_version="7",
    )
    client = MlflowClient(R.tracking_uri(home))
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    exp = client.get_experiment(run.info.experiment_id)
    assert exp.name == "dprm-volatility"
    assert exp.artifact_location == (home / "mlartifacts" / "dprm-volatility").resolve().as_uri()
    p, m, t = run.data.params, run.data.metrics, run.data.tags
    assert p["model.har.window"] == "300" and p["model.har.class"] == "models.har.HARVol"
    assert p["model.har.horizons"] == "[1, 5]" and p["feature_set_version"] == "7"
    assert p["data.n_rows"] == str(len(data)) and p["eval.window"] == "300"
    loss = res.losses.set_index(["model_id", "symbol", "horizon", "regime", "target"])
    assert m["qlike/har/pooled/h1"] == loss.loc[("har", "pooled", 1, "all", "realized"), "qlike"]
    assert (
        m["qlike_stressed/rw/BTCUSDT/h5"]
        == loss.loc[("rw", "BTCUSDT", 5, "stressed", "realized"), "qlike"]
    )
    dm = res.dm.set_index(["model_id", "symbol", "horizon"])
    bench = res.benchmark[("pooled", 1)]
    other = next(x for x in models if x != bench)
    assert m[f"dm_stat/{other}/pooled/h1"] == pytest.approx(dm.loc[(other, "pooled", 1), "dm_stat"])
    assert {m[k] for k in m if k.startswith("in_mcs/")} <= {0.0, 1.0}
    assert t["data.fingerprint"] == RR.data_fingerprint(data)
    assert t["dprm.version"] == RR.dprm_version() and t["dprm.target"] == "volatility"
    arts = {
        a.path
        for d in ("evaluation", "plots", "config", "feature_importance")
        for a in client.list_artifacts(run_id, d)
    }
    assert {
        "evaluation/forecasts.parquet",
        "evaluation/losses.parquet",
        "evaluation/dm.parquet",
        "evaluation/mcs.parquet",
        "evaluation/summary.csv",
        "plots/evaluation.png",
        "config/config.toml",
    } <= arts
    local = Path(client.download_artifacts(run_id, "evaluation/forecasts.parquet", str(home)))
    stored = pd.read_parquet(local)
    pd.testing.assert_frame_equal(
        stored.drop(columns="fallback_reason"),
        res.forecasts.drop(columns="fallback_reason"),
        check_dtype=False,
    )
    assert stored["fallback_reason"].fillna("").tolist() == (
        res.forecasts["fallback_reason"].fillna("").tolist()
    )
    png = Path(client.download_artifacts(run_id, "plots/evaluation.png", str(home)))
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    cfg = tomllib.loads(
        Path(client.download_artifacts(run_id, "config/config.toml", str(home))).read_text()
    )
    assert cfg["train"]["horizons"] == [1, 5] and cfg["evaluation"]["window"] == 300
    children = client.search_runs(
        [exp.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{run_id}'"
    )
    assert sorted(c.data.tags["dprm.symbol"] for c in children) == ["BTCUSDT", "ETHUSDT"]
    child = next(c for c in children if c.data.tags["dprm.symbol"] == "ETHUSDT")
    assert (
        child.data.metrics["qlike/har/h5"]
        == loss.loc[("har", "ETHUSDT", 5, "all", "realized"), "qlike"]
    )


# ---- registry, gate, promotion ---------------------------------------------------------------------
def test_register_moves_the_challenger_alias(home: Path, data: pd.DataFrame) -> None:
    r1 = R.register_challenger(
        {"har": har(), "ewma": EWMAVol()},
        home=home,
        training_data=data,
        horizons=HS,
        description="first",
    )
    assert (r1.version, r1.alias, r1.uri) == ("1", "challenger", "models:/dprm-forecaster/1")
    r2 = R.register_challenger({"rw": RandomWalkVol()}, home=home, training_data=data, horizons=HS)
    versions = R.list_versions(home=home)
    assert versions["version"].tolist() == [1, 2]
    assert versions["aliases"].tolist() == ["", "challenger"]
    assert versions["members"].tolist() == ["har,ewma", "rw"]
    info = R.show_version(1, home=home)
    assert info["tags"]["dprm.primary"] == "har" and info["description"] == "first"
    assert info["tags"]["data.fingerprint"] == RR.data_fingerprint(data)
    assert info["tags"]["gate.status"] == "pending"
    assert R.model_ref("challenger", home=home) == r2
    log = L.read_promotion_log(home)
    assert [(e["action"], e["from_version"], e["to_version"]) for e in log] == [
        ("register_challenger", None, "1"),
        ("register_challenger", "1", "2"),
    ]
    with pytest.raises(ValueError, match="has no alias 'champion'"):
        R.model_ref("champion", home=home)
    with pytest.raises(ValueError, match="has no version '9'"):
        R.show_version(9, home=home)


def test_gate_rejects_a_worse_challenger_and_keeps_it(home: Path, data: pd.DataFrame) -> None:
    v1 = R.register_challenger({"har": har()}, home=home, training_data=data, horizons=HS)
    first = R.promote(v1.version, home=home, data=data, gate_config=GATE)
    assert first.promoted and first.previous_champion is None
    checks = {c.name: c for c in first.decision.checks}
    assert checks["qlike_vs_champion"].passed is None  # first promotion: nothing to compare with
    assert checks["beats_best_baseline"].passed is True
    v2 = R.register_challenger({"rw": RandomWalkVol()}, home=home, training_data=data, horizons=HS)
    res = R.promote(v2.version, home=home, data=data, gate_config=GATE)
    assert not res.promoted and res.ref is None
    q = res.decision.qlike
    assert q["challenger"] / q["champion"] > 1.0
    assert q["challenger"] == q["random_walk"]  # the same configuration is scored once
    tags = R.show_version(v2.version, home=home)["tags"]
    assert tags["gate.status"] == "rejected" and tags["dprm.status"] == "rejected"
    assert tags["gate.reason"].startswith("qlike_vs_champion: QLIKE challenger")
    assert tags["gate.check.qlike_vs_champion"].startswith("fail value=")
    assert tags["gate.champion_version"] == "1"
    assert json.loads(tags["gate.config"])["n_origins"] == 150
    versions = R.list_versions(home=home)
    assert versions["version"].tolist() == [1, 2]  # still registered
    assert R.model_ref("champion", home=home).version == "1"
    assert L.read_promotion_log(home)[-1]["action"] == "reject"


def test_gate_promotes_a_better_challenger(home: Path, data: pd.DataFrame) -> None:
    v1 = R.register_challenger({"ewma": EWMAVol()}, home=home, training_data=data, horizons=HS)
    R.promote(v1.version, home=home, data=data, gate_config=GATE)
    v2 = R.register_challenger(
        {"har": har(), "ewma": EWMAVol()}, home=home, training_data=data, horizons=HS
    )
    res = R.promote(v2.version, home=home, data=data, gate_config=GATE)
    checks = {c.name: c for c in res.decision.checks}
    assert res.promoted, res.decision.reason
    assert checks["qlike_vs_champion"].value < 1.0
    assert checks["forecast_change"].passed is True
    assert res.ref == R.model_ref("champion", home=home)
    versions = R.list_versions(home=home).set_index("version")
    assert versions.loc[2, "aliases"] == "champion"  # the challenger alias moved on
    assert versions.loc[1, "status"] == "retired"
    # the forecast-change check on its own: the same challenger with a tight bound is rejected
    v3 = R.register_challenger(
        {"ewma": EWMAVol(lam=0.5)}, home=home, training_data=data, horizons=HS
    )
    tight = GATE.model_copy(update={"checks": ("forecast_change",), "max_median_vol_change": 1e-6})
    rej = R.promote(v3.version, home=home, data=data, gate_config=tight)
    assert not rej.promoted and rej.decision.reason.startswith("forecast_change: median")


def test_manual_mode_needs_a_named_approver(home: Path, data: pd.DataFrame) -> None:
    v1 = R.register_challenger({"rw": RandomWalkVol()}, home=home, training_data=data, horizons=HS)
    with pytest.raises(
        ValueError, match="manual promotion needs a named approver; got approver=None"
    ):
        R.promote(v1.version, home=home, mode="manual", reason="urgent")
    with pytest.raises(ValueError, match="manual promotion needs a reason"):
        R.promote(v1.version, home=home, mode="manual", approver="alice")
    with pytest.raises(ValueError, match="auto promotion runs the gate and needs data"):
        R.promote(v1.version, home=home)
    with pytest.raises(ValueError, match="mode must be 'auto' or 'manual'; got 'yolo'"):
        R.promote(v1.version, home=home, mode="yolo")  # type: ignore[arg-type]
    res = R.promote(v1.version, home=home, mode="manual", approver="alice", reason="bootstrap")
    assert res.promoted and res.decision is None
    tags = R.show_version(1, home=home)["tags"]
    assert (tags["gate.status"], tags["gate.decided_by"]) == ("not_run", "alice")
    with pytest.raises(ValueError, match="version 1 of 'dprm-forecaster' is already the champion"):
        R.promote(1, home=home, mode="manual", approver="alice", reason="again")
    # an override: the gate fails (a forecast-change bound nothing meets) and is recorded
    v2 = R.register_challenger({"e": EWMAVol(lam=0.5)}, home=home, training_data=data, horizons=HS)
    res = R.promote(
        v2.version,
        home=home,
        mode="manual",
        approver="bob",
        reason="drill",
        data=data,
        gate_config=GATE.model_copy(update={"max_median_vol_change": 1e-9}),
    )
    assert res.promoted and not res.decision.passed
    tags = R.show_version(2, home=home)["tags"]
    assert (tags["gate.status"], tags["gate.reason"]) == ("override", "drill")
    assert tags["gate.check.forecast_change"].startswith("fail")


def test_rollback_and_the_append_only_log(home: Path, data: pd.DataFrame) -> None:
    for members in ({"rw": RandomWalkVol()}, {"ewma": EWMAVol()}):
        ref = R.register_challenger(members, home=home, training_data=data, horizons=HS)
        R.promote(ref.version, home=home, mode="manual", approver="bob", reason="test")
    before = L.promotion_log_path(home).read_bytes()
    with pytest.raises(ValueError, match="rollback needs a named approver"):
        R.rollback(home=home, approver="", reason="bad")
    res = R.rollback(home=home, approver="carol", reason="ewma misbehaves")
    assert (res.previous_champion, res.version) == ("2", "1")
    assert R.model_ref("champion", home=home).version == "1"
    assert R.show_version(2, home=home)["status"] == "rolled_back"
    after = L.promotion_log_path(home).read_bytes()
    assert after.startswith(before)  # appended, nothing rewritten
    log = L.read_promotion_log(home)
    assert [e["action"] for e in log] == [
        "register_challenger",
        "promote",
        "register_challenger",
        "promote",
        "rollback",
    ]
    assert [e["seq"] for e in log] == [1, 2, 3, 4, 5]
    assert (log[-1]["who"], log[-1]["from_version"], log[-1]["to_version"]) == ("carol", "2", "1")
    with pytest.raises(ValueError, match="no champion before version 1"):
        R.rollback(home=home, approver="carol", reason="again")
    lines = after.splitlines(keepends=True)
    lines[1] = lines[1].replace(b'"who": "bob"', b'"who": "eve"')
    L.promotion_log_path(home).write_bytes(b"".join(lines))
    with pytest.raises(RegistryError, match="line 3 breaks the append-only chain"):
        L.read_promotion_log(home)


def test_champion_loads_identically_in_a_fresh_process(home: Path, data: pd.DataFrame) -> None:
    bundle = P.ForecasterPackage.build(
        {"har": har(), "ewma": EWMAVol()}, training_data=data, horizons=HS
    )
    ref = R.register_challenger(bundle, home=home, training_data=data)
    R.promote(ref.version, home=home, mode="manual", approver="alice", reason="test")
    loaded = R.load_champion(home=home)
    assert loaded.ref == R.ModelRef(
        "dprm-forecaster", "1", "champion", ref.run_id, "models:/dprm-forecaster/1"
    )
    assert loaded.ref.as_tags()["model_alias"] == "champion" and loaded.primary == "har"
    here = loaded.predict(data, origins="all")
    pd.testing.assert_frame_equal(here, bundle.predict(data, origins="all"), check_exact=True)
    fcs = loaded.vol_forecasts(data)
    assert set(fcs) == {"BTCUSDT", "ETHUSDT"} and fcs["BTCUSDT"].model_id == "har"
    there = predict_in_fresh_process(home, data, "champion")
    pd.testing.assert_frame_equal(there, here, check_exact=True)


def test_train_and_register_picks_the_best_model(home: Path, data: pd.DataFrame) -> None:
    models = {"har": har(), "ewma": EWMAVol(), "rw": RandomWalkVol()}
    out = T.train_and_register(
        models,
        data,
        home=home,
        horizons=HS,
        members=["ewma"],
        start=data[TS].iloc[-100],
        window=300,
        mcs_reps=20,
    )
    loss = out.evaluation.losses
    pooled = loss[(loss["symbol"] == "pooled") & (loss["regime"] == "all")]
    assert out.primary == pooled.groupby("model_id")["qlike"].mean().idxmin() == "har"
    info = R.show_version(out.ref.version, home=home)
    assert info["tags"]["dprm.evaluation_run_id"] == out.evaluation_run_id
    assert (
        info["tags"]["dprm.members"]
        == '{"har": "models.har.HARVol", "ewma": "models.ewma.EWMAVol"}'
    )
    assert info["evaluation_metrics"]["qlike/har/pooled/h1"] == pytest.approx(
        pooled.set_index(["model_id", "horizon"]).loc[("har", 1), "qlike"]
    )
    with pytest.raises(ValueError, match=r"members \['x'\] are not among the models"):
        T.train_and_register(
            models,
            data,
            home=home,
            horizons=HS,
            members=["x"],
            start=data[TS].iloc[-50],
            window=300,
            mcs_reps=20,
        )


def predict_in_fresh_process(home: Path, data: pd.DataFrame, alias: str) -> pd.DataFrame:
    """Load ``models:/dprm-forecaster@<alias>`` through MLflow alone in a new interpreter and return
    its forecast table for every origin of ``data`` (pickled back, so every dtype is kept)."""
    P.naive_utc(data).to_parquet(home / "in.parquet")
    script = textwrap.dedent(f"""
        import sys
        import mlflow, pandas as pd
        model = mlflow.pyfunc.load_model("models:/dprm-forecaster@{alias}")
        out = model.predict(pd.read_parquet(sys.argv[1]), params={{"origins": "all"}})
        out.to_pickle(sys.argv[2])
    """)
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": R.tracking_uri(home),
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "MLFLOW_LOGGING_LEVEL": "WARNING",
    }
    proc = subprocess.run(
        [sys.executable, "-c", script, str(home / "in.parquet"), str(home / "out.pkl")],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return pd.read_pickle(home / "out.pkl")
