"""LOBSTER readers: the AMZN sample (CSV pair and joined parquet) and hand-made level-2 files."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from features.readers import lobster
from features.schema import DataError, validate

FOLDER = "lobster_amzn_2012-06-21_level1"
MESSAGE = "AMZN_2012-06-21_34200000_57600000_message_1.csv.gz"
ORDERBOOK = "AMZN_2012-06-21_34200000_57600000_orderbook_1.csv.gz"


def _collect(chunks) -> dict[str, pd.DataFrame]:
    out: dict[str, list[pd.DataFrame]] = {}
    for c in chunks:
        out.setdefault(c.table, []).append(c.frame)
    return {k: pd.concat(v, ignore_index=True) for k, v in out.items()}


@pytest.fixture(scope="module")
def amzn(data_dir):
    folder = data_dir / FOLDER
    csv = _collect(lobster.read_lobster(folder / MESSAGE, chunk_rows=20_000))
    pq = _collect(
        lobster.read_lobster_parquet(folder / "amzn_level1_events.parquet", chunk_rows=20_000)
    )
    return folder, csv, pq


def test_sniff_pair_and_parquet(data_dir):
    folder = data_dir / FOLDER
    assert lobster.sniff(folder / MESSAGE) == "lobster"
    assert lobster.sniff(folder / ORDERBOOK) is None  # read with its message file
    assert lobster.companion_of(folder / ORDERBOOK) == folder / MESSAGE
    assert lobster.companion_of(folder / MESSAGE) is None
    assert lobster.sniff(folder / "amzn_level1_events.parquet") == "lobster_parquet"
    assert lobster.sniff(folder / "SOURCE.md") is None
    assert lobster.parquet_meta(folder / "amzn_level1_events.parquet") == ("AMZN", "2012-06-21")


def test_csv_and_parquet_identical(amzn):
    _, csv, pq = amzn
    assert set(csv) == set(pq) == {"quotes", "trades"}  # level 1: no book table
    for table in csv:
        validate(csv[table], table)
        pd.testing.assert_frame_equal(csv[table], pq[table], check_exact=True)
    assert len(csv["quotes"]) == 57_515


def test_amzn_rows_by_hand(amzn):
    """Line 2 of the message file: ``34200.01746,5,0,1,2238200,-1`` with book
    ``2239500,100,2231800,100``; line 4: ``34200.19023,4,11885113,21,2238100,1``."""
    _, csv, _ = amzn
    q, t = csv["quotes"], csv["trades"]
    # 09:30:00.01746 New York (EDT, UTC-4) = 13:30:00.01746 UTC
    assert q.loc[0, "ts"] == pd.Timestamp("2012-06-21 13:30:00.017460", tz="UTC")
    assert q.loc[0, ["bid_px", "bid_sz", "ask_px", "ask_sz"]].tolist() == [
        223.18,
        100.0,
        223.95,
        100.0,
    ]
    assert q.loc[0, "symbol"] == "AMZN"
    # hidden execution of a sell limit order -> buyer-initiated
    assert t.loc[0, ["price", "size", "side"]].tolist() == [223.82, 1.0, 1]
    assert t.loc[0, "ts"] == q.loc[0, "ts"]
    # visible execution of a buy limit order -> seller-initiated
    assert t.loc[1, ["price", "size", "side"]].tolist() == [223.81, 21.0, -1]
    assert t.loc[1, "ts"] == pd.Timestamp("2012-06-21 13:30:00.190230", tz="UTC")
    assert q["ts"].iloc[-1] == pd.Timestamp("2012-06-21 19:59:59.959360", tz="UTC")


def test_amzn_trades_match_independent_read(amzn):
    folder, csv, _ = amzn
    msg = pd.read_csv(folder / MESSAGE)
    ex = msg[msg["Type"].isin([4, 5])]
    t = csv["trades"]
    assert len(t) == len(ex) == 11_419
    np.testing.assert_array_equal(t["price"].to_numpy(), ex["Price"].to_numpy() / 10_000)
    np.testing.assert_array_equal(t["side"].to_numpy(), -ex["Direction"].to_numpy())
    np.testing.assert_array_equal(t["size"].to_numpy(), ex["Size"].to_numpy())
    book = pd.read_csv(folder / ORDERBOOK)
    np.testing.assert_array_equal(
        csv["quotes"]["ask_px"].to_numpy(), book["BestAsk"].to_numpy() / 10_000
    )
    assert csv["quotes"]["ts"].is_monotonic_increasing


def test_chunks_are_bounded_and_invariant(data_dir, amzn):
    _, csv, _ = amzn
    chunks = list(lobster.read_lobster(data_dir / FOLDER / MESSAGE, chunk_rows=7_000))
    assert max(len(c.frame) for c in chunks) <= 7_000
    assert chunks[0].first_line == 2 and chunks[2].first_line == 7_002
    small = _collect(chunks)
    for table in csv:
        pd.testing.assert_frame_equal(small[table], csv[table])


# ---- hand-made level-2 pair --------------------------------------------------------------------

DUMMY = 9_999_999_999
MSG2 = [
    "34200.5,1,1,100,1000000,1",  # 09:30:00.5 new bid 100.00
    "34201.25,4,7,30,1010000,-1",  # execution of a sell limit order at 101.00
    "34202.000000001,5,0,10,1005000,1",  # hidden execution of a buy order at 100.50
    "34203,7,0,0,-1,-1",  # trading halt: not a trade
]
BOOK2 = [
    f"1010000,50,1000000,100,1020000,10,-{DUMMY},0",
    "1010000,20,1000000,100,1020000,10,990000,5",
    f"1010000,20,1000000,100,{DUMMY},0,990000,5",
    f"1010000,20,1000000,100,{DUMMY},0,990000,5",
]


def _pair(tmp_path: Path, msg: list[str], book: list[str], gz: bool = True) -> Path:
    suffix = ".csv.gz" if gz else ".csv"
    m = tmp_path / f"TEST_2024-03-11_34200000_57600000_message_2{suffix}"
    b = tmp_path / f"TEST_2024-03-11_34200000_57600000_orderbook_2{suffix}"
    for path, rows in ((m, msg), (b, book)):
        text = "\n".join(rows) + "\n"
        if gz:
            with gzip.open(path, "wt") as fh:
                fh.write(text)
        else:
            path.write_text(text)
    return m


@pytest.mark.parametrize("gz", [True, False], ids=["gzip", "plain"])
def test_level2_pair_by_hand(tmp_path, gz):
    m = _pair(tmp_path, MSG2, BOOK2, gz=gz)
    assert lobster.sniff(m) == "lobster"
    out = _collect(lobster.read_lobster(m, chunk_rows=3))
    assert set(out) == {"quotes", "trades", "book"}
    q, t, b = out["quotes"], out["trades"], out["book"]
    for table, frame in out.items():
        validate(frame, table)
    # 2024-03-11 is the first weekday after the US switch to daylight time: EDT, UTC-4
    assert q["ts"].tolist()[:3] == [
        pd.Timestamp("2024-03-11 13:30:00.5", tz="UTC"),
        pd.Timestamp("2024-03-11 13:30:01.25", tz="UTC"),
        pd.Timestamp("2024-03-11 13:30:02.000000001", tz="UTC"),
    ]
    assert q.loc[0, ["bid_px", "bid_sz", "ask_px", "ask_sz"]].tolist() == [
        100.0,
        100.0,
        101.0,
        50.0,
    ]
    assert t[["price", "size", "side"]].values.tolist() == [[101.0, 30.0, 1], [100.5, 10.0, -1]]
    assert len(q) == 4 and len(t) == 2
    # book: 8 slots per row minus dummy levels (row 1 bid 2, rows 3-4 ask 2)
    assert len(b) == 4 * 4 - 3
    row0 = b[b["ts"] == q.loc[0, "ts"]]
    assert list(zip(row0["side"], row0["level"], row0["px"], row0["sz"], strict=True)) == [
        (1, 0, 100.0, 100.0),  # level 0 = best
        (-1, 0, 101.0, 50.0),
        (-1, 1, 102.0, 10.0),
    ]


def test_one_sided_top_is_nan(tmp_path):
    book = [f"{DUMMY},0,1000000,100,{DUMMY},0,-{DUMMY},0"] + BOOK2[1:]
    out = _collect(lobster.read_lobster(_pair(tmp_path, MSG2, book)))
    assert np.isnan(out["quotes"].loc[0, "ask_px"]) and out["quotes"].loc[0, "ask_sz"] == 0.0


def test_errors(tmp_path):
    m = _pair(tmp_path, MSG2, BOOK2[:3])
    with pytest.raises(DataError, match=r"differ in length|ends before"):
        list(lobster.read_lobster(m))
    (tmp_path / m.name.replace("message", "orderbook")).unlink()
    with pytest.raises(DataError, match=r"orderbook file not found beside the message file"):
        list(lobster.read_lobster(m))
    bad = _pair(tmp_path, [*MSG2[:2], "34202,4,7,x30,1010000,-1", MSG2[3]], BOOK2)
    with pytest.raises(DataError, match=r"message_2\.csv\.gz, line 3, column 'size'.*'x30'"):
        list(lobster.read_lobster(bad))
    longer = _pair(tmp_path, MSG2, [*BOOK2, BOOK2[-1]])
    with pytest.raises(DataError, match=r"more rows than the message file"):
        list(lobster.read_lobster(longer, chunk_rows=4))
    with pytest.raises(DataError, match=r"not a LOBSTER message file name"):
        list(lobster.read_lobster(tmp_path / "x.csv"))


def test_parquet_needs_ticker_and_date(tmp_path):
    folder = tmp_path / "somewhere"
    folder.mkdir()
    frame = pd.DataFrame(
        {
            "time_s_after_midnight": [34200.5],
            "event_type": [4],
            "order_id": [1],
            "size": [5],
            "price_x10000": [1000000],
            "direction": [1],
            "ask_price_1_x10000": [1010000],
            "ask_size_1": [1],
            "bid_price_1_x10000": [1000000],
            "bid_size_1": [2],
        }
    )
    path = folder / "events.parquet"
    frame.to_parquet(path)
    assert lobster.sniff(path) == "lobster_parquet"
    with pytest.raises(DataError, match=r"give ticker = \"AMZN\" and date = \"YYYY-MM-DD\" in a --mapping"):
        list(lobster.read_lobster_parquet(path))
    out = _collect(lobster.read_lobster_parquet(path, ticker="XYZ", date="2024-01-02"))
    assert out["trades"].loc[0, "ts"] == pd.Timestamp("2024-01-02 14:30:00.5", tz="UTC")  # EST
    assert out["trades"].loc[0, ["price", "side"]].tolist() == [100.0, -1]


def test_book_chunks_carry_their_first_line(tmp_path):
    m = _pair(tmp_path, MSG2, BOOK2, gz=False)
    book = [c for c in lobster.read_lobster(m, chunk_rows=2) if c.table == "book"]
    assert all(len(c.frame) <= 2 for c in book)
    # message lines 1..4 (no header) give 3, 4, 3, 3 book rows; two messages per step:
    # lines 1-2 -> 7 rows in pieces starting at lines 1, 1, 2, 2; lines 3-4 -> 6 rows: 3, 3, 4
    assert [c.first_line for c in book] == [1, 1, 2, 2, 3, 3, 4]
