"""Account status from the store and a risk-forecast bundle (``dprm account status``): the I/O
half of :mod:`margin.accounts`. Reads an accounts file (JSON or CSV), builds the market state of
every underlying the accounts trade or hold as collateral at the bundle's time, and returns each
account's status (a bad account fails alone)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from features.errors import ConfigError, DataError, Failure
from features.store import DataStore
from margin.accounts import AccountParams, AccountStatus, accounts_status, parse_accounts
from margin.instruments import UNDERLYINGS
from margin.params import MarginParams
from pipelines.margin_run import load_bundle_at
from pipelines.market import MarketStateConfig, build_market_state

__all__ = ["CYCLE_ACCOUNTS", "EXAMPLE_ACCOUNTS", "accounts_for", "cycle_accounts"]

EXAMPLE_ACCOUNTS = Path(__file__).resolve().parents[1] / "examples" / "accounts" / "accounts.json"
"""The shipped example: healthy, margin-call and liquidating accounts on the simulator's market."""

CYCLE_ACCOUNTS = {"sim": EXAMPLE_ACCOUNTS}
"""Dataset -> the accounts file the daily cycle updates after its margin step."""


def accounts_for(home: Path | str, accounts: Path | str, *, dataset: str, bundle: str = "latest",
                 freq: str | None = None, as_of: object = None,
                 params: AccountParams | None = None,
                 margin_params: MarginParams | None = None) -> dict[str, Any]:
    """Every account's status in ``accounts`` (a ``.json`` or ``.csv`` file) at the bundle's
    time (or ``as_of``): ``{"as_of", "bundle_id", "accounts": [status dicts], "failures": [...]}``
    (failures: the accounts that could not be computed, each naming its field and value)."""
    home, path = Path(home), Path(accounts)
    if not path.is_file():
        raise ConfigError(f"accounts file {path} does not exist")
    fmt = path.suffix.lower().lstrip(".")
    if fmt not in ("json", "csv"):
        raise ConfigError(f"accounts file {path}: expected a .json or .csv file, got {fmt!r}")
    _, b, t = load_bundle_at(home, dataset, bundle, freq, as_of)
    accts, bad = parse_accounts(path.read_text(), fmt, as_of=t, source=str(path))
    unds = {q.instrument.underlying for a in accts for q in a.portfolio.positions}
    unds |= {c for a in accts for c in a.balances if c in UNDERLYINGS}
    if not unds:
        raise DataError(f"{path}: no account holds a valid position or coin collateral",
                        source=str(path))
    market = build_market_state(DataStore(home / "data"), dataset, t,
                                MarketStateConfig(underlyings=tuple(sorted(unds))))
    out = accounts_status(accts, market, b, params, margin_params)
    return {"as_of": t.isoformat(), "dataset": dataset, "bundle_id": b.bundle_id,
            "accounts": [r.to_dict() for r in out if isinstance(r, AccountStatus)],
            "failures": [f.to_dict() for f in bad + [r for r in out if isinstance(r, Failure)]]}


def cycle_accounts(home: Path | str, dataset: str, freq: str | None = None,
                   accounts: Path | str | None = None) -> dict[str, Any] | None:
    """The cycle's account step (after margin): every account of ``accounts`` (default:
    :data:`CYCLE_ACCOUNTS` of the dataset; None when it has none) at the latest bundle, written
    atomically to ``$DPRM_HOME/accounts/<dataset>/<as_of>-<bundle>.json`` (a rerun on the same
    inputs writes the same bytes); returns the path, the counts per status and the failures."""
    import json

    from features.store import atomic_write_bytes

    path = accounts if accounts is not None else CYCLE_ACCOUNTS.get(dataset)
    if path is None:
        return None
    out = accounts_for(home, path, dataset=dataset, freq=freq)
    t = pd.Timestamp(out["as_of"])
    dest = (Path(home) / "accounts" / dataset /
            f"{t:%Y-%m-%dT%H%M%SZ}-{out['bundle_id'][:12]}.json")
    atomic_write_bytes(dest, json.dumps({**out, "accounts_file": str(path)}, indent=1,
                                        sort_keys=True, default=str).encode())
    counts = {s: sum(a["status"] == s for a in out["accounts"])
              for s in ("healthy", "margin_call", "liquidation")}
    return {"path": str(dest), "as_of": out["as_of"], "bundle_id": out["bundle_id"],
            "status": counts, "failures": out["failures"], "accounts": out["accounts"],
            "dataset": dataset}
