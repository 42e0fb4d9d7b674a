"""``dprm surface``: read an option chain, fit the smiles, check arbitrage, plot, report.

Reading lives here (the fitting is pure code in :mod:`margin.surface`): ``data`` is a dataset of
the canonical store with an ``options`` table, or a raw file/folder read through the existing
readers (``features/readers/deribit.py``) without ingesting anything.

Snapshots: per underlying, the chain is its rows at or before ``as_of``, the latest row of each
instrument; the snapshot time is the latest of those rows' ``ts`` and the year fractions run from
it. Without ``as_of`` each underlying's latest snapshot is used. A snapshot older than
``max_snapshot_age`` before an explicit ``as_of`` is not fitted: it gets ``Failure(STALE)``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from features.errors import ConfigError, DataError, Failure, FailureReason
from features.schema import EXPIRY, SYMBOL, TS, UNDERLYING
from features.store import DataStore, atomic_write_bytes
from margin.surface import DvolValue, FitParams, VolSurface, dvol_at, fit_surface

OPTIONS_TABLE = "options"
DVOL_TABLE = "dvol_1d"
DEFAULT_DVOL_FOLDER = "deribit_dvol_daily_2021_2025h1"
MAX_SNAPSHOT_AGE = pd.Timedelta(days=1)


def _utc(value: object, what: str) -> pd.Timestamp:
    try:
        t = pd.Timestamp(value)
    except (ValueError, TypeError) as exc:
        raise ConfigError(
            f"The '{what}' option must be a timestamp such as 2024-01-08T12:00. "
            f"Got {value!r} instead."
        ) from exc
    if t is pd.NaT:
        raise ConfigError(f"The '{what}' option must be a timestamp. Got {value!r} instead.")
    return t.tz_localize("UTC") if t.tzinfo is None else t.tz_convert("UTC")


def _read_raw(path: Path, kind: str) -> pd.DataFrame:
    """Every chunk of schema ``kind`` in a raw file or folder, through the readers."""
    from features.readers import list_sources, read_source

    files = (
        [(f, fmt) for f, fmt, _ in list_sources(path) if fmt is not None]
        if path.is_dir()
        else [(path, None)]
    )
    frames = [c.frame for f, fmt in files for c in read_source(f, fmt) if c.kind == kind]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def load_options(data: str, store: DataStore) -> tuple[pd.DataFrame, str]:
    """The canonical ``options`` rows of ``data`` (a store dataset or a raw file/folder) and a
    label for it; DataError when there are none."""
    if data in store.datasets():
        tables = store.manifest(data)["tables"]
        if OPTIONS_TABLE not in tables:
            raise DataError(
                f"dataset '{data}' has no '{OPTIONS_TABLE}' table; tables: "
                f"{sorted(tables)}; expected an option chain (e.g. Deribit snapshots)"
            )
        return store.read(data, OPTIONS_TABLE), data
    path = Path(data)
    if not path.exists():
        raise DataError(
            f"'{data}' is neither a dataset in {store.root} ({store.datasets()}) "
            "nor a file or folder"
        )
    frame = _read_raw(path, "options")
    if frame.empty:
        raise DataError(
            f"no option chain in {path}; expected Deribit option snapshots "
            "(formats deribit_option_chain, deribit_options_marks)",
            source=str(path),
        )
    return frame, str(path)


def load_dvol(source: str | None, store: DataStore, data: str) -> pd.DataFrame | None:
    """DVOL bars (table ``dvol_1d``) from ``source`` (dataset or path), else from the dataset
    ``data`` when it has them, else from ``$DPRM_DATA_DIR/deribit_dvol_daily_2021_2025h1``."""
    from pipelines.config import data_dir

    if source is None:
        if data in store.datasets() and DVOL_TABLE in store.manifest(data)["tables"]:
            return store.read(data, DVOL_TABLE)
        default = data_dir() / DEFAULT_DVOL_FOLDER
        if not default.is_dir():
            return None
        source = str(default)
    if source in store.datasets():
        return store.read(source, DVOL_TABLE)
    path = Path(source)
    if not path.exists():
        raise DataError(f"DVOL source '{source}' is neither a dataset nor a file or folder")
    frame = _read_raw(path, "bars")
    if frame.empty or not frame[SYMBOL].str.endswith("-DVOL").any():
        raise DataError(f"no DVOL bars in {path}; expected dvol_daily.parquet", source=str(path))
    return frame


@dataclass(frozen=True)
class UnderlyingReport:
    """One underlying's result: the surface (or why none), DVOL, the plot's path."""

    underlying: str
    snapshot: pd.Timestamp | None
    surface: VolSurface | None
    dvol: DvolValue | Failure | None
    png: Path | None
    failures: tuple[Failure, ...] = ()
    n_priced_off_surface: int = 0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary."""
        s = self.surface
        quotes = pd.concat([x.quotes for x in s.slices]) if s and s.slices else pd.DataFrame()
        used = quotes[quotes["used"]] if len(quotes) else quotes
        inside = used["inside"].dropna() if len(used) else pd.Series(dtype=float)
        dv: Any = None
        if isinstance(self.dvol, DvolValue):
            dv = {"symbol": self.dvol.symbol, "vol": self.dvol.vol, "ts": self.dvol.ts.isoformat()}
        elif isinstance(self.dvol, Failure):
            dv = self.dvol.to_dict()
        return {
            "underlying": self.underlying,
            "snapshot": None if self.snapshot is None else self.snapshot.isoformat(),
            "slices": [x.summary() for x in s.slices] if s else [],
            "n_quotes": int(len(used)),
            "inside_pct": float(inside.mean() * 100) if len(inside) else None,
            "n_priced_off_surface": self.n_priced_off_surface,
            "dvol": dv,
            "png": None if self.png is None else str(self.png),
            "failures": [f.to_dict() for f in (*self.failures, *(s.failures if s else ()))],
        }


@dataclass(frozen=True)
class SurfaceReport:
    """What ``dprm surface`` computed for a chain."""

    data: str
    as_of: pd.Timestamp | None
    underlyings: tuple[UnderlyingReport, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready report."""
        return {
            "data": self.data,
            "as_of": None if self.as_of is None else self.as_of.isoformat(),
            "underlyings": [u.to_dict() for u in self.underlyings],
        }


def plot_surface(surface: VolSurface, path: Path) -> Path:
    """A PNG with one panel per expiry: quotes (bid-ask bars or marks) and the fitted smile."""
    os.environ.setdefault("MPLCONFIGDIR", str(Path.home() / ".cache" / "dprm-mpl"))
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(surface.slices)
    ncol = min(4, max(n, 1))
    nrow = max(1, -(-n // ncol))
    fig, axes = plt.subplots(nrow, ncol, figsize=(4.2 * ncol, 3.3 * nrow), squeeze=False)
    for ax in axes.ravel()[n:]:
        ax.axis("off")
    for ax, s in zip(axes.ravel(), surface.slices, strict=False):
        q = s.quotes
        # out-of-the-money quotes only: the in-the-money twin of a strike repeats its vol
        used, other = q[q["used"]], q[~q["used"] & (q["dropped"] != "in the money")]
        if s.target == "bid_ask":
            for part, colour, label in (
                (other, "0.7", "bid-ask (not fitted)"),
                (used, "tab:blue", "bid-ask (fit)"),
            ):
                part = part[np.isfinite(part["bid_iv"]) & np.isfinite(part["ask_iv"])]
                if len(part):
                    ax.vlines(
                        part["k"],
                        part["bid_iv"] * 100,
                        part["ask_iv"] * 100,
                        colors=colour,
                        lw=2.2,
                        label=label,
                    )
            out = used[used["inside"] == 0]
            if len(out):
                ax.plot(
                    out["k"],
                    out["fit_vol"] * 100,
                    "x",
                    color="tab:red",
                    ms=6,
                    label="fit outside spread",
                )
        else:
            rest = other[np.isfinite(other["mark_iv"])]
            if len(rest):
                ax.plot(
                    rest["k"],
                    rest["mark_iv"] * 100,
                    "o",
                    ms=3,
                    color="0.65",
                    label="mark IV (not fitted)",
                )
            ax.plot(
                used["k"],
                used["mark_iv"] * 100,
                "o",
                ms=3.5,
                color="tab:blue",
                label="mark IV (fit)",
            )
        ax.plot(s.k_grid, s.vol(s.k_grid) * 100, color="tab:orange", lw=1.6, label="SVI fit")
        lo, hi = used["k"].min(), used["k"].max()
        pad = 0.15 * (hi - lo) + 1e-3
        ax.set_xlim(lo - pad, hi + pad)
        vis = s.vol(np.linspace(lo - pad, hi + pad, 50)) * 100
        ref = (used["ask_iv"] if s.target == "bid_ask" else used["mark_iv"]) * 100
        top = float(np.nanmax([vis.max(), np.nanmax(ref)]))
        bot = float(
            np.nanmin(
                [
                    vis.min(),
                    np.nanmin(used["bid_iv"] * 100) if s.target == "bid_ask" else np.nanmin(ref),
                ]
            )
        )
        ax.set_ylim(max(0.0, bot - 0.08 * (top - bot) - 1), top + 0.08 * (top - bot) + 1)
        days = s.t_yr * 365
        quality = (
            f"{s.inside_pct:.0f}% in spread"
            if s.target == "bid_ask"
            else f"RMSE {s.rmse_vol_pts:.2f} vp"
        )
        flags = ("" if s.butterfly.ok else " BFLY") + (
            "" if s.calendar is None or s.calendar.ok else " CAL"
        )
        ax.set_title(
            f"{s.expiry:%d%b%y}".upper() + f" ({days:.1f} d): {quality}{flags}", fontsize=9
        )
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=8)
    for ax in axes[:, 0]:
        ax.set_ylabel("implied vol (%)", fontsize=8)
    for ax in axes[-1, :]:
        ax.set_xlabel("log-moneyness ln(K/F)", fontsize=8)
    handles, labels = [], []
    for ax in axes.ravel():
        for h, lab in zip(*ax.get_legend_handles_labels(), strict=True):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    fig.legend(
        handles,
        labels,
        loc="upper center",
        ncol=len(labels),
        fontsize=8,
        frameon=False,
        bbox_to_anchor=(0.5, 1.0),
    )
    fig.suptitle(
        f"{surface.underlying} implied-volatility smiles (raw SVI) at "
        f"{surface.snapshot:%Y-%m-%d %H:%M} UTC",
        y=1.03,
        fontsize=11,
    )
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
    return path


def surface_report(
    data: str,
    *,
    home: Path,
    as_of: object | None = None,
    underlying: str | None = None,
    forward_source: str = "auto",
    dvol: str | None = None,
    params: FitParams | None = None,
    plot: bool = True,
) -> SurfaceReport:
    """Fit the smiles of every underlying of ``data`` at ``as_of`` and write one PNG each to
    ``home/reports/surface/``. See the module docstring for the snapshot rules."""
    store = DataStore(home / "data")
    chain, label = load_options(data, store)
    chain = chain.assign(
        **{TS: pd.to_datetime(chain[TS], utc=True), EXPIRY: pd.to_datetime(chain[EXPIRY], utc=True)}
    )
    t_asof = None if as_of is None else _utc(as_of, "as-of")
    names = sorted(chain[UNDERLYING].unique())
    if underlying is not None:
        if underlying.upper() not in names:
            raise DataError(f"underlying '{underlying}' not in {label}; it has {names}")
        names = [underlying.upper()]
    dvol_bars = load_dvol(dvol, store, data)
    out: list[UnderlyingReport] = []
    for u in names:
        rows = chain[chain[UNDERLYING] == u]
        if t_asof is not None:
            rows = rows[rows[TS] <= t_asof]
        if rows.empty:
            first = chain.loc[chain[UNDERLYING] == u, TS].min()
            out.append(
                UnderlyingReport(
                    u,
                    None,
                    None,
                    None,
                    None,
                    (
                        Failure(
                            FailureReason.MISSING_INPUTS,
                            u,
                            f"no {u} option rows at or before {t_asof.isoformat() if t_asof else '-'}; "
                            f"the first is at {first.isoformat()}",
                        ),
                    ),
                )
            )
            continue
        snap = pd.Timestamp(rows[TS].max())
        at = t_asof or snap
        dv = dvol_at(dvol_bars, u, at) if dvol_bars is not None else None
        if t_asof is not None and t_asof - snap > MAX_SNAPSHOT_AGE:
            out.append(
                UnderlyingReport(
                    u,
                    snap,
                    None,
                    dv,
                    None,
                    (
                        Failure(
                            FailureReason.STALE,
                            u,
                            f"the latest {u} chain at or before {t_asof.isoformat()} is from "
                            f"{snap.isoformat()}, older than {MAX_SNAPSHOT_AGE}; not fitted",
                            {"snapshot": snap.isoformat(), "as_of": t_asof.isoformat()},
                        ),
                    ),
                )
            )
            continue
        surf = fit_surface(
            rows,
            underlying=u,
            snapshot=snap,
            forward_source=forward_source,  # type: ignore[arg-type]
            params=params,
        )
        n_off = int(sum((~s.quotes["used"]).sum() for s in surf.slices))
        png = None
        if plot and surf.slices:
            png = plot_surface(surf, home / "reports" / "surface" / f"{u}_{snap:%Y%m%dT%H%M%S}.png")
        out.append(UnderlyingReport(u, snap, surf, dv, png, (), n_off))
    return SurfaceReport(label, t_asof, tuple(out))
