"""The risk team's backtest report (``dprm report``): one self-contained HTML file (inline SVG
charts, inline CSS, no network), the CSV and parquet of every number beside it, logged to MLflow as
artifacts of a ``backtest`` run.

Contents: the summary table per portfolio x method x anti-procyclicality variant with the Basel
zone colour-coded (coverage of VaR99 before APC, of the final margin after it, the ES test, cost,
procyclicality); per-portfolio charts of margin against realized loss with breaches marked; the
procyclicality chart (margin as % of notional through the window's worst stretch); the
forecast-accuracy table of the champion's evaluation; the bundle ids and model versions.

The page carries a small inline script that counts the rendered charts (non-empty SVG) and any
script error into ``<body data-charts=... data-errors=...>``: the headless-browser check reads
them from Chromium's DOM dump.
"""

from __future__ import annotations

import html
import io
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from features.errors import ConfigError
from features.store import atomic_write_bytes

__all__ = ["latest_backtest", "render_report", "write_report"]

_CSS = """
body{font-family:system-ui,sans-serif;margin:24px;color:#222;max-width:1200px}
h1{font-size:22px}h2{font-size:18px;margin-top:28px}
table{border-collapse:collapse;font-size:12px}td,th{border:1px solid #ccc;padding:3px 6px;text-align:right}
th{background:#f3f3f3}td.l{text-align:left}
.green{background:#d8f0d8}.yellow{background:#fff3c4}.red{background:#f8d0d0}
.note{color:#555;font-size:13px}figure{margin:12px 0}
"""

_SCRIPT = """
<script>
(function(){
  var errors=[];
  window.addEventListener('error',function(e){errors.push(String(e.message));});
  window.addEventListener('load',function(){
    var n=0;document.querySelectorAll('figure svg').forEach(function(s){
      if(s.querySelectorAll('path,line,polyline,rect').length>0){n++;}});
    document.body.setAttribute('data-charts',String(n));
    document.body.setAttribute('data-figures',String(document.querySelectorAll('figure').length));
    document.body.setAttribute('data-errors',String(errors.length));
  });
})();
</script>
"""


def latest_backtest(home: Path | str, dataset: str) -> Path:
    """The folder of the dataset's latest backtest (``dprm backtest`` writes it)."""
    f = Path(home) / "backtest" / dataset / "latest.json"
    if not f.is_file():
        raise ConfigError(f"no backtest of dataset '{dataset}' under {Path(home) / 'backtest'}: run "
                          f"`dprm backtest --data {dataset}` first")
    return Path(json.loads(f.read_text())["path"])


def _svg(fig: Any) -> str:
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None})
    s = buf.getvalue()
    return s[s.index("<svg"):]


def _plt() -> Any:
    os.environ.setdefault("MPLCONFIGDIR", str(Path.home() / ".cache" / "dprm-mpl"))
    import matplotlib

    matplotlib.use("Agg")
    matplotlib.rcParams["svg.hashsalt"] = "dprm"  # deterministic ids: same inputs, same bytes
    matplotlib.rcParams["svg.fonttype"] = "none"
    import matplotlib.pyplot as plt

    return plt


def _margin_chart(f: pd.DataFrame, portfolio: str, methods: list[str]) -> str:
    plt = _plt()
    g = f[(f["portfolio"] == portfolio) & (f["apc"] == "none")]
    fig, ax = plt.subplots(figsize=(10, 3.6))
    first = g[g["method"] == methods[0]].sort_values("date")
    ax.bar(first["date"], first["realized_loss_usd"].clip(lower=0), width=1.0, color="0.75",
           label="realized loss (MPOR)")
    for m in methods:
        x = g[g["method"] == m].sort_values("date")
        line, = ax.plot(x["date"], x["margin_usd"], lw=0.9, label=f"{m} margin")
        b = x[x["breach"]]
        ax.scatter(b["date"], b["realized_loss_usd"], s=14, color=line.get_color(), marker="x",
                   zorder=3)
    ax.set_title(f"{portfolio}: margin before anti-procyclicality vs realized loss "
                 "(x = breach of that method)")
    ax.set_ylabel("USD")
    ax.legend(fontsize=7, ncol=3)
    s = _svg(fig)
    plt.close(fig)
    return s


def _procyclicality_chart(f: pd.DataFrame, portfolio: str, methods: list[str]) -> str:
    plt = _plt()
    g = f[(f["portfolio"] == portfolio) & (f["apc"] == "buffer")]
    fig, ax = plt.subplots(figsize=(10, 3.6))
    for m in methods:
        x = g[g["method"] == m].sort_values("date")
        ax.plot(x["date"], 100 * x["margin_usd"] / x["notional_usd"], lw=0.9, label=m)
    ax.set_yscale("log")
    ax.set_ylabel("margin, % of notional (log)")
    ax.set_title(f"procyclicality: {portfolio}, every method with the same releasable 25% buffer")
    ax.legend(fontsize=7, ncol=4)
    s = _svg(fig)
    plt.close(fig)
    return s


_SUMMARY_COLS = [
    ("portfolio", "portfolio", None), ("method", "method", None), ("apc", "APC", None),
    ("n", "days", "{:.0f}"), ("expected", "exp.", "{:.1f}"),
    ("var_breaches", "VaR99 br.", "{:.0f}"), ("p_pof", "Kupiec p", "{:.3f}"),
    ("p_cc", "CC p", "{:.3f}"), ("p_cc_holm", "CC p Holm", "{:.3f}"),
    ("z2", "Z2", "{:.2f}"), ("z2_crit5", "Z2 crit 5%", "{:.2f}"),
    ("breaches", "margin br.", "{:.0f}"), ("p_upper", "one-sided p", "{:.3f}"),
    ("yellow_windows", "yellow", "{:.0f}"), ("red_windows", "red", "{:.0f}"),
    ("mean_margin_pct", "mean % notional", "{:.2f}"), ("cost_ratio", "cost vs FHS-EWMA", "{:.2f}"),
    ("cost_ratio_hi", "(95% hi)", "{:.2f}"), ("pc_max_30d", "max 30d x", "{:.2f}"),
    ("pc_peak_trough", "peak/trough", "{:.1f}"), ("sf_mean", "mean shortfall", "{:,.0f}"),
]


def _zone(r: Mapping[str, Any]) -> str:
    if r.get("red_windows"):
        return "red"
    if r.get("yellow_windows"):
        return "yellow"
    return "green"


def _table(rows: list[Mapping[str, Any]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for _, h, _ in _SUMMARY_COLS)
    body = []
    for r in rows:
        cells = []
        for k, _, fmt in _SUMMARY_COLS:
            v = r.get(k)
            txt = "" if v is None or (isinstance(v, float) and not np.isfinite(v)) else (
                fmt.format(v) if fmt else str(v))
            cls = ' class="l"' if fmt is None else ""
            cells.append(f"<td{cls}>{html.escape(txt)}</td>")
        body.append(f'<tr class="{_zone(r)}">' + "".join(cells) + "</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def _accuracy(home: Path, dataset: str) -> str:
    """The champion's evaluation scores (QLIKE per model and horizon), from the forecasts on disk."""
    root = home / "forecasts" / dataset
    files = sorted(root.rglob("summary*.csv")) if root.is_dir() else []
    if not files:
        return "<p class='note'>no evaluation summary on disk for this dataset.</p>"
    t = pd.read_csv(files[-1])
    keep = [c for c in ("model_id", "symbol", "horizon", "qlike", "mse_log", "n") if c in t.columns]
    t = t[keep]
    if "symbol" in t.columns:
        t = t[t["symbol"] == "pooled"]
    if "qlike" in t.columns:
        t = t.sort_values(["horizon", "qlike"] if "horizon" in t.columns else ["qlike"])
    return t.head(40).to_html(index=False, float_format=lambda x: f"{x:.4f}", border=0)


def render_report(frame: pd.DataFrame, summary: Mapping[str, Any], *, home: Path | None = None,
                  dataset: str = "") -> str:
    """The HTML page of one backtest (``frame``: the long table; ``summary``: its statistics)."""
    meta = summary.get("meta", {})
    methods = list(dict.fromkeys(meta.get("methods") or sorted(frame["method"].unique())))
    portfolios = sorted(frame["portfolio"].unique())
    rows = summary.get("rows", [])
    parts = [f"<h1>DPRM margin backtest: {html.escape(str(meta.get('dataset', dataset)))} "
             f"{html.escape(str(meta.get('start')))} .. {html.escape(str(meta.get('end')))}</h1>",
             "<p class='note'>Each day's margin from the information of that day (forecasts as "
             "issued in the ledger), against the clean loss over the MPOR (positions frozen, "
             "revalued at its end). Coverage of VaR99 is tested before anti-procyclicality "
             "(Kupiec, Christoffersen; Holm across rows); the final margin one-sided and with the "
             "Basel traffic light per 250-day block. Row colour: the worst zone of its blocks. "
             "Option P&L is model-reconstructed (Black-76 on a flat surface at the vol index).</p>",
             f"<p class='note'>selection overlap: {html.escape(str(meta.get('selection_overlap')))}"
             f"; seeded: {html.escape(', '.join(meta.get('seeded') or []) or 'nothing')}</p>",
             "<h2>Summary</h2>", _table(rows)]
    leads = [(r["portfolio"], r["method"], r["apc"], c, v) for r in rows
             for c, v in (r.get("crash_leads") or {}).items()]
    if leads:
        parts.append("<h2>Crash lead: rise before vs during</h2><table><tr><th>portfolio</th>"
                     "<th>method</th><th>APC</th><th>crash</th><th>rise 5d before</th>"
                     "<th>rise 5d during</th><th>lead share</th></tr>")
        for pf, m, ap, c, v in leads:
            parts.append(f"<tr><td class='l'>{pf}</td><td class='l'>{m}</td><td class='l'>{ap}</td>"
                         f"<td class='l'>{c}</td><td>{v['rise_before']:+.1%}</td>"
                         f"<td>{v['rise_during']:+.1%}</td><td>{v['lead']:.2f}</td></tr>"
                         if np.isfinite(v.get("lead", float("nan"))) else "")
        parts.append("</table>")
    terc = summary.get("mm_vs_deribit_by_vol_tercile") or []
    if terc:
        parts.append("<h2>Option books: MM over the Deribit-style MM, by vol-index tercile</h2>"
                     "<table><tr><th>portfolio</th><th>method</th><th>tercile</th>"
                     "<th>vol index up to</th><th>days</th><th>MM ratio</th></tr>")
        for r in terc:
            parts.append(f"<tr><td class='l'>{html.escape(r['portfolio'])}</td><td class='l'>"
                         f"{html.escape(r['method'])}</td><td class='l'>{r['tercile']}</td>"
                         f"<td>{r['vol_index_max']:.1%}</td><td>{r['n']}</td>"
                         f"<td>{r['mm_ratio']:.2f}</td></tr>")
        parts.append("</table>")
    imp = Path(home) / "backtest" / "impulse.json" if home is not None else None
    if imp is not None and imp.is_file():
        rows_i = json.loads(imp.read_text())
        keys = [k for k in rows_i[0] if k.startswith("after_")] if rows_i else []
        parts.append("<h2>Impulse response: margin after a synthetic step in volatility</h2>"
                     "<p class='note'>margin k days after the step / the day before (simulated "
                     "daily path, long book; the true ratio is the multiplier)</p><table><tr>"
                     "<th>vol x</th><th>method</th><th>APC</th>"
                     + "".join(f"<th>{html.escape(k)}</th>" for k in keys) + "</tr>")
        for x in rows_i:
            parts.append(f"<tr><td>{x['multiplier']:g}</td><td class='l'>{html.escape(x['method'])}"
                         f"</td><td class='l'>{html.escape(x['apc'])}</td>"
                         + "".join(f"<td>{x[k]:.2f}</td>" for k in keys) + "</tr>")
        parts.append("</table>")
    parts.append("<h2>Margin against realized loss</h2>")
    for pf in portfolios:
        parts.append(f"<figure>{_margin_chart(frame, pf, methods)}</figure>")
    parts.append("<h2>Procyclicality</h2>")
    pick = "long" if "long" in portfolios else portfolios[0]
    parts.append(f"<figure>{_procyclicality_chart(frame, pick, methods)}</figure>")
    if home is not None:
        parts.append("<h2>Forecast accuracy (the evaluation behind the champion)</h2>")
        parts.append(_accuracy(Path(home), str(meta.get("dataset", dataset))))
    parts.append("<h2>Models and bundles</h2><ul>")
    for k, v in (meta.get("models") or {}).items():
        parts.append(f"<li>{html.escape(k)}: {html.escape(str(v[0]))} v{html.escape(str(v[1]))}</li>")
    ids = frame["bundle_id"].astype(str)
    parts.append(f"<li>correlation: {html.escape(str(meta.get('correlation')))}</li>"
                 f"<li>{ids.nunique()} bundles, first {html.escape(ids.iloc[0][:12])}, last "
                 f"{html.escape(ids.iloc[-1][:12])} (every id in the CSV)</li>"
                 f"<li>parameters hash {html.escape(str(meta.get('params_hash', ''))[:16])}, run "
                 f"{html.escape(str(meta.get('run_key')))}</li></ul>")
    return ("<!doctype html><html><head><meta charset='utf-8'><title>DPRM backtest</title>"
            f"<style>{_CSS}</style>{_SCRIPT}</head><body>" + "\n".join(parts) + "</body></html>")


def write_report(home: Path | str, dataset: str, *, backtest_dir: Path | None = None,
                 log_mlflow: bool = True) -> dict[str, Any]:
    """Render the report of the dataset's latest backtest (or ``backtest_dir``) to
    ``<backtest dir>/report.html`` with ``backtest.csv`` beside it, log both (and the parquet and
    summary) to MLflow as a run of the ``dprm-backtest`` experiment; returns the paths and run id."""
    home = Path(home)
    d = backtest_dir or latest_backtest(home, dataset)
    frame = pd.read_parquet(d / "backtest.parquet")
    summary = json.loads((d / "summary.json").read_text())
    page = render_report(frame, summary, home=home, dataset=dataset).encode()
    atomic_write_bytes(d / "report.html", page)
    csv = frame.to_csv(index=False).encode()
    atomic_write_bytes(d / "backtest.csv", csv)
    run_id = None
    if log_mlflow:
        from models import registry

        meta = summary.get("meta", {})
        metrics = {}
        for r in summary.get("rows", []):
            if r["apc"] == "none" and r.get("p_cc") is not None:
                metrics[f"{r['portfolio']}.{r['method']}.var_breaches"] = float(r["var_breaches"])
                metrics[f"{r['portfolio']}.{r['method']}.mean_margin_pct"] = float(
                    r["mean_margin_pct"])
        run_id = registry.log_run(
            home=home, target="backtest", run_name=f"backtest-{dataset}",
            params={"dataset": dataset, "start": meta.get("start"), "end": meta.get("end"),
                    "run_key": meta.get("run_key"), "params_hash": meta.get("params_hash")},
            metrics=metrics, tags={"dprm.dataset": dataset, "dprm.kind": "backtest"},
            artifacts={"report.html": page, "backtest.csv": csv,
                       "summary.json": (d / "summary.json").read_bytes(),
                       "backtest.parquet": (d / "backtest.parquet").read_bytes()})
    return {"report": d / "report.html", "csv": d / "backtest.csv", "run_id": run_id}
