"""VaR and ES on a finite, equally weighted scenario set, and their Euler attribution.

Convention (losses ``L = -pnl``, ``n`` scenarios, confidence ``c``):

- the tail is the ``k = ceil(n (1 - c))`` largest losses (at least 1), ordered by loss and, on
  ties, by scenario index (a stable sort, so the tail is a deterministic set);
- ``ES_c = mean of the tail losses`` (the standard estimator; for ``n (1 - c)`` an integer it is
  exactly the mean of the worst ``n (1 - c)`` scenarios);
- ``VaR_c = the ceil(n c)-th smallest loss`` (the lower empirical quantile
  ``inf{l : F_n(l) >= c}``), i.e. the ``n - ceil(n c) + 1``-th largest.

Euler attribution (positive homogeneity of degree 1 on a fixed scenario set): a position's ES
contribution is its mean loss over the tail scenarios, its VaR contribution is its loss in the VaR
scenario. Both sum to the measure exactly (up to floating-point summation).

Floating-point guard: ``n (1 - c)`` and ``n c`` are rounded to 12 significant digits before the
ceiling, so 1000 x (1 - 0.975) = 25.000000000000004 gives 25, not 26.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from features.errors import ConfigError, DataError

__all__ = ["TailMeasure", "es", "euler", "measure", "tail_count", "var", "var_rank"]


def _ceil(x: float) -> int:
    return int(math.ceil(round(x, 12 - int(math.floor(math.log10(max(abs(x), 1e-300)))))))


def _check(n: int, confidence: float) -> None:
    if n < 1:
        raise DataError("a risk measure needs at least one scenario; got 0", column="pnl")
    if not 0.0 < confidence < 1.0:
        raise ConfigError(f"confidence must be in (0, 1). Got {confidence!r} instead.")


def tail_count(n: int, confidence: float) -> int:
    """Scenarios in the ES tail: ``max(1, ceil(n (1 - confidence)))``."""
    _check(n, confidence)
    return max(1, _ceil(n * (1.0 - confidence)))


def var_rank(n: int, confidence: float) -> int:
    """0-based position, in the losses sorted from largest, of the VaR scenario:
    ``n - ceil(n c)`` (0 = the worst scenario)."""
    _check(n, confidence)
    return n - min(n, max(1, _ceil(n * confidence)))


def _order(pnl: NDArray[np.float64]) -> NDArray[np.int64]:
    """Scenario indices from the largest loss down (ties: lower index first)."""
    return np.argsort(pnl, kind="stable")


@dataclass(frozen=True)
class TailMeasure:
    """A measure's value and the scenarios it rests on.

    Attributes
    ----------
    kind : "es" or "var".
    confidence : the level.
    value : the measure (a loss, in the P&L's currency; may be negative for a book that gains in
        every tail scenario).
    scenarios : indices of the scenarios that define it: the ES tail (largest loss first) or the
        one VaR scenario.
    n_scenarios : size of the scenario set.
    """

    kind: str
    confidence: float
    value: float
    scenarios: NDArray[np.int64]
    n_scenarios: int


def measure(pnl: ArrayLike, confidence: float, kind: str = "es") -> TailMeasure:
    """ES or VaR of a P&L vector (array of shape (n_scenarios,)) with its defining scenarios."""
    x = np.asarray(pnl, dtype=np.float64).ravel()
    n = x.size
    _check(n, confidence)
    if not np.isfinite(x).all():
        raise DataError("the P&L vector holds NaN or inf", column="pnl")
    if kind == "es":
        idx = _smallest(x, tail_count(n, confidence))
        return TailMeasure("es", confidence, float(-x[idx].mean()), idx, n)
    if kind == "var":
        r = var_rank(n, confidence)
        idx = _smallest(x, r + 1)[r:][:1]
        return TailMeasure("var", confidence, float(-x[idx[0]]), idx, n)
    raise ConfigError(f"kind must be 'es' or 'var'. Got {kind!r} instead.")


def _smallest(x: NDArray[np.float64], k: int) -> NDArray[np.int64]:
    """The first ``k`` of :func:`_order` (the ``k`` largest losses, ties: lower index first)
    without sorting the whole vector: a partition, then the ties at the boundary by index."""
    n = x.size
    if k >= n // 4:
        return _order(x)[:k]
    v = x[np.argpartition(x, k - 1)[k - 1]]  # the k-th smallest value
    below = np.flatnonzero(x < v)
    idx = np.concatenate([below, np.flatnonzero(x == v)[:k - below.size]])
    return idx[np.lexsort((idx, x[idx]))]


def es(pnl: ArrayLike, confidence: float = 0.975) -> float:
    """Expected shortfall (mean loss of the tail; see the module docstring)."""
    return measure(pnl, confidence, "es").value


def var(pnl: ArrayLike, confidence: float = 0.99) -> float:
    """Value at risk (the ``ceil(n c)``-th smallest loss; see the module docstring)."""
    return measure(pnl, confidence, "var").value


def euler(position_pnl: ArrayLike, tail: TailMeasure) -> NDArray[np.float64]:
    """Euler contributions of the rows of ``position_pnl`` (array of shape (n_positions,
    n_scenarios), the same scenario set as ``tail``): each row's mean loss over the tail
    scenarios (ES) or its loss in the VaR scenario. They sum to ``tail.value`` when the rows sum
    to the P&L vector the measure was computed on."""
    p = np.asarray(position_pnl, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] != tail.n_scenarios:
        raise DataError(f"position_pnl must have shape (n_positions, {tail.n_scenarios}). Got "
                        f"{p.shape} instead.", column="position_pnl")
    return -p[:, tail.scenarios].mean(axis=1)
