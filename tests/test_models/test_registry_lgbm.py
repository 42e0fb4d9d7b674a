"""LightGBM members of the registered forecaster bundle: boosters through ``mlflow.lightgbm``
(flavor, signature, input example, pinned requirements in the registration run), the rest as JSON,
and a registered version that forecasts exactly like the fitted model, in-process and in a fresh
process.
"""

from __future__ import annotations

import json
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest

from models import package as P
from models import registry as R
from models.combine import HARBoostVol
from models.ewma import EWMAVol
from models.lgbm import LGBMVol, logged_booster_name
from tests.test_models.test_registry import HS, predict_in_fresh_process, realized_frame


@pytest.fixture(scope="module")
def data() -> pd.DataFrame:
    return realized_frame(np.random.default_rng(20261125), n=420)


def small_lgbm(**kw) -> LGBMVol:
    return LGBMVol(
        horizons=HS,
        min_train=100,
        validation_size=40,
        n_estimators=25,
        learning_rate=0.1,
        num_leaves=7,
        min_child_samples=20,
        early_stopping_rounds=10,
        **kw,
    )


@pytest.fixture(scope="module")
def fitted(data: pd.DataFrame) -> LGBMVol:
    return small_lgbm(quantile_levels=(0.05, 0.95), quantile_method="lgbm").fit(data)


def _member_doc(bundle: P.ForecasterPackage, name: str, tmp: Path) -> dict:
    bundle.save(tmp)
    return json.loads((tmp / "members" / f"{name}.json").read_text())


def test_boosters_are_logged_with_the_lightgbm_flavor(
    home: Path, data: pd.DataFrame, fitted: LGBMVol
) -> None:
    bundle = P.ForecasterPackage.build(
        {"lgbm": fitted, "ewma": EWMAVol()}, training_data=data, horizons=HS
    )
    ref = R.register_challenger(bundle, home=home, training_data=data)
    tags = R.show_version(ref.version, home=home)["tags"]
    assert json.loads(tags["dprm.storage"]) == {"lgbm": "json", "ewma": "json"}
    doc = _member_doc(bundle, "lgbm", home / "resaved")
    state = doc["state"]
    assert state["feature_names"] == fitted.feature_names_
    assert state["symbol_codes"] == ["BTCUSDT", "ETHUSDT"]
    assert sorted(state["horizons"]) == ["1", "5"]
    uri = R.tracking_uri(home)
    with R._fluent(uri) as mlflow:
        for h in HS:
            s = state["horizons"][str(h)]
            m = fitted.models_[h]
            assert s["bias_factor"] == m.bias_factor and s["best_iteration"] == m.best_iteration
            assert s["resid_quantiles"] == [[q, v] for q, v in sorted(m.resid_quantiles.items())]
            uris = [s["booster_uri"], *(r["uri"] for r in s["quantile_boosters"].values())]
            assert len(uris) == 3  # the mean booster and the two quantile boosters
            for u in uris:
                info = mlflow.models.get_model_info(u)
                assert "lightgbm" in info.flavors and info.run_id == ref.run_id
                assert info.flavors["lightgbm"]["model_class"] == "lightgbm.basic.Booster"
                names = [c.name for c in info.signature.inputs.inputs]
                assert names == fitted.feature_names_
                reqs = Path(mlflow.pyfunc.get_model_dependencies(u))
                assert f"lightgbm=={lgb.__version__}" in reqs.read_text().split()
                local = mlflow.artifacts.download_artifacts(artifact_uri=u)
                example = mlflow.models.Model.load(local).load_input_example(local)
                assert list(example.columns) == fitted.feature_names_ and len(example) == 5
            # the logged booster is the fitted one: same trees, same raw predictions
            back = mlflow.lightgbm.load_model(s["booster_uri"])
            x = example.to_numpy()  # the input example of the last booster of this horizon
            np.testing.assert_array_equal(back.predict(x), m.booster.predict(x))
        run_models = mlflow.search_logged_models(
            experiment_ids=[R.experiment_id(home)],
            filter_string=f"source_run_id = '{ref.run_id}'",
            output_format="list",
        )
    assert sorted(lm.name for lm in run_models) == sorted(
        [
            "forecaster",
            *[f"lgbm-h{h}" for h in HS],
            *[f"lgbm-h{h}-q{q}" for h in HS for q in ("0p05", "0p95")],
        ]
    )


def test_registered_lgbm_forecasts_identically(
    home: Path, data: pd.DataFrame, fitted: LGBMVol
) -> None:
    plain = small_lgbm(random_state=3).fit(data)  # residual quantiles, no quantile boosters
    bundle = P.ForecasterPackage.build({"lgbm": plain, "lgbmq": fitted}, horizons=HS)
    ref = R.register_challenger(bundle, home=home, training_data=data)
    loaded = R.load_forecaster("challenger", home=home)
    assert loaded.ref.alias == "challenger" and loaded.primary == "lgbm"
    here = loaded.predict(data, origins="all")
    pd.testing.assert_frame_equal(here, bundle.predict(data, origins="all"), check_exact=True)
    # the rebuilt member against the fitted estimator itself (every quantile, every origin)
    rebuilt = R._load_package(R.model_ref(ref.version, home=home), R.tracking_uri(home))
    for name, est in (("lgbm", plain), ("lgbmq", fitted)):
        got, want = rebuilt.members[name].predict(data), est.predict(data)
        for sym in want:
            pd.testing.assert_frame_equal(got[sym].variance, want[sym].variance, check_exact=True)
            assert set(got[sym].quantiles) == set(want[sym].quantiles)
            for q in want[sym].quantiles:
                pd.testing.assert_frame_equal(
                    got[sym].quantiles[q], want[sym].quantiles[q], check_exact=True
                )
        assert rebuilt.members[name].bias_factor_ == est.bias_factor_
    # a loaded bundle saves again (its boosters are the ones behind the URIs)
    doc = _member_doc(rebuilt, "lgbmq", home / "again")
    assert doc["state"]["horizons"]["1"]["booster_uri"].startswith("models:/")
    # and in a fresh process, through MLflow alone
    there = predict_in_fresh_process(home, data, "challenger")
    pd.testing.assert_frame_equal(there, here, check_exact=True)


def test_lgbm_state_needs_logged_boosters(tmp_path: Path, data: pd.DataFrame) -> None:
    est = small_lgbm().fit(data)
    bundle = P.ForecasterPackage.build({"lgbm": est}, horizons=HS)
    with pytest.raises(ValueError, match=r"booster_uris_ covers horizons None; expected \[1, 5\]"):
        bundle.save(tmp_path / "b")
    # URIs recorded for other boosters (a refit after logging) are refused
    est.booster_uris_ = {
        h: {"booster": {"uri": f"models:/m-{h}", "sha256": "0" * 64}, "quantiles": {}} for h in HS
    }
    with pytest.raises(ValueError, match=r"booster of horizon 1 \(models:/m-1\) is not the fitted"):
        bundle.save(tmp_path / "b")


def test_lgbm_codec_is_exact_and_boosters_need_the_registration_run(data: pd.DataFrame) -> None:
    assert P.codec_for(LGBMVol()).base == "models.lgbm.LGBMVol"
    # a subclass with an estimator parameter is not JSON-able: it keeps the joblib fallback
    assert P.codec_for(HARBoostVol()) is None
    codec = P.codec_for(LGBMVol())
    with pytest.raises(
        ValueError, match="inside the registration run 'r1'; the active run is None"
    ):
        codec.on_log(LGBMVol(), "lgbm", "r1", data)


def test_logged_names_have_no_dots() -> None:
    assert logged_booster_name("lgbm.v2", 5) == "lgbmpv2-h5"
    assert logged_booster_name("m", 1, 0.025) == "m-h1-q0p025"
