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
