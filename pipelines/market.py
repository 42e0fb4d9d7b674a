"""Build a :class:`~margin.market_state.MarketState` from the canonical store, and read portfolio
files: the I/O half of ``margin.market_state`` and ``margin.portfolio``.

:func:`build_market_state` reads, for each underlying of :data:`margin.instruments.UNDERLYINGS`
with data in the dataset, only rows stamped at or before ``as_of`` (``DataStore.read(end=as_of)``):

============  ==================================================================================
input         where from (the first that has a value; the source is recorded)
============  ==================================================================================
spot          close of the underlying's ``spot`` symbol in any bars/levels table (latest ts)
index         ``index_px`` of the perpetual's ``funding`` rows, else the spot
perp mark     ``mark_px`` of ``funding``, else a ``mark_*`` bars table, else the perpetual's close
funding       ``funding_rate`` of the last ``funding`` row; period 8h (Binance's) unless the rows
              are at least 1h apart (realized funding), then their median spacing
futures       close of every bars symbol that parses as a dated future of the underlying
              (``BTC-28MAR25``, ``BTCUSDT_250328``): a mark and a forward point
options       per option symbol the last row of the ``options`` table, unexpired; marks, and a
              forward per expiry by put-call parity (median over the strikes nearest the spot:
              coin quotes ``F = K / (1 - (C - P))``, USD quotes ``F = K + (C - P)``) where no
              future expires then
vol surface   :func:`fit_vol_surface` (:func:`margin.surface.fit_surface`, SVI per expiry) on the
              chain, or a ``surface_fitter(chain, state_so_far, as_of)`` passed in; with no
              chain, a :class:`~margin.market_state.FlatVolSurface` at the vol index (source
              ``flat at VIX close <ts> UTC (...)``); with neither, none (options without a mark
              then fail with ``MISSING_INPUTS``, field ``vol_surface``)
vol index     close of the underlying's ``vol_index`` symbol (DVOL, VIX: percent -> fraction)
rate          crypto: 0 (Deribit's convention, recorded as such); others: ``rates`` given in the
              config, else missing
============  ==================================================================================

A value older than ``max_age`` is kept and a ``STALE`` failure recorded; nothing older than
``lookback`` (``chain_lookback`` for options) is searched, so a chain weeks old is missing, not
current.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from features import schema as S
from features.errors import ConfigError, DataError, Failure, FailureReason
from features.store import DataStore
from margin.instruments import UNDERLYINGS, Future, parse_instrument
from margin.market_state import (
    FlatVolSurface,
    Forward,
    FundingQuote,
    Liquidity,
    MarketState,
    Quote,
    UnderlyingState,
)
from margin.portfolio import Portfolio, parse_portfolio

__all__ = [
    "MarketStateConfig",
    "build_market_state",
    "dataset_end",
    "read_portfolio",
]

BINANCE_FUNDING_INTERVAL = pd.Timedelta(hours=8)
"""Binance USDT-M (and Deribit's quoted) funding period, used when funding rows are ticker-like."""

SurfaceFitter = Callable[[pd.DataFrame, UnderlyingState, pd.Timestamp], Any]


class MarketStateConfig(BaseModel):
    """Parameters of :func:`build_market_state` (every field defaulted).

    Attributes
    ----------
    lookback : how far before ``as_of`` prices are searched.
    chain_lookback : how far before ``as_of`` option rows are searched (default: ``lookback``;
        the Deribit BTC marks file stamps rows by their last trade, up to a year before its
        snapshot, so reading it whole takes ``chain_lookback="400D"``).
    max_age : inputs older than this get a ``STALE`` failure (kept).
    rates : underlying -> continuously compounded annual rate, for non-crypto underlyings (the
        store holds no rates).
    dividend_yields : underlying -> continuous annual dividend yield of an equity index (with its
        rate it gives the forward ``S exp((r - q) tau)`` where no future is stored).
    underlyings : restrict to these underlyings (default: every one with data).
    parity_strikes : strikes nearest the spot used for put-call parity forwards.
    liquidity_lookback : window of bars and quotes behind :func:`liquidity_of`.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    lookback: str = "10D"
    chain_lookback: str | None = None
    max_age: str = "1D"
    rates: dict[str, float] = Field(default_factory=dict)
    dividend_yields: dict[str, float] = Field(default_factory=dict)
    underlyings: tuple[str, ...] = ()
    parity_strikes: int = Field(3, ge=1)
    liquidity_lookback: str = Field("30D", description=(
        "Window of bars (ADV, bar spread estimators) and quotes (last day of it) behind each "
        "underlying's Liquidity"))


def _td(name: str, value: str) -> pd.Timedelta:
    try:
        td = pd.Timedelta(value)
    except (ValueError, TypeError):
        raise ConfigError(f"The '{name}' setting must be a duration such as '1D' or '6h'. "
                          f"Got {value!r} instead.") from None
    if pd.isna(td) or td <= pd.Timedelta(0):
        raise ConfigError(f"The '{name}' setting must be a positive duration. Got {value!r} "
                          "instead.")
    return td


def _utc(ts: object) -> pd.Timestamp:
    try:
        t = pd.Timestamp(ts)
    except (ValueError, TypeError):
        raise ConfigError(f"as_of must be a timestamp such as '2025-03-01T00:00Z'. Got {ts!r} "
                          "instead.") from None
    if pd.isna(t):
        raise ConfigError(f"as_of must be a timestamp. Got {ts!r} instead.")
    return t.tz_localize("UTC") if t.tzinfo is None else t.tz_convert("UTC")


def dataset_end(store: DataStore, dataset: str) -> pd.Timestamp:
    """The latest timestamp stored in ``dataset`` (the default ``as_of``)."""
    man = store.require(dataset)
    ends = [pd.Timestamp(m["max_ts"]) for t in man["tables"].values()
            for m in t["partitions"].values()]
    if not ends:
        raise DataError(f"dataset '{dataset}' holds no rows")
    return _utc(max(ends))


def _last_rows(store: DataStore, dataset: str, table: str, symbols: list[str],
               start: pd.Timestamp, as_of: pd.Timestamp, columns: list[str] | None = None,
               ) -> pd.DataFrame:
    """The last row at or before ``as_of`` (and at or after ``start``) of each symbol."""
    f = store.read(dataset, table, symbols=symbols, start=start, end=as_of, columns=columns)
    if f.empty:
        return f
    f = f[f[S.TS] <= as_of]
    return f.sort_values([S.SYMBOL, S.TS], kind="stable").groupby(S.SYMBOL, sort=True).tail(1)


def _quote(value: float, unit: str, source: str, ts: pd.Timestamp) -> Quote | None:
    return Quote(value, unit, source, ts) if math.isfinite(value) and value > 0 else None


def liquidity_of(store: DataStore, dataset: str, symbol: str, as_of: pd.Timestamp,
                 lookback: pd.Timedelta, *, traded_value: bool = True) -> Liquidity | None:
    """Close-out inputs of ``symbol`` (an underlying's spot) from the store, data up to ``as_of``:

    - half spread and depth from the order book where a book table holds the symbol (the last
      day's snapshots: the top level's median ``(ask - bid) / (ask + bid)``, and the median
      quoted value of the thinner side); else the half spread of the quotes of the last day when
      a quotes table holds the symbol, else the Abdi-Ranaldo (2017) estimator
      (``features.microstructure.bar_liquidity``, 20 bars) on the finest bars table, halved
      (Corwin-Schultz when that estimate is 0);
    - ADV: traded value (``quote_volume``, else ``close x volume``) over the lookback per day;
      not for ``traded_value=False`` (an equity index's "volume" is its constituents' share
      volume, not a traded value of the index: no ADV, so no impact and no concentration);
    - open interest: not in the store (None: the margin's capacity falls back to days of ADV).

    None when the store has no bars of the symbol in the window or no spread estimate."""
    from features.microstructure import bar_liquidity

    man = store.require(dataset)
    tables = man["tables"]
    start = as_of - lookback
    bars_tables = sorted((t for t, i in tables.items()
                          if i["kind"] == "bars" and symbol in i.get("symbols", {})),
                         key=lambda t: pd.Timedelta(tables[t].get("interval") or "1D"))
    if not bars_tables:
        return None
    table = bars_tables[0]
    bars = store.read(dataset, table, symbols=[symbol], start=start, end=as_of)
    bars = bars[bars[S.TS] <= as_of]
    if len(bars) < 2:
        return None
    hs = depth = None
    for bt, info in sorted(tables.items()):
        if info["kind"] == "book" and symbol in info.get("symbols", {}):
            bk = store.read(dataset, bt, symbols=[symbol], start=as_of - pd.Timedelta(days=1),
                            end=as_of)
            bk = bk[bk[S.TS] <= as_of]
            if bk.empty:
                continue
            val = (bk[S.PX] * bk[S.SZ]).groupby([bk[S.TS], bk[S.SIDE]]).sum().unstack()
            if {1, -1} <= set(val.columns):
                depth = Quote(float(val.min(axis=1).median()), "USD",
                              f"{bt}: median over {len(val)} snapshots in the last day of the "
                              f"thinner side's quoted value [{symbol}]", bk[S.TS].max())
                top = bk[bk[S.LEVEL] == 0].pivot_table(index=S.TS, columns=S.SIDE, values=S.PX)
                top = top.dropna()
                top = top[top[-1] > top[1]]
                if len(top):
                    rel = (top[-1] - top[1]) / (top[-1] + top[1])
                    hs = Quote(float(rel.median()), "fraction",
                               f"{bt}: median (ask - bid) / (ask + bid) of the top level over "
                               f"{len(top)} snapshots in the last day [{symbol}]",
                               bk[S.TS].max())
            break
    for qt, info in sorted(tables.items()):
        if hs is not None:
            break
        if info["kind"] == "quotes" and symbol in info.get("symbols", {}):
            q = store.read(dataset, qt, symbols=[symbol], start=as_of - pd.Timedelta(days=1),
                           end=as_of, columns=[S.TS, S.SYMBOL, S.BID_PX, S.ASK_PX])
            q = q[(q[S.TS] <= as_of) & (q[S.ASK_PX] > q[S.BID_PX]) & (q[S.BID_PX] > 0)]
            if len(q):
                rel = (q[S.ASK_PX] - q[S.BID_PX]) / (q[S.ASK_PX] + q[S.BID_PX])
                hs = Quote(float(rel.median()), "fraction",
                           f"{qt}: median (ask - bid) / (ask + bid) of {len(q)} quotes in the "
                           f"last day [{symbol}]", q[S.TS].max())
                break
    if hs is None:
        w = min(20, len(bars) - 1)
        feats = bar_liquidity(bars, window=w)
        for col, who in (("ar_spread_bps", "Abdi-Ranaldo"), ("cs_spread_bps", "Corwin-Schultz")):
            est = feats[col].dropna()
            if len(est) and est.iloc[-1] > 0:  # a zero estimate (negative mean): try the next
                hs = Quote(float(est.iloc[-1]) / 2e4, "fraction",
                           f"{table}: {who} spread / 2 over {w} bars [{symbol}]",
                           bars[S.TS].max())
                break
    if hs is None:
        return None
    dv = (bars[S.QUOTE_VOLUME] if S.QUOTE_VOLUME in bars.columns and bars[S.QUOTE_VOLUME].notna().any()
          else bars[S.CLOSE] * bars[S.VOLUME] if S.VOLUME in bars.columns else None)
    adv = None
    if not traded_value:
        dv = None
    if dv is not None and dv.notna().any():
        interval = pd.Timedelta(tables[table].get("interval") or "1D")
        span_days = ((bars[S.TS].max() - bars[S.TS].min()) + interval) / pd.Timedelta(days=1)
        if span_days > 0 and float(dv.sum()) > 0:
            adv = Quote(float(dv.sum()) / span_days, "USD",
                        f"{table}: traded value over {span_days:.1f} days [{symbol}]",
                        bars[S.TS].max())
    return Liquidity(hs, adv, None, depth)


def build_market_state(
    store: DataStore,
    dataset: str,
    as_of: object | None = None,
    config: MarketStateConfig | None = None,
    *,
    surface_fitter: SurfaceFitter | None = None,
) -> MarketState:
    """The market state of ``dataset`` at ``as_of`` (default: the dataset's last timestamp),
    from data stamped at or before ``as_of`` only (rules in the module docstring).

    Raises
    ------
    DataError : the dataset does not exist.
    ConfigError : a bad setting (duration, unknown underlying, as_of).
    """
    cfg = config or MarketStateConfig()
    man = store.require(dataset)
    t = dataset_end(store, dataset) if as_of is None else _utc(as_of)
    lookback = _td("lookback", cfg.lookback)
    chain_lookback = lookback if cfg.chain_lookback is None else _td("chain_lookback",
                                                                     cfg.chain_lookback)
    max_age = _td("max_age", cfg.max_age)
    unknown = [u for u in (*cfg.underlyings, *cfg.rates, *cfg.dividend_yields)
               if u not in UNDERLYINGS]
    if unknown:
        raise ConfigError(f"unknown underlying {unknown[0]!r}; expected one of "
                          f"{sorted(UNDERLYINGS)}")
    tables: dict[str, dict] = man["tables"]
    wanted = cfg.underlyings or tuple(UNDERLYINGS)
    # which store symbols play which role for which underlying
    roles: dict[str, list[tuple[str, str]]] = {}  # symbol -> [(underlying, role)]
    for name in wanted:
        u = UNDERLYINGS[name]
        for role, sym in (("spot", u.spot), ("index", u.index), ("perpetual", u.perpetual),
                          ("vol_index", u.vol_index)):
            if sym is not None:
                roles.setdefault(sym, []).append((name, role))
    futures: dict[str, Future] = {}
    for info in tables.values():
        if info["kind"] not in ("bars", "levels"):
            continue
        for sym in info.get("symbols", {}):
            if sym in roles or sym in futures:
                continue
            try:
                inst = parse_instrument(sym)
            except DataError:
                continue
            if isinstance(inst, Future) and inst.underlying in wanted:
                futures[sym] = inst
    start = t - lookback

    # ---- bars and levels: closes of spot, perpetual, vol index, futures ---------------------
    closes: dict[str, list[tuple[pd.Timestamp, float, str, bool]]] = {}  # sym -> (ts, px, src, mark)
    for table, info in sorted(tables.items()):
        if info["kind"] not in ("bars", "levels"):
            continue
        syms = [s for s in info.get("symbols", {}) if s in roles or s in futures]
        if not syms:
            continue
        last = _last_rows(store, dataset, table, syms, start, t, [S.TS, S.SYMBOL, S.CLOSE])
        for row in last.itertuples(index=False):
            closes.setdefault(row.symbol, []).append(
                (row.ts, float(row.close), f"{table}.close[{row.symbol}]",
                 table.startswith("mark_")))

    def latest(sym: str | None, *, marks_first: bool = False) -> tuple[pd.Timestamp, float, str] | None:
        rows = closes.get(sym or "", [])
        if marks_first and any(r[3] for r in rows):
            rows = [r for r in rows if r[3]]
        if not rows:
            return None
        ts, px, src, _ = max(rows, key=lambda r: r[0])
        return ts, px, src

    # ---- funding ---------------------------------------------------------------------------
    funding_rows: dict[str, pd.Series] = {}
    funding_interval: dict[str, tuple[pd.Timedelta, str]] = {}
    perps = [UNDERLYINGS[n].perpetual for n in wanted if UNDERLYINGS[n].perpetual]
    for table, info in sorted(tables.items()):
        if info["kind"] != "funding":
            continue
        syms = [s for s in info.get("symbols", {}) if s in perps]
        if not syms:
            continue
        f = store.read(dataset, table, symbols=syms, start=start, end=t)
        f = f[f[S.TS] <= t]
        for sym, g in f.groupby(S.SYMBOL, sort=True):
            g = g.sort_values(S.TS, kind="stable")
            funding_rows[str(sym)] = g.iloc[-1].rename(table)
            gaps = g[S.TS].diff().dropna()
            med = gaps.median() if len(gaps) else pd.NaT
            if pd.notna(med) and med >= pd.Timedelta(hours=1):
                funding_interval[str(sym)] = (med, f"median spacing of {table} rows")
            else:
                funding_interval[str(sym)] = (BINANCE_FUNDING_INTERVAL,
                                              "Binance's 8h period (ticker-like rows)")

    # ---- options -----------------------------------------------------------------------------
    chains: dict[str, pd.DataFrame] = {}
    for table, info in sorted(tables.items()):
        if info["kind"] != "options":
            continue
        present = {p.split("/")[1].split("=", 1)[1] for p in info["partitions"]}
        for name in wanted:
            if name not in present:
                continue
            f = store.read(dataset, table, symbols=[name], start=t - chain_lookback, end=t)
            f = f[(f[S.TS] <= t) & (f[S.EXPIRY] > t)]
            if f.empty:
                continue
            f = f.sort_values([S.SYMBOL, S.TS], kind="stable").groupby(S.SYMBOL).tail(1)
            chains[name] = f.assign(source_table=table).reset_index(drop=True)

    # ---- assemble per underlying -------------------------------------------------------------
    failures: list[Failure] = []
    states: dict[str, UnderlyingState] = {}

    def fail(reason: FailureReason, subject: str, message: str, **details: Any) -> None:
        failures.append(Failure(reason, subject, message, details))

    def stale(name: str, what: str, q: Quote | None) -> None:
        if q is not None and t - q.ts > max_age:
            fail(FailureReason.STALE, f"{name}/{what}", f"{what} from {q.source} is from {q.ts}, "
                 f"older than max_age={cfg.max_age} at {t}", ts=str(q.ts), max_age=cfg.max_age)

    for name in wanted:
        u = UNDERLYINGS[name]
        und_futures = {s: f for s, f in futures.items() if f.underlying == name and s in closes}
        has_data = (u.spot in closes or (u.perpetual or "") in funding_rows
                    or (u.perpetual or "") in closes or name in chains or bool(und_futures))
        if not has_data:
            if cfg.underlyings:
                fail(FailureReason.MISSING_INPUTS, name, f"no data for {name} in dataset "
                     f"'{dataset}' between {start} and {t}")
            continue
        spot = None
        if (x := latest(u.spot)) is not None:
            spot = _quote(x[1], "USD", x[2], x[0])
        index = None
        frow = funding_rows.get(u.perpetual or "")
        if frow is not None and S.INDEX_PX in frow and pd.notna(frow[S.INDEX_PX]):
            index = _quote(float(frow[S.INDEX_PX]), "USD", f"{frow.name}.index_px[{u.perpetual}]",
                           frow[S.TS])
        if index is None and u.index != u.spot and (x := latest(u.index)) is not None:
            index = _quote(x[1], "USD", x[2], x[0])
        if spot is None:
            fail(FailureReason.MISSING_PRICE, f"{name}/spot", f"no {u.spot} price in "
                 f"'{dataset}' between {start} and {t}", symbol=u.spot)
        marks: dict[str, Quote] = {}
        funding = None
        if u.perpetual is not None:
            mark = None
            if frow is not None and S.MARK_PX in frow and pd.notna(frow[S.MARK_PX]):
                mark = _quote(float(frow[S.MARK_PX]), "USD",
                              f"{frow.name}.mark_px[{u.perpetual}]", frow[S.TS])
            x = latest(u.perpetual, marks_first=True)
            if x is not None and (mark is None or x[0] > mark.ts):
                mark = _quote(x[1], "USD", x[2], x[0])
            if mark is not None:
                marks[u.perpetual] = mark
                stale(name, "perpetual mark", mark)
            elif u.asset_class == "crypto":
                fail(FailureReason.MISSING_PRICE, f"{name}/perpetual", f"no {u.perpetual} mark "
                     f"in '{dataset}' between {start} and {t}", symbol=u.perpetual)
            if frow is not None and pd.notna(frow[S.FUNDING_RATE]):
                interval, why = funding_interval[u.perpetual]
                funding = FundingQuote(
                    Quote(float(frow[S.FUNDING_RATE]), "per_period",
                          f"{frow.name}.funding_rate[{u.perpetual}] (period {interval}: {why})",
                          frow[S.TS]), interval)
                stale(name, "funding rate", funding.rate)
            elif u.asset_class == "crypto":
                fail(FailureReason.MISSING_INPUTS, f"{name}/funding", f"no {u.perpetual} funding "
                     f"rate in '{dataset}' between {start} and {t}", symbol=u.perpetual)
        forwards: dict[pd.Timestamp, Forward] = {}
        for sym, fut in sorted(und_futures.items()):
            x = latest(sym)
            if x is None or fut.expiry <= t:
                continue
            q = _quote(x[1], "USD", x[2], x[0])
            if q is None:
                continue
            marks[sym] = q
            forwards[fut.expiry] = Forward(fut.expiry, q.value, f"future {sym} ({x[2]})", q.ts)
            stale(name, f"future {sym}", q)
        chain = chains.get(name)
        if chain is not None:
            unit = name if u.asset_class == "crypto" else "USD"
            if S.MARK_PX in chain.columns:
                for row in chain.itertuples(index=False):
                    if pd.notna(row.mark_px):
                        marks[row.symbol] = Quote(float(row.mark_px), unit,
                                                  f"{row.source_table}.mark_px[{row.symbol}]",
                                                  row.ts)
            ref = index or spot
            for exp, fw in _parity_forwards(chain, ref, coin=u.asset_class == "crypto",
                                            n_strikes=cfg.parity_strikes).items():
                forwards.setdefault(exp, fw)
            oldest = chain[S.TS].min()
            if t - oldest > max_age:
                n_old = int((t - chain[S.TS] > max_age).sum())
                fail(FailureReason.STALE, f"{name}/options", f"{n_old} of {len(chain)} option "
                     f"rows are older than max_age={cfg.max_age} (oldest {oldest})",
                     n_stale=n_old, n_rows=len(chain))
        else:
            fail(FailureReason.MISSING_INPUTS, f"{name}/options", f"no unexpired {name} options "
                 f"in '{dataset}' between {t - chain_lookback} and {t}")
        vol_index = None
        if u.vol_index is not None and (x := latest(u.vol_index)) is not None:
            vol_index = _quote(x[1] / 100.0, "fraction", f"{x[2]} / 100", x[0])
            stale(name, "vol index", vol_index)
        elif u.vol_index is not None:
            fail(FailureReason.MISSING_INPUTS, f"{name}/vol_index", f"no {u.vol_index} in "
                 f"'{dataset}' between {start} and {t}", symbol=u.vol_index)
        if name in cfg.rates:
            rate = Quote(cfg.rates[name], "fraction", "config: rates", t)
        elif u.asset_class == "crypto":
            rate = Quote(0.0, "fraction", "convention: Deribit prices options with r = 0", t)
        else:
            rate = None
            fail(FailureReason.MISSING_INPUTS, f"{name}/rate", f"no interest rate for {name}: the "
                 "store holds none; pass rates={" + repr(name) + ": r} (CLI: --rate "
                 f"{name}=0.04)", field="rate")
        dividend_yield = None
        if name in cfg.dividend_yields:
            dividend_yield = Quote(cfg.dividend_yields[name], "fraction",
                                   "config: dividend_yields", t)
        elif u.asset_class != "crypto":
            fail(FailureReason.MISSING_INPUTS, f"{name}/dividend_yield", f"no dividend yield "
                 f"for {name}: the store holds none; pass dividend_yields={{{name!r}: q}} (CLI: "
                 f"--dividend-yield {name}=0.015)", field="dividend_yield")
        for q, what in ((spot, "spot"), (index, "index")):
            stale(name, what, q)
        state = UnderlyingState(name, spot=spot, index=index, forwards=forwards, marks=marks,
                                funding=funding, vol_index=vol_index, rate=rate,
                                dividend_yield=dividend_yield)
        fitter = surface_fitter if surface_fitter is not None else fit_vol_surface
        if chain is not None:
            fitted = fitter(chain.drop(columns="source_table"), state, t)
            if isinstance(fitted, Failure):
                failures.append(fitted)
            else:
                failures.extend(getattr(fitted, "failures", ()))
                state = UnderlyingState(
                    name, spot=spot, index=index, forwards=forwards, marks=marks, funding=funding,
                    vol_surface=fitted,
                    vol_surface_source=Quote(float(len(chain)), "options",
                                             f"surface fitted to {len(chain)} {name} options",
                                             chain[S.TS].max()),
                    vol_index=vol_index, rate=rate, dividend_yield=dividend_yield)
        elif vol_index is not None:
            # no chain: options price off a flat surface at the vol index level
            state = UnderlyingState(
                name, spot=spot, index=index, forwards=forwards, marks=marks, funding=funding,
                vol_surface=FlatVolSurface(vol_index.value),
                vol_surface_source=Quote(
                    vol_index.value, "fraction",
                    f"flat at {u.vol_index} close {vol_index.ts:%Y-%m-%d %H:%M} UTC "
                    f"({vol_index.source})", vol_index.ts),
                vol_index=vol_index, rate=rate, dividend_yield=dividend_yield)
        liq = liquidity_of(store, dataset, u.spot, t, _td("liquidity_lookback",
                                                          cfg.liquidity_lookback),
                           traded_value=u.asset_class == "crypto")
        if liq is None:
            fail(FailureReason.MISSING_INPUTS, f"{name}/liquidity", f"no bars or no spread "
                 f"estimate of {u.spot} in '{dataset}' in the {cfg.liquidity_lookback} before "
                 f"{t}: the margin add-ons use the default half spread", symbol=u.spot)
        else:
            state = dataclasses.replace(state, liquidity=liq)
        states[name] = state
    return MarketState(t, states, tuple(failures), source=f"store:{dataset}")


def fit_vol_surface(chain: pd.DataFrame, state: UnderlyingState,
                    as_of: pd.Timestamp) -> Any:
    """The default surface fitter: :func:`margin.surface.fit_surface` on the chain (coin prices
    for crypto); a surface with no fitted expiry is a ``FIT_FAILED`` failure."""
    from margin.surface import fit_surface

    name = state.underlying
    inverse = UNDERLYINGS[name].asset_class == "crypto"
    surface = fit_surface(chain, underlying=name, snapshot=as_of, inverse=inverse)
    if not surface.slices:
        reasons = "; ".join(str(f) for f in surface.failures[:3])
        return Failure(FailureReason.FIT_FAILED, f"{name}/vol_surface",
                       f"no expiry of the {name} chain could be fitted ({reasons})",
                       {"n_failures": len(surface.failures)})
    return surface


def _parity_forwards(chain: pd.DataFrame, ref: Quote | None, *, coin: bool,
                     n_strikes: int) -> dict[pd.Timestamp, Forward]:
    """Forward per expiry from put-call parity of the marks at the strikes nearest ``ref``."""
    if S.MARK_PX not in chain.columns:
        return {}
    out: dict[pd.Timestamp, Forward] = {}
    c = chain[chain[S.OPTION_TYPE] == "C"].set_index([S.EXPIRY, S.STRIKE])
    p = chain[chain[S.OPTION_TYPE] == "P"].set_index([S.EXPIRY, S.STRIKE])
    both = c[[S.MARK_PX, S.TS]].join(p[[S.MARK_PX, S.TS]], lsuffix="_c", rsuffix="_p",
                                     how="inner").dropna()
    for exp, g in both.groupby(level=0, sort=True):
        k = g.index.get_level_values(1).to_numpy(dtype=float)
        diff = (g["mark_px_c"] - g["mark_px_p"]).to_numpy(dtype=float)
        centre = ref.value if ref is not None else float(np.median(k))
        pick = np.argsort(np.abs(k - centre), kind="stable")[:n_strikes]
        if coin:
            ok = diff[pick] < 1.0
            fw = k[pick][ok] / (1.0 - diff[pick][ok])
        else:
            fw = k[pick] + diff[pick]
        fw = fw[np.isfinite(fw) & (fw > 0)]
        if not len(fw):
            continue
        ts = min(g["ts_c"].iloc[pick].min(), g["ts_p"].iloc[pick].min())
        exp_ts = pd.Timestamp(exp)
        out[exp_ts] = Forward(exp_ts, float(np.median(fw)),
                              f"put-call parity of marks ({len(fw)} strikes near "
                              f"{centre:.6g})", ts)
    return out


def read_portfolio(path: Path, as_of: MarketState | object) -> Portfolio:
    """Read a portfolio file (``.csv`` or ``.json``) and validate it at ``as_of`` (a market
    state's, or a time).

    Raises
    ------
    DataError : the file cannot be read, its suffix is neither .csv nor .json, or its structure
        (columns, top-level JSON shape) is wrong; bad rows are failures in the result instead.
    FileNotFoundError : no such file.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".json"):
        raise DataError(f"portfolio file {path} has suffix {path.suffix!r}; expected .csv or "
                        ".json", source=str(path))
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"not UTF-8 text ({exc.reason} at byte {exc.start})",
                        source=str(path)) from None
    t = as_of.as_of if isinstance(as_of, MarketState) else _utc(as_of)
    return parse_portfolio(text, suffix[1:], as_of=t, source=str(path), name=path.stem)


def daily_closes(store: DataStore, dataset: str, symbol: str, as_of: pd.Timestamp
                 ) -> tuple[pd.Series, str] | None:
    """Daily closes of ``symbol`` up to ``as_of`` (the last close of each UTC day) from the
    coarsest bars table holding it, and that table's name; None without bars."""
    man = store.require(dataset)
    tables = man["tables"]
    names = sorted((t for t, i in tables.items()
                    if i["kind"] in ("bars", "levels") and symbol in i.get("symbols", {})),
                   key=lambda t: -pd.Timedelta(tables[t].get("interval") or "1D").value)
    if not names:
        return None
    f = store.read(dataset, names[0], symbols=[symbol], end=as_of, columns=[S.TS, S.SYMBOL, S.CLOSE])
    f = f[f[S.TS] <= as_of].sort_values(S.TS)
    if len(f) < 2:
        return None
    s = f.set_index(S.TS)[S.CLOSE]
    # a bar stamped at 00:00 closes the previous day
    day = (s.index - pd.Timedelta(microseconds=1)).normalize()
    return s.groupby(day).last(), names[0]


def daily_marks(store: DataStore, dataset: str, symbol: str, as_of: pd.Timestamp
                ) -> tuple[pd.Series, str] | None:
    """Daily marks of perpetual ``symbol`` up to ``as_of`` (the last mark of each UTC day, keyed
    as :func:`daily_closes`) from the dataset's ``mark_*`` bars tables, the finest first where
    several cover a day, and the tables' names; None without marks."""
    man = store.require(dataset)
    tables = man["tables"]
    names = sorted((t for t, i in tables.items()
                    if i["kind"] == "bars" and t.startswith("mark_")
                    and symbol in i.get("symbols", {})),
                   key=lambda t: pd.Timedelta(tables[t].get("interval") or "1D").value)
    parts = []
    for t in names:
        f = store.read(dataset, t, symbols=[symbol], end=as_of, columns=[S.TS, S.SYMBOL, S.CLOSE])
        f = f[f[S.TS] <= as_of].sort_values(S.TS)
        if f.empty:
            continue
        s = f.set_index(S.TS)[S.CLOSE]
        parts.append(s.groupby((s.index - pd.Timedelta(microseconds=1)).normalize()).last())
    if not parts:
        return None
    out = parts[0]
    for p in parts[1:]:
        out = out.combine_first(p)
    return out.sort_index(), ",".join(names)


def funding_events(store: DataStore, dataset: str, symbol: str, as_of: pd.Timestamp
                   ) -> pd.Series | None:
    """The realized funding rate of each funding event of ``symbol`` up to ``as_of`` (fraction
    per period, longs pay when positive), indexed by event time rounded to the minute (UTC; rows
    a few ms apart are one event); None without rows."""
    tables = store.require(dataset)["tables"]
    rows = []
    for t, i in sorted(tables.items()):
        if i["kind"] == "funding" and symbol in i.get("symbols", {}):
            f = store.read(dataset, t, symbols=[symbol], end=as_of,
                           columns=[S.TS, S.SYMBOL, S.FUNDING_RATE])
            rows.append(f[f[S.TS] <= as_of])
    if not rows:
        return None
    f = pd.concat(rows).sort_values(S.TS, kind="stable")
    # one event stored twice a few ms apart (the sources stamp it differently) is one payment
    f = f.assign(**{S.TS: f[S.TS].dt.round("1min")}).drop_duplicates(S.TS, keep="last")
    return f.set_index(S.TS)[S.FUNDING_RATE].astype(float) if len(f) else None


def historical_stress(store: DataStore, dataset: str, underlyings: list[str], as_of: object,
                      ) -> list[Any]:
    """The worst daily down and up move of each underlying's reference symbol (index, else spot)
    in the dataset's full history up to ``as_of``, each as a joint scenario of that date (every
    underlying moves by its own close-to-close return of the day, where it has one), cited by
    date, symbol and table."""
    from margin.stress import StressScenario

    t = _utc(as_of)
    rets: dict[str, pd.Series] = {}
    src: dict[str, str] = {}
    for u in underlyings:
        info = UNDERLYINGS[u]
        for sym in dict.fromkeys([info.index, info.spot]):
            got = daily_closes(store, dataset, sym, t)
            if got is not None:
                closes, table = got
                rets[u] = np.log(closes).diff().dropna()
                src[u] = f"{table}: daily close-to-close log return of {sym}"
                break
    out = []
    for u in sorted(rets):
        r = rets[u]
        for label, day in (("worst fall", r.idxmin()), ("largest rise", r.idxmax())):
            moves = {v: float(rets[v].loc[day]) for v in rets if day in rets[v].index}
            out.append(StressScenario(f"{u} {label} {day:%Y-%m-%d}", moves, "up",
                                      f"{src[u]} ({len(r)} days)", f"{day:%Y-%m-%d}"))
    return out


def day_of(t: pd.Timestamp) -> pd.Timestamp:
    """The UTC day a close at ``t`` closes (a bar stamped 00:00 closes the previous day): the key
    of :func:`pipelines.market.daily_closes`, so a close and its vol index are the same day's."""
    return (t - pd.Timedelta(microseconds=1)).normalize()


def underlying_of_symbol(symbol: str) -> Any:
    """The :data:`UNDERLYINGS` entry whose name or spot symbol is ``symbol`` (None: none)."""
    return UNDERLYINGS.get(symbol) or next(
        (u for u in UNDERLYINGS.values() if u.spot == symbol), None)


def vol_of_vol_at(vix: Mapping[str, pd.Series], closes: pd.DataFrame, t: pd.Timestamp,
                  mpors: tuple[int, ...] = (1, 2, 5)) -> dict[str, Any]:
    """Each symbol's vol-of-vol (quantiles of d log IV over each MPOR and the spot-vol beta,
    :func:`models.volvol.implied_vol_of_vol`) from its vol index and closes up to ``t`` (days
    keyed as :func:`day_of`); symbols with under 250 changes get none (the engine's fallback)."""
    from models.bundle_build import vol_of_vol_from
    from models.volvol import implied_vol_of_vol

    out = {}
    for s, iv in vix.items():
        cut = iv[iv.index <= day_of(t)]
        px = closes[s].loc[:t]
        px.index = pd.DatetimeIndex([day_of(x) for x in px.index])
        try:
            est = [implied_vol_of_vol(cut, px, symbol=s, mpor_days=m,
                                      index_name=getattr(underlying_of_symbol(s), "vol_index",
                                                         None) or "vol index")
                   for m in mpors]
        except DataError:
            continue  # too short a history: none
        out[s] = vol_of_vol_from(est)
    return out


def store_vol_of_vol(store: DataStore, dataset: str, closes: pd.DataFrame, t: pd.Timestamp
                     ) -> dict[str, Any]:
    """:func:`vol_of_vol_at` for every column of ``closes`` whose underlying's vol index (VIX,
    DVOL) the dataset holds: the bundle's vol-of-vol where the data has one."""
    vix = {}
    for s in closes.columns:
        u = underlying_of_symbol(str(s))
        if u is not None and u.vol_index:
            got = daily_closes(store, dataset, u.vol_index, t)
            if got is not None:
                vix[str(s)] = got[0]
    return vol_of_vol_at(vix, closes, t) if vix else {}
