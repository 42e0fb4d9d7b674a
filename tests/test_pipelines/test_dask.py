"""The training flow on a real Dask LocalCluster (2 worker processes) gives the threads' results.

Dask workers are separate processes, so they reach the session harness's API through
``PREFECT_API_URL`` (with the temporary API each worker would start a server of its own).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipelines.flow_config import ModelSpec, RunnerConfig, TrainFlowConfig

pytestmark = pytest.mark.slow


def test_train_flow_on_dask_matches_threads(
    prefect_harness: str, embedded_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, TaskRunFilter

    from pipelines.flows import train
    from pipelines.runners import make_runner

    monkeypatch.setenv("PREFECT_API_URL", prefect_harness)  # inherited by the Dask workers
    cfg = TrainFlowConfig(
        candidates={
            "har": ModelSpec(kind="har"),
            "loghar": ModelSpec(kind="loghar"),
            "ewma": ModelSpec(kind="ewma"),
            "rw": ModelSpec(kind="rw"),
        },
        eval_periods=400,
        mcs_reps=50,
        register_model=False,
        refresh_cache=True,
    )
    threads = train.with_options(task_runner=make_runner(RunnerConfig(max_workers=2)))(cfg)
    dask_state = train.with_options(
        task_runner=make_runner(RunnerConfig(kind="dask", dask_workers=2))
    )(cfg, return_state=True)
    dask = dask_state.result()
    assert dask["challenger"] == threads["challenger"] == "loghar"
    a, b = pd.DataFrame(threads["scores"]), pd.DataFrame(dask["scores"])
    pd.testing.assert_frame_equal(
        a.drop(columns=["qlike", "qlike_ratio"]), b.drop(columns=["qlike", "qlike_ratio"])
    )
    np.testing.assert_allclose(b["qlike"], a["qlike"], rtol=1e-12)
    np.testing.assert_allclose(b["qlike_ratio"], a["qlike_ratio"], rtol=1e-12)
    assert len(a) == 4 * 3 * 3  # models x (2 symbols + pooled) x horizons (1, 2, 5: the default)
    # the Dask run computed (refresh_cache) rather than reading the threads' cached results
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id={"any_": [dask_state.state_details.flow_run_id]}),
            task_run_filter=TaskRunFilter(name={"like_": "evaluate-%"}),
        )
    assert sorted(r.name for r in runs) == ["evaluate-NASDAQ", "evaluate-SP500"]
    assert {r.state.name for r in runs} == {"Completed"}
