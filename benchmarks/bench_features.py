"""Benchmark of the realized-measure hot path (features.realized.realized_measures).

    python benchmarks/bench_features.py [--n-trades 50_000_000] [--quick]

Generates a synthetic canonical trades table (several symbols, 24/7, numpy) partition by partition
(one symbol x a block of days), and times on every partition, in the same process and on the same
frame:

- ours:   realized_measures(bar="1D", grid="5min", subsample=False, kernel=False)
          (rv, bv, rq, semivariances, n_obs and the other grid measures);
- pandas: a straightforward groupby/resample implementation of rv, bv, rq, semivariances, n_obs;
- floor:  one vectorised numpy pass over the same columns (log, np.diff, squares summed by
          (symbol, day) with np.add.reduceat): the least any implementation must do.

It checks that ours and pandas agree, reports trades/second, the ratios, and the peak memory
(RSS sampled during each call, and the process peak), which stays bounded by the partition size
because partitions are generated, measured and released one at a time. With DPRM_DATA_DIR (default
../shared/data) present it also runs on the Binance L2 snippet trades and the 1-minute bars.
Exits 0.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import psutil
import pyarrow as pa

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from features.realized import realized_measures, symbol_codes  # noqa: E402

DAY_NS = 86_400 * 10**9
GRID = "5min"
SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT", "BNBUSDT")
T0 = int(pd.Timestamp("2024-01-01", tz="UTC").value)


# ---------------------------------------------------------------------------------------------
# data
# ---------------------------------------------------------------------------------------------
def make_partition(
    gen: np.random.Generator, symbol: str, day0: int, n_days: int, per_day: int, base_price: float
) -> pd.DataFrame:
    """A canonical trades frame of one symbol over ``n_days`` days (``per_day`` trades a day)."""
    n = n_days * per_day
    gaps = gen.exponential(1.0, n).reshape(n_days, per_day)
    cum = np.cumsum(gaps, axis=1)
    frac = cum / (cum[:, -1:] + gen.exponential(1.0, (n_days, 1)))
    ts = T0 + (day0 + np.arange(n_days))[:, None] * DAY_NS + (frac * DAY_NS).astype(np.int64)
    ts = np.maximum(ts.ravel(), 1)
    sigma_trade = 0.03 / np.sqrt(per_day)
    lp = np.log(base_price) + np.cumsum(gen.standard_normal(n, dtype=np.float32) * sigma_trade)
    sym = pa.array([symbol]).take(pa.array(np.zeros(n, dtype=np.int32)))
    return pd.DataFrame(
        {
            "ts": pd.Series(ts.view("datetime64[ns]")).dt.tz_localize("UTC"),
            "symbol": pd.array(sym, dtype="str"),
            "price": np.exp(lp),
            "size": gen.exponential(0.1, n),
            "side": gen.choice(np.array([-1, 1], dtype=np.int8), n),
        }
    )


# ---------------------------------------------------------------------------------------------
# the three implementations
# ---------------------------------------------------------------------------------------------
COLS = ["rv_var", "bv_var", "rq_var2", "rs_pos_var", "rs_neg_var", "n_obs"]


def run_ours(frame: pd.DataFrame) -> pd.DataFrame:
    res = realized_measures(frame, bar="1D", grid=GRID, subsample=False, kernel=False)
    return res


def run_pandas(frame: pd.DataFrame) -> pd.DataFrame:
    """Straightforward pandas: resample per symbol, ffill, diff, then groupby (symbol, day)."""
    p = (
        frame.set_index("ts")
        .groupby("symbol")["price"]
        .resample(GRID, closed="right", label="right")
        .last()
    )
    p = p.groupby(level=0).ffill()
    r = np.log(p).groupby(level=0).diff().rename("r").reset_index().dropna(subset=["r"])
    r["day"] = r["ts"].dt.ceil("1D")
    r["r2"] = r["r"] ** 2
    r["r4"] = r["r2"] ** 2
    r["pos2"] = r["r2"].where(r["r"] > 0, 0.0)
    r["neg2"] = r["r2"].where(r["r"] <= 0, 0.0)
    r["absr"] = r["r"].abs()
    g = r.groupby(["symbol", "day"])
    r["bvp"] = r["absr"] * g["absr"].shift(1)
    agg = r.groupby(["symbol", "day"]).agg(
        rv_var=("r2", "sum"),
        rq=("r4", "sum"),
        rs_pos_var=("pos2", "sum"),
        rs_neg_var=("neg2", "sum"),
        bvp=("bvp", "sum"),
        n_obs=("r", "size"),
    )
    n = agg["n_obs"]
    agg["bv_var"] = np.pi / 2 * n / (n - 1) * agg["bvp"]
    agg["rq_var2"] = n / 3 * agg["rq"]
    return agg.reset_index().rename(columns={"day": "ts"})


def run_floor(frame: pd.DataFrame) -> np.ndarray:
    """One vectorised numpy pass: squared tick returns summed by (symbol, day)."""
    ts = frame["ts"].array.asi8
    codes, _ = symbol_codes(frame["symbol"])
    r = np.diff(np.log(frame["price"].to_numpy()))
    day = ts // DAY_NS
    new = np.flatnonzero((np.diff(day) != 0) | (np.diff(codes) != 0))
    starts = np.concatenate([[0], new])
    return np.add.reduceat(r * r, starts)


# ---------------------------------------------------------------------------------------------
# measurement
# ---------------------------------------------------------------------------------------------
class PeakRSS:
    """Peak resident memory of this process during a block (sampled every 2 ms)."""

    def __init__(self) -> None:
        self.proc = psutil.Process()
        self.peak = 0
        self._stop = threading.Event()

    def __enter__(self) -> PeakRSS:
        self.start = self.proc.memory_info().rss
        self.peak = self.start
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.proc.memory_info().rss)
            time.sleep(0.002)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, self.proc.memory_info().rss)

    @property
    def extra_mb(self) -> float:
        return (self.peak - self.start) / 2**20


def timed(fn, frame):
    with PeakRSS() as mem:
        t = time.perf_counter()
        out = fn(frame)
        dt = time.perf_counter() - t
    return out, dt, mem.extra_mb


def max_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def compare(ours: pd.DataFrame, ref: pd.DataFrame) -> float:
    """Largest relative difference of the shared measures on full days."""
    m = ours.merge(ref, on=["ts", "symbol"], suffixes=("", "_ref"))
    m = m[(m["n_obs"] == 288) & (m["coverage"] == 1.0)]
    worst = 0.0
    for c in COLS:
        a, b = m[c].to_numpy(float), m[f"{c}_ref"].to_numpy(float)
        worst = max(worst, float(np.max(np.abs(a - b) / np.maximum(np.abs(b), 1e-300))))
    return worst if len(m) else float("nan")


def synthetic(n_trades: int, partition: int, seed: int) -> None:
    gen_root = np.random.SeedSequence(seed)
    n_sym = len(SYMBOLS)
    n_days = 30
    per_day = max(n_trades // (n_sym * n_days), 1000)
    days_per_part = max(1, min(n_days, partition // per_day))
    parts = [
        (s, d0, min(days_per_part, n_days - d0))
        for s in range(n_sym)
        for d0 in range(0, n_days, days_per_part)
    ]
    gens = [np.random.default_rng(s) for s in gen_root.spawn(len(parts))]
    print(
        f"synthetic trades: {n_sym} symbols x {n_days} days x {per_day:,} trades/day = "
        f"{n_sym * n_days * per_day:,} trades in {len(parts)} partitions of "
        f"<= {days_per_part * per_day:,} trades (one symbol x {days_per_part} days)"
    )
    warm = make_partition(np.random.default_rng(0), "WARM", 0, 2, 5000, 100.0)
    run_ours(warm)  # numba compilation (cached on disk after the first run)
    totals = {"ours": 0.0, "pandas": 0.0, "floor": 0.0, "gen": 0.0}
    mem = {"ours": 0.0, "pandas": 0.0, "floor": 0.0}
    worst = 0.0
    n_done = 0
    frame_mb = 0.0
    rss_after_first = None
    for k, ((s, d0, nd), gen) in enumerate(zip(parts, gens, strict=True)):
        t = time.perf_counter()
        frame = make_partition(gen, SYMBOLS[s], d0, nd, per_day, 100.0 * (s + 1))
        totals["gen"] += time.perf_counter() - t
        frame_mb = max(frame_mb, frame.memory_usage(deep=True).sum() / 2**20)
        ours, dt, mb = timed(run_ours, frame)
        totals["ours"] += dt
        mem["ours"] = max(mem["ours"], mb)
        ref, dt, mb = timed(run_pandas, frame)
        totals["pandas"] += dt
        mem["pandas"] = max(mem["pandas"], mb)
        _, dt, mb = timed(run_floor, frame)
        totals["floor"] += dt
        mem["floor"] = max(mem["floor"], mb)
        worst = max(worst, compare(ours, ref))
        n_done += len(frame)
        del frame, ours, ref
        if k == 0:
            rss_after_first = max_rss_mb()
    print()
    print(f"{'method':<34}{'seconds':>10}{'Mtrades/s':>12}{'ratio':>24}{'peak extra RSS':>18}")
    print("-" * 98)
    rows = [
        ("ours (numba, realized_measures)", totals["ours"], "1.00", mem["ours"]),
        (
            "pandas groupby/resample",
            totals["pandas"],
            f"{totals['pandas'] / totals['ours']:.1f}x slower",
            mem["pandas"],
        ),
        (
            "floor: one numpy pass",
            totals["floor"],
            f"ours = {totals['ours'] / totals['floor']:.2f}x floor",
            mem["floor"],
        ),
    ]
    for name, sec, ratio, mb in rows:
        print(f"{name:<34}{sec:>10.2f}{n_done / sec / 1e6:>12.1f}{ratio:>24}{mb:>15.0f} MB")
    print("-" * 98)
    print(f"trades measured: {n_done:,}; generation took {totals['gen']:.1f} s (not timed)")
    print(
        f"largest partition frame: {frame_mb:.0f} MB; process peak RSS after the first partition "
        f"{rss_after_first:.0f} MB, after all {len(parts)}: {max_rss_mb():.0f} MB "
        "(bounded by the partition, not the data set)"
    )
    print(f"ours vs pandas, max relative difference on full days: {worst:.2e}")
    goal_pd = totals["pandas"] / totals["ours"] >= 10
    goal_floor = totals["ours"] / totals["floor"] <= 5
    print(
        f"goals: >= 10x faster than pandas: {'met' if goal_pd else 'NOT met'}; "
        f"within 5x of the floor: {'met' if goal_floor else 'NOT met'}"
    )


def real_data(data_dir: Path) -> None:
    print()
    print(f"real data in {data_dir}")
    print(
        f"{'input':<44}{'rows':>10}{'ours s':>9}{'pandas s':>10}{'floor s':>9}{'max rel diff':>14}"
    )
    print("-" * 96)
    f = data_dir / "binance_l2_depth_trades_snippets_2024-08-08" / "trades.parquet"
    if f.exists():
        t = pd.read_parquet(f)
        frame = pd.DataFrame(
            {
                "ts": pd.Series(t["local_ts_ns"].to_numpy().view("datetime64[ns]")).dt.tz_localize(
                    "UTC"
                ),
                "symbol": (t["market"] + ":" + t["symbol"]).astype("str"),
                "price": t["price"].to_numpy(),
            }
        )
        tt = time.perf_counter()
        res = realized_measures(frame, bar="1min", grid="1s", include_empty=False)
        dt = time.perf_counter() - tt
        tf = time.perf_counter()
        run_floor(frame.sort_values(["symbol", "ts"]))
        dtf = time.perf_counter() - tf
        print(
            f"{'L2 snippet trades: 1-min bars, 1-s grid':<44}{len(frame):>10,}{dt:>9.3f}"
            f"{'-':>10}{dtf:>9.3f}{'-':>14}"
        )
        full = res[res["valid"]]
        summary = full.groupby("symbol")[["rv_var", "rk_var", "tsrv_var"]].median()
        for sym, row in summary.iterrows():
            print(
                f"    {sym:<28} median per minute: rv {row['rv_var']:.2e}  rk {row['rk_var']:.2e}"
                f"  tsrv {row['tsrv_var']:.2e}"
            )
    f = data_dir / "binance_spot_btc_eth_1m" / "klines_1m.parquet"
    if f.exists():
        k = pd.read_parquet(f)
        frame = pd.DataFrame(
            {
                "ts": (k["open_time"] + pd.Timedelta("1min")).astype("datetime64[ns, UTC]"),
                "symbol": k["symbol"].astype("str"),
                "price": k["close"].to_numpy(),
            }
        )
        ours, dt, _ = timed(run_ours, frame)
        ref, dtp, _ = timed(run_pandas, frame)
        _, dtf, _ = timed(run_floor, frame.sort_values(["symbol", "ts"]))
        print(
            f"{'1-minute closes: daily bars, 5-min grid':<44}{len(frame):>10,}{dt:>9.3f}"
            f"{dtp:>10.3f}{dtf:>9.3f}{compare(ours, ref):>14.1e}"
        )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--n-trades", type=lambda s: int(s.replace("_", "")), default=50_000_000)
    ap.add_argument(
        "--partition",
        type=lambda s: int(s.replace("_", "")),
        default=5_000_000,
        help="trades per partition (one symbol x a block of days)",
    )
    ap.add_argument("--quick", action="store_true", help="2 million trades")
    ap.add_argument("--seed", type=int, default=20261124)
    args = ap.parse_args(argv)
    n = 2_000_000 if args.quick else args.n_trades
    import numba

    print(f"numba threads: {numba.get_num_threads()}, CPUs: {os.cpu_count()}")
    synthetic(n, min(args.partition, n), args.seed)
    data_dir = Path(os.environ.get("DPRM_DATA_DIR", ROOT.parent / "shared" / "data")).resolve()
    if data_dir.is_dir():
        real_data(data_dir)
    else:
        print(f"\nreal data not found at {data_dir} (set DPRM_DATA_DIR); skipped")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
