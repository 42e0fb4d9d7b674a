"""Concurrent training registers once: two real `dprm train` processes with the same config at
once (the registry's file lock under DPRM_HOME), and the Prefect global concurrency limit of one
per model that serializes deployed runs on a real Prefect server (the test harness's API).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from tests.test_pipelines.train_settings import SMALL_TRAIN_TOML

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_two_processes_training_at_once_register_one_version_promoted_once(
    embedded_template: Path, tmp_path: Path
) -> None:
    from mlflow import MlflowClient

    from models import promotion_log, registry

    home = tmp_path / "home"
    shutil.copytree(embedded_template, home)
    cfg = tmp_path / "small.toml"
    cfg.write_text(SMALL_TRAIN_TOML)
    procs = []
    for i in range(2):
        env = {
            **os.environ,
            "DPRM_HOME": str(home),
            # own Prefect state per process: what is under test is the registry, not Prefect
            "PREFECT_HOME": str(tmp_path / f"prefect{i}"),
            "PREFECT_RESULTS_LOCAL_STORAGE_PATH": str(tmp_path / f"prefect{i}" / "storage"),
            "COLUMNS": "200",
        }
        env.pop("PREFECT_API_URL", None)
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "pipelines.cli", "train", "--config", str(cfg)],
                env=env,
                cwd=ROOT,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    outs = [p.communicate(timeout=900) for p in procs]
    for p, (out, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, (out[-3000:], err[-3000:])
    versions = registry.list_versions(home=home)
    assert versions["version"].tolist() == [1]
    assert versions["aliases"].tolist() == ["champion"]
    actions = [e["action"] for e in promotion_log.read_promotion_log(home)]
    assert actions == ["register_challenger", "promote"]
    assert registry.verify_registry(home) == {"dprm-forecaster": "1"}
    # one evaluation run for the training key, and one process reused the other's version
    client = MlflowClient(registry.tracking_uri(home))
    exp = registry.experiment_id(home, "volatility")
    key = client.get_model_version("dprm-forecaster", "1").tags["dprm.train_key"]
    runs = client.search_runs([exp], filter_string=f"tags.`dprm.train_key` = '{key}'")
    assert len(runs) == 1
    reused = sorted('"reused": true' in out for out, _ in outs)
    assert reused == [False, True]


def test_registry_slot_is_a_global_concurrency_limit_of_one(prefect_harness: str) -> None:
    from prefect.client.orchestration import get_client
    from prefect.concurrency.sync import concurrency

    from pipelines.flows import registry_limit_name, registry_slot

    held, release, errors = threading.Event(), threading.Event(), []

    def holder() -> None:
        try:
            with registry_slot("dprm-forecaster-x", deployed=True):
                held.set()
                release.wait(60)
        except BaseException as exc:  # reported by the assertion below
            errors.append(exc)
            held.set()

    t = threading.Thread(target=holder)
    t.start()
    assert held.wait(120)
    assert not errors, errors
    name = registry_limit_name("dprm-forecaster-x")
    with get_client(sync_client=True) as client:
        limit = client.read_global_concurrency_limit_by_name(name)
    assert (limit.name, limit.limit) == ("dprm-registry-dprm-forecaster-x", 1)
    # a second run of the same model waits while the slot is held ...
    with pytest.raises(TimeoutError), concurrency(name, occupy=1, timeout_seconds=3, strict=True):
        pass
    # ... another model does not
    with registry_slot("dprm-forecaster-y", deployed=True):
        pass
    release.set()
    t.join(60)
    with registry_slot("dprm-forecaster-x", deployed=True):  # free again once released
        pass
    # an ad-hoc (not deployed) run relies on the file lock alone: no slot is taken
    with registry_slot("dprm-forecaster-z"), get_client(sync_client=True) as client:
        from prefect.exceptions import ObjectNotFound

        with pytest.raises(ObjectNotFound):
            client.read_global_concurrency_limit_by_name(registry_limit_name("dprm-forecaster-z"))
