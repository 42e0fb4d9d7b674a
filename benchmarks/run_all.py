"""Run every benchmark (`make bench`); each prints its own table of throughput and same-run ratios.

    python benchmarks/run_all.py [--full]

Without ``--full`` each benchmark runs its ``--quick`` size (minutes in all); with it, the sizes the
issues name (50M trades, 100 GARCH fits, 1M LightGBM rows, a 20M-row ingest, 10k options x 10k scenarios): tens of minutes.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCHES = ["bench_ingest.py", "bench_features.py", "bench_garch.py", "bench_lgbm.py", "bench_flows.py",
           "bench_revalue.py", "bench_bundle.py", "bench_margin.py", "bench_accounts.py"]


def main() -> int:
    """Run the benchmarks in turn; return non-zero if any failed."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--full", action="store_true", help="the full sizes the issues name")
    args = ap.parse_args()
    failed = []
    for name in BENCHES:
        path = HERE / name
        if not path.exists():
            continue
        cmd = [sys.executable, str(path)] + ([] if args.full else ["--quick"])
        print(f"\n=== {' '.join(cmd[1:])}", flush=True)
        t0 = time.perf_counter()
        r = subprocess.run(cmd)
        print(f"=== {name}: exit {r.returncode} in {time.perf_counter() - t0:.0f} s", flush=True)
        if r.returncode:
            failed.append(name)
    if failed:
        print(f"failed: {failed}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
