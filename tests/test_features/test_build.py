"""Tests of the feature build and the incremental feature store (features/build.py).

Numbers are checked against independent one-pass references: pandas rolling means for the targets,
:func:`features.realized.realized_measures` / :func:`features.microstructure.trade_features` run on
the whole series (the per-partition cache must not change a number, including the bars that straddle
a partition boundary), the Garman-Klass closed form, and a perturbation test for look-ahead.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from features import microstructure as M
from features import schema as S
from features.build import (
    FEATURE_SET_VERSION,
    FeatureSpec,
    FeatureStore,
    assemble,
    squared_return_variance,
)
from features.ingest import ingest_file, ingest_frames
from features.ranges import range_variance
from features.realized import realized_measures
from features.simulate import SimConfig, SimResult, simulate
from features.store import DataStore

DAY = pd.Timedelta("1D")
SPEC_1H = FeatureSpec(freq="1h", horizons=(1, 3), har_windows=(1, 4))
REALIZED_DIR = "binance_daily_realized_measures_btc_eth_2018_2026"
NOBS_SHARE = 250 / 288


# ---- helpers -----------------------------------------------------------------------------------


def _ingest(root: Path, dataset: str, tables: dict, source: str = "test") -> DataStore:
    """A new store at ``root`` holding ``tables`` (name -> (kind, frame, interval)) in ``dataset``."""
    store = DataStore(root)
    ingest_frames(store, dataset, tables, source=source)
    return store


def _valid_reference(realized: pd.DataFrame) -> pd.Series:
    """Finite positive RV and n_obs >= 250/288 of the median n_obs of the stored partition (one
    symbol, one calendar year of ``ts`` for daily tables)."""
    med = realized.groupby([realized[S.SYMBOL], realized[S.TS].dt.year])[S.N_OBS].transform(
        "median"
    )
    rv = realized[S.RV]
    return (np.isfinite(rv) & (rv > 0) & (realized[S.N_OBS] >= NOBS_SHARE * med)).astype(bool)


def _target_reference(realized: pd.DataFrame, valid: pd.Series, h: int) -> pd.Series:
    """Mean of the valid rv_var over the next h calendar days per symbol (NaN if any day is invalid
    or missing), from a complete daily grid with pandas' rolling mean shifted back by h."""
    out = pd.Series(np.nan, index=realized.index)
    for _, g in realized.groupby(S.SYMBOL):
        s = pd.Series(g[S.RV].where(valid.loc[g.index]).to_numpy(), index=pd.DatetimeIndex(g[S.TS]))
        full = s.reindex(pd.date_range(s.index.min(), s.index.max(), freq="1D"))
        fwd = full.rolling(h, min_periods=h).mean().shift(-h)
        out.loc[g.index] = fwd.reindex(pd.DatetimeIndex(g[S.TS])).to_numpy()
    return out


def _assert_close(
    got: pd.Series | np.ndarray, ref: pd.Series | np.ndarray, rtol: float = 1e-12
) -> None:
    a = np.asarray(got, dtype="float64")
    b = np.asarray(ref, dtype="float64")
    np.testing.assert_array_equal(np.isnan(a), np.isnan(b))
    np.testing.assert_allclose(a[~np.isnan(a)], b[~np.isnan(b)], rtol=rtol, atol=0)


def _merge_ref(frame: pd.DataFrame, ref: pd.DataFrame) -> pd.DataFrame:
    """Outer join on (symbol, ts) so that a missing or extra row shows up as a NaN mismatch."""
    m = frame.merge(ref, on=[S.TS, S.SYMBOL], how="outer", suffixes=("", "_ref"), indicator=True)
    assert (m["_merge"] == "both").all(), m.loc[m["_merge"] != "both", [S.TS, S.SYMBOL, "_merge"]]
    return m


def _trades_at_midnight(trades: pd.DataFrame) -> int:
    ts = trades[S.TS]
    return int((ts == ts.dt.floor("1D")).sum())


# ---- fixtures ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sim() -> SimResult:
    """Four simulated days of BTC and ETH across a year end (2024-12-30 .. 2025-01-02)."""
    return simulate(SimConfig(n_days=4, start="2024-12-30T00:00Z").select("BTCUSDT", "ETHUSDT"), 11)


@pytest.fixture(scope="module")
def trades_build(sim: SimResult, tmp_path_factory: pytest.TempPathFactory):
    """All four days of trades ingested at once and built at 1h."""
    root = tmp_path_factory.mktemp("trades_build")
    store = _ingest(root / "data", "sim", {"trades": ("trades", sim.trades, None)})
    fs = FeatureStore(root / "features")
    report = fs.build(store, "sim", SPEC_1H)
    return store, fs, report


def _realized_frame() -> pd.DataFrame:
    """Hand-made daily measures: two symbols, 40 days, one missing day and short days."""
    rng = np.random.default_rng(5)
    ts = pd.date_range("2025-01-02", periods=40, freq="1D", tz="UTC")
    frames = []
    for k, sym in enumerate(("BTCUSDT", "ETHUSDT")):
        rv = np.exp(rng.normal(-8 + k, 0.6, len(ts)))
        n = np.full(len(ts), 288.0)
        n[[4, 17]] = [249.0, 100.0]  # under 250/288 of the median -> invalid
        n[[9, 25]] = [251.0, 280.0]  # short but above the threshold -> valid
        f = pd.DataFrame({S.TS: ts, S.SYMBOL: sym, S.RV: rv, S.BV: 0.9 * rv, S.N_OBS: n})
        frames.append(f.drop(index=30 - 7 * k))  # one missing day per symbol
    return pd.concat(frames, ignore_index=True)


# ---- 1. precomputed realized measures ----------------------------------------------------------


def _check_realized_build(store, fs: FeatureStore, dataset: str, spec: FeatureSpec) -> pd.DataFrame:
    report = fs.build(store, dataset, spec)
    assert report.rv_source == {"BTCUSDT": "realized_1d", "ETHUSDT": "realized_1d"}
    feats = fs.read(dataset, "1D")
    realized = (
        store.read(dataset, "realized_1d").sort_values([S.SYMBOL, S.TS]).reset_index(drop=True)
    )
    # one feature row per stored realized row, the measure used as it is
    assert feats[[S.TS, S.SYMBOL]].equals(realized[[S.TS, S.SYMBOL]])
    np.testing.assert_array_equal(feats[S.RV].to_numpy(), realized[S.RV].to_numpy())
    valid = _valid_reference(realized)
    np.testing.assert_array_equal(feats["valid"].to_numpy(dtype=bool), valid.to_numpy())
    for h in spec.horizons:
        _assert_close(
            feats[f"target_rv_var_h{h}"], _target_reference(realized, valid, h), rtol=1e-10
        )
    return feats


def test_realized_table_used_directly_with_nobs_validity_and_targets(tmp_path: Path) -> None:
    frame = _realized_frame()
    store = _ingest(tmp_path / "data", "r", {"realized_1d": ("realized", frame, DAY)})
    spec = FeatureSpec(horizons=(1, 5), har_windows=(1, 5))
    feats = _check_realized_build(store, FeatureStore(tmp_path / "features"), "r", spec)
    btc = feats[feats[S.SYMBOL] == "BTCUSDT"].set_index(S.TS)
    # the invalid days: 249 and 100 returns (of 288); 251 and 280 stay valid
    invalid = set(btc.index[~btc["valid"]])
    assert invalid == {frame[S.TS].iloc[4], frame[S.TS].iloc[17]}
    # a target window touching an invalid day or the missing day is NaN, never a shorter mean
    day = frame[S.TS].iloc[4]
    assert np.isnan(btc.loc[day - DAY, "target_rv_var_h1"])
    short = frame[S.TS].iloc[17]  # 100 returns
    assert np.isnan(btc.loc[short - 5 * DAY, "target_rv_var_h5"])
    assert np.isfinite(btc.loc[short - 6 * DAY, "target_rv_var_h5"])
    missing = pd.Timestamp("2025-01-02", tz="UTC") + 30 * DAY
    assert missing not in btc.index
    assert np.isnan(btc.loc[missing - DAY, "target_rv_var_h1"])
    ref = btc[S.RV].where(btc["valid"]).loc[day + DAY : day + 5 * DAY].mean()
    assert btc.loc[day, "target_rv_var_h5"] == pytest.approx(ref, rel=1e-12)
    # invalid days are not HAR regressors
    assert np.isnan(btc.loc[day, "rv_var_har1"])
    assert np.isnan(btc.loc[day + DAY, "rv_var_lag1"])


def test_realized_daily_btc_eth_from_csv(data_dir: Path, tmp_path: Path) -> None:
    store = DataStore(tmp_path / "data")
    for name in ("btc_measures.csv", "eth_measures.csv"):
        ingest_file(store, data_dir / REALIZED_DIR / name, dataset="crypto")
    feats = _check_realized_build(
        store, FeatureStore(tmp_path / "features"), "crypto", FeatureSpec()
    )
    # the documented outage 2018-02-08/09 (5 and 168 of 287 returns) is invalid, so are its targets
    btc = feats[feats[S.SYMBOL] == "BTCUSDT"].set_index(S.TS)
    outage = pd.Timestamp("2018-02-09", tz="UTC")
    assert not btc.loc[outage, "valid"]
    assert np.isnan(btc.loc[outage - DAY, "target_rv_var_h1"])
    assert int((~feats["valid"]).sum()) > 10


# ---- 2. trades: the cache path does not change numbers -----------------------------------------


def test_trades_1h_equal_one_pass_realized_measures(sim: SimResult, trades_build) -> None:
    store, fs, report = trades_build
    assert report.rv_source == {"BTCUSDT": "trades", "ETHUSDT": "trades"}
    assert store.read("sim", "trades").shape[0] == len(sim.trades)  # nothing dropped at ingest
    feats = fs.read("sim", "1h")
    ref = realized_measures(sim.trades, bar="1h", grid="5min", min_coverage=SPEC_1H.min_coverage)
    m = _merge_ref(feats, ref)
    for c in ref.columns.drop([S.TS, S.SYMBOL]):
        _assert_close(m[c], m[f"{c}_ref"])
    # the first hour of each day (a partition boundary) has its full 12 grid returns
    first = m[(m[S.TS].dt.hour == 1) & (m[S.TS] > m[S.TS].min())]
    assert len(first) == 6 and (first[S.N_OBS] == 12).all()
    # microstructure features too: the per-day cache equals one pass over all trades
    tref = M.trade_features(sim.trades, bar="1h")
    mt = _merge_ref(feats[[S.TS, S.SYMBOL, *tref.columns.drop([S.TS, S.SYMBOL])]], tref)
    for c in tref.columns.drop([S.TS, S.SYMBOL]):
        if pd.api.types.is_numeric_dtype(tref[c]):
            _assert_close(mt[c], mt[f"{c}_ref"], rtol=1e-9)


def test_trade_stamped_at_partition_boundary(tmp_path: Path) -> None:
    """A trade at exactly 00:00 closes the previous day's (right-closed) bar, though it is stored in
    the next day's partition: the previous day must stay whole and valid."""
    rng = np.random.default_rng(3)
    ts = pd.date_range("2025-01-01 00:00:07", "2025-01-03 23:59:50", freq="37s", tz="UTC")
    ts = ts.append(
        pd.DatetimeIndex(
            [pd.Timestamp("2025-01-02", tz="UTC"), pd.Timestamp("2025-01-03", tz="UTC")]
        )
    )
    ts = ts.sort_values()
    price = 100 * np.exp(np.cumsum(rng.normal(0, 2e-4, len(ts))))
    trades = pd.DataFrame({S.TS: ts, S.SYMBOL: "BTCUSDT", S.PRICE: price, S.SIZE: 1.0, S.SIDE: 1})
    assert _trades_at_midnight(trades) == 2
    store = _ingest(tmp_path / "data", "t", {"trades": ("trades", trades, None)})
    fs = FeatureStore(tmp_path / "features")
    fs.build(store, "t", FeatureSpec(horizons=(1,), har_windows=(1,)))
    feats = fs.read("t", "1D")
    ref = realized_measures(store.read("t", "trades"), bar="1D", grid="5min")
    m = _merge_ref(feats, ref)
    for c in (S.RV, S.BV, S.N_OBS, "valid", "close"):
        _assert_close(m[c], m[f"{c}_ref"])
    assert m["valid"].all() and (m[S.N_OBS].iloc[1:] == 288).all()


def test_minute_bars_across_month_end_equal_one_pass(tmp_path: Path) -> None:
    """1-minute bars are stored per month; the bar closing at 02-01 00:00 belongs to January 31."""
    res = simulate(SimConfig(n_days=3, start="2025-01-30T00:00Z").select("BTCUSDT"), 4)
    store = _ingest(
        tmp_path / "data", "b", {"bars_1m": ("bars", res.bars_1m, pd.Timedelta("1min"))}
    )
    assert len(store.manifest("b")["tables"]["bars_1m"]["partitions"]) == 2
    fs = FeatureStore(tmp_path / "features")
    report = fs.build(store, "b", FeatureSpec(horizons=(1,), har_windows=(1,)))
    assert report.rv_source == {"BTCUSDT": "bars_1m"}
    feats = fs.read("b", "1D")
    ref = realized_measures(res.bars_1m, bar="1D", grid="5min", price_col=S.CLOSE)
    m = _merge_ref(feats, ref)
    for c in (S.RV, S.BV, S.RQ, S.N_OBS, "valid"):
        _assert_close(m[c], m[f"{c}_ref"])
    assert m["valid"].all()
    # the daily range features come from the same (whole) days
    day = pd.Timestamp("2025-02-01", tz="UTC")
    jan31 = res.bars_1m[(res.bars_1m[S.TS] > day - DAY) & (res.bars_1m[S.TS] <= day)]
    hl = math.log(jan31[S.HIGH].max() / jan31[S.LOW].min())
    row = feats.set_index(S.TS).loc[day]
    assert row["bars_1m_parkinson_var"] == pytest.approx(hl**2 / (4 * math.log(2)), rel=1e-12)


def test_hourly_bars_across_year_end_equal_one_pass(tmp_path: Path) -> None:
    """Hourly bars (too coarse for a 5-minute grid) are stored per year; the day closing on
    01-01 00:00 needs its last bar from the next year's partition."""
    rng = np.random.default_rng(8)
    ts = pd.date_range("2024-12-28 01:00", "2025-01-04 00:00", freq="1h", tz="UTC")
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, len(ts))))
    bars = pd.DataFrame(
        {
            S.TS: ts,
            S.SYMBOL: "BTCUSDT",
            S.OPEN: close,
            S.HIGH: close * 1.01,
            S.LOW: close * 0.99,
            S.CLOSE: close,
            S.VOLUME: 1.0,
        }
    )
    store = _ingest(tmp_path / "data", "h", {"bars_1h": ("bars", bars, pd.Timedelta("1h"))})
    fs = FeatureStore(tmp_path / "features")
    fs.build(store, "h", FeatureSpec(horizons=(1,), har_windows=(1,)))
    feats = fs.read("h", "1D")
    ref = squared_return_variance(bars, pd.Timedelta("1h"), "1D")
    m = _merge_ref(feats, ref)
    for c in (S.RV, S.N_OBS, "valid"):
        _assert_close(m[c], m[f"{c}_ref"])
    year_end = m.set_index(S.TS).loc[pd.Timestamp("2025-01-01", tz="UTC")]
    assert year_end[S.N_OBS] == 24 and year_end["valid"]
    r = np.diff(np.log(close[(ts > "2024-12-30 23:00") & (ts <= "2025-01-01")]))
    assert year_end[S.RV] == pytest.approx(float(np.sum(r**2)), rel=1e-12)


# ---- 3. incremental builds ---------------------------------------------------------------------


def _mtimes(fs: FeatureStore, dataset: str, freq: str) -> dict[str, int]:
    root = fs.path(dataset, freq)
    return {
        rel: os.stat(root / rel).st_mtime_ns for rel in fs.manifest(dataset, freq)["partitions"]
    }


def test_incremental_build_reuses_partitions(sim: SimResult, tmp_path: Path, trades_build) -> None:
    cut = pd.Timestamp("2025-01-02", tz="UTC")
    old, new = sim.trades[sim.trades[S.TS] < cut], sim.trades[sim.trades[S.TS] >= cut]
    assert _trades_at_midnight(new) == 0  # the old days' bars do not touch the new partitions
    store = DataStore(tmp_path / "data")
    ingest_frames(store, "sim", {"trades": ("trades", old, None)}, source="days 1-3")
    fs = FeatureStore(tmp_path / "features")
    # two caches per input partition: base measures and trade features
    first = fs.build(store, "sim", SPEC_1H)
    assert (first.base_computed, first.base_reused) == (3 * 2 * 2, 0)
    assert first.partitions_written == 4  # {BTC, ETH} x {2024, 2025}
    before = _mtimes(fs, "sim", "1h")

    n_parts = len(store.manifest("sim")["tables"]["trades"]["partitions"])
    ingest_frames(store, "sim", {"trades": ("trades", new, None)}, source="day 4")
    n_new = len(store.manifest("sim")["tables"]["trades"]["partitions"]) - n_parts
    assert n_new == 2
    second = fs.build(store, "sim", SPEC_1H)
    assert second.base_computed == n_new * 2
    assert second.base_reused == first.base_computed
    # 2024 rows (features and targets) are unchanged by a day in 2025: not rewritten
    assert (second.partitions_written, second.partitions_unchanged) == (2, 2)
    after = _mtimes(fs, "sim", "1h")
    for rel, mtime in before.items():
        if "2024-01-01" in rel:
            assert after[rel] == mtime, rel

    third = fs.build(store, "sim", SPEC_1H)
    assert (third.base_computed, third.base_reused) == (
        0,
        second.base_computed + second.base_reused,
    )
    assert (third.partitions_written, third.partitions_unchanged) == (0, 4)
    assert _mtimes(fs, "sim", "1h") == after

    incremental = fs.read("sim", "1h")
    fresh_fs = FeatureStore(tmp_path / "fresh")
    fresh_fs.build(store, "sim", SPEC_1H)
    pd.testing.assert_frame_equal(incremental, fresh_fs.read("sim", "1h"))
    # and the same as ingesting all four days at once
    _, all_at_once, _ = trades_build
    pd.testing.assert_frame_equal(incremental, all_at_once.read("sim", "1h"))


# ---- 4. no look-ahead in assemble ----------------------------------------------------------------


def _base_frame(rng: np.random.Generator, n_days: int = 40) -> tuple[pd.DataFrame, pd.DataFrame]:
    ts = pd.date_range("2025-03-01", periods=n_days, freq="1D", tz="UTC")
    rows = []
    for sym in ("BTCUSDT", "ETHUSDT"):
        rv = np.exp(rng.normal(-8, 0.7, n_days))
        rows.append(
            pd.DataFrame(
                {
                    S.TS: ts,
                    S.SYMBOL: sym,
                    S.RV: rv,
                    S.BV: rv * rng.uniform(0.7, 1.0, n_days),
                    S.RQ: rv**2 * rng.uniform(1, 3, n_days),
                    S.RS_POS: rv * 0.5,
                    S.RS_NEG: rv * 0.5,
                    "valid": rng.uniform(size=n_days) > 0.1,
                }
            )
        )
    base = pd.concat(rows, ignore_index=True)
    extra = base[[S.TS, S.SYMBOL]].assign(spread_bps=rng.uniform(1, 5, len(base)))
    return base, extra


def _perturb_after(
    frame: pd.DataFrame, t0: pd.Timestamp, rng: np.random.Generator, cols: list[str]
) -> pd.DataFrame:
    f = frame.copy()
    late = (f[S.TS] > t0).to_numpy()
    for c in cols:
        if c == "valid":
            f.loc[late, c] = rng.uniform(size=late.sum()) > 0.5
        else:
            f.loc[late, c] = f.loc[late, c] * rng.lognormal(0, 1, late.sum())
    drop = late & (rng.uniform(size=len(f)) < 0.2)  # and some later rows vanish
    return f.loc[~drop].reset_index(drop=True)


@settings(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(k0=st.integers(min_value=3, max_value=36), seed=st.integers(min_value=0, max_value=2**31))
def test_assemble_has_no_look_ahead(k0: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    spec = FeatureSpec(horizons=(1, 5), har_windows=(1, 5, 22))
    base, extra = _base_frame(rng)
    t0 = base[S.TS].iloc[k0]
    measure_cols = [S.RV, S.BV, S.RQ, S.RS_POS, S.RS_NEG, "valid"]
    ref = assemble(base, spec, extra=[extra])
    got = assemble(
        _perturb_after(base, t0, rng, measure_cols),
        spec,
        extra=[_perturb_after(extra, t0, rng, ["spread_bps"])],
    )

    def upto(f: pd.DataFrame) -> pd.DataFrame:
        return f[f[S.TS] <= t0].sort_values([S.SYMBOL, S.TS]).reset_index(drop=True)

    a, b = upto(ref), upto(got)
    features = [c for c in ref.columns if not c.startswith("target_")]
    assert {"rv_var_har22", "rv_var_lag1", "mkt_rv_var", "spread_bps", "bv_var_t"} <= set(features)
    pd.testing.assert_frame_equal(a[features], b[features])
    for h in spec.horizons:
        known = (a[f"target_end_{h}"] <= t0).to_numpy()
        assert known.sum() == 2 * max(0, k0 + 1 - h)  # every window ending by t0 is compared
        _assert_close(
            b[f"target_rv_var_h{h}"].to_numpy()[known],
            a[f"target_rv_var_h{h}"].to_numpy()[known],
            rtol=0,
        )
    # the perturbation does reach the future rows (the check above is not vacuous)
    late = ref[ref[S.TS] > t0].merge(got, on=[S.TS, S.SYMBOL], suffixes=("", "_got"))
    assert (late[S.RV] != late[f"{S.RV}_got"]).any()


# ---- 5. manifest, errors, spec validation --------------------------------------------------------


def test_manifest_records_fingerprint_version_and_spec(trades_build) -> None:
    store, fs, report = trades_build
    man = fs.manifest("sim", "1h")
    assert man["input_fingerprint"] == store.fingerprint("sim")
    assert man["feature_set_version"] == FEATURE_SET_VERSION
    assert (
        FeatureSpec(**{k: tuple(v) if isinstance(v, list) else v for k, v in man["spec"].items()})
        == SPEC_1H
    )
    assert man["spec"] == {
        k: list(v) if isinstance(v, tuple) else v for k, v in asdict(SPEC_1H).items()
    }
    assert man["rv_source"] == report.rv_source
    assert man["columns"] == report.columns
    assert (
        sum(p["rows"] for p in man["partitions"].values())
        == report.rows
        == len(fs.read("sim", "1h"))
    )
    eth = fs.read("sim", "1h", symbols=["ETHUSDT"])
    assert set(eth[S.SYMBOL]) == {"ETHUSDT"} and len(eth) == report.rows // 2


def test_read_of_unbuilt_dataset_names_the_command(tmp_path: Path, trades_build) -> None:
    fs = FeatureStore(tmp_path)
    with pytest.raises(
        S.DataError,
        match=r"no features built for dataset 'nope' at freq '1D'.*`dprm features build nope --freq 1D`",
    ):
        fs.read("nope", "1D")
    _, built, _ = trades_build
    with pytest.raises(S.DataError, match=r"at freq '1D'.*dprm features build sim --freq 1D"):
        built.read("sim", "1D")  # built at 1h only


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (
            {"freq": "daily"},
            r"'freq' parameter of FeatureSpec must be a positive duration.*Got 'daily'",
        ),
        (
            {"freq": "-1h"},
            r"'freq' parameter of FeatureSpec must be a positive duration.*Got '-1h'",
        ),
        ({"grid": "0s"}, r"'grid' parameter of FeatureSpec must be a positive duration.*Got '0s'"),
        (
            {"min_coverage": 0.0},
            r"'min_coverage' parameter of FeatureSpec must be in \(0, 1\]\. Got 0\.0",
        ),
        (
            {"min_coverage": 1.5},
            r"'min_coverage' parameter of FeatureSpec must be in \(0, 1\]\. Got 1\.5",
        ),
    ],
    ids=["freq-word", "freq-negative", "grid-zero", "coverage-zero", "coverage-above-one"],
)
def test_feature_spec_validation(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        FeatureSpec(**kwargs)


# ---- 6. bars of the target frequency only: Garman-Klass --------------------------------------------


def test_daily_bars_only_give_garman_klass_variance(tmp_path: Path) -> None:
    rng = np.random.default_rng(21)
    n = 30
    ts = pd.date_range("2024-12-20", periods=n, freq="1D", tz="UTC")  # crosses a year partition
    o = 100 * np.exp(np.cumsum(rng.normal(0, 0.02, n)))
    c = o * np.exp(rng.normal(0, 0.02, n))
    h = np.maximum(o, c) * np.exp(rng.uniform(0, 0.02, n))
    lo = np.minimum(o, c) * np.exp(-rng.uniform(0, 0.02, n))
    h[7] = lo[7] = o[7] = c[7] = 101.0  # a flat day: zero range variance, not a usable measure
    bars = pd.DataFrame(
        {
            S.TS: ts,
            S.SYMBOL: "BTCUSDT",
            S.OPEN: o,
            S.HIGH: h,
            S.LOW: lo,
            S.CLOSE: c,
            S.VOLUME: rng.uniform(1, 2, n),
        }
    )
    store = _ingest(tmp_path / "data", "d", {"bars_1d": ("bars", bars, DAY)})
    fs = FeatureStore(tmp_path / "features")
    report = fs.build(store, "d", FeatureSpec(horizons=(1,), har_windows=(1, 5)))
    assert report.rv_source == {"BTCUSDT": "bars_1d (Garman-Klass range variance)"}
    assert fs.manifest("d", "1D")["rv_source"] == report.rv_source
    feats = fs.read("d", "1D")
    assert feats[S.TS].tolist() == bars[S.TS].tolist()  # one row per bar, none lost at the year end
    gk = 0.5 * np.log(h / lo) ** 2 - (2 * math.log(2) - 1) * np.log(c / o) ** 2
    _assert_close(feats[S.RV], gk)
    _assert_close(feats[S.RV], range_variance(bars, estimators=("garman_klass",))["gk_var"])
    _assert_close(feats["bars_1d_gk_var"], gk)  # the range feature of the same bars agrees
    np.testing.assert_array_equal(feats["valid"].to_numpy(), gk > 0)
    assert not feats["valid"].iloc[7] and np.isnan(feats["rv_var_har1"].iloc[7])
    assert np.isnan(feats["target_rv_var_h1"].iloc[6])
    assert feats["target_rv_var_h1"].iloc[8] == pytest.approx(gk[9], rel=1e-12)


# ---- 7. nothing to build from ------------------------------------------------------------------


def test_dataset_without_usable_table_names_its_tables(tmp_path: Path) -> None:
    ts = pd.date_range("2025-01-01", periods=3, freq="1h", tz="UTC")
    options = pd.DataFrame(
        {
            S.TS: ts,
            S.SYMBOL: [f"BTC-31JAN25-{k}-C" for k in (90000, 95000, 100000)],
            S.UNDERLYING: "BTC",
            S.EXPIRY: pd.Timestamp("2025-01-31 08:00", tz="UTC"),
            S.STRIKE: [90000.0, 95000.0, 100000.0],
            S.OPTION_TYPE: "call",
            S.MARK_IV: 0.55,
            S.UNDERLYING_PX: 94000.0,
        }
    )
    store = _ingest(tmp_path / "data", "opt", {"options": ("options", options, None)})
    fs = FeatureStore(tmp_path / "features")
    with pytest.raises(
        S.DataError,
        match=r"dataset 'opt' has no table from which 1D features can be built "
        r"\(need trades, bars or realized measures\); tables: \['options'\]",
    ):
        fs.build(store, "opt")
    with pytest.raises(
        S.DataError, match=r"dataset 'missing' not found.*known datasets: \['opt'\]"
    ):
        fs.build(store, "missing")
