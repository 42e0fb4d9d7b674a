"""Configuration: one pydantic model per command/flow, every field defaulted, loadable from TOML.

Locations come from the environment: ``DPRM_HOME`` (workspace, default ``./dprm-home``),
``DPRM_DATA_DIR`` (real public data, default ``../shared/data``), ``MLFLOW_TRACKING_URI``.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from features.errors import ConfigError

M = TypeVar("M", bound=BaseModel)


def dprm_home() -> Path:
    """The workspace folder (``DPRM_HOME``, default ``./dprm-home``), created if missing.

    Raises
    ------
    ConfigError
        ``DPRM_HOME`` names a file (or lies under one), or the folder cannot be created.
    """
    home = Path(os.environ.get("DPRM_HOME", "dprm-home")).resolve()
    try:
        home.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise ConfigError(
            f"DPRM_HOME={home} is not a folder (a file is in the way); set DPRM_HOME to a folder"
        ) from None
    except PermissionError:
        raise ConfigError(
            f"DPRM_HOME={home} cannot be created (permission denied); set DPRM_HOME to a "
            "folder you can write"
        ) from None
    return home


def read_toml(path: Path, what: str = "settings file") -> dict[str, Any]:
    """The table of a TOML file; :class:`ConfigError` naming the file for bad syntax or bytes."""
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML in the {what}: {exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: the {what} is not UTF-8 text; expected a TOML file") from None


def data_dir() -> Path:
    """The real public data folder (``DPRM_DATA_DIR``, default ``../shared/data``)."""
    return Path(os.environ.get("DPRM_DATA_DIR", Path.cwd().parent / "shared" / "data")).resolve()



def parse_date(text: str) -> Any:
    """``text`` as a UTC ``pandas.Timestamp`` (naive times are UTC), or None if it is not a date."""
    import pandas as pd

    try:
        ts = pd.Timestamp(text)
    except ValueError:
        return None
    if ts is pd.NaT:
        return None
    return ts.tz_localize("UTC") if ts.tz is None else ts

class _Config(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class IngestConfig(_Config):
    """Parameters of ``dprm data ingest``."""

    chunk_rows: int = Field(500_000, gt=0, description="rows per chunk read from a source")
    spill_rows: int = Field(2_000_000, gt=0, description="rows buffered before merging into the store")
    force: bool = Field(False, description="re-read sources already ingested (still idempotent)")


class SimulateConfig(_Config):
    """Parameters of ``dprm data simulate`` (see features.simulate.SimConfig for the dynamics)."""

    dataset: str = "sim"
    seed: int = 7
    n_days: int = Field(60, gt=0)
    symbols: tuple[str, ...] = ("BTCUSDT", "ETHUSDT", "SOLUSDT", "STABLEIDX")


class DemoConfig(_Config):
    """Parameters of ``dprm demo``: the whole pipeline on the embedded default data."""

    simulate: SimulateConfig = SimulateConfig()
    embedded_dataset: str = "embedded"


def load_config(model: type[M], path: Path | None = None, section: str | None = None,
                **overrides: Any) -> M:
    """Build a config model from defaults, an optional TOML file (optionally one section of it) and
    keyword overrides (``None`` values ignored). Unknown keys are an error naming the key."""
    data: dict[str, Any] = {}
    if path is not None:
        data = read_toml(path)
        if section is not None:
            data = data.get(section, {})
            if not isinstance(data, dict):
                raise ConfigError(f"{path}: [{section}] must be a table of settings; "
                                  f"got {type(data).__name__} {data!r}")
    data.update({k: v for k, v in overrides.items() if v is not None})
    return model.model_validate(data)


class FeaturesConfig(_Config):
    """Parameters of ``dprm features build``."""

    freq: str = "1D"
    grid: str = "5min"
    horizons: tuple[int, ...] = (1, 5, 22)
    har_windows: tuple[int, ...] = (1, 5, 22)
    min_coverage: float = Field(0.85, gt=0, le=1)


class EvaluateConfig(_Config):
    """Parameters of ``dprm evaluate`` (walk-forward evaluation of the model ladder)."""

    target: str = Field("volatility", pattern="^(volatility|correlation)$")
    freq: str = "1D"
    grid: str = "5min"
    horizons: tuple[int, ...] = (1, 5)
    start: str | None = None
    end: str | None = None
    window: int = Field(1000, gt=1)
    window_type: str = Field("rolling", pattern="^(rolling|expanding)$")
    refit_every: int = Field(1, ge=1)
    garch_refit_every: int = Field(5, ge=1, description="GARCH re-estimation cadence (filter daily)")
    models: tuple[str, ...] = Field((), description="models to run (default: the ladder); the ladder's names "
                                   "and the learned lgbm, har_boost, qlike_combo")
    mcs_reps: int = Field(1000, ge=100)
    seed: int = 0

    @field_validator("start", "end")
    @classmethod
    def _date(cls, value: str | None, info: ValidationInfo) -> str | None:
        """A parseable date, and ``end`` not before ``start``."""
        if value is None:
            return value

        ts = parse_date(value)
        if ts is None:
            raise ValueError(f"{value!r} is not a date; expected e.g. 2025-09-01")
        start = info.data.get("start")
        if info.field_name == "end" and start is not None and parse_date(start) > ts:
            raise ValueError(f"end {value} is before start {start}")
        return value
