"""The ``dprm-forecaster`` pyfunc, logged with MLflow's models-from-code.

:func:`models.registry.register_challenger` logs this file as the model's code
(``mlflow.pyfunc.log_model(python_model=<this file>, artifacts={"bundle": <dir>})``): MLflow stores
the source and runs it on load, so nothing is pickled. The fitted parameters live in the ``bundle``
artifact (JSON written by :meth:`models.package.ForecasterPackage.save`); :meth:`load_context` rebuilds the
forecasters from them and :meth:`predict` rolls their state forward on the input frame with the
parameters held fixed (HAR lags, the EWMA recursion, the GARCH filter; no refit).

Input: a canonical realized frame (``ts`` as naive UTC datetimes, which is what MLflow's datetime
columns carry; ``symbol``; ``rv_var`` and the other realized columns the members need).
Params: ``origins`` = "last" (default: each symbol's latest row only) or "all" (every row with
enough history).
Output: the long forecast table of :meth:`models.forecast.VolForecast.to_frame`, one block per
bundle member (``model_id`` = the member's name).
"""

from __future__ import annotations

from typing import Any

import mlflow
import pandas as pd
from mlflow.pyfunc import PythonModel

import models.registry  # noqa: F401  (registers the LightGBM codec, whose boosters live in MLflow)
from models.package import ForecasterPackage


class DprmForecasterModel(PythonModel):
    """Pyfunc wrapper of a :class:`models.package.ForecasterPackage` (attribute ``bundle``, the
    name the registry reads)."""

    def load_context(self, context: Any) -> None:
        """Rebuild the forecasters from the ``bundle`` artifact."""
        self.bundle = ForecasterPackage.load(context.artifacts["bundle"])

    def predict(
        self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> pd.DataFrame:
        """The long forecast table for the input frame (see the module docs)."""
        origins = str((params or {}).get("origins", "last"))
        return self.bundle.predict(model_input, origins=origins)


mlflow.models.set_model(DprmForecasterModel())
