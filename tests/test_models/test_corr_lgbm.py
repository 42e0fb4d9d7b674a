"""LGBMCorr: determinism with a seed, no look-ahead, PSD output with the Higham repair counted,
returns-only panels, the estimator contract, and a win over naive models on a panel with a known
time-varying correlation."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.exceptions import NotFittedError

from features.covariance import is_psd
from models.corr import CorrPanel, EWMACorr, RollingCorr
from models.corr_evaluation import walk_forward_corr
from models.corr_forecast import check_correlation
from models.corr_lgbm import LGBMCorr, make_lgbm_corr, repaired_share


def make_panel(r: np.ndarray, rc: np.ndarray | None = None) -> CorrPanel:
    ts = pd.date_range("2020-01-01", periods=len(r), freq="D", tz="UTC")
    syms = tuple(f"S{i}" for i in range(r.shape[1]))
    return CorrPanel(ts, syms, r, rc, pd.Timedelta("1D"))


def regime_panel(
    rng: np.random.Generator, t: int, n: int = 3, m: int = 24
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Daily returns and realized covariances of m intraday one-factor returns whose common
    correlation switches between 0.2 and 0.85 every ~24 days (the true correlation path too)."""
    rho = np.where(np.sin(np.arange(t) / 7.5) > 0, 0.85, 0.2)
    x = np.empty((t, m, n))
    for d in range(t):
        f = rng.standard_normal(m)
        e = rng.standard_normal((m, n))
        x[d] = 0.002 * (np.sqrt(rho[d]) * f[:, None] + np.sqrt(1 - rho[d]) * e)
    return x.sum(axis=1), np.einsum("dmi,dmj->dij", x, x), rho


@pytest.fixture
def realized(rng: np.random.Generator) -> CorrPanel:
    r, rc, _ = regime_panel(rng, 300)
    return make_panel(r, rc)


def test_deterministic_with_a_seed(realized: CorrPanel) -> None:
    fit = realized.slice(0, 250)
    a = LGBMCorr(random_state=7).fit(fit).predict(realized)
    b = LGBMCorr(random_state=7).fit(fit).predict(realized)
    np.testing.assert_array_equal(a.corr, b.corr)
    assert a.model_id == "lgbm_corr" and a.horizons == (1, 5)
    st = LGBMCorr(random_state=7).fit(fit).state_
    assert set(st.horizons) == {1, 5} and st.realized
    assert st.horizons[1].target_periods == 1 and st.horizons[5].target_periods == 5
    assert st.horizons[1].best_iteration >= 1 and st.horizons[1].n_train >= 200
    assert "z_lag22" in st.feature_names and "mkt_disp" in st.feature_names


def test_no_look_ahead(realized: CorrPanel) -> None:
    t0 = 260
    fitted = LGBMCorr().fit(realized.slice(0, t0 + 1))
    r2, rc2 = realized.returns.copy(), realized.realized_cov.copy()
    r2[t0 + 1 :] *= -3.0
    rc2[t0 + 1 :] = rc2[t0 + 1 :][:, ::-1, ::-1] * 5
    before = fitted.predict(realized)
    after = fitted.predict(make_panel(r2, rc2))
    k = before.origins.get_loc(realized.ts[t0])
    np.testing.assert_array_equal(before.corr[: k + 1], after.corr[: k + 1])
    assert not np.allclose(before.corr[k + 2 :], after.corr[k + 2 :])
    # data cutoff: the end of the fit data for earlier origins, the origin after it
    cut = before.cutoff_per_origin()
    assert cut.iloc[k] == realized.ts[t0] and cut.iloc[-1] == realized.ts[-1]


def test_output_is_psd_and_repairs_are_counted(rng: np.random.Generator) -> None:
    r, rc, _ = regime_panel(rng, 300)
    fitted = LGBMCorr().fit(make_panel(r[:250], rc[:250]))
    fc = fitted.predict(make_panel(r, rc))
    assert repaired_share(fc) == 0.0  # consistent realized inputs: nothing to repair
    # pairwise-built realized covariances (not PSD as a matrix) over the last 30 days
    bad = np.array([[1.0, 0.95, -0.95], [0.95, 1.0, 0.95], [-0.95, 0.95, 1.0]])
    sd = np.sqrt(np.diagonal(rc, axis1=1, axis2=2))
    rc2 = rc.copy()
    rc2[-30:] = bad[None] * sd[-30:, :, None] * sd[-30:, None, :]
    p2 = make_panel(r, rc2)
    fc2 = fitted.predict(p2)
    raw = fitted._path(p2, fitted.state_, fc2.horizons, np.arange(len(p2)))
    raw = raw[np.isfinite(raw).all(axis=(1, 2, 3))]
    not_psd = np.array([[not is_psd(m, tol=1e-12) for m in row] for row in raw])
    np.testing.assert_array_equal(fc2.repaired, not_psd)
    assert fc2.repaired[-5:, 0].all()  # h=1 follows the last days most closely
    assert repaired_share(fc2) == pytest.approx(not_psd.mean()) and repaired_share(fc2) > 0
    for m in fc2.corr.reshape(-1, 3, 3):
        check_correlation(m, "forecast")
        assert is_psd(m)
    # repaired matrices are moved off the PSD boundary (positive definite: a Stein loss exists)
    assert np.linalg.eigvalsh(fc2.corr[fc2.repaired]).min() >= 0.01 - 1e-12
    plain = clone(fitted).set_params(min_eigenvalue=0.0).fit(make_panel(r[:250], rc[:250]))
    fc3 = plain.predict(p2)
    np.testing.assert_array_equal(fc3.repaired, fc2.repaired)
    assert np.linalg.eigvalsh(fc3.corr[fc3.repaired]).min() < 1e-8  # Higham: on the boundary
    np.testing.assert_allclose(
        fc2.corr[fc2.repaired], 0.99 * fc3.corr[fc3.repaired] + 0.01 * np.eye(3), atol=1e-12
    )


def test_returns_only_panel(rng: np.random.Generator) -> None:
    r, _, _ = regime_panel(rng, 320, n=4)
    panel = make_panel(r)
    m = LGBMCorr(horizons=(1,)).fit(panel.slice(0, 280))
    assert m.state_.horizons[1].target_periods == 22 and not m.state_.realized
    fc = m.predict(panel)
    assert all(is_psd(c) for c in fc.corr.reshape(-1, 4, 4))
    assert (
        LGBMCorr(horizons=(1,), min_target_periods=10).fit(panel).state_.horizons[1].target_periods
        == 10
    )


def test_beats_naive_models_on_time_varying_correlation(rng: np.random.Generator) -> None:
    r, rc, rho = regime_panel(rng, 520, n=4)
    panel = make_panel(r, rc)
    models = {
        "ewma": EWMACorr(),
        "rolling": RollingCorr(window=100),
        "lgbm": LGBMCorr(horizons=(1, 5)),
    }
    res = walk_forward_corr(models, panel, horizons=(1, 5), window=300, refit_every=40, mcs_reps=50)
    s = res.summary().set_index(["model_id", "horizon"])
    for h in (1, 5):
        assert s.loc[("lgbm", h), "stein_qlike"] < s.loc[("rolling", h), "stein_qlike"]
        assert s.loc[("lgbm", h), "stein_qlike"] < s.loc[("ewma", h), "stein_qlike"]
        assert s.loc[("lgbm", h), "dm_pvalue"] < 0.05
        assert s.loc[("lgbm", h), "psd_share"] == 1.0
    # closer to the true correlation than the naive models
    fc = res.forecasts["lgbm"]
    pos = panel.ts.get_indexer(fc.origins)
    truth = rho[pos + 1]
    err = {
        name: np.abs(res.forecasts[name].at(1)[:, 0, 1] - truth).mean()
        for name in ("lgbm", "rolling", "ewma")
    }
    assert err["lgbm"] < err["rolling"] and err["lgbm"] < err["ewma"]


def test_estimator_contract_and_factory() -> None:
    model = LGBMCorr(random_state=3)
    c = clone(model)
    assert c.get_params() == model.get_params() and c is not model
    with pytest.raises(NotFittedError):
        model.predict(make_panel(np.zeros((5, 2)) + 0.01), (1,))
    f = make_lgbm_corr(horizons=(1, 5, 22), random_state=5, num_threads=2, num_leaves=15)
    assert isinstance(f, LGBMCorr)
    assert (f.horizons, f.random_state, f.num_threads, f.num_leaves) == ((1, 5, 22), 5, 2, 15)


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({"lam": 1.5}, r"The 'lam' parameter of LGBMCorr must be in \(0, 1\). Got 1.5 instead."),
        ({"offset": "har"}, "The 'offset' parameter of LGBMCorr must be one of"),
        ({"num_threads": 0}, "The 'num_threads' parameter of LGBMCorr must be an int >= 1"),
        ({"lags": []}, "The 'lags' parameter of LGBMCorr"),
        ({"random_state": -1}, "The 'random_state' parameter of LGBMCorr must be an int >= 0"),
    ],
    ids=["lam", "offset", "num_threads", "lags", "random_state"],
)
def test_parameter_validation(params, match, realized: CorrPanel) -> None:
    with pytest.raises(ValueError, match=match):
        LGBMCorr(**params).fit(realized)


def test_errors(realized: CorrPanel) -> None:
    with pytest.raises(ValueError, match="LGBMCorr needs at least"):
        LGBMCorr().fit(realized.slice(0, 60))
    with pytest.raises(ValueError, match="pooled training rows"):
        LGBMCorr(min_train=5000).fit(realized)
    m = LGBMCorr(horizons=(1,)).fit(realized)
    with pytest.raises(ValueError, match=r"fitted for horizons \[1\]; got horizon\(s\) \[5\]"):
        m.predict(realized, (1, 5))
