"""The backtest statistics against hand-computed cases, closed forms and simulation."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from features.errors import DataError
from margin import backtest as bt


def _lr_by_hand(x: int, n: int, p: float) -> float:
    phat = x / n
    l0 = (n - x) * math.log(1 - p) + (x * math.log(p) if x else 0.0)
    l1 = ((n - x) * math.log(1 - phat) if x < n else 0.0) + (x * math.log(phat) if x else 0.0)
    return -2 * (l0 - l1)


def test_kupiec_zero_breaches_in_250_days_is_rejected_with_lr_5_03() -> None:
    lr, p = bt.kupiec_pof(0, 250, 0.01)
    assert lr == pytest.approx(-2 * 250 * math.log(0.99), rel=1e-12)
    assert round(lr, 2) == 5.03 and lr > 3.84 and p < 0.05


def test_kupiec_at_5pct_accepts_1_to_6_breaches_in_250_days() -> None:
    accepted = [x for x in range(0, 15) if bt.kupiec_pof(x, 250, 0.01)[0] < 3.84]
    assert accepted == [1, 2, 3, 4, 5, 6]


@pytest.mark.parametrize("x,n", [(0, 250), (3, 250), (10, 2094), (21, 2094), (250, 250)])
def test_kupiec_lr_matches_the_hand_formula_and_chi2(x: int, n: int) -> None:
    lr, p = bt.kupiec_pof(x, n, 0.01)
    assert lr == pytest.approx(_lr_by_hand(x, n, 0.01), rel=1e-12, abs=1e-12)
    assert p == pytest.approx(stats.chi2.sf(lr, 1), rel=1e-12)


def test_ten_breaches_in_2094_days_two_sided_rejected_at_p_0_007() -> None:
    """The issue's yardstick: the buffered FHS-EWMA's 10 breaches in 2,094 days."""
    _, p = bt.kupiec_pof(10, 2094, 0.01)
    assert round(p, 3) == 0.007


def test_traffic_light_zones_at_their_boundaries() -> None:
    zones = [bt.traffic_light(k, 250, 0.01) for k in range(12)]
    assert zones == ["green"] * 5 + ["yellow"] * 5 + ["red"] * 2
    # the boundaries are the binomial cumulative 95% and 99.99%
    assert stats.binom.cdf(4, 250, 0.01) < 0.95 <= stats.binom.cdf(5, 250, 0.01)
    assert stats.binom.cdf(9, 250, 0.01) < 0.9999 <= stats.binom.cdf(10, 250, 0.01)


def test_window_zones_are_consecutive_blocks() -> None:
    b = np.zeros(760, dtype=bool)
    b[[3, 10, 20, 30, 40]] = True  # 5 in the first block: yellow
    b[250 + np.arange(0, 100, 10)] = True  # 10 in the second: red
    z = bt.window_zones(b, 250, 0.01)
    assert [(w["start"], w["breaches"], w["zone"]) for w in z] == [
        (0, 5, "yellow"), (250, 10, "red"), (500, 0, "green")]


def test_yellow_band_is_the_binomial_band_of_yellow_windows() -> None:
    py = stats.binom.cdf(9, 250, 0.01) - stats.binom.cdf(4, 250, 0.01)
    lo, hi = bt.yellow_band(20)
    assert (lo, hi) == (int(stats.binom.ppf(0.025, 20, py)), int(stats.binom.ppf(0.975, 20, py)))
    # a calibrated model's yellow windows fall in the band about 95% of the time
    rng = np.random.default_rng(3)
    counts = [sum(w["zone"] == "yellow" for w in bt.window_zones(rng.random(5000) < 0.01))
              for _ in range(400)]
    inside = np.mean([lo <= c <= hi for c in counts])
    assert inside >= 0.93


def test_christoffersen_by_hand() -> None:
    # 0 0 1 1 0 0 0 1 0 0: transitions n00=4, n01=2, n10=2, n11=1
    b = np.array([0, 0, 1, 1, 0, 0, 0, 1, 0, 0], dtype=bool)
    c = bt.christoffersen(b, 0.3)
    assert (c["n00"], c["n01"], c["n10"], c["n11"]) == (4, 2, 2, 1)
    p01, p11, pi = 2 / 6, 1 / 3, 3 / 9
    ll_ind = 4 * math.log(1 - p01) + 2 * math.log(p01) + 2 * math.log(1 - p11) + math.log(p11)
    ll_iid = 6 * math.log(1 - pi) + 3 * math.log(pi)
    assert c["lr_ind"] == pytest.approx(max(0.0, -2 * (ll_iid - ll_ind)), abs=1e-12)
    lr_pof = _lr_by_hand(3, 10, 0.3)
    assert c["lr_cc"] == pytest.approx(lr_pof + c["lr_ind"], rel=1e-12)
    assert c["p_cc"] == pytest.approx(stats.chi2.sf(c["lr_cc"], 2), rel=1e-12)


def test_clustered_breaches_fail_independence() -> None:
    b = np.zeros(1000, dtype=bool)
    b[500:510] = True  # ten in a row: right count, clustered
    c = bt.christoffersen(b, 0.01)
    assert c["p_ind"] < 1e-6 and c["p_cc"] < 1e-6
    assert bt.kupiec_pof(10, 1000, 0.01)[1] == pytest.approx(1.0)


def test_overlap_null_keeps_the_size_that_chi2_loses() -> None:
    """With a 5-day MPOR sampled daily, calibrated breaches cluster: chi2 independence p-values
    reject far more than 5%; the simulated null does not."""
    rng = np.random.default_rng(11)
    null = bt.overlap_null(500, 5, 0.01, n_sim=400, seed=1)
    q = math.sqrt(5) * stats.norm.ppf(0.99)
    rej_chi2, rej_sim = [], []
    for _ in range(200):
        r = rng.standard_normal(504)
        b = np.convolve(r, np.ones(5), mode="valid") > q
        t = bt.coverage_tests(b, 0.01, h=5, null=null)
        rej_sim.append(t.p_cc < 0.05)
        rej_chi2.append(bt.christoffersen(b, 0.01)["p_cc"] < 0.05)
    assert np.mean(rej_chi2) > 0.3
    assert np.mean(rej_sim) < 0.12


def test_holm_by_hand() -> None:
    assert bt.holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert bt.holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])


def test_az_z2_by_hand_and_its_null_is_centred() -> None:
    loss = np.array([5.0, -1.0, 12.0, 3.0])
    var = np.array([4.0, 4.0, 10.0, 4.0])
    es = np.array([6.0, 6.0, 15.0, 6.0])
    # breaches: day 0 (5 > 4) and day 2 (12 > 10): 1 - (5/6 + 12/15) / (4 * 0.025)
    assert bt.az_z2(loss, var, es, 0.025) == pytest.approx(1 - (5 / 6 + 12 / 15) / 0.1)
    # each day's predictive distribution: 1000 scenario losses; tail = the 25 worst
    rng = np.random.default_rng(0)
    tails, n, v, e = [], [], [], []
    for _ in range(300):
        x = np.sort(rng.standard_t(5, 1000))[::-1] * rng.uniform(0.5, 2)
        tails.append(x[:25])
        n.append(1000)
        v.append(x[24])  # VaR97.5: the 25th largest loss
        e.append(x[:25].mean())
    null = bt.az_z2_null(tails, n, v, e, 0.025, n_sim=2000, seed=1)
    assert abs(np.mean(null)) < 0.05  # E[Z2] = 0 under the null (strict > VaR: a slight bias)
    # Acerbi-Szekely: the 5% critical value is near -0.7 for alpha 2.5% across distributions
    assert -1.2 < np.quantile(null, 0.05) < -0.4


def test_shortfall_and_excess_by_hand() -> None:
    loss = np.array([1.0, 5.0, 2.0, 9.0])
    margin = np.array([2.0, 4.0, 3.0, 6.0])
    s = bt.shortfall(loss, margin)
    assert s["n"] == 2 and s["mean"] == pytest.approx(2.0) and s["max"] == pytest.approx(3.0)
    assert s["max_rel"] == pytest.approx(0.5)
    e = bt.excess(loss, margin)
    assert e["median"] == pytest.approx(np.median([1.0, -1.0, 1.0, -3.0]))


def test_procyclicality_by_hand() -> None:
    m = np.array([10.0, 10, 10, 12, 30, 20, 15, 5, 5, 5])
    pc = bt.procyclicality(m)
    assert pc["peak_trough"] == pytest.approx(6.0)
    assert pc["max_1d"] == pytest.approx(2.5)  # 12 -> 30
    assert pc["max_5d"] == pytest.approx(3.0)  # 30 over min(10, 10, 10, 12)
    assert pc["max_30d"] == pytest.approx(3.0)  # within 30 days: all the days before
    assert pc["vol"] == pytest.approx(np.diff(np.log(m)).std(ddof=1))


def test_crash_lead_by_hand() -> None:
    import pandas as pd

    dates = pd.date_range("2020-03-02", periods=15, freq="D", tz="UTC")
    m = np.array([10, 10, 10, 10, 10, 10, 11, 12, 13, 14, 15, 20, 25, 30, 30], dtype=float)
    # crash day index 10 (2020-03-12): before = m[5]=10 -> m[10]=15: +50%; during m[15]... n/a
    assert bt.crash_lead(dates, m, "2020-03-12") is None  # the window after runs off the end
    x = bt.crash_lead(dates, m, "2020-03-09", before=5, during=5)  # index 7
    assert x["rise_before"] == pytest.approx(12 / 10 - 1)
    assert x["rise_during"] == pytest.approx(25 / 12 - 1)
    assert x["lead"] == pytest.approx(0.2 / (0.2 + 25 / 12 - 1))


def test_cost_multiplier_uses_only_the_past_and_meets_coverage() -> None:
    rng = np.random.default_rng(5)
    loss = rng.standard_normal(1500)
    margin = np.full(1500, 1.0)  # far too small for a 1% breach rate (16% breach)
    k = bt.cost_multiplier(loss, margin, 0.01, min_obs=250)
    assert np.all(k[:250] == 1.0)
    # walk-forward: the multiplier of day t is unchanged when losses from t on are changed
    loss2 = loss.copy()
    loss2[1000:] *= 10
    k2 = bt.cost_multiplier(loss2, margin, 0.01, min_obs=250)
    assert np.array_equal(k[:1001], k2[:1001])
    # the scaled margin passes the one-sided test on the data it was chosen on
    t = 1400
    x = int(np.sum(loss[:t] > k[t] * margin[:t]))
    assert stats.binom.sf(x - 1, t, 0.01) >= 0.05
    assert 2.0 < k[t] < 3.0  # near the normal 99% quantile 2.33


def test_ratio_interval_covers_the_true_ratio() -> None:
    rng = np.random.default_rng(8)
    a = 2 + rng.standard_normal(600).cumsum() * 0.0 + rng.random(600)
    b = 2 * a + rng.random(600) * 0.01
    r, lo, hi = bt.ratio_interval(a, b, block=20, n_boot=300, seed=0)
    assert lo <= r <= hi and lo < 0.5 < hi + 0.01


def test_bad_inputs_name_the_field() -> None:
    with pytest.raises(DataError, match="n_breaches"):
        bt.kupiec_pof(5, 3, 0.01)
    with pytest.raises(DataError, match="p must be"):
        bt.traffic_light(1, 250, 1.5)
    with pytest.raises(DataError, match="ES must be"):
        bt.az_z2(np.ones(3), np.ones(3), np.zeros(3), 0.025)


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 40), st.integers(41, 3000))
def test_kupiec_is_zero_exactly_at_the_observed_rate(x: int, n: int) -> None:
    """LR >= 0, and LR = 0 when p equals the observed rate (the MLE)."""
    assert bt.kupiec_pof(x, n, 0.01)[0] >= 0
    assert bt.kupiec_pof(x, n, x / n)[0] == pytest.approx(0.0, abs=1e-9)
