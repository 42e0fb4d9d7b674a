"""Instrument names, contract sizes, expiries, the underlying table and the P&L formulas."""

from __future__ import annotations

import pandas as pd
import pytest

from features.errors import DataError, Failure, FailureReason
from margin.instruments import (
    UNDERLYINGS,
    Future,
    Option,
    OptionRight,
    Perpetual,
    Settlement,
    Spot,
    parse_instrument,
    try_parse,
    underlying_of,
)

UTC8 = pd.Timestamp("2024-12-27 08:00", tz="UTC")
LIN = Settlement.LINEAR


@pytest.mark.parametrize(
    ("name", "cls", "underlying", "settlement", "size", "venue"),
    [
        ("BTC-27DEC24-50000-C", Option, "BTC", Settlement.INVERSE, 1.0, "deribit"),
        ("ETH-27DEC24-3000-P", Option, "ETH", Settlement.INVERSE, 1.0, "deribit"),
        ("ETH-PERPETUAL", Perpetual, "ETH", Settlement.INVERSE, 1.0, "deribit"),
        ("BTC-PERPETUAL", Perpetual, "BTC", Settlement.INVERSE, 10.0, "deribit"),
        ("BTC-27DEC24", Future, "BTC", Settlement.INVERSE, 10.0, "deribit"),
        ("ETH-27DEC24", Future, "ETH", Settlement.INVERSE, 1.0, "deribit"),
        ("BTCUSDT", Spot, "BTC", Settlement.LINEAR, 1.0, "binance"),
        ("BTCUSDT-PERP", Perpetual, "BTC", Settlement.LINEAR, 1.0, "binance"),
        ("BTCUSD_PERP", Perpetual, "BTC", Settlement.INVERSE, 100.0, "binance"),
        ("ETHUSD_PERP", Perpetual, "ETH", Settlement.INVERSE, 10.0, "binance"),
        ("BTCUSD_241227", Future, "BTC", Settlement.INVERSE, 100.0, "binance"),
        ("ETHUSDT_241227", Future, "ETH", Settlement.LINEAR, 1.0, "binance"),
        ("SP500", Spot, "SP500", Settlement.LINEAR, 1.0, "index"),
        ("NASDAQ-20DEC24", Future, "NASDAQ", Settlement.LINEAR, 1.0, "index"),
        ("SP500-20DEC24-5000-C", Option, "SP500", Settlement.LINEAR, 1.0, "index"),
    ],
    ids=lambda x: x if isinstance(x, str) else None,
)
def test_parse_known_names(name, cls, underlying, settlement, size, venue):
    inst = parse_instrument(name)
    assert type(inst) is cls
    assert (inst.underlying, inst.settlement, inst.contract_size, inst.venue) == (
        underlying, settlement, size, venue)
    assert inst.name == name


def test_deribit_option_fields_and_expiry_0800_utc():
    o = parse_instrument("BTC-27DEC24-50000-C")
    assert isinstance(o, Option)
    assert o.strike == 50000.0 and o.right is OptionRight.CALL and o.is_call
    assert o.expiry == UTC8
    assert parse_instrument("ETH-5JAN24-2250-P").expiry == pd.Timestamp("2024-01-05 08:00", tz="UTC")
    assert parse_instrument("BTC-27DEC24").expiry == UTC8
    assert parse_instrument("BTCUSD_241227").expiry == UTC8
    assert not o.is_expired(pd.Timestamp("2024-12-27 07:59:59", tz="UTC"))
    assert o.is_expired(UTC8)
    assert parse_instrument("BTCUSDT").expiry is None


def test_index_expiry_is_new_york_close():
    # 2024-12-20 is in EST (UTC-5): 16:00 New York = 21:00 UTC; in July (EDT) 20:00 UTC.
    assert parse_instrument("SP500-20DEC24").expiry == pd.Timestamp("2024-12-20 21:00", tz="UTC")
    assert parse_instrument("SP500-19JUL24").expiry == pd.Timestamp("2024-07-19 20:00", tz="UTC")


def test_decimal_strike_with_d():
    assert parse_instrument("ETH-27DEC24-2250d5-C").strike == 2250.5


@pytest.mark.parametrize(
    ("name", "match"),
    [
        ("FOO-27DEC24-100-C", "underlying 'FOO' is not in the underlying table"),
        ("BTC-27XYZ24-50000-C", "month 'XYZ'"),
        ("BTC-31FEB24", "31FEB24 is not a calendar date"),
        ("BTCUSD_241340", "241340 is not a calendar date"),
        ("SOL-PERPETUAL", "no inverse perpetual on 'SOL'"),
        ("SOL-27DEC24-100-C", "no inverse options on 'SOL'"),
        ("hello world", "is not a known name"),
        ("", "non-empty string"),
    ],
)
def test_parse_errors_name_the_field_and_value(name, match):
    with pytest.raises(DataError, match=match) as ei:
        parse_instrument(name)
    assert ei.value.column == "instrument"


def test_try_parse_returns_failure():
    f = try_parse("XYZ123", subject="position 7")
    assert isinstance(f, Failure)
    assert f.reason is FailureReason.UNKNOWN_INSTRUMENT
    assert f.subject == "position 7" and "XYZ123" in f.message
    assert f.details == {"field": "instrument", "value": "XYZ123"}
    assert isinstance(try_parse("ETH-PERPETUAL"), Perpetual)


def test_constructor_validation():
    with pytest.raises(DataError, match="strike of 'x' must be a finite number > 0. Got -1.0"):
        Option("x", "BTC", 1.0, Settlement.LINEAR, "", UTC8, -1.0, OptionRight.PUT)
    with pytest.raises(DataError, match="contract_size of 'x' must be a finite number > 0"):
        Spot("x", "BTC", 0.0)
    with pytest.raises(DataError, match="underlying of instrument 'x' must be a non-empty string"):
        Spot("x", "")
    with pytest.raises(DataError, match="underlying 'DOGGO' is not in the underlying table"):
        underlying_of(Spot("x", "DOGGO"))  # a described instrument may name any underlying
    with pytest.raises(DataError, match=r"right of 'x' must be one of \['C', 'P'\]. Got 'X'"):
        Option("x", "BTC", 1.0, LIN, "", UTC8, 1.0, "x")
    with pytest.raises(DataError, match=r"settlement of 'x' must be one of \['linear', 'inverse'\]"):
        Spot("x", "BTC", 1.0, "quanto")
    with pytest.raises(DataError, match="expiry must be a timestamp. Got 'soon' instead"):
        Future("x", "BTC", 1.0, LIN, "", "soon")
    assert Option("x", "BTC", 1.0, "Linear", "", UTC8, 1.0, "call").right is OptionRight.CALL
    o = Option("x", "BTC", 1.0, "inverse", "", "2024-12-27 08:00", 100.0, "P")
    assert o.settlement is Settlement.INVERSE and o.right is OptionRight.PUT
    assert o.expiry == UTC8  # naive timestamps are UTC


def test_underlying_table():
    assert underlying_of(parse_instrument("BTC-27DEC24-50000-C")) == UNDERLYINGS["BTC"]
    btc = UNDERLYINGS["BTC"]
    assert (btc.index, btc.spot, btc.perpetual, btc.vol_index) == (
        "BTCUSDT", "BTCUSDT", "BTCUSDT-PERP", "BTC-DVOL")
    sp = UNDERLYINGS["SP500"]
    assert (sp.index, sp.spot, sp.perpetual, sp.calendar) == ("SP500", "SP500", None, "XNYS")
    # the S&P 500's vol index is the VIX (arch's vix, symbol VIX); no NASDAQ vol index is stored
    assert sp.vol_index == "VIX" and UNDERLYINGS["NASDAQ"].vol_index is None


def test_pnl_linear_and_inverse_hand_computed():
    # Deribit BTC inverse future, 10 USD per contract, 100 long contracts, 50,000 -> 55,000:
    # 1000 USD face x (1/50000 - 1/55000) = 0.0018181818... BTC.
    fut = parse_instrument("BTC-27DEC24")
    assert fut.pnl(100, 50_000.0, 55_000.0) == pytest.approx(1000 * (1 / 50_000 - 1 / 55_000),
                                                             rel=1e-15)
    assert fut.pnl(100, 50_000.0, 55_000.0) == pytest.approx(0.00181818181818, rel=1e-10)
    # short: opposite sign
    assert fut.pnl(-100, 50_000.0, 55_000.0) == -fut.pnl(100, 50_000.0, 55_000.0)
    # Binance linear perpetual: 2 BTC long, +1000 USD move -> 2000 USD
    assert parse_instrument("BTCUSDT-PERP").pnl(2.0, 60_000.0, 61_000.0) == 2000.0
