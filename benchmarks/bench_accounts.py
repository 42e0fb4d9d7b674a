"""Account status at scale and liquidation-threshold latency (issue 20's performance figures).

Usage::

    python benchmarks/bench_accounts.py [--accounts 10000] [--positions 20] [--reference 200]
                                        [--big 500] [--repeat 10] [--quick] [--seed 5]

On the synthetic bundle and market state of ``bench_margin.py`` (5 crypto underlyings, FHS and
Monte Carlo scenario sets, a smile per underlying): ``--accounts`` accounts of ``--positions``
positions each, drawn from the instruments of a 500-position book (options linear and inverse,
perpetuals, spot), with USD cash and some BTC as cross collateral.

1. **one by one** (the reference, measured in the same run): ``account_status`` of each of the
   first ``--reference`` accounts alone (its own scenario sets and revaluation every time);
2. **together**: ``accounts_status`` of all the accounts (one context per underlyings x MPOR:
   the scenario sets built once, every instrument revalued once, ``recompute`` per account);
   the statuses of the reference accounts must equal their one-by-one values (checked);
3. **liquidation thresholds** of one ``--big``-position account (every underlying, down and
   up, the engine's MM along the path): p50/p99 over ``--repeat`` runs and the revaluations the
   search took.

Targets (issue 20): together / one by one >= 10x; thresholds p99 <= 500 ms.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_margin import AS_OF, make_account, make_bundle, make_state

from margin.accounts import Account, AccountParams, AccountStatus, account_status, accounts_status
from margin.portfolio import Portfolio, Position


def make_accounts(n: int, k: int, seed: int) -> list[Account]:
    """``n`` accounts of ``k`` positions drawn from the 500-position book's instruments."""
    rng = np.random.default_rng(seed)
    universe, _ = make_account(500, seed)
    pos = universe.positions
    out = []
    for a in range(n):
        pick = rng.choice(len(pos), size=k, replace=False)
        rows = tuple(Position(f"p{j}", pos[i].instrument, float(pos[i].quantity *
                                                                rng.uniform(0.2, 2.0)),
                              pos[i].entry_price, j, pos[i].text) for j, i in enumerate(pick))
        bal = {"USD": float(rng.uniform(2e4, 5e5))}
        if a % 3 == 0:
            bal["BTC"] = float(rng.uniform(0.1, 5.0))
        out.append(Account(f"acct{a:05d}", Portfolio(f"acct{a:05d}", rows, (), AS_OF), bal))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--accounts", type=int, default=10_000)
    ap.add_argument("--positions", type=int, default=20)
    ap.add_argument("--reference", type=int, default=200)
    ap.add_argument("--big", type=int, default=500)
    ap.add_argument("--repeat", type=int, default=10)
    ap.add_argument("--path-scenarios", type=int, default=500,
                    help="AccountParams.mm_path_scenarios of the big account's thresholds")
    ap.add_argument("--cash", type=float, default=2e6, help="USD cash of the big account")
    ap.add_argument("--fhs-days", type=int, default=1100)
    ap.add_argument("--quick", action="store_true", help="500 accounts, 50 reference, 3 repeats")
    ap.add_argument("--seed", type=int, default=5)
    a = ap.parse_args(argv)
    if a.quick:
        a.accounts, a.reference, a.repeat = 500, 50, 3
    bundle, state = make_bundle(a.fhs_days, a.seed), make_state()
    accts = make_accounts(a.accounts, a.positions, a.seed)
    fast = AccountParams(thresholds=False)
    # warm the JIT on a throwaway account
    account_status(accts[0], state, bundle, fast)
    t0 = time.perf_counter()
    alone = [account_status(x, state, bundle, fast) for x in accts[:a.reference]]
    t_ref = time.perf_counter() - t0
    t0 = time.perf_counter()
    together = accounts_status(accts, state, bundle, fast)
    t_all = time.perf_counter() - t0
    ok = [r for r in together if isinstance(r, AccountStatus)]
    worst = 0.0
    for x, y in zip(alone, together[:a.reference], strict=True):
        assert isinstance(x, AccountStatus) and isinstance(y, AccountStatus)
        for k in ("im_usd", "mm_usd", "equity_usd"):
            worst = max(worst, abs(getattr(x, k) - getattr(y, k)) / max(abs(getattr(x, k)), 1.0))
    rate_ref, rate_all = a.reference / t_ref, len(accts) / t_all
    status = {s: sum(r.status == s for r in ok) for s in ("healthy", "margin_call", "liquidation")}
    print(f"load average {os.getloadavg()[0]:.2f}; {len(accts):,} accounts x {a.positions} "
          f"positions, {len(ok):,} computed ({status})")
    print(f"one by one : {rate_ref:8.1f} accounts/s ({a.reference} accounts, {t_ref:.1f} s)")
    print(f"together   : {rate_all:8.1f} accounts/s ({t_all:.1f} s); ratio {rate_all / rate_ref:.1f}x "
          f"(goal >= 10x); largest relative difference {worst:.2e}")
    big, _ = make_account(a.big, a.seed)
    acct = Account("big", big, {"USD": a.cash, "BTC": 10.0})
    full = AccountParams(mm_path_scenarios=a.path_scenarios)
    account_status(acct, state, bundle, full)
    times, evals = [], 0
    for _ in range(a.repeat):
        t0 = time.perf_counter()
        r = account_status(acct, state, bundle, full)
        times.append(time.perf_counter() - t0)
    assert isinstance(r, AccountStatus)
    t_margin = []
    for _ in range(a.repeat):
        t0 = time.perf_counter()
        account_status(acct, state, bundle, fast)
        t_margin.append(time.perf_counter() - t0)
    from margin.accounts import PATH_POINTS

    scan = 1 + 2 * len(PATH_POINTS)  # both sides' points in one call, counted in each side's
    evals = sum(v["down_evaluations"] + v["up_evaluations"] - scan
                for v in r.liquidation.values())
    thr = np.asarray(times) - np.median(t_margin)
    print(f"thresholds : {a.big}-position account, {len(r.liquidation)} underlyings x 2 sides, "
          f"{evals} path evaluations (x {a.path_scenarios} scenarios for the MM); status with thresholds p50 {1e3 * np.median(times):.0f} ms "
          f"p99 {1e3 * np.percentile(times, 99):.0f} ms; the thresholds alone p50 "
          f"{1e3 * np.median(thr):.0f} ms p99 {1e3 * np.percentile(thr, 99):.0f} ms (goal 500)")
    print(f"  equity {r.equity_usd:,.0f}, IM {r.im_usd:,.0f}, MM {r.mm_usd:,.0f} ({r.status})")
    for u, v in sorted(r.liquidation.items()):
        d = "none" if v["down"] is None else f"{100 * v['down']:+.2f}%"
        up = "none" if v["up"] is None else f"{100 * v['up']:+.2f}%"
        print(f"  {u}: down {d} ({v['down_evaluations']} evaluations), up {up} "
              f"({v['up_evaluations']})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
