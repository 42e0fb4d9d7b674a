"""The walk-forward schedule: one object for how an out-of-sample evaluation re-estimates.

In the spirit of skfolio's ``WalkForward`` splitter, :class:`WalkForward` holds the estimation
window, whether it rolls or expands, how often the model is re-estimated and the purge between the
last training target and the origin. Every ``walk_forward`` (a model's, the evaluation's, the
promotion gate's) takes one; a field left None means "the model's own setting", so
``WalkForward()`` is "each model on its own schedule" (LightGBM retrained every 21 periods on an
expanding window, GARCH re-estimated weekly) and ``WalkForward(window=500, refit_every=1)``
imposes a rolling 500-period window re-estimated at every origin on every model.

Models keep their ``window``/``window_type``/``refit_every`` hyperparameters: they are the
model's own schedule (what ``fit`` uses, and what :meth:`WalkForward.of` reads), so a registered
model serves with the schedule it was evaluated with.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any, Literal

from features.errors import ConfigError

__all__ = ["WalkForward", "merge"]

WINDOW_TYPES = ("rolling", "expanding")


def _check_int(name: str, value: int | None) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(
            f"The '{name}' parameter of WalkForward must be an int >= 1 or None. "
            f"Got {value!r} instead."
        )


@dataclass(frozen=True)
class WalkForward:
    """How a walk-forward re-estimates; None in a field = the model's own setting.

    Attributes
    ----------
    window : estimation window in periods (rolling) or the minimum history (expanding).
    window_type : "rolling" or "expanding".
    refit_every : re-estimate every this many origins.
    purge : training rows must have targets ending at least ``purge`` periods before the origin;
        None = each horizon ``h`` (the minimum: targets complete at the origin).
    """

    window: int | None = None
    window_type: Literal["rolling", "expanding"] | None = None
    refit_every: int | None = None
    purge: int | None = None

    def __post_init__(self) -> None:
        _check_int("window", self.window)
        _check_int("refit_every", self.refit_every)
        _check_int("purge", self.purge)
        if self.window_type is not None and self.window_type not in WINDOW_TYPES:
            raise ConfigError(
                f"The 'window_type' parameter of WalkForward must be a str among "
                f"{set(WINDOW_TYPES)} or None. Got {self.window_type!r} instead."
            )

    @classmethod
    def of(cls, model: Any) -> WalkForward:
        """The schedule ``model`` runs on by itself: its ``window``, ``window_type`` and
        ``refit_every`` hyperparameters where it declares them (a model without ``window_type``
        rolls when it has a window and expands otherwise); the defaults of
        :meth:`models.base.BaseForecaster.walk_forward` (1000, rolling, 1) where it does not."""
        params = model.get_params(deep=False)
        window = params.get("window", 1000)
        default_type = "rolling" if window is not None else "expanding"
        return cls(
            window=window,
            window_type=params.get("window_type") or default_type,
            refit_every=params.get("refit_every", 1),
        )

    def over(self, base: WalkForward) -> WalkForward:
        """This schedule with ``base``'s fields where this one leaves them None."""
        return WalkForward(**{k: v if v is not None else getattr(base, k)
                              for k, v in asdict(self).items()})

    def with_(self, **changes: Any) -> WalkForward:
        """A copy with ``changes`` (validated)."""
        return replace(self, **changes)

    def as_dict(self) -> dict[str, Any]:
        """The fields as a JSON-able dict (for logs and run parameters)."""
        return asdict(self)


def merge(
    schedule: WalkForward | None,
    window: int | None,
    window_type: str | None,
    refit_every: int | None,
    purge: int | None,
) -> tuple[int | None, str | None, int | None, int | None]:
    """``(window, window_type, refit_every, purge)`` for a model's ``walk_forward``: each given
    keyword, else ``schedule``'s field, else None (the model's own)."""
    s = schedule or WalkForward()
    return (
        s.window if window is None else window,
        s.window_type if window_type is None else window_type,
        s.refit_every if refit_every is None else refit_every,
        s.purge if purge is None else purge,
    )
