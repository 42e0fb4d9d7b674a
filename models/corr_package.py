"""The correlation forecaster package: one fitted correlation model served by the
``dprm-correlation`` pyfunc (``pipelines/correlation_model.py``).

It mirrors :class:`models.package.ForecasterPackage` where the registry needs it (``members``,
``primary``, ``horizons``, ``manifest``, ``save``/``load``, ``predict``, ``required_columns``), so
one registry path logs, registers, promotes and rolls back both kinds of model. The model is
stored with ``joblib`` and its SHA-256 in the manifest; :meth:`CorrelationPackage.load` refuses a
file whose digest differs (a tampered or truncated artifact), naming the file.

Input of :meth:`CorrelationPackage.predict`: a long canonical frame (``ts``, ``symbol``,
``close``; bars at the package's ``bar_interval`` or coarser), turned into a return panel at the
package's ``freq`` (:func:`models.corr.returns_panel`, with realized covariances when the model
needs them). Output: the long table of :meth:`models.corr_forecast.CorrForecast.to_frame`.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.utils.validation import check_is_fitted

from features.schema import CLOSE, SYMBOL, TS, to_utc_ns
from models.base import jsonable
from models.corr import BaseCorrForecaster, CorrPanel, returns_panel
from models.corr_forecast import CorrForecast
from models.package import check_fingerprint, class_path, read_manifest
from models.run_record import data_fingerprint, dprm_version

__all__ = ["CORR_FORMAT", "CorrelationPackage", "is_correlation_manifest"]

CORR_FORMAT = "dprm-correlation-package"
CORR_FORMAT_VERSION = 1


def is_correlation_manifest(directory: Path | str) -> bool:
    """Whether ``directory/manifest.json`` is a correlation package's."""
    p = Path(directory) / "manifest.json"
    return p.is_file() and json.loads(p.read_text()).get("format") == CORR_FORMAT


@dataclass
class CorrelationPackage:
    """A fitted correlation forecaster with the settings that turn prices into its input panel.

    Attributes
    ----------
    model : the fitted :class:`~models.corr.BaseCorrForecaster`.
    name : its configuration name (a catalog name such as ``ewma_corr``).
    horizons : horizons served (periods of ``freq``).
    freq : the panel period ("1D", "1h"); None = the rows as they are (exchange days).
    manifest : what :meth:`save` wrote / :meth:`load` read.
    """

    model: BaseCorrForecaster
    name: str
    horizons: tuple[int, ...]
    freq: str | None = "1D"
    manifest: dict[str, Any] = field(default_factory=dict)

    target = "correlation"

    @classmethod
    def build(
        cls,
        name: str,
        model: BaseCorrForecaster,
        *,
        horizons: tuple[int, ...] = (1, 5),
        freq: str | None = "1D",
        training_data: pd.DataFrame | CorrPanel,
    ) -> CorrelationPackage:
        """Fit a clone of ``model`` (unless fitted) on ``training_data`` (a long price frame or a
        panel) and package it; the manifest records the training window and fingerprint."""
        if not isinstance(model, BaseCorrForecaster):
            raise TypeError(f"model must be a BaseCorrForecaster; got {type(model).__name__}")
        hs = tuple(sorted({int(h) for h in horizons}))
        if not hs or hs[0] < 1:
            raise ValueError(f"horizons must be ints >= 1; got {list(horizons)}")
        panel = training_data if isinstance(training_data, CorrPanel) else None
        try:
            check_is_fitted(model, "state_")
            est = model
        except NotFittedError:
            if panel is None:
                panel = _panel(training_data, freq)
            est = clone(model)
            if "horizons" in est.get_params(deep=False):
                est.set_params(horizons=hs)
            est.fit(panel)
        manifest: dict[str, Any] = {}
        if isinstance(training_data, pd.DataFrame):
            ts = pd.DatetimeIndex(to_utc_ns(training_data[TS]))
            manifest["train"] = {
                "start_ts": str(ts.min()),
                "end_ts": str(ts.max()),
                "n_rows": len(training_data),
                "data_fingerprint": data_fingerprint(training_data),
            }
        return cls(est, name, hs, freq, manifest)

    # ---- the registry's view (as ForecasterPackage) ---------------------------------------------
    @property
    def members(self) -> dict[str, BaseCorrForecaster]:
        """``{name: model}`` (one member)."""
        return {self.name: self.model}

    @property
    def primary(self) -> str:
        """The member's name."""
        return self.name

    @property
    def symbols(self) -> tuple[str, ...]:
        """The fitted symbols, in matrix order."""
        return tuple(self.model.symbols_)

    def required_columns(self) -> list[str]:
        """Input columns besides ``ts`` and ``symbol``: the close price."""
        return [CLOSE]

    # ---- storage --------------------------------------------------------------------------------
    def save(self, directory: Path) -> dict[str, Any]:
        """Write ``manifest.json`` and ``members/<name>.joblib``; returns the manifest."""
        import joblib

        directory = Path(directory)
        (directory / "members").mkdir(parents=True, exist_ok=True)
        path = directory / "members" / f"{self.name}.joblib"
        joblib.dump(self.model, path)
        entry = {
            "name": self.name,
            "class": class_path(self.model),
            "model_id": self.model.model_id,
            "class_model_version": self.model.model_version,
            "params": jsonable(self.model.get_params(deep=False)),
            "storage": "joblib",
            "file": f"members/{self.name}.joblib",
            "fingerprint": hashlib.sha256(path.read_bytes()).hexdigest(),
            "required_inputs": [CLOSE],
        }
        manifest = {
            **{k: v for k, v in self.manifest.items() if k == "train"},
            "format": CORR_FORMAT,
            "format_version": CORR_FORMAT_VERSION,
            "target": "correlation",
            "primary": self.name,
            "horizons": list(self.horizons),
            "freq": self.freq,
            "members": [entry],
            "symbols": list(self.symbols),
            "dprm_version": dprm_version(),
        }
        (directory / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True))
        self.manifest = manifest
        return manifest

    @classmethod
    def load(cls, directory: Path | str) -> CorrelationPackage:
        """Rebuild a package written by :meth:`save`; a missing file or one whose SHA-256 differs
        from the manifest's is a ``ValueError`` naming the file (:func:`models.package.check_fingerprint`)."""
        import joblib

        directory = Path(directory)
        manifest = read_manifest(directory, CORR_FORMAT, CORR_FORMAT_VERSION)
        (entry,) = manifest["members"]
        path = directory / entry["file"]
        check_fingerprint(path, entry["fingerprint"])
        model = joblib.load(path)
        return cls(model, manifest["primary"], tuple(manifest["horizons"]), manifest.get("freq"),
                   manifest)

    # ---- forecasting -----------------------------------------------------------------------------
    def panel(self, frame: pd.DataFrame) -> CorrPanel:
        """The model's input panel from a long price frame (the fitted symbols, in order)."""
        missing = [c for c in (TS, SYMBOL, CLOSE) if c not in frame.columns]
        if missing:
            raise ValueError(
                f"the input frame lacks column(s) {missing} the correlation model needs; "
                f"got {list(frame.columns)}"
            )
        absent = sorted(set(self.symbols) - set(frame[SYMBOL].astype(str)))
        if absent:
            raise ValueError(
                f"the input frame lacks symbol(s) {absent}; the model forecasts {list(self.symbols)}"
            )
        return _panel(frame[frame[SYMBOL].astype(str).isin(self.symbols)], self.freq)

    def forecast(self, frame: pd.DataFrame | CorrPanel, *, origins: str = "last") -> CorrForecast:
        """The :class:`CorrForecast` from the latest origin (``origins="last"``) or every origin
        with enough history (``"all"``) of ``frame``."""
        if origins not in ("last", "all"):
            raise ValueError(f"origins must be 'last' or 'all'; got {origins!r}")
        panel = frame if isinstance(frame, CorrPanel) else self.panel(frame)
        at = None if origins == "all" else panel.ts[-1:]
        return self.model.predict(panel, self.horizons, origins=at)

    def predict(self, frame: pd.DataFrame, *, origins: str = "last") -> pd.DataFrame:
        """The long correlation table (:meth:`CorrForecast.to_frame`) for a long price frame."""
        return self.forecast(frame, origins=origins).to_frame()


def _panel(frame: pd.DataFrame, freq: str | None) -> CorrPanel:
    """The return panel at ``freq`` (None: consecutive rows) with realized covariances from finer
    bars."""
    f = frame.copy()
    f[TS] = to_utc_ns(f[TS])
    return returns_panel(f, freq=freq, realized=True)  # realized covariances when bars are finer
