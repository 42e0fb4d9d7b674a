"""The ``dprm`` command line.

Heavy imports (pandas, arch, prefect, mlflow) happen inside commands so ``dprm --help`` is instant.
Bad input exits with code 2 and one line on stderr, never a traceback.
"""

from __future__ import annotations

import functools
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

app = typer.Typer(
    help="DPRM: forecast volatility and correlation from market data; turn them into margin.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
data_app = typer.Typer(help="Canonical market data: ingest, validate, simulate, list.",
                       no_args_is_help=True)
app.add_typer(data_app, name="data")
models_app = typer.Typer(help="The model registry: list, show, promote, rollback.", no_args_is_help=True)
app.add_typer(models_app, name="models")
features_app = typer.Typer(help="The feature store: build and show feature frames.", no_args_is_help=True)
app.add_typer(features_app, name="features")
portfolio_app = typer.Typer(help="Portfolios: validate positions and price them at a market state.",
                            no_args_is_help=True)
app.add_typer(portfolio_app, name="portfolio")

F = TypeVar("F", bound=Callable[..., Any])


def _fail(message: str) -> None:
    """Print a one-line error and exit with code 2."""
    from rich.console import Console

    Console(stderr=True).print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code=2)


def clean_errors(fn: F) -> F:
    """Turn bad-input exceptions into a one-line message and exit code 2."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from pydantic import ValidationError

        from features.schema import DataError

        try:
            return fn(*args, **kwargs)
        except DataError as exc:
            _fail(str(exc))
        except ValidationError as exc:
            err = exc.errors()[0]
            loc = ".".join(str(x) for x in err["loc"])
            _fail(f"invalid setting '{loc}': {err['msg']} (got {err.get('input')!r})")
        except (FileNotFoundError, IsADirectoryError, PermissionError) as exc:
            _fail(f"{exc.strerror}: {exc.filename}")
        except ValueError as exc:  # parameter validation in the libraries (sklearn message shape)
            if os.environ.get("DPRM_DEBUG"):
                raise
            _fail(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        except ImportError as exc:  # pragma: no cover - environment problem
            _fail(f"missing dependency: {exc}")

    return wrapper  # type: ignore[return-value]


def _console():
    from rich.console import Console

    return Console()


def _store():
    from features.store import DataStore
    from pipelines.config import dprm_home

    return DataStore(dprm_home() / "data")


def _progress():
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
    )

    return Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                    MofNCompleteColumn(), TextColumn("{task.fields[rows]:>12,} rows"),
                    TimeElapsedColumn(), console=_console(), transient=False)


ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="TOML file with settings.",
                                                exists=True, dir_okay=False)]


# ---- data ---------------------------------------------------------------------------------
def _warn(message: str) -> None:
    """Print a one-line warning on stderr."""
    from rich.console import Console

    Console(stderr=True).print(f"[bold yellow]warning:[/] {message}", highlight=False, soft_wrap=True)


@data_app.command("ingest")
@clean_errors
def data_ingest(
    paths: Annotated[list[Path], typer.Argument(help="Files or folders to ingest (folders: every data file inside).")],
    dataset: Annotated[str | None, typer.Option(help="Dataset name (default: the file's folder name).")] = None,
    fmt: Annotated[str | None, typer.Option("--format", help="Reader format (default: detected).")] = None,
    symbol: Annotated[str | None, typer.Option(help="Symbol, for files that do not name it.")] = None,
    mapping: Annotated[Path | None, typer.Option(help="TOML column mapping for --format generic.", exists=True)] = None,
    force: Annotated[bool, typer.Option(help="Re-read sources already ingested (idempotent).")] = False,
    config: ConfigOpt = None,
) -> None:
    """Read raw files into the canonical store (streaming; atomic per file; raw files are never
    modified). Re-running adds nothing; the same file under corrected options (--symbol, --mapping,
    --format) replaces what the earlier options stored."""
    from features.ingest import ingest_file
    from features.readers import list_sources
    from features.store import check_name
    from pipelines.config import IngestConfig, load_config

    cfg = load_config(IngestConfig, config, "ingest", force=force or None)
    if dataset is not None:
        check_name("dataset", dataset)
    options: dict[str, Any] = {}
    if symbol is not None:
        options["symbol"] = check_name("symbol", symbol)
    if mapping is not None:
        import tomllib

        options.update(tomllib.loads(mapping.read_text()))
    files: list[tuple[Path, str | None]] = []
    for p in paths:
        if not p.exists():
            raise FileNotFoundError(2, "No such file or directory", str(p))
        if p.is_dir():
            found = list_sources(p)
            for f, detected, reason in found:
                if detected is None:
                    _console().print(f"[dim]skip {f}: {reason}[/]")
                else:
                    files.append((f, detected))
            if not any(detected for _, detected, _ in found):
                _warn(f"{p}: no data files found in this folder; nothing ingested from it")
        else:
            files.append((p, fmt))
    if not files:
        return
    store = _store()
    reports = []
    with _progress() as prog:
        for f, detected in files:
            task = prog.add_task(f"{f.name}", total=None, rows=0)

            def advance(n: int, task: int = task) -> None:
                prog.update(task, advance=n, rows=prog.tasks[task].completed + n)

            rep = ingest_file(store, f, dataset=dataset, fmt=detected or fmt, force=cfg.force,
                              chunk_rows=cfg.chunk_rows, spill_rows=cfg.spill_rows,
                              progress=advance, **options)
            prog.update(task, total=prog.tasks[task].completed or 1,
                        completed=prog.tasks[task].completed or 1)
            reports.append(rep)
    _print_ingest(reports, store)


def _ingest_note(r: Any) -> str:
    if r.skipped:
        return "already ingested: nothing added"
    if r.empty:
        return "no data rows: nothing stored" if r.rows_read == 0 else "no row kept: nothing stored"
    if r.replaced:
        return f"replaced an earlier ingest of this file ({r.rows_removed:,} rows removed)"
    return ""


def _print_ingest(reports: list, store: Any) -> None:
    from rich.table import Table

    from features.validate import CLEANING_RULES

    t = Table(title="Ingested")
    for c in ("source", "dataset", "tables", "rows read", "rows added", "rejected", "duplicates",
              "out of order", "note"):
        t.add_column(c, justify="right" if c.startswith(("rows", "rej", "dup", "out")) else "left")
    for r in reports:
        rej = sum(c.counts.get(k, 0) for c in r.tables.values() for k in CLEANING_RULES)
        dup = sum(c.counts.get("duplicates", 0) + c.counts.get("key_conflicts", 0)
                  for c in r.tables.values())
        ooo = sum(c.counts.get("out_of_order", 0) for c in r.tables.values())
        t.add_row(Path(r.source).name, r.dataset, ",".join(sorted(r.tables)), f"{r.rows_read:,}",
                  f"{r.rows_added:,}", f"{rej:,}", f"{dup:,}", f"{ooo:,}", _ingest_note(r))
    con = _console()
    con.print(t)
    for r in reports:
        dropped = r.dropped()
        if dropped:
            con.print(f"{Path(r.source).name}: {sum(dropped.values()):,} row(s) dropped: "
                      + ", ".join(f"{k}={v:,}" for k, v in dropped.items()), highlight=False)
        if r.empty:
            what = ("is empty or has only a header" if r.rows_read == 0
                    else "kept no row after cleaning")
            _warn(f"{r.source} {what}; nothing stored"
                  + ("" if store.exists(r.dataset) else f" and no dataset '{r.dataset}' created"))
    for ds in sorted({r.dataset for r in reports if store.exists(r.dataset)}):
        con.print(f"wrote {store.path(ds)}")


def _store_problem_exit(problems: list) -> None:
    """Print each store problem as one error line on stderr and exit with code 2."""
    from rich.console import Console

    err = Console(stderr=True)
    for p in problems:
        for line in p.lines():
            err.print(f"[bold red]error:[/] {line}", highlight=False, soft_wrap=True)
    names = " ".join(p.dataset for p in problems)
    err.print(f"[bold red]error:[/] run `dprm data repair {names}` to rebuild the manifest from the "
              "files or re-ingest the affected sources", highlight=False, soft_wrap=True)
    raise typer.Exit(code=2)


@data_app.command("validate")
@clean_errors
def data_validate(
    datasets: Annotated[list[str] | None, typer.Argument(help="Datasets to validate (default: all).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the results as JSON.")] = False,
) -> None:
    """Check the store against its manifest (orphaned, missing, stale partitions: exit 2), then
    re-check the stored data: print every rule's count and write validation.json beside the data."""
    import json

    from features.ingest import validate_dataset
    from features.store import StoreInconsistent

    store = _store()
    names = datasets or store.datasets()
    if not names:
        _fail(f"no datasets in {store.root}; run `dprm data ingest PATH` or `dprm data simulate` first")
    results, problems, docs = {}, [], []
    for ds in names:
        try:
            if as_json:
                results[ds] = validate_dataset(store, ds)
            else:
                with _console().status(f"validating {ds}"):
                    results[ds] = validate_dataset(store, ds)
        except StoreInconsistent as exc:
            problems.append(exc.problems)
            docs.append({"dataset": ds, "ok": False, "store": exc.problems.to_dict(), "tables": {}})
            continue
        docs.append({"dataset": ds, "ok": True,
                     "store": {"dataset": ds, "ok": True, "orphaned": [], "missing": [], "stale": []},
                     "tables": {t: c.to_dict() for t, c in results[ds].items()}})
    if as_json:
        typer.echo(json.dumps({"ok": not problems, "datasets": docs}, indent=2, default=str))
    else:
        if results:
            _print_validation(results)
        for ds in results:
            _console().print(f"wrote {store.path(ds) / 'validation.json'}")
    if problems:
        if not as_json:
            _store_problem_exit(problems)
        raise typer.Exit(code=2)


@data_app.command("repair")
@clean_errors
def data_repair(
    datasets: Annotated[list[str] | None, typer.Argument(help="Datasets to repair (default: all).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print what was done as JSON.")] = False,
) -> None:
    """Make a dataset's manifest agree with its files: finish or roll back an interrupted ingest,
    rebuild manifest entries from orphaned or stale files, and re-ingest the sources of missing
    partitions. Says which it did; exit 2 if something could not be restored."""
    import json

    from features.ingest import repair_dataset

    store = _store()
    names = datasets or store.datasets()
    if not names:
        _fail(f"no datasets in {store.root}")
    reports = [repair_dataset(store, ds) for ds in names]
    if as_json:
        typer.echo(json.dumps({"ok": all(r.ok for r in reports),
                               "datasets": [r.to_dict() for r in reports]}, indent=2, default=str))
    else:
        for r in reports:
            for line in r.lines():
                _console().print(line, highlight=False, soft_wrap=True)
    bad = [r for r in reports if not r.ok]
    if bad:
        if not as_json:
            from rich.console import Console

            Console(stderr=True).print(
                f"[bold red]error:[/] {len(bad)} dataset(s) not fully restored: "
                + ", ".join(r.dataset for r in bad), highlight=False, soft_wrap=True)
        raise typer.Exit(code=2)


def _print_validation(results: dict) -> None:
    from rich.table import Table

    from features.validate import FLAG_RULES, REJECT_RULES

    def fmt(c, rules) -> str:
        return ", ".join(f"{r}={c.counts[r]:,}" for r in rules if c.counts.get(r)) or "-"

    t = Table(title="Validation: rule counts (every rule; zero counts shown as -)")
    for col in ("dataset", "table", "rows stored", "rejected or dropped at ingest", "flagged (kept)"):
        t.add_column(col, justify="right" if col == "rows stored" else "left")
    for ds, tables in results.items():
        for table, c in tables.items():
            t.add_row(ds, table, f"{c.rows_out:,}", fmt(c, REJECT_RULES), fmt(c, FLAG_RULES))
    _console().print(t)
    _console().print("rules: rejected " + ", ".join(REJECT_RULES) + "; flagged " + ", ".join(FLAG_RULES),
                     style="dim")


@data_app.command("simulate")
@clean_errors
def data_simulate(
    days: Annotated[int | None, typer.Option(help="Days to simulate.")] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed.")] = None,
    dataset: Annotated[str | None, typer.Option(help="Dataset name.")] = None,
    config: ConfigOpt = None,
) -> None:
    """Simulate a seeded multi-asset market (trades, quotes, book, bars) with its true variance."""
    from pipelines.config import SimulateConfig, load_config
    from pipelines.steps import simulate_to_store

    cfg = load_config(SimulateConfig, config, "simulate", n_days=days, seed=seed, dataset=dataset)
    store = _store()
    with _console().status(f"simulating {cfg.n_days} days of {len(cfg.symbols)} symbols"):
        t0 = time.perf_counter()
        rep, truth_dir = simulate_to_store(store, cfg)
    _print_ingest([rep], store)
    _console().print(f"simulated in {time.perf_counter() - t0:.1f} s; ground truth in {truth_dir}")


@data_app.command("list")
@clean_errors
def data_list(
    datasets: Annotated[list[str] | None, typer.Argument(help="Datasets to show (default: all).")] = None,
) -> None:
    """List stored datasets: tables, symbols, rows and time spans."""
    import pandas as pd
    from rich.table import Table

    store = _store()
    names = datasets or store.datasets()
    if not names:
        _console().print(f"no datasets in {store.root}")
        return
    frames = [store.summary(ds) for ds in names]
    df = pd.concat(frames, ignore_index=True)
    t = Table(title=f"Datasets in {store.root}")
    for c in ("dataset", "table", "kind", "interval", "symbol", "rows", "first", "last", "partitions"):
        t.add_column(c, justify="right" if c in ("rows", "partitions") else "left")
    for row in df.itertuples(index=False):
        t.add_row(row.dataset, row.table, row.kind, str(row.interval or ""), row.symbol,
                  f"{row.rows:,}", str(row.first)[:19], str(row.last)[:19], str(row.partitions))
    _console().print(t)


# ---- features -----------------------------------------------------------------------------
@features_app.command("build")
@clean_errors
def features_build(
    datasets: Annotated[list[str] | None, typer.Argument(help="Datasets (default: all ingested).")] = None,
    freq: Annotated[str | None, typer.Option(help="Bar length of the feature rows: 5min, 1h, 1D.")] = None,
    grid: Annotated[str | None, typer.Option(help="Sampling grid of realized measures.")] = None,
    config: ConfigOpt = None,
) -> None:
    """Build (incrementally) the feature frames: realized measures, microstructure, HAR, targets."""
    from features.schema import DataError
    from features.store import DataStore
    from pipelines.config import FeaturesConfig, dprm_home, load_config
    from pipelines.steps import build_features

    cfg = load_config(FeaturesConfig, config, "features", freq=freq, grid=grid)
    home = dprm_home()
    names = datasets or DataStore(home / "data").datasets()
    if not names:
        _fail(f"no datasets in {home / 'data'}; run `dprm data ingest PATH` first")
    from rich.table import Table

    t = Table(title=f"Features ({cfg.freq})")
    for c in ("dataset", "rows", "columns", "computed", "reused", "written", "unchanged", "rv from"):
        t.add_column(c)
    with _progress() as prog:
        task = prog.add_task("building features", total=len(names), rows=0)
        reports = []
        skipped: dict[str, str] = {}
        for ds in names:
            try:
                rep = build_features(home, ds, cfg)
            except DataError as exc:
                if datasets:  # asked for by name: an error
                    raise
                skipped[ds] = str(exc)
                prog.update(task, advance=1)
                continue
            reports.append(rep)
            prog.update(task, advance=1, rows=prog.tasks[task].fields["rows"] + rep.rows)
    for rep in reports:
        src = ", ".join(sorted(set(rep.rv_source.values())))
        t.add_row(rep.dataset, f"{rep.rows:,}", str(len(rep.columns)), str(rep.base_computed),
                  str(rep.base_reused), str(rep.partitions_written), str(rep.partitions_unchanged), src)
    _console().print(t)
    for rep in reports:
        _console().print(f"wrote {rep.path}")
    for ds, why in skipped.items():
        _console().print(f"[yellow]skipped {ds}: {why}[/]")


@features_app.command("show")
@clean_errors
def features_show(
    dataset: Annotated[str, typer.Argument(help="Dataset name.")],
    freq: Annotated[str, typer.Option(help="Frequency of the feature frame.")] = "1D",
    symbol: Annotated[str | None, typer.Option(help="Only this symbol.")] = None,
    rows: Annotated[int, typer.Option(help="Last rows to print.")] = 5,
) -> None:
    """Show a feature frame's manifest and its last rows."""
    from features.build import FeatureStore
    from pipelines.config import dprm_home

    fs = FeatureStore(dprm_home() / "features")
    man = fs.manifest(dataset, freq)
    frame = fs.read(dataset, freq, [symbol] if symbol else None)
    con = _console()
    con.print(f"[bold]{dataset}[/] {freq}: {len(frame):,} rows, {len(man['columns'])} columns, "
              f"feature set {man['feature_set_version']}, input {man['input_fingerprint']}")
    con.print(f"rv source: {man['rv_source']}")
    con.print(f"columns: {', '.join(man['columns'])}")
    with __import__("pandas").option_context("display.width", 200, "display.max_columns", 12):
        con.print(frame.tail(rows).T.to_string())
    con.print(f"path: {fs.path(dataset, freq)}")


# ---- evaluate -----------------------------------------------------------------------------
@app.command("evaluate")
@clean_errors
def evaluate(
    data: Annotated[str, typer.Option("--data", help="Ingested dataset name, or a file/folder to ingest.")],
    target: Annotated[str | None, typer.Option(help="volatility or correlation.")] = None,
    freq: Annotated[str | None, typer.Option(help="Bar length: 1D, 1h, 5min.")] = None,
    grid: Annotated[str | None, typer.Option(help="Sampling grid of realized measures (e.g. 1min).")] = None,
    horizons: Annotated[str | None, typer.Option(help="Comma-separated horizons, e.g. 1,5.")] = None,
    start: Annotated[str | None, typer.Option(help="First forecast origin (date).")] = None,
    end: Annotated[str | None, typer.Option(help="Last forecast origin (date).")] = None,
    window: Annotated[int | None, typer.Option(help="Estimation window (observations).")] = None,
    models: Annotated[str | None, typer.Option(
        help="Comma-separated models: any of the ladder, plus the learned lgbm, har_boost, qlike_combo.")] = None,
    config: ConfigOpt = None,
) -> None:
    """Walk-forward evaluation of every model against the baseline ladder; prints the comparison."""
    from features.store import DataStore
    from pipelines.config import EvaluateConfig, dprm_home, load_config
    from pipelines.steps import evaluate as run_eval
    from pipelines.steps import resolve_dataset

    hz = tuple(int(h) for h in horizons.split(",")) if horizons else None
    ms = tuple(m.strip() for m in models.split(",")) if models else None
    cfg = load_config(EvaluateConfig, config, "evaluate", target=target, freq=freq, grid=grid, horizons=hz,
                      start=start, end=end, window=window, models=ms)
    home = dprm_home()
    with _console().status("resolving data"):
        ds = resolve_dataset(DataStore(home / "data"), data)
    if cfg.target == "correlation":
        from pipelines.steps import evaluate_correlation

        with _console().status(f"evaluating correlation models on {ds}"):
            result, out = evaluate_correlation(home, ds, cfg)
    else:
        with _console().status(f"walk-forward evaluation of the ladder on {ds} ({cfg.freq})"):
            result, out = run_eval(home, ds, cfg)
    if cfg.target == "correlation":
        _print_corr_evaluation(result, ds, cfg)
    else:
        _print_evaluation(result, ds, cfg)
    _console().print(f"wrote {out}")


def _print_corr_evaluation(result: Any, dataset: str, cfg: Any) -> None:
    from rich.table import Table

    s = result.summary()
    t = Table(title=f"{dataset} {cfg.freq}: correlation models (Stein loss on the covariance with a "
                    f"common vol forecast; GMV = realized variance of the minimum-variance portfolio)")
    for c in ("h", "model", "n", "Frobenius", "Stein", "vs EWMA", "GMV ratio", "Mahalanobis",
              "PSD", "DM p", "MCS"):
        t.add_column(c, justify="left" if c == "model" else "right")
    for r in s.sort_values(["horizon", "stein_qlike"]).itertuples(index=False):
        t.add_row(str(r.horizon), str(r.model_id), f"{int(r.n):,}", f"{r.frobenius:.3f}",
                  f"{r.stein_qlike:.3f}", f"{r.stein_diff:+.3f}", f"{r.gmv_ratio:.3f}",
                  f"{r.mahalanobis_ratio:.3f}", f"{r.psd_share:.0%}",
                  f"{r.dm_pvalue:.3f}" if r.dm_pvalue == r.dm_pvalue else "-",
                  "yes" if r.in_mcs else "no")
    _console().print(t)


def _print_evaluation(result: Any, dataset: str, cfg: Any) -> None:
    from rich.table import Table

    from pipelines.report import summary_table

    targets = ["realized"] + (["truth"] if "truth" in set(result.losses["target"]) else [])
    for tgt in targets:
        s = summary_table(result, tgt)
        t = Table(title=f"{dataset} {cfg.freq}: QLIKE vs {tgt} (ratio to the best baseline; "
                        f"DM p two-sided vs it; 90% MCS)")
        for c in ("symbol", "h", "model", "n", "QLIKE", "ratio", "QLIKE stress", "DM p", "MCS"):
            t.add_column(c, justify="left" if c in ("symbol", "model") else "right")
        for r in s.itertuples(index=False):
            t.add_row(str(r.symbol), str(r.horizon), str(r.model_id), f"{int(r.n):,}", f"{r.qlike:.4f}",
                      f"{r.qlike_ratio:.3f}", f"{r.qlike_stressed:.3f}" if r.qlike_stressed == r.qlike_stressed else "-",
                      f"{r.dm_pvalue:.3f}" if r.dm_pvalue == r.dm_pvalue else "-",
                      "yes" if r.in_mcs else "no")
        _console().print(t)
    if result.skipped:
        for m, why in result.skipped.items():
            _console().print(f"[yellow]skipped {m}: {why}[/]")
    _console().print(f"configurations evaluated: {result.n_configurations}")


# ---- models (registry) -------------------------------------------------------------------
def _registry_home():
    from pipelines.config import dprm_home

    return dprm_home()


def _model_data(data: str, freq: str):
    """The valid rows of a dataset's feature frame (what the gate re-evaluates on)."""
    from features.build import FeatureStore
    from features.store import DataStore
    from pipelines.config import FeaturesConfig
    from pipelines.steps import build_features, resolve_dataset

    home = _registry_home()
    ds = resolve_dataset(DataStore(home / "data"), data)
    build_features(home, ds, FeaturesConfig(freq=freq))
    frame = FeatureStore(home / "features").read(ds, freq)
    return frame[frame["valid"].astype(bool)].reset_index(drop=True)


@models_app.command("list")
@clean_errors
def models_list() -> None:
    """List registered versions of the forecaster with aliases and gate status."""
    from rich.table import Table

    from models.registry import list_versions

    df = list_versions(home=_registry_home())
    if df.empty:
        _console().print("no registered versions; run `dprm train` first")
        return
    t = Table(title="dprm-forecaster versions")
    for c in df.columns:
        t.add_column(str(c))
    for row in df.itertuples(index=False):
        t.add_row(*[str(v) if v is not None else "" for v in row])
    _console().print(t)


@models_app.command("show")
@clean_errors
def models_show(version: Annotated[str, typer.Argument(help="Version number or alias (champion, challenger).")]) -> None:
    """Show one version: parameters, data fingerprint, evaluation, gate decision."""
    import json

    from models.registry import model_ref, show_version

    home = _registry_home()
    v = version if version.isdigit() else model_ref(version, home=home).version
    _console().print_json(json.dumps(show_version(v, home=home), default=str))


@models_app.command("promote")
@clean_errors
def models_promote(
    version: Annotated[str, typer.Argument(help="Version to promote (number or 'challenger').")],
    data: Annotated[str | None, typer.Option(help="Dataset the gate re-evaluates on (required for auto).")] = None,
    freq: Annotated[str, typer.Option(help="Frequency of that data.")] = "1D",
    mode: Annotated[str, typer.Option(help="auto (the gate decides) or manual (a named approver).")] = "auto",
    approver: Annotated[str | None, typer.Option(help="Who approves (required for manual).")] = None,
    reason: Annotated[str, typer.Option(help="Why (recorded in the promotion log).")] = "",
) -> None:
    """Promote a version to champion through the gate; every alias move is logged."""
    from models.registry import model_ref, promote

    home = _registry_home()
    v = version if version.isdigit() else model_ref(version, home=home).version
    frame = _model_data(data, freq) if data else None
    res = promote(v, home=home, mode=mode, approver=approver, reason=reason, data=frame)
    _print_gate(res)
    if not res.promoted:
        raise typer.Exit(code=1)


def _print_gate(res: Any) -> None:
    from rich.table import Table

    con = _console()
    if res.decision is not None:
        t = Table(title=f"promotion gate for version {res.version} "
                        f"({res.decision.n_origins} common origins {res.decision.origins_start} .. "
                        f"{res.decision.origins_end})")
        for c in ("check", "passed", "value", "threshold", "detail"):
            t.add_column(c)
        for c in res.decision.checks:
            t.add_row(c.name, {True: "yes", False: "NO", None: "skipped"}[c.passed],
                      "" if c.value is None else f"{c.value:.4g}",
                      "" if c.threshold is None else f"{c.threshold:.4g}", c.detail)
        con.print(t)
    if res.promoted:
        con.print(f"[green]version {res.version} is now champion[/] (was {res.previous_champion})")
    else:
        con.print(f"[red]version {res.version} not promoted[/]: "
                  f"{res.decision.reason if res.decision else res.log_entry.get('reason')}")


@models_app.command("rollback")
@clean_errors
def models_rollback(
    approver: Annotated[str, typer.Option(help="Who decides (recorded).")],
    reason: Annotated[str, typer.Option(help="Why (recorded).")],
    to_version: Annotated[str | None, typer.Option(help="Target version (default: the previous champion).")] = None,
) -> None:
    """Move the champion alias back to the previous champion (or a given version)."""
    from models.registry import rollback

    res = rollback(home=_registry_home(), approver=approver, reason=reason, to_version=to_version)
    _print_gate(res)


# ---- the forecasting cycle (Prefect flows) ---------------------------------------------------
def _print_flow(title: str, out: dict) -> None:
    import json

    con = _console()
    con.rule(title)
    con.print_json(json.dumps(out, default=str))


@app.command("train")
@clean_errors
def train(
    dataset: Annotated[str | None, typer.Option(help="Dataset (default: embedded).")] = None,
    freq: Annotated[str | None, typer.Option(help="Frequency of the feature rows.")] = None,
    config: ConfigOpt = None,
) -> None:
    """Walk-forward evaluate, log to MLflow, register a challenger and try the promotion gate
    (the `train` Prefect flow)."""
    from pipelines.config import load_config
    from pipelines.flow_config import TrainFlowConfig
    from pipelines.flows import run_train

    cfg = load_config(TrainFlowConfig, config, "train", dataset=dataset, freq=freq)
    with _console().status("running the train flow"):
        out = run_train(cfg)
    _print_flow("train", out)
    if out.get("state") not in (None, "Completed"):
        raise typer.Exit(code=1)


@app.command("forecast")
@clean_errors
def forecast(
    dataset: Annotated[str | None, typer.Option(help="Dataset (default: embedded).")] = None,
    freq: Annotated[str | None, typer.Option(help="Frequency of the feature rows.")] = None,
    config: ConfigOpt = None,
) -> None:
    """Load the champion by alias, roll it forward on the latest data, write the forecast table."""
    from pipelines.config import load_config
    from pipelines.flow_config import ForecastFlowConfig
    from pipelines.flows import run_forecast

    cfg = load_config(ForecastFlowConfig, config, "forecast", dataset=dataset, freq=freq)
    with _console().status("running the forecast flow"):
        out = run_forecast(cfg)
    _print_flow("forecast", out)
    if out.get("state") not in (None, "Completed"):
        raise typer.Exit(code=1)


@app.command("monitor")
@clean_errors
def monitor(
    dataset: Annotated[str | None, typer.Option(help="Dataset (default: embedded).")] = None,
    freq: Annotated[str | None, typer.Option(help="Frequency of the feature rows.")] = None,
    now: Annotated[str | None, typer.Option(
        help="Clock for freshness: a UTC time, or 'data' for the data's end (replaying history); "
             "default: the wall clock.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    config: ConfigOpt = None,
) -> None:
    """Check the champion on out-of-sample forecasts (QLIKE vs the best baseline, Mincer-Zarnowitz
    slope, coverage, drift of log(realized/forecast)) and the feed (freshness of the latest live
    row). Exit 0: no breach; 1: a breach (one line per breached check on stderr); 2: bad input."""
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "CRITICAL")  # the lines below say it all
    from rich.console import Console

    from pipelines.config import load_config
    from pipelines.flow_config import MonitorFlowConfig
    from pipelines.flows import run_monitor

    cfg = load_config(MonitorFlowConfig, config, "monitor", dataset=dataset, freq=freq, now=now)
    with _console().status("running the monitor flow"):
        out = run_monitor(cfg)
    report = out["report"]
    if as_json:
        import json

        _console().print_json(json.dumps(report, default=str))
    else:
        _print_monitor(cfg, out)
    if report["status"] != "ok":
        err = Console(stderr=True, highlight=False, soft_wrap=True)
        for line in out.get("breach_lines", []):
            err.print(f"[bold red]breach:[/] {line}")
        raise typer.Exit(code=1)


def _print_monitor(cfg: Any, out: dict) -> None:
    """The checks as an 80-column table (details of breaches go to stderr, one line each)."""
    from rich.table import Table

    from models.monitoring import Check

    report = out["report"]
    ctx = report.get("context", {})
    con = _console()
    status = "OK" if report["status"] == "ok" else "BREACH"
    con.print(
        f"monitor {cfg.dataset}/{cfg.freq}: [bold]{status}[/] "
        f"({report['n_breaches']} breach(es) of {report['n_checks']} checks); "
        f"{ctx.get('champion', '')}",
        highlight=False,
    )
    table = Table(box=None, pad_edge=False)
    for col in ("check", "symbol", "value", "limit", "result"):
        table.add_column(col, overflow="fold")
    for c in report["checks"]:
        value = c["value"]
        value = float("nan") if value is None else float(value)
        chk = Check(c["name"], c["symbol"], value, c["threshold"], c["breached"], c["detail"],
                    c.get("unit", ""))
        table.add_row(chk.name, chk.symbol or "all", chk.value_text, chk.threshold,
                      "[bold red]BREACH[/]" if chk.breached else "ok")
    con.print(table)
    con.print(f"report: {out.get('markdown_path', '')}", highlight=False, soft_wrap=True)


@app.command("deploy")
@clean_errors
def deploy(
    work_pool: Annotated[str | None, typer.Option(help="Deploy to this process work pool instead of serving.")] = None,
    config: ConfigOpt = None,
) -> None:
    """Create the cron deployments (retrain daily, forecast hourly, monitor daily) on the Prefect
    server at PREFECT_API_URL; without --work-pool, serve them from this process."""
    import os

    from pipelines.config import load_config
    from pipelines.flow_config import DeployConfig

    if not os.environ.get("PREFECT_API_URL"):
        _fail("PREFECT_API_URL is not set: schedules need a running `prefect server start` "
              "(Prefect's temporary local server runs no schedules)")
    from pipelines.deploy import deploy as do_deploy
    from pipelines.deploy import deployment_specs

    cfg = load_config(DeployConfig, config, "deploy")
    for spec in deployment_specs(cfg):
        _console().print(f"{spec.get('name')}: cron '{spec.get('cron')}' ({spec.get('timezone')})")
    if work_pool is None:
        _console().print("serving the deployments from this process (Ctrl-C to stop)")
    names = do_deploy(cfg, work_pool=work_pool, serve=work_pool is None)
    _console().print(f"deployments: {', '.join(names)}")


# ---- portfolio ----------------------------------------------------------------------------
def _pairs(values: list[str] | None, option: str) -> dict[str, float]:
    """``U=R`` options into a dict (ConfigError naming the option and value otherwise)."""
    import math

    from features.errors import ConfigError

    out: dict[str, float] = {}
    for v in values or []:
        key, sep, num = v.partition("=")
        try:
            val = float(num)
        except ValueError:
            val = math.nan
        if not sep or not key.strip() or not math.isfinite(val):
            raise ConfigError(f"{option} must be UNDERLYING=NUMBER such as SP500=0.04. Got {v!r} instead.")
        out[key.strip().upper()] = val
    return out


@portfolio_app.command("show")
@clean_errors
def portfolio_show(
    file: Annotated[Path, typer.Argument(help="Portfolio file (.csv or .json).")],
    data: Annotated[str, typer.Option("--data", help="Dataset of the canonical store.")] = "sim",
    as_of: Annotated[str | None, typer.Option("--as-of", help="Market state time (UTC; default: "
                                              "the dataset's last timestamp).")] = None,
    rate: Annotated[list[str] | None, typer.Option("--rate", help="U=R: rate of a non-crypto "
                                                   "underlying (repeatable).")] = None,
    dividend_yield: Annotated[list[str] | None, typer.Option(
        "--dividend-yield", help="U=Q: dividend yield of an equity index (repeatable).")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """List a portfolio's positions, parsed instruments, prices found and failures."""
    import json

    from features.errors import Failure
    from pipelines.market import (
        MarketStateConfig,
        build_market_state,
        dataset_end,
        read_portfolio,
    )

    store = _store()
    rates, yields = _pairs(rate, "--rate"), _pairs(dividend_yield, "--dividend-yield")
    t = dataset_end(store, data) if as_of is None else as_of
    pf = read_portfolio(file, t)  # first: a bad file fails before any market data is read
    # the market state of the portfolio's underlyings only (one smile fit per underlying)
    unds = tuple(sorted({p.instrument.underlying for p in pf.positions}))
    cfg = MarketStateConfig(rates=rates, dividend_yields=yields, underlyings=unds)
    market = build_market_state(store, data, t, cfg)
    prices = {p.id: market.price(p.instrument) for p in pf.positions}
    unds = sorted({p.instrument.underlying for p in pf.positions})
    market_failures = [f for u in unds for f in market.failures_for(u)]
    if json_out:
        doc = {"portfolio": pf.to_dict(),
               "prices": {k: v.to_dict() for k, v in prices.items()},
               "market": {"as_of": market.as_of.isoformat(), "source": market.source,
                          "failures": [f.to_dict() for f in market_failures]}}
        typer.echo(json.dumps(doc, indent=2, default=str))
        return
    from rich.table import Table

    con = _console()
    con.print(f"{pf.name}: {len(pf.positions)} position(s) loaded, {len(pf.failures)} failed; "
              f"market {market.source} at {market.as_of:%Y-%m-%d %H:%M} UTC")
    t = Table(box=None, pad_edge=False, header_style="bold")
    for col, just in (("id", "left"), ("instrument", "left"), ("type", "left"),
                      ("expiry", "left"), ("qty", "right"), ("entry", "right"), ("price", "right")):
        t.add_column(col, justify=just, overflow="fold")
    for p in pf.positions:
        inst = p.instrument
        kind = type(inst).__name__.lower()[:4] + ("/inv" if inst.inverse else "/lin")
        q = prices[p.id]
        px = "-" if isinstance(q, Failure) else f"{q.value:.6g} {q.unit}"
        t.add_row(p.id[:12], inst.name, kind,
                  "" if inst.expiry is None else f"{inst.expiry:%Y-%m-%d}", f"{p.quantity:g}",
                  "" if p.entry_price is None else f"{p.entry_price:g}", px)
    con.print(t)
    found = [(k, v) for k, v in prices.items() if not isinstance(v, Failure)]
    if found:
        con.print("[bold]price sources[/]")
        for k, v in found:
            con.print(f"  {k}: {v.source} @ {v.ts:%Y-%m-%d %H:%M}", highlight=False)
    bad = [*pf.failures, *(v for v in prices.values() if isinstance(v, Failure))]
    con.print(f"[bold]failures[/] ({len(bad)})" + ("" if bad else ": none"))
    for f in bad:
        con.print(f"  {f}", highlight=False)
    if market_failures:
        con.print(f"market-state notes for {', '.join(unds)} ({len(market_failures)}):")
        for f in market_failures:
            con.print(f"  {f}", highlight=False, style="dim")


# ---- implied-volatility surface ------------------------------------------------------------
@app.command("surface")
@clean_errors
def surface(
    data: Annotated[str, typer.Option("--data", help="Dataset with an options table, or a file/folder of option snapshots.")],
    as_of: Annotated[str | None, typer.Option("--as-of", help="Timestamp (UTC); default: each underlying's latest snapshot.")] = None,
    underlying: Annotated[str | None, typer.Option(help="Only this underlying (BTC, ETH).")] = None,
    forward: Annotated[str, typer.Option(help="Forward source: auto, parity or underlying.")] = "auto",
    dvol: Annotated[str | None, typer.Option(help="DVOL dataset or file (default: the data's own, else DPRM_DATA_DIR's).")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Fit a raw-SVI smile per expiry, check butterfly/calendar arbitrage, print the fit, plot it."""
    import json

    from pipelines.config import dprm_home
    from pipelines.surface import surface_report

    rep = surface_report(data, home=dprm_home(), as_of=as_of, underlying=underlying,
                         forward_source=forward, dvol=dvol)
    if json_out:
        typer.echo(json.dumps(rep.to_dict(), indent=1, default=str))
        return
    _print_surface(rep)


def _print_surface(rep: Any) -> None:
    from rich.table import Table

    con = _console()
    con.print("implied-volatility smiles (raw SVI), per expiry", highlight=False)
    con.print(f"data: {rep.data}", highlight=False, soft_wrap=True)
    src = {"underlying": "fut", "parity": "pcp", "parity (interpolated)": "pcp*"}
    for u in rep.underlyings:
        d = u.to_dict()
        head = f"[bold]{u.underlying}[/] chain"
        if u.snapshot is not None:
            head += f" at {u.snapshot:%Y-%m-%d %H:%M:%S} UTC"
        con.print(head, highlight=False)
        if u.surface is not None and u.surface.slices:
            t = Table(box=None, padding=(0, 1), header_style="bold")
            for c in ("expiry", "days", "forward", "fwd", "n", "rmse vp", "in %", "all %",
                      "atm %", "bfly", "cal"):
                t.add_column(c, justify="left" if c in ("expiry", "fwd") else "right")
            for s in u.surface.slices:
                pct = "-" if s.target != "bid_ask" else f"{s.inside_pct:.0f}"
                allp = "-" if s.target != "bid_ask" else f"{s.inside_all_pct:.0f}"
                cal = "-" if s.calendar is None else ("ok" if s.calendar.ok else "ARB")
                t.add_row(f"{s.expiry:%d%b%y}".upper(), f"{s.t_yr * 365:.1f}", f"{s.forward:,.1f}",
                          src.get(s.forward_source, s.forward_source), str(s.n_quotes),
                          f"{s.rmse_vol_pts:.2f}", pct, allp, f"{float(s.vol(0.0)) * 100:.1f}",
                          "ok" if s.butterfly.ok else "ARB", cal)
            con.print(t)
            target = u.surface.slices[0].target
            if target == "bid_ask" and d["inside_pct"] is not None:
                con.print(f"fitted prices inside bid-ask: {d['inside_pct']:.1f}% of "
                          f"{d['n_quotes']} strikes (rmse vs mid IV)", highlight=False)
            else:
                con.print(f"marks only: fit error in vol points against the venue's mark IVs "
                          f"({d['n_quotes']} quotes)", highlight=False)
            bad: dict[str, int] = {}
            for s in u.surface.slices:
                for f in s.iv_failures:
                    bad[f.reason.value] = bad.get(f.reason.value, 0) + 1
            if bad:
                con.print(f"{sum(bad.values())} quote prices have no implied vol ("
                          + ", ".join(f"{r}: {c}" for r, c in sorted(bad.items()))
                          + ")", style="dim", highlight=False)
            con.print(f"{d['n_priced_off_surface']} options not fitted (ITM or no usable quote) "
                      "priced off the surface", style="dim", highlight=False)
            con.print("fwd: fut = the chain's future, pcp = put-call parity (* interpolated)",
                      style="dim", highlight=False)
            con.print("bfly: g(k) >= 0; cal: w(k) >= the previous expiry's", style="dim",
                      highlight=False)
        if isinstance(d["dvol"], dict) and "vol" in d["dvol"]:
            con.print(f"DVOL {d['dvol']['vol'] * 100:.1f}% ({d['dvol']['symbol']}, day closing "
                      f"{d['dvol']['ts'][:16].replace('T', ' ')} UTC)", highlight=False)
        for f in d["failures"] + ([d["dvol"]] if isinstance(d["dvol"], dict) and "reason" in d["dvol"] else []):
            con.print(f"[yellow]{f['subject']}: {f['message']} [{f['reason']}][/]", highlight=False)
        if u.png is not None:
            con.print(f"wrote {u.png}", highlight=False, soft_wrap=True)


# ---- demo ---------------------------------------------------------------------------------
@app.command("demo")
@clean_errors
def demo(config: ConfigOpt = None) -> None:
    """Run the whole pipeline on the embedded default data (arch's daily indices + the simulator)."""
    from pipelines.config import DemoConfig, load_config
    from pipelines.steps import run_demo

    # Prefect's per-task INFO lines would bury the demo's tables; warnings and errors still show
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    cfg = load_config(DemoConfig, config)
    t0 = time.perf_counter()
    run_demo(cfg, console=_console())
    _console().print(f"demo finished in {time.perf_counter() - t0:.1f} s")


def main() -> None:  # pragma: no cover - console entry
    """Entry point for ``python -m pipelines.cli``."""
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
