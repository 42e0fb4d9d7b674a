"""The stored anti-procyclicality state: previous business days, idempotent per as_of, a gap
refused, the floor's long-run variance."""

from __future__ import annotations

import pandas as pd
import pytest

from features.errors import DataError
from margin.apc import APCParams
from margin.calculator import compute_margin
from pipelines.apc_state import long_run_bundle, previous_day, run_apc, state_dir
from tests.test_margin.margin_fixtures import AS_OF, book, make_bundle, make_state


def test_previous_business_day() -> None:
    """Crypto: the calendar day before; an index book on NYSE: Monday 2018-12-31 follows Friday
    2018-12-28, and 2019-01-02 follows 2018-12-31 (New Year's Day is a holiday)."""
    assert previous_day(pd.Timestamp("2025-03-03T00:00Z"), ["BTC"]) == "2025-03-02"
    assert previous_day(pd.Timestamp("2018-12-31T21:00Z"), ["SP500"]) == "2018-12-28"
    assert previous_day(pd.Timestamp("2019-01-02T21:00Z"), ["SP500", "NASDAQ"]) == "2018-12-31"


def test_the_stored_state_is_idempotent_per_day_and_refuses_a_gap(tmp_path) -> None:
    b = make_bundle()
    pf = "a,BTCUSDT-PERP,5,60000\nc,BTC-{+30D}-70000-C,-3,0.012"

    def day(k: int, vol: float = 0.6):
        t = AS_OF + pd.Timedelta(days=k)
        st_ = make_state(as_of=t, vol=vol)
        p_ = book(pf, as_of=t)
        return compute_margin(p_, st_, b), st_, p_

    p = APCParams()
    r0, s0, p0 = day(0)
    a = run_apc(tmp_path, "sim", r0, b, s0, p0, p)
    files = sorted(state_dir(tmp_path, "sim", r0.portfolio).glob("*.json"))
    assert len(files) == 1 and a.margin == pytest.approx(1.25 * r0.im)
    again = run_apc(tmp_path, "sim", r0, b, s0, p0, p)
    assert again == a and files[0].read_text() == a.to_json()
    r1, s1, p1 = day(1, vol=0.9)
    nxt = run_apc(tmp_path, "sim", r1, b, s1, p1, p)
    assert nxt.previous == pytest.approx(a.margin) and nxt.margin >= r1.im
    r3, s3, p3 = day(3)
    with pytest.raises(DataError, match="gap"):
        run_apc(tmp_path, "sim", r3, b, s3, p3, p)


def test_the_floor_uses_the_long_run_variance_and_flags_a_short_history() -> None:
    b = make_bundle(n_days=400)
    lr, used = long_run_bundle(b, 10.0)
    res = b.residuals[b.residuals["symbol"] == "BTCUSDT"]["ret"].to_numpy()
    assert lr.variance("BTCUSDT", 1) == pytest.approx(float((res ** 2).mean()), rel=1e-12)
    assert used["BTCUSDT"]["proxy"] and used["BTCUSDT"]["years"] == pytest.approx(400 / 365.25,
                                                                                  rel=1e-3)
