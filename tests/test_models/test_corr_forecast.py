"""CorrForecast: validation, covariance over a margin period, long-table round trip."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from models.corr_forecast import CORR_FRAME_COLUMNS, CorrForecast, check_correlation
from models.forecast import VolForecast

ORIGINS = pd.date_range("2024-01-01", periods=3, freq="D", tz="UTC")
SYMS = ("BTCUSDT", "ETHUSDT")


def corr2(rho: float) -> np.ndarray:
    return np.array([[1.0, rho], [rho, 1.0]])


def make(corr: np.ndarray | None = None, **kw: object) -> CorrForecast:
    if corr is None:
        corr = np.stack([np.stack([corr2(0.5 + 0.1 * i), corr2(0.4 + 0.1 * i)]) for i in range(3)])
    args = dict(
        corr=corr,
        symbols=SYMS,
        origins=ORIGINS,
        horizons=(1, 5),
        model_id="ewma_corr",
        model_version="1",
        data_cutoff_ts=ORIGINS[-1],
    )
    args.update(kw)
    return CorrForecast(**args)


def vol(symbol: str, var1: float, var5: float) -> VolForecast:
    return VolForecast(
        variance=pd.DataFrame({1: [var1] * 3, 5: [var5] * 3}, index=ORIGINS),
        symbol=symbol,
        horizon_unit="1D",
        annualization=365.0,
        model_id="ewma",
        model_version="1",
        data_cutoff_ts=ORIGINS[-1],
    )


def test_covariance_is_cumulative_var_times_corr() -> None:
    fc = make()
    vols = {"BTCUSDT": vol("BTCUSDT", 4e-4, 5e-4), "ETHUSDT": vol("ETHUSDT", 9e-4, 1e-3)}
    cov5 = fc.covariance(vols, 5)
    # by hand: cumulative variance 5 x average; covariance rho x sqrt(product)
    rho = fc.at(5)[1, 0, 1]
    expect = np.array(
        [
            [5 * 5e-4, rho * np.sqrt(5 * 5e-4 * 5 * 1e-3)],
            [rho * np.sqrt(5 * 5e-4 * 5 * 1e-3), 5 * 1e-3],
        ]
    )
    np.testing.assert_allclose(cov5[1], expect, rtol=1e-14)
    np.testing.assert_allclose(
        fc.covariance(vols, 1)[0], np.array([[4e-4, 0.5 * 6e-4], [0.5 * 6e-4, 9e-4]])
    )


def test_covariance_errors() -> None:
    fc = make()
    with pytest.raises(KeyError, match="vol lacks a forecast for symbol"):
        fc.covariance({"BTCUSDT": vol("BTCUSDT", 1e-4, 1e-4)}, 1)
    short = VolForecast(
        variance=pd.DataFrame({1: [1e-4], 5: [1e-4]}, index=ORIGINS[:1]),
        symbol="ETHUSDT",
        horizon_unit="1D",
        annualization=365.0,
        model_id="m",
        model_version="1",
        data_cutoff_ts=ORIGINS[0],
    )
    with pytest.raises(ValueError, match="has no horizon-1 forecast at origin"):
        fc.covariance({"BTCUSDT": vol("BTCUSDT", 1e-4, 1e-4), "ETHUSDT": short}, 1)
    with pytest.raises(KeyError, match="horizon 22 is not in this forecast"):
        fc.at(22)


def test_frame_round_trip_exact() -> None:
    stressed = corr2(0.9)
    rep = np.array([[False, True], [False, False], [True, False]])
    fc = make(stressed=stressed, repaired=rep, horizon_unit="1D")
    frame = fc.to_frame()
    assert tuple(frame.columns) == CORR_FRAME_COLUMNS
    assert len(frame) == 3 * 2 * 4
    back = CorrForecast.from_frame(frame)
    np.testing.assert_array_equal(back.corr, fc.corr)
    np.testing.assert_array_equal(back.repaired, rep)
    np.testing.assert_array_equal(back.stressed, stressed)
    assert back.symbols == SYMS and back.horizons == (1, 5)
    assert back.origins.equals(fc.origins)
    assert back.data_cutoff_ts == fc.data_cutoff_ts
    one = frame[(frame["origin_ts"] == ORIGINS[1]) & (frame["horizon"] == 5)]
    assert one.loc[
        (one["symbol_a"] == "BTCUSDT") & (one["symbol_b"] == "ETHUSDT"), "corr"
    ].item() == pytest.approx(0.5)


def test_from_frame_errors() -> None:
    frame = make().to_frame()
    with pytest.raises(ValueError, match="missing column"):
        CorrForecast.from_frame(frame.drop(columns="corr"))
    with pytest.raises(ValueError, match="every ordered symbol pair"):
        CorrForecast.from_frame(frame.iloc[1:])
    with pytest.raises(ValueError, match="duplicate"):
        CorrForecast.from_frame(pd.concat([frame, frame.iloc[:1]]))
    with pytest.raises(ValueError, match="must hold one model_id"):
        CorrForecast.from_frame(frame.assign(model_id=["a", "b"] * (len(frame) // 2)))


def test_matrix_access() -> None:
    fc = make()
    m = fc.matrix("2024-01-02", 1)
    assert list(m.index) == list(SYMS)
    assert m.loc["BTCUSDT", "ETHUSDT"] == pytest.approx(0.6)
    with pytest.raises(KeyError, match="origin .* is not in this forecast"):
        fc.matrix("2023-01-01", 1)


def test_stored_arrays_are_read_only() -> None:
    fc = make()
    with pytest.raises(ValueError, match="read-only"):
        fc.corr[0, 0, 0, 1] = 0.0


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (lambda c: c.__setitem__((0, 0, 0, 1), 0.7), "corr must be symmetric"),
        (lambda c: c.__setitem__((1, 1, 0, 0), 1.1), "corr must be unit-diagonal"),
        (lambda c: c.__setitem__((2, 0, 0, 1), np.nan), "corr must be finite"),
    ],
    ids=["asymmetric", "diagonal", "nan"],
)
def test_invalid_matrices_raise(mutate, match) -> None:
    c = np.stack([np.stack([corr2(0.5), corr2(0.4)]) for _ in range(3)])
    mutate(c)
    with pytest.raises(ValueError, match=match):
        make(c)


def test_non_psd_raises() -> None:
    bad = np.array([[1.0, 0.9, -0.9], [0.9, 1.0, 0.9], [-0.9, 0.9, 1.0]])  # min eigenvalue < 0
    assert np.linalg.eigvalsh(bad)[0] < 0
    c = np.broadcast_to(bad, (1, 1, 3, 3)).copy()
    with pytest.raises(ValueError, match="positive semi-definite; got smallest eigenvalue"):
        CorrForecast(c, ("A", "B", "C"), ORIGINS[:1], (1,), "m", "1", ORIGINS[0])
    with pytest.raises(ValueError, match="entries must lie in"):
        check_correlation(np.array([[1.0, 1.2], [1.2, 1.0]]), "m")


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"symbols": ("A", "A")}, "symbols must be unique"),
        ({"symbols": ()}, "symbols must be a non-empty"),
        ({"horizons": (5, 1)}, "horizons must be unique and increasing"),
        ({"horizons": (0, 5)}, "horizons must be a non-empty sequence of ints >= 1"),
        ({"origins": ORIGINS.tz_localize(None)}, "origins must hold UTC timestamps"),
        ({"origins": ORIGINS[::-1]}, "origins must be sorted and unique"),
        ({"corr": np.zeros((3, 2, 3, 3))}, r"corr must have shape .* \(3, 2, 2, 2\)"),
        ({"data_cutoff_ts": ORIGINS[0]}, "is before the last origin"),
        ({"data_cutoff_ts": "2024-01-05"}, "must be a UTC pandas Timestamp"),
        ({"model_id": ""}, "model_id must be a non-empty string"),
        ({"horizon_unit": "soon"}, "horizon_unit must be a pandas duration"),
        ({"repaired": np.zeros((2, 2), bool)}, "repaired must have shape"),
        ({"stressed": np.eye(3)}, "stressed must have shape"),
        ({"stressed": np.array([[1.0, 2.0], [2.0, 1.0]])}, "stressed entries must lie in"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_field_validation(kw, match) -> None:
    with pytest.raises(ValueError, match=match):
        make(**kw)


def test_cutoff_series_checks() -> None:
    cut = pd.Series(ORIGINS - pd.Timedelta("1h"), index=ORIGINS)
    with pytest.raises(ValueError, match="is before its origin"):
        make(data_cutoff_ts=cut)
    single = make(data_cutoff_ts=pd.Series([ORIGINS[-1]] * 3, index=ORIGINS))
    assert single.data_cutoff_ts == ORIGINS[-1]
    per = make(data_cutoff_ts=pd.Series(ORIGINS, index=ORIGINS))
    assert list(per.cutoff_per_origin()) == list(ORIGINS)
    assert str(per.cutoff_per_origin().dtype) == "datetime64[ns, UTC]"
