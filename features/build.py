"""Build the feature frame of a dataset and keep it in an incremental feature store.

The feature frame is long: one row per ``(symbol, ts)`` where ``ts`` is the close of a bar of the
target frequency (``1D``, ``1h``, ``5min``), with feature columns (units in names), a ``valid`` flag
and forward targets (:mod:`features.targets`, the only look-ahead).

How base measures are found, per symbol, in order of preference:

1. a precomputed ``realized`` table of the target frequency (e.g. the daily BTC/ETH measures);
2. ``trades`` -> :func:`features.realized.realized_measures` on a ``grid`` (previous tick);
3. finer ``bars`` -> the same estimators on bar closes (the grid is the bar length at least);
4. bars of the target frequency only -> Garman-Klass range variance as ``rv_var`` (recorded as the
   ``rv_source``), since nothing finer exists.

Incremental: base measures are computed per stored input partition and cached under the partition's
content digest; after new data arrives only new or changed partitions are recomputed. The cheap
trailing transforms (HAR aggregates, lags, market context) and targets are then recomputed over the
whole series, and feature partitions are rewritten only where their content changed.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from features import schema as S
from features.errors import ConfigError
from features.store import (
    DataStore,
    atomic_write_json,
    atomic_write_parquet,
    partition_period,
    safe_name,
)
from features.symbols import symbol_meta
from features.targets import forward_mean
from features.transformers import har_aggregates, lags, market_aggregates

FEATURE_SET_VERSION = "1.0"
"""Bumped whenever the meaning of a feature column changes; part of the store's manifest."""


@dataclass(frozen=True)
class FeatureSpec:
    """What to build.

    Attributes
    ----------
    freq : bar length of the feature rows (and of the targets' periods).
    grid : previous-tick sampling grid for realized measures from ticks or finer bars.
    horizons : forward target horizons, in periods of ``freq``.
    har_windows : HAR aggregate windows, in periods.
    min_coverage : share of the grid that must be observed for a bar to be valid.
    """

    freq: str = "1D"
    grid: str = "5min"
    horizons: tuple[int, ...] = (1, 5, 22)
    har_windows: tuple[int, ...] = (1, 5, 22)
    min_coverage: float = 0.85

    def __post_init__(self) -> None:
        for name in ("freq", "grid"):
            try:
                ok = pd.Timedelta(getattr(self, name)) > pd.Timedelta(0)
            except ValueError:
                ok = False
            if not ok:
                raise ConfigError(
                    f"The '{name}' parameter of FeatureSpec must be a positive duration such as "
                    f"'1D' or '5min'. Got {getattr(self, name)!r} instead."
                )
        if not 0 < self.min_coverage <= 1:
            raise ConfigError(
                f"The 'min_coverage' parameter of FeatureSpec must be in (0, 1]. "
                f"Got {self.min_coverage!r} instead."
            )


@dataclass
class BuildReport:
    """What a build did: partitions computed or reused, rows written, where."""

    dataset: str
    freq: str
    path: Path
    rv_source: dict[str, str] = field(default_factory=dict)
    base_computed: int = 0
    base_reused: int = 0
    partitions_written: int = 0
    partitions_unchanged: int = 0
    rows: int = 0
    columns: list[str] = field(default_factory=list)


def _interval(info: dict) -> pd.Timedelta | None:
    return None if info.get("interval") in (None, "None") else pd.Timedelta(info["interval"])


class FeatureStore:
    """Feature frames per dataset and frequency under ``root`` (usually ``$DPRM_HOME/features``).

    Layout: ``<dataset>/<freq>/symbol=<S>/date=<YYYY-01-01>.parquet`` + ``manifest.json``; base-measure
    cache in ``<dataset>/<freq>/_cache/``.
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def path(self, dataset: str, freq: str) -> Path:
        """Folder of one feature frame."""
        return self.root / safe_name(dataset) / safe_name(freq)

    def manifest(self, dataset: str, freq: str) -> dict:
        """The manifest of a built feature frame; DataError if it was never built."""
        p = self.path(dataset, freq) / "manifest.json"
        if not p.exists():
            raise S.DataError(
                f"no features built for dataset '{dataset}' at freq '{freq}' in {self.root}; "
                f"run `dprm features build {dataset} --freq {freq}`"
            )
        return json.loads(p.read_text())

    def read(self, dataset: str, freq: str, symbols: list[str] | None = None) -> pd.DataFrame:
        """The stored feature frame (optionally some symbols), sorted by symbol and ts."""
        man = self.manifest(dataset, freq)
        frames = [pd.read_parquet(self.path(dataset, freq) / rel) for rel in sorted(man["partitions"])
                  if symbols is None or rel.split("/")[0].split("=", 1)[1] in {safe_name(s) for s in symbols}]
        if not frames:
            return pd.DataFrame(columns=man["columns"])
        return pd.concat(frames, ignore_index=True).sort_values([S.SYMBOL, S.TS]).reset_index(drop=True)

    # ---- base measures (cached per input partition) ---------------------------------------------
    def _cached(self, dataset: str, spec: FeatureSpec, table: str, rel: str, digest: str,
                compute) -> tuple[pd.DataFrame, bool]:
        cache = self.path(dataset, spec.freq) / "_cache" / safe_name(table) / (
            safe_name(rel.replace("/", "__")) + f".{digest}.{_spec_key(spec)}.parquet")
        if cache.exists():
            return pd.read_parquet(cache), False
        out = compute()
        atomic_write_parquet(cache, out)
        return out, True

    def build(self, store: DataStore, dataset: str, spec: FeatureSpec | None = None) -> BuildReport:
        """Build (or incrementally update) the feature frame of ``dataset``; see the module doc."""
        spec = spec or FeatureSpec()
        man = store.require(dataset)
        report = BuildReport(dataset=dataset, freq=spec.freq, path=self.path(dataset, spec.freq))
        base = self._base_measures(store, dataset, man, spec, report)
        if base.empty:
            raise S.DataError(
                f"dataset '{dataset}' has no table from which {spec.freq} features can be built "
                f"(need trades, bars or realized measures); tables: {sorted(man['tables'])}"
            )
        frame = assemble(base, spec, extra=self._extra_features(store, dataset, man, spec, report))
        self._write(dataset, spec, frame, store.fingerprint(dataset), report)
        return report

    def build_symbol(self, store: DataStore, dataset: str, spec: FeatureSpec, symbol: str) -> BuildReport:
        """Compute one symbol's per-partition base measures and extra features into the cache.

        The full :meth:`build` caches its per-partition work keyed by each input partition's
        content digest, so running this per symbol first (in parallel, e.g. mapped over a task
        runner) leaves only the cheap cross-symbol assembly to :meth:`build`. Writes no feature
        frame; the report counts the partitions computed now and those already cached.
        """
        man = store.symbol_manifest(dataset, [symbol])
        report = BuildReport(dataset=dataset, freq=spec.freq, path=self.path(dataset, spec.freq))
        self._base_measures(store, dataset, man, spec, report)
        self._extra_features(store, dataset, man, spec, report)
        return report

    def _base_measures(self, store: DataStore, dataset: str, man: dict, spec: FeatureSpec,
                       report: BuildReport) -> pd.DataFrame:
        from features.ranges import range_variance
        from features.realized import realized_measures

        freq = pd.Timedelta(spec.freq)
        tables = man["tables"]
        by_symbol: dict[str, pd.DataFrame] = {}

        def run(table: str, compute_one, context: bool = False) -> None:
            info = tables[table]
            per_sym: dict[str, list[pd.DataFrame]] = {}
            rels = sorted(info["partitions"])
            for i, rel in enumerate(rels):
                sym = None
                # bars cut across partition boundaries: see _PartitionContext
                ctx = _partition_context(info, rels, i) if context else None

                def load(ctx: _PartitionContext | None = ctx, rel: str = rel) -> pd.DataFrame:
                    if ctx is None:
                        return compute_one(pd.read_parquet(store.path(dataset) / rel))
                    return ctx.trim(compute_one(ctx.load(store, dataset)))

                key = info["partitions"][rel]["digest"] if ctx is None else ctx.key
                frame, computed = self._cached(dataset, spec, table, rel, key, load)
                report.base_computed += int(computed)
                report.base_reused += int(not computed)
                if not frame.empty:
                    sym = str(frame[S.SYMBOL].iloc[0])
                    per_sym.setdefault(sym, []).append(frame)
            for sym, frames in per_sym.items():
                if sym in by_symbol:
                    continue
                by_symbol[sym] = pd.concat(frames, ignore_index=True)
                report.rv_source[sym] = table

        # 1. precomputed realized measures at the target frequency
        for t, info in sorted(tables.items()):
            if info["kind"] == "realized" and _interval(info) in (None, freq) and t.startswith("realized_"):
                run(t, lambda f: f.assign(valid=_valid_from_nobs(f)))
        # 2. trades
        for t, info in sorted(tables.items()):
            if info["kind"] == "trades":
                run(t, lambda f: realized_measures(
                    f, bar=spec.freq, grid=spec.grid, price_col=S.PRICE,
                    min_coverage=spec.min_coverage,
                    calendar=symbol_meta(str(f[S.SYMBOL].iloc[0])).calendar), context=True)
        # 3. finer bars (closes as prices), coarser measures
        bar_tables = sorted(((t, info) for t, info in tables.items()
                             if info["kind"] == "bars" and t.startswith("bars_") and _interval(info) is not None),
                            key=lambda x: _interval(x[1]))
        for t, info in bar_tables:
            iv = _interval(info)
            if iv < freq and max(iv, pd.Timedelta(spec.grid)) <= pd.Timedelta("30min"):
                grid = max(iv, pd.Timedelta(spec.grid))
                run(t, lambda f, grid=grid: realized_measures(
                    f, bar=spec.freq, grid=_fmt(grid), price_col=S.CLOSE,
                    min_coverage=spec.min_coverage,
                    calendar=symbol_meta(str(f[S.SYMBOL].iloc[0])).calendar), context=True)
        # 3b. bars too coarse for the realized grid (e.g. hourly bars into days): sum of squared
        #     close-to-close returns of consecutive bars
        for t, info in bar_tables:
            iv = _interval(info)
            if pd.Timedelta("30min") < iv < freq:
                run(t, lambda f, iv=iv: squared_return_variance(f, iv, spec.freq, spec.min_coverage),
                    context=True)
        # 4. bars of the target frequency only: range-based variance
        for t, info in bar_tables:
            if _interval(info) == freq:
                def gk(f: pd.DataFrame) -> pd.DataFrame:
                    r = range_variance(f, estimators=("parkinson", "garman_klass", "rogers_satchell"))
                    out = f[[S.TS, S.SYMBOL, S.CLOSE]].copy()
                    out[S.RV] = r["gk_var"].to_numpy()
                    out["valid"] = np.isfinite(out[S.RV].to_numpy()) & (out[S.RV].to_numpy() > 0)
                    return out
                before = set(by_symbol)
                run(t, gk)
                for s in set(by_symbol) - before:
                    report.rv_source[s] = f"{t} (Garman-Klass range variance)"
        if not by_symbol:
            return pd.DataFrame()
        return pd.concat(by_symbol.values(), ignore_index=True)

    def _extra_features(self, store: DataStore, dataset: str, man: dict, spec: FeatureSpec,
                        report: BuildReport) -> list[pd.DataFrame]:
        """Microstructure, liquidity and range features from whatever tables the dataset has."""
        from features import microstructure as M
        from features.ranges import aggregate_bars, range_variance

        freq = pd.Timedelta(spec.freq)
        out: list[pd.DataFrame] = []
        for t, info in sorted(man["tables"].items()):
            kind = info["kind"]
            if kind not in ("trades", "quotes", "book", "bars"):
                continue
            parts = []
            rels = sorted(info["partitions"])
            for i, rel in enumerate(rels):
                ctx = _partition_context(info, rels, i)

                def compute(ctx: _PartitionContext = ctx, kind: str = kind, info: dict = info) -> pd.DataFrame:
                    return ctx.trim(features_of(ctx.load(store, dataset), kind, info))

                def features_of(f: pd.DataFrame, kind: str, info: dict) -> pd.DataFrame:
                    if kind == "trades":
                        return M.trade_features(f, bar=spec.freq)
                    if kind == "quotes":
                        return M.quote_features(f, bar=spec.freq)
                    if kind == "book":
                        return M.book_features(f, bar=spec.freq)
                    iv = _interval(info)
                    if iv is None or iv > freq:
                        return pd.DataFrame()
                    b = f if iv == freq else aggregate_bars(f, spec.freq)
                    r = range_variance(b, estimators=("parkinson", "garman_klass", "rogers_satchell"))
                    liq = M.bar_liquidity(b)
                    keep = [c for c in r.columns if c.endswith("_var")]
                    res = pd.concat([b[[S.TS, S.SYMBOL]].reset_index(drop=True),
                                     r[keep].reset_index(drop=True)], axis=1)
                    lq = [c for c in liq.columns if c not in (S.TS, S.SYMBOL)]
                    return res.merge(liq[[S.TS, S.SYMBOL, *lq]], on=[S.TS, S.SYMBOL], how="left")

                f, computed = self._cached(dataset, spec, f"x_{t}", rel, ctx.key, compute)
                report.base_computed += int(computed)
                report.base_reused += int(not computed)
                if not f.empty:
                    parts.append(f)
            if parts:
                df = pd.concat(parts, ignore_index=True)
                prefix = "" if kind != "bars" else f"{t}_"
                ren = {c: f"{prefix}{c}" for c in df.columns if c not in (S.TS, S.SYMBOL)}
                out.append(df.rename(columns=ren).drop_duplicates([S.TS, S.SYMBOL], keep="last"))
        return out

    def _write(self, dataset: str, spec: FeatureSpec, frame: pd.DataFrame, input_fp: str,
               report: BuildReport) -> None:
        root = self.path(dataset, spec.freq)
        try:
            old = self.manifest(dataset, spec.freq)["partitions"]
        except S.DataError:
            old = {}
        parts: dict[str, dict] = {}
        year = frame[S.TS].dt.year
        for (sym, y), idx in frame.groupby([frame[S.SYMBOL], year], sort=True).indices.items():
            rel = f"symbol={safe_name(str(sym))}/date={int(y)}-01-01.parquet"
            f = frame.iloc[idx].reset_index(drop=True)
            h = pd.util.hash_pandas_object(f, index=False).sum()
            content = f"{int(h) & (2**63 - 1):x}-{len(f)}"
            if old.get(rel, {}).get("content") == content and (root / rel).exists():
                report.partitions_unchanged += 1
                parts[rel] = old[rel]
                continue
            digest = atomic_write_parquet(root / rel, f)
            parts[rel] = {"rows": len(f), "content": content, "digest": digest}
            report.partitions_written += 1
        for rel in set(old) - set(parts):  # partitions that no longer exist
            (root / rel).unlink(missing_ok=True)
        report.rows = len(frame)
        report.columns = list(frame.columns)
        atomic_write_json(root / "manifest.json", {
            "dataset": dataset,
            "feature_set_version": FEATURE_SET_VERSION,
            "spec": asdict(spec),
            "input_fingerprint": input_fp,
            "rv_source": report.rv_source,
            "columns": report.columns,
            "partitions": parts,
        })


@dataclass(frozen=True)
class _PartitionContext:
    """One stored partition with the boundary rows of its neighbours that its bars need.

    Bars are right-closed ``(S, E]`` (see :mod:`features.realized`) while a partition holds the rows
    with ``ts`` in ``[p0, p1)``; so the partition *owns* the bars closing in ``(p0, p1]``. The last
    bar's closing rows, stamped exactly ``p1``, live in the next partition, and the first bar's
    opening price (previous tick) is the previous partition's last row. Both are read with the
    partition, and output bars outside ``(p0, p1]`` are dropped, so per-partition results equal
    those of one pass over the whole series. The cache key covers the neighbours whose rows are used.
    """

    part: str
    p0: pd.Timestamp
    p1: pd.Timestamp
    prev: str | None
    prev_max_ts: pd.Timestamp | None
    next: str | None
    key: str

    def load(self, store: DataStore, dataset: str) -> pd.DataFrame:
        """The partition's rows with the previous partition's last rows and the next one's at ``p1``."""
        root = store.path(dataset)
        pieces = []
        if self.prev is not None:
            pieces.append(pd.read_parquet(root / self.prev, filters=[(S.TS, ">=", self.prev_max_ts)]))
        pieces.append(pd.read_parquet(root / self.part))
        if self.next is not None:
            pieces.append(pd.read_parquet(root / self.next, filters=[(S.TS, "<=", self.p1)]))
        pieces = [p for p in pieces if not p.empty]
        return pieces[0] if len(pieces) == 1 else pd.concat(pieces, ignore_index=True)

    def trim(self, out: pd.DataFrame) -> pd.DataFrame:
        """Keep the bars this partition owns (``p0 < ts <= p1``)."""
        if out.empty or S.TS not in out.columns:
            return out
        return out.loc[(out[S.TS] > self.p0) & (out[S.TS] <= self.p1)].reset_index(drop=True)


_PERIOD_OFFSET = {"D": pd.DateOffset(days=1), "M": pd.DateOffset(months=1), "Y": pd.DateOffset(years=1)}


def _partition_context(info: dict, rels: list[str], i: int) -> _PartitionContext:
    """The :class:`_PartitionContext` of ``rels[i]`` (``rels`` sorted, so a symbol's partitions are
    consecutive and in date order), from the table's manifest entry alone."""
    import hashlib

    rel = rels[i]
    parts = info["partitions"]
    folder, name = rel.rsplit("/", 1)
    p0 = pd.Timestamp(name.removeprefix("date=").removesuffix(".parquet"), tz="UTC")
    p1 = p0 + _PERIOD_OFFSET[partition_period(info["kind"], _interval(info))]
    prev = rels[i - 1] if i > 0 and rels[i - 1].rsplit("/", 1)[0] == folder else None
    nxt = rels[i + 1] if i + 1 < len(rels) and rels[i + 1].rsplit("/", 1)[0] == folder else None
    if nxt is not None and pd.Timestamp(parts[nxt]["min_ts"]) > p1:
        nxt = None  # no row stamped p1: the next partition does not touch this one's bars
    token = ":".join([parts[rel]["digest"], "" if prev is None else parts[prev]["digest"],
                      "" if nxt is None else parts[nxt]["digest"]])
    return _PartitionContext(
        part=rel, p0=p0, p1=p1, prev=prev,
        prev_max_ts=None if prev is None else pd.Timestamp(parts[prev]["max_ts"]),
        next=nxt, key=hashlib.blake2b(token.encode(), digest_size=8).hexdigest(),
    )


def _spec_key(spec: FeatureSpec) -> str:
    import hashlib

    return hashlib.blake2b(json.dumps([FEATURE_SET_VERSION, spec.freq, spec.grid, spec.min_coverage]).encode(),
                           digest_size=4).hexdigest()


def _fmt(td: pd.Timedelta) -> str:
    s = int(td.total_seconds())
    return f"{s // 60}min" if s % 60 == 0 else f"{s}s"


def squared_return_variance(bars: pd.DataFrame, interval: pd.Timedelta, freq: str,
                            min_coverage: float = 0.85) -> pd.DataFrame:
    """Realized variance from bars too coarse for a sampling grid: per ``freq`` bar, the sum of
    squared log returns between consecutive closes (bars exactly ``interval`` apart) ending in it.

    Returns ts (the ``freq`` bar close, right-closed bins), symbol, rv_var, n_obs, coverage, valid,
    close. A bar is valid when at least ``min_coverage`` of its ``freq / interval`` returns exist.
    """
    f = bars.sort_values([S.SYMBOL, S.TS], kind="stable")
    out = []
    expected = pd.Timedelta(freq) / interval
    for sym, g in f.groupby(S.SYMBOL, sort=False):
        ts = g[S.TS]
        r = np.log(g[S.CLOSE].to_numpy())
        d = np.diff(r, prepend=np.nan)
        step_ok = ts.diff().to_numpy() == np.timedelta64(interval.value, "ns")
        sq = pd.Series(np.where(step_ok, d * d, np.nan), index=pd.DatetimeIndex(ts))
        agg = sq.resample(freq, closed="right", label="right").agg(["sum", "count"])
        close = pd.Series(g[S.CLOSE].to_numpy(), index=pd.DatetimeIndex(ts)).resample(
            freq, closed="right", label="right").last()
        cov = agg["count"].to_numpy() / expected
        out.append(pd.DataFrame({S.TS: agg.index, S.SYMBOL: sym, S.RV: agg["sum"].to_numpy(),
                                 S.N_OBS: agg["count"].to_numpy(dtype="float64"), "coverage": cov,
                                 "valid": cov >= min_coverage, S.CLOSE: close.to_numpy()}))
    return pd.concat(out, ignore_index=True) if out else pd.DataFrame()


def _valid_from_nobs(f: pd.DataFrame, min_share: float = 250 / 288) -> np.ndarray:
    """Validity of precomputed measures: finite positive RV and, where ``n_obs`` exists, at least
    ``min_share`` of the day's median observation count (250 of 288 five-minute returns)."""
    rv = f[S.RV].to_numpy(dtype="float64", na_value=np.nan)
    ok = np.isfinite(rv) & (rv > 0)
    if S.N_OBS in f.columns:
        n = f[S.N_OBS].to_numpy(dtype="float64", na_value=np.nan)
        full = np.nanmedian(n) if np.isfinite(n).any() else np.nan
        ok &= np.nan_to_num(n) >= min_share * full
    return ok


def assemble(base: pd.DataFrame, spec: FeatureSpec, extra: list[pd.DataFrame] | None = None) -> pd.DataFrame:
    """Join base measures with extra features; add HAR aggregates, lags, calendar, market context
    and forward targets. Pure function of its inputs (tested for no look-ahead)."""
    from features.calendar import calendar_features

    f = base.sort_values([S.SYMBOL, S.TS], kind="stable").drop_duplicates([S.SYMBOL, S.TS], keep="last")
    f = f.reset_index(drop=True)
    if "valid" not in f.columns:
        f["valid"] = np.isfinite(f[S.RV].to_numpy()) & (f[S.RV].to_numpy() > 0)
    for x in extra or []:
        cols = [c for c in x.columns if c not in f.columns or c in (S.TS, S.SYMBOL)]
        f = f.merge(x[cols], on=[S.TS, S.SYMBOL], how="left")
    # HAR inputs: measures observed on invalid bars are not used as regressors
    har_cols = [c for c in (S.RV, S.BV, S.RQ, S.RS_POS, S.RS_NEG) if c in f.columns]
    masked = f.copy()
    masked.loc[~f["valid"].to_numpy(dtype=bool), har_cols] = np.nan
    parts = [f, har_aggregates(masked, har_cols[:1], spec.har_windows),
             lags(masked, [S.RV], (1, 2))]
    if len(har_cols) > 1:
        parts.append(har_aggregates(masked, har_cols[1:], (1,), log=False).rename(
            columns=lambda c: c.replace("_har1", "_t")))
    cal_rows = []
    for sym, idx in f.groupby(S.SYMBOL, sort=False).indices.items():
        c = calendar_features(f[S.TS].iloc[idx], calendar=symbol_meta(str(sym)).calendar)
        c.index = f.index[idx]
        cal_rows.append(c)
    parts.append(pd.concat(cal_rows).loc[f.index])
    if f[S.SYMBOL].nunique() > 1:
        parts.append(market_aggregates(masked.fillna({S.RV: np.nan}), [S.RV]))
    out = pd.concat(parts, axis=1)
    out = out.loc[:, ~out.columns.duplicated()]
    interval = pd.Timedelta(spec.freq)
    tgt = []
    for sym, idx in out.groupby(S.SYMBOL, sort=False).indices.items():
        cal = symbol_meta(str(sym)).calendar
        sub = out.iloc[idx]
        tgt.append(forward_mean(sub, S.RV, spec.horizons,
                                interval=interval if cal == "24/7" else None))
    return pd.concat([out, pd.concat(tgt).loc[out.index]], axis=1)
