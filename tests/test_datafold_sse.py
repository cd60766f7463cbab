"""The SSE client against an in-test server that speaks like a DataFold node's
``/api/logs/stream`` (chunked ``text/event-stream``, ``data: LEVEL - message`` events with ids,
comment heartbeats, a BOM, UTF-8 split across reads), and drops the connection mid-event once:
the client reconnects with ``Last-Event-ID`` and no line is lost or repeated. Plus the parser
against the WHATWG rules."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import orjson

from keylife.datafold.contract import Line
from keylife.datafold.runner import sse_runner
from keylife.datafold.sse import SseClient, SseEvent, SseParser
from tests.datafold_samples import samples_dir
from tests.test_datafold_follow import FakeAdapter, FakeSink, wait_for


def node_lines(count: int) -> list[str]:
    """The node's own lines first (skip, or fail under CI, without the samples), then synthetic ones."""
    lines = json.loads((samples_dir() / "web-logs.json").read_text())
    lines += [f'INFO - {{"n":{n},"note":"café ✓"}}' for n in range(count)]  # UTF-8 split across reads
    return lines[:count]


class LogStream(ThreadingHTTPServer):
    """``GET /api/logs/stream``: first answer 503, then stream from after ``Last-Event-ID``; the
    second connection is cut in the middle of an event, later ones stay open with heartbeats."""

    daemon_threads = True

    def __init__(self, lines: list[str]) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.lines = lines
        self.last_ids: list[str | None] = []
        self.stopping = threading.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/api/logs/stream"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: LogStream

    def log_message(self, *args: Any) -> None:
        pass

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def do_GET(self) -> None:
        server = self.server
        if self.path != "/api/logs/stream":
            self.send_error(404)
            return
        server.last_ids.append(self.headers.get("Last-Event-ID"))
        attempt = len(server.last_ids)
        if attempt == 1:
            self.send_response(503)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        start = int(self.headers.get("Last-Event-ID") or 0)
        try:
            self._chunk(b"\xef\xbb\xbfretry: 20\n: connected\n\n")  # a BOM may open each stream
            sent = start
            while not server.stopping.is_set():
                for n in range(sent, len(server.lines)):
                    if attempt == 2 and n == 4:  # cut mid-event: an id and half a data line, no blank line
                        self._chunk(b"id: 5\ndata: " + server.lines[n][:15].encode())
                        self.connection.shutdown(socket.SHUT_RDWR)
                        self.close_connection = True
                        return
                    event = f"id: {n + 1}\ndata: {server.lines[n]}\n\n".encode()
                    for piece in (event[:7], event[7:-4], event[-4:]):  # split across reads, inside "✓"
                        self._chunk(piece)
                sent = len(server.lines)
                self._chunk(b": heartbeat\n\n")
                time.sleep(0.01)
            self._chunk(b"")
        except OSError:
            pass  # the client went away


@contextmanager
def log_stream(lines: list[str]) -> Iterator[LogStream]:
    server = LogStream(list(lines))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.stopping.set()
        server.shutdown()
        server.server_close()


def test_reconnects_with_last_event_id_and_loses_or_repeats_nothing() -> None:
    lines = node_lines(10)
    with log_stream(lines) as server:
        client = SseClient(server.url, node="node-a", retry_seconds=0.01, read_timeout=5)
        got: list[Line] = []

        def read() -> None:
            for line in client.lines():
                got.append(line)

        thread = threading.Thread(target=read, daemon=True)
        thread.start()
        wait_for(lambda: len(got) >= 10)
        time.sleep(0.05)  # a repeat would show up now
        client.close()
        thread.join(5)
        assert not thread.is_alive()
    assert [line.text for line in got] == lines
    assert [line.position for line in got] == list(range(1, 11))
    assert {(line.source, line.node) for line in got} == {("sse:" + server.url, "node-a")}
    assert server.last_ids == [None, None, "4"]  # 503, then cut after id 4, resumed after it
    assert client.stats["failures"] == 2 and client.last_id == "10"
    assert client.parser.retry_ms == 20  # read right after the BOM


def test_the_runner_persists_the_event_id_and_resumes_after_it(tmp_path: Path) -> None:
    lines = node_lines(8)
    state = tmp_path / "sse.json"
    sink = FakeSink()
    options = {"batch_seconds": 0.01, "read_timeout": 0.01, "sse_options": {"retry_seconds": 0.01}}
    with log_stream(lines) as server:
        first = FakeAdapter()
        stop = threading.Event()
        runner = sse_runner(server.url, first, sink, state, stop, node="node-a", **options)
        thread = threading.Thread(target=runner.run, daemon=True)
        thread.start()
        wait_for(lambda: len(sink.events) == 8)
        wait_for(lambda: state.exists() and orjson.loads(state.read_bytes())["last_event_id"] == "8")
        stop.set()
        thread.join(10)
        assert not thread.is_alive()

        second, stop = FakeAdapter(), threading.Event()
        runner = sse_runner(server.url, second, sink, state, stop, **options)
        thread = threading.Thread(target=runner.run, daemon=True)
        thread.start()
        wait_for(lambda: server.last_ids[-1] == "8")
        server.lines.append("INFO - later")
        wait_for(lambda: second.seen == ["INFO - later"])
        stop.set()
        thread.join(10)
        assert not thread.is_alive()
    assert first.seen == lines and sink.texts == [*lines, "INFO - later"]


def parse(*chunks: str) -> tuple[list[SseEvent], SseParser]:
    parser = SseParser()
    events = [event for chunk in chunks for event in parser.feed(chunk)]
    return events, parser


def test_parser_follows_the_event_stream_rules() -> None:
    events, parser = parse(
        "data: one\r\ndata:two\r",  # CRLF, no space after the colon, CR split from its LF
        "\n\r\n",
        ": a comment\nid: 7\nevent: ping\ndata\n\n",  # a field without a colon: empty value
        "data: keeps id 7\n\n",
        "id: bad\0id\nretry: 1x\nretry: 250\ndata:  two spaces\rdata: cr only\r\r",
        "id\ndata: empty id resets it\n\n",
        "\n\nid: 9\n\n",  # blank lines and an event with no data dispatch nothing (the id still sticks)
        "data: cut off",  # no blank line yet: not dispatched
    )
    assert events == [
        SseEvent("one\ntwo", "message", ""),
        SseEvent("", "ping", "7"),
        SseEvent("keeps id 7", "message", "7"),
        SseEvent(" two spaces\ncr only", "message", "7"),
        SseEvent("empty id resets it", "message", ""),
    ]
    assert parser.retry_ms == 250 and parser.last_id == "9"
    parser.reset_stream()  # the connection ended: the cut-off event is dropped
    assert parser.feed("\n") == []
