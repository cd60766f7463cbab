"""``keylife ingest datafold`` against a real keylife, and the pieces under it that talk to real
servers: the HTTP and ledger sinks (retries, refusals, conflicts), the key status poller, and
``start_datafold`` as ``keylife serve`` runs it. Tests that read the DataFold samples skip
without them, or fail under CI (``tests/ci.py``)."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import orjson
import pytest

from keylife.cli.config import Config
from keylife.cli.main import main
from keylife.datafold.contract import Line
from keylife.datafold.poll import KeyStatusPoller
from keylife.datafold.runner import run_file
from keylife.datafold.service import start_datafold
from keylife.datafold.sinks import HttpEventSink, LedgerEventSink, SinkRejected, SinkUnavailable
from keylife.journal.reader import iter_entries
from tests.datafold_samples import samples_dir
from tests.server import Live, live_server
from tests.test_datafold_follow import wait_for

NOW = "2026-11-28T10:00:00Z"


def keylife(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([sys.executable, "-m", "keylife.cli", *args], capture_output=True, text=True, check=False)
    if check and result.returncode != 0:
        raise AssertionError(f"keylife {' '.join(args)} exited {result.returncode}: {result.stderr}")
    return result


def journal(live: Live) -> list[dict[str, Any]]:
    return [e.event for e in iter_entries(live.runtime.journal.directory)]


def event(n: int | str, **fields: Any) -> dict[str, Any]:
    return {"id": f"e-{n}", "type": "generated", "key_id": f"k-{n}", "occurred_at": NOW} | fields


@pytest.fixture
def live(tmp_path: Path) -> Iterator[Live]:
    with live_server(tmp_path) as server:
        yield server


@pytest.fixture
def token_file(live: Live, tmp_path: Path) -> Path:
    path = tmp_path / "token"
    path.touch(mode=0o600)  # a secret file: keylife refuses one that others can read
    path.write_text(live.tokens["ingest"])
    return path


# ----- the command --------------------------------------------------------------------------------
def test_ingest_datafold_file_reads_to_the_end_and_twice_adds_nothing(
    live: Live, token_file: Path, tmp_path: Path
) -> None:
    log = tmp_path / "node.log"
    shutil.copy(samples_dir() / "node-log.log", log)
    args = ["ingest", "datafold", "--file", str(log), "--node", "node-a", "--url", live.url]
    first = keylife(*args, "--token-file", str(token_file))
    summary = orjson.loads(first.stdout.splitlines()[-1])
    lines = len(log.read_text().splitlines())
    assert summary["lines"] == lines and summary["rejected"] == 0 and summary["accepted"] > 0
    assert summary["submitted"] == summary["accepted"] + summary["duplicate"]
    journaled = [e for e in journal(live) if not e["id"].startswith("keylife-")]
    assert len(journaled) == summary["accepted"]
    assert all(e["id"].startswith("df-") for e in journaled)

    again = orjson.loads(keylife(*args, "--token-file", str(token_file)).stdout.splitlines()[-1])
    assert again["accepted"] == 0 and again["duplicate"] == summary["submitted"]  # ids dedupe
    assert [e for e in journal(live) if not e["id"].startswith("keylife-")] == journaled

    state = ["--state-dir", str(tmp_path / "state"), "--token-file", str(token_file)]
    with_state = orjson.loads(keylife(*args, *state).stdout.splitlines()[-1])
    assert with_state["lines"] == lines and with_state["accepted"] == 0
    resumed = orjson.loads(keylife(*args, *state).stdout.splitlines()[-1])
    assert resumed["lines"] == 0 and resumed["submitted"] == 0  # the saved position is the end


def test_the_ndjson_form_still_works_and_datafold_options_are_checked(
    live: Live, token_file: Path, tmp_path: Path
) -> None:
    events = tmp_path / "events.ndjson"
    events.write_bytes(b"\n".join(orjson.dumps(event(n)) for n in range(3)))
    posted = keylife("ingest", str(events), "--url", live.url, "--token-file", str(token_file))
    assert orjson.loads(posted.stdout) == {"accepted": 3, "duplicate": 0}
    misuse = [
        ("ingest", str(events), "--file", str(events)),  # a datafold option without 'datafold'
        ("ingest", "datafold"),  # no source
        ("ingest", "datafold", "--file", "x", "--sse", "http://n/api/logs/stream"),
        ("ingest", "datafold", "--sse", "http://n/api/logs/stream", "--follow"),
        ("ingest", "datafold", "--poll", "http://n"),  # no --client
    ]
    for args in misuse:
        assert main([*args, "--url", live.url, "--token-file", str(token_file)]) == 2, args
    missing = keylife(
        "ingest", "datafold", "--file", str(tmp_path / "nope.log"), "--token-file", str(token_file), check=False
    )
    assert missing.returncode == 1 and "no such file" in missing.stderr


def test_ingest_datafold_poll_runs_until_sigterm(live: Live, token_file: Path, tmp_path: Path) -> None:
    with node_api() as node:
        proc = subprocess.Popen(
            [sys.executable, "-m", "keylife.cli", "ingest", "datafold", "--poll", node.url, "--client", "client-7f3a",
             "--client", "client-0c1d", "--node", "node-a", "--interval", "0.1", "--url", live.url,
             "--token-file", str(token_file), "--state-dir", str(tmp_path / "state")],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            wait_for(lambda: len(node.asked) >= 4, timeout=20)
        finally:
            proc.send_signal(signal.SIGTERM)
            out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    summary = orjson.loads(out.splitlines()[-1])
    assert summary["lines"] >= 4 and summary["source_errors"] == summary["sink_failures"] == 0, err


# ----- the sinks ----------------------------------------------------------------------------------
def test_http_sink_dedupes_names_refused_events_and_resends_around_conflicts(live: Live) -> None:
    sink = HttpEventSink(live.url, live.tokens["ingest"], max_batch_lines=2)  # 3 events: 2 requests
    sink.submit([event(1), event(2), event(3)])
    sink.submit([event(1), event(2), event(3)])
    assert sink.stats == {"accepted": 3, "duplicate": 3, "conflict": 0}
    sink.max_batch_lines = 1000
    with pytest.raises(SinkRejected) as refused:
        sink.submit([event(4), event(5, key_id=None), event(6), event(7, type="nonsense")])
    assert refused.value.indexes == [1, 3] and refused.value.status == 422  # nothing of it written
    sink.submit([event(8), event(1, key_id="other"), event(9)])  # e-1 already means something else
    assert sink.stats == {"accepted": 5, "duplicate": 3, "conflict": 1}
    assert [e["id"] for e in journal(live)] == ["e-1", "e-2", "e-3", "e-8", "e-9"]
    with pytest.raises(SinkRejected) as unauthorised:
        HttpEventSink(live.url, "kl_wrong").submit([event(10)])
    assert unauthorised.value.status == 401 and unauthorised.value.indexes == []


def test_http_sink_retries_429_and_5xx_then_gives_up(tmp_path: Path) -> None:
    answers = [(503, {}), (429, {"Retry-After": "0"}), (200, {})]
    with flaky_keylife(answers) as server:
        sink = HttpEventSink(server.url, "t", retry_seconds=5)
        sink.submit([event(1)])
        assert sink.stats["accepted"] == 1 and len(server.bodies) == 3
        assert server.bodies[0] == orjson.dumps(event(1))
    with flaky_keylife([(503, {})] * 100) as server, pytest.raises(SinkUnavailable):
        HttpEventSink(server.url, "t", retry_seconds=0.3).submit([event(1)])
    with pytest.raises(SinkUnavailable):  # nothing listening at all
        HttpEventSink(f"http://127.0.0.1:{server.server_address[1]}", "t", retry_seconds=0.3).submit([event(1)])


def test_ledger_sink_validates_like_the_api_and_resends_around_conflicts(live: Live) -> None:
    sink = LedgerEventSink(live.runtime.ledger)
    sink.submit([event(1), event(2)])
    sink.submit([event(2)])
    with pytest.raises(SinkRejected) as refused:
        sink.submit([event(3), event(4, type="admin_action"), event(5, occurred_at="2999-01-01T00:00:00Z")])
    assert refused.value.indexes == [1, 2]
    sink.submit([event(1, key_id="other"), event(6)])
    assert sink.stats == {"accepted": 3, "duplicate": 1, "conflict": 1}
    assert [e["id"] for e in journal(live)] == ["e-1", "e-2", "e-6"]


class LineEvents:
    """A stand-in adapter: each line ``name`` is a ``generated`` event for key ``name``; a line
    ``bad`` makes an event keylife refuses."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    def feed(self, line: Line) -> list[dict[str, Any]]:
        self.seen.append(line.text)
        return [event(line.text, node=line.node, key_id=None if line.text == "bad" else f"k-{line.text}")]

    def flush(self, upto: Any = None) -> list[dict[str, Any]]:
        return []

    def safe_position(self, source: str) -> int | None:
        return None

    def status(
        self, answer: dict[str, Any], client_id: str, node: str | None, http_status: int | None = None
    ) -> list[dict[str, Any]]:
        return [event(f"status-{client_id}", node=node)]


def test_a_refused_event_is_dropped_and_counted_and_the_rest_goes_on(live: Live, tmp_path: Path) -> None:
    log = tmp_path / "node.log"
    log.write_text("a\nbad\nb\n")
    counters = run_file(log, LineEvents(), LedgerEventSink(live.runtime.ledger), tmp_path / "s.json", False)
    assert (counters.lines, counters.submitted, counters.rejected, counters.position) == (3, 2, 1, 8)
    assert [e["id"] for e in journal(live)] == ["e-a", "e-b"]


# ----- serve's service and the poller -------------------------------------------------------------
def test_start_datafold_runs_the_configured_sources_into_the_ledger(live: Live, tmp_path: Path) -> None:
    log = tmp_path / "node.log"
    log.write_text("a\nb\n")
    with node_api() as node:
        data = live.runtime.config.model_dump() | {
            "datafold": {
                "files": [{"path": str(log), "node": "node-a"}],
                "poll": [{"url": node.url, "node": "node-b", "clients": ["client-7f3a"], "interval_seconds": 0.05}],
                "state_dir": str(tmp_path / "df"),
            }
        }
        config = Config.model_validate(data)
        service = start_datafold(
            config, live.runtime.ledger, adapter_factory=lambda *_: LineEvents(), runner_options={"batch_seconds": 0.01}
        )
        try:
            wait_for(lambda: len(journal(live)) == 3)
            with open(log, "a") as handle:
                handle.write("c\n")
            wait_for(lambda: len(journal(live)) == 4)
        finally:
            service.stop()
    assert sorted((e["id"], e.get("node")) for e in journal(live)) == [
        ("e-a", "node-a"), ("e-b", "node-a"), ("e-c", "node-a"), ("e-status-client-7f3a", "node-b")
    ]  # fmt: skip
    counters = service.counters()
    assert counters[f"file:{log}"].lines == 3 and counters[f"poll:{node.url}"].lines >= 1
    assert all(not t.is_alive() for t in service.threads)
    assert list((tmp_path / "df").glob("file-node.log-*.json"))


def test_the_poller_hands_over_every_answer_and_counts_what_is_not_one() -> None:
    got: list[tuple[str, dict[str, Any]]] = []
    with node_api() as node:
        poller = KeyStatusPoller(node.url, ["client-7f3a", "client-0c1d", "nobody", "boom", "html"],
                                 lambda answer, client, _status: got.append((client, answer)))  # fmt: skip
        assert poller.poll_once() == 3
        poller.callback = lambda answer, client, _status: 1 / 0  # a failing callback is counted, not raised
        assert poller.poll_once() == 0
        poller.close()
    assert [client for client, _ in got] == ["client-7f3a", "client-0c1d", "nobody"]
    assert got[2][1]["success"] is False  # "no key for this client" is an answer too
    assert poller.stats == {"rounds": 2, "answers": 3, "errors": 2 + 5, "refusals": 0}
    assert node.asked[:3] == ["client-7f3a", "client-0c1d", "nobody"]


# ----- in-test servers ----------------------------------------------------------------------------
class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, handler: type[BaseHTTPRequestHandler]) -> None:
        super().__init__(("127.0.0.1", 0), handler)
        self.asked: list[str] = []
        self.bodies: list[bytes] = []
        self.answers: list[tuple[int, dict[str, str]]] = []
        self.samples = Path()  # the DataFold samples directory, for the node API

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


@contextmanager
def _serving(server: _Server) -> Iterator[_Server]:
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


class _Quiet(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, *args: Any) -> None:
        pass

    def answer(self, status: int, body: bytes, kind: str = "application/json", headers: dict[str, str] | None = None):
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)


class _NodeApi(_Quiet):
    """A node's ``GET /api/crypto/keys/status/{client_id}``, answering from the samples."""

    def do_GET(self) -> None:
        client = self.path.rsplit("/", 1)[-1]
        self.server.asked.append(client)
        samples = json.loads((self.server.samples / "key-status.json").read_text())
        known = {s["data"]["client_id"]: s for s in samples if s.get("success")}
        if client in known:
            self.answer(200, orjson.dumps(known[client]))
        elif client == "boom":
            self.answer(500, b'{"success": false}')
        elif client == "html":
            self.answer(200, b"<html>proxy error</html>", "text/html")
        else:
            missing = {"success": False, "error": {"code": "CLIENT_NOT_FOUND", "message": "No key", "details": {}}}
            self.answer(404, orjson.dumps(missing))


class _FlakyKeylife(_Quiet):
    """``POST /v1/events`` answering from a script of (status, headers), then 200."""

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.bodies.append(body)
        status, headers = self.server.answers.pop(0) if self.server.answers else (200, {})
        lines = len(body.split(b"\n"))
        payload = {"accepted": lines, "duplicate": 0} if status == 200 else {"detail": "busy"}
        self.answer(status, orjson.dumps(payload), headers=headers)


@contextmanager
def node_api() -> Iterator[_Server]:
    samples = samples_dir()  # here, not in the handler's thread, where a skip or failure would be lost
    with _serving(_Server(_NodeApi)) as server:
        server.samples = samples
        yield server


@contextmanager
def flaky_keylife(answers: list[tuple[int, dict[str, str]]]) -> Iterator[_Server]:
    server = _Server(_FlakyKeylife)
    server.answers = list(answers)
    with _serving(server) as running:
        yield running
