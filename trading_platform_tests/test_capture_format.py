"""The recording format: every line kind written with the module reads back as written."""

from __future__ import annotations

import json
from pathlib import Path

from trading_platform.capture_format import (
    CaptureLine,
    FrameRecorder,
    LineKind,
    configuration_line,
    connected_line,
    frame_line,
    is_rest_recording,
    parse_line,
    read_capture,
    rest_line,
    sent_line,
    sibling_rest_recordings,
)

WS_URL = "ws://127.0.0.1:9555/binance/stream?streams=btcusdt@trade/btcusdt@depth@100ms"
DEPTH_URL = "http://127.0.0.1:9555/binance/api/v3/depth?symbol=BTCUSDT&limit=1000"


def test_every_line_kind_round_trips(tmp_path: Path) -> None:
    capture = tmp_path / "BINANCE.ws.1.0"
    configuration = json.dumps({"trades": ["BTC-USDT"], "l2_book": ["BTC-USDT"]})
    subscribe = '{"method":"SUBSCRIBE","params":["btcusdt@trade"],"id":1}'
    capture.write_text(
        configuration_line(configuration)
        + connected_line(WS_URL, 1_700_000_000_000_001)
        + sent_line(WS_URL, 1_700_000_000_000_002, subscribe)
        + frame_line('{"result":null,"id":1}', 1_700_000_000_123_456)
        + "\n"  # an empty line is no record
        + rest_line(DEPTH_URL, 1_700_000_000_500_000, '{"lastUpdateId":7,"bids":[],"asks":[]}')
        + frame_line('{"raw":"frame, no time"}'),
        encoding="utf-8",
    )
    lines = list(read_capture(capture))
    assert [(line.kind, line.received_us if line.timed else None, line.text, line.url) for line in lines] == [
        (LineKind.CONFIGURATION, None, configuration, None),
        (LineKind.CONNECTED, 1_700_000_000_000_001, WS_URL, WS_URL),
        (LineKind.SENT, 1_700_000_000_000_002, subscribe, WS_URL),
        (LineKind.FRAME, 1_700_000_000_123_456, '{"result":null,"id":1}', None),
        (LineKind.REST, 1_700_000_000_500_000, '{"lastUpdateId":7,"bids":[],"asks":[]}', DEPTH_URL),
        (LineKind.FRAME, None, '{"raw":"frame, no time"}', None),
    ]
    assert [line.text for line in read_capture(capture, (LineKind.FRAME,))] == [
        '{"result":null,"id":1}', '{"raw":"frame, no time"}']
    # Untimed lines are stamped in line order from the file's modification time (reproducible, ordered).
    base_us = int(capture.stat().st_mtime * 1_000_000)
    assert (lines[0].received_us, lines[-1].received_us) == (base_us, base_us + 6)


def test_cryptofeed_rest_headers_are_not_part_of_the_body() -> None:
    line = parse_line(f'{DEPTH_URL} -> 17.5: {{"lastUpdateId":1}} header: {{"Content-Type": "json"}}\n'.encode())
    assert line == CaptureLine(LineKind.REST, 17_500_000, b'{"lastUpdateId":1}', DEPTH_URL, timed=True)
    # Text that only looks like a header suffix stays in the body.
    kept = parse_line(f'{DEPTH_URL} -> 17.5: {{"note":"a header: {{x}}"}}'.encode())
    assert kept is not None and kept.payload == b'{"note":"a header: {x}"}'


def test_lines_that_are_no_cryptofeed_record_are_raw_frames() -> None:
    for text in (b'{"cut": tr', b"12abc: not a time", b"ws://127.0.0.1 <-> 1.2.3", b"ws://127.0.0.1 -> 17.5",
                 b"ws://127.0.0.1 <-> 1: body"):
        assert parse_line(text + b"\r\n", 42) == CaptureLine(LineKind.FRAME, 42, text)
    assert parse_line(b"   \r\n") is None
    connected = parse_line(b"ws://127.0.0.1 <-> 17.25  \n")
    assert connected == CaptureLine(LineKind.CONNECTED, 17_250_000, b"ws://127.0.0.1", "ws://127.0.0.1", timed=True)


def test_recorder_writes_what_the_reader_reads(tmp_path: Path) -> None:
    for record_format in ("raw", "cryptofeed"):
        path = tmp_path / f"{record_format}.txt"
        recorder = FrameRecorder(path, record_format)
        recorder.connected("/binance/stream")
        recorder.frame('{"n":1}')
        recorder.rest("/binance/api/v3/depth?symbol=BTCUSDT", '{"lastUpdateId":1}')
        recorder.frame('{"n":2}')
        recorder.close()
        lines = list(read_capture(path))
        if record_format == "raw":  # frames only, without times
            assert [(line.kind, line.text, line.timed) for line in lines] == [
                (LineKind.FRAME, '{"n":1}', False), (LineKind.FRAME, '{"n":2}', False)]
        else:
            assert [(line.kind, line.text) for line in lines] == [
                (LineKind.CONNECTED, "/binance/stream"), (LineKind.FRAME, '{"n":1}'),
                (LineKind.REST, '{"lastUpdateId":1}'), (LineKind.FRAME, '{"n":2}')]
            assert all(line.timed for line in lines)
            assert [line.received_us for line in lines] == sorted(line.received_us for line in lines)


def test_rest_recordings_are_told_from_response_bodies_and_found_beside_a_capture(tmp_path: Path) -> None:
    for name in ("BINANCE.0", "BINANCE.http.1.0", "BINANCE.http.1.1", "BINANCE.http.2.0", "BINANCE.ws.1.0",
                 "COINBASE.http.1.0"):
        (tmp_path / name).write_text(rest_line(DEPTH_URL, 1, "{}"))
    (tmp_path / "BINANCE.0").write_text(configuration_line('{"trades": ["BTC-USDT"]}'))
    body = tmp_path / "depth.json"
    body.write_text('{"lastUpdateId":1,"bids":[],"asks":[]}')
    assert [is_rest_recording(tmp_path / n) for n in ("BINANCE.0", "BINANCE.http.1.0", "depth.json")] == [
        True, True, False]
    assert [p.name for p in sibling_rest_recordings(tmp_path / "BINANCE.ws.1.0")] == [
        "BINANCE.0", "BINANCE.http.1.0", "BINANCE.http.1.1", "BINANCE.http.2.0"]
    assert sibling_rest_recordings(body) == []
