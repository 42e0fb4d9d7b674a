"""The correlation champion in the registry: package, gate, promotion, rollback, integrity and a
fresh-process load that gives identical matrices."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from features.errors import RegistryError
from models import catalog
from models import registry as R
from models.corr_gate import CorrGateConfig, evaluate_corr_gate
from models.corr_package import CorrelationPackage
from models.promotion_log import read_promotion_log

NAME = "dprm-correlation-test"
GATE = CorrGateConfig(horizons=(1, 5), n_origins=120, window=150, refit_every=20, mcs_reps=20)


def price_frame(rng: np.random.Generator, n: int = 520, rho: float = 0.6) -> pd.DataFrame:
    """Daily closes of 4 assets with a constant equicorrelation ``rho`` (so shrinkage toward a
    constant correlation beats the noisy EWMA and the sample correlation)."""
    syms = ("AAAUSDT", "BBBUSDT", "CCCUSDT", "DDDUSDT")
    m = len(syms)
    corr = np.full((m, m), rho) + (1 - rho) * np.eye(m)
    r = rng.standard_normal((n, m)) @ np.linalg.cholesky(corr).T * 0.02
    ts = pd.date_range("2023-01-01", periods=n, freq="D", tz="UTC")
    close = 100 * np.exp(np.cumsum(r, axis=0))
    return pd.DataFrame({"ts": np.repeat(ts, m), "symbol": np.tile(syms, n),
                         "close": close.reshape(-1)})


@pytest.fixture(scope="module")
def prices() -> pd.DataFrame:
    return price_frame(np.random.default_rng(20261203))


def package(prices: pd.DataFrame, name: str, **kw) -> CorrelationPackage:
    return CorrelationPackage.build(name, catalog.build(name, **kw), horizons=(1, 5), freq=None,
                                    training_data=prices)


def test_package_round_trip_and_tamper_check(tmp_path: Path, prices: pd.DataFrame) -> None:
    p = package(prices, "lw_constant")
    p.save(tmp_path / "pkg")
    back = CorrelationPackage.load(tmp_path / "pkg")
    a, b = p.forecast(prices, origins="all"), back.forecast(prices, origins="all")
    np.testing.assert_array_equal(a.corr, b.corr)
    assert a.corr.shape[1:] == (2, 4, 4)
    f = tmp_path / "pkg" / "members" / "lw_constant.joblib"
    f.write_bytes(f.read_bytes() + b"x")
    with pytest.raises(ValueError, match=r"lw_constant\.joblib has SHA-256 .* modified"):
        CorrelationPackage.load(tmp_path / "pkg")
    with pytest.raises(ValueError, match=r"lacks symbol\(s\) \['DDDUSDT'\]"):
        p.predict(prices[prices["symbol"] != "DDDUSDT"])


def test_gate_passes_a_better_model_and_rejects_a_worse_one(prices: pd.DataFrame) -> None:
    good = package(prices, "lw_constant")
    first = evaluate_corr_gate(good, None, prices, GATE)
    by = {c.name: c for c in first.checks}
    assert by["stein_vs_champion"].passed is None  # no champion yet
    assert by["beats_ewma"].passed and by["beats_rolling"].passed, first.reason
    assert first.passed and first.loss == "stein"
    # the reported figures are the challenger's relative to the baselines
    assert 0 < first.extra["gmv_ratio_vs_ewma"] < 1.5
    assert first.qlike["challenger"] < first.qlike["ewma_corr"]
    noisy = package(prices, "ewma_corr", lam=0.6)
    second = evaluate_corr_gate(noisy, good, prices, GATE)
    by = {c.name: c for c in second.checks}
    assert by["stein_vs_champion"].passed is False
    assert by["beats_ewma"].passed is False
    assert not second.passed and "stein_vs_champion" in second.reason


def test_register_promote_reject_rollback_and_fresh_process(home: Path, prices: pd.DataFrame) -> None:
    good = package(prices, "lw_constant")
    v1 = R.register_challenger(good, home=home, training_data=prices, target="correlation",
                               name=NAME, horizons=(1, 5))
    res = R.promote(v1.version, home=home, data=prices, name=NAME, gate_config=GATE)
    assert res.promoted, res.decision.reason
    assert R.champion_version(home, NAME) == v1.version
    noisy = package(prices, "ewma_corr", lam=0.6)
    v2 = R.register_challenger(noisy, home=home, training_data=prices, target="correlation",
                               name=NAME, horizons=(1, 5))
    rej = R.promote(v2.version, home=home, data=prices, name=NAME, gate_config=GATE)
    assert not rej.promoted and R.champion_version(home, NAME) == v1.version
    shown = R.show_version(v1.version, home=home, name=NAME)
    assert shown["tags"]["dprm.target"] == "correlation"
    assert "gate.stein" in shown["tags"] and "gmv_ratio_vs_ewma" in shown["tags"]["gate.extra"]
    # manual promotion then rollback restore v1; the log records every move
    R.promote(v2.version, home=home, mode="manual", approver="risk", reason="test", name=NAME)
    R.rollback(home=home, approver="risk", reason="back", name=NAME)
    assert R.champion_version(home, NAME) == v1.version
    events = [e["action"] for e in read_promotion_log(home) if e["name"] == NAME]
    assert events == ["register_challenger", "promote", "register_challenger", "reject",
                      "promote", "rollback"]
    # the champion loaded in a fresh process gives the same matrices as in this one
    here = R.load_package("champion", home=home, name=NAME).predict(prices, origins="all")
    prices.to_parquet(home / "in.parquet")
    script = textwrap.dedent(f"""
        import sys
        import pandas as pd
        from pathlib import Path
        from models import registry as R
        p = R.load_package("champion", home=Path({str(home)!r}), name={NAME!r})
        p.predict(pd.read_parquet(sys.argv[1]), origins="all").to_parquet(sys.argv[2])
    """)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    proc = subprocess.run([sys.executable, "-c", script, str(home / "in.parquet"),
                           str(home / "out.parquet")], env=env, capture_output=True, text=True,
                          timeout=180, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    there = pd.read_parquet(home / "out.parquet")
    pd.testing.assert_frame_equal(here.reset_index(drop=True), there.reset_index(drop=True))


def test_a_tampered_version_is_refused_and_the_champion_keeps_serving(
    home: Path, prices: pd.DataFrame
) -> None:
    v1 = R.register_challenger(package(prices, "lw_constant"), home=home, training_data=prices,
                               target="correlation", name=NAME, horizons=(1, 5))
    R.promote(v1.version, home=home, data=prices, name=NAME, gate_config=GATE)
    v2 = R.register_challenger(package(prices, "lw_identity"), home=home, training_data=prices,
                               target="correlation", name=NAME, horizons=(1, 5))
    files = list((home / "mlartifacts").rglob("lw_identity.joblib"))
    assert files, "the stored model file"
    for f in files:
        f.write_bytes(b"not a model")
    with pytest.raises(RegistryError, match=rf"version {v2.version} of '{NAME}' cannot be restored"):
        R.promote(v2.version, home=home, data=prices, name=NAME, gate_config=GATE)
    assert R.champion_version(home, NAME) == v1.version
    assert R.load_package("champion", home=home, name=NAME).name == "lw_constant"
