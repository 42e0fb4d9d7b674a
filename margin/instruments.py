"""Instruments: spot, linear and inverse futures and perpetuals, European options (Black-76).

Every instrument is a frozen dataclass; a position is an instrument and a signed quantity
(long > 0, short < 0) counted in contracts. Conventions (the README's "Instruments and pricing"):

- **Linear** (USD/USDT/USDC-settled): ``contract_size`` is units of the underlying per contract
  (Binance USDT-M: 1, quantity in coins; Deribit options: 1 BTC / 1 ETH). P&L in USD =
  quantity x contract_size x (price - entry).
- **Inverse** (coin-margined, settled in the underlying coin): futures and perpetuals have
  ``contract_size`` in USD of face value per contract (Deribit BTC 10 USD, ETH 1 USD; Binance
  COIN-M BTC 100 USD, others 10 USD); P&L in coin = quantity x contract_size x (1/entry - 1/price).
  Inverse (Deribit) options have ``contract_size`` in coins of underlying (1 BTC / 1 ETH) and a
  premium quoted in coin = USD price / underlying (forward) price.
- **Expiry** is a UTC ``pd.Timestamp``; Deribit and Binance delivery contracts expire at
  08:00 UTC; equity-index contracts at the New York close (16:00 America/New_York).
- Every instrument's ``underlying`` is a key of :data:`UNDERLYINGS`, the one table that maps it to
  the store's symbols (index, spot, perpetual, implied-vol index).

Names: :func:`parse_instrument` reads Deribit names (``BTC-27DEC24-50000-C``, ``ETH-PERPETUAL``,
``BTC-27DEC24``), Binance symbols (``BTCUSDT``, ``BTCUSDT-PERP``, ``BTCUSD_PERP``,
``BTCUSD_241227``, ``BTCUSDT_241227``) and index names (``SP500``, ``NASDAQ``, and their
``SP500-20DEC24`` futures / ``SP500-20DEC24-5000-C`` options). An unparseable name raises
:class:`~features.errors.DataError` naming the field and the value; :func:`try_parse` returns a
:class:`~features.errors.Failure` (``UNKNOWN_INSTRUMENT``) instead, for per-position failures.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from enum import StrEnum

import pandas as pd

from features.errors import DataError, Failure, FailureReason
from features.symbols import CALENDARS, DERIBIT_MONTHS

__all__ = [
    "DERIBIT_EXPIRY_HOUR_UTC",
    "UNDERLYINGS",
    "Future",
    "Instrument",
    "Option",
    "OptionRight",
    "Perpetual",
    "Settlement",
    "Spot",
    "Underlying",
    "parse_instrument",
    "try_parse",
    "underlying_of",
]

DERIBIT_EXPIRY_HOUR_UTC = 8
"""Deribit (and Binance delivery) contracts expire at 08:00 UTC on their expiry date."""


class Settlement(StrEnum):
    """How a contract settles: in USD/stablecoin (linear) or in the underlying coin (inverse)."""

    LINEAR = "linear"
    INVERSE = "inverse"


class OptionRight(StrEnum):
    """Call or put."""

    CALL = "C"
    PUT = "P"


@dataclass(frozen=True)
class Underlying:
    """An underlying and the store symbols its prices come from.

    Attributes
    ----------
    name : the underlying's key ("BTC", "SP500").
    index : store symbol of the index/reference price options and futures settle against.
    spot : store symbol of the spot price.
    perpetual : store symbol of the linear perpetual (funding, mark), or None if there is none.
    vol_index : store symbol of the implied-volatility index (DVOL), or None.
    asset_class : "crypto" or "equity_index".
    calendar : a :data:`features.symbols.CALENDARS` key.
    """

    name: str
    index: str
    spot: str
    perpetual: str | None
    vol_index: str | None
    asset_class: str
    calendar: str


def _crypto(coin: str, dvol: bool = False) -> Underlying:
    return Underlying(coin, f"{coin}USDT", f"{coin}USDT", f"{coin}USDT-PERP",
                      f"{coin}-DVOL" if dvol else None, "crypto", "24/7")


UNDERLYINGS: dict[str, Underlying] = {
    # Crypto: the Binance USDT spot pair stands in for the USD index (the store has no Deribit
    # index series); perpetual = the Binance USDT-M perpetual; DVOL where Deribit publishes one.
    **{c: _crypto(c, dvol=c in ("BTC", "ETH")) for c in (
        "BTC", "ETH", "BNB", "LTC", "SOL", "XRP", "ADA", "DOGE", "DOT", "LINK", "AVAX", "ATOM")},
    # Equity indices (the embedded arch data, table bars_1d); no perpetual. The S&P 500's vol
    # index is the VIX (arch's vix, table vix_1d); the store holds no NASDAQ vol index (VXN).
    "SP500": Underlying("SP500", "SP500", "SP500", None, "VIX", "equity_index", "XNYS"),
    "NASDAQ": Underlying("NASDAQ", "NASDAQ", "NASDAQ", None, None, "equity_index", "XNYS"),
}
"""Underlying -> store symbols. BTC -> index/spot ``BTCUSDT``, perpetual ``BTCUSDT-PERP``,
vol index ``BTC-DVOL``; SP500 -> ``SP500``, vol index ``VIX``. Extend here (one table, nowhere
else)."""


@dataclass(frozen=True)
class Instrument:
    """Common fields of every instrument.

    Attributes
    ----------
    name : the venue name or a descriptive name (unique per instrument).
    underlying : the underlying's name, a key of :data:`UNDERLYINGS` for every parsed name (an
        instrument described in a portfolio file may name another; :func:`underlying_of` then
        raises).
    contract_size : units of underlying per contract (linear, inverse options) or USD face value
        per contract (inverse futures and perpetuals).
    settlement : :class:`Settlement`.
    venue : "deribit", "binance", "index" or "" (described in a portfolio file).
    """

    name: str
    underlying: str
    contract_size: float = 1.0
    settlement: Settlement = Settlement.LINEAR
    venue: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.underlying, str) or not self.underlying.strip():
            raise DataError(f"underlying of instrument {self.name!r} must be a non-empty string. "
                            f"Got {self.underlying!r} instead.", column="underlying")
        if not (math.isfinite(self.contract_size) and self.contract_size > 0):
            raise DataError(f"contract_size of {self.name!r} must be a finite number > 0. "
                            f"Got {self.contract_size!r} instead.", column="contract_size")
        if not isinstance(self.settlement, Settlement):
            object.__setattr__(self, "settlement", _enum(Settlement, self.settlement,
                                                         "settlement", self.name))

    @property
    def inverse(self) -> bool:
        """Coin-settled (inverse) contract."""
        return self.settlement is Settlement.INVERSE

    @property
    def expiry(self) -> pd.Timestamp | None:
        """Expiry time (UTC), None for spot and perpetuals."""
        return None

    def is_expired(self, as_of: pd.Timestamp) -> bool:
        """Whether the instrument has expired at ``as_of`` (expiry <= as_of)."""
        exp = self.expiry
        return exp is not None and exp <= _utc(as_of)

    def pnl(self, quantity: float, entry: float, price: float) -> float:
        """P&L of ``quantity`` contracts from ``entry`` to ``price``, in the settlement currency
        (USD for linear, coin for inverse futures/perpetuals)."""
        if self.inverse:
            return quantity * self.contract_size * (1.0 / entry - 1.0 / price)
        return quantity * self.contract_size * (price - entry)


@dataclass(frozen=True)
class Spot(Instrument):
    """Spot holding (or an index tracked one-for-one); quantity in units of the underlying."""


@dataclass(frozen=True)
class Perpetual(Instrument):
    """Perpetual swap: linear (USDT-M, contract_size in coins) or inverse (USD face per contract).
    Holders exchange funding (longs pay a positive rate) against the index."""


@dataclass(frozen=True)
class Future(Instrument):
    """Dated future settling against the underlying's index at ``expiry_ts`` (UTC)."""

    expiry_ts: pd.Timestamp = pd.Timestamp(0, tz="UTC")

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "expiry_ts", _utc(self.expiry_ts))

    @property
    def expiry(self) -> pd.Timestamp:
        """Expiry time (UTC)."""
        return self.expiry_ts


@dataclass(frozen=True)
class Option(Instrument):
    """European option on the forward for its expiry (Black-76).

    Linear: premium in USD per unit of underlying. Inverse (Deribit): premium in coin = USD price
    / forward, contract_size in coins.
    """

    expiry_ts: pd.Timestamp = pd.Timestamp(0, tz="UTC")
    strike: float = 0.0
    right: OptionRight = OptionRight.CALL

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "expiry_ts", _utc(self.expiry_ts))
        if not isinstance(self.right, OptionRight):
            r = self.right
            r = {"CALL": "C", "PUT": "P"}.get(r.upper(), r.upper()) if isinstance(r, str) else r
            object.__setattr__(self, "right", _enum(OptionRight, r, "right", self.name))
        if not (math.isfinite(self.strike) and self.strike > 0):
            raise DataError(f"strike of {self.name!r} must be a finite number > 0. "
                            f"Got {self.strike!r} instead.", column="strike")

    @property
    def expiry(self) -> pd.Timestamp:
        """Expiry time (UTC)."""
        return self.expiry_ts

    @property
    def is_call(self) -> bool:
        """A call (else a put)."""
        return self.right is OptionRight.CALL


def _enum(cls: type[StrEnum], value: object, field: str, name: str) -> StrEnum:
    try:
        return cls(value.lower() if cls is Settlement and isinstance(value, str) else value)
    except ValueError as e:
        raise DataError(f"{field} of {name!r} must be one of {[m.value for m in cls]}. "
                        f"Got {value!r} instead.", column=field) from e


def _utc(ts: object) -> pd.Timestamp:
    try:
        t = pd.Timestamp(ts)
    except (TypeError, ValueError) as e:
        raise DataError(f"expiry must be a timestamp. Got {ts!r} instead.", column="expiry") from e
    if t is pd.NaT:
        raise DataError(f"expiry must be a timestamp. Got {ts!r} instead.", column="expiry")
    return t.tz_localize("UTC") if t.tzinfo is None else t.tz_convert("UTC")


def underlying_of(instrument: Instrument) -> Underlying:
    """The :data:`UNDERLYINGS` row of an instrument (its store symbols).

    Raises
    ------
    DataError : the underlying is not in the table.
    """
    u = UNDERLYINGS.get(instrument.underlying)
    if u is None:
        raise DataError(f"instrument {instrument.name!r}: underlying {instrument.underlying!r} is "
                        f"not in the underlying table; expected one of {sorted(UNDERLYINGS)}",
                        column="underlying")
    return u


# ---- contract sizes (venues' published specifications) ---------------------------------------
# Deribit inverse futures and perpetuals: BTC 10 USD, ETH 1 USD per contract; Deribit BTC/ETH
# options: 1 BTC / 1 ETH per contract (https://www.deribit.com/kb/deribit-inverse-futures,
# https://www.deribit.com/kb/inverse-options "Contract size").
DERIBIT_INVERSE_FUTURE_USD = {"BTC": 10.0, "ETH": 1.0}
DERIBIT_OPTION_COINS = {"BTC": 1.0, "ETH": 1.0}
# Binance COIN-M futures/perpetuals: 100 USD (BTC), 10 USD (every other coin) per contract
# (https://www.binance.com/en/futures/trading-rules/quarterly, "Contract Size").
BINANCE_COINM_BTC_USD = 100.0
BINANCE_COINM_OTHER_USD = 10.0
# Index contracts named in a portfolio as SP500-.../NASDAQ-...: 1 unit of the index per contract
# (a portfolio file scales it by quantity or describes an exchange multiplier explicitly).
INDEX_CONTRACT_SIZE = 1.0

_MONTHS = {m: i for i, m in enumerate(DERIBIT_MONTHS, 1)}
_DATE = r"(\d{1,2})([A-Z]{3})(\d{2})"
_RE_DERIBIT_OPTION = re.compile(rf"([A-Z][A-Z0-9]*)-{_DATE}-(\d+(?:[.D]\d+)?)-([CP])")
_RE_DERIBIT_FUTURE = re.compile(rf"([A-Z][A-Z0-9]*)-{_DATE}")
_RE_BINANCE_DELIVERY = re.compile(r"([A-Z]+?)(USDT|USD)_(\d{2})(\d{2})(\d{2})")
_LINEAR_QUOTES = ("USDT", "USDC", "FDUSD")


def _expiry(day: str, mon: str, yy: str, underlying: str, name: str) -> pd.Timestamp:
    if mon not in _MONTHS:
        raise DataError(f"instrument {name!r}: month {mon!r} is not one of {list(_MONTHS)}",
                        column="instrument")
    try:
        date = pd.Timestamp(year=2000 + int(yy), month=_MONTHS[mon], day=int(day))
    except ValueError as e:
        raise DataError(f"instrument {name!r}: {day}{mon}{yy} is not a calendar date",
                        column="instrument") from e
    u = UNDERLYINGS[underlying]
    if u.asset_class == "equity_index":
        cal = CALENDARS[u.calendar]
        hh, mm = (int(x) for x in cal.close_time.split(":"))
        local = date.replace(hour=hh, minute=mm).tz_localize(cal.tz)
        return local.tz_convert("UTC")
    return date.replace(hour=DERIBIT_EXPIRY_HOUR_UTC).tz_localize("UTC")


def _known(underlying: str, name: str) -> str:
    if underlying not in UNDERLYINGS:
        raise DataError(f"instrument {name!r}: underlying {underlying!r} is not in the "
                        f"underlying table; expected one of {sorted(UNDERLYINGS)}",
                        column="instrument")
    return underlying


def parse_instrument(name: str) -> Instrument:
    """Parse a Deribit name, a Binance symbol or an index name into an instrument.

    Parameters
    ----------
    name : e.g. "BTC-27DEC24-50000-C", "ETH-PERPETUAL", "BTC-27DEC24", "BTCUSDT",
        "BTCUSDT-PERP", "BTCUSD_PERP", "BTCUSD_241227", "SP500", "SP500-20DEC24-5000-P".

    Raises
    ------
    DataError : the name (field ``instrument``) matches no known pattern or its underlying is
        not in :data:`UNDERLYINGS`.
    """
    if not isinstance(name, str) or not name.strip():
        raise DataError(f"instrument name must be a non-empty string. Got {name!r} instead.",
                        column="instrument")
    s = name.strip().upper()
    if s in UNDERLYINGS and UNDERLYINGS[s].asset_class == "equity_index":
        return Spot(s, s, INDEX_CONTRACT_SIZE, Settlement.LINEAR, "index")
    m = _RE_DERIBIT_OPTION.fullmatch(s)
    if m:
        und, day, mon, yy, k, right = m.groups()
        und = _known(und, name)
        strike = float(k.replace("D", ".").replace("d", "."))
        exp = _expiry(day, mon, yy, und, name)
        if UNDERLYINGS[und].asset_class == "equity_index":
            return Option(s, und, INDEX_CONTRACT_SIZE, Settlement.LINEAR, "index", exp, strike,
                          OptionRight(right))
        size = DERIBIT_OPTION_COINS.get(und)
        if size is None:
            raise DataError(f"instrument {name!r}: Deribit lists no inverse options on {und!r} "
                            f"(BTC and ETH only)", column="instrument")
        return Option(s, und, size, Settlement.INVERSE, "deribit", exp, strike, OptionRight(right))
    if s.endswith("-PERPETUAL"):
        und = _known(s.removesuffix("-PERPETUAL"), name)
        size = DERIBIT_INVERSE_FUTURE_USD.get(und)
        if size is None:
            raise DataError(f"instrument {name!r}: Deribit lists no inverse perpetual on {und!r} "
                            "(BTC and ETH only)", column="instrument")
        return Perpetual(s, und, size, Settlement.INVERSE, "deribit")
    m = _RE_DERIBIT_FUTURE.fullmatch(s)
    if m:
        und, day, mon, yy = m.groups()
        und = _known(und, name)
        exp = _expiry(day, mon, yy, und, name)
        if UNDERLYINGS[und].asset_class == "equity_index":
            return Future(s, und, INDEX_CONTRACT_SIZE, Settlement.LINEAR, "index", exp)
        size = DERIBIT_INVERSE_FUTURE_USD.get(und)
        if size is None:
            raise DataError(f"instrument {name!r}: Deribit lists no inverse future on {und!r} "
                            "(BTC and ETH only)", column="instrument")
        return Future(s, und, size, Settlement.INVERSE, "deribit", exp)
    if s.endswith("USD_PERP"):
        und = _known(s.removesuffix("USD_PERP"), name)
        size = BINANCE_COINM_BTC_USD if und == "BTC" else BINANCE_COINM_OTHER_USD
        return Perpetual(s, und, size, Settlement.INVERSE, "binance")
    m = _RE_BINANCE_DELIVERY.fullmatch(s)
    if m:
        und, quote, yy, mm, dd = m.groups()
        und = _known(und, name)
        try:
            exp = pd.Timestamp(year=2000 + int(yy), month=int(mm), day=int(dd),
                               hour=DERIBIT_EXPIRY_HOUR_UTC, tz="UTC")
        except ValueError as e:
            raise DataError(f"instrument {name!r}: {yy}{mm}{dd} is not a calendar date (YYMMDD)",
                            column="instrument") from e
        if quote == "USD":
            size = BINANCE_COINM_BTC_USD if und == "BTC" else BINANCE_COINM_OTHER_USD
            return Future(s, und, size, Settlement.INVERSE, "binance", exp)
        return Future(s, und, 1.0, Settlement.LINEAR, "binance", exp)
    perp = s.endswith("-PERP")
    core = s.removesuffix("-PERP")
    for q in _LINEAR_QUOTES:
        if core.endswith(q) and len(core) > len(q):
            und = _known(core[: -len(q)], name)
            cls = Perpetual if perp else Spot
            return cls(s, und, 1.0, Settlement.LINEAR, "binance")
    raise DataError(
        f"instrument {name!r} is not a known name; expected a Deribit name (BTC-27DEC24-50000-C, "
        "ETH-PERPETUAL, BTC-27DEC24), a Binance symbol (BTCUSDT, BTCUSDT-PERP, BTCUSD_PERP, "
        "BTCUSD_241227) or an index (SP500, SP500-20DEC24-5000-C)", column="instrument")


def try_parse(name: str, *, subject: str | None = None) -> Instrument | Failure:
    """:func:`parse_instrument`, with a ``Failure(UNKNOWN_INSTRUMENT)`` instead of raising.

    Parameters
    ----------
    name : the instrument name.
    subject : what the failure is about (a position id); defaults to the name.
    """
    try:
        return parse_instrument(name)
    except DataError as e:
        return Failure(FailureReason.UNKNOWN_INSTRUMENT, subject or str(name), str(e),
                       {"field": "instrument", "value": name})
