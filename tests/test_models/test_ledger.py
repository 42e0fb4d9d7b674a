"""The forecast ledger: append-only, content-addressed, idempotent reruns, conflicts beyond rtol
1e-10, reads at or before as_of, seeding from walk-forward output, two real processes appending
at once."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from features.errors import DataError, ModelError, StoreError
from models.evaluation import walk_forward
from models.ewma import EWMAVol
from models.forecast import CorrForecast, VolForecast
from models.ledger import RTOL, VOL_KEY, ForecastLedger, LedgerConflictError

DAYS = pd.date_range("2024-01-01", periods=40, freq="1D", tz="UTC")


def vf(symbol: str = "BTCUSDT", n: int = 40, seed: int = 0, model: str = "garch",
       version: str = "1", quantiles: bool = True) -> VolForecast:
    rng = np.random.default_rng(seed)
    var = pd.DataFrame({h: rng.uniform(1e-4, 1e-3, n) for h in (1, 2, 5)}, index=DAYS[:n])
    q = {0.05: var * 0.5, 0.95: var * 2.0} if quantiles else None
    return VolForecast(var, symbol, "1D", 365.0, model, version,
                       pd.Series(DAYS[:n], index=DAYS[:n]), quantiles=q)


def parts(root: Path) -> list[Path]:
    return sorted(root.rglob("*.parquet"))


def test_append_then_rerun_is_a_no_op(tmp_path: Path) -> None:
    led = ForecastLedger(tmp_path)
    assert led.append_forecast(vf()) == 120
    files = {p: p.read_bytes() for p in parts(tmp_path)}
    assert len(files) == 1
    assert led.append_forecast(vf()) == 0
    assert ForecastLedger(tmp_path).append_forecast(vf()) == 0  # a new process-like reader too
    assert {p: p.read_bytes() for p in parts(tmp_path)} == files
    # new keys go to a new part; old parts untouched
    assert led.append_forecast(vf("ETHUSDT", seed=1)) == 120
    assert len(parts(tmp_path)) == 2
    assert all(p.read_bytes() == b for p, b in files.items())


def test_part_names_are_content_hashes(tmp_path: Path) -> None:
    led = ForecastLedger(tmp_path)
    led.append_forecast(vf())
    (p,) = parts(tmp_path)
    assert p.parent.parent.name == "model=garch" and p.parent.name == "version=1"
    assert len(p.stem) == 64
    assert led.verify() == 1
    frame = pd.read_parquet(p)
    frame.loc[3, "forecast_var"] *= 1.0000001
    frame.to_parquet(p, index=False)
    with pytest.raises(StoreError, match="content does not match its hash name"):
        led.verify()


def test_issued_returns_only_forecasts_issued_at_or_before_as_of(tmp_path: Path) -> None:
    led = ForecastLedger(tmp_path)
    f = vf()
    led.append_forecast(f)
    got = led.issued("BTCUSDT", "garch", DAYS[9])
    assert got["as_of"].max() == DAYS[9] and len(got) == 30
    ref = f.to_frame()
    ref = ref[ref["origin_ts"] <= DAYS[9]]
    np.testing.assert_array_equal(got["forecast_var"], ref["forecast_var"])
    np.testing.assert_array_equal(got["q_0.95"], ref["q_0.95"])
    assert led.issued("BTCUSDT", "garch", DAYS[0] - pd.Timedelta(1, "ns")).empty
    assert led.issued("ETHUSDT", "garch", DAYS[-1]).empty
    assert led.issued("BTCUSDT", "garch", DAYS[-1], version="2").empty
    # issued later than its origin: invisible until then
    late = vf("SOLUSDT", n=5)
    led.append_forecast(late, as_of=DAYS[20])
    assert led.issued("SOLUSDT", "garch", DAYS[19]).empty
    assert len(led.issued("SOLUSDT", "garch", DAYS[20])) == 15


def test_conflict_beyond_rtol_raises_naming_key_and_values(tmp_path: Path) -> None:
    led = ForecastLedger(tmp_path)
    led.append_forecast(vf(quantiles=False))
    table = vf(quantiles=False).variance.copy()
    old = float(table.iloc[7, 1])
    table.iloc[7, 1] = old * (1 + 0.5 * RTOL)  # within rtol: the same forecast, nothing written
    same = VolForecast(table, "BTCUSDT", "1D", 365.0, "garch", "1",
                       pd.Series(DAYS, index=DAYS))
    assert led.append_forecast(same) == 0
    table.iloc[7, 1] = old * (1 + 10 * RTOL)
    changed = VolForecast(table, "BTCUSDT", "1D", 365.0, "garch", "1",
                          pd.Series(DAYS, index=DAYS))
    before = {p: p.read_bytes() for p in parts(tmp_path)}
    with pytest.raises(LedgerConflictError, match=(
            r"already holds the vol forecast \(model_id=garch, model_version=1, unit=1D, "
            r"symbol=BTCUSDT, as_of=2024-01-08 00:00:00\+00:00, origin_ts=2024-01-08 00:00:00\+00:00, "
            r"horizon=2\) with "
            rf"forecast_var={old!r}; the new value {old * (1 + 10 * RTOL)!r} differs")) as exc:
        led.append_forecast(changed)
    assert isinstance(exc.value, ModelError)
    assert exc.value.existing == old and exc.value.column == "forecast_var"
    assert {p: p.read_bytes() for p in parts(tmp_path)} == before  # nothing written
    # a new version is a new key
    assert led.append_forecast(VolForecast(table, "BTCUSDT", "1D", 365.0, "garch", "2",
                                           pd.Series(DAYS, index=DAYS))) == 120


def test_a_batch_with_one_conflict_writes_nothing(tmp_path: Path) -> None:
    led = ForecastLedger(tmp_path)
    led.append_forecast(vf("BTCUSDT"))
    frame = pd.concat([vf("ETHUSDT", seed=3).to_frame(), vf("BTCUSDT").to_frame()])
    frame.loc[frame.index[-1], "q_0.05"] = 1.0  # the quantile differs
    with pytest.raises(LedgerConflictError, match="q_0.05"):
        led.append_vol(frame)
    assert led.issued("ETHUSDT", "garch", DAYS[-1]).empty


def test_correlation_round_trip_and_conflict(tmp_path: Path) -> None:
    led = ForecastLedger(tmp_path)
    syms = ("BTCUSDT", "ETHUSDT", "SOLUSDT")
    rng = np.random.default_rng(5)
    n = 10
    c = np.empty((n, 2, 3, 3))
    for i in range(n):
        for j in range(2):
            f = rng.normal(size=(3, 5))
            m = f @ f.T
            d = np.sqrt(np.diag(m))
            m = m / d[:, None] / d[None, :]
            np.fill_diagonal(m, 1.0)
            c[i, j] = 0.5 * (m + m.T)
    cf = CorrForecast(corr=c, symbols=syms, origins=DAYS[:n], horizons=(1, 5), model_id="dcc",
                      model_version="1", data_cutoff_ts=pd.Series(DAYS[:n], index=DAYS[:n]))
    assert led.append_corr(cf) == n * 2 * 9
    assert led.append_corr(cf) == 0
    last = led.latest_corr("dcc", "1", DAYS[4], symbols=syms)
    assert last.origins[0] == DAYS[4] and np.array_equal(last.corr[0], c[4])
    assert led.latest_corr("dcc", "1", DAYS[4], symbols=syms[::-1]) is None  # another set
    assert len(led.issued_corr("dcc", DAYS[2], symbols=syms)) == 3 * 2 * 9
    c2 = c.copy()
    c2[3, 0, 0, 1] = c2[3, 0, 1, 0] = c[3, 0, 0, 1] + 1e-6
    with pytest.raises(LedgerConflictError, match=r"correlation forecast .*symbol_a=BTCUSDT, "
                                                  r"symbol_b=ETHUSDT\) with corr="):
        led.append_corr(CorrForecast(corr=c2, symbols=syms, origins=DAYS[:n], horizons=(1, 5),
                                     model_id="dcc", model_version="1",
                                     data_cutoff_ts=pd.Series(DAYS[:n], index=DAYS[:n])))


def test_bad_input_raises_data_error(tmp_path: Path) -> None:
    led = ForecastLedger(tmp_path)
    with pytest.raises(DataError, match="uses data up to 2024-01-04.*cannot be issued before"):
        led.append_forecast(vf(n=5), as_of=DAYS[2])
    frame = vf().to_frame()
    frame.loc[4, "forecast_var"] = np.nan
    with pytest.raises(DataError, match=r"forecast_var must be finite and > 0; got nan for "
                                        r"BTCUSDT at 2024-01-02 00:00:00\+00:00, horizon 2"):
        led.append_vol(frame)
    frame = vf().to_frame()
    with pytest.raises(DataError, match=r"hold the key \(model_id=garch.*horizon=1\) twice"):
        led.append_vol(pd.concat([frame, frame.iloc[:1]]))
    with pytest.raises(DataError, match=r"missing column\(s\) \['forecast_var'\]"):
        led.append_vol(frame.drop(columns="forecast_var"))
    assert parts(tmp_path) == []


def test_seeded_from_walk_forward_output(tmp_path: Path) -> None:
    """The real walk-forward of an EWMA on a simulated panel seeds the ledger: every
    out-of-sample forecast is issued at its cutoff; realized targets are not recorded."""
    rng = np.random.default_rng(11)
    ts = pd.date_range("2023-01-01", periods=150, freq="1D", tz="UTC")
    rows = []
    for s in ("BTCUSDT", "ETHUSDT"):
        rv = np.exp(rng.normal(np.log(4e-4), 0.5, size=len(ts)))
        rows.append(pd.DataFrame({"ts": ts, "symbol": s, "rv_var": rv, "n_obs": 288}))
    panel = pd.concat(rows, ignore_index=True)
    res = walk_forward({"ewma": EWMAVol()}, panel, horizons=(1, 2, 5), start=ts[60], window=60,
                       mcs_reps=50)
    oos = res.forecasts
    led = ForecastLedger(tmp_path)
    assert led.seed_walk_forward(oos) == len(oos)
    assert led.seed_walk_forward(oos) == 0
    got = led.issued("ETHUSDT", "ewma", ts[-1])
    ref = oos[oos["symbol"] == "ETHUSDT"].sort_values(["origin_ts", "horizon"])
    np.testing.assert_array_equal(got["forecast_var"], ref["forecast_var"])
    assert (got["as_of"].to_numpy() == ref["data_cutoff_ts"].to_numpy()).all()
    assert set(got["source"]) == {"walk_forward"} and "realized_var" not in got.columns
    mid = ts[100]
    assert led.issued("ETHUSDT", "ewma", mid)["as_of"].max() <= mid


WORKER = textwrap.dedent("""
    import os, sys, time
    import numpy as np, pandas as pd
    from models.forecast import VolForecast
    from models.ledger import ForecastLedger
    root, who = sys.argv[1], int(sys.argv[2])
    days = pd.date_range("2024-01-01", periods=80, freq="1D", tz="UTC")
    led = ForecastLedger(root)
    open(os.path.join(sys.argv[3], f"ready{who}"), "w").close()
    while len(os.listdir(sys.argv[3])) < 2:  # start together
        time.sleep(0.01)
    written = 0
    for i in range(15):
        # BTCUSDT windows overlap the other process's (same values, shifted by 2 days) and
        # each process adds a symbol of its own
        lo = min(5 * i + 2 * (who - 1), 70)
        idx = days[lo:lo + 10]
        var = pd.DataFrame({1: 1e-4 * (1 + np.arange(lo, lo + 10))}, index=idx)
        for s in ("BTCUSDT", f"X{who}USDT"):
            written += led.append_forecast(VolForecast(var, s, "1D", 365.0, "m", "1",
                                                       pd.Series(idx, index=idx)))
    print(written)
""")


def test_two_processes_append_at_once(tmp_path: Path) -> None:
    root, sync = tmp_path / "led", tmp_path / "sync"
    sync.mkdir()
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, str(root), str(k), str(sync)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for k in (1, 2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1][-2000:] for o in outs]
    written = sum(int(o[0].strip()) for o in outs)
    every = pd.concat([pd.read_parquet(p) for p in parts(root)], ignore_index=True)
    assert not every.duplicated(list(VOL_KEY)).any()  # no key written twice
    # BTCUSDT 0..79 (shared), X1USDT 0..79, X2USDT 2..79: every row exactly once
    assert len(every) == 80 + 80 + 78 == written
    led = ForecastLedger(root)
    btc = led.issued("BTCUSDT", "m", pd.Timestamp("2030-01-01", tz="UTC"))
    np.testing.assert_allclose(btc["forecast_var"], 1e-4 * (1 + np.arange(80)), rtol=0)
