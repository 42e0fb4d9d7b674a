"""Tests of the store -> MarketState builder, portfolio files and ``dprm portfolio show``: values
against independent pandas look-ups on the simulator's frames and the real files, no look-ahead
(later data perturbed), the example books, and the command through a real subprocess."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from features.errors import ConfigError, DataError, Failure, FailureReason
from features.ingest import ingest_frames
from features.simulate import DerivativesConfig, SimConfig, SimResult, simulate
from features.store import DataStore
from margin.instruments import parse_instrument
from margin.surface import VolSurface
from pipelines.market import MarketStateConfig, build_market_state, dataset_end, read_portfolio

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples" / "portfolios"
AS_OF = pd.Timestamp("2025-01-30T13:37:30Z")
CRYPTO_BOOKS = sorted(p for p in EXAMPLES.glob("*.*") if p.suffix in (".csv", ".json")
                      and p.stem != "index_futures_options")


def _tables(res: SimResult) -> dict[str, tuple[str, pd.DataFrame, pd.Timedelta | None]]:
    return {name: (kind, frame, pd.Timedelta("1min") if name == "bars_1m" else None)
            for name, (kind, frame) in res.tables().items()}


def _store(root: Path, tables: dict, source: str = "sim") -> DataStore:
    store = DataStore(root)
    ingest_frames(store, "sim", tables, source=source)
    return store


@pytest.fixture(scope="module")
def sim() -> SimResult:
    """Three days across the 2025-01-31 monthly expiry (BTC, ETH, SOL without derivatives);
    option chains of three expiries (two weeklies, the March quarterly) keep the smile fits quick."""
    der = DerivativesConfig(option_weekly=2, option_monthly=0, option_quarterly=1)
    cfg = SimConfig(n_days=3, start="2025-01-29T00:00Z", derivatives=der).select(
        "BTCUSDT", "ETHUSDT", "SOLUSDT")
    return simulate(cfg, 21)


@pytest.fixture(scope="module")
def home(sim: SimResult, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A workspace whose store holds the simulated dataset "sim"."""
    h = tmp_path_factory.mktemp("home")
    _store(h / "data", _tables(sim))
    return h


@pytest.fixture(scope="module")
def state(home: Path):
    return build_market_state(DataStore(home / "data"), "sim", AS_OF)


def _last(frame: pd.DataFrame, symbol: str, t: pd.Timestamp = AS_OF) -> pd.Series:
    f = frame[(frame["symbol"] == symbol) & (frame["ts"] <= t)]
    return f.sort_values("ts").iloc[-1]


# ---- values against the simulator's own frames ------------------------------------------------


def test_spot_perpetual_and_funding(sim: SimResult, state) -> None:
    btc = state.underlyings["BTC"]
    bar = _last(sim.bars_1m, "BTCUSDT")
    assert btc.spot.value == bar["close"] and btc.spot.ts == bar["ts"] <= AS_OF
    assert btc.spot.source == "bars_1m.close[BTCUSDT]"
    fr = _last(sim.funding, "BTCUSDT-PERP")
    assert btc.index.value == fr["index_px"] and btc.index.source == "funding.index_px[BTCUSDT-PERP]"
    assert btc.marks["BTCUSDT-PERP"].value == fr["mark_px"]
    assert btc.funding.rate.value == fr["funding_rate"]
    assert btc.funding.interval == pd.Timedelta("8h")  # ticker-like rows: Binance's period
    assert btc.rate.value == 0.0 and btc.rate.source.startswith("convention: Deribit")
    assert state.as_of == AS_OF and state.source == "store:sim"


def test_liquidity_from_the_book_and_the_bars(sim: SimResult, state) -> None:
    """Half spread = the median (ask - bid) / (ask + bid) of the book's top level over the last
    day's snapshots, depth = the median quoted value of the thinner side; ADV = the 1-minute bars'
    traded value over the window per day; all recomputed here from the simulator's frames (data
    at or before as_of only)."""
    tables = sim.tables()
    bk = tables["book"][1]
    bk = bk[(bk["symbol"] == "BTCUSDT") & (bk["ts"] <= AS_OF)
            & (bk["ts"] >= AS_OF - pd.Timedelta("1D"))]
    top = bk[bk["level"] == 0].pivot_table(index="ts", columns="side", values="px")
    want_hs = float(((top[-1] - top[1]) / (top[-1] + top[1])).median())
    side = (bk["px"] * bk["sz"]).groupby([bk["ts"], bk["side"]]).sum().unstack()
    want_depth = float(side.min(axis=1).median())
    b = tables["bars_1m"][1]
    b = b[(b["symbol"] == "BTCUSDT") & (b["ts"] <= AS_OF) & (b["ts"] >= AS_OF - pd.Timedelta("30D"))]
    days = ((b["ts"].max() - b["ts"].min()) + pd.Timedelta("1min")) / pd.Timedelta("1D")
    liq = state.underlying("BTC").liquidity
    assert liq.half_spread.value == pytest.approx(want_hs, rel=1e-12)
    assert "book: median (ask - bid)" in liq.half_spread.source
    assert liq.depth_usd.value == pytest.approx(want_depth, rel=1e-12)
    assert liq.adv_usd.value == pytest.approx(float(b["quote_volume"].sum()) / days, rel=1e-9)
    assert liq.open_interest_usd is None


def test_forwards_from_futures_and_parity(sim: SimResult, state) -> None:
    btc = state.underlyings["BTC"]
    fb = sim.futures_bars
    for sym in ("BTC-31JAN25", "BTC-28FEB25", "BTC-28MAR25", "BTC-27JUN25"):
        exp = parse_instrument(sym).expiry
        assert btc.forwards[exp].value == _last(fb, sym)["close"]
        assert btc.forwards[exp].source.startswith(f"future {sym}")
        assert btc.marks[sym].value == _last(fb, sym)["close"]
    # weekly option expiries have no future: put-call parity of the marks gives back the
    # simulator's forward (the chain's underlying_px) exactly
    o = sim.options[(sim.options["underlying"] == "BTC") & (sim.options["ts"] <= AS_OF)]
    snap = o[o["ts"] == o["ts"].max()]
    weekly = pd.Timestamp("2025-02-07T08:00Z")
    fwd = snap.loc[snap["expiry"] == weekly, "underlying_px"].iloc[0]
    assert btc.forwards[weekly].value == pytest.approx(fwd, rel=1e-10)
    assert btc.forwards[weekly].source.startswith("put-call parity of marks (3 strikes")
    assert btc.forwards[weekly].ts == snap["ts"].iloc[0] == pd.Timestamp("2025-01-30T12:00Z")
    # every option of the last snapshot is marked at its mark price, in the coin
    for row in snap.itertuples():
        assert btc.marks[row.symbol].value == row.mark_px and btc.marks[row.symbol].unit == "BTC"


def test_vol_surface_and_recorded_missing_inputs(state) -> None:
    btc = state.underlyings["BTC"]
    assert isinstance(btc.vol_surface, VolSurface) and btc.vol_surface.slices
    assert btc.vol_surface_source.ts == pd.Timestamp("2025-01-30T12:00Z")
    opt = parse_instrument("BTC-21FEB25-61000-C")  # not listed: priced off the surface
    q = state.price(opt)
    assert q.unit == "BTC" and q.value > 0 and q.source.startswith("Black-76 at vol")
    codes = {(f.subject, f.reason) for f in state.failures}
    assert ("BTC/vol_index", FailureReason.MISSING_INPUTS) in codes  # no DVOL simulated
    # SOL has spot only: its derivatives inputs are recorded as missing, not defaulted
    sol = state.underlyings["SOL"]
    assert sol.funding is None and not sol.forwards and sol.vol_surface is None
    assert {("SOL/perpetual", FailureReason.MISSING_PRICE), ("SOL/funding",
            FailureReason.MISSING_INPUTS), ("SOL/options", FailureReason.MISSING_INPUTS)} <= codes
    miss = state.forward("SOL", "2025-03-28T08:00Z")
    assert isinstance(miss, Failure) and miss.reason is FailureReason.MISSING_PRICE
    assert not state.failures_for("BTC") or all(
        f.reason is not FailureReason.STALE for f in state.failures_for("BTC"))


def test_expired_future_leaves_the_state(home: Path) -> None:
    after = build_market_state(DataStore(home / "data"), "sim", "2025-01-31T09:00Z",
                               MarketStateConfig(underlyings=("BTC",)),
                               surface_fitter=lambda chain, u, t: None)
    btc = after.underlyings["BTC"]
    jan = pd.Timestamp("2025-01-31T08:00Z")
    assert jan not in btc.forwards and "BTC-31JAN25" not in btc.marks
    assert btc.vol_surface is None
    exp = after.forward("BTC", jan)
    assert isinstance(exp, Failure) and exp.reason is FailureReason.EXPIRED
    assert dataset_end(DataStore(home / "data"), "sim") == pd.Timestamp("2025-02-01T00:00Z")


# ---- no look-ahead -------------------------------------------------------------------------------


def _perturb(res: SimResult, t: pd.Timestamp) -> dict:
    """Every row stamped after ``t`` changed (prices x1.3, funding +0.01, marks x2) and a future
    listed after ``t`` added."""
    out = {}
    for name, (kind, frame, iv) in _tables(res).items():
        f = frame.copy()
        late = f["ts"] > t
        for c in ("price", "bid_px", "ask_px", "px", "open", "high", "low", "close", "mark_px",
                  "index_px", "underlying_px"):
            if c in f.columns:
                f.loc[late, c] = f.loc[late, c] * (2.0 if c == "mark_px" and kind == "options"
                                                   else 1.3)
        if "funding_rate" in f.columns:
            f.loc[late, "funding_rate"] += 0.01
        if "mark_iv" in f.columns:
            f.loc[late, "mark_iv"] *= 1.5
        if name == "futures_1m":
            extra = f[late & (f["symbol"] == "BTC-27JUN25")].assign(symbol="BTC-26SEP25")
            f = pd.concat([f, extra], ignore_index=True)
        out[name] = (kind, f, iv)
    return out


def test_state_uses_only_data_at_or_before_as_of(sim: SimResult, tmp_path: Path) -> None:
    cfg = MarketStateConfig(underlyings=("BTC",))
    a = _store(tmp_path / "a", _tables(sim))
    b = _store(tmp_path / "b", _perturb(sim, AS_OF), source="perturbed")
    sa = build_market_state(a, "sim", AS_OF, cfg)
    sb = build_market_state(b, "sim", AS_OF, cfg)
    assert sa.to_dict() == sb.to_dict()
    opt = parse_instrument("BTC-21FEB25-61000-C")
    assert sa.price(opt) == sb.price(opt)  # the same surface, fitted to the same chain
    # the perturbation is real: one minute later the states differ
    later = AS_OF + pd.Timedelta("1min")
    la = build_market_state(a, "sim", later, cfg, surface_fitter=lambda c, u, t: None)
    lb = build_market_state(b, "sim", later, cfg, surface_fitter=lambda c, u, t: None)
    assert lb.underlyings["BTC"].spot.value == pytest.approx(
        1.3 * la.underlyings["BTC"].spot.value)
    assert lb.underlying("BTC").funding.rate.value == pytest.approx(
        la.underlying("BTC").funding.rate.value + 0.01)
    assert "BTC-26SEP25" in lb.underlyings["BTC"].marks


def test_builder_errors(home: Path) -> None:
    store = DataStore(home / "data")
    with pytest.raises(DataError, match=r"dataset 'nope' not found .* known datasets: \['sim'\]"):
        build_market_state(store, "nope")
    with pytest.raises(ConfigError, match="unknown underlying 'FOO'"):
        build_market_state(store, "sim", AS_OF, MarketStateConfig(underlyings=("FOO",)))
    with pytest.raises(ConfigError, match="The 'max_age' setting must be a duration"):
        build_market_state(store, "sim", AS_OF, MarketStateConfig(max_age="soon"))
    with pytest.raises(ConfigError, match="as_of must be a timestamp"):
        build_market_state(store, "sim", "yesterday-ish")
    # an underlying asked for but absent is a recorded failure
    sp = build_market_state(store, "sim", AS_OF, MarketStateConfig(underlyings=("SP500",)))
    assert sp.underlyings == {} and sp.failures[0].subject == "SP500"
    stale = build_market_state(store, "sim", "2025-02-05T00:00Z",
                               MarketStateConfig(underlyings=("BTC",), max_age="1h"),
                               surface_fitter=lambda c, u, t: None)
    assert ("BTC/spot", FailureReason.STALE) in {(f.subject, f.reason) for f in stale.failures}


# ---- portfolio files and the example books ------------------------------------------------------


@pytest.mark.parametrize("path", CRYPTO_BOOKS, ids=[p.name for p in CRYPTO_BOOKS])
def test_example_crypto_books_load_and_price_on_simulated_data(path: Path, state) -> None:
    pf = read_portfolio(path, state)
    assert pf.failures == () and len(pf.positions) >= 2
    prices = {p.id: state.price(p.instrument) for p in pf.positions}
    bad = {k: str(v) for k, v in prices.items() if isinstance(v, Failure)}
    assert bad == {}
    assert all(math.isfinite(q.value) and q.value > 0 for q in prices.values())


INDEX_BOOK = EXAMPLES / "index_futures_options.csv"
INDEX_AS_OF = pd.Timestamp("2018-12-31T21:00Z")  # the last close of SP500/NASDAQ and a VIX day
INDEX_ARGS = ["--data", "embedded", "--as-of", "2018-12-31T21:00Z", "--rate", "SP500=0.025",
              "--rate", "NASDAQ=0.025", "--dividend-yield", "SP500=0.02", "--dividend-yield",
              "NASDAQ=0.01"]
INDEX_CFG = MarketStateConfig(rates={"SP500": 0.025, "NASDAQ": 0.025},
                              dividend_yields={"SP500": 0.02, "NASDAQ": 0.01})


def _arch_csv(name: str) -> pd.DataFrame:
    raw = pd.read_csv(Path(__import__("arch").__file__).parent / "data" / name / f"{name}.csv.gz")
    raw["ts"] = (pd.to_datetime(raw["Date"]) + pd.Timedelta("16h")).dt.tz_localize(
        "America/New_York").dt.tz_convert("UTC")
    return raw


@pytest.fixture(scope="module")
def index_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A workspace whose store holds the embedded arch data (dataset "embedded")."""
    from pipelines.steps import ingest_embedded

    h = tmp_path_factory.mktemp("embedded")
    ingest_embedded(DataStore(h / "data"), "embedded")
    return h


@pytest.fixture(scope="module")
def embedded_store(index_home: Path) -> DataStore:
    return DataStore(index_home / "data")


def test_index_book_as_of_and_command_are_inside_the_embedded_data() -> None:
    # the example's documented command runs at an as-of inside both the indices and the VIX
    header = " ".join(x for x in INDEX_BOOK.read_text().splitlines() if x.startswith("#"))
    assert "dprm portfolio show examples/portfolios/index_futures_options.csv " + " ".join(
        INDEX_ARGS) in header
    for name in ("sp500", "nasdaq", "vix"):
        ts = _arch_csv(name)["ts"]
        assert ts.min() <= INDEX_AS_OF <= ts.max() and (ts == INDEX_AS_OF).any(), name


def test_index_book_on_the_embedded_data(embedded_store: DataStore) -> None:
    import QuantLib as ql

    store = embedded_store
    ms = build_market_state(store, "embedded", INDEX_AS_OF, INDEX_CFG)
    pf = read_portfolio(INDEX_BOOK, ms)
    assert pf.failures == () and len(pf.positions) == 5
    spx, vix = _arch_csv("sp500"), _arch_csv("vix")
    s0 = spx.loc[spx["ts"] == INDEX_AS_OF, "Close"].item()
    vix_close = float(vix.loc[vix["ts"] == INDEX_AS_OF, "vix"].item())
    assert vix_close != float(vix["vix"].iloc[-1])  # a later VIX differs: the as-of one is used
    sp = ms.underlyings["SP500"]
    assert sp.spot.value == pytest.approx(s0) and sp.vol_index.value == pytest.approx(vix_close / 100)
    assert not [f for f in ms.failures if f.reason is FailureReason.STALE]
    spx_fut = next(p for p in pf.positions if p.id == "spx_fut").instrument
    q = ms.price(spx_fut)
    tau = (spx_fut.expiry - ms.as_of).total_seconds() / (365 * 86400)
    assert q.value == pytest.approx(s0 * math.exp(0.005 * tau))
    # no option chain: the options price off a flat surface at the VIX close (QuantLib oracle)
    assert sp.vol_surface_source.source.startswith("flat at VIX close 2018-12-31 21:00 UTC")
    assert sp.vol_surface_source.ts == INDEX_AS_OF
    for pid in ("spx_put", "spx_call"):
        opt = next(p for p in pf.positions if p.id == pid).instrument
        t = (opt.expiry - ms.as_of).total_seconds() / (365 * 86400)
        fwd = s0 * math.exp((0.025 - 0.02) * t)
        right = ql.Option.Call if opt.is_call else ql.Option.Put
        ref = ql.blackFormula(right, opt.strike, fwd, vix_close / 100 * math.sqrt(t),
                              math.exp(-0.025 * t))
        px = ms.price(opt)
        assert px.unit == "USD" and px.value == pytest.approx(ref, rel=1e-10), pid
        assert "flat at VIX close" in px.source
    # NASDAQ has no vol index and no chain: its options have no price, said so (not defaulted)
    ndx = ms.price(parse_instrument("NASDAQ-1FEB19-6500-C"))
    assert isinstance(ndx, Failure) and ndx.reason is FailureReason.MISSING_INPUTS
    assert ndx.details["field"] == "vol_surface" and "no vol index" in ndx.message
    assert ms.underlyings["NASDAQ"].vol_surface is None
    without = build_market_state(store, "embedded", None)
    assert without.as_of == pd.Timestamp("2019-01-03T21:00Z")  # the VIX's last day
    assert {"SP500/rate", "SP500/dividend_yield"} <= {f.subject for f in without.failures}
    assert ("SP500/spot", FailureReason.STALE) in {(f.subject, f.reason) for f in without.failures}


def test_flat_vix_surface_uses_no_later_data(embedded_store: DataStore, tmp_path: Path) -> None:
    from features.readers.arch_data import load_embedded

    tables: dict = {}
    for name in ("sp500", "nasdaq", "vix"):
        for ch in load_embedded(name):
            f = ch.frame.copy()
            f.loc[f["ts"] > INDEX_AS_OF, "close"] *= 1.5
            tables.setdefault(ch.table, [ch.kind, [], ch.interval])[1].append(f)
    store = DataStore(tmp_path / "data")
    ingest_frames(store, "embedded", {t: (k, pd.concat(fs, ignore_index=True), iv)
                                      for t, (k, fs, iv) in tables.items()}, source="perturbed")
    a = build_market_state(embedded_store, "embedded", INDEX_AS_OF, INDEX_CFG)
    b = build_market_state(store, "embedded", INDEX_AS_OF, INDEX_CFG)
    assert a.to_dict() == b.to_dict()
    later = pd.Timestamp("2019-01-02T21:00Z")
    la = build_market_state(embedded_store, "embedded", later, INDEX_CFG)
    lb = build_market_state(store, "embedded", later, INDEX_CFG)
    assert lb.underlyings["SP500"].vol_index.value == pytest.approx(
        1.5 * la.underlyings["SP500"].vol_index.value)


def test_read_portfolio_errors(tmp_path: Path, state) -> None:
    p = tmp_path / "book.xlsx"
    p.write_text("x")
    with pytest.raises(DataError, match=r"book.xlsx: portfolio file .* expected .csv or .json"):
        read_portfolio(p, state)
    q = tmp_path / "book.csv"
    q.write_bytes(b"instrument,quantity\n\xff\xfe,1\n")
    with pytest.raises(DataError, match="book.csv: not UTF-8 text"):
        read_portfolio(q, state)
    with pytest.raises(FileNotFoundError):
        read_portfolio(tmp_path / "missing.csv", state)


# ---- the command -------------------------------------------------------------------------------


def _dprm(home: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "DPRM_HOME": str(home), "COLUMNS": "80", "TERM": "dumb"}
    return subprocess.run([sys.executable, "-m", "pipelines.cli", *args], capture_output=True,
                          text=True, env=env, timeout=300)


def test_portfolio_show_table_and_json(home: Path, sim: SimResult) -> None:
    bad = _dprm(home, "portfolio", "show", str(EXAMPLES / "invalid" / "bad_rows.csv"),
                "--data", "sim", "--as-of", str(AS_OF))
    assert bad.returncode == 0, bad.stderr
    assert max(len(x) for x in bad.stdout.splitlines()) <= 80
    assert "1 position(s) loaded, 6 failed" in bad.stdout and "failures (6)" in bad.stdout
    for pid in ("unknown", "expired", "no_price", "nan_qty", "zero_qty", "bad_strike"):
        assert f"  {pid}: " in bad.stdout
    assert "ok: bars_1m.close[BTCUSDT]" in bad.stdout
    book = EXAMPLES / "covered_call.csv"
    j = _dprm(home, "portfolio", "show", str(book), "--as-of", str(AS_OF), "--json")
    doc = json.loads(j.stdout)
    assert doc["market"]["as_of"] == AS_OF.isoformat()
    assert [p["id"] for p in doc["portfolio"]["positions"]] == ["spot", "call"]
    # {+30D} from Thu 2025-01-30 -> Fri 2025-03-07
    assert doc["portfolio"]["positions"][1]["instrument"] == "BTC-7MAR25-70000-C"
    assert doc["portfolio"]["failures"] == []
    assert doc["prices"]["spot"]["value"] == _last(sim.bars_1m, "BTCUSDT")["close"]
    assert doc["prices"]["call"]["unit"] == "BTC" and doc["prices"]["call"]["value"] > 0


ALL_BOOKS = sorted(p for p in EXAMPLES.glob("*.*") if p.suffix in (".csv", ".json"))


def _show_json(home: Path, path: Path, *args: str) -> dict:
    """``dprm portfolio show PATH ARGS --json`` in a subprocess, checked: zero failures, a finite
    positive price for every position."""
    r = _dprm(home, "portfolio", "show", str(path), *args, "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["portfolio"]["failures"] == [], path.name
    positions = [p["id"] for p in doc["portfolio"]["positions"]]
    assert len(positions) >= 2 and sorted(doc["prices"]) == sorted(positions)
    bad = {k: v["message"] for k, v in doc["prices"].items() if "reason" in v}
    assert bad == {}, path.name
    assert all(math.isfinite(v["value"]) and v["value"] > 0 for v in doc["prices"].values())
    return doc


@pytest.mark.parametrize("path", ALL_BOOKS, ids=[p.name for p in ALL_BOOKS])
def test_portfolio_show_prices_every_example_book(home: Path, index_home: Path,
                                                  path: Path) -> None:
    """Every shipped book through the command (crypto on the short simulation at the dataset's
    default as-of, the index book on ``embedded`` with its documented arguments): zero
    failures, finite positive prices."""
    if path != INDEX_BOOK:
        _show_json(home, path, "--data", "sim")
        return
    doc = _show_json(index_home, path, *INDEX_ARGS)
    assert doc["market"]["as_of"] == INDEX_AS_OF.isoformat()
    assert "flat at VIX close" in doc["prices"]["spx_put"]["source"]
    t = _dprm(index_home, "portfolio", "show", str(path), *INDEX_ARGS)
    assert t.returncode == 0 and "failures (0): none" in t.stdout, t.stdout
    assert max(len(x) for x in t.stdout.splitlines()) <= 80


@pytest.mark.slow
def test_portfolio_show_on_dprm_data_simulate_3_days(tmp_path: Path) -> None:
    """What a user runs: ``dprm data simulate --days 3`` (the default chain), then every crypto
    book through ``dprm portfolio show``: zero failures."""
    r = _dprm(tmp_path, "data", "simulate", "--days", "3")
    assert r.returncode == 0, r.stderr
    for path in CRYPTO_BOOKS:
        _show_json(tmp_path, path, "--data", "sim")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["missing.csv"], "No such file or directory"),
        (["BOOK", "--rate", "SP500"], "--rate must be UNDERLYING=NUMBER such as SP500=0.04"),
    ],
)
def test_portfolio_show_bad_input_exits_2(home: Path, args: list[str], message: str) -> None:
    args = [str(EXAMPLES / "basis_trade.csv") if a == "BOOK" else a for a in args]
    r = _dprm(home, "portfolio", "show", *args)
    assert r.returncode == 2 and message in r.stderr and "Traceback" not in r.stderr


def test_surface_command_on_the_simulated_chain(home: Path, sim: SimResult,
                                                tmp_path: Path) -> None:
    """``dprm surface --data sim`` fits the simulator's chain: every listed expiry, the chain's
    futures as forwards, fitted prices inside bid-ask, and the fitted smile close to the
    simulator's own SSVI marks (an independent truth: the fit sees bid/ask, not marks)."""
    env_dir = tmp_path / "no-real-data"  # no DVOL from the real files beside a simulated market
    env_dir.mkdir()
    env = {**os.environ, "DPRM_HOME": str(home), "DPRM_DATA_DIR": str(env_dir), "COLUMNS": "80"}
    r = subprocess.run([sys.executable, "-m", "pipelines.cli", "surface", "--data", "sim",
                        "--json"], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    last = sim.options[sim.options["ts"] == sim.options["ts"].max()]
    assert sorted(u["underlying"] for u in doc["underlyings"]) == ["BTC", "ETH"]
    for u in doc["underlyings"]:
        snap = last[last["underlying"] == u["underlying"]]
        assert pd.Timestamp(u["snapshot"]) == snap["ts"].iloc[0]
        assert u["failures"] == [] and u["dvol"] is None and Path(u["png"]).is_file()
        assert [pd.Timestamp(s["expiry"]) for s in u["slices"]] == sorted(snap["expiry"].unique())
        assert u["inside_pct"] >= 90.0
        for sl in u["slices"]:
            g = snap[snap["expiry"] == pd.Timestamp(sl["expiry"])]
            assert sl["forward"] == pytest.approx(g["underlying_px"].iloc[0], rel=1e-12)
            assert sl["butterfly"]["ok"] and sl["n_quotes"] >= 4
            # out-of-the-money marks: fitted raw-SVI vol vs the simulator's mark IV
            otm = g[(g["option_type"] == "C") == (g["strike"] >= sl["forward"])]
            k = np.log(otm["strike"].to_numpy(float) / sl["forward"])
            p = sl["params"]
            w = p["a"] + p["b"] * (p["rho"] * (k - p["m"]) + np.sqrt((k - p["m"]) ** 2
                                                                      + p["sigma"] ** 2))
            err_pts = 100 * np.abs(np.sqrt(w / sl["t_yr"]) - otm["mark_iv"].to_numpy(float))
            assert np.median(err_pts) < 0.5 and err_pts.max() < 2.0, (sl["expiry"], err_pts)


# ---- the real store ------------------------------------------------------------------------------


def _window(frame: pd.DataFrame, spans: list[tuple[str, str]]) -> pd.DataFrame:
    m = np.zeros(len(frame), dtype=bool)
    for lo, hi in spans:
        m |= ((frame["ts"] >= pd.Timestamp(lo, tz="UTC"))
              & (frame["ts"] <= pd.Timestamp(hi, tz="UTC"))).to_numpy()
    return frame.loc[m].reset_index(drop=True)


@pytest.fixture(scope="module")
def real_store(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> DataStore:
    """Subsets of the real files around the two Deribit snapshots, read by their readers."""
    from features.readers import read_source

    spans = [("2024-01-01", "2024-01-09"), ("2024-05-15", "2024-05-25"),
             ("2025-01-01", "2025-01-09")]
    files = ["binance_spot_5m_btc_eth_bnb_ltc/klines_5m.parquet",
             "binance_usdm_perp_btc_eth_bnb_ltc/klines_5m.parquet",
             "binance_usdm_perp_btc_eth_bnb_ltc/mark_price_1h.parquet",
             "binance_usdm_perp_btc_eth_bnb_ltc/funding_rate.parquet",
             "deribit_dvol_daily_2021_2025h1/dvol_daily.parquet",
             "deribit_option_snapshots_2024/btc_options_marks_2024-05.parquet",
             "deribit_option_snapshots_2024/eth_option_chain_2024-01-08.parquet"]
    tables: dict[str, list] = {}
    for rel in files:
        for ch in read_source(data_dir / rel):
            f = ch.frame if ch.kind == "options" else _window(ch.frame, spans)
            if ch.kind == "bars" and "symbol" in f:
                f = f[f["symbol"].str.match(r"^(BTC|ETH)")]
            tables.setdefault(ch.table, [ch.kind, [], ch.interval])[1].append(f)
    store = DataStore(tmp_path_factory.mktemp("real") / "data")
    ingest_frames(store, "real", {t: (k, pd.concat(fs, ignore_index=True), iv)
                                  for t, (k, fs, iv) in tables.items()}, source="real subsets")
    return store


@pytest.mark.slow
def test_real_store_eth_chain_day(real_store: DataStore, data_dir: Path) -> None:
    t = pd.Timestamp("2024-01-08T12:00Z")
    ms = build_market_state(real_store, "real", t, MarketStateConfig(underlyings=("ETH",)))
    eth = ms.underlyings["ETH"]
    k = pd.read_parquet(data_dir / "binance_spot_5m_btc_eth_bnb_ltc/klines_5m.parquet")
    k = k[(k["symbol"] == "ETHUSDT") & (k["open_time"] + pd.Timedelta("5min") <= t)]
    assert eth.spot.value == k.sort_values("open_time")["close"].iloc[-1]
    # the real perpetual files do not cover January 2024: recorded as missing, not defaulted
    assert eth.funding is None and "ETHUSDT-PERP" not in eth.marks
    codes = {(f.subject, f.reason) for f in ms.failures}
    assert {("ETH/funding", FailureReason.MISSING_INPUTS),
            ("ETH/perpetual", FailureReason.MISSING_PRICE)} <= codes
    dv = pd.read_parquet(data_dir / "deribit_dvol_daily_2021_2025h1/dvol_daily.parquet")
    dv = dv[(dv["symbol"] == "ETH") & (pd.to_datetime(dv["date"], utc=True) + pd.Timedelta("1D") <= t)]
    assert eth.vol_index.value == pytest.approx(dv.sort_values("date")["close"].iloc[-1] / 100)
    # parity forwards of the marks agree with the chain's future prices per expiry
    chain = pd.read_parquet(data_dir / "deribit_option_snapshots_2024/eth_option_chain_2024-01-08.parquet")
    fut = chain.groupby("expire_date")["underlying_price"].median()
    for exp, fw in eth.forwards.items():
        code = f"{exp.day}{exp.strftime('%b').upper()}{exp:%y}"
        assert fw.value == pytest.approx(fut[code], rel=2e-3), code
    assert len(eth.forwards) == chain["expire_date"].nunique()
    assert isinstance(eth.vol_surface, VolSurface) and eth.vol_surface.slices


@pytest.mark.slow
def test_real_store_perpetual_funding_and_mark(real_store: DataStore, data_dir: Path) -> None:
    t = pd.Timestamp("2025-01-08T12:30Z")
    ms = build_market_state(real_store, "real", t, MarketStateConfig(underlyings=("BTC",)))
    btc = ms.underlyings["BTC"]
    perp = data_dir / "binance_usdm_perp_btc_eth_bnb_ltc"
    fr = pd.read_parquet(perp / "funding_rate.parquet")
    fr = fr[(fr["symbol"] == "BTCUSDT") & (fr["funding_time"] <= t)].sort_values("funding_time")
    assert btc.funding.rate.value == fr["funding_rate"].iloc[-1]
    assert btc.funding.rate.ts == fr["funding_time"].iloc[-1]
    assert btc.funding.interval == pd.Timedelta("8h") and "median spacing" in btc.funding.rate.source
    mk = pd.read_parquet(perp / "mark_price_1h.parquet")
    mk = mk[(mk["symbol"] == "BTCUSDT") & (mk["open_time"] + pd.Timedelta("1h") <= t)]
    mark = btc.marks["BTCUSDT-PERP"]
    assert mark.value == mk.sort_values("open_time")["close"].iloc[-1]  # the mark table first
    assert mark.source == "mark_1h.close[BTCUSDT-PERP]" and mark.ts == pd.Timestamp("2025-01-08T12:00Z")
    sp = pd.read_parquet(data_dir / "binance_spot_5m_btc_eth_bnb_ltc/klines_5m.parquet")
    sp = sp[(sp["symbol"] == "BTCUSDT") & (sp["open_time"] + pd.Timedelta("5min") <= t)]
    assert btc.spot.value == sp.sort_values("open_time")["close"].iloc[-1]
    assert ("BTC/options", FailureReason.MISSING_INPUTS) in {(f.subject, f.reason)
                                                            for f in ms.failures}
    # no chain that day: options price off a flat surface at the DVOL close (recorded as such)
    dvol = btc.vol_index
    assert dvol is not None and btc.vol_surface.implied_vol(90_000.0, "2025-02-28") == dvol.value
    assert btc.vol_surface_source.source.startswith("flat at BTC-DVOL close ")
    assert btc.vol_surface_source.ts == dvol.ts <= t


@pytest.mark.slow
def test_real_store_btc_marks(real_store: DataStore) -> None:
    t = pd.Timestamp("2024-05-23T19:00Z")
    # the marks file stamps rows by their last trade (up to a year back): read it whole
    cfg = MarketStateConfig(underlyings=("BTC",), chain_lookback="400D")
    ms = build_market_state(real_store, "real", t, cfg, surface_fitter=lambda c, u, a: None)
    btc = ms.underlyings["BTC"]
    assert btc.spot is not None and btc.spot.ts <= t and t - btc.spot.ts <= pd.Timedelta("5min")
    assert all(q.ts <= t for q in btc.marks.values())
    # the file's index is not a forward, but parity on the marks gives forwards above it
    assert btc.forwards and all(f.value > 0.97 * btc.spot.value for f in btc.forwards.values())
    assert ("BTC/options", FailureReason.STALE) in {(f.subject, f.reason) for f in ms.failures}


@pytest.mark.slow
def test_example_books_on_the_demo_dataset(tmp_path: Path) -> None:
    """The demo's simulated dataset (60 days, seed 7): every crypto book loads and prices."""
    from pipelines.config import SimulateConfig
    from pipelines.steps import simulate_to_store

    store = DataStore(tmp_path / "data")
    simulate_to_store(store, SimulateConfig())
    ms = build_market_state(store, "sim")
    for path in CRYPTO_BOOKS:
        pf = read_portfolio(path, ms)
        assert pf.failures == (), path.name
        assert not [p for p in pf.positions if isinstance(ms.price(p.instrument), Failure)]
