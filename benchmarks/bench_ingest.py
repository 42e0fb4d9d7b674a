"""Streaming ingest: throughput and peak memory against reading the whole file at once.

Writes a synthetic Binance-style trades CSV of ``--rows`` rows (default 20 million, about 1.2 GB),
then in separate child processes (so each peak RSS is its own):

- ``dprm`` ingest of the file (chunked read, cleaning, partitioned parquet store);
- the reference: ``pandas.read_csv`` of the whole file into memory (what a non-streaming ingest needs
  before it can do anything).

Prints rows/s, peak RSS of each, and the ratio of peak memory to the file size. The claim checked: the
streaming ingest's peak memory is bounded by a chunk plus a partition, not by the file.

    python benchmarks/bench_ingest.py [--rows 20000000] [--chunk-rows 500000] [--quick]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

CHILD = r"""
import json, resource, sys, time
from pathlib import Path
mode, path, store_root, chunk = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
t0 = time.perf_counter()
if mode == "dprm":
    from features.ingest import ingest_file
    from features.store import DataStore
    rep = ingest_file(DataStore(Path(store_root)), Path(path), dataset="bench",
                      fmt="binance_trades_csv", chunk_rows=chunk, spill_rows=2 * chunk)
    rows = rep.rows_read
else:
    import pandas as pd
    rows = len(pd.read_csv(path, header=None))
dt = time.perf_counter() - t0
peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"rows": rows, "seconds": dt, "peak_mb": peak_mb}))
"""


def write_trades_csv(path: Path, rows: int, seed: int = 0, block: int = 2_000_000) -> None:
    """A Binance spot trades CSV (no header): id, price, qty, quote_qty, time(ms), is_buyer_maker,
    is_best_match; about 2 million trades per UTC day (a busy BTC spot day), so 20 million rows
    span 10 days."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    t0 = 1_704_067_200_000  # 2024-01-01
    price = 42_000.0
    with open(path, "w") as fh:
        for start in range(0, rows, block):
            n = min(block, rows - start)
            ids = np.arange(start, start + n)
            px = np.round(price * np.exp(rng.normal(0, 2e-5, n).cumsum()), 2)
            price = float(px[-1])
            qty = np.round(rng.exponential(0.05, n) + 1e-5, 5)
            maker = np.where(rng.random(n) < 0.5, "True", "False")
            pd.DataFrame({"id": ids, "price": px, "qty": qty, "quote": np.round(px * qty, 6),
                          "time": t0 + ids * 43, "maker": maker, "best": "True"}).to_csv(
                fh, header=False, index=False)


def run_child(mode: str, path: Path, store: Path, chunk: int) -> dict:
    """Run one measurement in a fresh interpreter; returns rows, seconds, peak_mb."""
    out = subprocess.run([sys.executable, "-c", CHILD, mode, str(path), str(store), str(chunk)],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    """Run the benchmark and print the table."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=20_000_000)
    ap.add_argument("--chunk-rows", type=int, default=500_000)
    ap.add_argument("--quick", action="store_true", help="2 million rows")
    args = ap.parse_args()
    rows = 2_000_000 if args.quick else args.rows
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        csv = tmp_path / "BTCUSDT-trades-2024-01.csv"
        t0 = time.perf_counter()
        write_trades_csv(csv, rows)
        size_mb = csv.stat().st_size / 2**20
        print(f"wrote {rows:,} trades ({size_mb:,.0f} MB) in {time.perf_counter() - t0:.1f} s")
        ours = run_child("dprm", csv, tmp_path / "store", args.chunk_rows)
        ref = run_child("pandas", csv, tmp_path / "none", args.chunk_rows)
    print(f"{'method':<34}{'seconds':>9}{'rows/s':>14}{'peak RSS MB':>13}{'peak/file':>11}")
    for name, r in (("dprm ingest (streaming, stored)", ours), ("pandas.read_csv (whole file)", ref)):
        print(f"{name:<34}{r['seconds']:>9.1f}{r['rows'] / r['seconds']:>14,.0f}{r['peak_mb']:>13,.0f}"
              f"{r['peak_mb'] / size_mb:>11.2f}")
    print(f"peak memory ratio dprm/pandas: {ours['peak_mb'] / ref['peak_mb']:.2f} "
          f"(file {size_mb:,.0f} MB, chunk {args.chunk_rows:,} rows)")


if __name__ == "__main__":
    main()
