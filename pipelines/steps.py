"""Pipeline steps: thin functions that call the libraries and write to the workspace.

The Prefect tasks and the CLI both call these; they hold no maths of their own.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pandas as pd

from features.ingest import IngestReport, validate_dataset, write_chunks
from features.store import DataStore, atomic_write_parquet
from pipelines.config import DemoConfig, SimulateConfig


def simulate_to_store(store: DataStore, cfg: SimulateConfig) -> tuple[IngestReport, Path]:
    """Simulate a market with ``cfg`` and store its tables; the truth goes to ``<dataset>/truth/``."""
    from features.ingest import ingest_frames
    from features.simulate import SimConfig, simulate

    sim_cfg = SimConfig(n_days=cfg.n_days).select(*cfg.symbols)
    result = simulate(sim_cfg, random_state=cfg.seed)
    tables: dict[str, tuple[str, pd.DataFrame, pd.Timedelta | None]] = {}
    for name, (kind, frame) in result.tables().items():
        interval = pd.Timedelta(name.split("_", 1)[1]) if name.startswith("bars_") else None
        tables[name] = (kind, frame, interval)
    report = ingest_frames(store, cfg.dataset, tables, source=f"simulator(seed={cfg.seed}, days={cfg.n_days})")
    truth_dir = store.path(cfg.dataset) / "truth"
    for name, frame in result.truth().items():
        atomic_write_parquet(truth_dir / f"{name}.parquet", frame)
    return report, truth_dir


def ingest_embedded(store: DataStore, dataset: str = "embedded") -> list[IngestReport]:
    """Store the real daily data shipped inside the ``arch`` package (S&P 500, NASDAQ, VIX)."""
    import arch

    from features.readers.arch_data import EMBEDDED, load_embedded

    reports = []
    for name in EMBEDDED:
        fp = hashlib.blake2b(f"arch-{arch.__version__}-{name}".encode(), digest_size=16).hexdigest()
        reports.append(write_chunks(store, dataset, load_embedded(name), source=f"arch.data.{name}",
                                    fingerprint=fp))
    return reports


def run_demo(cfg: DemoConfig, console: Any) -> dict[str, Any]:
    """The demo: ingest the embedded data and the simulator output, validate, summarise."""
    from pipelines.cli import _print_ingest, _print_validation
    from pipelines.config import dprm_home

    home = dprm_home()
    store = DataStore(home / "data")
    console.rule("1. ingest embedded real data (arch: S&P 500, NASDAQ, VIX)")
    reports = ingest_embedded(store, cfg.embedded_dataset)
    console.rule(f"2. simulate {cfg.simulate.n_days} days of {len(cfg.simulate.symbols)} assets")
    with console.status("simulating"):
        sim_report, truth_dir = simulate_to_store(store, cfg.simulate)
    _print_ingest([*reports, sim_report], store)
    console.print(f"simulator ground truth: {truth_dir}")
    console.rule("3. validate")
    results = {ds: validate_dataset(store, ds) for ds in (cfg.embedded_dataset, cfg.simulate.dataset)}
    _print_validation(results)
    console.rule("4. summary")
    from rich.table import Table

    t = Table(title="Stored data")
    summary = pd.concat([store.summary(ds) for ds in results], ignore_index=True)
    for c in ("dataset", "table", "symbol", "rows", "first", "last"):
        t.add_column(c)
    for row in summary.itertuples(index=False):
        t.add_row(row.dataset, row.table, row.symbol, f"{row.rows:,}", str(row.first)[:19], str(row.last)[:19])
    console.print(t)
    console.print(f"workspace: {home}")
    return {"home": home, "validation": results}
