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
    """Read raw files into the canonical store (streaming; raw files are never modified)."""
    from features.ingest import ingest_file
    from features.readers import list_sources
    from pipelines.config import IngestConfig, load_config

    cfg = load_config(IngestConfig, config, "ingest", force=force or None)
    options: dict[str, Any] = {}
    if symbol:
        options["symbol"] = symbol
    if mapping is not None:
        import tomllib

        options.update(tomllib.loads(mapping.read_text()))
    files: list[tuple[Path, str | None]] = []
    for p in paths:
        if not p.exists():
            raise FileNotFoundError(2, "No such file or directory", str(p))
        if p.is_dir():
            for f, detected, reason in list_sources(p):
                if detected is None:
                    _console().print(f"[dim]skip {f}: {reason}[/]")
                else:
                    files.append((f, detected))
        else:
            files.append((p, fmt))
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


def _print_ingest(reports: list, store: Any) -> None:
    from rich.table import Table

    t = Table(title="Ingested")
    for c in ("source", "dataset", "tables", "rows read", "rows added", "rejected", "duplicates",
              "out of order", "note"):
        t.add_column(c, justify="right" if c.startswith(("rows", "rej", "dup", "out")) else "left")
    for r in reports:
        rej = sum(c.counts.get(k, 0) for c in r.tables.values()
                  for k in ("non_finite", "non_positive", "negative"))
        dup = sum(c.counts.get("duplicates", 0) + c.counts.get("key_conflicts", 0)
                  for c in r.tables.values())
        ooo = sum(c.counts.get("out_of_order", 0) for c in r.tables.values())
        t.add_row(Path(r.source).name, r.dataset, ",".join(sorted(r.tables)), f"{r.rows_read:,}",
                  f"{r.rows_added:,}", f"{rej:,}", f"{dup:,}", f"{ooo:,}",
                  "already ingested: nothing added" if r.skipped else "")
    con = _console()
    con.print(t)
    for ds in sorted({r.dataset for r in reports}):
        con.print(f"wrote {store.path(ds)}")


@data_app.command("validate")
@clean_errors
def data_validate(
    datasets: Annotated[list[str] | None, typer.Argument(help="Datasets to validate (default: all).")] = None,
) -> None:
    """Re-check stored datasets: print every rule's count and write validation.json beside the data."""
    from features.ingest import validate_dataset

    store = _store()
    names = datasets or store.datasets()
    if not names:
        _fail(f"no datasets in {store.root}; run `dprm data ingest PATH` or `dprm data simulate` first")
    results = {}
    with _progress() as prog:
        task = prog.add_task("validating", total=len(names), rows=0)
        for ds in names:
            results[ds] = validate_dataset(store, ds)
            prog.update(task, advance=1, rows=sum(c.rows_out for c in results[ds].values()))
    _print_validation(results)
    for ds in names:
        _console().print(f"wrote {store.path(ds) / 'validation.json'}")


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


def _probe_tracking() -> None:
    """A remote ``MLFLOW_TRACKING_URI`` that does not answer fails at once, before the heavy
    imports (one bounded request, the same probe as :func:`models.registry.init_store`)."""
    uri = os.environ.get("MLFLOW_TRACKING_URI", "")
    if not uri.startswith(("http://", "https://")):
        return
    import requests

    try:
        requests.get(uri.rstrip("/") + "/health", timeout=5)
    except requests.RequestException as exc:
        _fail(f"the MLflow tracking server {uri} is unreachable ({type(exc).__name__}, "
              "timeout 5 s); start it or fix MLFLOW_TRACKING_URI")


def registry_errors(fn: F) -> F:
    """Probe a remote tracking server first (:func:`_probe_tracking`); one line and exit code 2
    for a :class:`~features.errors.RegistryError` (an unreachable, corrupt or inconsistent
    registry), like every other bad-input error."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from features.errors import RegistryError

        _probe_tracking()
        try:
            return fn(*args, **kwargs)
        except RegistryError as exc:
            if os.environ.get("DPRM_DEBUG"):
                raise
            _fail(str(exc))

    return wrapper  # type: ignore[return-value]


ModelOpt = Annotated[str | None, typer.Option(
    "--model", help="Registered model (default: the dataset's own; see `dprm models list`).")]


def _model_name(home: Path, model: str | None) -> str:
    """``--model``, else the only registered model; several need ``--model`` (ConfigError)."""
    from features.errors import ConfigError
    from models.registry import MODEL_NAME, registered_model_names

    if model:
        return model
    names = registered_model_names(home)
    if len(names) > 1:
        raise ConfigError(f"{len(names)} registered models ({', '.join(names)}): pass --model NAME")
    return names[0] if names else MODEL_NAME


def _model_data(dataset: str, freq: str):
    """The valid rows of a dataset's feature frame (what the gate re-evaluates on)."""
    from features.build import FeatureStore
    from pipelines.config import FeaturesConfig
    from pipelines.steps import build_features

    home = _registry_home()
    build_features(home, dataset, FeaturesConfig(freq=freq))
    frame = FeatureStore(home / "features").read(dataset, freq)
    return frame[frame["valid"].astype(bool)].reset_index(drop=True)


@models_app.command("list")
@clean_errors
@registry_errors
def models_list(model: ModelOpt = None) -> None:
    """List every registered model's versions with aliases, gate status and training data
    (the registry is cross-checked with the promotion log first)."""
    from rich.table import Table

    from models.registry import list_versions, verify_registry

    home = _registry_home()
    verify_registry(home, model)
    df = list_versions(home=home, name=model)
    if df.empty:
        _console().print("no registered versions; run `dprm train` first")
        return
    t = Table(title="registered models")
    for c in ("model", "v", "aliases", "status", "gate", "primary", "data", "created"):
        t.add_column(c, justify="right" if c == "v" else "left")
    for r in df.itertuples(index=False):
        data = f"{r.dataset}/{r.freq}" if r.dataset else ""
        t.add_row(r.model, str(r.version), r.aliases, r.status, r.gate_status, r.primary, data,
                  str(r.created_ts)[:16])
    _console().print(t)


@models_app.command("show")
@clean_errors
@registry_errors
def models_show(
    version: Annotated[str, typer.Argument(help="Version number or alias (champion, challenger).")],
    model: ModelOpt = None,
) -> None:
    """Show one version: parameters, data fingerprint, evaluation, gate decision."""
    import json

    from models.registry import model_ref, show_version, verify_registry

    home = _registry_home()
    name = _model_name(home, model)
    verify_registry(home, name)
    v = version if version.isdigit() else model_ref(version, home=home, name=name).version
    _console().print_json(json.dumps(show_version(v, home=home, name=name), default=str))


@models_app.command("promote")
@clean_errors
@registry_errors
def models_promote(
    version: Annotated[str, typer.Argument(help="Version to promote (number or 'challenger').")],
    data: Annotated[str | None, typer.Option(help="Dataset the gate re-evaluates on (required for auto).")] = None,
    freq: Annotated[str | None, typer.Option(
        help="Frequency of that data (default: the version's training frequency, else 1D).")] = None,
    mode: Annotated[str, typer.Option(help="auto (the gate decides) or manual (a named approver).")] = "auto",
    approver: Annotated[str | None, typer.Option(help="Who approves (required for manual).")] = None,
    reason: Annotated[str, typer.Option(help="Why (recorded in the promotion log).")] = "",
    model: ModelOpt = None,
) -> None:
    """Promote a version to champion through the gate; every alias move is logged."""
    from models.registry import model_ref, promote, show_version
    from pipelines.flow_config import model_name_for

    home = _registry_home()
    ds = None
    if data:
        from features.store import DataStore
        from pipelines.steps import resolve_dataset

        ds = resolve_dataset(DataStore(home / "data"), data)
    name = model or (model_name_for(ds) if ds else _model_name(home, None))
    v = version if version.isdigit() else model_ref(version, home=home, name=name).version
    frame = None
    if ds:
        tags = show_version(v, home=home, name=name)["tags"]
        frame = _model_data(ds, freq or tags.get("dprm.freq") or "1D")
    res = promote(v, home=home, mode=mode, approver=approver, reason=reason, data=frame, name=name)
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
@registry_errors
def models_rollback(
    approver: Annotated[str, typer.Option(help="Who decides (recorded).")],
    reason: Annotated[str, typer.Option(help="Why (recorded).")],
    to_version: Annotated[str | None, typer.Option(help="Target version (default: the previous champion).")] = None,
    model: ModelOpt = None,
) -> None:
    """Move the champion alias back to the previous champion (or a given version)."""
    from models.registry import rollback

    home = _registry_home()
    res = rollback(home=home, approver=approver, reason=reason, to_version=to_version,
                   name=_model_name(home, model))
    _print_gate(res)


# ---- the forecasting cycle (Prefect flows) ---------------------------------------------------
def _print_flow(title: str, out: dict) -> None:
    import json

    con = _console()
    con.rule(title)
    con.print_json(json.dumps(out, default=str))


def _preflight(cfg: Any, step: str) -> None:
    """Check the registry before a flow starts (seconds, not the flow's start-up): reachable and
    consistent with the promotion log, and the model fits the data (train: the model holds no
    other dataset's versions; forecast/monitor: the champion was trained on this data)."""
    from models.registry import verify_registry
    from pipelines import cycle
    from pipelines.config import dprm_home

    home = dprm_home()
    verify_registry(home, cfg.registered_model)
    if step == "train":
        cycle.check_train_target(home, cfg)
    elif step == "monitor" or cycle.forecast_source(home, cfg.registered_model)["source"] == "champion":
        cycle.check_champion(home, cfg)


@app.command("train")
@clean_errors
@registry_errors
def train(
    dataset: Annotated[str | None, typer.Option(help="Dataset (default: embedded).")] = None,
    freq: Annotated[str | None, typer.Option(help="Frequency of the feature rows.")] = None,
    model: ModelOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Walk-forward evaluate, log to MLflow, register a challenger and try the promotion gate
    (the `train` Prefect flow). The model is the dataset's own unless --model names another."""
    from pipelines.config import load_config
    from pipelines.flow_config import TrainFlowConfig

    cfg = load_config(TrainFlowConfig, config, "train", dataset=dataset, freq=freq,
                      model_name=model)
    if cfg.register_model:
        _preflight(cfg, "train")
    from pipelines.flows import run_train

    with _console().status("running the train flow"):
        out = run_train(cfg)
    _print_flow("train", out)
    if out.get("state") not in (None, "Completed"):
        raise typer.Exit(code=1)


@app.command("forecast")
@clean_errors
@registry_errors
def forecast(
    dataset: Annotated[str | None, typer.Option(help="Dataset (default: embedded).")] = None,
    freq: Annotated[str | None, typer.Option(help="Frequency of the feature rows.")] = None,
    model: ModelOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Load the champion of the dataset's model (or --model) by alias, roll it forward on the
    latest data, write the forecast table."""
    from pipelines.config import load_config
    from pipelines.flow_config import ForecastFlowConfig

    cfg = load_config(ForecastFlowConfig, config, "forecast", dataset=dataset, freq=freq,
                      model_name=model)
    _preflight(cfg, "forecast")
    from pipelines.flows import run_forecast

    with _console().status("running the forecast flow"):
        out = run_forecast(cfg)
    _print_flow("forecast", out)
    if out.get("state") not in (None, "Completed"):
        raise typer.Exit(code=1)


@app.command("monitor")
@clean_errors
@registry_errors
def monitor(
    dataset: Annotated[str | None, typer.Option(help="Dataset (default: embedded).")] = None,
    freq: Annotated[str | None, typer.Option(help="Frequency of the feature rows.")] = None,
    model: ModelOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Check the champion of the dataset's model (or --model): rolling QLIKE vs the best
    baseline, MZ slope, coverage; and the data (drift, freshness); a breach fails the run and, if
    configured, switches to the baseline."""
    from pipelines.config import load_config
    from pipelines.flow_config import MonitorFlowConfig

    cfg = load_config(MonitorFlowConfig, config, "monitor", dataset=dataset, freq=freq,
                      model_name=model)
    _preflight(cfg, "monitor")
    from pipelines.flows import run_monitor

    with _console().status("running the monitor flow"):
        out = run_monitor(cfg)
    _print_flow("monitor", out)
    if out.get("state") not in (None, "Completed"):
        raise typer.Exit(code=1)


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


# ---- demo ---------------------------------------------------------------------------------
@app.command("demo")
@clean_errors
@registry_errors
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
