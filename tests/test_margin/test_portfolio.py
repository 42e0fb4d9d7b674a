"""Tests of portfolio parsing and validation: CSV and JSON, relative expiries, one failure per bad
row naming the field, the value and what was expected, and the rest still loading."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from features.errors import DataError, FailureReason
from margin.instruments import Future, Option, Perpetual, Settlement, Spot
from margin.portfolio import FIELDS, parse_portfolio, resolve_expiry

AS_OF = pd.Timestamp("2025-03-02T00:00Z")  # a Sunday


def _csv(*rows: str, header: str = "id,instrument,quantity,entry_price") -> str:
    return "\n".join([header, *rows]) + "\n"


def test_csv_venue_names_load() -> None:
    text = _csv("a,BTC-28MAR25-70000-C,-5,0.01", "b,ETH-PERPETUAL,-1000,3000",
                "c,BTCUSDT,2,", "d,BTC-27JUN25,100,61000", "e,SP500,10,")
    pf = parse_portfolio(text, "csv", as_of=AS_OF, source="t.csv", name="t")
    assert pf.failures == () and [p.id for p in pf.positions] == list("abcde")
    a, b, c, d, e = (p.instrument for p in pf.positions)
    assert isinstance(a, Option) and a.strike == 70_000 and a.inverse and a.contract_size == 1
    assert a.expiry == pd.Timestamp("2025-03-28T08:00Z")
    assert isinstance(b, Perpetual) and b.inverse and b.contract_size == 1.0  # Deribit ETH: 1 USD
    assert isinstance(c, Spot) and pf.positions[2].entry_price is None
    assert isinstance(d, Future) and d.contract_size == 10.0
    assert isinstance(e, Spot) and e.underlying == "SP500"
    assert pf.positions[0].quantity == -5 and pf.positions[0].line == 2
    assert pf.name == "t" and pf.margin_currency == "USD"


def test_relative_expiries_resolve_against_as_of() -> None:
    text = _csv("a,BTC-{+30D}-60000-C,1,0.05", "b,ETH-{ +2W },10,3000", "c,SP500-{+30D}-5000-P,1,")
    pf = parse_portfolio(text, "csv", as_of=AS_OF)
    assert pf.failures == ()
    # as_of + 30 days = Tue 2025-04-01 -> the first Friday on or after it, 08:00 UTC
    assert pf.positions[0].instrument.name == "BTC-4APR25-60000-C"
    assert pf.positions[0].instrument.expiry == pd.Timestamp("2025-04-04T08:00Z")
    assert pf.positions[0].text == "BTC-{+30D}-60000-C"
    # + 14 days = Sun 2025-03-16 -> Fri 2025-03-21
    assert pf.positions[1].instrument.name == "ETH-21MAR25"
    # index options expire at the New York close (16:00 EDT = 20:00 UTC in April)
    assert pf.positions[2].instrument.expiry == pd.Timestamp("2025-04-04T20:00Z")
    # the same file a year later still loads: expiries move with as_of
    later = parse_portfolio(text, "csv", as_of=AS_OF + pd.Timedelta(days=365))
    assert later.failures == () and later.positions[0].instrument.expiry.year == 2026
    assert resolve_expiry("+30D", AS_OF) == AS_OF + pd.Timedelta(days=30)
    assert resolve_expiry("2025-06-27 08:00", AS_OF) == pd.Timestamp("2025-06-27T08:00Z")
    with pytest.raises(ValueError, match="expiry 'soon' is neither a relative expiry"):
        resolve_expiry("soon", AS_OF)


def test_described_instruments() -> None:
    header = "id,instrument,quantity,entry_price,kind,underlying,expiry,strike,right,settlement,contract_size"
    text = _csv("o,my put,2,,option,BTC,+30D,55000,p,linear,",
                "f,otc fwd,-1,62000,future,btc,2025-06-27T08:00Z,,,inverse,100",
                "s,cold wallet,3,,spot,ETH,,,,,", header=header)
    pf = parse_portfolio(text, "csv", as_of=AS_OF)
    assert pf.failures == ()
    o, f, s = (p.instrument for p in pf.positions)
    assert isinstance(o, Option) and o.expiry == AS_OF + pd.Timedelta(days=30)  # exact offset
    assert o.right.value == "P" and o.settlement is Settlement.LINEAR and o.contract_size == 1.0
    assert isinstance(f, Future) and f.inverse and f.contract_size == 100 and f.underlying == "BTC"
    assert isinstance(s, Spot) and s.underlying == "ETH" and o.name == "my put"


def test_json_both_shapes() -> None:
    rows = [{"id": 7, "instrument": "BTC-28MAR25-70000-C", "quantity": "-5", "entry_price": 0.01},
            {"instrument": "BTCUSDT", "quantity": 1.5}]
    a = parse_portfolio(json.dumps(rows), "json", as_of=AS_OF, name="x")
    b = parse_portfolio(json.dumps({"name": "book", "margin_currency": "btc", "positions": rows}),
                        "json", as_of=AS_OF)
    for pf in (a, b):
        assert pf.failures == () and [p.id for p in pf.positions] == ["7", "#1"]
        assert pf.positions[0].quantity == -5.0
    assert (a.name, a.margin_currency) == ("x", "USD")
    assert (b.name, b.margin_currency) == ("book", "BTC")
    assert json.loads(json.dumps(b.to_dict()))["positions"][0]["strike"] == 70_000


# ---- per-row failures ----------------------------------------------------------------------

BAD_ROWS = [
    ("unknown", "FOO-BAR,1,", FailureReason.UNKNOWN_INSTRUMENT, "instrument", "FOO-BAR",
     "instrument 'FOO-BAR' is not a known name"),
    ("unknown_und", "DOGE-28MAR25-1-C,1,", FailureReason.UNKNOWN_INSTRUMENT, "instrument",
     "DOGE-28MAR25-1-C", "Deribit lists no inverse options on 'DOGE'"),
    ("expired", "BTC-27DEC24-50000-C,1,0.01", FailureReason.EXPIRED, "expiry",
     "2024-12-27 08:00:00+00:00", "expired at 2024-12-27 08:00:00"),
    ("no_price", "BTC-PERPETUAL,100,", FailureReason.MISSING_PRICE, "entry_price", None,
     "field 'entry_price' is missing; BTC-PERPETUAL is a perpetual"),
    ("nan_qty", "BTCUSDT,nan,1", FailureReason.INVALID_VALUE, "quantity", "nan",
     "field 'quantity' has value 'nan'; expected Input should be a finite number"),
    ("inf_qty", "BTCUSDT,inf,1", FailureReason.INVALID_VALUE, "quantity", "inf",
     "expected Input should be a finite number"),
    ("zero_qty", "BTCUSDT,0,1", FailureReason.INVALID_VALUE, "quantity", "0",
     "expected a non-zero number of contracts"),
    ("text_qty", "BTCUSDT,lots,1", FailureReason.INVALID_VALUE, "quantity", "lots",
     "expected Input should be a valid number"),
    ("neg_entry", "BTCUSDT,1,-3", FailureReason.INVALID_VALUE, "entry_price", "-3",
     "expected Input should be greater than 0"),
    ("zero_strike", "BTC-28MAR25-0-C,1,", FailureReason.INVALID_VALUE, "strike",
     "BTC-28MAR25-0-C", "strike of 'BTC-28MAR25-0-C' must be a finite number > 0"),
    ("no_qty", "BTCUSDT,,1", FailureReason.INVALID_VALUE, "quantity", None,
     "field 'quantity' has value None"),
]


@pytest.mark.parametrize(("pid", "row", "reason", "fld", "value", "message"), BAD_ROWS,
                         ids=[r[0] for r in BAD_ROWS])
def test_each_bad_row_is_one_failure_and_the_rest_loads(
    pid: str, row: str, reason: FailureReason, fld: str, value: object, message: str
) -> None:
    text = _csv("ok1,BTCUSDT,1,60000", f"{pid},{row}", "ok2,ETH-28MAR25-3000-P,-2,0.05")
    pf = parse_portfolio(text, "csv", as_of=AS_OF, source="book.csv")
    assert [p.id for p in pf.positions] == ["ok1", "ok2"]
    assert len(pf.failures) == 1
    f = pf.failures[0]
    assert f.subject == pid and f.reason is reason
    assert f.details["field"] == fld and f.details["value"] == value
    assert f.details["line"] == 3 and f.details["source"] == "book.csv"
    assert f.details["expected"]
    assert message in f.message


def test_described_row_failures() -> None:
    header = "id,instrument,quantity,kind,underlying,expiry,strike,right,settlement,contract_size"
    text = _csv("neg_k,p,1,option,BTC,+30D,-5,P,linear,",
                "no_k,p,1,option,BTC,+30D,,P,linear,",
                "no_und,p,1,option,,+30D,5,P,linear,",
                "bad_und,p,1,option,FOO,+30D,5,P,linear,",
                "inv_no_size,f,1,future,BTC,+30D,,,inverse,",
                "bad_exp,f,1,future,BTC,later,,,linear,",
                "no_settle,f,1,perpetual,BTC,,,,,",
                "bad_right,p,1,option,BTC,+30D,5,X,linear,",
                "past,f,1,future,BTC,2024-01-01,,,linear,",
                header=header)
    pf = parse_portfolio(text, "csv", as_of=AS_OF)
    got = {f.subject: (f.reason, f.details["field"]) for f in pf.failures}
    assert pf.positions == ()
    assert got == {
        "neg_k": (FailureReason.INVALID_VALUE, "strike"),
        "no_k": (FailureReason.INVALID_VALUE, "strike"),
        "no_und": (FailureReason.INVALID_VALUE, "underlying"),
        "bad_und": (FailureReason.UNKNOWN_INSTRUMENT, "underlying"),
        "inv_no_size": (FailureReason.INVALID_VALUE, "contract_size"),
        "bad_exp": (FailureReason.INVALID_VALUE, "expiry"),
        "no_settle": (FailureReason.INVALID_VALUE, "settlement"),
        "bad_right": (FailureReason.INVALID_VALUE, "right"),
        "past": (FailureReason.EXPIRED, "expiry"),
    }
    neg = next(f for f in pf.failures if f.subject == "neg_k")
    assert neg.message == "field 'strike' has value -5.0; expected > 0"


def test_json_row_failures() -> None:
    rows = [{"instrument": "BTCUSDT", "quantity": 1, "qty": 2}, 5,
            {"instrument": "BTCUSDT", "quantity": 1, "id": "x"},
            {"instrument": "ETHUSDT", "quantity": 1, "id": "x"}]
    pf = parse_portfolio(json.dumps(rows), "json", as_of=AS_OF)
    assert [p.id for p in pf.positions] == ["x"]
    assert [(f.subject, f.details["field"]) for f in pf.failures] == [
        ("#0", "qty"), ("#1", "row"), ("x", "id")]
    assert "unexpected field 'qty'" in pf.failures[0].message
    assert "an id not used by an earlier position" in pf.failures[2].message


def test_shipped_bad_file_shows_one_failure_per_bad_row() -> None:
    from pathlib import Path

    p = Path(__file__).resolve().parents[2] / "examples" / "portfolios" / "invalid" / "bad_rows.csv"
    pf = parse_portfolio(p.read_text(), "csv", as_of=AS_OF, source=str(p))
    assert [x.id for x in pf.positions] == ["ok"]
    assert [(f.subject, f.reason) for f in pf.failures] == [
        ("unknown", FailureReason.UNKNOWN_INSTRUMENT), ("expired", FailureReason.EXPIRED),
        ("no_price", FailureReason.MISSING_PRICE), ("nan_qty", FailureReason.INVALID_VALUE),
        ("zero_qty", FailureReason.INVALID_VALUE), ("bad_strike", FailureReason.INVALID_VALUE)]


# ---- structural errors -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "fmt", "message"),
    [
        ("instrument,qty\nBTCUSDT,1\n", "csv", r"t.csv, line 1, column 'qty': unknown column 'qty'"),
        ("instrument,entry_price\nBTCUSDT,1\n", "csv", r"missing required column\(s\) \['quantity'\]"),
        ("# only a comment\n\n", "csv", "empty portfolio: no header line"),
        ("{\"positions\": [", "json", "invalid JSON"),
        ("{\"rows\": []}", "json", "unknown top-level key 'rows'"),
        ("{\"name\": \"x\"}", "json", "no 'positions' key"),
        ("\"BTCUSDT\"", "json", "positions must be a JSON list of objects; got str"),
        ("{\"positions\": [], \"margin_currency\": \"EUR\"}", "json", "margin_currency 'EUR'"),
        ("", "xlsx", "unknown portfolio format 'xlsx'"),
    ],
)
def test_structural_errors_raise(text: str, fmt: str, message: str) -> None:
    with pytest.raises(DataError, match=message):
        parse_portfolio(text, fmt, as_of=AS_OF, source="t.csv")


def test_comments_blank_lines_and_too_many_cells() -> None:
    text = "# book\n\ninstrument,quantity\n# a note\nBTCUSDT,1\nETHUSDT,2,3\n\n"
    pf = parse_portfolio(text, "csv", as_of=AS_OF)
    assert [p.line for p in pf.positions] == [5]
    assert pf.failures[0].subject == "line 6" and pf.failures[0].details["field"] == "row"
    assert set(FIELDS) >= {"instrument", "quantity", "entry_price", "kind", "strike"}


# ---- property: every row is either a position or exactly one failure ---------------------------


@settings(max_examples=60, deadline=None)
@given(st.lists(st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.just(0.0)),
                min_size=1, max_size=12))
def test_every_row_is_a_position_or_one_failure(quantities: list[float]) -> None:
    rows = [{"id": f"p{i}", "instrument": "BTCUSDT", "quantity": q}
            for i, q in enumerate(quantities)]
    pf = parse_portfolio(json.dumps(rows), "json", as_of=AS_OF)  # NaN/inf as JSON extensions
    good = [f"p{i}" for i, q in enumerate(quantities) if math.isfinite(q) and q != 0]
    assert [p.id for p in pf.positions] == good
    assert len(pf.positions) + len(pf.failures) == len(quantities)
    assert all(f.details["field"] == "quantity" for f in pf.failures)
    assert [p.quantity for p in pf.positions] == [q for q in quantities
                                                  if math.isfinite(q) and q != 0]
