"""The forecast flow's bundle: ledgered issues, the bundle on disk, idempotent reruns."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from models.forecast import RiskForecastBundle
from models.ledger import ForecastLedger
from pipelines.bundles import bundle_dir, issue_bundle, ledger_path
from pipelines.corr_train import train_correlation
from pipelines.flow_config import CorrTrainFlowConfig, ForecastFlowConfig
from tests.test_pipelines.workspaces import copy_workspace


@pytest.fixture
def home(registered_template: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    h = copy_workspace(registered_template, tmp_path / "home")
    monkeypatch.setenv("DPRM_HOME", str(h))
    return h


def test_issue_bundle_ledgers_writes_and_reruns_as_a_no_op(home: Path) -> None:
    train_correlation(home, CorrTrainFlowConfig(candidates=("ewma_corr", "rolling_corr", "dcc"),
                                                eval_periods=60, mcs_reps=20))
    cfg = ForecastFlowConfig()
    out = issue_bundle(home, cfg)
    assert out["symbols"] == ["NASDAQ", "SP500"]
    assert set(out["members"]) == {"vol:1D", "corr:1D"}
    assert out["ledger_rows"]["vol"] > 0 and out["ledger_rows"]["corr"] > 0
    # every candidate of the champion's evaluation run has its walk-forward history ledgered
    ids = set(ForecastLedger(ledger_path(home)).models()["model_id"])
    assert {"dprm-forecaster:ewma", "dprm-forecaster:rw", "dprm-forecaster:har"} <= ids
    latest = (bundle_dir(home, "embedded", "1D") / "latest.json").read_text()
    assert out["bundle_id"] in latest
    b = RiskForecastBundle.load(out["path"])
    assert b.bundle_id == out["bundle_id"] and b.as_of == pd.Timestamp(out["as_of"])
    # the bundle's 1-day variance is the champion's issued forecast at as_of times the scale
    led = ForecastLedger(ledger_path(home))
    vol = b.vol_table.set_index(["symbol", "horizon"])
    for sym in b.symbols:
        issued = led.issued(sym, vol.loc[(sym, 1), "model_id"], b.as_of)
        last = issued[issued["horizon"] == 1].sort_values("as_of").iloc[-1]
        np.testing.assert_allclose(vol.loc[(sym, 1), "forecast_var"], last["forecast_var"],
                                   rtol=1e-12)
        assert b.variance(sym, 1) == pytest.approx(last["forecast_var"] * vol.loc[(sym, 1), "scale"])
    cov = b.covariance(5)
    assert np.all(np.linalg.eigvalsh(cov) > 0)
    again = issue_bundle(home, cfg)
    assert again["bundle_id"] == out["bundle_id"]
    assert again["ledger_rows"] == {"vol": 0, "corr": 0}
    # a bundle at an earlier as_of uses nothing issued after it
    early = issue_bundle(home, cfg, as_of=b.as_of - pd.Timedelta(days=30))
    eb = RiskForecastBundle.load(early["path"])
    assert (eb.vol_table["data_cutoff_ts"] <= eb.as_of).all()
    assert early["bundle_id"] != out["bundle_id"]


def test_margin_of_the_index_example_from_the_issued_bundle(home: Path) -> None:
    from margin.calculator import COMPONENTS
    from pipelines.margin_run import cycle_margin, margin_for, write_margin

    issue_bundle(home, ForecastFlowConfig())
    (m,) = cycle_margin(home, "embedded")
    assert m["failures"] == [] and m["written"] and m["im"] > m["mm"] > 0
    assert sum(m["components"][c] for c in COMPONENTS) == pytest.approx(m["im"], rel=1e-12)
    again = cycle_margin(home, "embedded")
    assert again[0]["path"] == m["path"] and not again[0]["written"]  # idempotent
    # the what-if's incremental margin equals a full recompute with the trade in the book
    book = Path(__file__).resolve().parents[2] / "examples" / "portfolios" / "index_futures_options.csv"
    run = margin_for(home, book, dataset="embedded",
                     rates={"SP500": 0.025, "NASDAQ": 0.025},
                     dividend_yields={"SP500": 0.02, "NASDAQ": 0.01}, trade="SP500,-3")
    assert run.what_if is not None and run.what_if.failure is None
    assert run.what_if.im == pytest.approx(run.what_if.after.im, rel=1e-12)
    path, written = write_margin(home, run)  # an ad-hoc margin: before the APC step
    assert path.read_bytes() == run.result.to_json().encode() and written
    assert path != Path(m["path"]) and m["path"].endswith("-apc.json")
    assert m["apc"]["im"] == pytest.approx(m["im"]) and m["im"] >= m["apc"]["base_im"]
    assert not write_margin(home, run)[1]
    from features.errors import ConfigError

    with pytest.raises(ConfigError, match=r"--as-of .* is before the bundle's as_of"):
        margin_for(home, book, dataset="embedded", as_of="2018-06-01T21:00Z")


def test_margin_without_a_bundle_says_how_to_make_one(tmp_path: Path) -> None:
    from features.errors import ConfigError
    from pipelines.margin_run import margin_for

    with pytest.raises(ConfigError, match=r"no risk-forecast bundle for dataset 'embedded' .*"
                                          r"dprm forecast --dataset embedded"):
        margin_for(tmp_path, tmp_path / "book.csv", dataset="embedded")


def test_bad_margin_inputs_are_named(tmp_path: Path) -> None:
    from features.errors import ConfigError
    from pipelines.margin_run import margin_for, parse_trade

    for bad in ("SP500", "SP500,lots", ",3", "SP500,nan"):
        with pytest.raises(ConfigError, match=rf"--what-if must be INSTRUMENT,QUANTITY .* Got {bad!r}"):
            parse_trade(bad)
    inst, q = parse_trade("SP500, -2")
    assert q == -2.0 and inst.underlying == "SP500"
    (tmp_path / "nobundle").mkdir()
    with pytest.raises(ConfigError, match=r"nobundle is not a risk-forecast bundle \(no bundle.json\)"):
        margin_for(tmp_path, tmp_path / "book.csv", dataset="embedded",
                   bundle=str(tmp_path / "nobundle"))


def test_sim_cycle_margins_every_crypto_example_from_the_hourly_bundle(home: Path) -> None:
    """The simulator's hourly bundle carries the margin horizons 1, 4, 24 h; the cycle's margin
    step prices every crypto example from it (a 1-day MPOR = 24 hourly periods) with no
    failure; "latest" finds the hourly bundle when the dataset has no daily one."""
    from pipelines.margin_run import _CRYPTO_BOOKS, EXAMPLES, cycle_margin, margin_for

    out = issue_bundle(home, ForecastFlowConfig(dataset="sim", freq="1h"))
    b = RiskForecastBundle.load(out["path"])
    assert b.units == ("1h",) and b.horizons("1h") == (1, 4, 24)
    books = cycle_margin(home, "sim")
    assert [Path(m["path"]).name.split("-")[0] for m in books] == [
        Path(f).stem.split("-")[0] for f in _CRYPTO_BOOKS]
    for m in books:
        assert m["failures"] == [], (m["portfolio"], m["failures"])
        assert m["bundle_id"] == b.bundle_id
        # every book needs margin, except a cash-and-carry that the funding income covers
        # (the 20-day simulation's funding rates are high): then exactly zero, in every part
        if m["portfolio"] == "basis_trade" and m["im"] == 0:
            assert m["mm"] == 0 and set(m["components"].values()) == {0.0}
        else:
            assert m["im"] > m["mm"] > 0, (m["portfolio"], m["components"])
    run = margin_for(home, EXAMPLES / "naked_options.csv", dataset="sim")
    assert run.result.explain["forecast_unit"] == "1h"
    assert run.result.explain["scale_factors"]["BTC"]["forecast_horizon_used"] == 24


def test_a_symbol_the_champion_cannot_serve_falls_back_to_ewma(home: Path, tmp_path: Path) -> None:
    """A champion trained on SP500 alone: NASDAQ's forecasts, residuals and scale come from the
    EWMA baseline ledgered beside it, and the bundle says so (stale, with the reason)."""
    from models.evaluation import merge_evaluations
    from pipelines import steps
    from pipelines.config import load_config
    from pipelines.flow_config import TrainFlowConfig
    from tests.test_pipelines.train_settings import SMALL_TRAIN_TOML

    settings = tmp_path / "small.toml"
    settings.write_text(SMALL_TRAIN_TOML)
    cfg = load_config(TrainFlowConfig, settings, "train", model_name="dprm-forecaster-sp",
                      symbols=("SP500",))
    results = {s: steps.evaluate_symbol(home, cfg, s) for s in steps.train_symbols(home, cfg)}
    assert list(results) == ["SP500"]
    fp = steps.feature_fingerprint(home, cfg.dataset, cfg.freq, ["SP500"])
    assert steps.register_and_promote(home, cfg, merge_evaluations(results), fp).promoted
    out = issue_bundle(home, ForecastFlowConfig(model_name="dprm-forecaster-sp"))
    b = RiskForecastBundle.load(out["path"])
    assert b.symbols == ("NASDAQ", "SP500")
    vt = b.vol_table.set_index("symbol")
    assert set(vt.loc["NASDAQ", "model_id"]) == {"ewma"}
    assert all(m.startswith("dprm-forecaster-sp:") for m in vt.loc["SP500", "model_id"])
    assert "SP500" not in b.stale and "fell back to ewma baseline" in b.stale["NASDAQ"].message
    assert ("fallback:1D", "ewma") in [(m.role, m.name) for m in b.provenance.members]
    # NASDAQ's residuals use the baseline's issued vols over its whole history
    led = ForecastLedger(ledger_path(home))
    issued = led.issued("NASDAQ", "ewma", b.as_of)
    r = b.residuals.query("symbol == 'NASDAQ'")
    assert len(r) > 1000 and r["ts"].min() >= pd.Timestamp(issued["as_of"].min())


def test_margin_compare_and_method_from_the_cli(home: Path) -> None:
    """`dprm margin --compare --json` puts every method on the same book and market state (each
    row's IM equals the method computed alone); `--method fixed` prints one; a bad name is one
    line."""
    import json

    from typer.testing import CliRunner

    from margin.methods import compute_method
    from pipelines.cli import app
    from pipelines.margin_run import COMPARE, margin_inputs

    issue_bundle(home, ForecastFlowConfig())
    book = Path(__file__).resolve().parents[2] / "examples" / "portfolios" / "index_futures_options.csv"
    args = ["margin", "--portfolio", str(book), "--rate", "SP500=0.025", "--rate", "NASDAQ=0.025",
            "--dividend-yield", "SP500=0.02", "--dividend-yield", "NASDAQ=0.01"]
    r = CliRunner().invoke(app, [*args, "--compare", "--json"])
    assert r.exit_code == 0, r.output
    rows = json.loads(r.output)
    assert [x["method"] for x in rows] == ["dprm", "fixed", "span", "deribit", "hvar",
                                           "fhs_ewma 0.94", "fhs_ewma 0.97"]
    inp = margin_inputs(home, book, dataset="embedded", rates={"SP500": 0.025, "NASDAQ": 0.025},
                        dividend_yields={"SP500": 0.02, "NASDAQ": 0.01})
    for x, (name, upd) in zip(rows, COMPARE, strict=True):
        alone = compute_method(name, inp.portfolio, inp.market, inp.bundle,
                               inp.params.model_copy(update=upd))
        assert x["im"] == pytest.approx(alone.im, rel=1e-12) and x["failures"] == []
    assert rows[0]["im_vs_dprm"] == 1.0
    r = CliRunner().invoke(app, [*args, "--method", "fixed"])
    assert r.exit_code == 0 and "by fixed: IM" in r.output
    r = CliRunner().invoke(app, [*args, "--method", "span9"])
    assert r.exit_code == 2 and "--method must be one of" in r.output


def test_stress_report_cites_the_worst_historical_days(home: Path) -> None:
    """On the embedded indices the worst S&P 500 day is 2008-10-15 (-9.0% log), recomputed here
    from the store's closes; `dprm margin --stress --json` reports it with its source."""
    import json

    import numpy as np
    from typer.testing import CliRunner

    from features.store import DataStore
    from pipelines.cli import app
    from pipelines.market import historical_stress

    issue_bundle(home, ForecastFlowConfig())
    store = DataStore(home / "data")
    scen = historical_stress(store, "embedded", ["SP500", "NASDAQ"], "2019-01-03T21:00Z")
    worst = next(s for s in scen if s.name.startswith("SP500 worst fall"))
    bars = store.read("embedded", "bars_1d", symbols=["SP500"]).sort_values("ts")
    r = np.log(bars["close"].to_numpy())
    k = int(np.argmin(np.diff(r)))
    assert worst.date == "2008-10-15" == f"{bars['ts'].iloc[k + 1]:%Y-%m-%d}"
    assert worst.moves["SP500"] == pytest.approx(float(np.diff(r)[k]), rel=1e-12)
    assert "bars_1d" in worst.source and "NASDAQ" in worst.moves
    book = Path(__file__).resolve().parents[2] / "examples" / "portfolios" / "index_futures_options.csv"
    out = CliRunner().invoke(app, ["margin", "--portfolio", str(book), "--rate", "SP500=0.025",
                                   "--rate", "NASDAQ=0.025", "--dividend-yield", "SP500=0.02",
                                   "--dividend-yield", "NASDAQ=0.01", "--stress", "--json"])
    assert out.exit_code == 0, out.output
    rep = json.loads(out.output)
    assert any(x["date"] == "2008-10-15" for x in rep["rows"]) and rep["im"] > 0
    assert rep["rows"][0]["pnl"] == min(x["pnl"] for x in rep["rows"])
