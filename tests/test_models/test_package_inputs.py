"""The forecaster package: its pyfunc signature lists every input a member declares, and a member
file whose digest differs from the manifest is refused."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from models import package as P
from models.ewma import EWMAVol
from models.har import LogHARDoWXVol
from tests.test_models.test_har import simulate_realized


@pytest.fixture(scope="module")
def data():
    d = simulate_realized(np.random.default_rng(3), 400, symbols=("BTCUSDT",))
    d["rec4_x"] = np.random.default_rng(4).normal(0.0, 0.3, len(d))
    return d


def test_context_columns_are_in_the_signature_and_required(data) -> None:
    pkg = P.ForecasterPackage.build(
        {"x": LogHARDoWXVol(exog=("rec4_x",), horizons=(1, 5), min_obs=None),
         "ewma": EWMAVol(min_obs=None)}, horizons=(1, 5), training_data=data)
    schema = {name: required for _, name, required in P.input_schema(pkg)}
    assert schema["rec4_x"] is True and schema["rv_var"] is True and schema["bv_var"] is False
    example = P.input_example(pkg, data)
    assert "rec4_x" in example.columns
    # served without the context column: an error naming it, never NaN forecasts
    with pytest.raises(ValueError, match=r"rec4_x"):
        pkg.predict(data.drop(columns="rec4_x"))


def test_a_modified_member_file_is_refused(tmp_path: Path, data) -> None:
    pkg = P.ForecasterPackage.build({"ewma": EWMAVol(min_obs=None)}, horizons=(1,),
                                    training_data=data)
    pkg.save(tmp_path / "b")
    P.ForecasterPackage.load(tmp_path / "b")  # intact: loads
    f = tmp_path / "b" / "members" / "ewma.json"
    f.write_text(f.read_text().replace("0.94", "0.95"))
    with pytest.raises(ValueError, match=r"ewma\.json has SHA-256 .* modified; refusing"):
        P.ForecasterPackage.load(tmp_path / "b")
    f.unlink()
    with pytest.raises(ValueError, match=r"ewma\.json is missing"):
        P.ForecasterPackage.load(tmp_path / "b")


def test_a_manifest_of_another_format_or_a_newer_version_is_refused(tmp_path: Path, data) -> None:
    import json

    from models.corr_package import CorrelationPackage

    with pytest.raises(ValueError, match=r"manifest\.json is missing: not a package"):
        P.ForecasterPackage.load(tmp_path / "none")
    pkg = P.ForecasterPackage.build({"ewma": EWMAVol(min_obs=None)}, horizons=(1,),
                                    training_data=data)
    pkg.save(tmp_path / "b")
    with pytest.raises(ValueError, match=r"format must be 'dprm-correlation-package'; got"):
        CorrelationPackage.load(tmp_path / "b")
    m = tmp_path / "b" / "manifest.json"
    doc = json.loads(m.read_text())
    m.write_text(json.dumps({**doc, "format_version": 99}))
    with pytest.raises(ValueError, match=r"format_version 99 is newer than this code .* upgrade dprm"):
        P.ForecasterPackage.load(tmp_path / "b")
