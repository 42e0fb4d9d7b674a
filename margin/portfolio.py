"""Portfolios: positions parsed and validated from CSV or JSON text (pure code, no file I/O).

File format (the README's "Market state and portfolios" shows an example). One position per CSV
row (header line required; blank lines and lines starting with ``#`` are skipped) or per object
of a JSON list (either the file's top level or its ``"positions"`` key, beside the optional
``"name"`` and ``"margin_currency"``):

==============  ==========================================================================
field           meaning
==============  ==========================================================================
instrument      a venue name (``BTC-28MAR25-70000-C``, ``ETH-PERPETUAL``, ``BTC-28MAR25``,
                ``BTCUSDT``, ``BTCUSDT-PERP``, ``SP500``, ``SP500-21MAR25-5000-P``; see
                :func:`margin.instruments.parse_instrument`), or a label when ``kind`` is given
quantity        contracts, signed (long > 0, short < 0); finite and non-zero
entry_price     the trade price, required for futures and perpetuals (their P&L runs from it),
                optional otherwise; finite and > 0
id              optional position id (default: ``line N`` / ``#N``); unique
kind            ``spot``, ``perpetual``, ``future`` or ``option``: describes an instrument that
                has no venue name, with ``underlying`` (a key of ``UNDERLYINGS``), ``expiry``
                (futures, options), ``strike`` and ``right`` (``C``/``P``, options),
                ``settlement`` (``linear``/``inverse``; not needed for spot) and
                ``contract_size`` (required when inverse; linear default 1 unit)
==============  ==========================================================================

Relative expiries: in a name, ``{+30D}`` (or ``{+2W}``) in place of the expiry code resolves to
the first Friday on or after ``as_of + 30 days`` (Deribit's weekly expiry day; the instrument's
own expiry hour: 08:00 UTC for crypto, the New York close for indices), e.g.
``BTC-{+30D}-60000-C`` -> ``BTC-4APR25-60000-C``; in the ``expiry`` field of a described
instrument, ``+30D`` is exactly ``as_of + 30 days``. So example books never expire before the data.

Every bad row becomes a per-position :class:`~features.errors.Failure` whose details name the
``field``, the ``value`` and what was ``expected``; the other rows still load:

=========================  ===============================================================
reason                     when
=========================  ===============================================================
``UNKNOWN_INSTRUMENT``     the name parses to nothing known and no ``kind`` describes it;
                           an unknown ``underlying``
``EXPIRED``                the expiry is at or before ``as_of``
``MISSING_PRICE``          no ``entry_price`` for a future or perpetual
``INVALID_VALUE``          NaN, infinite or zero quantity; strike <= 0; a non-positive or
                           non-numeric price or size; an unknown field; a missing description
                           field; a duplicate id
=========================  ===============================================================
"""

from __future__ import annotations

import csv
import io
import json
import re
from dataclasses import dataclass
from typing import Any, Literal

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from features.errors import DataError, Failure, FailureReason
from features.symbols import deribit_code
from margin.instruments import (
    UNDERLYINGS,
    Future,
    Instrument,
    Option,
    OptionRight,
    Perpetual,
    Settlement,
    Spot,
    parse_instrument,
)

__all__ = [
    "FIELDS",
    "Portfolio",
    "Position",
    "PositionRow",
    "parse_portfolio",
    "resolve_expiry",
]

_REL = re.compile(r"\+(\d+)([DW])")
_REL_IN_NAME = re.compile(r"\{\s*(\+\d+[DW])\s*\}")


class PositionRow(BaseModel):
    """One row of a portfolio file, type-checked (pydantic); see the module docstring."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True, frozen=True,
                              coerce_numbers_to_str=True)

    instrument: str = Field(min_length=1)
    quantity: float = Field(allow_inf_nan=False)
    entry_price: float | None = Field(None, allow_inf_nan=False, gt=0)
    id: str | None = None
    kind: Literal["spot", "perpetual", "future", "option"] | None = None
    underlying: str | None = None
    expiry: str | None = None
    strike: float | None = Field(None, allow_inf_nan=False)
    right: Literal["C", "P"] | None = None
    settlement: Literal["linear", "inverse"] | None = None
    contract_size: float | None = Field(None, allow_inf_nan=False, gt=0)

    @field_validator("quantity")
    @classmethod
    def _non_zero(cls, v: float) -> float:
        if v == 0:
            raise ValueError("a non-zero number of contracts (long > 0, short < 0)")
        return v

    @field_validator("right", mode="before")
    @classmethod
    def _upper(cls, v: object) -> object:
        return v.strip().upper() if isinstance(v, str) else v


FIELDS = tuple(PositionRow.model_fields)
"""The fields (CSV columns, JSON keys) a position may have."""


@dataclass(frozen=True)
class Position:
    """A validated position.

    Attributes
    ----------
    id : the position id (given, or ``line N`` / ``#N``).
    instrument : the parsed or described :class:`~margin.instruments.Instrument`.
    quantity : signed number of contracts.
    entry_price : trade price in the instrument's quote unit, or None.
    line : 1-based CSV line, or the 0-based index in the JSON list.
    text : the instrument as written in the file (before resolving relative expiries).
    """

    id: str
    instrument: Instrument
    quantity: float
    entry_price: float | None
    line: int
    text: str

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        inst = self.instrument
        return {
            "id": self.id, "instrument": inst.name, "text": self.text,
            "type": type(inst).__name__.lower(), "underlying": inst.underlying,
            "settlement": inst.settlement.value, "contract_size": inst.contract_size,
            "expiry": None if inst.expiry is None else inst.expiry.isoformat(),
            "strike": getattr(inst, "strike", None),
            "right": None if not isinstance(inst, Option) else inst.right.value,
            "quantity": self.quantity, "entry_price": self.entry_price, "line": self.line,
        }


@dataclass(frozen=True)
class Portfolio:
    """Validated positions and the failures of the rows that could not be loaded.

    Attributes
    ----------
    name : the portfolio's name (JSON ``name``, else the file stem).
    positions : the positions that loaded, in file order.
    failures : one :class:`~features.errors.Failure` per bad row (subject = the position id).
    as_of : the time relative expiries and expiry checks refer to.
    margin_currency : "USD" (default) or a coin ("BTC") the margin is expressed in.
    source : the file (or other source) the text came from.
    """

    name: str
    positions: tuple[Position, ...]
    failures: tuple[Failure, ...]
    as_of: pd.Timestamp
    margin_currency: str = "USD"
    source: str = ""

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {"name": self.name, "source": self.source, "as_of": self.as_of.isoformat(),
                "margin_currency": self.margin_currency,
                "positions": [p.to_dict() for p in self.positions],
                "failures": [f.to_dict() for f in self.failures]}


def _utc(ts: object) -> pd.Timestamp:
    t = pd.Timestamp(ts)
    return t.tz_localize("UTC") if t.tzinfo is None else t.tz_convert("UTC")


def resolve_expiry(text: str, as_of: pd.Timestamp) -> pd.Timestamp:
    """An expiry given as ``+30D``/``+2W`` (``as_of`` plus that) or as a timestamp (UTC if naive).

    Raises ``ValueError`` naming the value and the expected forms.
    """
    m = _REL.fullmatch(text.strip().upper())
    if m:
        n, unit = int(m.group(1)), m.group(2)
        return _utc(as_of) + pd.Timedelta(days=n * (7 if unit == "W" else 1))
    try:
        t = pd.Timestamp(text)
    except (ValueError, TypeError):
        t = pd.NaT
    if pd.isna(t):
        raise ValueError(f"expiry {text!r} is neither a relative expiry such as '+30D' or '+2W' "
                         "nor a timestamp such as '2025-03-28T08:00Z'")
    return _utc(t)


def _name_code(offset: str, as_of: pd.Timestamp) -> str:
    """The Deribit date code of the first Friday on or after ``as_of + offset``."""
    day = resolve_expiry(offset, as_of).normalize()
    day = day + pd.Timedelta(days=(4 - day.day_of_week) % 7)
    return deribit_code(day)


def _subject(row_id: object, where: str) -> str:
    return str(row_id).strip() if isinstance(row_id, str) and row_id.strip() else where


def _row_failures(exc: ValidationError, raw: dict[str, Any], subject: str, line: int,
                  source: str) -> list[Failure]:
    out = []
    for err in exc.errors():
        fld = str(err["loc"][0]) if err["loc"] else "row"
        value = raw.get(fld, err.get("input"))
        if err["type"] == "extra_forbidden":
            expected = f"one of the fields {list(FIELDS)}"
            msg = f"unexpected field '{fld}' (value {value!r}); expected {expected}"
        elif err["type"] == "missing":
            expected = "a value"
            msg = f"field '{fld}' is missing; expected a value"
        else:
            expected = err["msg"].removeprefix("Value error, ")
            msg = f"field '{fld}' has value {value!r}; expected {expected}"
        out.append(Failure(FailureReason.INVALID_VALUE, subject, msg,
                           {"field": fld, "value": value, "expected": expected, "line": line,
                            "source": source}))
    return out


def _fail(reason: FailureReason, subject: str, fld: str, value: object, expected: str,
          line: int, source: str, message: str | None = None) -> Failure:
    msg = message or f"field '{fld}' has value {value!r}; expected {expected}"
    return Failure(reason, subject, msg, {"field": fld, "value": value, "expected": expected,
                                          "line": line, "source": source})


def _describe(row: PositionRow, as_of: pd.Timestamp, subject: str, line: int,
              source: str) -> Instrument | Failure:
    """An instrument from the description fields of a row (``kind`` given)."""
    def need(fld: str, expected: str) -> Failure:
        return _fail(FailureReason.INVALID_VALUE, subject, fld, None, expected, line, source,
                     f"field '{fld}' is missing; a described {row.kind} needs {expected}")

    if row.underlying is None:
        return need("underlying", f"one of {sorted(UNDERLYINGS)}")
    und = row.underlying.upper()
    if und not in UNDERLYINGS:
        return _fail(FailureReason.UNKNOWN_INSTRUMENT, subject, "underlying", row.underlying,
                     f"one of {sorted(UNDERLYINGS)}", line, source)
    if row.kind == "spot":
        settlement = Settlement.LINEAR
    elif row.settlement is None:
        return need("settlement", "'linear' or 'inverse'")
    else:
        settlement = Settlement(row.settlement)
    size = row.contract_size
    if size is None:
        if settlement is Settlement.INVERSE:
            return need("contract_size", "the USD face (futures, perpetuals) or coins (options) "
                        "per contract")
        size = 1.0
    expiry = None
    if row.kind in ("future", "option"):
        if row.expiry is None:
            return need("expiry", "'+30D' or a timestamp")
        try:
            expiry = resolve_expiry(row.expiry, as_of)
        except ValueError as exc:
            return _fail(FailureReason.INVALID_VALUE, subject, "expiry", row.expiry,
                         "'+30D', '+2W' or a timestamp", line, source, str(exc))
    name = row.instrument
    try:
        if row.kind == "spot":
            return Spot(name, und, size, settlement, "")
        if row.kind == "perpetual":
            return Perpetual(name, und, size, settlement, "")
        if row.kind == "future":
            return Future(name, und, size, settlement, "", expiry)
        if row.strike is None:
            return need("strike", "a number > 0")
        if row.strike <= 0:
            return _fail(FailureReason.INVALID_VALUE, subject, "strike", row.strike, "> 0", line,
                         source)
        if row.right is None:
            return need("right", "'C' or 'P'")
        return Option(name, und, size, settlement, "", expiry, row.strike, OptionRight(row.right))
    except DataError as exc:  # the instrument's own checks
        fld = exc.column or "instrument"
        return _fail(FailureReason.INVALID_VALUE, subject, fld, getattr(row, fld, None),
                     "a valid value", line, source, str(exc))


def _resolve_name(text: str, as_of: pd.Timestamp, subject: str, line: int,
                  source: str) -> Instrument | Failure:
    name = text
    m = _REL_IN_NAME.search(text)
    if m:
        name = text[: m.start()] + _name_code(m.group(1), as_of) + text[m.end():]
    try:
        return parse_instrument(name)
    except DataError as exc:
        if exc.column == "strike":
            return _fail(FailureReason.INVALID_VALUE, subject, "strike", name, "a strike > 0",
                         line, source, str(exc))
        return _fail(FailureReason.UNKNOWN_INSTRUMENT, subject, "instrument", text,
                     "a venue name (Deribit, Binance, index) or a 'kind' describing it", line,
                     source, str(exc))


def _rows_csv(text: str, source: str) -> list[tuple[int, dict[str, Any]]]:
    rows: list[tuple[int, dict[str, Any]]] = []
    header: list[str] | None = None
    lines = text.splitlines()
    for i, parsed in enumerate(csv.reader(io.StringIO("\n".join(lines))), start=1):
        raw_line = lines[i - 1] if i - 1 < len(lines) else ""
        if not parsed or not "".join(parsed).strip() or raw_line.lstrip().startswith("#"):
            continue
        if header is None:
            header = [c.strip() for c in parsed]
            unknown = [c for c in header if c not in FIELDS]
            if unknown:
                raise DataError(f"unknown column {unknown[0]!r}; expected columns among "
                                f"{list(FIELDS)}", source=source, line=i, column=unknown[0])
            missing = [c for c in ("instrument", "quantity") if c not in header]
            if missing:
                raise DataError(f"missing required column(s) {missing}; got {header}",
                                source=source, line=i)
            continue
        if len(parsed) > len(header):
            rows.append((i, {"__extra__": parsed[len(header):]}))
            continue
        rec = {h: (v.strip() if v.strip() != "" else None) for h, v in zip(header, parsed,
                                                                          strict=False)}
        rows.append((i, rec))
    if header is None:
        raise DataError("empty portfolio: no header line; expected columns instrument,quantity,"
                        "...", source=source)
    return rows


def _rows_json(text: str, source: str) -> tuple[list[tuple[int, dict[str, Any]]], dict[str, Any]]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"invalid JSON: {exc.msg}", source=source, line=exc.lineno) from None
    meta: dict[str, Any] = {}
    if isinstance(data, dict):
        extra = [k for k in data if k not in ("name", "margin_currency", "positions")]
        if extra:
            raise DataError(f"unknown top-level key {extra[0]!r}; expected 'name', "
                            "'margin_currency' and 'positions'", source=source)
        if "positions" not in data:
            raise DataError("no 'positions' key; expected {\"positions\": [...]} or a list",
                            source=source)
        meta = {k: data[k] for k in ("name", "margin_currency") if k in data}
        data = data["positions"]
    if not isinstance(data, list):
        raise DataError(f"positions must be a JSON list of objects; got {type(data).__name__}",
                        source=source)
    rows = []
    for i, rec in enumerate(data):
        rows.append((i, rec if isinstance(rec, dict) else {"__not_object__": rec}))
    return rows, meta


def parse_portfolio(text: str, fmt: str, *, as_of: object, source: str = "<text>",
                    name: str | None = None) -> Portfolio:
    """Parse and validate a portfolio from CSV or JSON text.

    Parameters
    ----------
    text : the file's content.
    fmt : "csv" or "json".
    as_of : the market state's time: relative expiries resolve against it and positions that
        expire at or before it fail with ``EXPIRED``.
    source : where the text came from (named in failures and errors).
    name : the portfolio name when the text gives none.

    Returns
    -------
    Portfolio with the positions that loaded and one failure per bad row.

    Raises
    ------
    DataError : the text's structure is wrong (unknown format, CSV header, JSON shape), so no
        row can be read.
    """
    t = _utc(as_of)
    if fmt == "csv":
        rows, meta = _rows_csv(text, source), {}
        where = "line {}"
    elif fmt == "json":
        rows, meta = _rows_json(text, source)
        where = "#{}"
    else:
        raise DataError(f"unknown portfolio format {fmt!r}; expected 'csv' or 'json'",
                        source=source)
    currency = str(meta.get("margin_currency", "USD")).upper()
    coins = {k for k, u in UNDERLYINGS.items() if u.asset_class == "crypto"}
    if currency != "USD" and currency not in coins:
        raise DataError(f"margin_currency {currency!r} is not 'USD' or a coin among "
                        f"{sorted(coins)}", source=source, column="margin_currency")
    positions: list[Position] = []
    failures: list[Failure] = []
    seen: set[str] = set()
    for line, raw in rows:
        subject = _subject(raw.get("id"), where.format(line))
        if "__extra__" in raw:
            failures.append(_fail(FailureReason.INVALID_VALUE, subject, "row", raw["__extra__"],
                                  "no more cells than the header has columns", line, source))
            continue
        if "__not_object__" in raw:
            failures.append(_fail(FailureReason.INVALID_VALUE, subject, "row",
                                  raw["__not_object__"], "a JSON object", line, source))
            continue
        try:
            row = PositionRow.model_validate(raw)
        except ValidationError as exc:
            failures.extend(_row_failures(exc, raw, subject, line, source))
            continue
        pid = row.id or where.format(line)
        if pid in seen:
            failures.append(_fail(FailureReason.INVALID_VALUE, subject, "id", pid,
                                  "an id not used by an earlier position", line, source))
            continue
        if row.kind is not None:
            inst = _describe(row, t, subject, line, source)
        else:
            inst = _resolve_name(row.instrument, t, subject, line, source)
        if isinstance(inst, Failure):
            failures.append(inst)
            continue
        if inst.is_expired(t):
            failures.append(_fail(FailureReason.EXPIRED, subject, "expiry", str(inst.expiry),
                                  f"an expiry after as_of {t}", line, source,
                                  f"{inst.name} expired at {inst.expiry}, at or before as_of {t}"))
            continue
        if isinstance(inst, (Future, Perpetual)) and row.entry_price is None:
            failures.append(_fail(FailureReason.MISSING_PRICE, subject, "entry_price", None,
                                  f"the trade price of the {type(inst).__name__.lower()} (its "
                                  "P&L runs from it)", line, source,
                                  f"field 'entry_price' is missing; {inst.name} is a "
                                  f"{type(inst).__name__.lower()}, whose P&L runs from its "
                                  "entry price"))
            continue
        seen.add(pid)
        positions.append(Position(pid, inst, row.quantity, row.entry_price, line,
                                  row.instrument))
    return Portfolio(str(meta.get("name") or name or source), tuple(positions), tuple(failures),
                     t, currency, source)
