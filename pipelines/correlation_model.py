"""The ``dprm-correlation`` pyfunc, logged with MLflow's models-from-code.

:func:`models.registry.register_challenger` logs this file as the code of a correlation model
(``python_model=<this file>, artifacts={"bundle": <dir>}``); the fitted model lives in the
``bundle`` artifact written by :meth:`models.corr_package.CorrelationPackage.save` (its SHA-256 is
checked on load). :meth:`predict` turns the input prices into the model's return panel and
forecasts with the fitted state (no refit).

Input: a long price frame (``ts`` as naive UTC datetimes, ``symbol``, ``close``).
Params: ``origins`` = "last" (default: the latest period only) or "all".
Output: the long correlation table of :meth:`models.corr_forecast.CorrForecast.to_frame` (one row
per origin, horizon and ordered symbol pair).
"""

from __future__ import annotations

from typing import Any

import mlflow
import pandas as pd
from mlflow.pyfunc import PythonModel

from models.corr_package import CorrelationPackage


class DprmCorrelationModel(PythonModel):
    """Pyfunc wrapper of a :class:`models.corr_package.CorrelationPackage` (attribute ``bundle``,
    the name the registry reads)."""

    def load_context(self, context: Any) -> None:
        """Rebuild the fitted correlation model from the ``bundle`` artifact."""
        self.bundle = CorrelationPackage.load(context.artifacts["bundle"])

    def predict(
        self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> pd.DataFrame:
        """The long correlation table for the input prices (see the module docs)."""
        origins = str((params or {}).get("origins", "last"))
        return self.bundle.predict(model_input, origins=origins)


mlflow.models.set_model(DprmCorrelationModel())
