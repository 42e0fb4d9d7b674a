"""The error hierarchy, the Failure value, and the readers' one-line errors for corrupt files."""

from __future__ import annotations

import gzip
import json
import zlib
from pathlib import Path

import pytest

from features import errors, schema
from features.errors import (
    ConfigError,
    DataError,
    DPRMError,
    Failure,
    FailureReason,
    ModelError,
    RegistryError,
    StoreError,
)
from features.readers import check_options, format_options, read_source
from features.readers._io import CORRUPT_FILE_ERRORS, corrupt_file_error

# ---- the hierarchy ------------------------------------------------------------------------------


@pytest.mark.parametrize("cls", [DataError, ConfigError, ModelError, RegistryError, StoreError])
def test_every_error_is_a_dprm_error(cls: type) -> None:
    assert issubclass(cls, DPRMError) and issubclass(DPRMError, Exception)
    with pytest.raises(DPRMError, match="boom"):
        raise cls("boom")


@pytest.mark.parametrize(("cls", "is_value_error"), [
    (DataError, True), (ConfigError, True), (ModelError, True),
    (RegistryError, False), (StoreError, False),
])
def test_input_errors_stay_value_errors(cls: type, is_value_error: bool) -> None:
    # code written before the hierarchy catches ValueError for bad data, settings and models
    assert issubclass(cls, ValueError) is is_value_error


def test_schema_data_error_is_the_same_class() -> None:
    assert schema.DataError is errors.DataError


def test_model_errors_join_the_hierarchy() -> None:
    from models.base import InsufficientHistoryError, MissingInputsError
    from models.corr import MissingCorrInputsError
    from models.garch import GarchFitError

    for cls in (MissingInputsError, GarchFitError, MissingCorrInputsError,
                InsufficientHistoryError):
        assert issubclass(cls, ModelError), cls
    exc = InsufficientHistoryError("too short", periods=40, needed=251)
    assert (exc.periods, exc.needed) == (40, 251)
    with pytest.raises(ModelError, match="too short"):
        raise exc


def test_data_error_names_file_line_and_column() -> None:
    e = DataError("cannot parse value 'abc'; expected a number", source="t.csv", line=3,
                  column="price")
    assert str(e) == "t.csv, line 3, column 'price': cannot parse value 'abc'; expected a number"
    assert (e.source, e.line, e.column) == ("t.csv", 3, "price")
    assert str(DataError("plain")) == "plain"


def test_parameter_validation_is_a_config_error_in_sklearn_shape() -> None:
    import pandas as pd

    from models.ewma import EWMAVol

    X = pd.DataFrame({"ts": pd.date_range("2024-01-01", periods=5, freq="D", tz="UTC"),
                      "symbol": "BTCUSDT", "rv_var": [1e-4] * 5})
    with pytest.raises(ConfigError, match=r"^The 'half_life' parameter of EWMAVol must be > 0 "
                                          r"or None\. Got -3 instead\.$"):
        EWMAVol(half_life=-3).fit(X)


# ---- Failure ------------------------------------------------------------------------------------


def test_failure_round_trips_through_json() -> None:
    f = Failure(FailureReason.INSUFFICIENT_HISTORY, "garch_1_1",
                "needs at least 251 rows; has 40", {"needed": 251, "rows": 40})
    back = Failure.from_dict(json.loads(json.dumps(f.to_dict())))
    assert back == f and back.details == {"needed": 251, "rows": 40}
    assert back.reason is FailureReason.INSUFFICIENT_HISTORY
    assert f.to_dict()["reason"] == "insufficient_history"


def test_failure_reason_from_its_code_and_texts() -> None:
    f = Failure("fit_failed", "BTCUSDT", "optimizer did not converge")  # type: ignore[arg-type]
    assert f.reason is FailureReason.FIT_FAILED
    assert str(f) == "BTCUSDT: optimizer did not converge [fit_failed]"
    assert f.note() == "optimizer did not converge [fit_failed]"
    with pytest.raises(ValueError, match="'no_such_code' is not a valid FailureReason"):
        Failure("no_such_code", "x", "y")  # type: ignore[arg-type]


def test_failure_is_frozen_and_details_do_not_count_for_equality() -> None:
    a = Failure(FailureReason.STALE, "s", "m", {"age_h": 5})
    assert a == Failure(FailureReason.STALE, "s", "m", {"age_h": 6})
    with pytest.raises(AttributeError):
        a.subject = "t"  # type: ignore[misc]


# ---- corrupt files: one DataError naming the file ------------------------------------------------

TRADES = b"ts,symbol,price,size,side\n" + b"".join(
    b"2024-01-01T00:%02d:%02dZ,BTCUSDT,42000.5,0.1,1\n" % (i // 60 % 60, i % 60)
    for i in range(50_000)
)
GENERIC = {"kind": "trades"}


def _read_all(path: Path, fmt: str = "generic", **options: object) -> int:
    return sum(len(c.frame) for c in read_source(path, fmt, chunk_rows=10_000,
                                                 **{**GENERIC, **options}))


def test_a_good_gzip_reads(tmp_path: Path) -> None:
    p = tmp_path / "t.csv.gz"
    p.write_bytes(gzip.compress(TRADES))
    assert _read_all(p) == 50_000


def test_not_a_gzip(tmp_path: Path) -> None:
    p = tmp_path / "t.csv.gz"
    p.write_bytes(b"this is not gzip at all\n" * 10)
    with pytest.raises(DataError, match=r"t\.csv\.gz: not a gzip file \(Not a gzipped file"):
        _read_all(p)


def test_corrupt_gzip_data(tmp_path: Path) -> None:
    raw = bytearray(gzip.compress(TRADES))
    raw[20:60] = b"\x00" * 40  # inside the deflate stream: zlib.error
    p = tmp_path / "t.csv.gz"
    p.write_bytes(bytes(raw))
    with pytest.raises(DataError, match=r"t\.csv\.gz: corrupt gzip data \(Error -3"):
        _read_all(p)


def test_truncated_gzip(tmp_path: Path) -> None:
    raw = gzip.compress(TRADES)
    p = tmp_path / "t.csv.gz"
    p.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DataError, match=r"t\.csv\.gz: truncated compressed file \(Compressed "
                                        r"file ended before the end-of-stream marker"):
        _read_all(p)


def test_garbage_with_a_csv_name(tmp_path: Path) -> None:
    p = tmp_path / "BTCUSDT-trades-2024-01-01.csv"
    p.write_bytes(bytes(range(128, 256)) * 40)
    with pytest.raises(DataError, match=r"BTCUSDT-trades-2024-01-01\.csv: not UTF-8 text "
                                        r"\(byte b'\\x80' at offset 0\)"):
        sum(1 for _ in read_source(p, "binance_trades_csv"))


def test_garbage_with_a_parquet_name(tmp_path: Path) -> None:
    p = tmp_path / "klines_1m.parquet"
    p.write_bytes(b"certainly not parquet " * 50)
    with pytest.raises(DataError, match=r"klines_1m\.parquet: not a readable parquet file "
                                        r"\(Parquet magic bytes not found"):
        sum(1 for _ in read_source(p, "binance_klines_parquet"))


@pytest.mark.parametrize("exc", [
    gzip.BadGzipFile("Not a gzipped file (b'ab')"), zlib.error("Error -3 while decompressing"),
    EOFError("Compressed file ended"), UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid"),
], ids=lambda e: type(e).__name__)
def test_every_decoder_error_gets_the_file_name(exc: BaseException) -> None:
    assert isinstance(exc, CORRUPT_FILE_ERRORS)
    err = corrupt_file_error("data/x.csv.gz", exc)
    assert isinstance(err, DataError) and str(err).startswith("data/x.csv.gz: ")
    assert err.source == "data/x.csv.gz"


# ---- reader options ------------------------------------------------------------------------------


def test_unknown_reader_option_is_a_config_error_naming_the_origin(tmp_path: Path) -> None:
    assert "kind" in format_options("generic") and "mapping" in format_options("generic")
    with pytest.raises(ConfigError, match=r"^m\.toml: unknown key\(s\) \['bogus'\] for format "
                                          r"'generic'; expected keys among \['kind', "):
        check_options("generic", {"kind": "trades", "bogus": 1}, origin="m.toml")
    p = tmp_path / "t.csv"
    p.write_bytes(TRADES[:200])
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['bogus'\] for format 'generic'"):
        _read_all(p, bogus=1)
    with pytest.raises(ConfigError, match="unknown format 'nope'"):
        format_options("nope")
