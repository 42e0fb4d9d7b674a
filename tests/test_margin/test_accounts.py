"""Accounts: collateral modes, equity, status, liquidation thresholds against closed forms, the
wrong-way-risk test, per-account failures."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import norm

from features.errors import Failure
from margin.accounts import (
    Account,
    AccountParams,
    AccountStatus,
    CollateralParams,
    MMRule,
    account_status,
    accounts_status,
    closed_form_liquidation_price,
    tier_mm,
)
from margin.calculator import compute_margin
from margin.market_state import Quote
from margin.scenarios import horizon_vol
from tests.test_margin.margin_fixtures import AS_OF, book, make_bundle, make_state

BUNDLE = make_bundle()
STATE = make_state()
FLAT = MMRule(kind="tiered", tiers=((math.inf, 0.005, 0.0),))
NO_HAIRCUT = CollateralParams(liquidation_cost=0.0, stable_haircut={})


def _state_mark_at_spot():
    """The fixture's state with each perpetual's mark equal to the index (a zero premium)."""
    unds = {}
    for u, s in STATE.underlyings.items():
        if s.marks:
            px = s.reference.value
            marks = {k: Quote(px, "USD", "test", AS_OF) for k in s.marks}
            s = dataclasses.replace(s, marks=marks)
        unds[u] = s
    return dataclasses.replace(STATE, underlyings=unds)


def _status(acct: Account, state=STATE, **kw) -> AccountStatus:
    r = account_status(acct, state, BUNDLE, AccountParams(**kw))
    assert isinstance(r, AccountStatus), r
    return r


@pytest.mark.parametrize("qty", [2.0, -2.0])
def test_one_linear_perpetual_liquidates_at_the_closed_form_price(qty: float) -> None:
    """Long 2 BTCUSDT-PERP entered at 58,000 (mark 60,030), 20,000 USD of cash, MM 0.5% of the
    notional: the move where equity meets MM is where the closed form puts the mark."""
    acct = Account("a", book(f"p,BTCUSDT-PERP,{qty},58000"), {"USD": 20_000.0})
    r = _status(acct, mm=FLAT, collateral=NO_HAIRCUT)
    mark0 = 60_000.0 * 1.0005
    assert r.positions_usd == pytest.approx(qty * (mark0 - 58_000.0), rel=1e-12)
    assert r.mm_usd == pytest.approx(0.005 * abs(qty) * mark0, rel=1e-12)
    want = closed_form_liquidation_price(qty, 58_000.0, 20_000.0, 0.005)
    side = "down" if qty > 0 else "up"
    x = r.liquidation["BTC"][side]
    assert mark0 * (1 + x) == pytest.approx(want, rel=1e-8)
    assert r.liquidation["BTC"]["up" if qty > 0 else "down"] is None  # no liquidation that way
    assert r.liquidation["BTC"][f"{side}_evaluations"] < 80


def test_one_inverse_perpetual_liquidates_at_the_closed_form_price() -> None:
    """Short 3,000 BTC-PERPETUAL (10 USD face) at 62,000 with 0.1 BTC of cross collateral, the mark
    at the index: the coin condition C + q F (1/E - 1/P) = m |q| F / P in closed form."""
    state = _state_mark_at_spot()
    acct = Account("inv", book("p,BTC-PERPETUAL,-3000,62000"), {"BTC": 0.1})
    r = _status(acct, state, mm=FLAT, collateral=NO_HAIRCUT)
    want = closed_form_liquidation_price(-3000 * 10, 62_000.0, 0.1, 0.005, inverse=True,
                                         contract_usd=1.0)
    x = r.liquidation["BTC"]["up"]
    assert 60_000.0 * (1 + x) == pytest.approx(want, rel=1e-8)
    assert r.mm_usd == pytest.approx(0.005 * 30_000.0, rel=1e-12)


@settings(max_examples=25, deadline=None)
@given(q=st.floats(0.1, 20.0), entry=st.floats(40_000, 80_000), lev=st.floats(0.05, 0.9),
       m=st.floats(0.001, 0.05), short=st.booleans())
def test_linear_closed_form_holds_for_any_book(q: float, entry: float, lev: float, m: float,
                                               short: bool) -> None:
    """Any size, entry, collateral and fixed MM rate: the threshold is the closed form (or the
    account is already liquidating, or the move is beyond the scan)."""
    qty = -q if short else q
    mark0 = 60_000.0 * 1.0005
    coll = lev * q * mark0
    acct = Account("h", book(f"p,BTCUSDT-PERP,{qty},{entry}"), {"USD": coll})
    r = _status(acct, mm=MMRule(kind="tiered", tiers=((math.inf, m, 0.0),)), collateral=NO_HAIRCUT)
    want = closed_form_liquidation_price(qty, entry, coll, m)
    x = r.liquidation["BTC"]["up" if short else "down"]
    if r.equity_usd <= r.mm_usd:
        assert x == 0.0 and r.status == "liquidation"
    elif x is None:
        assert not (0.05 * mark0 < want < 1.95 * mark0) or abs(want / mark0 - 1) > 0.95
    else:
        assert mark0 * (1 + x) == pytest.approx(want, rel=1e-8)


def test_wrong_way_btc_collateral_behind_short_btc_puts_needs_more() -> None:
    """Short BTC puts lose when BTC falls: cross BTC collateral of the same value as USD cash is
    worth less exactly then, so the account needs more margin; a short perpetual gains when BTC
    falls, and BTC collateral is right-way (less margin than cash)."""
    puts = "p,BTC-{+30D}-55000-P,-10,0.02"
    usd = _status(Account("usd", book(puts), {"USD": 120_000.0}), collateral=NO_HAIRCUT)
    btc = _status(Account("btc", book(puts), {"BTC": 2.0}), collateral=NO_HAIRCUT)
    assert btc.collateral_usd == pytest.approx(usd.collateral_usd, rel=1e-12)
    assert btc.im_usd > 1.2 * usd.im_usd
    assert btc.free_collateral_usd < usd.free_collateral_usd
    # the short put book alone is the USD account's margin book
    alone = compute_margin(book(puts), STATE, BUNDLE)
    assert usd.im_usd == pytest.approx(alone.im, rel=1e-12)
    hedge = "h,BTCUSDT-PERP,-2,60000"
    usd2 = _status(Account("usd2", book(hedge), {"USD": 120_000.0}), collateral=NO_HAIRCUT)
    btc2 = _status(Account("btc2", book(hedge), {"BTC": 2.0}), collateral=NO_HAIRCUT)
    assert btc2.im_usd < 0.2 * usd2.im_usd
    # and the BTC-collateralized short puts liquidate after a smaller fall
    assert btc.liquidation["BTC"]["down"] > usd.liquidation["BTC"]["down"]


def test_segregated_haircut_and_the_stablecoin_depeg_by_hand() -> None:
    """Segregated BTC: haircut = z_99 x the forecast 1-day vol + 10 bp, within [2%, 50%];
    USDC at its 13% depeg haircut; USD cash at none."""
    acct = Account("s", book("p,BTCUSDT-PERP,1,60000"),
                   {"BTC": 1.0, "USDC": 10_000.0, "USD": 5_000.0})
    r = _status(acct, collateral=CollateralParams(mode="segregated"))
    vol, _ = horizon_vol(BUNDLE, "BTCUSDT", 1, "1D")
    h = min(max(norm.ppf(0.99) * vol + 0.001, 0.02), 0.5)
    assert r.collateral["BTC"]["haircut"] == pytest.approx(h, rel=1e-12)
    assert r.collateral["USDC"]["value"] == pytest.approx(8_700.0, rel=1e-12)
    assert r.collateral_usd == pytest.approx(60_000.0 * (1 - h) + 8_700.0 + 5_000.0, rel=1e-12)
    # segregated collateral is not in the scenarios: the IM is the book's alone
    assert r.im_usd == pytest.approx(compute_margin(book("p,BTCUSDT-PERP,1,60000"), STATE,
                                                    BUNDLE).im, rel=1e-12)
    cross = _status(acct)
    assert cross.collateral["BTC"]["haircut"] == pytest.approx(0.001)
    assert cross.im_usd != pytest.approx(r.im_usd)  # the coin joins the scenarios


def test_status_healthy_margin_call_and_liquidation() -> None:
    """The same long perpetual with decreasing cash: healthy, then a margin call for IM - equity,
    then liquidation below MM; equity is cash plus the unrealized P&L."""
    pf = book("p,BTCUSDT-PERP,5,60000")
    im = compute_margin(pf, STATE, BUNDLE)
    pnl = 5 * (60_030.0 - 60_000.0)
    healthy = _status(Account("h", pf, {"USD": 2 * im.im}))
    assert healthy.status == "healthy" and healthy.call_usd == 0.0
    assert healthy.equity_usd == pytest.approx(2 * im.im + pnl, rel=1e-12)
    called = _status(Account("c", pf, {"USD": (im.im + im.mm) / 2}))
    assert called.status == "margin_call"
    assert called.call_usd == pytest.approx(called.im_usd - called.equity_usd, rel=1e-12)
    liq = _status(Account("l", pf, {"USD": 0.5 * im.mm}))
    assert liq.status == "liquidation" and liq.margin_ratio > 1
    assert liq.liquidation["BTC"]["down"] == 0.0
    # the engine's MM along the path: equity meets MM at the threshold, above it before
    x = healthy.liquidation["BTC"]["down"]
    assert -0.95 < x < 0


def test_bad_accounts_fail_alone() -> None:
    """Negative collateral, an unknown currency, a duplicate id, a coin without a price: each is
    a failure naming the field and the value; the good account still computes."""
    pf = book("p,BTCUSDT-PERP,1,60000")
    no_sol = dataclasses.replace(STATE, underlyings={k: v for k, v in STATE.underlyings.items()
                                                     if k != "SOL"})
    accts = [Account("good", pf, {"USD": 10_000.0}), Account("neg", pf, {"USD": -5.0}),
             Account("ccy", pf, {"EUR": 100.0}), Account("good", pf, {"USD": 1.0}),
             Account("nan", pf, {"USD": float("nan")})]
    out = accounts_status(accts, STATE, BUNDLE)
    assert isinstance(out[0], AccountStatus)
    fails = out[1:]
    assert all(isinstance(f, Failure) for f in fails)
    assert fails[0].details["field"] == "balances.USD" and fails[0].details["value"] == -5.0
    assert fails[1].details["value"] == "EUR"
    assert fails[2].details["field"] == "id"
    assert "finite" in fails[3].details["expected"]
    sol = account_status(Account("sol", pf, {"SOL": 3.0}), no_sol, BUNDLE)
    assert isinstance(sol, Failure) and sol.details["field"] == "balances.SOL"
    # a position that cannot price is a failure inside the status; the rest computes
    mixed = _status(Account("m", book("p,BTCUSDT-PERP,1,60000\nx,BTC-{+30D}-60000-X,1,1"),
                            {"USD": 10_000.0}))
    assert mixed.im_usd > 0 and [f.subject for f in mixed.failures] == ["x"]


def test_tier_brackets_are_continuous() -> None:
    """The default brackets' maintenance amounts make MM continuous at every cap."""
    tiers = MMRule(kind="tiered").tiers
    for cap, _, _ in tiers[:-1]:
        assert tier_mm(cap, tiers) == pytest.approx(tier_mm(cap * (1 + 1e-12), tiers), rel=1e-9)
    assert tier_mm(10_000.0, tiers) == pytest.approx(40.0)
    xs = np.linspace(1, 2e7, 400)
    assert np.all(np.diff([tier_mm(x, tiers) for x in xs]) > 0)


def test_accounts_in_one_call_equal_each_alone() -> None:
    """accounts_status reuses one context per (underlyings, MPOR) across accounts: every status
    equals the account computed alone."""
    books = ["p,BTCUSDT-PERP,2,58000", "p,BTCUSDT-PERP,-1,61000\nc,BTC-{+30D}-65000-C,-2,0.02",
             "p,BTCUSDT-PERP,3,60000", "e,ETHUSDT-PERP,-20,3100"]
    accts = [Account(f"a{i}", book(b), {"USD": 30_000.0, "BTC": 0.2 * i})
             for i, b in enumerate(books)]
    batch = accounts_status(accts, STATE, BUNDLE)
    for a, r in zip(accts, batch, strict=True):
        alone = _status(a)
        assert isinstance(r, AccountStatus)
        for k in ("equity_usd", "im_usd", "mm_usd", "collateral_usd"):
            assert getattr(r, k) == pytest.approx(getattr(alone, k), rel=1e-9), (a.id, k)
        for u, v in alone.liquidation.items():
            for side in ("down", "up"):
                if v[side] is None:
                    assert r.liquidation[u][side] is None
                else:
                    assert r.liquidation[u][side] == pytest.approx(v[side], rel=1e-7, abs=1e-9)


def test_accounts_files_parse_and_bad_rows_are_named() -> None:
    """JSON and CSV give the same accounts; an account without an id, or a balance that is not a
    number, fails alone naming the field and value; a broken structure raises naming what was
    expected."""
    from features.errors import DataError
    from margin.accounts import parse_accounts

    js = ('{"accounts": [{"id": "a", "balances": {"USD": 100, "BTC": 0.5}, "positions": '
          '[{"instrument": "BTCUSDT-PERP", "quantity": 2, "entry_price": 60000}]},'
          '{"balances": {"USD": 1}}, {"id": "c", "balances": {"USD": "lots"}}]}')
    accts, bad = parse_accounts(js, "json", as_of=AS_OF)
    assert [a.id for a in accts] == ["a"] and accts[0].balances == {"USD": 100.0, "BTC": 0.5}
    assert accts[0].portfolio.positions[0].quantity == 2.0
    assert [(f.details["field"], f.details["value"]) for f in bad] == [("id", "None"),
                                                                        ("balances.USD", "lots")]
    csv_text = ("# two accounts\naccount,kind,name,quantity,entry_price\n"
                "a,balance,USD,100,\na,balance,BTC,0.5,\na,position,BTCUSDT-PERP,2,60000\n"
                "b,balance,USDT,50,\n")
    accts2, bad2 = parse_accounts(csv_text, "csv", as_of=AS_OF)
    assert bad2 == [] and [a.id for a in accts2] == ["a", "b"]
    assert accts2[0].balances == accts[0].balances
    assert accts2[0].portfolio.positions[0].instrument == accts[0].portfolio.positions[0].instrument
    assert accts2[1].portfolio.positions == ()
    with pytest.raises(DataError, match="kind = 'loan'; expected 'balance' or 'position'"):
        parse_accounts("account,kind,name,quantity\na,loan,USD,1\n", "csv", as_of=AS_OF)
    with pytest.raises(DataError, match="header must hold"):
        parse_accounts("id,amount\na,1\n", "csv", as_of=AS_OF)
    with pytest.raises(DataError, match="expected a list of accounts"):
        parse_accounts('{"accounts": 3}', "json", as_of=AS_OF)
    with pytest.raises(DataError, match="not JSON"):
        parse_accounts("{", "json", as_of=AS_OF)
    with pytest.raises(DataError, match="expected 'json' or 'csv'"):
        parse_accounts("", "xml", as_of=AS_OF)
