"""Throughput of the compiled revaluation kernel, with same-run ratios to three references.

Usage::

    python benchmarks/bench_revalue.py [--options 10000] [--underlyings 20] [--scenarios 10000]
                                       [--threads 2] [--quick] [--seed 7]

Builds (seeded) a book of ``--options`` European options (half linear, half inverse, calls and
puts, 8 expiries from 2 days to 1 year, strikes from deep in to deep out of the money) on
``--underlyings`` underlyings, plus per underlying a spot holding, a linear and an inverse
perpetual and a linear and an inverse future; and a scenario set: log-returns per underlying,
vol shifts per expiry bucket, a 1-day margin period, basis and funding moves. Then, in the same
process, JIT compilation excluded (a warm-up run first), best of ``--repeat`` runs each:

1. the kernel (:func:`margin.revalue.revalue`) on the whole book and on the options alone, at
   ``--threads`` and at 1 thread: revaluations per second = distinct instruments x scenarios /
   wall time; the peak extra resident memory while it runs (sampled every ms) against the
   positions x scenarios float64 matrix it never builds;
2. (a) the per-position Python loop with the scalar pricer (:func:`margin.revalue.revalue_scalar`)
   on a sample of scenarios;
3. (b) numpy + ``scipy.special.ndtr`` Black-76 over the same arrays (options only, chunks of
   scenarios, one core: numpy does not thread this);
4. (c) the kernel's floor: the same ``prange`` loop on pre-computed forwards and d1/d2 (only the
   normal-CDF work left), on a chunk of scenarios.

It prints the rates, the ratios and a checksum of the P&L (sum and sum of squares) so runs are
comparable; the numpy reference's P&L is checked against the kernel's. Goal (issue 16): >= 50 M
option revaluations/s on 2 cores, within 3x of (c), memory bounded by a chunk.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import threading
import time

import numba
import numpy as np
import pandas as pd
import psutil
from numba import njit, prange
from scipy.special import ndtr

from margin.instruments import Future, Option, OptionRight, Perpetual, Settlement, Spot
from margin.revalue import MarketInputs, ScenarioSet, build_book, ncdf, revalue, revalue_scalar

AS_OF = pd.Timestamp("2024-12-02 08:00", tz="UTC")
EXPIRY_DAYS = [2, 7, 14, 30, 60, 90, 180, 365]


def make_book(n_options: int, n_und: int, rng: np.random.Generator, with_linear: bool = True):
    """Positions, market inputs and spot prices of the benchmark book."""
    spot = {f"U{u:02d}": float(rng.uniform(10.0, 100_000.0)) for u in range(n_und)}
    basis = {u: float(rng.uniform(0.0, 0.1)) for u in spot}
    positions, inputs = [], {}

    def add(inst, q, mi):
        positions.append((inst, q))
        inputs[inst.name] = mi

    for i in range(n_options):
        u = f"U{i % n_und:02d}"
        b = int(rng.integers(len(EXPIRY_DAYS)))
        days = EXPIRY_DAYS[b]
        fwd = spot[u] * math.exp(basis[u] * days / 365)
        strike = fwd * math.exp(rng.normal(0.0, 0.35))
        right = OptionRight.CALL if rng.random() < 0.5 else OptionRight.PUT
        settle = Settlement.INVERSE if i % 2 else Settlement.LINEAR
        opt = Option(f"O{i}", u, 1.0, settle, "", AS_OF + pd.Timedelta(days=days), strike, right)
        add(opt, float(rng.normal(0.0, 10.0)), MarketInputs(fwd, float(rng.uniform(0.3, 1.2)), b))
    if with_linear:
        for u, s0 in spot.items():
            add(Spot(f"{u}-SPOT", u), float(rng.normal()), MarketInputs(s0))
            for settle in Settlement:
                size = 100.0 if settle is Settlement.INVERSE else 1.0
                add(Perpetual(f"{u}-PERP-{settle}", u, size, settle), float(rng.normal()),
                    MarketInputs(s0 * 1.0005))
                exp = AS_OF + pd.Timedelta(days=90)
                add(Future(f"{u}-FUT-{settle}", u, size, settle, "", exp), float(rng.normal()),
                    MarketInputs(s0 * math.exp(basis[u] * 90 / 365)))
    return positions, inputs, spot


def make_scenarios(underlyings, n_s: int, rng: np.random.Generator) -> ScenarioSet:
    """Scenario set over a 1-day margin period."""
    n_u = len(underlyings)
    return ScenarioSet(
        tuple(underlyings),
        rng.standard_t(4, (n_s, n_u)) * 0.04,
        1.0 / 365,
        rng.normal(0.0, 0.03, (n_s, len(EXPIRY_DAYS))),
        rng.normal(0.0, 0.02, (n_s, n_u)),
        rng.normal(0.0, 3e-4, (n_s, n_u)),
    )


class PeakRSS:
    """Samples this process's resident memory every millisecond while in the ``with`` block."""

    def __enter__(self) -> PeakRSS:
        self.proc = psutil.Process()
        self.base = self.peak = self.proc.memory_info().rss
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(0.001):
            self.peak = max(self.peak, self.proc.memory_info().rss)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, self.proc.memory_info().rss)

    @property
    def extra_mb(self) -> float:
        """Peak minus the resident memory at entry, MB."""
        return (self.peak - self.base) / 1e6


def numpy_options_pnl(book, sc: ScenarioSet, lo: int, hi: int) -> np.ndarray:
    """(b) Black-76 with numpy + scipy.special.ndtr over the (scenarios x options) chunk."""
    cols = np.array([sc.underlyings.index(u) for u in book.underlyings])
    tau1 = np.maximum(book.t_yr - sc.dt_yr, 0.0)
    x = sc.log_return[lo:hi][:, cols][:, book.und]  # (chunk, n_opt)
    lns1 = np.log(book.spot)[book.und] + x
    s1 = np.exp(lns1)
    db = sc.basis_shift_ann[lo:hi][:, cols][:, book.und]
    lnf1 = lns1 + (book.basis_ann + db) * tau1
    f1 = np.exp(lnf1)
    vol = np.maximum(book.vol + sc.vol_shift[lo:hi][:, book.bucket], 0.0)
    sq = vol * np.sqrt(tau1)
    d1 = (lnf1 - np.log(book.strike)) / sq + 0.5 * sq
    d2 = d1 - sq
    sg = np.where(book.is_call, 1.0, -1.0)
    v = np.exp(-book.rate * tau1) * sg * (f1 * ndtr(sg * d1) - book.strike * ndtr(sg * d2))
    unit = np.where(book.inverse, (v / f1 - book.value) * s1, v - book.value) * book.size
    return unit @ book.quantity


@njit(cache=True, parallel=True, nogil=True, error_model="numpy")
def floor_kernel(qty, disc, strike, sign, f1, d1, d2, block, out):
    """(c) The kernel's loop with forwards and d1/d2 given, arrays of shape (n_options,
    n_scenarios): only the normal-CDF work, vectorized over the scenarios of a block."""
    n_s = f1.shape[1]
    for b in prange((n_s + block - 1) // block):
        lo = b * block
        hi = min(lo + block, n_s)
        acc = np.zeros(hi - lo)
        for i in range(qty.shape[0]):
            q, sg, k, d = qty[i], sign[i], strike[i], disc[i]
            # 0-based loops over row slices: indices provably >= 0, so loads stay contiguous
            fr, d1r, d2r = f1[i, lo:hi], d1[i, lo:hi], d2[i, lo:hi]
            for j in range(hi - lo):
                acc[j] += q * d * sg * (fr[j] * ncdf(sg * d1r[j]) - k * ncdf(sg * d2r[j]))
        out[lo:hi] = acc


def rate(n: float, seconds: float) -> str:
    """n per second as 'x.x M/s'."""
    return f"{n / seconds / 1e6:7.2f} M/s"


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print the figures."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--options", type=int, default=10_000)
    ap.add_argument("--underlyings", type=int, default=20)
    ap.add_argument("--scenarios", type=int, default=10_000)
    ap.add_argument("--threads", type=int, default=min(2, numba.config.NUMBA_NUM_THREADS))
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--repeat", type=int, default=3, help="best of N runs per timing")
    ap.add_argument("--quick", action="store_true", help="2,000 options x 2,000 scenarios")
    args = ap.parse_args(argv)
    n_opt, n_s = (2_000, 2_000) if args.quick else (args.options, args.scenarios)
    rng = np.random.default_rng(args.seed)
    positions, inputs, spot = make_book(n_opt, args.underlyings, rng)
    book = build_book(positions, inputs, spot, AS_OF)
    opt_pos = [p for p in positions if isinstance(p[0], Option)]
    obook = build_book(opt_pos, {p[0].name: inputs[p[0].name] for p in opt_pos}, spot, AS_OF)
    sc = make_scenarios(sorted(spot), n_s, rng)
    n_inst = book.n_instruments
    print(f"revaluation: {n_opt:,} options + {n_inst - n_opt} spot/perp/futures on "
          f"{args.underlyings} underlyings x {n_s:,} scenarios; threads={args.threads}, "
          f"cpus={os.cpu_count()}, load avg {os.getloadavg()[0]:.1f}")

    small = ScenarioSet(sc.underlyings, sc.log_return[:8], sc.dt_yr, sc.vol_shift[:8],
                        sc.basis_shift_ann[:8], sc.funding[:8])
    t0 = time.perf_counter()
    revalue(book, small)  # JIT (or cache load), excluded from the timings
    floor_kernel(np.ones(1), np.ones(1), np.ones(1), np.ones(1), np.ones((1, 1)),
                 np.ones((1, 1)), np.ones((1, 1)), 256, np.empty(1))
    print(f"warm-up (JIT/cache load): {time.perf_counter() - t0:.1f} s")

    cpu: dict[str, float] = {}

    def best(fn, key=None):
        times = []
        for _ in range(args.repeat):
            t0, c0 = time.perf_counter(), time.process_time()
            res = fn()
            times.append(time.perf_counter() - t0)
            if key:
                cpu[key] = min(cpu.get(key, math.inf), time.process_time() - c0)
        return res, min(times)

    numba.set_num_threads(args.threads)
    with PeakRSS() as mem:
        pnl = revalue(book, sc)
    pnl, t_full = best(lambda: revalue(book, sc))
    pnl_opt, t_opt = best(lambda: revalue(obook, sc), "opt")
    numba.set_num_threads(1)
    pnl_1t, t_opt_1t = best(lambda: revalue(obook, sc), "opt_1t")
    numba.set_num_threads(args.threads)
    assert pnl_1t.tobytes() == pnl_opt.tobytes(), "1 and N threads differ"

    # (a) scalar Python loop over all positions, a sample of scenarios
    n_a = 3 if n_opt >= 5_000 else 10
    t0 = time.perf_counter()
    ref_a = np.array([revalue_scalar(book, sc, s) for s in range(n_a)])
    t_a = time.perf_counter() - t0
    err_a = float(np.max(np.abs(ref_a - pnl[:n_a])))

    # (b) numpy + ndtr, options only, chunks of scenarios (one core)
    chunk = max(1, min(n_s, 250_000 // n_opt))
    n_b = min(n_s, 16 * chunk)
    t0 = time.perf_counter()
    ref_b = np.concatenate([numpy_options_pnl(obook, sc, lo, min(lo + chunk, n_b))
                            for lo in range(0, n_b, chunk)])
    t_b = time.perf_counter() - t0
    err_b = float(np.max(np.abs(ref_b - pnl_opt[:n_b])))

    # (c) floor: forwards, d1, d2 pre-computed for a chunk (linear prices: no coin conversion)
    n_c = min(n_s, max(1, 4_000_000 // n_opt))
    cols = np.array([sc.underlyings.index(u) for u in obook.underlyings])
    tau1 = np.maximum(obook.t_yr - sc.dt_yr, 0.0)
    lnf1 = (np.log(obook.spot)[obook.und] + sc.log_return[:n_c][:, cols][:, obook.und]
            + (obook.basis_ann + sc.basis_shift_ann[:n_c][:, cols][:, obook.und]) * tau1).T
    vol = np.maximum(obook.vol + sc.vol_shift[:n_c][:, obook.bucket], 0.0).T
    sq = vol * np.sqrt(tau1)[:, None]
    d1 = np.ascontiguousarray((lnf1 - np.log(obook.strike)[:, None]) / sq + 0.5 * sq)
    d2 = np.ascontiguousarray(d1 - sq)
    f1 = np.ascontiguousarray(np.exp(lnf1))
    out_c = np.empty(n_c)
    sign = np.where(obook.is_call, 1.0, -1.0)
    disc = np.exp(-obook.rate * tau1)
    _, t_c = best(lambda: floor_kernel(obook.quantity, disc, obook.strike, sign, f1, d1, d2, 256,
                                       out_c))

    full_mb = n_inst * n_s * 8 / 1e6
    r_opt = n_opt * n_s / t_opt
    print(f"{'measure':44s} {'time':>9s} {'rate':>11s}")
    print(f"{'kernel, whole book (instruments x scen.)':44s} {t_full:8.3f}s {rate(n_inst * n_s, t_full)}")
    print(f"{'kernel, options only':44s} {t_opt:8.3f}s {rate(n_opt * n_s, t_opt)}")
    print(f"{'kernel, options only, 1 thread':44s} {t_opt_1t:8.3f}s {rate(n_opt * n_s, t_opt_1t)}")
    print(f"{'(a) Python loop, scalar pricer':44s} {t_a:8.3f}s {rate(n_inst * n_a, t_a)}")
    print(f"{'(b) numpy + scipy.special.ndtr, options':44s} {t_b:8.3f}s {rate(n_opt * n_b, t_b)}")
    print(f"{'(c) floor: kernel on given F, d1, d2':44s} {t_c:8.3f}s {rate(n_opt * n_c, t_c)}")
    print(f"ratios (options kernel / reference rate): (a) {r_opt / (n_inst * n_a / t_a):,.0f}x  "
          f"(b) {r_opt / (n_opt * n_b / t_b):.1f}x  (c) {r_opt / (n_opt * n_c / t_c):.2f} "
          "(goal >= 1/3)")
    print(f"kernel, options only, per CPU-second (all threads' CPU time): "
          f"{n_opt * n_s / cpu['opt'] / 1e6:.1f} M/s at {args.threads} threads, "
          f"{n_opt * n_s / cpu['opt_1t'] / 1e6:.1f} M/s at 1")
    print(f"speed-up {args.threads} threads / 1 thread: {t_opt_1t / t_opt:.2f}x; identical bytes: yes")
    print(f"peak extra RSS during the whole-book kernel: {mem.extra_mb:.1f} MB "
          f"(the positions x scenarios matrix would be {full_mb:,.0f} MB)")
    print(f"max |P&L diff|: kernel vs (a) {err_a:.2e}, vs (b) {err_b:.2e} "
          f"(P&L scale {np.abs(pnl).max():.3e} USD)")
    print(f"checksum: sum {pnl.sum():.10e}  sum sq {np.square(pnl).sum():.10e}")
    goal = "met" if r_opt >= 50e6 else "not met"
    print(f"goal >= 50 M option revaluations/s on 2 cores: {r_opt / 1e6:.1f} M/s ({goal})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
