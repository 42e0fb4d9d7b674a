"""Symbol metadata: asset class, trading calendar, annualization and contract specs."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from datetime import date

CRYPTO_24_7 = "24/7"
"""Calendar of venues trading around the clock (periods are UTC days)."""


@dataclass(frozen=True)
class Calendar:
    """A trading calendar: 24/7 or an exchange session in a local time zone.

    Attributes
    ----------
    name : "24/7" or an exchange name such as "XNYS".
    tz : IANA time zone of the session times.
    open_time, close_time : session open and close as "HH:MM" local time (24/7: "00:00", "24:00").
    weekdays_only : sessions only Monday to Friday.
    periods_per_year : trading days per year, the annualization factor of daily variance.
    """

    name: str
    tz: str
    open_time: str
    close_time: str
    weekdays_only: bool
    periods_per_year: int


CALENDARS: dict[str, Calendar] = {
    "24/7": Calendar("24/7", "UTC", "00:00", "24:00", False, 365),
    "XNYS": Calendar("XNYS", "America/New_York", "09:30", "16:00", True, 252),
    "XLON": Calendar("XLON", "Europe/London", "08:00", "16:30", True, 252),
    "XETR": Calendar("XETR", "Europe/Berlin", "09:00", "17:30", True, 252),
    "XPAR": Calendar("XPAR", "Europe/Paris", "09:00", "17:30", True, 252),
    "XTKS": Calendar("XTKS", "Asia/Tokyo", "09:00", "15:00", True, 245),
    "XHKG": Calendar("XHKG", "Asia/Hong_Kong", "09:30", "16:00", True, 247),
}


@dataclass(frozen=True)
class SymbolMeta:
    """What DPRM knows about an instrument.

    Attributes
    ----------
    symbol : the canonical symbol (unique across venues/markets within a dataset).
    asset_class : "crypto_spot", "crypto_perp_linear", "crypto_perp_inverse", "crypto_future",
        "crypto_option", "equity", "equity_index", "vol_index" or "unknown".
    calendar : name of a :data:`CALENDARS` entry.
    base, quote : currencies where known.
    contract_size : units of the base (linear) or quote (inverse) per contract.
    tick_size : minimum price increment where known.
    """

    symbol: str
    asset_class: str
    calendar: str
    base: str | None = None
    quote: str | None = None
    contract_size: float | None = None
    tick_size: float | None = None

    @property
    def annualization(self) -> int:
        """Periods per year for daily data: 365 on 24/7 venues, about 252 on exchanges."""
        return CALENDARS[self.calendar].periods_per_year

    def to_dict(self) -> dict[str, object]:
        """A JSON-serializable record, with the annualization factor."""
        return {**asdict(self), "annualization": self.annualization}


_QUOTES = ("USDT", "USDC", "FDUSD", "BUSD", "USD", "BTC", "ETH", "EUR")
CRYPTO_BASES = frozenset(
    "BTC ETH BNB LTC SOL XRP ADA DOGE DOT AVAX LINK MATIC POL TRX BCH XLM ATOM ETC UNI FIL NEAR "
    "APT ARB OP SHIB TON SUI XMR EOS AAVE ALGO ICP HBAR VET XTZ NEO".split()
)
"""Crypto assets whose bare name a source may use for its Binance USDT pair (``btc`` ->
``BTCUSDT``, :func:`spot_pair`). Any other bare name is kept as it is."""
_INDEX_CAL = {
    "SPX": "XNYS",
    "GSPC": "XNYS",
    "DJI": "XNYS",
    "DJIA": "XNYS",
    "NDX": "XNYS",
    "IXIC": "XNYS",
    "RUT": "XNYS",
    "NASDAQ": "XNYS",
    "SP500": "XNYS",
    "VIX": "XNYS",
    "FTSE": "XLON",
    "GDAXI": "XETR",
    "FCHI": "XPAR",
    "N225": "XTKS",
    "HSI": "XHKG",
}
_INDEX_ETF_CAL = {"SPY": "XNYS", "QQQ": "XNYS", "IWM": "XNYS", "DIA": "XNYS"}
"""Exchange-traded funds tracking the mapped indices: equities on their exchange's calendar."""
_KNOWN: dict[str, SymbolMeta] = {
    # Binance COIN-M inverse perpetuals: 100 USD (BTC) / 10 USD (others) per contract.
    "BTCUSD_PERP": SymbolMeta(
        "BTCUSD_PERP", "crypto_perp_inverse", "24/7", "BTC", "USD", 100.0, 0.1
    ),
    "ETHUSD_PERP": SymbolMeta(
        "ETHUSD_PERP", "crypto_perp_inverse", "24/7", "ETH", "USD", 10.0, 0.01
    ),
}


def symbol_meta(symbol: str, *, market: str | None = None) -> SymbolMeta:
    """Metadata for ``symbol``, from the known table or inferred from its name and market.

    Parameters
    ----------
    symbol : canonical symbol, e.g. "BTCUSDT", "BTCUSDT-PERP", "SPX", "ETH-26JAN24-2200-C".
    market : a hint from the source ("spot", "usdm_perp", "coinm_perp", "option", "equity", "index").
    """
    s = symbol.upper()
    if s in _KNOWN:
        return _KNOWN[s]
    bare = s.lstrip(".^")
    if bare in _INDEX_ETF_CAL:
        return SymbolMeta(symbol, "equity", _INDEX_ETF_CAL[bare])
    if bare in _INDEX_CAL or market == "index":
        cls = "vol_index" if bare in ("VIX", "DVOL") or bare.endswith("DVOL") else "equity_index"
        if bare.endswith("DVOL"):
            return SymbolMeta(symbol, "vol_index", "24/7", bare.removesuffix("-DVOL"), None)
        return SymbolMeta(symbol, cls, _INDEX_CAL.get(bare, "XNYS"))
    if re.fullmatch(r"[A-Z]+-\d{1,2}[A-Z]{3}\d{2}-[\d.]+-[CP]", s) or market == "option":
        return SymbolMeta(symbol, "crypto_option", "24/7", s.split("-")[0], None)
    if market == "equity":
        return SymbolMeta(symbol, "equity", "XNYS")
    perp = s.endswith("-PERP") or market in ("usdm_perp", "perp")
    core = s.removesuffix("-PERP")
    for q in _QUOTES:
        if core.endswith(q) and len(core) > len(q):
            base = core[: -len(q)]
            if perp:
                return SymbolMeta(symbol, "crypto_perp_linear", "24/7", base, q, 1.0)
            if market == "coinm_perp":
                return SymbolMeta(
                    symbol, "crypto_perp_inverse", "24/7", base, q, 100.0 if base == "BTC" else 10.0
                )
            return SymbolMeta(symbol, "crypto_spot", "24/7", base, q)
    if market in ("spot", "crypto"):
        return SymbolMeta(symbol, "crypto_spot", "24/7")
    return SymbolMeta(symbol, "unknown", "24/7" if market is None else "XNYS")


def spot_pair(name: str) -> str:
    """The canonical symbol of a bare asset name taken from a file name or an option.

    A known crypto base (:data:`CRYPTO_BASES`, any case) becomes its Binance spot USDT pair
    (``btc`` -> ``BTCUSDT``); every other name is upper-cased and kept, never given a quote
    currency: ``djia`` -> ``DJIA`` (an equity index on the NYSE calendar), ``BTCUSDT`` ->
    ``BTCUSDT``, ``foo`` -> ``FOO``.
    """
    s = name.strip().upper()
    return s + "USDT" if s in CRYPTO_BASES else s


# ---- Deribit date codes ---------------------------------------------------------------------
DERIBIT_MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
"""Month codes of Deribit instrument names (``BTC-27DEC24``): index 0 is January."""


def deribit_code(expiry: date) -> str:
    """Deribit's date code of a date (a ``pandas.Timestamp`` too), the day without a leading
    zero: ``28MAR25``, ``7FEB25``."""
    return f"{expiry.day}{DERIBIT_MONTHS[expiry.month - 1]}{expiry.year % 100:02d}"
