"""DPRM's error hierarchy and the ``Failure`` value.

Two ways a thing can go wrong, kept apart:

- **Exceptions** for input a user must fix. Every one is a :class:`DPRMError`; the CLI maps each to
  one line and exit code 2. Any other exception is a bug and shows as one (exit 1, the traceback
  behind ``--debug``).

  ``DPRMError``
    ``DataError``      bad input data (a file, a row, a column, a value); also a ``ValueError``
    ``ConfigError``    a bad setting, option, mapping or parameter value; also a ``ValueError``
    ``ModelError``     a model cannot be fitted or used on the data given (missing inputs, not fitted)
    ``RegistryError``  the model registry or promotion log is unreachable, corrupt or inconsistent
    ``StoreError``     the data store is inconsistent (orphaned, missing or stale partitions)

- **Failures as data** (:class:`Failure`) for a part of a computation that could not be done while
  the rest goes on: a model skipped for lack of inputs, a forecast that fell back to a baseline, a
  position margin could not value. A failure has a reason code from :class:`FailureReason`, the
  subject it is about and a message for a person. Nothing decides by parsing a message: code reads
  the exception type or the reason code.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

__all__ = [
    "ConfigError",
    "DPRMError",
    "DataError",
    "Failure",
    "FailureReason",
    "ModelError",
    "RegistryError",
    "StoreError",
]


class DPRMError(Exception):
    """Base of every error a user can fix; the CLI prints its message as one line, exit 2."""


class DataError(DPRMError, ValueError):
    """Bad input data: the message names the file, line, column, value and what was expected.

    Parameters
    ----------
    message : what is wrong and what was expected.
    source : the file (or other source) the data came from.
    line : the 1-based line in ``source`` (CSV), when known.
    column : the column (field) the value came from.
    """

    def __init__(
        self,
        message: str,
        *,
        source: str | None = None,
        line: int | None = None,
        column: str | None = None,
    ) -> None:
        self.source = source
        self.line = line
        self.column = column
        where = []
        if source is not None:
            where.append(str(source))
        if line is not None:
            where.append(f"line {line}")
        if column is not None:
            where.append(f"column '{column}'")
        prefix = ", ".join(where)
        super().__init__(f"{prefix}: {message}" if prefix else message)


class ConfigError(DPRMError, ValueError):
    """A bad setting, command-line option, mapping file or parameter value."""


class ModelError(DPRMError, ValueError):
    """A model cannot be fitted or used on the data given (missing inputs, unknown name, not fitted)."""


class RegistryError(DPRMError):
    """The registry or the promotion log is unreachable, corrupt, or the two disagree."""


class StoreError(DPRMError):
    """The canonical data store disagrees with its manifest (orphaned, missing or stale partitions)."""


class FailureReason(StrEnum):
    """Why a part of a computation could not be done (the code a program reads)."""

    MISSING_INPUTS = "missing_inputs"
    """The data lack a column, symbol or period the computation needs."""
    INSUFFICIENT_HISTORY = "insufficient_history"
    """Too few observations to fit or evaluate (e.g. GARCH on 40 days)."""
    FIT_FAILED = "fit_failed"
    """An estimation did not converge or raised; a fallback was used where one exists."""
    NON_FINITE = "non_finite"
    """A computation produced or received NaN or infinity."""
    NOT_FITTED = "not_fitted"
    """A model was asked to forecast before it was fitted."""
    NO_CHAMPION = "no_champion"
    """The registry has no champion for the model asked for."""
    UNKNOWN_INSTRUMENT = "unknown_instrument"
    """A position names an instrument that cannot be parsed or is not described."""
    UNSUPPORTED_INSTRUMENT = "unsupported_instrument"
    """The instrument is understood but the computation does not support it."""
    EXPIRED = "expired"
    """An option or future has expired at the valuation time."""
    MISSING_PRICE = "missing_price"
    """No price (mark, index, forward) is available for the instrument at the valuation time."""
    INVALID_VALUE = "invalid_value"
    """A field holds a value outside what is expected (NaN or zero quantity, strike <= 0, ...)."""
    ARBITRAGE = "arbitrage"
    """A price lies outside the no-arbitrage bounds (no implied volatility exists)."""
    STALE = "stale"
    """An input is older than allowed."""


@dataclass(frozen=True)
class Failure:
    """A failure that is data, not an exception.

    Attributes
    ----------
    reason : the code (a :class:`FailureReason`).
    subject : what failed (a model name, a symbol, a position id, ``"model/symbol"``).
    message : one line for a person: what is wrong, the value, what was expected.
    details : optional machine-readable context (field, value, expected, ...).
    """

    reason: FailureReason
    subject: str
    message: str
    details: dict[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.reason, FailureReason):
            object.__setattr__(self, "reason", FailureReason(self.reason))

    def __str__(self) -> str:
        return f"{self.subject}: {self.message} [{self.reason.value}]"

    def note(self) -> str:
        """The text a ``fallback_reason`` cell holds: the message and the code, without the subject
        (the row already names it), e.g. ``"too few observations: 39 < 250 [insufficient_history]"``.
        """
        return f"{self.message} [{self.reason.value}]"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (``reason`` as its code string)."""
        return {"reason": self.reason.value, "subject": self.subject, "message": self.message,
                "details": dict(self.details)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Failure:
        """Rebuild a failure from :meth:`to_dict`'s output."""
        return cls(FailureReason(data["reason"]), str(data["subject"]), str(data["message"]),
                   dict(data.get("details") or {}))
