"""Walk-forward evaluation of volatility forecasters: forecasts, losses, DM tests and the MCS.

:func:`walk_forward` runs every model's out-of-sample path (:meth:`BaseForecaster.walk_forward`:
re-estimation at each origin on the data available then), attaches the realized targets, and scores
the models on the **same** origins (per symbol and horizon, the origins every evaluated model
forecast and whose target is known).

Definitions
-----------
- Realized target at origin ``t``, horizon ``h``: the mean ``rv_var`` over the next ``h`` rows of the
  cleaned series (rows with ``n_obs < min_obs`` dropped, as in the models).
- With ``truth`` (simulated data: the true integrated variance per period), the same mean of the
  truth over the same rows is the ``truth_var`` target and every loss is also computed against it.
- Stressed periods: per symbol, a period is *stressed* when its ``rv_var`` is at or above the
  ``stress_quantile`` (default 0.99, the worst 1%) of the symbol's ``rv_var`` over the evaluation
  span (the periods that serve as targets); an (origin, horizon) row is stressed when any period of
  its target window is. This is an ex-post classification for reporting, never a model input.
- Benchmark: per symbol and horizon, the model with the lowest mean QLIKE among ``baselines``
  (default: all models) unless ``benchmark`` names one. ``qlike_ratio`` = QLIKE / benchmark QLIKE;
  Diebold-Mariano tests compare each model with it (``d = loss_model - loss_benchmark``, negative =
  better, Newey-West lag ``h - 1``).
- Pooled rows (``symbol == "pooled"``) average the losses over symbols; pooled DM and MCS use the
  cross-sectional mean loss per origin (origins common to all symbols).
"""

from __future__ import annotations

import warnings
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd
from sklearn.base import clone

from features.errors import ConfigError, Failure, FailureReason, ModelError
from features.schema import RV, SYMBOL, TS
from models.base import (
    BaseForecaster,
    InsufficientHistoryError,
    MissingInputsError,
    prepare_panels,
    target_mean,
)
from models.forecast import FRAME_COLUMNS
from models.losses import diebold_mariano, model_confidence_set, mse, mse_log, qlike
from models.schedule import WalkForward

POOLED = "pooled"


class SkippedModelWarning(UserWarning):
    """A model was left out of an evaluation; its :class:`~features.errors.Failure` says why."""

_LOSSES = {"qlike": qlike, "mse": mse, "mse_log": mse_log}


@dataclass(frozen=True)
class EvaluationResult:
    """The outcome of :func:`walk_forward`.

    Attributes
    ----------
    forecasts : long forecast table (columns of :meth:`VolForecast.to_frame`, ``model_id`` = the
        configuration name) with ``realized_var`` filled, plus ``truth_var`` (when truth was given),
        ``stressed`` and ``evaluated`` (the row is in the common scoring sample).
    losses : one row per model, symbol (and "pooled"), horizon, regime ("all", "calm",
        "stressed") and target ("realized", "truth"): n, qlike, mse, mse_log, rmspe, qlike_ratio.
    dm : Diebold-Mariano tests of each model against the benchmark.
    mcs : Model Confidence Set p-values and membership on QLIKE.
    benchmark : (symbol, horizon) -> benchmark model name.
    skipped : model name -> why it was not evaluated (e.g. missing inputs): the message of its
        :class:`~features.errors.Failure` in ``failures``.
    n_configurations : number of model configurations tried (all keys of ``models``), to report
        alongside any "best model" claim.
    settings : the evaluation settings.
    failures : one :class:`~features.errors.Failure` per skipped model (subject = the model name,
        reason MISSING_INPUTS or INSUFFICIENT_HISTORY).
    """

    forecasts: pd.DataFrame
    losses: pd.DataFrame
    dm: pd.DataFrame
    mcs: pd.DataFrame
    benchmark: Mapping[tuple[str, int], str]
    skipped: Mapping[str, str]
    n_configurations: int
    settings: Mapping[str, object] = field(default_factory=dict)
    failures: tuple[Failure, ...] = ()

    def with_missing_inputs(self, reasons: Mapping[str, str]) -> EvaluationResult:
        """This result with the models of ``reasons`` (name -> why) recorded as skipped for
        missing inputs (``skipped`` and a ``MISSING_INPUTS`` :class:`Failure` each), first."""
        if not reasons:
            return self
        return replace(
            self, skipped={**reasons, **self.skipped},
            failures=(*(Failure(FailureReason.MISSING_INPUTS, k, why) for k, why in reasons.items()),
                      *self.failures))

    def summary(self, target: str = "realized") -> pd.DataFrame:
        """A tidy table: one row per model, symbol (incl. "pooled") and horizon with n, qlike,
        qlike_ratio, mse, mse_log, rmspe, the calm and stressed QLIKE, DM statistic and p-value
        against the benchmark, MCS p-value and membership, and the share of insanity fallbacks."""
        keys = ["model_id", "symbol", "horizon"]
        loss = self.losses[self.losses["target"] == target]
        if loss.empty:
            raise ValueError(
                f"no losses for target {target!r}; have {sorted(self.losses['target'].unique())}"
            )
        base = loss[loss["regime"] == "all"].drop(columns=["regime", "target"])
        for regime in ("calm", "stressed"):
            part = loss[loss["regime"] == regime][[*keys, "qlike"]].rename(
                columns={"qlike": f"qlike_{regime}"}
            )
            base = base.merge(part, on=keys, how="left")
        dm = self.dm[self.dm["target"] == target][[*keys, "benchmark", "dm_stat", "dm_pvalue"]]
        base = base.merge(dm, on=keys, how="left")
        mcs = self.mcs[self.mcs["target"] == target][[*keys, "mcs_pvalue", "in_mcs"]]
        base = base.merge(mcs, on=keys, how="left")
        ev = self.forecasts[self.forecasts["evaluated"]]
        fb = ev.assign(fb=ev["fallback_reason"].notna()).groupby(keys)["fb"]
        share = fb.mean().rename("fallback_share").reset_index()
        pooled = (
            ev.assign(fb=ev["fallback_reason"].notna())
            .groupby(["model_id", "horizon"])["fb"]
            .mean()
            .rename("fallback_share")
            .reset_index()
            .assign(symbol=POOLED)
        )
        base = base.merge(pd.concat([share, pooled], ignore_index=True), on=keys, how="left")
        return base.sort_values(["symbol", "horizon", "qlike"]).reset_index(drop=True)


def _targets(
    panels: Mapping, truth_panels: Mapping | None, horizons: Sequence[int]
) -> pd.DataFrame:
    rows = []
    for sym, p in panels.items():
        rv = p.col(RV)
        tv = None if truth_panels is None else truth_panels.get(sym)
        for h in horizons:
            part = pd.DataFrame(
                {"symbol": sym, "origin_ts": p.ts, "horizon": int(h), "y": target_mean(rv, h)}
            )
            if truth_panels is not None:
                part["truth"] = target_mean(tv, h) if tv is not None else np.nan
            rows.append(part)
    return pd.concat(rows, ignore_index=True)


def _stress_flags(
    panels: Mapping, horizons: Sequence[int], spans: Mapping, q: float
) -> pd.DataFrame:
    rows = []
    for sym, p in panels.items():
        if sym not in spans:
            continue
        first, last = spans[sym]
        rv = p.col(RV)
        in_span = (p.ts > first) & (p.ts <= last)
        if not in_span.any():
            continue
        threshold = np.quantile(rv[in_span], q)
        day = (rv >= threshold) & in_span
        for h in horizons:
            nxt = np.zeros(len(rv), dtype=bool)
            for k in range(1, h + 1):
                nxt[:-k] |= day[k:]
            rows.append(
                pd.DataFrame({"symbol": sym, "origin_ts": p.ts, "horizon": int(h), "stressed": nxt})
            )
    return pd.concat(rows, ignore_index=True)


def _loss_rows(ev: pd.DataFrame, target_col: str, target: str) -> pd.DataFrame:
    out = []
    y = ev[target_col].to_numpy(dtype="float64")
    f = ev["forecast_var"].to_numpy(dtype="float64")
    frame = ev[["model_id", "symbol", "horizon", "origin_ts", "stressed"]].copy()
    for name, fn in _LOSSES.items():
        frame[name] = fn(y, f)
    frame["spe"] = ((f - y) / y) ** 2
    for regime, mask in (
        ("all", np.ones(len(frame), dtype=bool)),
        ("calm", ~frame["stressed"].to_numpy()),
        ("stressed", frame["stressed"].to_numpy()),
    ):
        sub = frame[mask]
        if sub.empty:
            continue
        for by, sym in (
            (["model_id", "symbol", "horizon"], None),
            (["model_id", "horizon"], POOLED),
        ):
            g = sub.groupby(by)
            agg = g[["qlike", "mse", "mse_log", "spe"]].mean()
            agg["n"] = g.size()
            agg = agg.reset_index()
            if sym is not None:
                agg["symbol"] = sym
            agg["rmspe"] = np.sqrt(agg.pop("spe"))
            agg["regime"] = regime
            agg["target"] = target
            out.append(agg)
    return pd.concat(out, ignore_index=True), frame


def walk_forward(
    models: Mapping[str, BaseForecaster],
    data: pd.DataFrame,
    *,
    horizons: Sequence[int] = (1, 5),
    start: pd.Timestamp | str | None = None,
    end: pd.Timestamp | str | None = None,
    schedule: WalkForward | None = None,
    schedules: Mapping[str, WalkForward] | None = None,
    window: int | None = 1000,
    window_type: str | None = "rolling",
    refit_every: int | None = 1,
    purge: int | None = None,
    own_schedule: Collection[str] = (),
    truth: pd.DataFrame | None = None,
    truth_col: str = "iv_var",
    min_obs: float | None = 250,
    benchmark: str | None = None,
    baselines: Sequence[str] | None = None,
    stress_quantile: float = 0.99,
    mcs_size: float = 0.10,
    mcs_reps: int = 1000,
    random_state: int | np.random.Generator = 0,
) -> EvaluationResult:
    """Evaluate forecasters out of sample (see module docs for the definitions).

    Parameters
    ----------
    models : configuration name -> unfitted forecaster (cloned, never modified).
    data : canonical realized frame (``ts``, ``symbol``, ``rv_var``, optional inputs), full history.
    horizons : horizons in periods.
    start, end : first and last origin (inclusive); None = the data's ends.
    schedule : the :class:`~models.schedule.WalkForward` every model runs on (its None fields =
        each model's own); None = ``WalkForward(window, window_type, refit_every, purge)``.
    schedules : per-model schedules (name -> WalkForward) replacing ``schedule`` for those models;
        a None ``purge`` in one takes the common purge.
    window, window_type, refit_every, purge : the common schedule's fields when ``schedule`` is
        None (see :meth:`BaseForecaster.walk_forward`).
    own_schedule : names of models that keep their own ``window``, ``window_type`` and
        ``refit_every`` (e.g. LightGBM retrained every 21 periods on an expanding window, GARCH
        re-estimated weekly and filtered daily): shorthand for ``schedules={name: WalkForward()}``;
        the purge still applies.
    truth : optional long frame (``ts``, ``symbol``, ``truth_col``) of true per-period variance.
    truth_col : the truth column.
    min_obs : rows with ``n_obs`` below this are dropped (set on every model that has ``min_obs``).
    benchmark : the model every other is compared with; None = the best of ``baselines``.
    baselines : candidate benchmarks; None = all models.
    stress_quantile : periods with ``rv_var`` at or above this quantile are stressed.
    mcs_size, mcs_reps : Model Confidence Set size and bootstrap replications (block length
        ``max(h, n^(1/3))``).
    random_state : seed or generator of the MCS bootstrap.
    """
    if not isinstance(models, Mapping) or not models:
        raise ConfigError("models must be a non-empty dict name -> BaseForecaster")
    for name, m in models.items():
        if not isinstance(m, BaseForecaster):
            raise TypeError(f"models[{name!r}] must be a BaseForecaster; got {type(m).__name__}")
    if benchmark is not None and benchmark not in models:
        raise ConfigError(f"benchmark {benchmark!r} is not one of the models {list(models)}")
    if unknown := [n for n in own_schedule if n not in models]:
        raise ConfigError(f"own_schedule names {unknown} are not among the models {list(models)}")
    if unknown := [n for n in (schedules or {}) if n not in models]:
        raise ConfigError(f"schedules names {unknown} are not among the models {list(models)}")
    common = schedule if schedule is not None else WalkForward(window, window_type, refit_every, purge)  # type: ignore[arg-type]
    per_model = {**{n: WalkForward() for n in own_schedule}, **(schedules or {})}
    if baselines is not None and (unknown := [b for b in baselines if b not in models]):
        raise ConfigError(f"baselines {unknown} are not among the models {list(models)}")
    if not 0 < stress_quantile < 1:
        raise ConfigError(f"stress_quantile must be in (0, 1); got {stress_quantile}")
    hs = tuple(sorted(int(h) for h in horizons))
    rng = (
        random_state
        if isinstance(random_state, np.random.Generator)
        else np.random.default_rng(random_state)
    )

    frames, failures = [], []

    def skip(name: str, reason: FailureReason, message: str) -> None:
        failures.append(Failure(reason, name, message))
        warnings.warn(
            f"walk_forward skips model {name!r}: {message}", SkippedModelWarning, stacklevel=3
        )

    rows_per_symbol = int(data.groupby(SYMBOL).size().max()) if len(data) else 0
    for name, model in models.items():
        m = clone(model)
        if "min_obs" in m.get_params(deep=False):
            m.set_params(min_obs=min_obs)
        sched = per_model.get(name, common)
        if sched.purge is None:
            sched = sched.with_(purge=common.purge)
        need = type(m).min_history(m)  # via the class: a hyperparameter may shadow it (QLIKE combo)
        own_window = sched.over(WalkForward.of(m)).window
        most = rows_per_symbol if own_window is None else min(int(own_window), rows_per_symbol)
        if most < need:
            skip(name, FailureReason.INSUFFICIENT_HISTORY,
                 f"needs at least {need} rows in its estimation window; has at most {most} "
                 f"(window {own_window}, {rows_per_symbol} rows per symbol)")
            continue
        try:
            fcs = m.walk_forward(data, hs, start=start, end=end, schedule=sched)
        except MissingInputsError as exc:
            skip(name, FailureReason.MISSING_INPUTS, str(exc))
            continue
        except InsufficientHistoryError as exc:
            skip(name, FailureReason.INSUFFICIENT_HISTORY, str(exc))
            continue
        if not fcs:
            skip(name, FailureReason.INSUFFICIENT_HISTORY,
                 "no origin in range had enough history to forecast")
            continue
        for fc in fcs.values():
            frames.append(fc.to_frame().assign(model_id=name))
    skipped = {f.subject: f.message for f in failures}
    if not frames:
        raise ModelError(
            "no model could be evaluated: "
            + "; ".join(f"{f.subject}: {f.message}" for f in failures)
        )
    table = pd.concat(frames, ignore_index=True)

    panels = prepare_panels(data, [RV], min_obs=min_obs, owner="walk_forward")
    truth_panels = None
    if truth is not None:
        missing = [c for c in (TS, SYMBOL, truth_col) if c not in truth.columns]
        if missing:
            raise ValueError(f"truth is missing column(s) {missing}; got {list(truth.columns)}")
        truth_panels = {}
        tt = truth.assign(**{TS: pd.to_datetime(truth[TS], utc=True)})
        for sym, p in panels.items():
            s = tt[tt[SYMBOL] == sym].set_index(TS)[truth_col]
            truth_panels[sym] = s.reindex(p.ts).to_numpy(dtype="float64")
    targets = _targets(panels, truth_panels, hs)
    table = table.drop(columns=["realized_var"]).merge(
        targets, on=["symbol", "origin_ts", "horizon"], how="left"
    )
    table = table.rename(columns={"y": "realized_var", "truth": "truth_var"})

    evaluated_models = table["model_id"].unique()
    known = table["realized_var"].notna()
    if truth is not None:
        known &= table["truth_var"].notna()
    counts = table[known].groupby(["symbol", "horizon", "origin_ts"])["model_id"].transform("size")
    table["evaluated"] = False
    table.loc[counts.index, "evaluated"] = (counts == len(evaluated_models)).to_numpy()
    ev_rows = table[table["evaluated"]]
    if ev_rows.empty:
        raise ModelError("no origin has forecasts from every model and a known target")

    spans = {}
    for sym, g in ev_rows.groupby("symbol"):
        p = panels[sym]
        last_origin = g["origin_ts"].max()
        pos = int(np.searchsorted(p.ts, last_origin))
        spans[sym] = (g["origin_ts"].min(), p.ts[min(pos + max(hs), len(p) - 1)])
    flags = _stress_flags(panels, hs, spans, stress_quantile)
    table = table.merge(flags, on=["symbol", "origin_ts", "horizon"], how="left")
    table["stressed"] = table["stressed"].fillna(False).astype(bool)
    lead = [c for c in FRAME_COLUMNS if c in table.columns]
    qcols = [c for c in table.columns if c.startswith("q_")]
    i = lead.index("forecast_var") + 1
    extra = ["truth_var"] if truth is not None else []
    table = table[[*lead[:i], *qcols, *lead[i:], *extra, "stressed", "evaluated"]]
    table = table.sort_values(["model_id", "symbol", "origin_ts", "horizon"]).reset_index(drop=True)
    ev = table[table["evaluated"]]

    targets_used = [("realized_var", "realized")] + (
        [("truth_var", "truth")] if truth is not None else []
    )
    loss_tables, per_obs = [], {}
    for col, tname in targets_used:
        lt, obs = _loss_rows(ev, col, tname)
        loss_tables.append(lt)
        per_obs[tname] = obs
    losses = pd.concat(loss_tables, ignore_index=True)

    # benchmark per (symbol, horizon), chosen on realized QLIKE over all periods
    cand = list(models) if baselines is None else list(baselines)
    base_all = losses[(losses["regime"] == "all") & (losses["target"] == "realized")]
    bench: dict[tuple[str, int], str] = {}
    for (sym, h), g in base_all.groupby(["symbol", "horizon"]):
        if benchmark is not None and benchmark in set(g["model_id"]):
            bench[(sym, int(h))] = benchmark
        else:
            gg = g[g["model_id"].isin(cand)]
            gg = gg if not gg.empty else g
            bench[(sym, int(h))] = str(gg.loc[gg["qlike"].idxmin(), "model_id"])
    ref = losses.apply(lambda r: bench.get((r["symbol"], int(r["horizon"]))), axis=1)
    ref_q = losses.assign(model_id=ref).merge(
        losses[["model_id", "symbol", "horizon", "regime", "target", "qlike"]].rename(
            columns={"qlike": "bench_qlike"}
        ),
        on=["model_id", "symbol", "horizon", "regime", "target"],
        how="left",
    )["bench_qlike"]
    losses["qlike_ratio"] = losses["qlike"].to_numpy() / ref_q.to_numpy()
    losses = losses[
        [
            "model_id",
            "symbol",
            "horizon",
            "regime",
            "target",
            "n",
            "qlike",
            "qlike_ratio",
            "mse",
            "mse_log",
            "rmspe",
        ]
    ]

    dm_rows, mcs_rows = [], []
    for tname, obs in per_obs.items():
        wide = obs.pivot_table(
            index=["symbol", "horizon", "origin_ts"], columns="model_id", values="qlike"
        )
        pooled = wide.groupby(level=["horizon", "origin_ts"]).mean()
        n_sym = wide.groupby(level=["horizon", "origin_ts"]).size()
        pooled = pooled[n_sym == obs["symbol"].nunique()]
        groups = [((sym, h), g.droplevel([0, 1])) for (sym, h), g in wide.groupby(level=[0, 1])]
        groups += [((POOLED, h), g.droplevel(0)) for h, g in pooled.groupby(level=0)]
        for (sym, h), g in groups:
            g = g.dropna(axis=1, how="all").dropna()
            b = bench.get((sym, int(h)))
            for mname in g.columns:
                if b is None or mname == b or b not in g.columns:
                    continue
                try:
                    r = diebold_mariano(g[mname].to_numpy(), g[b].to_numpy(), h=int(h))
                    stat, p, pl = r.stat, r.pvalue, r.pvalue_less
                except ValueError:
                    stat = p = pl = np.nan
                dm_rows.append(
                    {
                        "model_id": mname,
                        "symbol": sym,
                        "horizon": int(h),
                        "target": tname,
                        "benchmark": b,
                        "dm_stat": stat,
                        "dm_pvalue": p,
                        "dm_pvalue_less": pl,
                        "n": len(g),
                    }
                )
            res = model_confidence_set(g, size=mcs_size, h=int(h), reps=mcs_reps, random_state=rng)
            for mname in g.columns:
                mcs_rows.append(
                    {
                        "model_id": mname,
                        "symbol": sym,
                        "horizon": int(h),
                        "target": tname,
                        "mcs_pvalue": float(res.pvalues[mname]),
                        "in_mcs": mname in res.included,
                    }
                )
    dm_cols = [
        "model_id",
        "symbol",
        "horizon",
        "target",
        "benchmark",
        "dm_stat",
        "dm_pvalue",
        "dm_pvalue_less",
        "n",
    ]
    mcs_cols = ["model_id", "symbol", "horizon", "target", "mcs_pvalue", "in_mcs"]
    return EvaluationResult(
        forecasts=table,
        losses=losses,
        dm=pd.DataFrame(dm_rows, columns=dm_cols),
        mcs=pd.DataFrame(mcs_rows, columns=mcs_cols),
        benchmark=bench,
        skipped=skipped,
        failures=tuple(failures),
        n_configurations=len(models),
        settings={
            "horizons": hs,
            "start": start,
            "end": end,
            "window": window,
            "window_type": window_type,
            "refit_every": refit_every,
            "purge": purge,
            "min_obs": min_obs,
            "stress_quantile": stress_quantile,
            "mcs_size": mcs_size,
            "mcs_reps": mcs_reps,
        },
    )


def merge_evaluations(results: Mapping[str, EvaluationResult]) -> EvaluationResult:
    """One :class:`EvaluationResult` from per-symbol evaluations (the mapped tasks' outputs).

    Per-symbol rows are kept as they are. Pooled loss rows are rebuilt exactly as
    :func:`models.evaluation.walk_forward` defines them (means over all scored rows of all symbols:
    the ``n``-weighted means of the per-symbol means; RMSPE from the weighted mean square), and the
    pooled benchmark is the baseline with the lowest pooled QLIKE. Pooled Diebold-Mariano and MCS
    rows need the per-origin cross-section and are left out (per-symbol ones are kept).
    """
    if not results:
        raise ConfigError("merge_evaluations needs at least one per-symbol result; got none")
    items = list(results.values())
    loss = pd.concat([r.losses[r.losses["symbol"] != POOLED] for r in items], ignore_index=True)
    keys = ["model_id", "horizon", "regime", "target"]
    w = loss["n"].astype("float64")
    tmp = loss.assign(
        **{f"w_{c}": loss[c] * w for c in ("qlike", "mse", "mse_log")},
        w_sq=loss["rmspe"] ** 2 * w,
        w_n=w,
    )
    g = tmp.groupby(keys, sort=True)[["w_qlike", "w_mse", "w_mse_log", "w_sq", "w_n"]].sum()
    pooled = (
        pd.DataFrame(
            {
                "qlike": g["w_qlike"] / g["w_n"],
                "mse": g["w_mse"] / g["w_n"],
                "mse_log": g["w_mse_log"] / g["w_n"],
                "rmspe": np.sqrt(g["w_sq"] / g["w_n"]),
                "n": g["w_n"].astype("int64"),
            }
        )
        .reset_index()
        .assign(symbol=POOLED)
    )
    baselines = set()
    for r in items:
        baselines |= set(r.benchmark.values())
    bench: dict[tuple[str, int], str] = {}
    for r in items:
        bench.update({k: v for k, v in r.benchmark.items() if k[0] != POOLED})
    base_all = pooled[(pooled["regime"] == "all") & (pooled["target"] == "realized")]
    for h, gg in base_all.groupby("horizon"):
        cand = gg[gg["model_id"].isin(baselines)]
        cand = cand if not cand.empty else gg
        bench[(POOLED, int(h))] = str(cand.loc[cand["qlike"].idxmin(), "model_id"])
    ref = pooled.apply(lambda r: bench[(POOLED, int(r["horizon"]))], axis=1)
    bq = pooled.set_index(["model_id", "horizon", "regime", "target"])["qlike"]
    pooled["qlike_ratio"] = [
        row.qlike / bq.get((b, row.horizon, row.regime, row.target), np.nan)
        for row, b in zip(pooled.itertuples(index=False), ref, strict=True)
    ]
    cols = list(items[0].losses.columns)
    losses = pd.concat([loss, pooled[cols]], ignore_index=True)
    skipped: dict[str, str] = {}
    for sym, r in results.items():
        for m, why in r.skipped.items():
            skipped[m] = skipped.get(m, "") + (
                f"; {sym}: {why}" if m in skipped else f"{sym}: {why}"
            )
    return EvaluationResult(
        forecasts=pd.concat([r.forecasts for r in items], ignore_index=True),
        losses=losses,
        dm=pd.concat([r.dm[r.dm["symbol"] != POOLED] for r in items], ignore_index=True),
        mcs=pd.concat([r.mcs[r.mcs["symbol"] != POOLED] for r in items], ignore_index=True),
        benchmark=bench,
        skipped=skipped,
        failures=tuple(Failure(f.reason, f.subject, f"{sym}: {f.message}", f.details)
                       for sym, r in results.items() for f in r.failures),
        n_configurations=max(r.n_configurations for r in items),
        settings={**dict(items[0].settings), "merged_symbols": sorted(results)},
    )
