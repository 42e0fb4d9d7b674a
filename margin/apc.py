"""Anti-procyclicality (EMIR RTS 153/2013 Art. 28) as a daily, versioned state step outside the
pure :func:`margin.calculator.compute_margin`: ``apc_step(previous state, today's inputs) ->
today's state``, every change recorded with its inputs (as ICE's IRM 2 records per risk factor).

Tools (``APCParams.tools``, any combination; each reported as its own amount):

- ``buffer`` (Art. 28(1)(a)): a buffer of ``buffer_share`` (>= 25%) of the base margin ``B_t``
  that is drawn when margin rises and rebuilt no faster than ``rebuild_rate`` per day:
  ``M_t = max(B_t, min((1 + buffer_share) B_t, M_{t-1} (1 + rebuild_rate)))``, the first day
  ``M_0 = (1 + buffer_share) B_0``;
- ``floor`` (Art. 28(1)(c)): ``M_t >= F_t``, the margin of the same book at a ten-year
  volatility (computed by the pipeline with the engine: the bundle's forecast variances replaced by
  the long-run ones; where ten years of history do not exist the whole history is the proxy, and
  the state says so);
- ``stress_weight`` (Art. 28(1)(b)) is not a state: it is the engine's one stress blend with
  ``blend_x <= 0.75`` (25% weight on the stressed-period measure), checked here, not a second
  stress charge;
- ``max_daily_increase`` (optional): ``M_t <= M_{t-1} (1 + cap)``; when that leaves ``M_t`` below
  ``B_t`` the shortfall is recorded (a cap trades coverage for stability).

The state of a day is written once; the same inputs again are a no-op, different inputs for a
recorded day an error; a day that does not follow the previous state's (a gap) is refused.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from features.errors import ConfigError, DataError

__all__ = ["APCParams", "APCState", "apc_step"]


class APCParams(BaseModel):
    """Parameters of the anti-procyclicality step (every field defaulted)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    tools: tuple[Literal["buffer", "floor"], ...] = Field(("buffer", "floor"), description=(
        "The state tools applied, in order: 'buffer' then 'floor' (the stress weight is the "
        "engine's blend_x)."))
    buffer_share: float = Field(0.25, ge=0.25, description="Buffer as a share of B_t (>= 25%).")
    rebuild_rate: float = Field(0.05, gt=0.0, description=(
        "Largest daily growth of the buffered margin while the buffer is rebuilt."))
    max_daily_increase: float | None = Field(None, gt=0.0, description=(
        "Optional cap on the daily increase of the margin (None: no cap)."))
    floor_years: float = Field(10.0, gt=0.0, description="Look-back of the floor's volatility.")

    @model_validator(mode="after")
    def _check(self) -> APCParams:
        if len(set(self.tools)) != len(self.tools):
            raise ValueError(f"tools must not repeat; got {self.tools}")
        return self


def check_stress_weight(blend_x: float) -> None:
    """Art. 28(1)(b): at least 25% weight on stressed observations, i.e. ``blend_x <= 0.75``."""
    if blend_x > 0.75:
        raise ConfigError(f"blend_x {blend_x} gives the stressed-period measure less than the 25% "
                          "weight EMIR Art. 28(1)(b) asks; set blend_x <= 0.75")


@dataclass(frozen=True)
class APCState:
    """One portfolio's anti-procyclicality state on one day.

    Attributes
    ----------
    day : the day (ISO date).
    base : ``B_t``, the margin before the tools; ``floor`` ``F_t`` (None without the tool).
    margin : ``M_t`` after the tools; ``parts`` its amounts above ``B_t`` per tool (``buffer``,
        ``floor``; ``cap`` negative when the daily cap binds) and ``shortfall`` = ``max(0, B_t -
        M_t)``.
    previous : the previous day's ``M_{t-1}`` (None on the first day).
    inputs : everything the step read (recorded with every change); ``params`` their hash.
    """

    day: str
    base: float
    margin: float
    parts: dict[str, float]
    shortfall: float
    previous: float | None
    floor: float | None
    inputs: dict[str, Any] = field(default_factory=dict)
    params_hash: str = ""

    def to_json(self) -> str:
        """Deterministic JSON (sorted keys)."""
        return json.dumps({"day": self.day, "base": self.base, "margin": self.margin,
                           "parts": self.parts, "shortfall": self.shortfall,
                           "previous": self.previous, "floor": self.floor, "inputs": self.inputs,
                           "params_hash": self.params_hash}, sort_keys=True,
                          separators=(",", ":"), allow_nan=False)

    @classmethod
    def from_json(cls, text: str) -> APCState:
        """The inverse of :meth:`to_json`."""
        d = json.loads(text)
        return cls(d["day"], d["base"], d["margin"], d["parts"], d["shortfall"], d["previous"],
                   d["floor"], d["inputs"], d["params_hash"])


def _hash(p: APCParams) -> str:
    return hashlib.sha256(json.dumps(p.model_dump(mode="json"), sort_keys=True).encode()).hexdigest()


def apc_step(previous: APCState | None, day: str, base: float, params: APCParams, *,
             expected_previous_day: str | None = None, floor: float | None = None,
             inputs: dict[str, Any] | None = None) -> APCState:
    """Today's state from yesterday's (see the module docstring).

    Parameters
    ----------
    previous : the state of the previous day (None: the first day).
    day : today (ISO date).
    base : today's margin before the tools (>= 0).
    params : the tools and their parameters.
    expected_previous_day : the day ``previous`` must be (the calendar's previous business day);
        a different one is a gap, refused.
    floor : today's floor margin (required with the 'floor' tool).
    inputs : recorded with the state (e.g. the bundle id and the base's parameters hash).

    Raises
    ------
    DataError : a gap, a negative or non-finite base or floor, a missing floor.
    """
    if not (base >= 0 and base < float("inf")):
        raise DataError(f"base margin must be a finite number >= 0; got {base!r}", column="base")
    if "floor" in params.tools and (floor is None or not floor >= 0 or floor == float("inf")):
        raise DataError(f"the floor tool needs today's floor margin (finite, >= 0); got {floor!r}",
                        column="floor")
    if previous is not None:
        if previous.day >= day:
            raise DataError(f"the previous state's day {previous.day} is not before {day}",
                            column="day")
        if expected_previous_day is not None and previous.day != expected_previous_day:
            raise DataError(f"gap: the last state is of {previous.day}, but {day} follows "
                            f"{expected_previous_day}; run the state step for the missing day(s) "
                            "first (replaying them in order) instead of jumping", column="day")
    m = base
    parts: dict[str, float] = {}
    prev_m = None if previous is None else previous.margin
    for tool in params.tools:
        before = m
        if tool == "buffer":
            full = (1.0 + params.buffer_share) * base
            m = full if prev_m is None else max(base, min(full, prev_m * (1.0 + params.rebuild_rate)))
            m = max(m, before)
        elif tool == "floor":
            m = max(m, float(floor))  # type: ignore[arg-type]
        parts[tool] = m - before
    if params.max_daily_increase is not None and prev_m is not None:
        capped = min(m, prev_m * (1.0 + params.max_daily_increase))
        parts["cap"] = capped - m
        m = capped
    return APCState(day, float(base), float(m), parts, max(0.0, base - m), prev_m,
                    None if floor is None else float(floor), dict(inputs or {}), _hash(params))
