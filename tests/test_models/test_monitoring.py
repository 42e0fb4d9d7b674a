"""Monitoring maths: rolling QLIKE, MZ slope, coverage, PSI, freshness and the report."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from models import monitoring as mon


def _qlike_ref(y: np.ndarray, f: np.ndarray) -> np.ndarray:
    return y / f - np.log(y / f) - 1.0


# ---- rolling QLIKE and the ratio check -----------------------------------------------------------
def test_rolling_qlike_matches_pandas_rolling_mean(rng: np.random.Generator) -> None:
    y = rng.lognormal(-9, 0.6, 300)
    f = y * rng.lognormal(0, 0.3, 300)
    got = mon.rolling_qlike(y, f, 20)
    ref = pd.Series(_qlike_ref(y, f)).rolling(20).mean().to_numpy()
    assert np.isnan(got[:19]).all()
    np.testing.assert_allclose(got[19:], ref[19:], rtol=1e-12, atol=0)


def test_rolling_qlike_is_zero_for_perfect_forecasts() -> None:
    y = np.array([1.0, 2.0, 3.0, 4.0])
    np.testing.assert_allclose(mon.rolling_qlike(y, y, 2)[1:], 0.0, atol=1e-15)
    assert np.isnan(mon.rolling_qlike(y, y, 5)).all()  # window longer than the data


@pytest.mark.parametrize("window", [0, -1, 2.5])
def test_rolling_qlike_rejects_bad_window(window: float) -> None:
    with pytest.raises(ValueError, match="'window' parameter of rolling_qlike must be an int >= 1"):
        mon.rolling_qlike([1.0, 2.0], [1.0, 2.0], window)


def test_qlike_check_ratio_against_best_baseline_by_hand() -> None:
    y = np.array([1.0, 2.0, 1.0, 2.0, 1.0, 4.0])
    champ = np.array([2.0, 2.0, 2.0, 2.0, 2.0, 2.0])
    good = np.array([9.0, 9.0, 1.0, 2.0, 1.0, 4.0])  # perfect over the last 4, awful before
    bad = np.full(6, 0.5)
    c = mon.qlike_check(y, champ, {"bad": bad, "good": good}, window=4, max_ratio=1.1, symbol="X")
    champ_q = _qlike_ref(y[-4:], champ[-4:]).mean()
    # "good" is perfect on the window: its QLIKE is 0, so the ratio is infinite -> breach
    assert c.name == "qlike_ratio" and c.symbol == "X" and c.breached
    assert math.isinf(c.value) and "'good'" in c.detail
    c2 = mon.qlike_check(y, champ, {"bad": bad}, window=4, max_ratio=1.1)
    bad_q = _qlike_ref(y[-4:], bad[-4:]).mean()
    assert c2.value == pytest.approx(champ_q / bad_q, rel=1e-12)
    assert c2.breached == (champ_q / bad_q > 1.1)


def test_qlike_check_no_breach_when_champion_is_the_truth(rng: np.random.Generator) -> None:
    truth = rng.lognormal(-9, 0.5, 500)
    y = truth * rng.chisquare(5, 500) / 5  # noisy proxy of the true variance
    base = pd.Series(y).shift(1).bfill().to_numpy()  # random walk on the proxy
    c = mon.qlike_check(y, truth, {"rw": base}, window=250, max_ratio=1.0)
    assert c.value < 1.0 and not c.breached


def test_qlike_check_uses_all_rows_when_window_is_longer() -> None:
    y = np.array([1.0, 2.0, 3.0])
    f = np.array([2.0, 2.0, 2.0])
    b = np.array([1.5, 1.5, 1.5])
    c = mon.qlike_check(y, f, {"b": b}, window=100)
    assert c.value == pytest.approx(_qlike_ref(y, f).mean() / _qlike_ref(y, b).mean(), rel=1e-12)
    assert "last 3 origins" in c.detail


def test_qlike_check_errors() -> None:
    with pytest.raises(ValueError, match="needs at least one baseline"):
        mon.qlike_check([1.0], [1.0], {}, window=1)
    with pytest.raises(ValueError, match="'max_ratio' parameter of qlike_check must be > 0"):
        mon.qlike_check([1.0], [1.0], {"b": [1.0]}, window=1, max_ratio=0)
    with pytest.raises(ValueError, match="same shape"):
        mon.qlike_check([1.0, 2.0], [1.0], {"b": [1.0, 2.0]}, window=1)
    with pytest.raises(ValueError, match="baseline 'b' has shape"):
        mon.qlike_check([1.0, 2.0], [1.0, 2.0], {"b": [1.0]}, window=1)
    with pytest.raises(ValueError, match="f must be finite and > 0"):
        mon.qlike_check([1.0, 2.0], [1.0, -2.0], {"b": [1.0, 2.0]}, window=1)
    empty = mon.qlike_check([], [], {"b": []}, window=5)
    assert math.isnan(empty.value) and not empty.breached


# ---- Mincer-Zarnowitz ----------------------------------------------------------------------------
def test_mz_check_slope_matches_statsmodels(rng: np.random.Generator) -> None:
    f = rng.lognormal(-9, 0.5, 400)
    y = 0.3 * f.mean() + 0.7 * f + rng.normal(0, 0.1 * f.std(), 400)
    y = np.abs(y)
    c = mon.mz_check(y, f, horizon=1, symbol="S")
    ref = sm.OLS(y, sm.add_constant(f)).fit()
    assert c.value == pytest.approx(ref.params[1], rel=1e-10)
    assert not c.breached and c.threshold == "in [0.5, 1.5]"


@pytest.mark.parametrize("slope, breached", [(0.2, True), (1.0, False), (2.5, True)])
def test_mz_check_breaches_outside_band(
    rng: np.random.Generator, slope: float, breached: bool
) -> None:
    f = rng.lognormal(-9, 0.5, 300)
    y = slope * f + 1e-6 + np.abs(rng.normal(0, 1e-7, 300))
    c = mon.mz_check(y, f, horizon=5)
    assert c.value == pytest.approx(slope, abs=0.05)
    assert c.breached is breached


def test_mz_check_too_few_pairs_and_bad_band() -> None:
    c = mon.mz_check([1.0, 2.0], [1.0, 2.0], min_obs=30)
    assert math.isnan(c.value) and not c.breached and "only 2" in c.detail
    with pytest.raises(ValueError, match="slope_min < 1 < slope_max"):
        mon.mz_check([1.0], [1.0], slope_min=1.2, slope_max=1.5)


# ---- coverage ------------------------------------------------------------------------------------
def test_interval_coverage_by_hand() -> None:
    y = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    lo = np.array([0.0, 2.0, 3.5, 0.0, 6.0])
    hi = np.array([2.0, 2.0, 4.0, 3.0, 7.0])
    assert mon.interval_coverage(y, lo, hi) == (pytest.approx(0.4), 5)  # rows 0 and 1 (closed)
    with pytest.raises(
        ValueError, match="lower must be <= upper; got lower=3.0 > upper=2.0 at position 1"
    ):
        mon.interval_coverage([1.0, 1.0], [0.0, 3.0], [1.0, 2.0])


def test_coverage_check_binomial_p_value_matches_scipy(rng: np.random.Generator) -> None:
    n = 200
    y = rng.uniform(0, 1, n)
    lo, hi = np.zeros(n), np.full(n, 0.5)  # true coverage 0.5, nominal 0.9
    c = mon.coverage_check(y, lo, hi, nominal=0.9, alpha=0.01, symbol="S")
    hits = int(((y >= 0) & (y <= 0.5)).sum())
    assert c.value == pytest.approx(hits / n)
    p = stats.binomtest(hits, n, 0.9).pvalue
    assert f"{p:.3g}" in c.detail and c.breached
    ok = mon.coverage_check(y, lo, np.full(n, 0.9), nominal=0.9)
    assert not ok.breached


def test_coverage_check_errors_and_small_samples() -> None:
    with pytest.raises(ValueError, match="'nominal' parameter of coverage_check must be in"):
        mon.coverage_check([1.0], [0.0], [2.0], nominal=1.0)
    with pytest.raises(ValueError, match="'alpha' parameter of coverage_check must be in"):
        mon.coverage_check([1.0], [0.0], [2.0], nominal=0.9, alpha=0)
    c = mon.coverage_check([1.0] * 5, [0.0] * 5, [2.0] * 5, nominal=0.9)
    assert not c.breached and "not tested" in c.detail


# ---- PSI and drift -------------------------------------------------------------------------------
def test_psi_by_hand_all_mass_in_one_decile() -> None:
    ref = np.arange(100.0)
    cur = np.full(50, 0.5)
    expected = (1 - 0.1) * np.log(1 / 0.1) + 9 * (1e-4 - 0.1) * np.log(1e-4 / 0.1)
    assert mon.psi(ref, cur, bins=10) == pytest.approx(expected, rel=1e-12)


def test_psi_of_a_sample_with_itself_is_zero_and_nan_ignored(rng: np.random.Generator) -> None:
    x = rng.normal(size=1000)
    assert mon.psi(x, x) == pytest.approx(0.0, abs=1e-12)
    assert mon.psi(np.append(x, np.nan), np.append(x, np.inf)) == pytest.approx(0.0, abs=1e-12)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), shift=st.floats(-2, 2), bins=st.integers(2, 20))
def test_psi_invariant_to_monotone_transforms(seed: int, shift: float, bins: int) -> None:
    g = np.random.default_rng(seed)
    ref = g.normal(size=400)
    cur = g.normal(shift, 1.0, size=150)
    a = mon.psi(ref, cur, bins=bins)
    b = mon.psi(np.exp(ref), np.exp(cur), bins=bins)
    assert a >= 0 and a == pytest.approx(b, rel=1e-12, abs=1e-12)


def test_psi_grows_with_the_shift(rng: np.random.Generator) -> None:
    ref = rng.normal(size=5000)
    values = [mon.psi(ref, rng.normal(m, 1, 5000)) for m in (0.0, 0.25, 0.5, 1.0)]
    assert values == sorted(values) and values[0] < 0.02 and values[-1] > 0.25


def test_psi_errors() -> None:
    with pytest.raises(ValueError, match="'bins' parameter of psi must be an int >= 2"):
        mon.psi([1.0], [1.0], bins=1)
    with pytest.raises(ValueError, match="needs finite values in both samples; got 0 reference"):
        mon.psi([np.nan], [1.0])


def test_drift_check(rng: np.random.Generator) -> None:
    ref = rng.lognormal(-9, 0.4, 500)
    same = mon.drift_check(ref, rng.lognormal(-9, 0.4, 200), feature="rv_var", symbol="S")
    moved = mon.drift_check(ref, rng.lognormal(-7, 0.4, 200), feature="rv_var")
    assert same.name == "psi:rv_var" and not same.breached
    assert moved.breached and moved.value > 0.25
    few = mon.drift_check(ref, ref[:5], feature="rv_var")
    assert math.isnan(few.value) and not few.breached
    with pytest.raises(ValueError, match="'max_psi' parameter of drift_check must be > 0"):
        mon.drift_check(ref, ref, feature="x", max_psi=0)


# ---- freshness -----------------------------------------------------------------------------------
def test_freshness_check() -> None:
    latest = pd.Timestamp("2024-01-01 00:00", tz="UTC")
    ok = mon.freshness_check(latest, latest + pd.Timedelta("36h"), "2D")
    assert ok.value == pytest.approx(36.0) and not ok.breached
    late = mon.freshness_check(latest, latest + pd.Timedelta("49h"), pd.Timedelta("2D"))
    assert late.breached and late.value == pytest.approx(49.0)
    none = mon.freshness_check(None, latest, "1D")
    assert none.breached and math.isinf(none.value)
    with pytest.raises(ValueError, match="'max_age' parameter of freshness_check must be > 0"):
        mon.freshness_check(latest, latest, "0s")
    with pytest.raises(ValueError, match="both be timezone-aware or both naive"):
        mon.freshness_check(latest, pd.Timestamp("2024-01-02"), "1D")


# ---- the report ----------------------------------------------------------------------------------
def test_report_json_and_markdown() -> None:
    checks = (
        mon.Check("qlike_ratio", "BTC", 1.3, "<= 1.1", True, "champion is 30% worse"),
        mon.Check("mz_slope", "BTC", math.nan, "in [0.5, 1.5]", False, "too few"),
        mon.Check("freshness", None, math.inf, "age <= 1 day", True, "no data at all"),
    )
    rep = mon.MonitorReport(checks, pd.Timestamp("2024-01-01", tz="UTC"), {"dataset": "sim"})
    assert not rep.ok and [c.name for c in rep.breaches] == ["qlike_ratio", "freshness"]
    doc = json.loads(rep.to_json())
    assert doc["status"] == "breach" and doc["n_breaches"] == 2
    assert doc["checks"][1]["value"] is None and doc["checks"][2]["value"] == "inf"
    md = rep.to_markdown()
    assert "**Status: BREACH**" in md and "## Breaches" in md and "champion is 30% worse" in md
    assert (
        mon.summarize_breaches(checks)
        == "qlike_ratio[BTC]=1.3 (<= 1.1); freshness[all]=inf (age <= 1 day)"
    )
    clean = mon.MonitorReport(checks[1:2], pd.Timestamp("2024-01-01", tz="UTC"))
    assert clean.ok and "## Breaches" not in clean.to_markdown()
    assert mon.summarize_breaches(clean.checks) == "no breach"
