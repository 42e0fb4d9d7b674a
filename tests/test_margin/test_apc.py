"""Anti-procyclicality: the buffer is drawn before margin rises and rebuilt no faster than its
rate, margin never falls below the floor or the base, the cap bounds the daily increase (and the
shortfall is recorded), a gap is refused (the stored state: tests/test_pipelines/test_apc_state.py)."""

from __future__ import annotations

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from features.errors import ConfigError, DataError
from margin.apc import APCParams, APCState, apc_step, check_stress_weight

BUF = APCParams(tools=("buffer",))


def _days(n: int) -> list[str]:
    return [f"{d:%Y-%m-%d}" for d in pd.date_range("2025-01-01", periods=n, freq="D")]


def _path(bases: list[float], p: APCParams, floors: list[float] | None = None) -> list[APCState]:
    out, prev = [], None
    for k, (day, b) in enumerate(zip(_days(len(bases)), bases, strict=True)):
        prev = apc_step(prev, day, b, p, expected_previous_day=out[-1].day if out else None,
                        floor=None if floors is None else floors[k])
        out.append(prev)
    return out


def test_the_buffer_is_drawn_before_margin_rises_by_hand() -> None:
    """B = 100, 100, 120, 120: M = 125 (full buffer), 125, then 131.25 (5% rebuild rate) instead
    of 150: the 20% jump in the base moves the margin 5%."""
    s = _path([100, 100, 120, 120], BUF)
    assert [x.margin for x in s] == pytest.approx([125.0, 125.0, 131.25, 137.8125])
    assert s[2].parts["buffer"] == pytest.approx(11.25) and s[2].shortfall == 0.0


@settings(max_examples=80, deadline=None)
@given(bases=st.lists(st.floats(1.0, 1e6), min_size=2, max_size=40))
def test_buffer_rebuilt_no_faster_than_its_rate_and_never_below_the_base(bases: list[float]) -> None:
    s = _path(bases, BUF)
    for prev, cur in zip(s, s[1:], strict=False):
        assert cur.margin >= cur.base
        assert cur.margin <= max(cur.base, prev.margin * 1.05) * (1 + 1e-12)
        assert cur.margin <= 1.25 * cur.base * (1 + 1e-12)


@settings(max_examples=60, deadline=None)
@given(data=st.lists(st.tuples(st.floats(1.0, 1e6), st.floats(0.0, 2e6)), min_size=1,
                     max_size=30))
def test_margin_never_falls_below_the_floor(data: list[tuple[float, float]]) -> None:
    s = _path([b for b, _ in data], APCParams(), [f for _, f in data])
    for x, (b, f) in zip(s, data, strict=True):
        assert x.margin >= max(b, f) * (1 - 1e-12)


def test_the_daily_cap_bounds_the_increase_and_records_the_shortfall() -> None:
    p = APCParams(tools=("buffer",), max_daily_increase=0.10)
    s = _path([100, 200], p)
    assert s[1].margin == pytest.approx(125 * 1.10)
    assert s[1].shortfall == pytest.approx(200 - 137.5) and s[1].parts["cap"] < 0


def test_a_gap_and_bad_inputs_are_refused() -> None:
    first = apc_step(None, "2025-01-01", 100.0, BUF)
    with pytest.raises(DataError, match=r"gap: the last state is of 2025-01-01, but 2025-01-03 "
                                        r"follows 2025-01-02"):
        apc_step(first, "2025-01-03", 100.0, BUF, expected_previous_day="2025-01-02")
    with pytest.raises(DataError, match="is not before"):
        apc_step(first, "2025-01-01", 100.0, BUF)
    with pytest.raises(DataError, match="floor tool needs"):
        apc_step(None, "2025-01-01", 100.0, APCParams())
    with pytest.raises(DataError, match="base margin must be"):
        apc_step(None, "2025-01-01", float("nan"), BUF)
    with pytest.raises(ConfigError, match="25% weight"):
        check_stress_weight(0.8)
    check_stress_weight(0.75)
    assert APCState.from_json(first.to_json()) == first
