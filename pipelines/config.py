"""Configuration: one pydantic model per command/flow, every field defaulted, loadable from TOML.

Locations come from the environment: ``DPRM_HOME`` (workspace, default ``./dprm-home``),
``DPRM_DATA_DIR`` (real public data, default ``../shared/data``), ``MLFLOW_TRACKING_URI``.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field

M = TypeVar("M", bound=BaseModel)


def dprm_home() -> Path:
    """The workspace folder (``DPRM_HOME``, default ``./dprm-home``), created if missing."""
    home = Path(os.environ.get("DPRM_HOME", "dprm-home")).resolve()
    home.mkdir(parents=True, exist_ok=True)
    return home


def data_dir() -> Path:
    """The real public data folder (``DPRM_DATA_DIR``, default ``../shared/data``)."""
    return Path(os.environ.get("DPRM_DATA_DIR", Path.cwd().parent / "shared" / "data")).resolve()


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
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
        if section is not None:
            data = data.get(section, {})
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
