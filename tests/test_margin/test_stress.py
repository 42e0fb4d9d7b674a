"""The stress-loss report: exact losses of linear books under given moves, the hypothetical
moves of the parameters applied only to books that hold their underlyings, rows worst first."""

from __future__ import annotations

import math

import pytest

from margin.params import MarginParams
from margin.stress import StressScenario, stress_report
from tests.test_margin.margin_fixtures import book, make_bundle, make_state

BUNDLE = make_bundle()
STATE = make_state()


def test_linear_losses_by_hand_and_rows_worst_first() -> None:
    pf = book("a,BTCUSDT,2,60000\nb,ETHUSDT,-10,3000")
    scen = [StressScenario("crash", {"BTC": math.log(0.8), "ETH": math.log(0.7)}, "flat", "test",
                           "2020-03-12"),
            StressScenario("rally", {"BTC": math.log(1.1)}, "flat", "test")]
    r = stress_report(pf, STATE, BUNDLE, scen, MarginParams(stress_hypothetical=()))
    got = {x["scenario"]: x for x in r.rows}
    assert got["crash"]["pnl"] == pytest.approx(2 * 60000 * -0.2 - 10 * 3000 * -0.3, rel=1e-12)
    assert got["rally"]["pnl"] == pytest.approx(2 * 60000 * 0.1, rel=1e-12)
    assert [x["scenario"] for x in r.rows] == ["crash", "rally"]  # the worst first
    assert got["crash"]["loss_over_im"] == pytest.approx(-got["crash"]["pnl"] / r.im)
    assert got["crash"]["moves"] == pytest.approx({"BTC": -0.2, "ETH": -0.3})


def test_hypothetical_moves_apply_to_the_books_that_hold_them() -> None:
    crypto = stress_report(book("a,BTCUSDT,1,60000"), STATE, BUNDLE, [])
    names = [x["scenario"] for x in crypto.rows]
    assert "crypto crash -40%, ETH/SOL -50%" in names and "equity crash -20%" not in names
    crash = next(x for x in crypto.rows if x["scenario"].startswith("crypto crash"))
    assert crash["pnl"] == pytest.approx(-0.4 * 60000, rel=1e-12)
    # options reprice with the implied vol up: a short put loses more than with the vol flat
    move = {"BTC": math.log(0.6)}
    opt = stress_report(book("p,BTC-{+30D}-50000-P,-1,0.01"), STATE, BUNDLE,
                        [StressScenario("up", move, "up"), StressScenario("flat", move, "flat")],
                        MarginParams(stress_hypothetical=()))
    got = {x["scenario"]: x["pnl"] for x in opt.rows}
    assert got["up"] < got["flat"] < 0
