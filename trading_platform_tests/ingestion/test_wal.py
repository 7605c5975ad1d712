from __future__ import annotations

from pathlib import Path

from trading_platform.ingestion.wal import WriteAheadLog, encode_records


def test_records_survive_reopening(tmp_path: Path) -> None:
    wal = WriteAheadLog(tmp_path)
    for i in range(5):
        assert wal.append(1000 + i, b"frame-%d" % i) == i
    wal.close()
    reopened = WriteAheadLog(tmp_path)
    assert reopened.next_offset == 5
    assert [payload for _, _, _, payload in reopened.records(0)] == [b"frame-%d" % i for i in range(5)]


def test_a_torn_tail_is_truncated_and_offsets_continue(tmp_path: Path) -> None:
    wal = WriteAheadLog(tmp_path)
    wal.append(1, b"complete")
    wal.append(2, b"torn-by-crash")
    wal.close()
    segment = next(tmp_path.glob("*.wal"))
    segment.write_bytes(segment.read_bytes()[:-4])
    reopened = WriteAheadLog(tmp_path)
    assert [p for _, _, _, p in reopened.records(0)] == [b"complete"]
    assert reopened.append(3, b"next") == 1


def written_wal(tmp_path: Path) -> tuple[WriteAheadLog, Path]:
    """A log of three frames (``frame-0`` .. ``frame-2``) written to its segment file, and that file."""
    wal = WriteAheadLog(tmp_path)
    for i in range(3):
        wal.append(i, b"frame-%d" % i)
    wal.write()
    return wal, next(tmp_path.glob("*.wal"))


def test_a_record_whose_bytes_changed_ends_the_readable_wal(tmp_path: Path) -> None:
    wal, segment = written_wal(tmp_path)
    wal.close()
    data = bytearray(segment.read_bytes())
    data[data.index(b"frame-1")] ^= 0xFF  # the middle record's payload no longer matches its CRC
    segment.write_bytes(bytes(data))
    assert [p for _, _, _, p in WriteAheadLog(tmp_path).records(0)] == [b"frame-0"]


def test_sealed_batches_stay_pending_until_flushed(tmp_path: Path) -> None:
    wal = WriteAheadLog(tmp_path)
    for i in range(3):
        wal.append(i, b"a")
    first = wal.seal({"BTC-USDT": [1.0]})
    for i in range(2):
        wal.append(i, b"b")
    second = wal.seal({})
    assert first is not None and second is not None
    assert (first.first, first.last, second.first, second.last) == (0, 2, 3, 4)
    wal.mark_flushed(first, {"BTC-USDT": [2.0]})
    wal.close()
    reopened = WriteAheadLog(tmp_path)
    assert reopened.checkpoint.flushed_through == 2
    assert [(p.first, p.last) for p in reopened.checkpoint.pending] == [(3, 4)]
    assert reopened.checkpoint.reference == {"BTC-USDT": [2.0]}


def test_flushed_segments_are_deleted_and_the_rest_kept(tmp_path: Path) -> None:
    wal = WriteAheadLog(tmp_path)
    wal.append(0, b"x")
    first = wal.seal({})
    wal.append(0, b"y")
    assert first is not None
    wal.seal({})
    wal.mark_flushed(first, {})
    assert [p.name for p in sorted(tmp_path.glob("*.wal"))] == ["000000000001.wal"]
    assert [p for _, _, _, p in wal.records(0)] == [b"y"]


def test_sealing_nothing_records_nothing(tmp_path: Path) -> None:
    wal = WriteAheadLog(tmp_path)
    assert wal.seal({}) is None
    assert wal.checkpoint.pending == []


def test_record_kinds_are_kept(tmp_path: Path) -> None:
    wal = WriteAheadLog(tmp_path)
    wal.append(1, b"ws://127.0.0.1/x", kind=2)
    wal.append(2, b"frame")
    wal.close()
    records = [(kind, p) for _, _, kind, p in WriteAheadLog(tmp_path).records(0)]
    assert records == [(2, b"ws://127.0.0.1/x"), (0, b"frame")]


def test_exchange_state_is_kept_with_the_checkpoint(tmp_path: Path) -> None:
    wal = WriteAheadLog(tmp_path)
    wal.append(0, b"x")
    sealed = wal.seal({})
    assert sealed is not None
    wal.mark_flushed(sealed, {}, {"trade_high_water": {"BTC-USD": 42}})
    wal.close()
    assert WriteAheadLog(tmp_path).checkpoint.exchange_state == {"trade_high_water": {"BTC-USD": 42}}


def test_a_second_process_cannot_open_a_wal_in_use(tmp_path: Path) -> None:
    import subprocess
    import sys

    wal = WriteAheadLog(tmp_path)
    script = ("import sys; from pathlib import Path\n"
              "from trading_platform.ingestion.wal import WriteAheadLog, WalLocked\n"
              "try:\n    WriteAheadLog(Path(sys.argv[1]))\nexcept WalLocked as e:\n    print(e); sys.exit(3)")
    held = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True)
    assert held.returncode == 3 and "in use by another ingestion process" in held.stdout
    wal.close()
    free = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True)
    assert free.returncode == 0, free.stdout + free.stderr


def test_written_records_survive_a_process_that_dies_without_closing(tmp_path: Path) -> None:
    import subprocess
    import sys

    script = ("import os, sys; from pathlib import Path\n"
              "from trading_platform.ingestion.wal import WriteAheadLog\n"
              "wal = WriteAheadLog(Path(sys.argv[1]))\n"
              "for i in range(3):\n    wal.append(i, b'frame-%d' % i)\n"
              "wal.write()\n"
              "os._exit(0)  # no close, no fsync: as a kill -9 right after the write")
    died = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True)
    assert died.returncode == 0, died.stderr
    reopened = WriteAheadLog(tmp_path)
    assert [p for _, _, _, p in reopened.records(0)] == [b"frame-0", b"frame-1", b"frame-2"]
    assert reopened.next_offset == 3


def test_records_gathered_over_a_seal_start_a_segment_named_by_their_first_offset(tmp_path: Path) -> None:
    wal = WriteAheadLog(tmp_path)
    wal.append(0, b"x")
    first = wal.seal({})
    assert first is not None
    wal.append(0, b"y")
    wal.append(0, b"z")
    wal.write()
    assert [p.name for p in sorted(tmp_path.glob("*.wal"))] == ["000000000000.wal", "000000000001.wal"]
    wal.mark_flushed(first, {})
    assert [p for _, _, _, p in wal.records(0)] == [b"y", b"z"]


def test_a_written_span_copies_a_sealed_batch_exactly_as_its_records(tmp_path: Path) -> None:
    """The archive copies a sealed batch's bytes from the files: the same bytes as its records re-encoded, across
    segments, records larger than a read chunk and records of the next batch sharing its last segment."""
    wal = WriteAheadLog(tmp_path)
    payloads = [b"a" * 10, b"b" * (3 << 20), b"c", b"d" * 1000, b"e", b"f"]
    for i, payload in enumerate(payloads[:3]):
        wal.append(100 + i, payload)
    first = wal.seal({})
    for i, payload in enumerate(payloads[3:]):
        wal.append(200 + i, payload)
    second = wal.seal({}, through=4)  # record 5 was written with the batch but belongs to the next one
    assert first is not None and second is not None
    for batch in (first, second):
        span = wal.written_span(batch.first, batch.last)
        assert span is not None
        assert (span.first, span.last, span.first_received_us) == (batch.first, batch.last,
                                                                   next(wal.records(batch.first))[1])
        assert b"".join(span.chunks()) == encode_records(wal.records(batch.first, batch.last))
    across = wal.written_span(1, 5)
    assert across is not None and len(across.parts) == 2
    assert b"".join(across.chunks()) == encode_records(wal.records(1, 5))
    assert wal.written_span(6, 9) is None


def test_a_written_span_stops_at_a_torn_record(tmp_path: Path) -> None:
    wal, segment = written_wal(tmp_path)
    segment.write_bytes(segment.read_bytes()[:-2])  # the last record torn, as by a crash mid-append
    span = wal.written_span(0, 2)
    assert span is not None and (span.first, span.last) == (0, 1)
    assert b"".join(span.chunks()) == encode_records(wal.records(0, 1))
