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
models_app = typer.Typer(help="The model registry (list, show, promote, rollback) and the model catalog.", no_args_is_help=True)
app.add_typer(models_app, name="models")
features_app = typer.Typer(help="The feature store: build and show feature frames.", no_args_is_help=True)
app.add_typer(features_app, name="features")
portfolio_app = typer.Typer(help="Portfolios: validate positions and price them at a market state.",
                            no_args_is_help=True)
app.add_typer(portfolio_app, name="portfolio")
account_app = typer.Typer(help="Accounts: collateral, IM/MM, status and liquidation thresholds.",
                          no_args_is_help=True)
app.add_typer(account_app, name="account")

F = TypeVar("F", bound=Callable[..., Any])


def _fail(message: str) -> None:
    """Print a one-line error and exit with code 2."""
    from rich.console import Console
    from rich.markup import escape

    Console(stderr=True).print(f"[bold red]error:[/] {escape(message)}", highlight=False,
                               soft_wrap=True)
    raise typer.Exit(code=2)


def _debug() -> bool:
    """True when tracebacks are asked for (``dprm --debug`` or ``DPRM_DEBUG=1``)."""
    return os.environ.get("DPRM_DEBUG", "").strip().lower() not in ("", "0", "false", "no")


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _print_traceback(exc: BaseException) -> None:
    import traceback

    sys.stderr.write("".join(traceback.format_exception(exc)))
    sys.stderr.flush()


def clean_errors(fn: F) -> F:
    """Run a command: a ``json_out`` argument (``--json``) sends its tables to stdout as JSON.

    Map errors to exit codes: a :class:`~features.errors.DPRMError` (bad input, settings, data
    or state a user can fix), an invalid setting or a missing file is one line and exit 2; anything
    else is a bug: one line saying so and how to see the traceback, exit 1 (``--debug`` or
    ``DPRM_DEBUG=1`` prints the traceback, for every error)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from pydantic import ValidationError

        from features.errors import DPRMError

        _json_mode(bool(kwargs.get("json_out", False)))
        _JSON_TABLES.clear()
        try:
            out = fn(*args, **kwargs)
            _flush_json()
            return out
        except typer.Exit:
            _flush_json()
            raise
        except (typer.Abort, KeyboardInterrupt):
            raise
        except DPRMError as exc:
            if _debug():
                _print_traceback(exc)
            _fail(_one_line(exc))
        except ValidationError as exc:
            if _debug():
                _print_traceback(exc)
            err = exc.errors()[0]
            loc = ".".join(str(x) for x in err["loc"])
            _fail(f"invalid setting '{loc}': {err['msg']} (got {err.get('input')!r})")
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError) as exc:
            if _debug():
                _print_traceback(exc)
            _fail(f"{exc.strerror}: {exc.filename}")
        except Exception as exc:  # a bug: say so, keep the traceback one option away
            from rich.console import Console
            from rich.markup import escape

            if _debug():
                _print_traceback(exc)
            hint = "" if _debug() else ("; run again with `dprm --debug ...` (or DPRM_DEBUG=1) "
                                        "for the traceback and please report it")
            Console(stderr=True).print(
                f"[bold red]internal error (a bug in dprm, not in your input):[/] "
                f"{escape(type(exc).__name__ + ': ' + _one_line(exc) + hint)}",
                highlight=False, soft_wrap=True)
            raise typer.Exit(code=1) from None

    return wrapper  # type: ignore[return-value]


@app.callback()
def _main(
    debug: Annotated[bool, typer.Option(
        "--debug", help="Print the full traceback of any error (also: DPRM_DEBUG=1).")] = False,
) -> None:
    """DPRM: forecast volatility and correlation from market data; turn them into margin."""
    if debug:
        os.environ["DPRM_DEBUG"] = "1"


_JSON = {"on": False}
"""Set by a command's ``--json``: tables go to stdout as JSON, everything else to stderr."""

JsonOpt = Annotated[bool, typer.Option(
    "--json", help="Print the table(s) as JSON on stdout (messages go to stderr).")]

WIDE_COLUMNS = 120
"""Terminals at least this wide show every column; narrower ones (and pipes, 80) the essential."""


def _console():
    from rich.console import Console

    return Console(stderr=_JSON["on"])


def _json_mode(on: bool) -> None:
    _JSON["on"] = bool(on)


def _plain(value: Any) -> Any:
    """A JSON-ready value: numbers and strings as they are, timestamps ISO, NaN/None as null."""
    import math
    from datetime import date, datetime, timedelta

    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return None if math.isnan(value) else value
    if hasattr(value, "item") and not hasattr(value, "__len__"):  # numpy scalars
        return _plain(value.item())
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, timedelta):
        return str(value)
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    text = str(value)
    return None if text in ("NaT", "nan") else text


def _show_table(title: str, columns: list[tuple[str, str, str]], rows: list[dict[str, Any]],
                *, fmt: dict[str, Callable[[Any], str]] | None = None, key: str = "rows") -> None:
    """Print ``rows`` as a table readable at 80 columns, or as JSON under ``--json``.

    ``columns`` holds ``(key, header, flags)``: flags ``r`` right-justifies, ``w`` marks a column
    shown only on terminals of at least :data:`WIDE_COLUMNS` columns (``--json`` has every key of
    every row). Long cells fold onto further lines instead of being cut.
    """
    if _JSON["on"]:
        _JSON_TABLES.append({"title": title, key: [{k: _plain(v) for k, v in r.items()}
                                                   for r in rows]})
        return
    from rich.markup import escape
    from rich.table import Table

    con = _console()
    wide = con.width >= WIDE_COLUMNS
    cols = [c for c in columns if wide or "w" not in c[2]]
    t = Table(title=escape(title), title_justify="left")
    for _key, header, flags in cols:
        t.add_column(header, justify="right" if "r" in flags else "left", overflow="fold")
    fmt = fmt or {}
    for r in rows:
        t.add_row(*[escape(fmt[k](r.get(k)) if k in fmt else ("" if r.get(k) is None
                                                               else str(r.get(k))))
                    for k, _, _ in cols])
    con.print(t)
    hidden = [h for k, h, f in columns if "w" in f and not wide]
    if hidden:
        con.print(f"[dim]not shown at this width: {escape(', '.join(hidden))} "
                  f"(--json has them)[/]")


_JSON_TABLES: list[dict[str, Any]] = []

MODELS_LIST_COLUMNS = ("model", "version", "aliases", "status", "gate_status", "primary", "data",
                       "created_ts")
"""Columns of ``dprm models list`` shown at 80 columns (the others on wide terminals and in JSON)."""


def _print_frame(title: str, df: Any, essential: tuple[str, ...]) -> None:
    """A DataFrame through :func:`_show_table`: ``essential`` columns always, the rest when wide;
    timestamps to the minute."""
    import pandas as pd

    def stamp(v: Any) -> str:
        return "" if v is None or v is pd.NaT or v == "" else str(v)[:16].replace("T", " ")

    cols = [(str(c), str(c).replace("_", " "), "" if c in essential else "w") for c in df.columns]
    fmt = {str(c): stamp for c in df.columns if str(c).endswith("_ts")}
    _show_table(title, cols, df.to_dict(orient="records"), fmt=fmt)


def _flush_json() -> None:
    """Write the tables collected under ``--json`` to stdout: one object, or a list of them."""
    import json

    if not _JSON["on"] or not _JSON_TABLES:  # a command may print its own JSON (surface)
        return
    out: Any = _JSON_TABLES[0] if len(_JSON_TABLES) == 1 else list(_JSON_TABLES)
    sys.stdout.write(json.dumps(out, default=str, indent=1) + "\n")
    sys.stdout.flush()
    _JSON_TABLES.clear()


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
    symbol: Annotated[str | None, typer.Option(help="Symbol, for files that do not name it (kept as given: its calendar follows from it, e.g. DJIA or SPX on the NYSE, BTCUSDT 24/7).")] = None,
    mapping: Annotated[Path | None, typer.Option(help="TOML file of reader options: the column mapping of --format generic; interval, snapshot, ticker, date of other formats.", exists=True)] = None,
    force: Annotated[bool, typer.Option(help="Re-read sources already ingested (idempotent).")] = False,
    config: ConfigOpt = None,
    json_out: JsonOpt = False,
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
        from pipelines.config import read_toml

        options.update(read_toml(mapping, "mapping file"))
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
    if mapping is not None:
        from features.readers import check_options, detect_format

        for f, detected in files:
            check_options(detected or fmt or detect_format(f), options, origin=str(mapping))
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
    from features.validate import CLEANING_RULES

    rows = []
    for r in reports:
        rej = sum(c.counts.get(k, 0) for c in r.tables.values() for k in CLEANING_RULES)
        dup = sum(c.counts.get("duplicates", 0) + c.counts.get("key_conflicts", 0)
                  for c in r.tables.values())
        ooo = sum(c.counts.get("out_of_order", 0) for c in r.tables.values())
        rows.append({"source": Path(r.source).name, "dataset": r.dataset,
                     "tables": ",".join(sorted(r.tables)), "rows_read": r.rows_read,
                     "rows_added": r.rows_added, "rejected": rej, "duplicates": dup,
                     "out_of_order": ooo, "dropped": r.dropped(), "note": _ingest_note(r)})
    n = "{:,}".format
    _show_table("Ingested", [("source", "source", ""), ("dataset", "dataset", ""),
                             ("tables", "tables", "w"), ("rows_read", "rows read", "r"),
                             ("rows_added", "rows added", "r"), ("rejected", "rejected", "r"),
                             ("duplicates", "duplicates", "r"),
                             ("out_of_order", "out of order", "rw"), ("note", "note", "")],
                rows, fmt={k: n for k in ("rows_read", "rows_added", "rejected", "duplicates",
                                          "out_of_order")})
    con = _console()
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
    json_out: JsonOpt = False,
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
            if json_out:
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
    if json_out:
        typer.echo(json.dumps({"ok": not problems, "datasets": docs,
                               "rows": [{k: _plain(v) for k, v in r.items()}
                                        for r in _validation_rows(results)]},
                              indent=2, default=str))
    else:
        if results:
            _print_validation(results)
        for ds in results:
            _console().print(f"wrote {store.path(ds) / 'validation.json'}")
    if problems:
        if not json_out:
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


def _validation_rows(results: dict) -> list[dict[str, Any]]:
    """One row per dataset and table: rows stored, the rejecting and the flagging rules' counts."""
    from features.validate import FLAG_RULES, REJECT_RULES

    def fmt(c, rules) -> str:
        return ", ".join(f"{r}={c.counts[r]:,}" for r in rules if c.counts.get(r)) or "-"

    rows = []
    for ds, tables in results.items():
        for table, c in tables.items():
            rows.append({"dataset": ds, "table": table, "rows_stored": c.rows_out,
                         "rejected": fmt(c, REJECT_RULES), "flagged": fmt(c, FLAG_RULES),
                         "counts": dict(c.counts)})
    return rows


def _print_validation(results: dict) -> None:
    from features.validate import FLAG_RULES, REJECT_RULES

    rows = _validation_rows(results)
    _show_table("Validation: rule counts (every rule; zero counts shown as -)",
                [("dataset", "dataset", ""), ("table", "table", ""),
                 ("rows_stored", "rows stored", "r"),
                 ("rejected", "rejected or dropped at ingest", ""),
                 ("flagged", "flagged (kept)", "")], rows, fmt={"rows_stored": "{:,}".format})
    _console().print("rules: rejected " + ", ".join(REJECT_RULES) + "; flagged " + ", ".join(FLAG_RULES),
                     style="dim")


@data_app.command("simulate")
@clean_errors
def data_simulate(
    days: Annotated[int | None, typer.Option(help="Days to simulate.")] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed.")] = None,
    dataset: Annotated[str | None, typer.Option(help="Dataset name.")] = None,
    config: ConfigOpt = None,
    json_out: JsonOpt = False,
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
    json_out: JsonOpt = False,
) -> None:
    """List stored datasets: tables, symbols, rows and time spans."""
    import pandas as pd

    store = _store()
    names = datasets or store.datasets()
    if not names:
        _console().print(f"no datasets in {store.root}")
        _JSON_TABLES.append({"title": f"Datasets in {store.root}", "rows": []})
        return
    frames = [store.summary(ds) for ds in names]
    df = pd.concat(frames, ignore_index=True)
    rows = df.to_dict(orient="records")
    daily = all(pd.Timestamp(r["first"]) == pd.Timestamp(r["first"]).normalize()
                and pd.Timestamp(r["last"]) == pd.Timestamp(r["last"]).normalize()
                for r in rows if r["first"] is not None and r["last"] is not None)

    def stamp(v: Any) -> str:
        return "" if v is None else str(v)[:10] if daily else str(v)[:16].replace("T", " ")

    _show_table(f"Datasets in {store.root}",
                [("dataset", "dataset", ""), ("table", "table", ""), ("kind", "kind", "w"),
                 ("interval", "interval", "w"), ("symbol", "symbol", ""), ("rows", "rows", "r"),
                 ("first", "first (UTC)", ""), ("last", "last (UTC)", ""),
                 ("partitions", "partitions", "rw")],
                rows, fmt={"rows": "{:,}".format, "first": stamp, "last": stamp,
                           "interval": lambda v: "" if v is None or v != v else str(v)})


# ---- features -----------------------------------------------------------------------------
@features_app.command("build")
@clean_errors
def features_build(
    datasets: Annotated[list[str] | None, typer.Argument(help="Datasets (default: all ingested).")] = None,
    freq: Annotated[str | None, typer.Option(help="Bar length of the feature rows: 5min, 1h, 1D.")] = None,
    grid: Annotated[str | None, typer.Option(help="Sampling grid of realized measures.")] = None,
    config: ConfigOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Build (incrementally) the feature frames: realized measures, microstructure, HAR, targets."""
    from features.schema import DataError
    from features.store import DataStore
    from pipelines.config import FeaturesConfig, dprm_home, load_config
    from pipelines.steps import build_feature_frame

    cfg = load_config(FeaturesConfig, config, "features", freq=freq, grid=grid)
    home = dprm_home()
    names = datasets or DataStore(home / "data").datasets()
    if not names:
        _fail(f"no datasets in {home / 'data'}; run `dprm data ingest PATH` first")
    with _progress() as prog:
        task = prog.add_task("building features", total=len(names), rows=0)
        reports = []
        skipped: dict[str, str] = {}
        for ds in names:
            try:
                rep = build_feature_frame(home, ds, cfg)
            except DataError as exc:
                if datasets:  # asked for by name: an error
                    raise
                skipped[ds] = str(exc)
                prog.update(task, advance=1)
                continue
            reports.append(rep)
            prog.update(task, advance=1, rows=prog.tasks[task].fields["rows"] + rep.rows)
    rows = [{"dataset": rep.dataset, "rows": rep.rows, "columns": len(rep.columns),
             "computed": rep.base_computed, "reused": rep.base_reused,
             "written": rep.partitions_written, "unchanged": rep.partitions_unchanged,
             "rv_from": ", ".join(sorted(set(rep.rv_source.values()))), "path": str(rep.path)}
            for rep in reports]
    _show_table(f"Features ({cfg.freq})",
                [("dataset", "dataset", ""), ("rows", "rows", "r"), ("columns", "columns", "r"),
                 ("computed", "computed", "rw"), ("reused", "reused", "rw"),
                 ("written", "written", "r"), ("unchanged", "unchanged", "r"),
                 ("rv_from", "rv from", "")], rows, fmt={"rows": "{:,}".format})
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
    json_out: JsonOpt = False,
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
    tail = frame.tail(rows)
    if _JSON["on"]:
        _JSON_TABLES.append({"title": f"{dataset} {freq}", "manifest": man,
                             "rows": [{k: _plain(v) for k, v in r.items()}
                                      for r in tail.to_dict(orient="records")]})
    else:  # one line per feature, as many of the last rows as fit the terminal
        import pandas as pd

        name_w = max(len(str(c)) for c in tail.columns) + 2
        fit = max(1, (con.width - name_w) // 28)
        with pd.option_context("display.width", con.width, "display.max_columns", fit + 1,
                               "display.max_colwidth", 20):
            con.print(tail.tail(fit).T.to_string(), soft_wrap=True)
    con.print(f"path: {fs.path(dataset, freq)}")


# ---- evaluate -----------------------------------------------------------------------------
def _int_list(option: str, text: str) -> tuple[int, ...]:
    """Comma-separated positive integers of ``option``; :class:`ConfigError` naming the option."""
    from features.errors import ConfigError

    out = []
    for part in text.split(","):
        try:
            value = int(part.strip())
        except ValueError:
            raise ConfigError(f"{option} {text!r}: {part.strip()!r} is not an integer; expected "
                              "comma-separated integers >= 1, e.g. 1,5,22") from None
        if value < 1:
            raise ConfigError(f"{option} {text!r}: {value} is not >= 1; expected "
                              "comma-separated integers >= 1, e.g. 1,5,22")
        out.append(value)
    return tuple(out)


def _check_dates(start: str | None, end: str | None) -> None:
    """``--start``/``--end`` parse as dates and ``--start`` is not after ``--end``."""
    from features.errors import ConfigError
    from pipelines.config import parse_date

    def parse(option: str, text: str | None) -> Any:
        if text is None:
            return None
        ts = parse_date(text)
        if ts is None:
            raise ConfigError(f"{option} {text!r} is not a date; expected e.g. 2025-09-01")
        return ts

    lo, hi = parse("--start", start), parse("--end", end)
    if lo is not None and hi is not None and lo > hi:
        raise ConfigError(f"--start {start} is after --end {end}; expected start <= end")


@app.command("evaluate")
@clean_errors
def evaluate(
    data: Annotated[str, typer.Option("--data", help="Ingested dataset name, or a file/folder to ingest.")],
    target: Annotated[str | None, typer.Option(help="volatility or correlation.")] = None,
    freq: Annotated[str | None, typer.Option(help="Bar length: 1D, 1h, 5min.")] = None,
    grid: Annotated[str | None, typer.Option(help="Sampling grid of realized measures (e.g. 1min).")] = None,
    horizons: Annotated[str | None, typer.Option(help="Comma-separated horizons, e.g. 1,5.")] = None,
    start: Annotated[str | None, typer.Option(help="First forecast origin (date).",
                                              show_default="the data's first")] = None,
    end: Annotated[str | None, typer.Option(help="Last forecast origin (date).",
                                            show_default="the data's last")] = None,
    window: Annotated[int | None, typer.Option(help="Estimation window (observations).")] = None,
    models: Annotated[str | None, typer.Option(
        help="Comma-separated catalog models (`dprm models catalog`), e.g. log_har,lgbm,qlike_combo.",
        show_default="the ladder")] = None,
    config: ConfigOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Walk-forward evaluation of every model against the baseline ladder; prints the comparison."""
    from features.store import DataStore
    from pipelines.config import EvaluateConfig, dprm_home, load_config
    from pipelines.steps import evaluate as run_eval
    from pipelines.steps import resolve_dataset

    hz = _int_list("--horizons", horizons) if horizons else None
    ms = tuple(m.strip() for m in models.split(",")) if models else None
    _check_dates(start, end)
    cfg = load_config(EvaluateConfig, config, "evaluate", target=target, freq=freq, grid=grid, horizons=hz,
                      start=start, end=end, window=window, models=ms)
    home = dprm_home()
    with _console().status("resolving data"):
        ds = resolve_dataset(DataStore(home / "data"), data)
    import warnings

    from models.evaluation import SkippedModelWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SkippedModelWarning)  # listed after the table instead
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


def _num(spec: str) -> Callable[[Any], str]:
    """A cell formatter: ``spec`` for numbers, "-" for NaN/None."""
    return lambda v: "-" if v is None or v != v else format(v, spec)


def _print_failures(result: Any) -> None:
    """The models an evaluation skipped, each with its Failure code (JSON: a "skipped models"
    object)."""
    from rich.markup import escape

    failures = tuple(getattr(result, "failures", ()))
    if _JSON["on"]:
        _JSON_TABLES.append({"title": "skipped models",
                             "failures": [f.to_dict() for f in failures]})
        return
    for f in failures:
        _console().print(f"[yellow]skipped {escape(f.subject)} ({f.reason.value}):[/] "
                         f"{escape(f.message)}", soft_wrap=True)


def _print_corr_evaluation(result: Any, dataset: str, cfg: Any) -> None:
    s = result.summary().sort_values(["horizon", "stein_qlike"])
    rows = s.to_dict(orient="records")
    _show_table(f"{dataset} {cfg.freq}: correlation models (Stein loss on the covariance with a "
                f"common vol forecast; GMV = realized variance of the minimum-variance portfolio)",
                [("horizon", "h", "r"), ("model_id", "model", ""), ("n", "n", "r"),
                 ("frobenius", "Frobenius", "rw"), ("stein_qlike", "Stein", "r"),
                 ("stein_diff", "vs EWMA", "r"), ("gmv_ratio", "GMV ratio", "r"),
                 ("mahalanobis_ratio", "Mahalanobis", "rw"), ("psd_share", "PSD", "rw"),
                 ("dm_pvalue", "DM p", "r"), ("in_mcs", "MCS", "r")],
                rows, fmt={"n": _num(",.0f"), "frobenius": _num(".3f"), "stein_qlike": _num(".3f"),
                           "stein_diff": _num("+.3f"), "gmv_ratio": _num(".3f"),
                           "mahalanobis_ratio": _num(".3f"), "psd_share": _num(".0%"),
                           "dm_pvalue": _num(".3f"), "in_mcs": lambda v: "yes" if v else "no"})
    _print_failures(result)


def _print_evaluation(result: Any, dataset: str, cfg: Any) -> None:
    from pipelines.report import summary_table

    targets = ["realized"] + (["truth"] if "truth" in set(result.losses["target"]) else [])
    for tgt in targets:
        s = summary_table(result, tgt)
        _show_table(f"{dataset} {cfg.freq}: QLIKE vs {tgt} (ratio to the best baseline; "
                    f"DM p two-sided vs it; 90% MCS)",
                    [("symbol", "symbol", ""), ("horizon", "h", "r"), ("model_id", "model", ""),
                     ("n", "n", "r"), ("qlike", "QLIKE", "r"), ("qlike_ratio", "ratio", "r"),
                     ("qlike_stressed", "QLIKE stress", "r"), ("dm_pvalue", "DM p", "r"),
                     ("in_mcs", "MCS", "r")],
                    [{"target": tgt, **r} for r in s.to_dict(orient="records")],
                    fmt={"n": _num(",.0f"), "qlike": _num(".4f"), "qlike_ratio": _num(".3f"),
                         "qlike_stressed": _num(".3f"), "dm_pvalue": _num(".3f"),
                         "in_mcs": lambda v: "yes" if v else "no"})

    _print_failures(result)
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
    from pipelines.steps import build_feature_frame

    home = _registry_home()
    build_feature_frame(home, dataset, FeaturesConfig(freq=freq))
    frame = FeatureStore(home / "features").read(dataset, freq)
    return frame[frame["valid"].astype(bool)].reset_index(drop=True)


@models_app.command("list")
@clean_errors
@registry_errors
def models_list(model: ModelOpt = None, json_out: JsonOpt = False) -> None:
    """List every registered model's versions with aliases, gate status and training data
    (the registry is cross-checked with the promotion log first)."""
    from models.registry import list_versions, verify_registry

    home = _registry_home()
    verify_registry(home, model)
    df = list_versions(home=home, name=model)
    if df.empty:
        _console().print("no registered versions; run `dprm train` first")
        _JSON_TABLES.append({"title": "registered models", "rows": []})
        return
    # the data a version was trained on, as one column (dataset/freq)
    data = [f"{d}/{f}" if d else "" for d, f in zip(df["dataset"], df["freq"], strict=True)]
    cols = list(df.columns)
    df = df.assign(data=data)[cols[:cols.index("primary") + 1] + ["data"]
                              + [c for c in cols[cols.index("primary") + 1:]]]
    _print_frame("registered models", df, MODELS_LIST_COLUMNS)


@models_app.command("catalog")
@clean_errors
def models_catalog(
    target: Annotated[str | None, typer.Option(help="Only volatility or correlation models.")] = None,
    json_out: JsonOpt = False,
) -> None:
    """List the model catalog: every name `dprm evaluate --models` and a flow's model kind accept,
    with its target, the inputs it needs and what it is (aliases in --json and on wide terminals)."""
    from features.errors import ConfigError
    from models.catalog import catalog_records

    if target not in (None, "volatility", "correlation"):
        raise ConfigError(f"--target must be volatility or correlation; got {target!r}")
    rows = [r for r in catalog_records() if target is None or r["target"] == target]
    for r in rows:
        r["target_short"] = {"volatility": "vol", "correlation": "corr"}[r["target"]]
        r["alias_text"] = ", ".join(r["aliases"])
    _show_table("model catalog", [("name", "name", ""), ("target_short", "target", ""),
                                  ("inputs", "inputs", ""), ("description", "description", ""),
                                  ("alias_text", "aliases", "w")], rows)


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
    json_out: JsonOpt = False,
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
    con = _console()
    if res.decision is not None:
        _show_table(f"promotion gate for version {res.version} "
                    f"({res.decision.n_origins} common origins {res.decision.origins_start} .. "
                    f"{res.decision.origins_end})",
                    [("check", "check", ""), ("passed", "passed", ""), ("value", "value", "r"),
                     ("threshold", "threshold", "r"), ("detail", "detail", "")],
                    [{"check": c.name, "passed": c.passed, "value": c.value,
                      "threshold": c.threshold, "detail": c.detail} for c in res.decision.checks],
                    fmt={"passed": lambda v: {True: "yes", False: "NO", None: "skipped"}[v],
                         "value": lambda v: "" if v is None else f"{v:.4g}",
                         "threshold": lambda v: "" if v is None else f"{v:.4g}"})
    if _JSON["on"]:
        _JSON_TABLES.append({"title": "result", "version": res.version, "promoted": res.promoted,
                             "previous_champion": res.previous_champion,
                             "reason": res.decision.reason if res.decision else
                             res.log_entry.get("reason")})
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
    json_out: JsonOpt = False,
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
    from pipelines import steps
    from pipelines.config import dprm_home

    home = dprm_home()
    verify_registry(home, cfg.registered_model)
    if step == "train":
        steps.check_train_target(home, cfg)
    elif step == "monitor" or steps.forecast_source(home, cfg.registered_model)["source"] == "champion":
        steps.check_champion(home, cfg)


@app.command("train")
@clean_errors
@registry_errors
def train(
    dataset: Annotated[str | None, typer.Option(help="Dataset (default: embedded).")] = None,
    freq: Annotated[str | None, typer.Option(help="Frequency of the feature rows.")] = None,
    model: ModelOpt = None,
    config: ConfigOpt = None,
    target: Annotated[str, typer.Option(
        help="volatility (the forecaster) or correlation (the correlation champion, "
        "dprm-correlation[-<dataset>]; settings in [train_correlation]).")] = "volatility",
) -> None:
    """Walk-forward evaluate, log to MLflow, register a challenger and try the promotion gate
    (the `train` Prefect flow). The model is the dataset's own unless --model names another."""
    from features.errors import ConfigError
    from pipelines.config import load_config
    from pipelines.flow_config import CorrTrainFlowConfig, TrainFlowConfig

    if target not in ("volatility", "correlation"):
        raise ConfigError(f"--target must be volatility or correlation; got {target!r}")
    if target == "correlation":
        ccfg = load_config(CorrTrainFlowConfig, config, "train_correlation", dataset=dataset,
                           freq=freq, model_name=model)
        from models.registry import verify_registry
        from pipelines.config import dprm_home
        from pipelines.flows import run_train_correlation

        verify_registry(dprm_home(), ccfg.registered_model)
        with _console().status("running the correlation training flow"):
            out = run_train_correlation(ccfg)
        _print_flow("train (correlation)", out)
        if out.get("state") not in (None, "Completed"):
            raise typer.Exit(code=1)
        return
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
    print_bundle(_console(), out.get("bundle"))
    if out.get("state") not in (None, "Completed"):
        raise typer.Exit(code=1)


@app.command("margin")
@clean_errors
def margin_cmd(
    portfolio: Annotated[Path, typer.Option("--portfolio", help="Portfolio file (.csv or .json).")],
    data: Annotated[str, typer.Option("--data", help="Dataset of the market state.")] = "embedded",
    as_of: Annotated[str | None, typer.Option("--as-of", help="Margin time (UTC; default: the "
                                              "bundle's as_of).")] = None,
    bundle: Annotated[str, typer.Option("--bundle", help="Bundle folder, or 'latest' (the "
                                        "dataset's last bundle at --freq).")] = "latest",
    freq: Annotated[str | None, typer.Option(
        "--freq", help="Frequency of the 'latest' bundle (default: daily if the dataset has "
        "one, else its only one).")] = None,
    params: Annotated[Path | None, typer.Option("--params", help="Margin parameters (TOML; "
                                                "[margin] or top level).")] = None,
    rate: Annotated[list[str] | None, typer.Option("--rate", help="U=R: rate of a non-crypto "
                                                   "underlying (repeatable).")] = None,
    dividend_yield: Annotated[list[str] | None, typer.Option(
        "--dividend-yield", help="U=Q: dividend yield of an equity index (repeatable).")] = None,
    what_if_trade: Annotated[str | None, typer.Option(
        "--what-if", help="INSTRUMENT,QUANTITY: the margin with this trade added.")] = None,
    explain: Annotated[str | None, typer.Option(
        "--explain", help="Position id: print its recomputation path.")] = None,
    method: Annotated[str, typer.Option(
        "--method", help="dprm (the forecast-driven engine), fixed (tiered % of notional), "
        "span (SPAN-style risk array), deribit (Deribit-style portfolio margin), hvar (historical simulation) or fhs_ewma (FHS "
        "with EWMA vol, lambda from --params).")] = "dprm",
    compare: Annotated[bool, typer.Option(
        "--compare", help="Every method side by side on the same book and market state.")] = False,
    stress: Annotated[bool, typer.Option(
        "--stress", help="The stress-loss report: the worst historical days of the book's "
        "underlyings in the data and the hypothetical moves of the parameters.")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print the whole MarginResult as JSON.")] = False,
) -> None:
    """Margin of a portfolio from the store's market state and a risk-forecast bundle: IM and MM,
    components, attribution by underlying and position, worst scenarios (written under
    $DPRM_HOME/margin/); --method and --compare give the methods risk teams run today."""
    from pipelines.config import dprm_home
    from pipelines.margin_run import margin_for, margin_summary, write_margin

    home = dprm_home()
    kw = dict(dataset=data, bundle=bundle, freq=freq, as_of=as_of,
              params=None if params is None else params.read_text(),
              rates=_pairs(rate, "--rate"),
              dividend_yields=_pairs(dividend_yield, "--dividend-yield"))
    if stress:
        _margin_stress(home, portfolio, kw, json_out)
        return
    if compare or method != "dprm":
        _margin_methods(home, portfolio, kw, method, compare, json_out)
        return
    run = margin_for(home, portfolio, **kw, trade=what_if_trade)
    path, _ = write_margin(home, run)
    if json_out:
        typer.echo(run.result.to_json())
        return
    con = _console()
    print_margin(con, margin_summary(run, path))
    if explain is not None:
        import json

        from features.errors import ConfigError

        if explain not in run.result.by_position:
            raise ConfigError(f"--explain {explain!r} is not a position of {run.result.portfolio}; "
                              f"positions: {sorted(run.result.by_position)}")
        r, ex = run.result, run.result.explain
        pos = next(q for q in r.positions if q.id == explain)
        und = pos.instrument.underlying
        mine = ex["worst_scenario_pnl_by_position"].get(explain, [])
        doc = {"position": explain, "instrument": getattr(pos.instrument, "name", str(pos.instrument)),
               "quantity": pos.quantity, "attribution": r.by_position[explain],
               "worst_scenarios": [{**w, "position_pnl": v}
                                   for w, v in zip(r.worst_scenarios, mine, strict=False)],
               "scale_factors": ex["scale_factors"].get(und),
               **{k: ex[k] for k in ("mpor_days", "forecast_unit", "mpor_periods", "measure",
                                     "confidence", "quantile_positions",
                                     "chain")}}
        con.rule(f"explain {explain}")
        con.print_json(json.dumps(doc, default=str))
    con.print(f"result: {path}")


def _margin_stress(home: Path, portfolio: Path, kw: dict[str, Any], json_out: bool) -> None:
    """``dprm margin --stress``: the stress-loss report beside the day's IM."""
    import json

    from rich.table import Table

    from pipelines.margin_run import margin_inputs, stress_for

    inp = margin_inputs(home, portfolio, **kw)
    rep = stress_for(inp, home, kw["dataset"])
    if json_out:
        typer.echo(json.dumps(rep.to_dict(), default=str))
        return
    cur = rep.margin_currency
    fmt = "{:,.4f}" if cur in ("BTC", "ETH") else "{:,.0f}"
    t = Table(title=f"{rep.portfolio}: stress losses ({cur}; IM {fmt.format(rep.im)})")
    t.add_column("scenario", max_width=34)
    t.add_column("moves", max_width=22)
    t.add_column("P&L", justify="right", no_wrap=True)
    t.add_column("x IM", justify="right", no_wrap=True)
    for r in rep.rows:
        moves = " ".join(f"{u} {m:+.1%}" for u, m in r["moves"].items())
        t.add_row(r["scenario"], moves, fmt.format(r["pnl"]),
                  "" if r["loss_over_im"] is None else f"{r['loss_over_im']:.2f}")
    con = _console()
    con.print(t)
    srcs = sorted({r["source"] for r in rep.rows})
    con.print("sources: " + "; ".join(srcs))
    if rep.correlation:
        con.print("measure under each correlation matrix: " + ", ".join(
            f"{k} {fmt.format(v)}" for k, v in rep.correlation.items()))
    con.print("The daily margin is not priced at these days: they are reported beside it.")


def _margin_methods(home: Path, portfolio: Path, kw: dict[str, Any], method: str, compare: bool,
                    json_out: bool) -> None:
    """``dprm margin --method M`` / ``--compare``: one method's IM and MM, or all side by side."""
    import json

    from features.errors import ConfigError
    from margin.methods import METHODS, compute_method
    from pipelines.margin_run import compare_methods, margin_inputs

    if method not in METHODS:
        raise ConfigError(f"--method must be one of {list(METHODS)}. Got {method!r} instead.")
    inp = margin_inputs(home, portfolio, **kw)
    if compare:
        rows = compare_methods(inp)
        if json_out:
            typer.echo(json.dumps(rows, default=str))
            return
        from rich.table import Table

        cur = rows[0]["margin_currency"]
        fmt = "{:,.4f}" if cur in ("BTC", "ETH") else "{:,.2f}"
        t = Table(title=f"{inp.portfolio.name}: methods on one market state ({cur})")
        for c in ("method", "IM", "MM", "IM / dprm", "MM / dprm", "fail"):
            t.add_column(c, justify="left" if c == "method" else "right", no_wrap=True)
        for x in rows:
            t.add_row(x["method"], fmt.format(x["im"]), fmt.format(x["mm"]),
                      "" if x["im_vs_dprm"] is None else f"{x['im_vs_dprm']:.2f}",
                      "" if x["mm_vs_dprm"] is None else f"{x['mm_vs_dprm']:.2f}",
                      str(len(x["failures"])))
        con = _console()
        con.print(t)
        con.print("IM is compared with IM and MM with MM; the simulation methods report the "
                  "measure alone (no add-ons), fixed margins each instrument alone.")
        return
    r = compute_method(method, inp.portfolio, inp.market, inp.bundle, inp.params)
    if json_out:
        typer.echo(json.dumps(r.to_dict(), default=str))
        return
    con = _console()
    fmt = "{:,.4f}" if r.margin_currency in ("BTC", "ETH") else "{:,.2f}"
    con.print(f"[bold]{r.portfolio}[/bold] by {method}: IM {fmt.format(r.im)} "
              f"{r.margin_currency}, MM {fmt.format(r.mm)} {r.margin_currency}")
    from rich.table import Table

    t = Table(title="by position", box=None)
    for c in ("position", "IM", "MM"):
        t.add_column(c, justify="left" if c == "position" else "right")
    for k, v in sorted(r.by_position.items(), key=lambda kv: -abs(kv[1]["total"]))[:10]:
        t.add_row(k, fmt.format(v["total"]), fmt.format(v["mm_total"]))
    con.print(t)
    if r.failures:
        con.print(f"[red]{len(r.failures)} failure(s)[/red]: " + "; ".join(map(str, r.failures)))


@app.command("backtest")
@clean_errors
def backtest_cmd(
    data: Annotated[str, typer.Option("--data", help="Dataset name, or a file/folder of daily or "
                                      "intraday bars to ingest first (any format `dprm data "
                                      "ingest` reads).")] = "embedded",
    dataset: Annotated[str | None, typer.Option(help="Dataset name for a --data PATH (default: "
                                                "the file's folder name).")] = None,
    start: Annotated[str | None, typer.Option(help="First day (default: the champion's first "
                                              "issue, else a year into the data).")] = None,
    end: Annotated[str | None, typer.Option(help="Last day (default: the data's last).")] = None,
    methods: Annotated[str | None, typer.Option(
        help="Comma-separated methods (default: the demo subset; 'all' = every method).")] = None,
    portfolios: Annotated[str | None, typer.Option(
        help="Comma-separated reference portfolios (default: the demo subset; 'all').")] = None,
    symbols: Annotated[str | None, typer.Option(
        help="Comma-separated symbols of the dataset to use (default: all).")] = None,
    perp: Annotated[str | None, typer.Option(
        "--perp", help="Dataset name, or a folder to ingest, holding the first symbol's "
        "perpetual marks and funding (the basis book; default: --data itself).")] = None,
    chunk_days: Annotated[int, typer.Option(
        help="Days per checkpointed chunk (a killed run resumes after its last one).")] = 60,
    impulse: Annotated[bool, typer.Option(
        "--impulse", help="The margin's response to a synthetic x2 and x3 step in volatility "
        "(simulated daily paths).")] = False,
    sweep: Annotated[bool, typer.Option(
        "--sweep", help="The sensitivity sweep (confidence, lookback, EWMA lambda, APC) on "
        "Prefect's task runner.")] = False,
    json_out: JsonOpt = False,
) -> None:
    """Backtest margin methods day by day over history from the forecast ledger (seeding what it
    lacks by walk-forward): coverage (Kupiec, Christoffersen, traffic light, ES test), cost and
    procyclicality; writes the long table and its statistics under $DPRM_HOME/backtest/."""
    from pipelines import backtest as bt
    from pipelines.config import dprm_home

    home = dprm_home()
    ds = data
    con = _console()
    if Path(data).exists():
        with con.status(f"ingesting {data} and building daily features"):
            ds = bt.prepare_dataset(home, Path(data), dataset)
        con.print(f"dataset {ds}: ingested from {data}, daily features built")
    pds = perp
    if perp is not None and Path(perp).exists():
        with con.status(f"ingesting {perp}"):
            pds = bt.ingest_only(home, Path(perp))
        con.print(f"dataset {pds}: perpetual marks and funding ingested from {perp}")
    ms = bt.DEMO_METHODS if methods is None else (
        tuple(bt.METHODS) if methods == "all" else tuple(x.strip() for x in methods.split(",")))
    ps = bt.DEMO_PORTFOLIOS if portfolios is None else (
        bt.PORTFOLIOS if portfolios == "all" else tuple(x.strip() for x in portfolios.split(",")))
    syms = None if symbols is None else [x.strip() for x in symbols.split(",")]
    if impulse:
        with con.status("impulse response: simulated x2 and x3 volatility steps"):
            rows = bt.impulse_response(home)
        _show_table("Margin k days after a step in volatility / the day before", [
            ("multiplier", "vol x", "r"), ("method", "method", ""), ("apc", "APC", ""),
            ("after_1d", "1d", "r"), ("after_5d", "5d", "r"), ("after_20d", "20d", "r"),
            ("after_60d", "60d", "r")], rows,
            fmt={k: "{:.2f}".format for k in ("after_1d", "after_5d", "after_20d", "after_60d")})
        if json_out:
            _flush_json()
        return
    if sweep:
        from pipelines.flows import backtest_sweep_flow

        rows = backtest_sweep_flow(home=str(home), dataset=ds, start=start, end=end,
                                   symbols=syms)
        _show_table(f"Sensitivity sweep: {ds}", [
            ("setting", "setting", ""), ("portfolio", "book", ""), ("method", "method", ""),
            ("var_breaches", "VaR br.", "r"), ("expected", "exp.", "r"),
            ("p_cc", "CC p", "r"), ("mean_margin_pct", "% notional", "r"),
            ("pc_max_30d", "max 30d", "r")], rows, fmt=_BT_FMT)
        if json_out:
            _flush_json()
        return
    if json_out:
        _json_mode(True)
    with _progress() as prog:
        task = prog.add_task("backtest", total=None, rows=0)

        def say(msg: str) -> None:
            prog.update(task, description=msg[:60])

        run = bt.run_backtest(home, ds, start=start, end=end, methods=ms, portfolios=ps,
                              symbols=syms, progress=say, chunk_days=chunk_days,
                              perp_dataset=pds)
    print_backtest(run.summary)
    if json_out:
        _flush_json()
        return
    con.print(f"table:   {run.out_dir / 'backtest.parquet'}")
    con.print(f"summary: {run.out_dir / 'summary.json'}")
    if run.seeded:
        con.print("seeded by walk-forward: " + "; ".join(run.seeded))
    con.print(f"then: dprm report --data {ds}")


_BT_FMT: dict[str, Callable[[Any], str]] = {
    k: (lambda v, f=f: "" if v is None or v != v else f.format(v)) for k, f in {
        "p_cc": "{:.3f}", "p_pof": "{:.3f}", "p_cc_holm": "{:.3f}", "mean_margin_pct": "{:.2f}",
        "pc_max_30d": "{:.2f}", "cost_ratio": "{:.2f}", "z2": "{:.2f}", "expected": "{:.1f}",
        "pc_peak_trough": "{:.1f}", "p_upper": "{:.3f}"}.items()}


def print_backtest(summary: dict[str, Any]) -> None:
    """The backtest's statistics at 80 columns (coverage before APC; cost and procyclicality with
    the releasable buffer), or as JSON under --json."""
    meta = summary.get("meta", {})
    rows = summary.get("rows", [])
    title = (f"Backtest {meta.get('dataset')} {meta.get('start')}..{meta.get('end')}: coverage of "
             "VaR99 before anti-procyclicality")
    _show_table(title, [
        ("portfolio", "book", ""), ("method", "method", ""), ("n", "days", "r"),
        ("var_breaches", "VaR br.", "r"), ("expected", "exp.", "r"), ("p_pof", "Kupiec p", "r"),
        ("p_cc", "CC p", "r"), ("p_cc_holm", "Holm", "rw"), ("z2", "Z2", "r"),
        ("null", "null", "w")], [r for r in rows if r["apc"] == "none"], fmt=_BT_FMT)
    _show_table("Final margin with the releasable 25% buffer: breaches, cost, procyclicality", [
        ("portfolio", "book", ""), ("method", "method", ""), ("breaches", "br.", "r"),
        ("p_upper", "1-sided p", "r"), ("mean_margin_pct", "% notional", "r"),
        ("cost_ratio", "cost/FHS", "r"), ("pc_max_30d", "max 30d", "r"),
        ("pc_peak_trough", "pk/tr", "r"), ("red_windows", "red", "rw"),
        ("yellow_windows", "yellow", "rw")], [r for r in rows if r["apc"] == "buffer"],
        fmt=_BT_FMT)
    terc = summary.get("mm_vs_deribit_by_vol_tercile") or []
    if terc:
        _show_table("Option books: MM / Deribit-style MM by vol-index tercile", [
            ("portfolio", "book", ""), ("method", "method", ""), ("tercile", "tercile", ""),
            ("vol_index_max", "vol up to", "r"), ("n", "days", "r"), ("mm_ratio", "MM ratio", "r")],
            terc, fmt={"vol_index_max": "{:.1%}".format, "mm_ratio": "{:.2f}".format})


@app.command("report")
@clean_errors
def report_cmd(
    data: Annotated[str, typer.Option("--data", help="Dataset whose latest backtest to "
                                      "report.")] = "embedded",
    no_mlflow: Annotated[bool, typer.Option("--no-mlflow", help="Do not log the report to "
                                            "MLflow.")] = False,
    json_out: JsonOpt = False,
) -> None:
    """The risk team's HTML report of the latest backtest (self-contained; CSV and parquet beside
    it; logged to MLflow as an artifact of a backtest run)."""
    import json as _j

    from pipelines.backtest_report import write_report
    from pipelines.config import dprm_home

    out = write_report(dprm_home(), data, log_mlflow=not no_mlflow)
    if json_out:
        typer.echo(_j.dumps({k: str(v) for k, v in out.items()}))
        return
    con = _console()
    con.print(f"report: {out['report']}")
    con.print(f"csv:    {out['csv']}")
    if out["run_id"]:
        con.print(f"MLflow run: {out['run_id']} (experiment dprm-backtest)")


@app.command("monitor")
@clean_errors
@registry_errors
def monitor(
    dataset: Annotated[str | None, typer.Option(help="Dataset (default: embedded).")] = None,
    freq: Annotated[str | None, typer.Option(help="Frequency of the feature rows.")] = None,
    now: Annotated[str | None, typer.Option(
        help="Clock for freshness: a UTC time, or 'data' for the data's end (replaying history); "
             "default: the wall clock.")] = None,
    model: ModelOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    config: ConfigOpt = None,
) -> None:
    """Check the champion of the dataset's model (or --model) on out-of-sample forecasts (QLIKE vs
    the best baseline, Mincer-Zarnowitz slope, coverage, drift of log(realized/forecast)) and the
    feed (freshness of the latest live row). Exit 0: no breach; 1: a breach (one line per breached
    check on stderr); 2: bad input."""
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "CRITICAL")  # the lines below say it all
    from rich.console import Console

    from pipelines.config import load_config
    from pipelines.flow_config import MonitorFlowConfig

    cfg = load_config(MonitorFlowConfig, config, "monitor", dataset=dataset, freq=freq,
                      model_name=model, now=now)
    _preflight(cfg, "monitor")
    from pipelines.flows import run_monitor

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
DEMO_BACKTEST = ("2018-01-01", "2018-12-31")
"""The demo's backtest window on the embedded data (the full grid runs weekly and as a slow test)."""


def run_demo(cfg: Any, console: Any) -> dict[str, Any]:
    """The demo: ingest the embedded data and the simulator output, validate, summarise, then run
    the forecasting cycle through Prefect; renders each stage on ``console`` (the steps and flows
    return data)."""
    from features.ingest import validate_dataset
    from features.store import DataStore
    from models.registry import verify_registry
    from pipelines.config import dprm_home
    from pipelines.steps import ingest_embedded, simulate_to_store

    home = dprm_home()
    verify_registry(home)  # an unreachable or inconsistent registry fails now, in seconds
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
    import pandas as pd
    from rich.table import Table

    t = Table(title="Stored data")
    summary = pd.concat([store.summary(ds) for ds in results], ignore_index=True)
    for c in ("dataset", "table", "symbol", "rows", "first", "last"):
        t.add_column(c)
    for row in summary.itertuples(index=False):
        t.add_row(row.dataset, row.table, row.symbol, f"{row.rows:,}", str(row.first)[:19], str(row.last)[:19])
    console.print(t)
    console.rule("5. the forecasting cycle through Prefect: ingest -> features -> train -> forecast -> monitor")
    from pipelines.flows import demo_cycle_config, run_cycle

    cycles = {}
    for ds in ("embedded", "sim"):
        ccfg = demo_cycle_config(ds)
        ccfg = ccfg.model_copy(update={"monitor": ccfg.monitor.model_copy(update={"fail_on_breach": False})})
        with console.status(f"daily_cycle on {ds}"):
            cycles[ds] = run_cycle(ccfg)
        print_cycle(console, ds, cycles[ds])
    console.rule("6. margin backtest through Prefect (embedded 2018, the champion's last "
                 "out-of-sample year; demo subset) and the risk team's report")
    from pipelines.flow_config import BacktestFlowConfig
    from pipelines.flows import run_backtest_flow

    clock = time.perf_counter()
    with console.status("backtest: each day's margin from the ledger, against the realized loss"):
        bt_out = run_backtest_flow(BacktestFlowConfig(dataset="embedded", start=DEMO_BACKTEST[0],
                                                      end=DEMO_BACKTEST[1]))
    print_backtest({"meta": bt_out["meta"], "rows": bt_out["rows"],
                    "mm_vs_deribit_by_vol_tercile": bt_out.get("terciles") or []})
    console.print(f"backtest + report: {time.perf_counter() - clock:.0f} s; "
                  f"table {bt_out['out_dir']}/backtest.parquet")
    console.print(f"report: {bt_out['report']['report']} (MLflow run {bt_out['report']['run_id']})")
    console.rule("where things are")
    console.print(f"workspace:      {home}")
    console.print(f"canonical data: {home / 'data'}")
    console.print(f"features:       {home / 'features'}")
    console.print(f"forecasts:      {home / 'forecasts'}")
    console.print(f"MLflow store:   {os.environ.get('MLFLOW_TRACKING_URI') or 'sqlite:///' + str(home / 'mlflow.db')}"
                  f" (artifacts {home / 'mlartifacts'}); `dprm models list`")
    console.print(f"reports:        {home / 'reports'}")
    return {"home": home, "validation": results, "cycles": cycles, "backtest": bt_out}


def print_cycle(console: Any, dataset: str, out: dict[str, Any]) -> None:
    """A compact view of one cycle's summary (every step's state and key outputs)."""
    from rich.table import Table

    t = Table(title=f"daily_cycle on {dataset}")
    t.add_column("step")
    t.add_column("result")
    for step in ("ingest", "features", "train", "correlation", "forecast", "margin", "accounts",
                 "monitor"):
        r = out.get(step)
        if r is None:
            continue
        if step == "accounts" and isinstance(r, dict) and isinstance(r.get("status"), dict):
            r = {**r, "status": ", ".join(f"{k} {v}" for k, v in r["status"].items()),
                 "failed": len(r.get("failures") or [])}
        if isinstance(r, dict) and isinstance(r.get("bundle"), dict):
            b = r["bundle"]
            r = {**r, "bundle_text": b.get("error") or f"{b['bundle_id'][:12]} at {b['as_of']}"}
        if step == "margin" and isinstance(r, list):
            detail = (f"{len(r)} book(s), 0 failures" if not any(m.get("failures") for m in r)
                      else f"{len(r)} book(s), {sum(len(m['failures']) for m in r)} failure(s)")
        elif isinstance(r, list):
            detail = f"{len(r)} source(s) ingested"
        else:
            keys = {"features": ("rows", "path"),
                    "train": ("challenger", "version", "promoted", "gate_status", "gate_reason"),
                    "correlation": ("challenger", "version", "promoted", "gate_status",
                                    "gate_reason", "skipped"),
                    "forecast": ("model", "version", "source", "data_cutoff_ts", "path",
                                 "bundle_text"),
                    "monitor": ("status", "breaches", "report"),
                    "accounts": ("status", "failed", "error")}.get(step, ())
            shown = {k: (", ".join(r[k]) if isinstance(r.get(k), dict) else r.get(k)) for k in keys}
            detail = "; ".join(f"{k}={v}" for k, v in shown.items() if v not in (None, ""))
        secs = (out.get("seconds") or {}).get(step)
        t.add_row(step if secs is None else f"{step}\n{secs:.0f} s", detail)
    console.print(t)
    print_champions(console, out)
    print_bundle(console, (out.get("forecast") or {}).get("bundle"))
    books = [m for m in (out.get("margin") or []) if isinstance(m, dict) and "im" in m]
    if books:
        print_margin_table(console, books)
        print_margin(console, books[0])
    acc = out.get("accounts")
    if isinstance(acc, dict) and "accounts" in acc:
        print_accounts(acc)
        console.print(f"accounts: {acc['path']}")


_SHORT = {"stress_blend": "stress", "correlation_stress": "corr", "grid_floor": "grid",
          "short_option_minimum": "short opt", "concentration": "conc", "liquidity": "liq"}


def print_margin_table(console: Any, books: list[dict[str, Any]]) -> None:
    """One row per margin summary (fits 80 columns): portfolio, IM and MM (after the
    anti-procyclicality step), currency, the largest component beyond market risk and the APC
    addition over the base margin; failures listed below the table."""
    from rich.table import Table

    t = Table(title=f"margin at {books[0]['as_of'][:19]} (bundle {books[0]['bundle_id'][:12]})")
    t.add_column("portfolio", no_wrap=True, max_width=18, overflow="ellipsis")
    for c in ("IM", "MM"):
        t.add_column(c, justify="right", no_wrap=True)
    t.add_column("ccy")
    t.add_column("next component", no_wrap=True)
    t.add_column("APC", justify="right", no_wrap=True)
    for m in books:
        extra = {k: v for k, v in m["components"].items()
                 if k not in ("market_risk", "apc") and v > 0}
        top = max(extra, key=extra.get) if extra else ""
        fmt = "{:,.4f}" if m["margin_currency"] in ("BTC", "ETH") else "{:,.0f}"
        apc = m.get("apc")
        t.add_row(m["portfolio"], fmt.format(m["im"]), fmt.format(m["mm"]), m["margin_currency"],
                  f"{_SHORT.get(top, top)} {fmt.format(extra[top])}" if top else "",
                  f"+{m['im'] / apc['base_im'] - 1:.0%}" if apc and apc["base_im"] > 0 else "")
    console.print(t)
    if all("methods" in m for m in books):
        names = [k for k in books[0]["methods"] if k != "dprm"]
        t = Table(title="IM of the methods risk teams run today / dprm's (both before APC)")
        t.add_column("portfolio", no_wrap=True, max_width=18, overflow="ellipsis")
        for k in names:
            t.add_column(k.replace("fhs_ewma 0", "ewma"), justify="right", no_wrap=True)
        for m in books:
            d = m["methods"]["dprm"]["im"]
            t.add_row(m["portfolio"], *(f"{m['methods'][k]['im'] / d:.2f}" if d > 0 else ""
                                        for k in names))
        console.print(t)
    for m in books:
        if m["failures"]:
            console.print(f"[red]{m['portfolio']}: {len(m['failures'])} failure(s)[/red]: "
                          + "; ".join(m["failures"]))


def print_margin(console: Any, m: dict[str, Any]) -> None:
    """A margin summary (:func:`pipelines.margin_run.margin_summary`): IM and MM, the non-zero
    components, attribution by underlying, the top positions, the worst scenarios, failures."""
    from rich.table import Table

    cur = m["margin_currency"]
    console.print(f"[bold]{m['portfolio']}[/bold] at {m['as_of'][:19]}: IM {m['im']:,.2f} {cur}, "
                  f"MM {m['mm']:,.2f} {cur} (bundle {m['bundle_id'][:12]})")
    t = Table(title="components (sum to IM)", box=None)
    t.add_column("component")
    t.add_column(cur, justify="right")
    for k, v in m["components"].items():
        if abs(v) > 0:
            t.add_row(k, f"{v:,.2f}")
    console.print(t)
    t = Table(title="attribution", box=None)
    for c in ("", "market risk", "corr stress", "total"):
        t.add_column(c, justify="left" if not c else "right")
    for name, v in [*(("u:" + k, v) for k, v in m["by_underlying"].items()),
                    *((p["id"], p) for p in m["top_positions"])]:
        t.add_row(name, f"{v.get('market_risk', 0):,.2f}", f"{v.get('correlation_stress', 0):,.2f}",
                  f"{v.get('total', 0):,.2f}")
    console.print(t)
    worst = ", ".join(f"{w['scenario']} {w['pnl']:,.0f}" for w in m["worst_scenarios"][:3])
    console.print(f"worst scenarios: {worst}")
    if m.get("what_if"):
        w = m["what_if"]
        console.print(f"what-if: IM {w['im']:,.2f} ({w['incremental_im']:+,.2f}), MM {w['mm']:,.2f} "
                      f"({w['incremental_mm']:+,.2f})" + (f"; {w['failure']}" if w["failure"] else ""))
    if m["failures"]:
        console.print(f"[red]{len(m['failures'])} failure(s)[/red]: " + "; ".join(m["failures"]))


def print_bundle(console: Any, b: dict[str, Any] | None) -> None:
    """The risk-forecast bundle's summary: as_of, id, members, the h-period vols (issued and
    scaled) with the variance scale and its interval, the correlation and stale symbols."""
    from rich.table import Table

    if not b or "vols" not in b:
        if b and b.get("error"):
            console.print(f"[red]bundle not written[/red]: {b['error']}")
        return
    t = Table(title=f"risk-forecast bundle {b['bundle_id'][:12]} at {b['as_of'][:19]}")
    for c in ("symbol", "h", "vol", "scaled", "scale [95%]", "stale"):
        t.add_column(c, justify="left" if c in ("symbol", "stale") else "right")
    for v in b["vols"]:
        t.add_row(v["symbol"], f"{v['horizon']}{v['unit'][-1]}", f"{v['vol']:.2%}",
                  f"{v['vol_scaled']:.2%}",
                  f"{v['scale']:.2f} [{v['scale_lo']:.2f}, {v['scale_hi']:.2f}]",
                  "yes" if v["stale"] else "")
    console.print(t)
    members = ", ".join(f"{k}: {m}" for k, m in b.get("members", {}).items())
    corr = "; ".join(f"{p} {c:+.3f}" for u in b.get("corr", {}).values() for p, c in u.items())
    console.print(f"members: {members}")
    if corr:
        console.print(f"correlation (shortest horizon): {corr}")
    console.print(f"bundle: {b.get('path', '')}")


def print_champions(console: Any, out: dict[str, Any]) -> None:
    """The cycle's two champions with the scores on the training origins of the model this cycle
    trained: the volatility model (pooled QLIKE and its ratio to the best baseline) and the
    correlation model (mean Stein loss, GMV variance ratio and Stein difference vs EWMA,
    Mahalanobis ratio); "(rejected)" when that model did not become the champion."""
    from rich.table import Table

    nan = float("nan")
    rows = (
        ("volatility", out.get("train") or {}, "ranking", "model_id",
         lambda r: (f"QLIKE {r.get('qlike', nan):.4f}", f"ratio {r.get('qlike_ratio', nan):.3f}")),
        ("correlation", out.get("correlation") or {}, "scores", "model",
         lambda r: (f"Stein {r.get('stein_qlike', nan):.4f}",
                    f"GMV {r.get('gmv_ratio', nan):.3f}, Stein {r.get('stein_diff', nan):+.4f}, "
                    f"Maha {r.get('mahalanobis_ratio', nan):.2f}")),
    )
    t = Table(title="champions and scores (training origins)")
    for c in ("model", "kind", "version", "score", "vs baseline"):
        t.add_column(c)
    for kind, step, table, key, fmt in rows:
        if not step.get(table):
            continue
        r = {x[key]: x for x in step[table]}.get(step.get("challenger"), {})
        won = step.get("champion_version") == step.get("version")
        who = step.get("challenger") if won else f"{step.get('challenger')} (rejected)"
        t.add_row(f"{step.get('model', '')}\n{who}", kind, str(step.get("champion_version") or "none"),
                  *fmt(r))
    if t.row_count:
        console.print(t)


@app.command("demo")
@clean_errors
@registry_errors
def demo(config: ConfigOpt = None) -> None:
    """Run the whole pipeline on the embedded default data (arch's daily indices + the simulator)."""
    from pipelines.config import DemoConfig, load_config

    # Prefect's per-task INFO lines would bury the demo's tables; warnings and errors still show
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    cfg = load_config(DemoConfig, config)
    t0 = time.perf_counter()
    run_demo(cfg, console=_console())
    _console().print(f"demo finished in {time.perf_counter() - t0:.1f} s")


# ---- defaults in --help ------------------------------------------------------------------------
def _default_text(value: Any) -> str:
    if isinstance(value, tuple | list):
        return ",".join(str(v) for v in value) if value else "none"
    return str(value)


HELP_DEFAULTS: dict[str, dict[str, str]] = {
    "data_simulate": {"days": "60", "seed": "7", "dataset": "sim"},
    "features_build": {"freq": "1D", "grid": "5min"},
    "evaluate": {"target": "volatility", "freq": "1D", "grid": "5min", "horizons": "1,5",
                 "window": "1000", "models": "the ladder"},
    "train": {"dataset": "embedded", "freq": "1D"},
    "forecast": {"dataset": "embedded", "freq": "1D"},
    "monitor": {"dataset": "embedded", "freq": "1D"},
}
"""The default ``--help`` shows for each option that, when not given, takes its value from the
command's settings model (its Python default is None, so typer would show none). Kept as text so
``--help`` need not import pydantic; :func:`config_help_defaults` derives the same table from the
models and a test checks that the two agree."""

HELP_CONFIGS: dict[str, tuple[str, str, dict[str, str]]] = {
    "data_simulate": ("pipelines.config", "SimulateConfig", {"days": "n_days"}),
    "features_build": ("pipelines.config", "FeaturesConfig", {}),
    "evaluate": ("pipelines.config", "EvaluateConfig", {}),
    "train": ("pipelines.flow_config", "TrainFlowConfig", {}),
    "forecast": ("pipelines.flow_config", "ForecastFlowConfig", {}),
    "monitor": ("pipelines.flow_config", "MonitorFlowConfig", {}),
}
"""Command -> (module, settings model, option -> field renames) behind :data:`HELP_DEFAULTS`."""


def config_help_defaults() -> dict[str, dict[str, str]]:
    """:data:`HELP_DEFAULTS` as the settings models define it (imports pydantic; for the test)."""
    import importlib
    import inspect

    out: dict[str, dict[str, str]] = {}
    for cmd, (module, model_name, renames) in HELP_CONFIGS.items():
        model = getattr(importlib.import_module(module), model_name)
        fn = inspect.unwrap(globals()[cmd])
        row: dict[str, str] = {}
        for name, param in inspect.signature(fn).parameters.items():
            field = model.model_fields.get(renames.get(name, name))
            if param.default is None and field is not None and field.default is not None:
                text = _default_text(field.default)
                row[name] = "the ladder" if (cmd, name) == ("evaluate", "models") else text
        out[cmd] = row
    return out


def show_config_defaults() -> None:
    """Make every ``--help`` show :data:`HELP_DEFAULTS` (the settings models' defaults)."""
    import inspect
    import typing

    for cmd, defaults in HELP_DEFAULTS.items():
        target = inspect.unwrap(globals()[cmd])
        hints = typing.get_type_hints(target, include_extras=True)
        for name, text in defaults.items():
            hint = hints[name]
            for meta in getattr(hint, "__metadata__", ()):
                if isinstance(meta, typer.models.OptionInfo):
                    meta.show_default = text
                    # the evaluated annotation replaces the string one, so typer sees this
                    # OptionInfo (``from __future__ import annotations`` would rebuild it)
                    target.__annotations__[name] = hint


show_config_defaults()


def main() -> None:  # pragma: no cover - console entry
    """Entry point for ``python -m pipelines.cli``."""
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())


@account_app.command("status")
@clean_errors
def account_status_cmd(
    accounts: Annotated[Path, typer.Option("--accounts", help="Accounts file (.json or .csv: "
                                           "positions and collateral balances per account).")],
    data: Annotated[str, typer.Option("--data", help="Dataset of the market state.")] = "sim",
    bundle: Annotated[str, typer.Option("--bundle", help="Bundle folder, or 'latest'.")] = "latest",
    freq: Annotated[str | None, typer.Option("--freq", help="Frequency of the 'latest' bundle.")
                    ] = None,
    mode: Annotated[str, typer.Option("--mode", help="Collateral mode: cross (coins revalued in "
                                      "the scenarios) or segregated (haircut).")] = "cross",
    mm: Annotated[str, typer.Option("--mm", help="MM rule: engine, fraction or tiered.")
                  ] = "engine",
    json_out: JsonOpt = False,
) -> None:
    """Each account's equity, IM, MM, margin ratio, status (healthy, margin call, liquidation)
    and the moves of each underlying at which it would be liquidated."""
    from features.errors import ConfigError
    from margin.accounts import AccountParams, CollateralParams, MMRule
    from pipelines.accounts_run import accounts_for
    from pipelines.config import dprm_home

    if mode not in ("cross", "segregated"):
        raise ConfigError(f"--mode {mode!r}: expected 'cross' or 'segregated'")
    if mm not in ("engine", "fraction", "tiered"):
        raise ConfigError(f"--mm {mm!r}: expected 'engine', 'fraction' or 'tiered'")
    if json_out:
        _json_mode(True)
    with _console().status("account status"):
        out = accounts_for(dprm_home(), accounts, dataset=data, bundle=bundle, freq=freq,
                           params=AccountParams(collateral=CollateralParams(mode=mode),
                                                mm=MMRule(kind=mm)))
    print_accounts(out)
    if json_out:
        _JSON_TABLES.append({"title": "accounts", "rows": out["accounts"]})
        _flush_json()


def print_accounts(out: dict[str, Any]) -> None:
    """Account statuses (:func:`pipelines.accounts_run.accounts_for`) at 80 columns: one table of
    equity, IM, MM and status, one of the liquidation moves per account and underlying, and the
    accounts that failed (or JSON tables under --json)."""
    money = "{:,.0f}".format
    rows = [{**{k: a[k] for k in ("id", "status", "equity_usd", "im_usd", "mm_usd",
                                  "margin_ratio", "call_usd", "free_collateral_usd")},
             "failures": len(a["failures"])} for a in out["accounts"]]
    _show_table(f"Accounts at {out['as_of'][:16]} ({out['dataset']}, bundle "
                f"{out['bundle_id'][:12]})", [
        ("id", "account", ""), ("status", "status", ""), ("equity_usd", "equity", "r"),
        ("im_usd", "IM", "r"), ("mm_usd", "MM", "r"), ("margin_ratio", "MM/eq", "r"),
        ("call_usd", "to post", "r"), ("free_collateral_usd", "free", "rw"),
        ("failures", "failed pos.", "rw")], rows,
        fmt={"equity_usd": money, "im_usd": money, "mm_usd": money, "call_usd": money,
             "free_collateral_usd": money,
             "margin_ratio": lambda v: "" if v is None else f"{v:.2f}"})
    liq = []
    for a in out["accounts"]:
        for u, v in sorted(a["liquidation"].items()):
            liq.append({"id": a["id"], "underlying": u, "down": v["down"], "up": v["up"],
                        "down_price": v["down_price"], "up_price": v["up_price"]})

    def pct(v: Any) -> str:
        return "beyond -/+95%" if v is None else "now" if v == 0 else f"{100 * v:+.1f}%"

    def px(v: Any) -> str:
        return "" if v is None else f"{v:,.0f}"

    _show_table("Liquidation: the move of each underlying at which equity meets MM", [
        ("id", "account", ""), ("underlying", "und.", ""), ("down", "down", "r"),
        ("down_price", "at", "r"), ("up", "up", "r"), ("up_price", "at", "r")], liq,
        fmt={"down": pct, "up": pct, "down_price": px, "up_price": px}, key="liquidation")
    if out["failures"]:
        _show_table("Accounts that could not be computed", [
            ("subject", "account", ""), ("message", "why", "")], out["failures"], key="failures")
