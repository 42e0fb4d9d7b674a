"""Microstructure features against hand-computed cases, pandas references and simulations."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from features import microstructure as ms
from features.schema import DataError

T0 = pd.Timestamp("2024-03-04 10:00:00", tz="UTC")


def _ts(*secs: float) -> pd.Series:
    return pd.Series(T0 + pd.to_timedelta(np.asarray(secs, dtype="float64"), unit="s"))


def _quotes(rows: list[tuple], symbol: str = "X") -> pd.DataFrame:
    """rows of (seconds after T0, bid_px, bid_sz, ask_px, ask_sz)."""
    a = np.array(rows, dtype="float64")
    return pd.DataFrame(
        {
            "ts": _ts(*a[:, 0]),
            "symbol": symbol,
            "bid_px": a[:, 1],
            "bid_sz": a[:, 2],
            "ask_px": a[:, 3],
            "ask_sz": a[:, 4],
        }
    )


def _trades(rows: list[tuple], symbol: str = "X") -> pd.DataFrame:
    """rows of (seconds after T0, price, size, side)."""
    a = np.array(rows, dtype="float64")
    return pd.DataFrame(
        {
            "ts": _ts(*a[:, 0]),
            "symbol": symbol,
            "price": a[:, 1],
            "size": a[:, 2],
            "side": a[:, 3].astype("int8"),
        }
    )


def _random_quotes(
    rng: np.random.Generator, n: int, seconds: float, symbol: str = "X"
) -> pd.DataFrame:
    t = np.sort(rng.uniform(0, seconds, n))
    mid = 100 * np.exp(np.cumsum(rng.normal(0, 2e-4, n)))
    half = rng.choice([0.01, 0.02, 0.03], n)
    bid = np.round(mid - half, 2)
    return pd.DataFrame(
        {
            "ts": _ts(*t),
            "symbol": symbol,
            "bid_px": bid,
            "bid_sz": rng.integers(1, 10, n).astype("float64"),
            "ask_px": bid + 2 * half,
            "ask_sz": rng.integers(1, 10, n).astype("float64"),
        }
    )


def _random_trades(
    rng: np.random.Generator, n: int, seconds: float, symbol: str = "X"
) -> pd.DataFrame:
    t = np.sort(rng.uniform(0, seconds, n))
    return pd.DataFrame(
        {
            "ts": _ts(*t),
            "symbol": symbol,
            "price": 100 * np.exp(np.cumsum(rng.normal(0, 3e-4, n))),
            "size": rng.exponential(1.0, n) + 0.01,
            "side": rng.choice([-1, 0, 1], n, p=[0.45, 0.1, 0.45]).astype("int8"),
        }
    )


# ---------------------------------------------------------------------------------------------
# bar convention
# ---------------------------------------------------------------------------------------------
def test_bar_closes_are_right_closed():
    t = pd.Timestamp("2024-01-01 10:05:00", tz="UTC")
    ts = pd.Series([t, t + pd.Timedelta(1, "ns"), t - pd.Timedelta("4min59.5s")])
    got = ms.bar_closes(ts, "5min")
    want = pd.to_datetime(
        ["2024-01-01 10:05", "2024-01-01 10:10", "2024-01-01 10:05"], utc=True, format="ISO8601"
    )
    assert list(got) == list(want)


@pytest.mark.parametrize("bar", ["7min", "2D", "0s", "-5min", "abc"])
def test_bad_bar_raises(bar):
    q = _quotes([(1, 100, 1, 101, 1)])
    with pytest.raises(ValueError, match="The 'bar' parameter"):
        ms.quote_features(q, bar)


# ---------------------------------------------------------------------------------------------
# quotes
# ---------------------------------------------------------------------------------------------
def test_wap_by_hand():
    assert ms.wap(100.0, 1.0, 101.0, 3.0) == pytest.approx((100 * 3 + 101 * 1) / 4)
    assert ms.wap(100.0, 0.0, 101.0, 0.0) == pytest.approx(100.5)  # no size: the mid
    assert ms.wap(100.0, 5.0, 101.0, 0.0) == pytest.approx(101.0)  # ask empty: leans to ask


def test_ofi_by_hand_cks():
    # q0 -> q1: same prices, bid size 5->7, ask size 4->2:      e = 7 - 5 - 2 + 4 = 4
    # q1 -> q2: bid improves to 100.5 (size 1), ask lifts to 101.5:  e = +1 + qa1(2) = 3
    # q2 -> q3: bid falls back to 100, ask falls to 101 (size 6): e = -qb2(1) - 6 = -7
    bid = [100, 100, 100.5, 100]
    bsz = [5, 7, 1, 4]
    ask = [101, 101, 101.5, 101]
    asz = [4, 2, 3, 6]
    e = ms.order_flow_imbalance(bid, bsz, ask, asz)
    assert np.isnan(e[0])
    np.testing.assert_allclose(e[1:], [4, 3, -7])


def test_quote_features_by_hand():
    q = _quotes(
        [
            (10, 100, 5, 101, 4),
            (40, 100, 7, 101, 2),
            (60, 100.5, 1, 101.5, 3),  # exactly 10:01:00 -> bar closing 10:01:00
            (90, 100, 4, 101, 6),
        ]
    )
    f = ms.quote_features(q, "1min")
    assert list(f["ts"]) == [T0 + pd.Timedelta("1min"), T0 + pd.Timedelta("2min")]
    assert str(f["ts"].dtype) == "datetime64[ns, UTC]"
    w = [
        ms.wap(*r)
        for r in [(100, 5, 101, 4), (100, 7, 101, 2), (100.5, 1, 101.5, 3), (100, 4, 101, 6)]
    ]
    np.testing.assert_allclose(f["wap"], [w[2], w[3]])
    rv1 = np.log(w[1] / w[0]) ** 2 + np.log(w[2] / w[1]) ** 2
    rv2 = np.log(w[3] / w[2]) ** 2
    np.testing.assert_allclose(f["wap_rv_var"], [rv1, rv2])
    np.testing.assert_allclose(f["quote_updates"], [3, 1])
    np.testing.assert_allclose(f["quote_rate_per_s"], [3 / 60, 1 / 60])
    np.testing.assert_allclose(f["ofi"], [4 + 3, -7])
    # bar 1: q0 for 30 s, q1 for 20 s (covered time starts at the first quote); bar 2: q2, q3 30 s each
    s_a, s_b = 1 / 100.5 * 1e4, 1 / 101 * 1e4
    np.testing.assert_allclose(f["spread_bps"], [s_a, (s_b + s_a) / 2])
    np.testing.assert_allclose(f["depth1_tw_base"], [4.5, (2 + 5) / 2])
    np.testing.assert_allclose(f["ofi_norm"], [7 / 4.5, -7 / 3.5])
    np.testing.assert_allclose(f["crossed_locked_share"], [0, 0])


def test_quote_features_empty_bars_carry_state():
    q = _quotes([(30, 100, 1, 101, 3), (210, 100, 2, 102, 2)])
    f = ms.quote_features(q, "1min")
    assert len(f) == 4  # bars closing 10:01 .. 10:04, two of them without an update
    np.testing.assert_allclose(f["quote_updates"], [1, 0, 0, 1])
    # bid unchanged in price: +2 - 1; ask lifted 101 -> 102: + the old ask size 3
    np.testing.assert_allclose(f["ofi"], [0, 0, 0, (2 - 1) + 3])
    np.testing.assert_allclose(f["wap_rv_var"][:3], 0.0)
    s0 = 1 / 100.5 * 1e4
    np.testing.assert_allclose(f["spread_bps"][:3], s0)
    # last bar: 30 s of the old quote then 30 s of the new one
    np.testing.assert_allclose(f["spread_bps"].iloc[3], (s0 + 2 / 101 * 1e4) / 2)
    np.testing.assert_allclose(f["wap"][:3], ms.wap(100, 1, 101, 3))


def test_crossed_locked_share_time_weighted():
    q = _quotes(
        [
            (0.5, 100, 1, 101, 1),
            (15.5, 100, 1, 100, 1),
            (30.5, 100.5, 1, 100.2, 1),
            (45.5, 100, 1, 101, 1),
        ]
    )
    f = ms.quote_features(q, "1min")
    # covered time 0.5..60: locked 15 s + crossed 15 s out of 59.5 s
    np.testing.assert_allclose(f["crossed_locked_share"], [30 / 59.5])
    spreads = np.array([1 / 100.5, 0.0, -0.3 / 100.35, 1 / 100.5]) * 1e4
    np.testing.assert_allclose(
        f["spread_bps"], [(spreads[:3] * 15).sum() / 59.5 + spreads[3] * 14.5 / 59.5]
    )


def test_quote_features_match_pandas_resample(rng):
    q = _random_quotes(rng, 3000, 2 * 3600)
    f = ms.quote_features(q, "5min").set_index("ts")
    g = q.set_index("ts")
    rs = g.resample("5min", closed="right", label="right")
    np.testing.assert_array_equal(
        f["quote_updates"], rs["bid_px"].count().reindex(f.index, fill_value=0)
    )
    w = pd.Series(ms.wap(q.bid_px, q.bid_sz, q.ask_px, q.ask_sz), index=g.index)
    np.testing.assert_allclose(
        f["wap"], w.resample("5min", closed="right", label="right").last().ffill()
    )
    e = pd.Series(ms.order_flow_imbalance(q.bid_px, q.bid_sz, q.ask_px, q.ask_sz), index=g.index)
    ofi_ref = e.resample(
        "5min", closed="right", label="right"
    ).sum()  # NaN of the first update skipped
    np.testing.assert_allclose(f["ofi"], ofi_ref.reindex(f.index, fill_value=0.0))
    r2 = np.log(w).diff() ** 2
    np.testing.assert_allclose(
        f["wap_rv_var"], r2.resample("5min", closed="right", label="right").sum(), atol=1e-18
    )


def test_quote_features_aggregate_consistently(rng):
    q = _random_quotes(rng, 4000, 3 * 3600)
    q["ts"] = q["ts"] + pd.Timedelta("50min")  # first quote before the first full hour
    f5 = ms.quote_features(q, "5min")
    f1 = ms.quote_features(q, "1h")
    hour = ms.bar_closes(f5["ts"], "1h")
    agg = f5.groupby(hour)[["quote_updates", "ofi", "wap_rv_var"]].sum()
    np.testing.assert_allclose(
        f1.set_index("ts")[["quote_updates", "ofi", "wap_rv_var"]], agg, rtol=1e-12
    )
    # a fully covered hour: the time-weighted spread is the mean of its twelve 5-minute values
    full = f1["ts"].iloc[1]
    sub = f5[(f5["ts"] > full - pd.Timedelta("1h")) & (f5["ts"] <= full)]
    assert len(sub) == 12
    np.testing.assert_allclose(
        f1.set_index("ts").loc[full, "spread_bps"], sub["spread_bps"].mean(), rtol=1e-12
    )


def test_quote_features_no_look_ahead(rng):
    q = _random_quotes(rng, 2000, 3600)
    cut = T0 + pd.Timedelta("30min")
    q2 = q.copy()
    later = q2["ts"] > cut
    q2.loc[later, "bid_px"] = q2.loc[later, "bid_px"] * 0.9
    q2.loc[later, "ask_sz"] = 777.0
    extra = _quotes([(1800.0, 1.0, 1.0, 2.0, 1.0)]).assign(ts=cut + pd.Timedelta("1ns"))
    q2 = pd.concat([q2, extra], ignore_index=True)
    a = ms.quote_features(q, "5min")
    b = ms.quote_features(q2, "5min")
    pd.testing.assert_frame_equal(
        a[a["ts"] <= cut].reset_index(drop=True), b[b["ts"] <= cut].reset_index(drop=True)
    )
    assert not a[a["ts"] > cut]["wap"].equals(b[b["ts"] > cut]["wap"])


def test_quote_features_multiple_symbols_independent(rng):
    qa = _random_quotes(rng, 500, 1800, "A")
    qb = _random_quotes(rng, 500, 3600, "B")
    both = ms.quote_features(pd.concat([qb, qa]).sample(frac=1.0, random_state=rng), "5min")
    pd.testing.assert_frame_equal(
        both[both.symbol == "A"].reset_index(drop=True), ms.quote_features(qa, "5min")
    )
    pd.testing.assert_frame_equal(
        both[both.symbol == "B"].reset_index(drop=True), ms.quote_features(qb, "5min")
    )


def test_quote_features_degenerate_inputs():
    empty = _quotes([(1, 100, 1, 101, 1)]).iloc[:0]
    f = ms.quote_features(empty, "5min")
    assert f.empty and list(f.columns[:2]) == ["symbol", "ts"] and "ofi_norm" in f.columns
    one = ms.quote_features(_quotes([(1, 100, 1, 101, 1)]), "5min")
    assert len(one) == 1
    assert one["wap_rv_var"].iloc[0] == 0.0 and one["ofi"].iloc[0] == 0.0
    np.testing.assert_allclose(one["spread_bps"], 1 / 100.5 * 1e4)
    # a single quote exactly on a bar boundary covers no time in its bar: averages undefined
    edge = ms.quote_features(_quotes([(300, 100, 1, 101, 1)]), "5min")
    assert np.isnan(edge["spread_bps"].iloc[0]) and edge["quote_updates"].iloc[0] == 1


def test_quote_features_errors():
    q = _quotes([(1, 100, 1, 101, 1)])
    with pytest.raises(DataError, match="missing required column"):
        ms.quote_features(q.drop(columns="ask_sz"))
    with pytest.raises(DataError, match="bid_px=-1.0 at row 0; expected finite and > 0"):
        ms.quote_features(q.assign(bid_px=-1.0))
    with pytest.raises(DataError, match="ask_sz=nan"):
        ms.quote_features(q.assign(ask_sz=np.nan))
    with pytest.raises(DataError, match="missing timestamp"):
        ms.quote_features(q.assign(ts=pd.NaT))
    with pytest.raises(TypeError, match="quotes must be a pandas DataFrame"):
        ms.quote_features(q.to_dict())


@settings(max_examples=50, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.floats(1, 1000),
            st.floats(0.01, 10),
            st.floats(0, 100),
            st.floats(0, 100),
        ),
        min_size=1,
        max_size=30,
    )
)
def test_wap_within_touch_property(rows):
    a = np.array(rows)
    bid, spread, bsz, asz = a[:, 0], a[:, 1], a[:, 2], a[:, 3]
    w = ms.wap(bid, bsz, bid + spread, asz)
    assert np.all(w >= bid - 1e-9) and np.all(w <= bid + spread + 1e-9)


# ---------------------------------------------------------------------------------------------
# books
# ---------------------------------------------------------------------------------------------
def _book(secs: float, bids: list[tuple], asks: list[tuple], symbol: str = "X") -> pd.DataFrame:
    rows = [(1, i, p, s) for i, (p, s) in enumerate(bids)] + [
        (-1, i, p, s) for i, (p, s) in enumerate(asks)
    ]
    a = np.array(rows, dtype="float64")
    return pd.DataFrame(
        {
            "ts": T0 + pd.Timedelta(seconds=secs),
            "symbol": symbol,
            "side": a[:, 0].astype("int8"),
            "level": a[:, 1].astype("int16"),
            "px": a[:, 2],
            "sz": a[:, 3],
        }
    )


BIDS = [(100, 1), (99, 2), (98, 3)]
ASKS = [(101, 2), (102, 1), (103, 4)]


def test_book_snapshot_by_hand():
    f = ms.book_snapshot_features(_book(5, BIDS, ASKS)).iloc[0]
    assert f["bid_depth1_base"] == 1 and f["ask_depth1_base"] == 2
    assert f["bid_depth1_notional"] == 100 and f["ask_depth1_notional"] == 202
    assert f["depth_imbalance1"] == pytest.approx(-1 / 3)
    assert f["wap1"] == pytest.approx((100 * 2 + 101 * 1) / 3)
    bn, an = 100 + 198 + 294, 202 + 102 + 412
    for k in (5, 10):  # only three levels: depth 5 and 10 use all of them
        assert f[f"bid_depth{k}_base"] == 6 and f[f"ask_depth{k}_base"] == 7
        assert f[f"bid_depth{k}_notional"] == bn and f[f"ask_depth{k}_notional"] == an
        assert f[f"depth_imbalance{k}"] == pytest.approx(-1 / 13)
        assert f[f"wap{k}"] == pytest.approx((bn / 6 * 7 + an / 7 * 6) / 13)
    f2 = ms.book_snapshot_features(_book(5, BIDS, ASKS), levels=(2,)).iloc[0]
    assert f2["bid_depth2_base"] == 3 and f2["ask_depth2_base"] == 3 and f2["depth_imbalance2"] == 0


def test_book_features_bar_mean_last_and_empty():
    b1 = _book(5, BIDS, ASKS)
    b2 = _book(60, [(100, 3)], [(101, 1)])  # exactly 10:01:00 -> first bar
    b3 = _book(170, [(100, 1)], [(101, 1)])  # third bar; the second bar has no snapshot
    book = pd.concat([b3, b1, b2], ignore_index=True)
    mean = ms.book_features(book, "1min")
    last = ms.book_features(book, "1min", how="last")
    assert list(mean["n_snapshots"]) == [2, 0, 1]
    np.testing.assert_allclose(mean["bid_depth1_base"], [(1 + 3) / 2, np.nan, 1])
    np.testing.assert_allclose(mean["depth_imbalance1"], [(-1 / 3 + 0.5) / 2, np.nan, 0])
    np.testing.assert_allclose(last["bid_depth5_base"], [3, np.nan, 1])
    np.testing.assert_allclose(last["wap1"], [(100 * 1 + 101 * 3) / 4, np.nan, 100.5])


def test_book_features_no_look_ahead(rng):
    snaps = [
        _book(
            s,
            [(100 - i * 0.5, rng.uniform(1, 5)) for i in range(12)],
            [(100.5 + i * 0.5, rng.uniform(1, 5)) for i in range(12)],
        )
        for s in range(0, 1800, 37)
    ]
    book = pd.concat(snaps, ignore_index=True)
    cut = T0 + pd.Timedelta("15min")
    book2 = book.copy()
    book2.loc[book2["ts"] > cut, "sz"] = 1000.0
    a, b = ms.book_features(book, "5min"), ms.book_features(book2, "5min")
    pd.testing.assert_frame_equal(
        a[a.ts <= cut].reset_index(drop=True), b[b.ts <= cut].reset_index(drop=True)
    )


def test_book_errors():
    b = _book(5, BIDS, ASKS)
    with pytest.raises(
        DataError, match="side=0.0 at row 0; expected \\+1 \\(bid\\) or -1 \\(ask\\)"
    ):
        ms.book_snapshot_features(b.assign(side=np.int8(0)))
    with pytest.raises(DataError, match="sz=-1.0"):
        ms.book_features(b.assign(sz=-1.0))
    with pytest.raises(ValueError, match="The 'how' parameter"):
        ms.book_features(b, how="median")
    with pytest.raises(ValueError, match="The 'levels' parameter"):
        ms.book_features(b, levels=(0, 5))
    assert ms.book_features(b.iloc[:0]).empty


# ---------------------------------------------------------------------------------------------
# effective spread
# ---------------------------------------------------------------------------------------------
def test_effective_spread_by_hand():
    q = _quotes([(0, 100, 1, 101, 1), (5, 100.5, 1, 101.5, 1)])
    t = _trades([(-1, 100.7, 1, 1), (2, 101, 1, 1), (5, 100.5, 3, -1), (6, 101, 1, 0)])
    per = ms.trade_effective_spreads(t, q, realized_delay="5s")
    es = per["effective_spread_bps"].to_numpy()
    assert np.isnan(es[0])  # no quote before the trade
    assert es[1] == pytest.approx(2 * (101 - 100.5) / 100.5 * 1e4)
    assert es[2] == pytest.approx(
        2 * -1 * (100.5 - 101) / 101 * 1e4
    )  # the quote at the same ts counts
    assert np.isnan(es[3])  # unknown side
    # realized: the trade at 2 s against the mid prevailing at 7 s (101)
    assert per["realized_spread_bps"].iloc[1] == pytest.approx(2 * (101 - 101) / 100.5 * 1e4)
    strict = ms.trade_effective_spreads(t, q, allow_exact_matches=False, realized_delay=None)
    assert strict["effective_spread_bps"].iloc[2] == pytest.approx(
        2 * -1 * (100.5 - 100.5) / 100.5 * 1e4
    )
    assert "realized_spread_bps" not in strict.columns

    bar = ms.effective_spread(t, q, "1min", realized_delay="5s")
    assert list(bar["ts"]) == [
        T0,
        T0 + pd.Timedelta("1min"),
    ]  # the trade at -1 s is in the bar closing T0
    assert np.isnan(bar["effective_spread_bps"].iloc[0]) and bar["n_matched"].iloc[0] == 0
    es1, es2 = es[1], es[2]
    assert bar["effective_spread_bps"].iloc[1] == pytest.approx((es1 + es2) / 2)
    assert bar["effective_spread_vw_bps"].iloc[1] == pytest.approx(
        (es1 * 101 + es2 * 301.5) / (101 + 301.5)
    )
    assert bar["n_matched"].iloc[1] == 2


def test_effective_spread_quotes_with_equal_timestamps_last_row_wins():
    q = _quotes([(0, 100, 1, 101, 1), (0, 102, 1, 103, 1), (1, 103, 1, 104, 1)])
    per = ms.trade_effective_spreads(_trades([(0, 103, 1, 1)]), q, realized_delay=None)
    assert per["mid"].iloc[0] == 102.5
    assert per["effective_spread_bps"].iloc[0] == pytest.approx(2 * (103 - 102.5) / 102.5 * 1e4)


def test_realized_spread_uses_no_quote_after_the_bar():
    q = _quotes([(0, 100, 1, 101, 1), (62, 110, 1, 111, 1)])
    t = _trades([(10, 101, 1, 1), (58, 101, 1, 1)])
    bar = ms.effective_spread(t, q, "1min", realized_delay="5s")
    # the trade at 58 s becomes known at 63 s > bar close 60 s: left out of the realized mean
    assert bar["realized_spread_bps"].iloc[0] == pytest.approx(2 * (101 - 100.5) / 100.5 * 1e4)
    assert bar["effective_spread_bps"].iloc[0] == pytest.approx(2 * (101 - 100.5) / 100.5 * 1e4)


def test_effective_spread_no_look_ahead(rng):
    q = _random_quotes(rng, 2000, 3600)
    t = _random_trades(rng, 1500, 3600)
    cut = T0 + pd.Timedelta("20min")
    q2, t2 = q.copy(), t.copy()
    q2.loc[q2.ts > cut, "ask_px"] += 5.0
    t2.loc[t2.ts > cut, "price"] *= 1.1
    a, b = ms.effective_spread(t, q, "5min"), ms.effective_spread(t2, q2, "5min")
    pd.testing.assert_frame_equal(
        a[a.ts <= cut].reset_index(drop=True), b[b.ts <= cut].reset_index(drop=True)
    )


def test_effective_spread_errors():
    q = _quotes([(0, 100, 1, 101, 1)])
    t = _trades([(2, 101, 1, 1)])
    with pytest.raises(DataError, match="trades frame is missing required column"):
        ms.effective_spread(t.drop(columns="side"), q)
    with pytest.raises(ValueError, match="The 'realized_delay' parameter"):
        ms.effective_spread(t, q, realized_delay="-1s")


# ---------------------------------------------------------------------------------------------
# trades
# ---------------------------------------------------------------------------------------------
def test_trade_features_by_hand():
    t = _trades(
        [(30, 99, 2, -1), (70, 100, 1, 1), (80, 101, 2, -1), (90, 100, 3, 1), (120, 102, 1, 0)]
    )
    f = ms.trade_features(t, "1min", kyle_subintervals=2)
    assert list(f["ts"]) == [T0 + pd.Timedelta("1min"), T0 + pd.Timedelta("2min")]
    row = f.iloc[1]  # trades at 70, 80, 90 and exactly 120 s
    assert row["trade_count"] == 4 and row["volume"] == 7
    assert row["notional"] == pytest.approx(100 + 202 + 300 + 102)
    assert row["signed_volume"] == 1 - 2 + 3
    assert row["trade_sign_imbalance"] == pytest.approx((2 - 1) / 4)
    assert row["avg_trade_size"] == pytest.approx(7 / 4)
    assert row["last_price"] == 102
    assert row["amihud_per_mn"] == pytest.approx(abs(np.log(102 / 99)) / 704 * 1e6)
    assert np.isnan(f["amihud_per_mn"].iloc[0])  # no previous close
    # Roll: consecutive log-price changes inside the bar, sample covariance of lag-1 pairs
    dp = np.diff(np.log([100, 101, 100, 102]))
    cov = np.cov(dp[:-1], dp[1:])[0, 1]
    assert cov < 0
    assert row["roll_spread_bps"] == pytest.approx(2 * np.sqrt(-cov) * 1e4)
    assert np.isnan(f["roll_spread_bps"].iloc[0])  # one trade


def test_roll_positive_covariance_is_nan_and_constant_price_zero():
    trend = _trades([(i, 100 + i, 1, 1) for i in range(1, 8)])
    assert np.isnan(ms.trade_features(trend, "1min")["roll_spread_bps"].iloc[0])
    flat = _trades([(i, 100, 1, (-1) ** i) for i in range(1, 40)])
    f = ms.trade_features(flat, "1min")
    assert f["roll_spread_bps"].iloc[0] == 0.0
    assert f["kyle_lambda_bps"].iloc[0] == 0.0


def test_roll_recovers_bid_ask_bounce_spread(rng):
    """Roll (1984): p = m + s/2 q with iid signs q gives cov(dp_t, dp_{t-1}) = -s^2/4."""
    ndays, per, s = 20, 1000, 0.001
    n = ndays * per
    m = np.cumsum(rng.normal(0, 5e-5, n))
    q = rng.choice([-1, 1], n)
    secs = np.sort(rng.uniform(1, ndays * 86400 - 1, n))
    t = pd.DataFrame(
        {
            "ts": _ts(*secs),
            "symbol": "X",
            "price": 100 * np.exp(m + q * s / 2),
            "size": 1.0,
            "side": q.astype("int8"),
        }
    )
    est = ms.trade_features(t, "1D")["roll_spread_bps"]
    assert est.notna().all()
    assert est.mean() == pytest.approx(s * 1e4, rel=0.05)


def test_kyle_lambda_exact_linear_impact():
    lam = 0.7  # bps per unit of signed sqrt volume
    rng = np.random.default_rng(5)
    rows, lp = [], np.log(100.0)
    for k in range(60):  # one trade per 10 s sub-interval (1min bars, 6 sub-intervals)
        size, side = rng.uniform(0.5, 4), rng.choice([-1, 1])
        lp += lam * side * np.sqrt(size) / 1e4
        rows.append((10 * k + 5, np.exp(lp), size, side))
    f = ms.trade_features(_trades(rows), "1min", kyle_subintervals=6)
    np.testing.assert_allclose(f["kyle_lambda_bps"], lam, rtol=1e-7)
    # linear flow: the slope of the same returns on signed size is a different, finite number
    g = ms.trade_features(_trades(rows), "1min", kyle_subintervals=6, kyle_flow="signed")
    assert np.isfinite(g["kyle_lambda_bps"]).all()


def test_kyle_lambda_matches_resample_ols(rng):
    t = _random_trades(rng, 3000, 3600)
    f = ms.trade_features(t, "5min", kyle_subintervals=10).set_index("ts")
    g = t.set_index("ts")
    flow = (g["side"] * np.sqrt(g["size"])).resample("30s", closed="right", label="right").sum()
    px = g["price"].resample("30s", closed="right", label="right").last().ffill()
    r = np.log(px).diff() * 1e4
    sub = pd.DataFrame({"r": r, "x": flow.reindex(r.index, fill_value=0.0)}).dropna()
    sub["bar"] = ms.bar_closes(pd.Series(sub.index), "5min")
    for bar_ts, d in sub.groupby("bar"):
        assert f.loc[bar_ts, "kyle_lambda_bps"] == pytest.approx(
            np.polyfit(d["x"], d["r"], 1)[0], rel=1e-9
        )


def test_trade_features_match_pandas_resample(rng):
    t = _random_trades(rng, 2000, 2 * 3600)
    f = ms.trade_features(t, "5min").set_index("ts")
    rs = t.set_index("ts").resample("5min", closed="right", label="right")
    np.testing.assert_array_equal(f["trade_count"], rs["price"].count())
    np.testing.assert_allclose(f["volume"], rs["size"].sum())
    np.testing.assert_allclose(
        f["notional"],
        (t.set_index("ts")["price"] * t.set_index("ts")["size"])
        .resample("5min", closed="right", label="right")
        .sum(),
    )
    np.testing.assert_allclose(
        f["signed_volume"],
        (t.set_index("ts")["side"] * t.set_index("ts")["size"])
        .resample("5min", closed="right", label="right")
        .sum(),
    )
    close = rs["price"].last().ffill()
    np.testing.assert_allclose(f["last_price"], close)
    ami = np.abs(np.log(close).diff()) / f["notional"] * 1e6
    np.testing.assert_allclose(f["amihud_per_mn"], ami.where(f["trade_count"] > 0))


def test_trade_features_no_look_ahead(rng):
    t = _random_trades(rng, 1500, 3600)
    cut = T0 + pd.Timedelta("25min")
    t2 = t.copy()
    t2.loc[t2.ts > cut, ["price", "size"]] *= 2
    a, b = ms.trade_features(t, "5min"), ms.trade_features(t2, "5min")
    pd.testing.assert_frame_equal(
        a[a.ts <= cut].reset_index(drop=True), b[b.ts <= cut].reset_index(drop=True)
    )


def test_trade_features_degenerate():
    one = ms.trade_features(_trades([(10, 100, 1, 1)]), "5min")
    assert len(one) == 1
    r = one.iloc[0]
    assert r["trade_count"] == 1 and r["trade_sign_imbalance"] == 1.0
    assert (
        np.isnan(r["roll_spread_bps"])
        and np.isnan(r["kyle_lambda_bps"])
        and np.isnan(r["amihud_per_mn"])
    )
    gap = ms.trade_features(_trades([(10, 100, 1, 1), (250, 101, 1, -1)]), "1min")
    assert list(gap["trade_count"]) == [1, 0, 0, 0, 1]
    assert gap["volume"].iloc[1] == 0 and np.isnan(gap["trade_sign_imbalance"].iloc[1])
    assert np.isnan(gap["amihud_per_mn"].iloc[1]) and gap["last_price"].iloc[2] == 100
    # the first bar after the gap compares with the last known close
    assert gap["amihud_per_mn"].iloc[4] == pytest.approx(np.log(101 / 100) / 101 * 1e6)
    empty = ms.trade_features(_trades([(10, 100, 1, 1)]).iloc[:0])
    assert empty.empty and "kyle_lambda_bps" in empty.columns


def test_trade_features_errors():
    t = _trades([(10, 100, 1, 1)])
    with pytest.raises(DataError, match="side=2.0 at row 0; expected \\+1, -1 or 0"):
        ms.trade_features(t.assign(side=np.int8(2)))
    with pytest.raises(DataError, match="size=0.0"):
        ms.trade_features(t.assign(size=0.0))
    with pytest.raises(ValueError, match="The 'kyle_subintervals' parameter"):
        ms.trade_features(t, "5min", kyle_subintervals=7)
    with pytest.raises(ValueError, match="The 'kyle_flow' parameter"):
        ms.trade_features(t, kyle_flow="cubic")


# ---------------------------------------------------------------------------------------------
# bars
# ---------------------------------------------------------------------------------------------
def _bars(h, lo, c, **extra) -> pd.DataFrame:
    n = len(h)
    return pd.DataFrame(
        {
            "ts": pd.date_range("2024-01-02", periods=n, freq="1D", tz="UTC"),
            "symbol": "X",
            "open": c,
            "high": h,
            "low": lo,
            "close": c,
            **extra,
        }
    )


def _simulated_bars(
    rng: np.random.Generator, s: float, sig: float, ndays: int = 2000, nint: int = 390
):
    """Efficient log price (random walk) observed with a bid-ask bounce of relative spread s."""
    m = np.cumsum(rng.normal(0, sig / np.sqrt(nint), ndays * nint))
    q = rng.choice([-1, 1], ndays * nint)
    p = (100 * np.exp(m + q * s / 2)).reshape(ndays, nint)
    return _bars(p.max(1), p.min(1), p[:, -1], volume=np.ones(ndays))


def test_corwin_schultz_and_abdi_ranaldo_by_hand():
    b = _bars([102.0, 103.0], [100.0, 100.5], [101.0, 102.0])
    f = ms.bar_liquidity(b, window=1)
    beta = np.log(102 / 100) ** 2 + np.log(103 / 100.5) ** 2
    gamma = np.log(103 / 100) ** 2
    k = 3 - 2 * np.sqrt(2)
    alpha = (np.sqrt(2 * beta) - np.sqrt(beta)) / k - np.sqrt(gamma / k)
    s = max(2 * (np.exp(alpha) - 1) / (1 + np.exp(alpha)), 0.0)
    assert np.isnan(f["cs_spread_bps"].iloc[0])
    assert f["cs_spread_bps"].iloc[1] == pytest.approx(s * 1e4)
    eta0, eta1 = np.log(102 * 100) / 2, np.log(103 * 100.5) / 2
    s2 = 4 * (np.log(101) - eta0) * (np.log(101) - eta1)
    assert f["ar_spread_bps"].iloc[1] == pytest.approx(np.sqrt(max(s2, 0)) * 1e4)


def test_corwin_schultz_negative_set_to_zero_and_overnight_adjustment():
    # bar 1 trades entirely above bar 0: the two-bar range dominates -> negative estimate -> 0
    b = _bars([101.0, 111.0], [100.0, 110.0], [100.5, 110.5])
    assert ms.bar_liquidity(b, window=1, overnight_adjust=False)["cs_spread_bps"].iloc[1] == 0.0
    # with the gap removed (bar 1 shifted down by low_1 - close_0 = 9.5) it equals the gapless pair
    adj = ms.bar_liquidity(b, window=1)["cs_spread_bps"].iloc[1]
    ref = ms.bar_liquidity(
        _bars([101.0, 101.5], [100.0, 100.5], [100.5, 101.0]), window=1, overnight_adjust=False
    )
    assert adj == pytest.approx(ref["cs_spread_bps"].iloc[1])


@pytest.mark.parametrize(("s", "sig"), [(0.01, 0.005), (0.02, 0.01)], ids=["s100bp", "s200bp"])
def test_hl_estimators_recover_simulated_spread(rng, s, sig):
    b = _simulated_bars(rng, s, sig)
    f = ms.bar_liquidity(b, window=len(b) - 1)
    assert f["cs_spread_bps"].iloc[-1] == pytest.approx(s * 1e4, rel=0.1)
    assert f["ar_spread_bps"].iloc[-1] == pytest.approx(s * 1e4, rel=0.1)


def test_bar_amihud_and_taker_imbalance_by_hand():
    b = _bars(
        [101, 103, 104],
        [99, 100, 101],
        [100, 102, 101],
        volume=[10.0, 20.0, 0.0],
        quote_volume=[1000.0, 2040.0, 0.0],
        taker_buy_volume=[5.0, 15.0, 0.0],
        trade_count=[3.0, 4.0, 0.0],
    )
    f = ms.bar_liquidity(b, window=1)
    np.testing.assert_allclose(f["amihud_per_mn"], [np.nan, np.log(102 / 100) / 2040 * 1e6, np.nan])
    np.testing.assert_allclose(f["taker_buy_imbalance"], [0.0, 0.5, np.nan])
    np.testing.assert_allclose(f["trade_count"], [3, 4, 0])
    # without quote volume: close * volume; with window 2 the mean of the available values
    g = ms.bar_liquidity(b.drop(columns="quote_volume"), window=2, min_periods=1)
    np.testing.assert_allclose(g["amihud_per_mn"].iloc[1], np.log(102 / 100) / (102 * 20) * 1e6)
    only_ohlc = ms.bar_liquidity(b[["ts", "symbol", "open", "high", "low", "close"]], window=1)
    assert (
        "amihud_per_mn" not in only_ohlc.columns and "taker_buy_imbalance" not in only_ohlc.columns
    )


def test_bar_liquidity_no_look_ahead_and_constant_price(rng):
    b = _simulated_bars(rng, 0.01, 0.01, ndays=120, nint=50)
    b2 = b.copy()
    b2.loc[60:, ["high", "close"]] *= 1.05
    a, c = ms.bar_liquidity(b, window=10), ms.bar_liquidity(b2, window=10)
    pd.testing.assert_frame_equal(a.iloc[:60], c.iloc[:60])
    flat = ms.bar_liquidity(
        _bars([100.0] * 5, [100.0] * 5, [100.0] * 5, volume=[1.0] * 5), window=2
    )
    np.testing.assert_allclose(flat["cs_spread_bps"].iloc[2:], 0.0)
    np.testing.assert_allclose(flat["ar_spread_bps"].iloc[2:], 0.0)
    np.testing.assert_allclose(flat["amihud_per_mn"].iloc[2:], 0.0)


def test_bar_liquidity_errors():
    b = _bars([101.0, 103.0], [100.0, 100.5], [101.0, 102.0])
    with pytest.raises(DataError, match="expected low <= close <= high"):
        ms.bar_liquidity(b.assign(low=[102.0, 100.0]))
    with pytest.raises(ValueError, match="The 'window' parameter"):
        ms.bar_liquidity(b, window=0)
    with pytest.raises(ValueError, match="The 'min_periods' parameter"):
        ms.bar_liquidity(b, window=2, min_periods=3)
    with pytest.raises(DataError, match="missing required column"):
        ms.bar_liquidity(b.drop(columns="high"))


# ---------------------------------------------------------------------------------------------
# derivatives context
# ---------------------------------------------------------------------------------------------
def _funding() -> pd.DataFrame:
    ts = pd.date_range("2024-01-01 00:00", periods=9, freq="8h", tz="UTC")
    return pd.DataFrame(
        {"ts": ts, "symbol": "BTCUSDT-PERP", "funding_rate": np.arange(1, 10) * 1e-4}
    )


def test_derivatives_features_by_hand():
    fd = _funding()  # events 01-01 00:00 (1e-4), 08:00 (2e-4), ..., 01-03 16:00 (9e-4)
    spot = pd.DataFrame(
        {
            "ts": pd.to_datetime(
                ["2024-01-01 23:00", "2024-01-02 00:00", "2024-01-02 12:00"],
                utc=True,
                format="ISO8601",
            ),
            "symbol": "BTCUSDT",
            "close": [100.0, 101.0, 105.0],
        }
    )
    perp = pd.DataFrame(
        {
            "ts": pd.to_datetime(
                ["2024-01-01 23:30", "2024-01-02 00:00:01"], utc=True, format="ISO8601"
            ),
            "symbol": "BTCUSDT-PERP",
            "close": [100.5, 102.0],
        }
    )
    f = ms.derivatives_features(fd, spot, perp, "1D")
    assert list(f["ts"]) == list(pd.date_range("2024-01-01", periods=4, freq="1D", tz="UTC"))
    r = f.set_index("ts")
    d2 = pd.Timestamp("2024-01-02", tz="UTC")
    assert r.loc[d2, "funding_rate"] == pytest.approx(4e-4)  # the event at exactly 00:00 counts
    assert r.loc[d2, "funding_sum_24h"] == pytest.approx(
        (2 + 3 + 4) * 1e-4
    )  # (01-01 00:00, 01-02 00:00]
    assert r.loc[d2, "funding_sum_3ev"] == pytest.approx((2 + 3 + 4) * 1e-4)
    assert r.loc[d2, "funding_rate_ann"] == pytest.approx(4e-4 * 3 * 365)
    assert r.loc[d2, "basis_bps"] == pytest.approx(
        (100.5 / 101 - 1) * 1e4
    )  # perp at 00:00:01 not yet known
    d1 = pd.Timestamp("2024-01-01", tz="UTC")
    assert r.loc[d1, "funding_rate"] == pytest.approx(1e-4) and np.isnan(
        r.loc[d1, "funding_sum_3ev"]
    )
    assert np.isnan(r.loc[d1, "basis_bps"])
    d3 = pd.Timestamp("2024-01-03", tz="UTC")
    assert r.loc[d3, "basis_bps"] == pytest.approx((102 / 105 - 1) * 1e4)
    assert r.loc[d3, "funding_sum_24h"] == pytest.approx((5 + 6 + 7) * 1e-4)


def test_derivatives_features_mark_from_funding_and_no_look_ahead():
    fd = _funding().assign(mark_px=np.linspace(100, 108, 9))
    spot = pd.DataFrame({"ts": fd["ts"], "symbol": "BTCUSDT", "close": 100.0})
    f = ms.derivatives_features(fd, spot, None, "1D", funding_interval="8h")
    np.testing.assert_allclose(f["basis_bps"].iloc[1], (103 / 100 - 1) * 1e4)
    fd2 = fd.copy()
    fd2.loc[fd2.ts > pd.Timestamp("2024-01-02", tz="UTC"), ["funding_rate", "mark_px"]] = [
        0.01,
        200.0,
    ]
    g = ms.derivatives_features(fd2, spot, None, "1D", funding_interval="8h")
    pd.testing.assert_frame_equal(f.iloc[:2], g.iloc[:2])


def test_derivatives_features_errors():
    fd = _funding()
    spot = pd.DataFrame(
        {"ts": fd["ts"], "symbol": ["ETHUSDT", "SOLUSDT"] * 4 + ["ETHUSDT"], "close": 1.0}
    )
    with pytest.raises(DataError, match="cannot pair symbol 'BTCUSDT-PERP'"):
        ms.derivatives_features(fd, spot, fd.assign(close=1.0)[["ts", "symbol", "close"]])
    with pytest.raises(DataError, match="cannot infer the funding interval"):
        ms.derivatives_features(fd.iloc[:1])
    with pytest.raises(DataError, match="funding_rate=nan"):
        ms.derivatives_features(fd.assign(funding_rate=np.nan))
    ok = ms.derivatives_features(
        fd,
        spot,
        fd.assign(close=1.0)[["ts", "symbol", "close"]],
        symbol_map={"BTCUSDT-PERP": "ETHUSDT"},
    )
    assert ok["basis_bps"].notna().any()


# ---------------------------------------------------------------------------------------------
# implied volatility
# ---------------------------------------------------------------------------------------------
def test_implied_vol_features_by_hand():
    iv = pd.DataFrame(
        {
            "ts": pd.date_range("2024-01-01", periods=3, freq="1D", tz="UTC"),
            "symbol": "BTC",
            "close": [50.0, 60.0, 40.0],
        }
    )
    rv = pd.DataFrame(
        {
            "ts": pd.to_datetime(
                ["2024-01-01", "2024-01-02 00:00:01", "2024-01-03"], utc=True, format="ISO8601"
            ),
            "symbol": "BTCUSDT",
            "rv_var": [4e-4, 9e-4, 1e-4],
        }
    )
    f = ms.implied_vol_features(iv, rv, "1D", annualization=365)
    assert list(f["symbol"].unique()) == ["BTCUSDT"]
    np.testing.assert_allclose(f["iv_vol_ann"], [0.5, 0.6, 0.4])
    np.testing.assert_allclose(f["iv_var_ann"], [0.25, 0.36, 0.16])
    np.testing.assert_allclose(f["iv_var"], np.array([0.25, 0.36, 0.16]) / 365)
    np.testing.assert_allclose(f["iv_var_ann_chg"], [np.nan, 0.11, -0.2])
    # realized at 01-02 00:00:01 is not yet known at the 01-02 close: the 01-01 value is used
    np.testing.assert_allclose(
        f["iv_minus_rv_var"], [0.25 / 365 - 4e-4, 0.36 / 365 - 4e-4, 0.16 / 365 - 1e-4]
    )
    frac = ms.implied_vol_features(
        iv.assign(close=iv.close / 100), None, iv_unit="fraction", annualization=252
    )
    assert list(frac["symbol"].unique()) == ["BTC"]
    np.testing.assert_allclose(frac["iv_var"], np.array([0.25, 0.36, 0.16]) / 252)
    assert frac["iv_minus_rv_var"].isna().all()


def test_implied_vol_features_pairs_by_base_and_errors():
    iv = pd.DataFrame(
        {
            "ts": pd.date_range("2024-01-01", periods=2, freq="1D", tz="UTC").repeat(2),
            "symbol": ["BTC-DVOL", "ETH-DVOL"] * 2,
            "close": [50.0, 70.0, 55.0, 75.0],
        }
    )
    rv = pd.DataFrame(
        {
            "ts": pd.date_range("2024-01-01", periods=2, freq="1D", tz="UTC").repeat(2),
            "symbol": ["ETHUSDT", "BTCUSDT"] * 2,
            "rv_var": 1e-4,
        }
    )
    f = ms.implied_vol_features(iv, rv)
    np.testing.assert_allclose(f.set_index("symbol").loc["ETHUSDT", "iv_vol_ann"], [0.7, 0.75])
    with pytest.raises(DataError, match="cannot pair symbol 'SOLUSDT'"):
        ms.implied_vol_features(iv, rv.assign(symbol="SOLUSDT"))
    with pytest.raises(ValueError, match="The 'iv_unit' parameter"):
        ms.implied_vol_features(iv, iv_unit="bp")
    with pytest.raises(DataError, match="close=-1.0"):
        ms.implied_vol_features(iv.assign(close=-1.0))


def _chain(as_of: pd.Timestamp) -> pd.DataFrame:
    e1, e2 = as_of + pd.Timedelta("20D"), as_of + pd.Timedelta("40D")
    rows = [
        # expiry 1 (F=100): smile through 90 and 110, ATM interpolated in log-moneyness
        ("A-1-90-P", e1, 90.0, "put", 0.60, 100.0),
        ("A-1-110-C", e1, 110.0, "call", 0.50, 100.0),
        # expiry 2 (F=102): call and put at the forward averaged
        ("A-2-102-C", e2, 102.0, "call", 0.54, 102.0),
        ("A-2-102-P", e2, 102.0, "put", 0.58, 102.0),
        ("A-2-120-C", e2, 120.0, "call", 0.40, 102.0),
    ]
    o = pd.DataFrame(
        rows, columns=["symbol", "expiry", "strike", "option_type", "mark_iv", "underlying_px"]
    )
    return o.assign(ts=as_of - pd.Timedelta("1min"), underlying="A")


def test_atm_implied_variance_by_hand():
    as_of = pd.Timestamp("2024-05-01 08:00", tz="UTC")
    o = _chain(as_of)
    # a stale row (older) and a future row for the same option are ignored
    stale = o.iloc[[0]].assign(ts=as_of - pd.Timedelta("1h"), mark_iv=0.9)
    future = o.iloc[[0]].assign(ts=as_of + pd.Timedelta("1min"), mark_iv=2.0)
    o = pd.concat([stale, o, future], ignore_index=True)
    f = ms.atm_implied_variance(o, as_of).iloc[0]
    k0, k1 = np.log(0.9), np.log(1.1)
    iv1 = 0.60 + (0.50 - 0.60) * (0 - k0) / (k1 - k0)
    iv2 = (0.54 + 0.58) / 2
    t1, t2, ts = 20 / 365, 40 / 365, 30 / 365
    w = iv1**2 * t1 + (iv2**2 * t2 - iv1**2 * t1) * (ts - t1) / (t2 - t1)
    assert f["symbol"] == "A" and f["ts"] == as_of
    assert f["atm_iv_var_ann"] == pytest.approx(w / ts)
    assert f["atm_iv_vol_ann"] == pytest.approx(np.sqrt(w / ts))
    assert (
        f["n_expiries"] == 2
        and f["t_near_days"] == pytest.approx(20)
        and f["t_far_days"] == pytest.approx(40)
    )
    # a tenor before the first expiry: flat implied variance of the nearest expiry
    g = ms.atm_implied_variance(o, as_of, tenor_days=7).iloc[0]
    assert g["atm_iv_var_ann"] == pytest.approx(iv1**2)
    h = ms.atm_implied_variance(o, as_of, tenor_days=90).iloc[0]
    assert h["atm_iv_var_ann"] == pytest.approx(iv2**2)


def test_atm_implied_variance_errors():
    as_of = pd.Timestamp("2024-05-01 08:00", tz="UTC")
    o = _chain(as_of)
    with pytest.raises(DataError, match="no row with ts <= as_of"):
        ms.atm_implied_variance(o, as_of - pd.Timedelta("1h"))
    with pytest.raises(DataError, match="missing required column"):
        ms.atm_implied_variance(o.drop(columns="mark_iv"), as_of)
    with pytest.raises(ValueError, match="The 'tenor_days' parameter"):
        ms.atm_implied_variance(o, as_of, tenor_days=0)
    gone = ms.atm_implied_variance(o, as_of + pd.Timedelta("60D"))  # every expiry has passed
    assert gone["n_expiries"].iloc[0] == 0 and np.isnan(gone["atm_iv_var_ann"].iloc[0])


# ---------------------------------------------------------------------------------------------
# real data smoke (Binance L2 snippet, 2024-08-08 23:54..23:59 UTC)
# ---------------------------------------------------------------------------------------------
def _canon_symbol(df: pd.DataFrame) -> np.ndarray:
    perp = df["market"].to_numpy() == "usdm_perp"
    return np.where(
        perp,
        df["symbol"].to_numpy().astype(object) + "-PERP",
        df["symbol"].to_numpy().astype(object),
    )


@pytest.fixture(scope="module")
def l2(data_dir):
    d = data_dir / "binance_l2_depth_trades_snippets_2024-08-08"
    if not d.is_dir():
        pytest.skip(f"{d} not found")
    t = pd.read_parquet(d / "trades.parquet")
    q = pd.read_parquet(d / "book_ticker.parquet")
    b = pd.read_parquet(d / "depth_snapshots.parquet")
    trades = pd.DataFrame(
        {
            "ts": pd.to_datetime(t["local_ts_ns"], unit="ns", utc=True),
            "symbol": _canon_symbol(t),
            "price": t["price"],
            "size": t["qty"],
            "side": np.where(t["buyer_is_maker"], -1, 1).astype("int8"),
        }
    )
    quotes = pd.DataFrame(
        {
            "ts": pd.to_datetime(q["local_ts_ns"], unit="ns", utc=True),
            "symbol": _canon_symbol(q),
            "bid_px": q["bid_price"],
            "bid_sz": q["bid_qty"],
            "ask_px": q["ask_price"],
            "ask_sz": q["ask_qty"],
        }
    )
    book = pd.DataFrame(
        {
            "ts": pd.to_datetime(b["local_ts_ns"], unit="ns", utc=True),
            "symbol": _canon_symbol(b),
            "side": np.where(b["side"] == "bid", 1, -1).astype("int8"),
            "level": b["level"].astype("int16"),
            "px": b["price"],
            "sz": b["qty"],
        }
    )
    return trades, quotes, book


@pytest.mark.realdata
def test_real_l2_quote_and_trade_features(l2):
    trades, quotes, _ = l2
    qf = ms.quote_features(quotes, "1min")
    assert set(qf["symbol"]) == {
        "BTCUSDT",
        "BTCUSDT-PERP",
        "BTCUSD_PERP",
        "ETHUSDT",
        "ETHUSDT-PERP",
        "ETHUSD_PERP",
    }
    btc = qf[qf.symbol == "BTCUSDT"]
    assert btc["spread_bps"].between(0, 5).all()
    assert btc["wap"].between(55_000, 70_000).all()
    assert (qf["crossed_locked_share"].between(0, 1)).all()
    assert (qf["quote_updates"].sum()) == len(quotes)
    assert qf["wap_rv_var"].between(0, 1e-4).all()
    tf = ms.trade_features(trades, "1min")
    assert tf["trade_count"].sum() == len(trades)
    assert tf.groupby("symbol")["volume"].sum().to_dict() == pytest.approx(
        trades.groupby("symbol")["size"].sum().to_dict()
    )
    assert tf["trade_sign_imbalance"].dropna().between(-1, 1).all()
    assert tf["roll_spread_bps"].dropna().between(0, 5).all()
    es = ms.effective_spread(trades, quotes, "1min")
    btc_es = es[es.symbol.isin(["BTCUSDT", "BTCUSDT-PERP"])]["effective_spread_bps"]
    assert btc_es.notna().all() and btc_es.abs().lt(5).all()


@pytest.mark.realdata
def test_real_l2_book_features(l2):
    _, quotes, book = l2
    bf = ms.book_features(book, "1min", levels=(1, 5, 10, 100))
    assert len(bf) == 6 and (bf["n_snapshots"] == 1).all()
    for k in (1, 5, 10, 100):
        assert bf[f"depth_imbalance{k}"].between(-1, 1).all()
        assert (bf[f"bid_depth{k}_base"] > 0).all() and (bf[f"ask_depth{k}_base"] > 0).all()
    assert (bf["bid_depth100_base"] >= bf["bid_depth10_base"]).all()
    assert (bf["bid_depth10_base"] >= bf["bid_depth5_base"]).all()
    snap = ms.book_snapshot_features(book)
    best = book[book.level == 0].pivot_table(index="symbol", columns="side", values="px")
    s = snap.set_index("symbol")
    assert (s["wap1"] >= best[1]).all() and (s["wap1"] <= best[-1]).all()
    spread_bps = (best[-1] / best[1] - 1) * 1e4
    assert spread_bps.loc["BTCUSDT"] < 5


@pytest.mark.realdata
def test_real_deribit_option_marks_atm_variance(data_dir):
    f = data_dir / "deribit_option_snapshots_2024" / "btc_options_marks_2024-05.parquet"
    if not f.exists():
        pytest.skip(f"{f} not found")
    raw = pd.read_parquet(f)
    o = pd.DataFrame(
        {
            "ts": pd.to_datetime(raw["creation"], utc=True),
            "symbol": raw["maturity"] + raw["strike"].astype(str) + raw["option_type"],
            "underlying": raw["currency"],
            "expiry": pd.to_datetime(raw["maturity"], utc=True),
            "strike": raw["strike"],
            "option_type": raw["option_type"],
            "mark_iv": raw["mark_iv"] / 100,
            "underlying_px": raw["index_price"],
        }
    )
    out = ms.atm_implied_variance(o, o["ts"].max())
    assert out["atm_iv_vol_ann"].between(0.2, 1.5).all() and (out["n_expiries"] >= 2).all()
