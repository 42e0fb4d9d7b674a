"""The forecaster package behind the ``dprm-forecaster`` pyfunc (no MLflow here).

A registered version of ``dprm-forecaster`` is a pyfunc (``pipelines/forecaster_model.py``, logged
with models-from-code) around a :class:`ForecasterPackage`: one or more *fitted* forecasters (the
``primary`` member is the champion model; the others ride along, e.g. the EWMA fallback). The
package stores every member's fitted state as JSON (each estimator's ``to_state()``: HAR
coefficients and window statistics, the EWMA level, GARCH parameters and return scale) and rebuilds
the estimators on load with ``from_state()``, so no live object is pickled. A forecaster class
without a codec (:func:`register_member_codec`) is stored with ``joblib`` instead and the manifest
says so (``storage = "joblib"``). Given the latest canonical realized frame, the pyfunc rolls each
member's state forward with its parameters held fixed (HAR lags, the EWMA recursion, the GARCH
filter) and returns the long forecast table of :meth:`models.forecast.VolForecast.to_frame`
(``model_id`` = member name, ``model_version`` = ``<class version>+<fingerprint of the
parameters>``). :func:`forecast_frame_to_volforecasts` turns the table back into
:class:`~models.forecast.VolForecast` objects.

LightGBM members keep their boosters in MLflow: their codec (with its ``on_log`` hook, which logs
the boosters) is registered by :mod:`models.registry`, the only module that imports mlflow. The
on-disk identifiers (:data:`BUNDLE_FORMAT`, ``manifest.json``, ``members/<name>.json``) are those
of the earlier "forecaster bundle" so stored registries still load.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.utils.validation import check_is_fitted

from features.schema import (
    BV,
    CLOSE,
    N_OBS,
    RQ,
    RS_NEG,
    RS_POS,
    RV,
    SYMBOL,
    TS,
    TS_DTYPE,
    to_utc_ns,
)
from models.base import BaseForecaster, jsonable
from models.forecast import FRAME_COLUMNS, VolForecast
from models.promotion_log import ModelRef
from models.run_record import data_fingerprint, dprm_version

BUNDLE_FORMAT = "dprm-forecaster-bundle"
BUNDLE_FORMAT_VERSION = 1
INPUT_COLUMNS = (RV, BV, RQ, RS_POS, RS_NEG, N_OBS, CLOSE)
"""Realized columns the pyfunc's input signature knows (the members' needs are required)."""


def class_path(obj: Any) -> str:
    """``module.QualName`` of a class or of an object's class."""
    cls = obj if isinstance(obj, type) else type(obj)
    return f"{cls.__module__}.{cls.__qualname__}"


def _mro_paths(obj: Any) -> set[str]:
    return {class_path(c) for c in type(obj).__mro__}


@dataclass(frozen=True)
class MemberCodec:
    """How one forecaster family is stored in a bundle without pickling.

    Attributes
    ----------
    base : class path; the codec applies to this class and its subclasses ("models.har.HARBase").
    export_state : fitted estimator -> JSON-able dict of its learned state, ``{"common": ...,
        "state": ...}`` (the estimator's ``to_state()`` for the built-in families).
    restore_state : (unfitted estimator with the same hyperparameters, that dict) -> None; sets the
        learned attributes so ``predict`` works (the estimator's ``from_state``).
    on_log : optional hook called with (estimator, member name, run id, input example) inside the
        registration run *before* the bundle is written (so the state it records on the estimator,
        e.g. the URIs of LightGBM boosters logged through ``mlflow.lightgbm``, reaches
        ``export_state``); the input example is the pyfunc's (:func:`input_example`).
    """

    base: str
    export_state: Callable[[BaseForecaster], dict[str, Any]]
    restore_state: Callable[[BaseForecaster, dict[str, Any]], None]
    on_log: Callable[[BaseForecaster, str, str, pd.DataFrame], None] | None = None
    exact: bool = False
    """Apply to the class ``base`` only, not to its subclasses (which then need their own codec
    or fall back to joblib, e.g. :class:`models.combine.HARBoostVol`, whose ``base`` parameter is
    an estimator)."""


_CODECS: list[MemberCodec] = []


def register_member_codec(codec: MemberCodec) -> None:
    """Add (or replace, by ``base``) a codec; later registrations win for subclasses too."""
    _CODECS[:] = [c for c in _CODECS if c.base != codec.base]
    _CODECS.append(codec)


def codec_for(est: BaseForecaster) -> MemberCodec | None:
    """The codec of ``est``'s class (the latest registered that applies), or None (joblib)."""
    paths = _mro_paths(est)
    own = class_path(est)
    for c in reversed(_CODECS):
        if c.base in paths and (not c.exact or c.base == own):
            return c
    return None


def _to_state(est: BaseForecaster) -> dict[str, Any]:
    return est.to_state()


def _from_state(est: BaseForecaster, state: dict[str, Any]) -> None:
    est.from_state(state)


for _base in ("models.ewma.RandomWalkVol", "models.ewma.EWMAVol", "models.har.HARBase"):
    register_member_codec(MemberCodec(_base, _to_state, _from_state))
register_member_codec(MemberCodec("models.garch.GarchVol", _to_state, _from_state))


def read_manifest(directory: Path, fmt: str, version: int) -> dict[str, Any]:
    """``directory/manifest.json`` of a package of format ``fmt``; a ``ValueError`` naming the
    file when it is missing, of another format, or of a newer format version than ``version``."""
    path = Path(directory) / "manifest.json"
    if not path.is_file():
        raise ValueError(f"{path} is missing: not a package")
    manifest = json.loads(path.read_text())
    if manifest.get("format") != fmt:
        raise ValueError(f"{path}: format must be {fmt!r}; got {manifest.get('format')!r}")
    if int(manifest.get("format_version", 0)) > version:
        raise ValueError(f"{path}: format_version {manifest['format_version']} is newer than this "
                         f"code ({version}); upgrade dprm")
    return manifest


def check_fingerprint(path: Path, expected: str | None) -> None:
    """A ``ValueError`` naming ``path`` when it is missing or its SHA-256 is not ``expected`` (a
    truncated or modified artifact is never loaded)."""
    if not path.is_file():
        raise ValueError(f"package file {path} is missing")
    if expected is None:
        return
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != expected:
        raise ValueError(
            f"package file {path} has SHA-256 {digest[:12]}..., the manifest records "
            f"{expected[:12]}...: the artifact was modified; refusing to load it"
        )


def _import_class(path: str) -> type:
    module, _, name = path.rpartition(".")
    if not module.startswith("models."):
        raise ValueError(f"bundle member class must live in the models package; got {path!r}")
    cls = getattr(importlib.import_module(module), name, None)
    if not (isinstance(cls, type) and issubclass(cls, BaseForecaster)):
        raise ValueError(f"bundle member class {path!r} is not a BaseForecaster")
    return cls


def _restore_params(params: Mapping[str, Any]) -> dict[str, Any]:
    # JSON turns tuples into lists; the estimators take tuples (horizons)
    return {k: tuple(v) if isinstance(v, list) else v for k, v in params.items()}


def canonical_input(frame: pd.DataFrame) -> pd.DataFrame:
    """The pyfunc input as a canonical frame: ``ts`` to UTC (naive values are UTC), symbol str."""
    if not isinstance(frame, pd.DataFrame):
        raise TypeError(f"the input must be a pandas DataFrame; got {type(frame).__name__}")
    missing = [c for c in (TS, SYMBOL) if c not in frame.columns]
    if missing:
        raise ValueError(f"the input frame lacks column(s) {missing}; got {list(frame.columns)}")
    out = frame.copy()
    ts = out[TS]
    if ts.dtype.kind == "M" and getattr(ts.dt, "tz", None) is None:
        out[TS] = ts.dt.tz_localize("UTC").astype(TS_DTYPE)
    else:
        out[TS] = to_utc_ns(ts)
    out[SYMBOL] = out[SYMBOL].astype("str")
    return out


def _order_columns(table: pd.DataFrame) -> pd.DataFrame:
    lead = list(FRAME_COLUMNS)
    qcols = sorted((c for c in table.columns if c.startswith("q_")), key=lambda c: float(c[2:]))
    i = lead.index("forecast_var") + 1
    return table[[*lead[:i], *qcols, *lead[i:]]]


@dataclass
class ForecasterPackage:
    """Fitted forecasters served together by the ``dprm-forecaster`` pyfunc (formerly
    ``ForecasterBundle``; not :class:`models.forecast.RiskForecastBundle`, which margin consumes).

    Attributes
    ----------
    members : member name -> fitted forecaster (the order is kept in the output).
    primary : the member that is "the" champion model (its forecasts are the ones margin uses).
    horizons : horizons forecast by every member (periods).
    manifest : what :meth:`save` wrote / :meth:`load` read (classes, storage, fingerprints,
        training window).
    """

    members: dict[str, BaseForecaster]
    primary: str
    horizons: tuple[int, ...]
    manifest: dict[str, Any] = field(default_factory=dict)

    target = "volatility"

    @classmethod
    def build(
        cls,
        forecasters: Mapping[str, BaseForecaster],
        *,
        primary: str | None = None,
        horizons: Sequence[int] = (1, 5, 22),
        training_data: pd.DataFrame | None = None,
    ) -> ForecasterPackage:
        """A bundle of fitted forecasters; unfitted ones are fitted (as clones) on ``training_data``.

        Parameters
        ----------
        forecasters : member name -> forecaster.
        primary : the champion member; None = the first.
        horizons : horizons every member forecasts; horizon-specific members (HAR) must have been
            fitted for them.
        training_data : canonical realized frame used to fit unfitted members.
        """
        if not isinstance(forecasters, Mapping) or not forecasters:
            raise ValueError("forecasters must be a non-empty dict name -> BaseForecaster")
        hs = tuple(sorted({int(h) for h in horizons}))
        if not hs or hs[0] < 1:
            raise ValueError(f"horizons must be ints >= 1; got {list(horizons)}")
        members: dict[str, BaseForecaster] = {}
        for name, est in forecasters.items():
            if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_.\-]+", name):
                raise ValueError(f"member name must match [A-Za-z0-9_.-]+; got {name!r}")
            if not isinstance(est, BaseForecaster):
                raise TypeError(
                    f"forecasters[{name!r}] must be a BaseForecaster; got {type(est).__name__}"
                )
            try:
                check_is_fitted(est, "state_")
            except NotFittedError:
                if training_data is None:
                    raise ValueError(
                        f"forecasters[{name!r}] is not fitted; fit it or pass training_data"
                    ) from None
                est = clone(est)
                if "horizons" in est.get_params(deep=False):
                    est.set_params(horizons=hs)
                est.fit(training_data)
            fitted_hs = getattr(est, "horizons_", None)
            if fitted_hs is not None and not set(hs) <= set(fitted_hs):
                raise ValueError(
                    f"forecasters[{name!r}] was fitted for horizons {list(fitted_hs)}; the bundle "
                    f"needs horizons {list(hs)}. Refit with horizons={hs}."
                )
            members[name] = est
        primary = next(iter(members)) if primary is None else primary
        if primary not in members:
            raise ValueError(f"primary {primary!r} is not one of the members {list(members)}")
        manifest: dict[str, Any] = {}
        if training_data is not None:
            ts = pd.DatetimeIndex(to_utc_ns(training_data[TS]))
            manifest["train"] = {
                "start_ts": str(ts.min()),
                "end_ts": str(ts.max()),
                "n_rows": len(training_data),
                "data_fingerprint": data_fingerprint(training_data),
            }
        return cls(members, primary, hs, manifest)

    # ---- storage --------------------------------------------------------------------------------
    def save(self, directory: Path) -> dict[str, Any]:
        """Write ``manifest.json`` and ``members/<name>.json`` (or ``.joblib``); returns the manifest."""
        directory = Path(directory)
        (directory / "members").mkdir(parents=True, exist_ok=True)
        entries = []
        for name, est in self.members.items():
            codec = codec_for(est)
            entry: dict[str, Any] = {
                "name": name,
                "class": class_path(est),
                "model_id": est.model_id,
                "class_model_version": est.model_version,
                "required_inputs": list(est.required_columns()),
            }
            if codec is not None:
                exported = codec.export_state(est)
                doc = {
                    "class": entry["class"],
                    "params": jsonable(est.get_params(deep=False)),
                    "common": exported["common"],
                    "state": exported["state"],
                }
                text = json.dumps(doc, sort_keys=True, indent=1)
                (directory / "members" / f"{name}.json").write_text(text)
                entry.update(
                    storage="json",
                    file=f"members/{name}.json",
                    fingerprint=hashlib.sha256(text.encode()).hexdigest(),
                )
            else:
                import joblib

                path = directory / "members" / f"{name}.joblib"
                joblib.dump(est, path)
                entry.update(
                    storage="joblib",
                    file=f"members/{name}.joblib",
                    fingerprint=hashlib.sha256(path.read_bytes()).hexdigest(),
                )
            entries.append(entry)
        manifest = {
            **{k: v for k, v in self.manifest.items() if k == "train"},
            "format": BUNDLE_FORMAT,
            "format_version": BUNDLE_FORMAT_VERSION,
            "primary": self.primary,
            "horizons": list(self.horizons),
            "members": entries,
            "symbols": sorted({s for e in self.members.values() for s in e.symbols_}),
            "dprm_version": dprm_version(),
        }
        (directory / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True))
        self.manifest = manifest
        return manifest

    @classmethod
    def load(cls, directory: Path | str) -> ForecasterPackage:
        """Rebuild a bundle written by :meth:`save` (estimators rebuilt from their parameters)."""
        directory = Path(directory)
        manifest = read_manifest(directory, BUNDLE_FORMAT, BUNDLE_FORMAT_VERSION)
        members: dict[str, BaseForecaster] = {}
        for e in manifest["members"]:
            path = directory / e["file"]
            check_fingerprint(path, e.get("fingerprint"))
            if e["storage"] == "joblib":
                import joblib

                est = joblib.load(path)
            else:
                doc = json.loads(path.read_text())
                est_cls = _import_class(doc["class"])
                est = est_cls(**_restore_params(doc["params"]))
                codec = codec_for(est)
                if codec is None:
                    raise ValueError(f"no codec is registered for {doc['class']!r}")
                codec.restore_state(est, {"common": doc["common"], "state": doc["state"]})
            members[e["name"]] = est
        return cls(members, manifest["primary"], tuple(manifest["horizons"]), manifest)

    # ---- forecasting -----------------------------------------------------------------------------
    def member_version(self, name: str) -> str:
        """``<class model_version>+<first 12 hex of the member's parameter fingerprint>``."""
        est = self.members[name]
        fp = next(
            (e.get("fingerprint") for e in self.manifest.get("members", []) if e["name"] == name),
            None,
        )
        return f"{est.model_version}+{fp[:12]}" if fp else str(est.model_version)

    def required_columns(self) -> list[str]:
        """Realized columns some member needs (``close`` for GARCH's returns)."""
        cols: dict[str, None] = {}
        for est in self.members.values():
            for c in est.required_columns():
                cols[CLOSE if c == "sq_ret_var" else c] = None
        return list(cols)

    def predict(
        self, frame: pd.DataFrame, *, origins: str = "last", members: Sequence[str] | None = None
    ) -> pd.DataFrame:
        """Roll every member forward on ``frame`` with its fitted parameters and return the long
        forecast table (:meth:`VolForecast.to_frame` columns; ``model_id`` = member name).

        Parameters
        ----------
        frame : canonical realized frame holding the history the members need (HAR: 22 rows).
        origins : "last" (each symbol's latest origin with a forecast) or "all".
        members : members to run; None = all.
        """
        if origins not in ("last", "all"):
            raise ValueError(f"origins must be 'last' or 'all'; got {origins!r}")
        names = list(self.members) if members is None else list(members)
        unknown = [n for n in names if n not in self.members]
        if unknown:
            raise ValueError(f"unknown member(s) {unknown}; the bundle has {list(self.members)}")
        X = canonical_input(frame)
        parts = []
        for name in names:
            for f in self.members[name].predict(X, horizons=self.horizons).values():
                t = f.to_frame()
                if origins == "last":
                    t = t[t["origin_ts"] == t["origin_ts"].max()]
                parts.append(t.assign(model_id=name, model_version=self.member_version(name)))
        table = pd.concat(parts, ignore_index=True)
        for c in ("model_id", "model_version", "symbol"):
            table[c] = table[c].astype("str")
        reason = table["fallback_reason"].astype(object)
        table["fallback_reason"] = pd.Series(
            np.where(reason.notna().to_numpy(), reason.to_numpy(), None),
            index=table.index,
            dtype=object,
        )
        return _order_columns(table).reset_index(drop=True)


def forecast_frame_to_volforecasts(
    frame: pd.DataFrame, *, model_id: str | None = None, annualization: float | None = None
) -> dict[str, VolForecast]:
    """The pyfunc's long table back as ``{symbol: VolForecast}`` for one model.

    Parameters
    ----------
    frame : the long forecast table (:meth:`VolForecast.to_frame` columns).
    model_id : which member to take; None when the table holds one model only.
    annualization : periods per year; None = the symbol's default.
    """
    ids = list(pd.unique(frame["model_id"].astype(str)))
    if model_id is None:
        if len(ids) != 1:
            raise ValueError(f"the table holds models {ids}; pass model_id=... to choose one")
        model_id = ids[0]
    if model_id not in ids:
        raise ValueError(f"model_id {model_id!r} is not in the table; it holds {ids}")
    part = frame[frame["model_id"].astype(str) == model_id]
    out = {}
    for sym, g in part.groupby("symbol", sort=True):
        out[str(sym)] = VolForecast.from_frame(g, annualization=annualization)
    return out


def model_code_path(package: Any = None) -> Path:
    """The models-from-code file of the pyfunc (``pipelines/forecaster_model.py``, or
    ``pipelines/correlation_model.py`` for a correlation package, beside this package; a path, not
    an import: the library never imports ``pipelines``)."""
    code = "correlation_model.py" if getattr(package, "target", "") == "correlation" else (
        "forecaster_model.py")
    path = Path(__file__).resolve().parents[1] / "pipelines" / code
    if not path.is_file():
        raise FileNotFoundError(
            2, "No such file or directory (the dprm-forecaster pyfunc code)", str(path)
        )
    return path


def pip_requirements(package: ForecasterPackage) -> list[str]:
    """Explicit pins of the packages the pyfunc imports (no inference subprocess)."""
    pkgs = ["mlflow", "numpy", "pandas", "pyarrow", "scipy", "scikit-learn", "pydantic"]
    modules = {type(m).__module__ for m in package.members.values()}
    if modules & {"models.garch", "models.corr"}:
        pkgs += ["arch", "statsmodels"]
    if modules & {"models.lgbm", "models.combine", "models.corr_lgbm", "models.diurnal_x"}:
        pkgs.append("lightgbm")
    return [*pins(pkgs), f"dprm=={dprm_version()}"]


def pins(packages: Sequence[str]) -> list[str]:
    """``name==installed version`` for each package (the bare name when it is not installed)."""
    from importlib.metadata import PackageNotFoundError, version

    out = []
    for p in packages:
        try:
            out.append(f"{p}=={version(p)}")
        except PackageNotFoundError:
            out.append(p)
    return out


def naive_utc(frame: pd.DataFrame) -> pd.DataFrame:
    """:func:`canonical_input` with ``ts`` as naive UTC (the pyfunc's input signature)."""
    out = canonical_input(frame)
    out[TS] = out[TS].dt.tz_convert("UTC").dt.tz_localize(None)
    return out


def input_example(
    package: ForecasterPackage, data: pd.DataFrame, rows_per_symbol: int | None = None
) -> pd.DataFrame:
    """The last ``rows_per_symbol`` rows per symbol of ``data`` (enough for HAR's 22-row history),
    with ``ts`` as naive UTC and the columns the signature knows."""
    cols = [TS, SYMBOL, *[c for c in input_columns(package) if c in data.columns]]
    missing = [c for c in package.required_columns() if c not in data.columns]
    if missing:
        raise ValueError(f"training data lacks column(s) {missing} that the bundle needs")
    frame = naive_utc(data[cols])
    if package.target == "correlation" and rows_per_symbol is None:
        # the model's window plus its lags, in periods of the package (bars may be finer)
        longest = max([0, *(int(getattr(m, "window", 0) or 0) for m in package.members.values())])
        periods = max(120, longest + 30)
        freq = getattr(package, "freq", None)
        if freq is not None:
            start = frame[TS].max() - periods * pd.Timedelta(freq)
            frame = frame[frame[TS] >= start]
            rows_per_symbol = len(frame)
        else:
            rows_per_symbol = periods
    rows_per_symbol = 40 if rows_per_symbol is None else rows_per_symbol
    frame = frame[frame[SYMBOL].isin(package.manifest.get("symbols") or frame[SYMBOL].unique())]
    frame = frame.sort_values([SYMBOL, TS]).groupby(SYMBOL, sort=True).tail(rows_per_symbol)
    for c in cols[2:]:
        frame[c] = frame[c].astype("float64")
    return frame.reset_index(drop=True)


def registration_params(package: ForecasterPackage, manifest: Mapping[str, Any]) -> dict[str, Any]:
    """The params of a registration run: each member's class and hyperparameters, the primary
    member and the horizons."""
    return {
        **{f"member.{e['name']}.class": e["class"] for e in manifest["members"]},
        **{
            f"member.{mname}.{k}": v
            for mname, est in package.members.items()
            for k, v in est.get_params(deep=False).items()
        },
        "primary": package.primary,
        "horizons": list(package.horizons),
    }


def version_tags(
    package: ForecasterPackage,
    manifest: Mapping[str, Any],
    *,
    status: str,
    commit: str | None,
    evaluation_run_id: str | None = None,
    tags: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The tags of a new model version: status, primary, members and their storage, horizons,
    symbols, ``dprm.version``, the training data's fingerprint and end, ``gate.status`` "pending",
    the caller's ``tags``, the git commit and the evaluation run (when known)."""
    train = manifest.get("train", {})
    out = {
        "dprm.status": status,
        "dprm.target": package.target,
        "dprm.primary": package.primary,
        "dprm.members": json.dumps({e["name"]: e["class"] for e in manifest["members"]}),
        "dprm.storage": json.dumps({e["name"]: e["storage"] for e in manifest["members"]}),
        "dprm.horizons": json.dumps(list(package.horizons)),
        "dprm.symbols": json.dumps(manifest["symbols"]),
        "dprm.version": dprm_version(),
        "data.fingerprint": train.get("data_fingerprint", ""),
        "data.end_ts": train.get("end_ts", ""),
        "gate.status": "pending",
        **(tags or {}),
    }
    if commit:
        out["git.commit"] = commit
    if evaluation_run_id is not None:
        out["dprm.evaluation_run_id"] = evaluation_run_id
    return out


@dataclass(frozen=True)
class LoadedForecaster:
    """A registered forecaster loaded through MLflow (by :func:`models.registry.load_forecaster`),
    with the reference to record.

    Attributes
    ----------
    ref : the :class:`ModelRef` it was loaded from.
    pyfunc : MLflow's ``PyFuncModel``.
    primary : the package's primary member (the champion model).
    """

    ref: ModelRef
    pyfunc: Any
    primary: str

    def predict(self, frame: pd.DataFrame, *, origins: str = "last") -> pd.DataFrame:
        """The long forecast table for a canonical realized frame (``ts`` may be tz-aware)."""
        return self.pyfunc.predict(naive_utc(frame), params={"origins": origins})

    def vol_forecasts(
        self, frame: pd.DataFrame, *, origins: str = "last", member: str | None = None
    ) -> dict[str, VolForecast]:
        """``{symbol: VolForecast}`` of ``member`` (default: the primary member)."""
        table = self.predict(frame, origins=origins)
        return forecast_frame_to_volforecasts(table, model_id=member or self.primary)


VERSION_COLUMNS = (
    "model",
    "version",
    "aliases",
    "status",
    "gate_status",
    "gate_reason",
    "primary",
    "members",
    "dataset",
    "freq",
    "created_ts",
    "run_id",
    "data_end_ts",
)
"""Columns of :func:`models.registry.list_versions` (:func:`version_row`)."""


def version_row(model: str, mv: Any, aliases: Mapping[str, str]) -> dict[str, Any]:
    """One row of :data:`VERSION_COLUMNS` for a registered version ``mv`` (an MLflow
    ``ModelVersion``: version, tags, creation_timestamp, run_id) of ``model`` given its aliases
    (alias -> version): aliases, status, gate status and reason, primary member, members, the
    dataset and frequency it was trained on (empty when not recorded), creation time, run id and
    the training data's end."""
    t = mv.tags or {}
    return {
        "model": model,
        "version": int(mv.version),
        "aliases": ",".join(sorted(a for a, v in aliases.items() if v == str(mv.version))),
        "status": t.get("dprm.status", ""),
        "gate_status": t.get("gate.status", ""),
        "gate_reason": t.get("gate.reason", ""),
        "primary": t.get("dprm.primary", ""),
        "members": ",".join(json.loads(t.get("dprm.members", "{}"))),
        "dataset": t.get("dprm.dataset", ""),
        "freq": t.get("dprm.freq", ""),
        "created_ts": pd.Timestamp(int(mv.creation_timestamp), unit="ms", tz="UTC"),
        "run_id": mv.run_id,
        "data_end_ts": t.get("data.end_ts", ""),
    }


def versions_frame(rows: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """:func:`version_row` rows as a frame of :data:`VERSION_COLUMNS`, sorted by model and version."""
    cols = list(VERSION_COLUMNS)
    if not rows:
        return pd.DataFrame(columns=cols)
    return pd.DataFrame(rows, columns=cols).sort_values(["model", "version"]).reset_index(drop=True)


_OUTPUT_KINDS = {
    "origin_ts": "datetime",
    "data_cutoff_ts": "datetime",
    "target_start": "datetime",
    "target_end": "datetime",
    "horizon": "long",
    "model_id": "string",
    "model_version": "string",
    "symbol": "string",
    "fallback_reason": "string",
    "symbol_a": "string",
    "symbol_b": "string",
    "repaired": "boolean",
}
_OPTIONAL_OUTPUTS = ("fallback_reason", "stressed_corr")


def input_columns(package: ForecasterPackage) -> list[str]:
    """The numeric input columns of the pyfunc: the realized columns of :data:`INPUT_COLUMNS`, then
    any other column a member declares (``required_columns()``: the context regressors of
    log-HAR-DoW-X, a booster's context features), so that they are served, not dropped."""
    if package.target == "correlation":
        return list(package.required_columns())
    extra = [c for c in package.required_columns() if c not in INPUT_COLUMNS]
    return [*INPUT_COLUMNS, *extra]


def input_schema(package: ForecasterPackage) -> list[tuple[str, str, bool]]:
    """The pyfunc's input columns as (MLflow type, name, required): ``ts`` (naive UTC datetime),
    ``symbol``, and the columns of :func:`input_columns` (required when a member needs them)."""
    need = set(package.required_columns())
    return [
        ("datetime", TS, True),
        ("string", SYMBOL, True),
        *[("double", c, c in need) for c in input_columns(package)],
    ]


def output_schema(table: pd.DataFrame) -> list[tuple[str, str, bool]]:
    """The pyfunc's output columns (those of ``table``, its forecast table) as (MLflow type, name,
    required): times as datetime, ``horizon`` long, names str, numbers double; only
    ``fallback_reason`` may be missing."""
    return [(_OUTPUT_KINDS.get(c, "double"), c, c not in _OPTIONAL_OUTPUTS) for c in table.columns]


def registration_run_tags(evaluation_run_id: str | None = None) -> dict[str, str]:
    """The tags of a registration run (nested under the evaluation run that chose it, if any)."""
    tags = {
        "mlflow.runName": "register-forecaster",
        "dprm.kind": "register",
        "dprm.version": dprm_version(),
    }
    if evaluation_run_id is not None:
        tags.update(
            {"mlflow.parentRunId": evaluation_run_id, "dprm.evaluation_run_id": evaluation_run_id}
        )
    return tags


def version_details(
    name: str, mv: Any, aliases: Sequence[str], metrics: Mapping[str, float]
) -> dict[str, Any]:
    """What :func:`models.registry.show_version` returns for version ``mv`` (an MLflow
    ``ModelVersion``) of ``name``: its aliases, status, run id, source, description, creation
    time, tags, evaluation run and that run's pooled QLIKE ``metrics``, and its URI."""
    return {
        "name": name,
        "version": str(mv.version),
        "aliases": list(aliases),
        "status": (mv.tags or {}).get("dprm.status", ""),
        "run_id": mv.run_id,
        "source": mv.source,
        "description": mv.description or "",
        "created_ts": pd.Timestamp(int(mv.creation_timestamp), unit="ms", tz="UTC"),
        "tags": dict(mv.tags or {}),
        "evaluation_run_id": (mv.tags or {}).get("dprm.evaluation_run_id"),
        "evaluation_metrics": dict(metrics),
        "uri": f"models:/{name}/{mv.version}",
    }
