"""RiskForecastBundle: validation, units, PSD covariance, content hash, exact save/load round trip;
build_bundle from a real ledger: residuals, staleness and fallback, and no look-ahead."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from features.errors import DataError, Failure, FailureReason, ModelError
from models.bundle_build import (
    ModelRef,
    build_bundle,
    innovation_from,
    residual_history,
    scale_from,
    stressed_from,
    vol_of_vol_from,
)
from models.forecast import (
    CorrForecast,
    Innovation,
    Member,
    Provenance,
    RiskForecastBundle,
    StressedCorrelation,
    VolForecast,
    VolOfVol,
)
from models.ledger import ForecastLedger

ROOT = Path(__file__).resolve().parents[2]
AS_OF = pd.Timestamp("2024-03-01", tz="UTC")
SYMS = ("BTCUSDT", "ETHUSDT", "SOLUSDT")
UNITS = {"1D": (1, 2, 5), "1h": (1, 4, 24)}


def _corr(rng: np.random.Generator, m: int) -> np.ndarray:
    f = rng.normal(size=(m, m + 2))
    c = f @ f.T + 0.5 * np.eye(m)
    d = np.sqrt(np.diag(c))
    c = c / d[:, None] / d[None, :]
    np.fill_diagonal(c, 1.0)
    return 0.5 * (c + c.T)


def parts(seed: int = 0, syms: tuple[str, ...] = SYMS) -> dict[str, object]:
    """Every constructor argument of a full bundle (all fields set)."""
    rng = np.random.default_rng(seed)
    m = len(syms)
    rows = []
    for unit, hs in UNITS.items():
        origin = AS_OF - (pd.Timedelta(0) if unit == "1D" else pd.Timedelta(hours=1))
        for s in syms:
            for h in hs:
                scale = float(rng.uniform(0.8, 1.3))
                rows.append({"unit": unit, "symbol": s, "horizon": h, "model_id": "garch",
                             "model_version": "3", "origin_ts": origin, "data_cutoff_ts": origin,
                             "forecast_var": float(rng.uniform(1e-4, 1e-3)), "scale": scale,
                             "scale_lo": scale * 0.9, "scale_hi": scale * 1.1})
    corr = {}
    for unit, hs in UNITS.items():
        origin = AS_OF - (pd.Timedelta(0) if unit == "1D" else pd.Timedelta(hours=1))
        corr[unit] = CorrForecast(
            corr=np.stack([_corr(rng, m) for _ in hs])[None], symbols=syms,
            origins=pd.DatetimeIndex([origin]), horizons=hs, model_id="dcc", model_version="2",
            data_cutoff_ts=origin, horizon_unit=unit)
    ts = pd.date_range(end=AS_OF, periods=30, freq="1D", tz="UTC")
    res = []
    for s in syms:
        sig = rng.uniform(0.01, 0.04, size=len(ts))
        r = rng.normal(size=len(ts)) * sig
        res.append(pd.DataFrame({"unit": "1D", "symbol": s, "ts": ts, "ret": r,
                                 "sigma_issued": sig, "z": r / sig}))
    dates = pd.date_range("2022-05-01", periods=5, freq="7D", tz="UTC")
    return {
        "as_of": AS_OF,
        "symbols": syms,
        "vol_table": pd.DataFrame(rows),
        "corr": corr,
        "residuals": pd.concat(res, ignore_index=True),
        "innovations": {s: Innovation("skewt", {"nu": 5.0 + i, "lambda": -0.1}, 30, "bic")
                        for i, s in enumerate(syms)},
        "copula_df": 7.5,
        "stressed": StressedCorrelation(_corr(rng, m), _corr(rng, m), _corr(rng, m),
                                        dates, dates + pd.Timedelta(days=1), "worst 5% days"),
        "vol_of_vol": {"BTC": VolOfVol("BTC", {1: {0.01: -0.2, 0.99: 0.25},
                                               5: {0.01: -0.4, 0.99: 0.5}},
                                       -0.3, "(30/max(DTE,7))^p", 0.5, 30.0, "implied:DVOL",
                                       pd.Timestamp("2021-03-24", tz="UTC"), AS_OF, 7.0)},
        "stale": {syms[-1]: Failure(FailureReason.STALE, syms[-1], "cutoff 3 days old",
                                    {"age_s": 259200.0})},
        "provenance": Provenance((Member("vol:1D", "garch", "3", "champion"),
                                  Member("corr:1D", "dcc", "2", None)),
                                 {"binance_daily": "ab12"}, "dprm 0.1.0+abc"),
    }


def make(**over: object) -> RiskForecastBundle:
    kw = parts()
    kw.update(over)
    return RiskForecastBundle(**kw)


# ---- round trip --------------------------------------------------------------------------------


def assert_identical(a: RiskForecastBundle, b: RiskForecastBundle) -> None:
    """Field by field, to the bit (independent of bundle_id)."""
    assert a.as_of == b.as_of and a.symbols == b.symbols
    pd.testing.assert_frame_equal(a.vol_table, b.vol_table, check_exact=True)
    pd.testing.assert_frame_equal(a.residuals, b.residuals, check_exact=True)
    assert a.corr.keys() == b.corr.keys()
    for u in a.corr:
        x, y = a.corr[u], b.corr[u]
        assert np.array_equal(x.corr, y.corr) and x.origins.equals(y.origins)
        assert (x.horizons, x.model_id, x.model_version, x.horizon_unit) == (
            y.horizons, y.model_id, y.model_version, y.horizon_unit)
        assert x.cutoff_per_origin().equals(y.cutoff_per_origin())
    assert a.innovations == b.innovations and a.copula_df == b.copula_df
    assert a.stressed == b.stressed
    assert a.vol_of_vol == b.vol_of_vol
    assert a.stale == b.stale
    assert {s: f.details for s, f in a.stale.items()} == {s: f.details for s, f in b.stale.items()}
    assert a.provenance == b.provenance


def test_save_load_round_trip_is_exact(tmp_path: Path) -> None:
    b = make()
    b.save(tmp_path / "b")
    back = RiskForecastBundle.load(tmp_path / "b")
    assert back == b and back.bundle_id == b.bundle_id
    assert_identical(back, b)
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == [
        "bundle.json", "corr.parquet", "residuals.parquet", "stressed.parquet",
        "stressed_dates.parquet", "vol.parquet"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp dir left


def test_round_trip_in_a_fresh_process(tmp_path: Path) -> None:
    b = make()
    b.save(tmp_path / "b")
    code = (
        "import json, sys\n"
        "from models.forecast import RiskForecastBundle\n"
        "b = RiskForecastBundle.load(sys.argv[1])\n"
        "print(json.dumps({'id': b.bundle_id,"
        " 'var': [float(x).hex() for x in b.vol_table['forecast_var']],"
        " 'z': [float(x).hex() for x in b.residuals['z']],"
        " 'cov': [float(x).hex() for x in b.covariance(5).ravel()],"
        " 'cov_h': [float(x).hex() for x in b.covariance(24, '1h').ravel()]}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "b")], capture_output=True,
                         text=True, check=True, cwd=tmp_path)
    got = json.loads(out.stdout)
    assert got["id"] == b.bundle_id
    assert got["var"] == [float(x).hex() for x in b.vol_table["forecast_var"]]
    assert got["z"] == [float(x).hex() for x in b.residuals["z"]]
    assert got["cov"] == [float(x).hex() for x in b.covariance(5).ravel()]
    assert got["cov_h"] == [float(x).hex() for x in b.covariance(24, "1h").ravel()]


def test_save_is_idempotent_and_never_overwrites(tmp_path: Path) -> None:
    b = make()
    b.save(tmp_path / "b")
    before = (tmp_path / "b" / "bundle.json").stat().st_mtime_ns
    b.save(tmp_path / "b")  # same bundle: no-op
    assert (tmp_path / "b" / "bundle.json").stat().st_mtime_ns == before
    other = make(copula_df=9.0)
    with pytest.raises(DataError, match="never overwritten"):
        other.save(tmp_path / "b")
    assert RiskForecastBundle.load(tmp_path / "b") == b
    (tmp_path / "other").mkdir()
    with pytest.raises(DataError, match="holds no bundle"):
        b.save(tmp_path / "other")


def test_load_detects_altered_files(tmp_path: Path) -> None:
    b = make()
    b.save(tmp_path / "b")
    vol = pd.read_parquet(tmp_path / "b" / "vol.parquet")
    vol.loc[0, "forecast_var"] *= 1.5
    vol.to_parquet(tmp_path / "b" / "vol.parquet", index=False)
    with pytest.raises(DataError, match="files were altered"):
        RiskForecastBundle.load(tmp_path / "b")
    with pytest.raises(DataError, match="bundle.json is missing"):
        RiskForecastBundle.load(tmp_path / "nothing")


def test_load_never_unpickles() -> None:
    tree = ast.parse((ROOT / "models" / "forecast.py").read_text())
    names = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    names |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert not names & {"pickle", "cloudpickle", "joblib", "dill"}


# ---- bundle_id ---------------------------------------------------------------------------------


def test_bundle_id_is_stable_when_nothing_changes() -> None:
    a, b = make(), make()
    assert a is not b and a.bundle_id == b.bundle_id and a == b
    # the order rows arrive in does not matter: the bundle is canonical
    kw = parts()
    kw["vol_table"] = kw["vol_table"].sample(frac=1.0, random_state=3)
    kw["residuals"] = kw["residuals"].iloc[::-1]
    assert RiskForecastBundle(**kw).bundle_id == a.bundle_id
    assert len(a.bundle_id) == 64 and int(a.bundle_id, 16) >= 0


def _bump(x: float) -> float:
    """The next float up: the smallest possible change of a number."""
    return float(np.nextafter(x, np.inf))


def _perturbations() -> list[str]:
    return ["vol_table.forecast_var", "vol_table.scale", "vol_table.scale_lo",
            "vol_table.scale_hi", "residuals.ret", "corr", "innovation.nu", "innovation.lambda",
            "copula_df", "stressed.high", "stressed.low", "stressed.forecast",
            "stressed.high_dates", "vol_of_vol.quantile", "vol_of_vol.beta",
            "vol_of_vol.exponent", "as_of", "origin_ts", "stale.message", "provenance.version",
            "fingerprint"]


def _perturb(kw: dict[str, object], what: str, i: int) -> None:
    def table_bump(name: str, col: str, sub: str | None = None) -> None:
        t = kw[name].copy()
        j = i % len(t)
        t.loc[j, col] = _bump(float(t.loc[j, col]))
        if name == "residuals":
            t.loc[j, "z"] = t.loc[j, "ret"] / t.loc[j, "sigma_issued"]
        if col == "scale_hi" or col == "scale":
            t.loc[j, "scale_hi"] = max(t.loc[j, "scale_hi"], t.loc[j, "scale"])
        kw[name] = t

    syms = kw["symbols"]
    if what.startswith("vol_table."):
        table_bump("vol_table", what.split(".")[1])
    elif what == "residuals.ret":
        table_bump("residuals", "ret")
    elif what == "corr":
        u = sorted(kw["corr"])[i % 2]
        cf = kw["corr"][u]
        c = np.array(cf.corr)
        a, b = 0, 1 + i % (len(syms) - 1)
        c[0, 0, a, b] = c[0, 0, b, a] = _bump(c[0, 0, a, b])
        kw["corr"] = {**kw["corr"], u: CorrForecast(
            corr=c, symbols=cf.symbols, origins=cf.origins, horizons=cf.horizons,
            model_id=cf.model_id, model_version=cf.model_version,
            data_cutoff_ts=cf.data_cutoff_ts, horizon_unit=cf.horizon_unit)}
    elif what.startswith("innovation."):
        p = what.split(".")[1]
        s = syms[i % len(syms)]
        d = kw["innovations"][s]
        kw["innovations"] = {**kw["innovations"], s: Innovation(
            d.name, {**d.params, p: _bump(d.params[p])}, d.n_obs, d.source)}
    elif what == "copula_df":
        kw["copula_df"] = _bump(kw["copula_df"])
    elif what.startswith("stressed."):
        f = what.split(".")[1]
        s = kw["stressed"]
        if f == "high_dates":
            new = {"high_dates": s.high_dates.delete(0).append(
                pd.DatetimeIndex([s.high_dates[0] + pd.Timedelta(1, "ns")]))}
        else:
            c = np.array(getattr(s, f))
            c[0, 1] = c[1, 0] = _bump(c[0, 1])
            new = {f: c}
        kw["stressed"] = StressedCorrelation(**{**{k: getattr(s, k) for k in (
            "forecast", "high", "low", "high_dates", "low_dates", "source")}, **new})
    elif what.startswith("vol_of_vol."):
        v = kw["vol_of_vol"]["BTC"]
        q = {h: dict(r) for h, r in v.quantiles.items()}
        beta, p = v.spot_vol_beta, v.tenor_exponent
        if what.endswith("quantile"):
            q[5][0.99] = _bump(q[5][0.99])
        elif what.endswith("beta"):
            beta = _bump(beta)
        else:
            p = _bump(p)
        kw["vol_of_vol"] = {"BTC": VolOfVol("BTC", q, beta, v.tenor_rule, p,
                                            v.reference_tenor_days, v.source, v.start, v.end,
                                            v.min_tenor_days)}
    elif what == "as_of":
        kw["as_of"] = kw["as_of"] + pd.Timedelta(1, "ns")
    elif what == "origin_ts":
        t = kw["vol_table"].copy()
        t.loc[i % len(t), "origin_ts"] -= pd.Timedelta(1, "ns")
        kw["vol_table"] = t
    elif what == "stale.message":
        s, f = next(iter(kw["stale"].items()))
        kw["stale"] = {s: Failure(f.reason, f.subject, f.message + ".", f.details)}
    elif what == "provenance.version":
        pv = kw["provenance"]
        kw["provenance"] = Provenance((Member("vol:1D", "garch", "4", "champion"),
                                       *pv.members[:1]), pv.data_fingerprints, pv.code_version)
    elif what == "fingerprint":
        pv = kw["provenance"]
        kw["provenance"] = Provenance(pv.members, {"binance_daily": "ab13"}, pv.code_version)
    else:  # pragma: no cover - the list above is the strategy
        raise AssertionError(what)


BASE_ID = make().bundle_id


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(what=st.sampled_from(_perturbations()), i=st.integers(0, 200))
def test_bundle_id_changes_when_any_value_changes(what: str, i: int) -> None:
    kw = parts()
    _perturb(kw, what, i)
    b = RiskForecastBundle(**kw)
    assert b.bundle_id != BASE_ID, what
    assert b != make()


@pytest.mark.parametrize("what", _perturbations())
def test_every_perturbation_changes_the_id(what: str) -> None:
    kw = parts()
    _perturb(kw, what, 0)
    assert RiskForecastBundle(**kw).bundle_id != BASE_ID


# ---- units, covariance ---------------------------------------------------------------------------


def test_vol_and_variance_units_by_hand() -> None:
    b = make()
    row = b.vol_table[(b.vol_table["unit"] == "1D") & (b.vol_table["symbol"] == "ETHUSDT")
                      & (b.vol_table["horizon"] == 5)].iloc[0]
    assert b.variance("ETHUSDT", 5) == pytest.approx(5 * row["forecast_var"] * row["scale"],
                                                     rel=1e-15)
    assert b.vol("ETHUSDT", 5) == pytest.approx(np.sqrt(5 * row["forecast_var"] * row["scale"]),
                                                rel=1e-15)
    assert b.vol("ETHUSDT", 5, scaled=False) == pytest.approx(np.sqrt(5 * row["forecast_var"]),
                                                              rel=1e-15)
    with pytest.raises(KeyError, match="horizon 3 is not in this bundle"):
        b.vol("ETHUSDT", 3)
    with pytest.raises(KeyError, match="unit '15min' is not in this bundle"):
        b.vol("ETHUSDT", 1, "15min")
    with pytest.raises(KeyError, match="symbol 'XRPUSDT' is not in this bundle"):
        b.vol("XRPUSDT", 1)


@pytest.mark.parametrize("unit", ["1D", "1h"])
def test_covariance_matches_corr_forecast_covariance(unit: str) -> None:
    """The bundle's unscaled covariance equals CorrForecast.covariance (an independent path
    through VolForecast.cumulative_var), and the scaled one is D_s (unscaled) D_s."""
    b = make()
    vols = {s: b.vol_forecast(s, unit) for s in b.symbols}
    for h in UNITS[unit]:
        ref = b.corr[unit].covariance(vols, h)[0]
        np.testing.assert_allclose(b.covariance(h, unit, scaled=False), ref, rtol=1e-14, atol=0)
        sc = b.vol_table.query("unit == @unit and horizon == @h").set_index("symbol")["scale"]
        d = np.sqrt(sc.loc[list(b.symbols)].to_numpy())
        np.testing.assert_allclose(b.covariance(h, unit), ref * d[:, None] * d[None, :],
                                   rtol=1e-14, atol=0)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), m=st.integers(1, 6), tiny=st.booleans())
def test_covariance_psd_for_every_horizon(seed: int, m: int, tiny: bool) -> None:
    syms = tuple(f"S{i}USDT" for i in range(m))
    kw = parts(seed % 1000, syms)
    rng = np.random.default_rng(seed)
    if tiny:  # wildly different variances: the congruence D R D must stay PSD
        t = kw["vol_table"].copy()
        t["forecast_var"] = 10.0 ** rng.uniform(-10, -1, size=len(t))
        kw["vol_table"] = t
    if m > 1 and tiny:  # a singular correlation (rank 1) is still PSD
        cf = kw["corr"]["1D"]
        c = np.ones_like(cf.corr)
        kw["corr"] = {**kw["corr"], "1D": CorrForecast(
            corr=c, symbols=cf.symbols, origins=cf.origins, horizons=cf.horizons,
            model_id="x", model_version="1", data_cutoff_ts=cf.data_cutoff_ts)}
    if m == 1:
        kw["corr"] = {}
        kw["stressed"] = None
    b = RiskForecastBundle(**kw)
    for unit, hs in UNITS.items():
        for h in hs:
            cov = b.covariance(h, unit)
            assert cov.shape == (m, m) and np.array_equal(cov, cov.T)
            w = np.linalg.eigvalsh(cov)
            assert w[0] >= -1e-12 * max(1.0, w[-1]) * m
            np.testing.assert_allclose(np.sqrt(np.diag(cov)),
                                       [b.vol(s, h, unit) for s in syms], rtol=1e-13)


# ---- validation ------------------------------------------------------------------------------------


def _with(table: str, col: str, value: object, row: int = 0) -> RiskForecastBundle:
    kw = parts()
    t = kw[table].copy()
    t[col] = t[col].astype(object) if isinstance(value, str) else t[col]
    t.loc[row, col] = value
    kw[table] = t
    return RiskForecastBundle(**kw)


def test_nan_variance_is_a_data_error() -> None:
    with pytest.raises(DataError, match=r"column 'vol.forecast_var'.*nan"):
        _with("vol_table", "forecast_var", np.nan)


def test_negative_variance_is_a_data_error() -> None:
    with pytest.raises(DataError, match=r"vol.forecast_var must be finite and > 0; got -0.0001 "
                                        r"\(a negative or zero variance\) for BTCUSDT 1D h=1"):
        _with("vol_table", "forecast_var", -1e-4)


def test_nan_scale_and_residual_are_data_errors() -> None:
    with pytest.raises(DataError, match="vol.scale_lo must be finite"):
        _with("vol_table", "scale_lo", np.inf)
    with pytest.raises(DataError, match="vol.scale must lie in"):
        _with("vol_table", "scale_lo", 5.0)
    with pytest.raises(DataError, match="residuals.ret must be finite"):
        _with("residuals", "ret", np.nan)
    with pytest.raises(DataError, match="residuals.sigma_issued must be finite and > 0"):
        _with("residuals", "sigma_issued", -0.01)
    with pytest.raises(DataError, match=r"residuals.z must equal ret / sigma_issued"):
        _with("residuals", "z", 3.0)


def test_cutoff_after_as_of_is_a_data_error() -> None:
    late = AS_OF + pd.Timedelta(hours=1)
    with pytest.raises(DataError, match=r"vol.data_cutoff_ts 2024-03-01 01:00:00\+00:00 of "
                                        r"BTCUSDT \(1D\) is after as_of"):
        _with("vol_table", "data_cutoff_ts", late)
    with pytest.raises(DataError, match="residuals.ts .* is after as_of"):
        _with("residuals", "ts", late)
    kw = parts()
    s = kw["stressed"]
    with pytest.raises(DataError, match="stressed.low_dates .* is after as_of"):
        make(stressed=StressedCorrelation(s.forecast, s.high, s.low, s.high_dates,
                                          s.low_dates.append(pd.DatetimeIndex([late])), "x"))
    cf = kw["corr"]["1D"]
    with pytest.raises(DataError, match=r"corr\['1D'\] data_cutoff_ts .* is after as_of"):
        make(corr={**kw["corr"], "1D": CorrForecast(
            corr=cf.corr, symbols=cf.symbols, origins=cf.origins, horizons=cf.horizons,
            model_id="dcc", model_version="2", data_cutoff_ts=late)})


def test_symbol_mismatches_are_model_errors() -> None:
    kw = parts()
    cf = kw["corr"]["1D"]
    swapped = CorrForecast(corr=cf.corr, symbols=(SYMS[1], SYMS[0], SYMS[2]), origins=cf.origins,
                           horizons=cf.horizons, model_id="dcc", model_version="2",
                           data_cutoff_ts=cf.data_cutoff_ts)
    with pytest.raises(ModelError, match=r"corr\['1D'\].symbols .* differ from the bundle's"):
        make(corr={**kw["corr"], "1D": swapped})
    with pytest.raises(ModelError, match=r"vol\['1D'\] lacks symbol\(s\) \['SOLUSDT'\]"):
        t = kw["vol_table"]
        make(vol_table=t[~((t["unit"] == "1D") & (t["symbol"] == "SOLUSDT"))])
    with pytest.raises(ModelError, match=r"vol names symbol\(s\) \['XRPUSDT'\] not in"):
        _with("vol_table", "symbol", "XRPUSDT")
    with pytest.raises(ModelError, match=r"residuals names symbol\(s\) \['XRPUSDT'\]"):
        _with("residuals", "symbol", "XRPUSDT")
    with pytest.raises(ModelError, match=r"innovations names symbol\(s\) \['XRPUSDT'\]"):
        make(innovations={"XRPUSDT": Innovation("t", {"nu": 5.0})})
    with pytest.raises(ModelError, match=r"stale names symbol\(s\) \['XRPUSDT'\]"):
        make(stale={"XRPUSDT": Failure(FailureReason.STALE, "XRPUSDT", "old")})
    with pytest.raises(ModelError, match="symbols must be unique"):
        make(symbols=(SYMS[0], SYMS[0]))
    with pytest.raises(ModelError, match=r"corr lacks unit\(s\) \['1h'\]"):
        make(corr={"1D": kw["corr"]["1D"]})


def test_component_validation_names_the_field() -> None:
    with pytest.raises(DataError, match=r"innovations.params\[nu\] must be > 2"):
        Innovation("t", {"nu": 1.5})
    with pytest.raises(DataError, match="innovation 'skewt' needs params"):
        Innovation("skewt", {"nu": 5.0})
    with pytest.raises(DataError, match="copula_df must be > 2.0"):
        make(copula_df=1.0)
    with pytest.raises(DataError, match=r"vol_of_vol.quantiles\[1\] must increase"):
        VolOfVol("BTC", {1: {0.01: 0.3, 0.99: -0.2}}, 0.0, "r", 0.5, 30.0, "implied:DVOL", AS_OF,
                 AS_OF)
    with pytest.raises(DataError, match="vol_of_vol.source must start with"):
        VolOfVol("BTC", {1: {0.5: 0.0}}, 0.0, "r", 0.5, 30.0, "guess", AS_OF, AS_OF)
    bad = np.array([[1.0, 0.9, -0.9], [0.9, 1.0, 0.9], [-0.9, 0.9, 1.0]])
    s = parts()["stressed"]
    with pytest.raises(DataError, match="stressed.high must be positive semi-definite"):
        StressedCorrelation(s.forecast, bad, s.low, s.high_dates, s.low_dates)


def test_vol_of_vol_tenor_rule_by_hand() -> None:
    v = parts()["vol_of_vol"]["BTC"]
    assert v.tenor_factor(7.5) == pytest.approx((30 / 7.5) ** 0.5, rel=1e-15)
    assert v.tenor_factor(30.0) == 1.0
    assert v.tenor_factor(1.0) == pytest.approx((30 / 7.0) ** 0.5, rel=1e-15)  # floor at 7 days


def test_import_cycle_resolved() -> None:
    """corr_forecast does not import forecast (not even for typing); forecast imports it; both
    import orders work in a fresh process and name the same class, without loading numba (the
    PSD check imports it when first called)."""
    tree = ast.parse((ROOT / "models" / "corr_forecast.py").read_text())
    mods = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert "models.forecast" not in mods
    for first in ("models.corr_forecast", "models.forecast"):
        code = (f"import sys\nimport {first}\nassert 'numba' not in sys.modules\n"
                "from models.corr_forecast import CorrForecast as A\n"
                "from models.forecast import CorrForecast as B\nassert A is B\n")
        subprocess.run([sys.executable, "-c", code], check=True)


# ---- build_bundle from a real ledger ------------------------------------------------------------

N_DAYS = 120
DAYS = pd.date_range("2023-06-01", periods=N_DAYS, freq="1D", tz="UTC")
PAIR = ("BTCUSDT", "ETHUSDT")


def simulate(seed: int) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """Closes and an EWMA-like issued variance per symbol (one row per day)."""
    rng = np.random.default_rng(seed)
    closes, var = {}, {}
    for k, s in enumerate(PAIR):
        sig2 = np.empty(N_DAYS)
        r = np.empty(N_DAYS)
        sig2[0] = (0.02 + 0.01 * k) ** 2
        for t in range(N_DAYS):
            r[t] = rng.normal() * np.sqrt(sig2[t])
            if t + 1 < N_DAYS:
                sig2[t + 1] = 0.94 * sig2[t] + 0.06 * r[t] ** 2
        closes[s] = 100.0 * (k + 1) * np.exp(np.cumsum(r))
        var[s] = sig2
    return pd.DataFrame(closes, index=DAYS), var


def vol_frame(var: dict[str, np.ndarray], model: str = "ewma", version: str = "1",
              upto: int = N_DAYS) -> pd.DataFrame:
    """The long table of VolForecast.to_frame: origin = day t, forecast = var of day t+1."""
    frames = []
    for s, v in var.items():
        # average over t+1..t+h of a flat EWMA term structure = sig2[t+1] (known at t)
        nxt = np.append(v[1:upto], v[upto - 1])
        table = pd.DataFrame({h: nxt * (1 + 0.01 * (h - 1)) for h in (1, 2, 5)},
                             index=DAYS[:upto])
        frames.append(VolForecast(table, s, "1D", 365.0, model, version, DAYS[upto - 1])
                      .to_frame().assign(data_cutoff_ts=DAYS[:upto].repeat(3)))
    return pd.concat(frames, ignore_index=True)


def corr_forecast(rho: np.ndarray, upto: int = N_DAYS) -> CorrForecast:
    c = np.empty((upto, 3, 2, 2))
    c[..., 0, 0] = c[..., 1, 1] = 1.0
    c[..., 0, 1] = c[..., 1, 0] = rho[:upto, None]
    return CorrForecast(corr=c, symbols=PAIR, origins=DAYS[:upto], horizons=(1, 2, 5),
                        model_id="ewma_corr", model_version="1", data_cutoff_ts=pd.Series(
                            DAYS[:upto], index=DAYS[:upto]))


def ledger_with(root: Path, closes: pd.DataFrame, var: dict[str, np.ndarray],
                rho: np.ndarray) -> ForecastLedger:
    led = ForecastLedger(root)
    led.seed_walk_forward(vol_frame(var))
    led.append_corr(corr_forecast(rho))
    return led


BUILD = {"symbols": PAIR, "vol_models": {"1D": ModelRef("ewma", "1", "champion")},
         "corr_models": {"1D": ModelRef("ewma_corr", "1")}, "code_version": "test"}


def test_build_bundle_values_by_hand(tmp_path: Path) -> None:
    closes, var = simulate(1)
    rho = np.linspace(0.2, 0.8, N_DAYS)
    led = ledger_with(tmp_path / "led", closes, var, rho)
    k = 80
    b = build_bundle(led, DAYS[k], closes={"1D": closes}, **BUILD)
    assert b.as_of == DAYS[k] and b.symbols == PAIR
    for s in PAIR:
        assert b.variance(s, 1) == var[s][k + 1]  # the forecast issued at day k, unscaled
        assert b.variance(s, 5) == pytest.approx(5 * var[s][k + 1] * 1.04, rel=1e-15)
    assert b.correlation(2)[0, 1] == rho[k]
    res = b.residuals[b.residuals["symbol"] == "ETHUSDT"]
    # day t's return standardized by the forecast issued at day t-1: sigma = sqrt(var[t])
    assert len(res) == k
    r = np.log(closes["ETHUSDT"].to_numpy()[1:k + 1] / closes["ETHUSDT"].to_numpy()[:k])
    np.testing.assert_allclose(res["ret"], r, rtol=0, atol=5e-15)  # log differences vs ratios
    np.testing.assert_allclose(res["sigma_issued"], np.sqrt(var["ETHUSDT"][1:k + 1]), rtol=1e-15)
    np.testing.assert_allclose(res["z"], r / np.sqrt(var["ETHUSDT"][1:k + 1]), rtol=0, atol=1e-12)
    assert res["ts"].max() == DAYS[k]
    assert b.stale == {}
    assert [(m.role, m.name, m.alias) for m in b.provenance.members] == [
        ("corr:1D", "ewma_corr", None), ("vol:1D", "ewma", "champion")]


def test_no_look_ahead(tmp_path: Path) -> None:
    """Everything after as_of is perturbed (closes, issued vol and corr, extra issues): the
    bundle, its bundle_id included, does not change. Perturbing the day before as_of does."""
    closes, var = simulate(2)
    rho = np.linspace(0.1, 0.7, N_DAYS)
    k = 70
    base = build_bundle(ledger_with(tmp_path / "a", closes, var, rho), DAYS[k],
                        closes={"1D": closes}, **BUILD)
    rng = np.random.default_rng(9)
    c2 = closes.copy()
    c2.iloc[k + 1:] *= np.exp(rng.normal(0, 0.1, size=c2.iloc[k + 1:].shape))
    v2 = {s: np.concatenate([v[:k + 2], v[k + 2:] * 3.0]) for s, v in var.items()}
    # v[k+1] is the forecast issued at day k (known then); everything issued later changes
    rho2 = np.concatenate([rho[:k + 1], -rho[k + 1:]])
    led2 = ledger_with(tmp_path / "b", c2, v2, rho2)
    led2.append_vol(vol_frame(var, model="ewma", version="2"))  # a later version: not asked for
    after = build_bundle(led2, DAYS[k], closes={"1D": c2}, **BUILD)
    assert after.bundle_id == base.bundle_id
    assert_identical(after, base)
    # the test can fail: the close at as_of changes the last residual and the id
    c3 = closes.copy()
    c3.iloc[k] *= 1.001
    changed = build_bundle(ledger_with(tmp_path / "c", c3, var, rho), DAYS[k],
                           closes={"1D": c3}, **BUILD)
    assert changed.bundle_id != base.bundle_id


def test_stale_symbol_flagged_and_falls_back(tmp_path: Path) -> None:
    closes, var = simulate(3)
    rho = np.full(N_DAYS, 0.5)
    led = ForecastLedger(tmp_path / "led")
    full = vol_frame(var)
    eth_short = full[(full["symbol"] == "BTCUSDT") | (full["origin_ts"] <= DAYS[50])]
    led.seed_walk_forward(eth_short)
    led.append_corr(corr_forecast(rho))
    k = 60
    b = build_bundle(led, DAYS[k], closes={"1D": closes}, **BUILD)
    f = b.stale["ETHUSDT"]
    assert f.reason is FailureReason.STALE and "10 days" in f.message
    assert b.vol_table.query("symbol == 'ETHUSDT'")["origin_ts"].iloc[0] == DAYS[50]
    assert "BTCUSDT" not in b.stale
    led.seed_walk_forward(vol_frame({"ETHUSDT": var["ETHUSDT"] * 2}, model="baseline"))
    fb = build_bundle(led, DAYS[k], closes={"1D": closes},
                      fallback_models={"1D": ModelRef("baseline", "1")}, **BUILD)
    assert fb.variance("ETHUSDT", 1) == 2 * var["ETHUSDT"][k + 1]
    assert "fell back to baseline 1" in fb.stale["ETHUSDT"].message
    assert ("fallback:1D", "baseline") in [(m.role, m.name) for m in fb.provenance.members]
    # the fallback symbol's residuals come from the fallback's own issues: to as_of (not the
    # champion's last day 50), each with the fallback's (doubled) issued variance
    r_champ = b.residuals.query("symbol == 'ETHUSDT'").set_index("ts")
    r_fb = fb.residuals.query("symbol == 'ETHUSDT'").set_index("ts")
    assert r_fb.index.max() == DAYS[k] and r_champ.index.max() <= DAYS[51]
    common = r_champ.index.intersection(r_fb.index)
    assert len(common) > 20
    np.testing.assert_allclose(r_fb.loc[common, "sigma_issued"] ** 2,
                               2 * r_champ.loc[common, "sigma_issued"] ** 2, rtol=1e-12)
    with pytest.raises(ModelError, match=r"no 1D forecast for BTCUSDT issued at or before"):
        build_bundle(led, DAYS[0] - pd.Timedelta(days=1), closes={"1D": closes}, **BUILD)


def test_build_bundle_errors(tmp_path: Path) -> None:
    closes, var = simulate(4)
    led = ledger_with(tmp_path / "led", closes, var, np.full(N_DAYS, 0.3))
    with pytest.raises(ModelError, match=r"lacks horizon\(s\) \[10\]"):
        build_bundle(led, DAYS[30], closes={"1D": closes}, horizons={"1D": (1, 10)}, **BUILD)
    with pytest.raises(ModelError, match="closes lack unit '1D'"):
        build_bundle(led, DAYS[30], closes={}, **BUILD)
    with pytest.raises(ModelError, match="no 1D correlation forecast of nope 1"):
        build_bundle(led, DAYS[30], closes={"1D": closes},
                     **{**BUILD, "corr_models": {"1D": ModelRef("nope", "1")}})
    scale = pd.DataFrame({"unit": "1D", "symbol": "BTCUSDT", "horizon": [1, 2, 5],
                          "scale": 1.2, "scale_lo": 1.0, "scale_hi": 1.4})
    with pytest.raises(ModelError, match="scale has no row for ETHUSDT 1D h=1"):
        build_bundle(led, DAYS[30], closes={"1D": closes}, scale=scale, **BUILD)
    both = pd.concat([scale, scale.assign(symbol="ETHUSDT")])
    b = build_bundle(led, DAYS[30], closes={"1D": closes}, scale=both, **BUILD)
    assert b.variance("ETHUSDT", 2) == pytest.approx(
        1.2 * b.variance("ETHUSDT", 2, scaled=False), rel=1e-15)


def test_residual_history_skips_gaps_and_late_issues() -> None:
    days = pd.date_range("2024-01-01", periods=6, freq="1D", tz="UTC")
    closes = pd.Series([100.0, 101.0, 99.0, np.nan, 102.0, 103.0], index=days)
    issued = pd.DataFrame({"as_of": days, "origin_ts": days, "horizon": 1,
                           "forecast_var": [1e-4, 4e-4, 9e-4, 1e-4, 1e-4, 1e-4]})
    issued.loc[4, "as_of"] = days[5]  # issued after the return it would standardize was known
    r = residual_history(issued, closes, symbol="BTCUSDT", unit="1D", as_of=days[-1])
    # day 3 missing: no 2->4 return (a 2-day gap); day 4's forecast issued late: no 4->5 residual
    assert list(r["ts"]) == [days[1], days[2]]
    np.testing.assert_allclose(r["z"], [np.log(1.01) / 0.01, np.log(99 / 101) / 0.02], rtol=1e-12)


# ---- calibration pieces (models.scale, innovations, corr_stress, volvol) in the bundle ----------


def long_sim(seed: int, n: int = 400) -> tuple[pd.DataFrame, dict[str, np.ndarray],
                                               pd.DatetimeIndex]:
    """Closes whose true daily variance is 1.5 x the issued forecast (a known scale)."""
    rng = np.random.default_rng(seed)
    days = pd.date_range("2022-01-01", periods=n, freq="1D", tz="UTC")
    closes, var = {}, {}
    for k, s in enumerate(PAIR):
        f = (0.02 + 0.01 * k) ** 2 * np.exp(0.3 * np.sin(np.arange(n) / 30.0))
        r = rng.standard_t(6, size=n) * np.sqrt(1.5 * f * 4 / 6)
        r[0] = 0.0
        closes[s] = 100.0 * np.exp(np.cumsum(r))
        var[s] = f
    return pd.DataFrame(closes, index=days), var, days


def long_ledger(root: Path, var: dict[str, np.ndarray], days: pd.DatetimeIndex) -> ForecastLedger:
    led = ForecastLedger(root)
    for s, f in var.items():
        # forecast issued at day t for t+1..t+h: the true path's variance of day t+1 (flat)
        nxt = np.append(f[1:], f[-1])
        table = pd.DataFrame({h: nxt for h in (1, 2, 5)}, index=days)
        led.seed_walk_forward(VolForecast(table, s, "1D", 365.0, "ewma", "1",
                                          pd.Series(days, index=days)).to_frame())
    n = len(days)
    c = np.empty((n, 3, 2, 2))
    c[..., 0, 0] = c[..., 1, 1] = 1.0
    c[..., 0, 1] = c[..., 1, 0] = 0.4
    led.append_corr(CorrForecast(corr=c, symbols=PAIR, origins=days, horizons=(1, 2, 5),
                                 model_id="ewma_corr", model_version="1",
                                 data_cutoff_ts=pd.Series(days, index=days)))
    return led


def test_scale_estimated_from_ledger_and_closes(tmp_path: Path) -> None:
    closes, var, days = long_sim(5)
    led = long_ledger(tmp_path / "led", var, days)
    k = 380
    b = build_bundle(led, days[k], closes={"1D": closes}, scale_n_boot=199, scale_min_pairs=100,
                     **BUILD)
    for s in PAIR:
        # the point scale by hand: mean(y) / mean(f) over pairs whose target ended by as_of
        for h in (1, 5):
            lx = np.log(closes[s].to_numpy()[:k + 1])
            y = (lx[h:] - lx[:-h]) ** 2 / h
            f = np.append(var[s][1:], var[s][-1])[:k + 1 - h]
            row = b.vol_table.query("symbol == @s and horizon == @h").iloc[0]
            assert row["scale"] == pytest.approx(y.mean() / f.mean(), rel=1e-12)
            assert row["scale_lo"] < 1.5 < row["scale_hi"] or abs(row["scale"] - 1.5) < 0.5
            assert row["scale_lo"] < row["scale"] < row["scale_hi"]
    again = build_bundle(led, days[k], closes={"1D": closes}, scale_n_boot=199,
                         scale_min_pairs=100, **BUILD)
    assert again.bundle_id == b.bundle_id  # seeded: deterministic
    other_seed = build_bundle(led, days[k], closes={"1D": closes}, scale_n_boot=199,
                              scale_min_pairs=100, random_state=1, **BUILD)
    assert other_seed.bundle_id != b.bundle_id
    few = build_bundle(led, days[50], closes={"1D": closes}, scale_n_boot=199, **BUILD)
    assert (few.vol_table[["scale", "scale_lo", "scale_hi"]] == 1.0).all().all()
    with pytest.raises(ModelError, match="either scale or scale_n_boot"):
        build_bundle(led, days[k], closes={"1D": closes}, scale_n_boot=99,
                     scale=few.vol_table, **BUILD)


def test_no_look_ahead_with_scale_and_fitted_innovations(tmp_path: Path) -> None:
    closes, var, days = long_sim(6)
    k = 300
    kw = {**BUILD, "scale_n_boot": 99, "scale_min_pairs": 100, "fit_residual_distribution": True}
    base = build_bundle(long_ledger(tmp_path / "a", var, days), days[k], closes={"1D": closes},
                        **kw)
    assert set(base.innovations) == set(PAIR) and base.copula_df is not None
    assert base.innovations["BTCUSDT"].n_obs == k
    c2 = closes.copy()
    c2.iloc[k + 1:] *= 1.2
    # f[k+1] is the forecast issued at day k (known then); every later issue changes
    v2 = {s: np.concatenate([f[:k + 2], f[k + 2:] * 0.5]) for s, f in var.items()}
    after = build_bundle(long_ledger(tmp_path / "b", v2, days), days[k], closes={"1D": c2}, **kw)
    assert after.bundle_id == base.bundle_id
    c3 = closes.copy()
    c3.iloc[k - 3] *= 1.01
    changed = build_bundle(long_ledger(tmp_path / "c", var, days), days[k], closes={"1D": c3},
                           **kw)
    assert changed.bundle_id != base.bundle_id


def test_adapters_from_the_calibration_modules() -> None:
    from models.corr_stress import stressed_correlations
    from models.innovations import fit_innovations
    from models.scale import variance_scale
    from models.volvol import implied_vol_of_vol

    rng = np.random.default_rng(8)
    days = pd.date_range("2021-01-01", periods=600, freq="1D", tz="UTC")
    common = rng.standard_t(4, size=len(days))
    ret = pd.DataFrame({s: 0.02 * (0.7 * common + 0.7 * rng.standard_t(4, size=len(days)))
                        for s in SYMS}, index=days)
    sc = stressed_correlations(ret)
    st_ = stressed_from(sc)
    assert np.array_equal(st_.high, sc.high.corr) and st_.low_dates.equals(sc.low.dates)
    fit = fit_innovations(rng.standard_t(5, size=2000) * np.sqrt(3 / 5))
    inn = innovation_from(fit)
    assert inn.name == fit.chosen and inn.params == fit.best.params and inn.n_obs == 2000
    iv = pd.Series(np.exp(np.cumsum(rng.normal(0, 0.03, len(days))) + np.log(0.6)), index=days)
    spot = pd.Series(np.exp(np.cumsum(rng.normal(0, 0.03, len(days)))), index=days)
    est = [implied_vol_of_vol(iv, spot, symbol="BTC", mpor_days=m) for m in (1, 5)]
    vv = vol_of_vol_from(est)
    assert vv.quantiles[5] == {float(q): v for q, v in est[1].quantiles.items()}
    assert vv.spot_vol_beta == est[0].spot_vol_beta and vv.source == est[0].source
    assert vv.tenor_factor(3.0) == pytest.approx(est[0].tenor_factor(3.0), rel=1e-15)
    f = pd.Series(np.full(len(days), 4e-4), index=days)
    y = pd.Series(rng.chisquare(1, len(days)) * 4e-4 * 1.3, index=days)
    vs = variance_scale(y, f, 1, symbol="BTCUSDT", min_pairs=100, n_boot=99, random_state=0)
    table = scale_from({("1D", "BTCUSDT", 1): vs}, days[400])
    ref = vs.at(days[400])
    assert table.iloc[0]["scale"] == ref["scale"] and table.iloc[0]["scale_hi"] == ref["upper"]
    with pytest.raises(ModelError, match="no variance scale for BTCUSDT 1D h=1 at or before"):
        scale_from({("1D", "BTCUSDT", 1): vs}, days[5])
    b = make(stressed=st_, innovations={"BTCUSDT": inn}, vol_of_vol={"BTC": vv})
    assert b.stressed == st_ and b.vol_of_vol["BTC"] == vv
    late = VolOfVol("BTC", vv.quantiles, vv.spot_vol_beta, vv.tenor_rule, vv.tenor_exponent,
                    vv.reference_tenor_days, vv.source, vv.start, AS_OF + pd.Timedelta(days=1))
    with pytest.raises(DataError, match=r"vol_of_vol\['BTC'\].end .* is after as_of"):
        make(vol_of_vol={"BTC": late})


# ---- real data: daily BTC realized measures + Binance daily closes ----------------------------


def _real_inputs(data_dir: Path, end: pd.Timestamp | None = None) -> tuple[pd.DataFrame,
                                                                           pd.DataFrame]:
    rows = []
    for s, f in (("BTCUSDT", "btc_measures.csv"), ("ETHUSDT", "eth_measures.csv")):
        raw = pd.read_csv(data_dir / "binance_daily_realized_measures_btc_eth_2018_2026" / f)
        rows.append(pd.DataFrame({
            "ts": pd.to_datetime(raw["date"], utc=True) + pd.Timedelta(days=1), "symbol": s,
            "rv_var": raw["RV"].astype(float), "n_obs": raw["nobs"].astype(float)}))
    panel = pd.concat(rows, ignore_index=True)
    k = pd.read_parquet(data_dir / "binance_spot_daily_multi_asset_2017_2026" / "klines_1d.parquet")
    k = k[k["symbol"].isin(["BTCUSDT", "ETHUSDT"]) & (k["market"] == "spot")].copy()
    k["ts"] = pd.to_datetime(k["open_time"], utc=True) + pd.Timedelta(days=1)  # the close
    closes = k.pivot(index="ts", columns="symbol", values="close")
    if end is not None:
        panel, closes = panel[panel["ts"] <= end], closes[closes.index <= end]
    return panel, closes


@pytest.mark.slow
@pytest.mark.realdata
def test_real_walk_forward_seed_bundle_and_no_look_ahead(tmp_path: Path, data_dir: Path) -> None:
    """EWMA walk-forward on the real daily BTC/ETH realized measures seeds the ledger; the BTC
    bundle at 2025-06-01 with the scale estimated from Binance closes; rerunning everything on
    data cut at as_of gives the same bundle_id."""
    from models.evaluation import walk_forward
    from models.ewma import EWMAVol

    as_of = pd.Timestamp("2025-06-01", tz="UTC")
    kw = {"symbols": ("BTCUSDT",), "vol_models": {"1D": ModelRef("ewma", "1")},
          "scale_n_boot": 199, "fit_residual_distribution": True}
    ids = []
    for name, end in (("full", None), ("cut", as_of)):
        panel, closes = _real_inputs(data_dir, end)
        res = walk_forward({"ewma": EWMAVol()}, panel, horizons=(1, 2, 5), start="2021-01-01",
                           window=1000, mcs_reps=50)
        led = ForecastLedger(tmp_path / name)
        assert led.seed_walk_forward(res.forecasts) == len(res.forecasts)
        b = build_bundle(led, as_of, closes={"1D": closes}, **kw)
        ids.append(b.bundle_id)
    assert ids[0] == ids[1]
    z = b.residuals["z"].to_numpy()
    assert len(z) > 1500 and b.stale == {}
    assert 0.5 < float(np.mean(z ** 2)) < 2.0  # units check: a vol for a variance is off by 1e3
    row = b.vol_table.iloc[0]
    assert row["scale_lo"] < row["scale"] < row["scale_hi"]
    assert b.innovations["BTCUSDT"].name in ("t", "skewt")  # fat tails, not normal
