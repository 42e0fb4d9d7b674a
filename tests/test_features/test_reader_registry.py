"""The reader registry: format detection, dispatch, directory listing and module loading."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import pandas as pd
import pytest

import features.readers as readers
from features.readers import binance, detect_format, list_sources, read_source
from features.schema import DataError

EXPECTED_BINANCE = {
    "binance_spot_btc_eth_1m/klines_1m.parquet": "binance_klines_parquet",
    "binance_spot_5m_btc_eth_bnb_ltc/klines_5m.parquet": "binance_klines_parquet",
    "binance_spot_15m_panel_16_assets/klines_15m.parquet": "binance_klines_parquet",
    "binance_spot_btcusdt_1h_2017_2024/klines_1h.parquet": "binance_klines_parquet",
    "binance_usdm_perp_btc_eth_bnb_ltc/klines_1m.parquet": "binance_klines_parquet",
    "binance_usdm_perp_btc_eth_bnb_ltc/klines_5m.parquet": "binance_klines_parquet",
    "binance_usdm_perp_btc_eth_bnb_ltc/mark_price_1h.parquet": "binance_klines_parquet",
    "binance_usdm_perp_btc_eth_bnb_ltc/mark_price_8h.parquet": "binance_klines_parquet",
    "binance_usdm_perp_btc_eth_bnb_ltc/funding_rate.parquet": "binance_funding_parquet",
    "binance_l2_depth_trades_snippets_2024-08-08/trades.parquet": "binance_l2_trades",
    "binance_l2_depth_trades_snippets_2024-08-08/book_ticker.parquet": "binance_l2_book_ticker",
    "binance_l2_depth_trades_snippets_2024-08-08/depth_snapshots.parquet": "binance_l2_depth_snapshots",
    "binance_l2_depth_trades_snippets_2024-08-08/depth_updates.parquet": "binance_l2_depth_updates",
    **{
        f"binance_l2_depth_trades_snippets_2024-08-08/raw/{m}_20240808.gz": "binance_ws_raw"
        for m in (
            "spot_btcusdt",
            "spot_ethusdt",
            "usdm_btcusdt",
            "usdm_ethusdt",
            "cm_btcusd_perp",
            "cm_ethusd_perp",
        )
    },
}


@pytest.mark.parametrize("rel", sorted(EXPECTED_BINANCE), ids=lambda r: r.split("/", 1)[1])
def test_detect_format_binance_real_files(data_dir, rel):
    assert detect_format(data_dir / rel) == EXPECTED_BINANCE[rel]


def test_list_sources_covers_every_file(data_dir):
    listed = list_sources(data_dir)
    paths = [p for p, _, _ in listed]
    on_disk = sorted(
        p
        for p in data_dir.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(data_dir).parts)
    )
    assert paths == on_disk  # every file, once, in sorted order
    formats = readers.FORMATS
    for path, fmt, reason in listed:
        assert reason, path
        if fmt is not None:
            assert fmt in formats
            # a detected file's format is the one detect_format gives
            assert detect_format(path) == fmt
    by_rel = {p.relative_to(data_dir).as_posix(): (f, r) for p, f, r in listed}
    for rel, fmt in EXPECTED_BINANCE.items():
        assert by_rel[rel] == (fmt, "binance")
    docs = [rel for rel, (f, r) in by_rel.items() if r == "documentation"]
    assert all(f is None for rel, (f, r) in by_rel.items() if r == "documentation")
    assert "README.md" in docs
    # every dataset folder documents itself in a SOURCE.md, and each is listed as documentation
    n_datasets = sum(1 for d in data_dir.iterdir() if (d / "SOURCE.md").is_file())
    assert n_datasets >= 14
    assert sum(rel.endswith("SOURCE.md") for rel in docs) == n_datasets
    assert "lobster_amzn_2012-06-21_level1/LOBSTER_SampleFiles_ReadMe.txt" in docs
    # non-documentation files without a format say why
    for rel, (f, r) in by_rel.items():
        if f is None and r != "documentation":
            assert r == "unrecognised format" or r.startswith("part of "), (rel, r)


def test_list_sources_hand_made_tree(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "README").write_text("hello")
    (tmp_path / "notes.txt").write_text("1,2,3")
    (tmp_path / "sub" / "BTCUSDT-trades-2024-01-01.csv").write_text(
        "1,10.0,1.0,10.0,1704067200000,True,True\n"
    )
    (tmp_path / "sub" / "mystery.bin").write_bytes(b"\x00\x01\x02")
    (tmp_path / ".hidden").mkdir()
    (tmp_path / ".hidden" / "x.csv").write_text("a\n")
    got = [(p.relative_to(tmp_path).as_posix(), f, r) for p, f, r in list_sources(tmp_path)]
    assert got[:2] == [("README", None, "documentation"), ("notes.txt", None, "documentation")]
    assert ("sub/BTCUSDT-trades-2024-01-01.csv", "binance_trades_csv", "binance") in got
    assert ("sub/mystery.bin", None, "unrecognised format") in got
    assert len(got) == 4  # hidden folders skipped
    with pytest.raises(DataError, match=r"no such directory: .*nowhere; expected a folder"):
        list_sources(tmp_path / "nowhere")


def test_formats_hold_every_binance_reader():
    formats = readers.FORMATS
    for name, fn in binance.READERS.items():
        assert formats[name] is fn
    assert "binance_klines_parquet" in readers.known_formats()
    with pytest.raises(AttributeError, match=r"has no attribute 'NOPE'"):
        readers.NOPE  # noqa: B018


def test_detect_format_unknown_file(tmp_path):
    path = tmp_path / "mystery.bin"
    path.write_bytes(b"\x00\x01\x02")
    with pytest.raises(
        DataError,
        match=r"cannot detect the format of .*mystery.bin; pass --format "
        r"one of \[.*'binance_klines_csv'.*\]",
    ):
        detect_format(path)
    with pytest.raises(DataError, match=r"no such file: .*absent.csv"):
        detect_format(tmp_path / "absent.csv")


def test_read_source_dispatch_and_errors(tmp_path):
    path = tmp_path / "BTCUSDT-1m-2024-01-01.csv"
    o = 1_704_067_200_000
    path.write_text(f"{o},1,2,0.5,1.5,3,{o + 59_999},4,5,1,2,0\n")
    (auto,) = read_source(path)
    (named,) = read_source(path, "binance_klines_csv")
    pd.testing.assert_frame_equal(auto.frame, named.frame)
    assert auto.table == "bars_1m" and auto.kind == "bars" and auto.source == str(path)
    with pytest.raises(DataError, match=r"unknown format 'nope'; expected one of \[.*'binance_"):
        next(read_source(path, "nope"))
    with pytest.raises(DataError, match=r"'chunk_rows' parameter must be an integer >= 1. Got -5"):
        next(read_source(path, chunk_rows=-5))
    with pytest.raises(DataError, match=r"no such file: .*gone.csv"):
        next(read_source(tmp_path / "gone.csv", "binance_klines_csv"))


@pytest.fixture
def fresh_registry(monkeypatch):
    """Clear the registry caches before and after a test that swaps the module list."""
    readers._modules.cache_clear()
    readers._formats.cache_clear()
    yield monkeypatch
    monkeypatch.undo()
    readers._modules.cache_clear()
    readers._formats.cache_clear()


def _fake_module(monkeypatch, name: str, formats: dict, sniff) -> None:
    mod = types.ModuleType(f"features.readers.{name}")
    mod.READERS = formats
    mod.sniff = sniff
    monkeypatch.setitem(sys.modules, f"features.readers.{name}", mod)


def test_missing_modules_are_skipped(fresh_registry):
    fresh_registry.setattr(readers, "MODULES", ("binance", "not_written_yet"))
    assert [name for name, _ in readers._modules()] == ["binance"]
    assert set(readers.FORMATS) == set(binance.READERS)


def test_generic_is_asked_last_and_duplicates_rejected(fresh_registry, tmp_path):
    def reader(path, *, chunk_rows=1, **options):
        yield from ()

    _fake_module(fresh_registry, "generic", {"anything": reader}, lambda p: "anything")
    _fake_module(
        fresh_registry,
        "special",
        {"special_csv": reader},
        lambda p: "special_csv" if p.suffix == ".csv" else None,
    )
    fresh_registry.setattr(readers, "MODULES", ("generic", "special"))
    assert [n for n, _ in readers._modules()] == ["special", "generic"]
    f_csv = tmp_path / "a.csv"
    f_csv.write_text("x\n")
    f_dat = tmp_path / "a.dat"
    f_dat.write_text("x\n")
    assert detect_format(f_csv) == "special_csv"
    assert detect_format(f_dat) == "anything"
    assert list_sources(tmp_path) == [
        (f_csv, "special_csv", "special"),
        (f_dat, "anything", "generic"),
    ]

    readers._modules.cache_clear()
    readers._formats.cache_clear()
    _fake_module(fresh_registry, "clash", {"special_csv": reader}, lambda p: None)
    fresh_registry.setattr(readers, "MODULES", ("special", "clash"))
    with pytest.raises(
        DataError,
        match=r"format 'special_csv' is defined by both readers.special "
        r"and readers.clash",
    ):
        readers.known_formats()


def test_bad_modules_are_reported(fresh_registry, tmp_path):
    mod = types.ModuleType("features.readers.broken")
    mod.READERS = {}
    fresh_registry.setitem(sys.modules, "features.readers.broken", mod)
    fresh_registry.setattr(readers, "MODULES", ("broken",))
    with pytest.raises(DataError, match=r"reader module features.readers.broken lacks 'sniff'"):
        readers.known_formats()

    readers._modules.cache_clear()
    readers._formats.cache_clear()
    _fake_module(fresh_registry, "liar", {}, lambda p: "ghost_format")
    fresh_registry.setattr(readers, "MODULES", ("liar",))
    f = tmp_path / "a.csv"
    f.write_text("x\n")
    with pytest.raises(
        DataError, match=r"readers.liar.sniff returned 'ghost_format', which is not"
    ):
        detect_format(f)


def test_companion_files_reported_as_part_of_their_source(fresh_registry, tmp_path):
    msg = tmp_path / "X_message_1.csv"
    book = tmp_path / "X_orderbook_1.csv"
    msg.write_text("1\n")
    book.write_text("1\n")

    def reader(path, *, chunk_rows=1, **options):
        yield from ()

    mod = types.ModuleType("features.readers.pairs")
    mod.READERS = {"pair_fmt": reader}
    mod.sniff = lambda p: "pair_fmt" if "_message_" in p.name else None
    mod.companion_of = lambda p: (
        p.with_name(p.name.replace("orderbook", "message")) if "_orderbook_" in p.name else None
    )
    fresh_registry.setitem(sys.modules, "features.readers.pairs", mod)
    fresh_registry.setattr(readers, "MODULES", ("pairs",))
    assert list_sources(tmp_path) == [
        (msg, "pair_fmt", "pairs"),
        (book, None, "part of X_message_1.csv"),
    ]


def test_registry_import_is_lazy_about_format_modules():
    # importing the package does not require the format modules; FORMATS is built on access
    assert "FORMATS" not in vars(readers)
    assert isinstance(readers.FORMATS, dict)
    assert Path(readers.__file__).name == "__init__.py"
