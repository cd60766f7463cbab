"""`keylife ingest` and `keys list/show --url` against real servers, as an operator runs them.

* a busy server (429/503 with Retry-After) is waited for and retried, a bounded number of times;
* a progress bar appears on a terminal (a pty) and never in piped output;
* `keys list/show --url` answer from a running server's API what the local registry says.
"""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import orjson
import pytest
import yaml

from tests.server import Live, live_server

KEYLIFE = Path(sys.executable).with_name("keylife")
FORWARDED = ("authorization", "content-type")
NOW = "2026-11-28T10:00:00Z"


def keylife(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYLIFE_")}
    return subprocess.run([str(KEYLIFE), *args], capture_output=True, text=True, timeout=timeout, env=env, check=False)


def generated(n: int, prefix: str = "k") -> dict:
    return {"id": f"g-{prefix}{n}", "type": "generated", "key_id": f"{prefix}{n:05d}", "occurred_at": NOW}


def write_events(path: Path, events: list[dict]) -> Path:
    path.write_bytes(b"\n".join(orjson.dumps(e) for e in events) + b"\n")
    return path


def secret(path: Path, token: str) -> Path:
    path.touch(mode=0o600)
    path.write_text(token + "\n")
    return path


@pytest.fixture
def live(tmp_path: Path) -> Iterator[Live]:
    with live_server(tmp_path) as server:
        yield server


# ----- a busy server ----------------------------------------------------------------------------------------
class BusyProxy:
    """Answers the first ``busy`` POSTs with ``status`` and ``Retry-After``, then passes them to ``upstream``."""

    def __init__(self, upstream: str, busy: int, status: int = 503, retry_after: str = "1") -> None:
        self.upstream, self.busy, self.status, self.retry_after = upstream, busy, status, retry_after
        self.arrivals: list[float] = []
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *_: object) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                proxy.arrivals.append(time.monotonic())
                if len(proxy.arrivals) <= proxy.busy:
                    payload = orjson.dumps({"type": "about:blank", "title": "Busy", "detail": "journal is catching up"})
                    status, headers = proxy.status, {"Retry-After": proxy.retry_after}
                    content_type = "application/problem+json"
                else:
                    answer = httpx.post(
                        proxy.upstream + self.path,
                        content=body,
                        headers={k: v for k, v in self.headers.items() if k.lower() in FORWARDED},
                        timeout=30,
                    )
                    payload, status, headers = answer.content, answer.status_code, {}
                    content_type = answer.headers["content-type"]
                self.send_response(status)
                for name, value in {**headers, "Content-Type": content_type}.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> BusyProxy:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_ingest_waits_out_503_and_retry_after_then_delivers(live: Live, tmp_path: Path) -> None:
    events = write_events(tmp_path / "events.ndjson", [generated(n) for n in range(3)])
    token = secret(tmp_path / "token", live.tokens["ingest"])
    with BusyProxy(live.url, busy=2) as proxy:
        result = keylife("ingest", str(events), "--url", proxy.url, "--token-file", str(token))
    assert result.returncode == 0, result.stderr
    assert orjson.loads(result.stdout) == {"accepted": 3, "duplicate": 0}
    assert len(proxy.arrivals) == 3
    gaps = [b - a for a, b in zip(proxy.arrivals, proxy.arrivals[1:], strict=False)]
    assert all(gap >= 1.0 for gap in gaps), gaps  # each resend waited at least Retry-After
    with live.client("read") as reader:
        assert len(reader.get("/v1/keys").json()["items"]) == 3  # delivered once, through the proxy


def test_ingest_honours_429_too(live: Live, tmp_path: Path) -> None:
    events = write_events(tmp_path / "events.ndjson", [generated(1)])
    token = secret(tmp_path / "token", live.tokens["ingest"])
    with BusyProxy(live.url, busy=1, status=429, retry_after="1") as proxy:
        result = keylife("ingest", str(events), "--url", proxy.url, "--token-file", str(token))
    assert result.returncode == 0, result.stderr
    assert len(proxy.arrivals) == 2 and proxy.arrivals[1] - proxy.arrivals[0] >= 1.0


def test_ingest_gives_up_after_the_bound_with_one_line(live: Live, tmp_path: Path) -> None:
    events = write_events(tmp_path / "events.ndjson", [generated(n) for n in range(2)])
    token = secret(tmp_path / "token", live.tokens["ingest"])
    with BusyProxy(live.url, busy=1000) as proxy:
        started = time.monotonic()
        result = keylife("ingest", str(events), "--url", proxy.url, "--token-file", str(token), "--retries", "2")
        took = time.monotonic() - started
    assert result.returncode == 2 and result.stdout == ""
    assert "Traceback" not in result.stderr and len(result.stderr.splitlines()) == 1, result.stderr
    assert "still HTTP 503 after 2 retries" in result.stderr and "line 1" in result.stderr
    assert len(proxy.arrivals) == 3  # the first try and two retries, no more
    assert took >= 2.0


# ----- progress on a terminal, and only there --------------------------------------------------------------
def run_on_a_terminal(*args: str, timeout: float = 60) -> tuple[int, str, str]:
    """Run keylife with stderr on a pty (a terminal) and stdout on a pipe: (exit code, stdout, stderr)."""
    master, slave = pty.openpty()
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYLIFE_")}
    env |= {"TERM": "xterm-256color", "COLUMNS": "120"}
    env.pop("NO_COLOR", None)
    proc = subprocess.Popen([str(KEYLIFE), *args], stdout=subprocess.PIPE, stderr=slave, env=env)
    os.close(slave)
    seen = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.5)
        if ready:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            seen += chunk
        elif proc.poll() is not None:
            break
    os.close(master)
    assert proc.stdout is not None
    out = proc.stdout.read().decode()
    return proc.wait(timeout=timeout), out, seen.decode(errors="replace")


def test_ingest_shows_progress_on_a_terminal(live: Live, tmp_path: Path) -> None:
    events = write_events(tmp_path / "events.ndjson", [generated(n) for n in range(50)])
    token = secret(tmp_path / "token", live.tokens["ingest"])
    code, out, err = run_on_a_terminal("ingest", str(events), "--url", live.url, "--token-file", str(token))
    assert code == 0, err
    assert orjson.loads(out) == {"accepted": 50, "duplicate": 0}  # stdout stays machine-readable
    assert "ingest events.ndjson" in err and "━" in err and "50 events" in err, err


def test_ingest_output_stays_clean_when_not_a_terminal(live: Live, tmp_path: Path) -> None:
    events = write_events(tmp_path / "events.ndjson", [generated(n) for n in range(50)])
    token = secret(tmp_path / "token", live.tokens["ingest"])
    result = keylife("ingest", str(events), "--url", live.url, "--token-file", str(token))
    assert result.returncode == 0 and result.stderr == ""
    assert orjson.loads(result.stdout) == {"accepted": 50, "duplicate": 0}


def test_registry_rebuild_shows_progress_on_a_terminal_only(tmp_path: Path) -> None:
    with live_server(tmp_path) as live, live.client("ingest") as client:
        body = b"\n".join(orjson.dumps(generated(n)) for n in range(2500))
        assert client.post("/v1/events", content=body, headers={"Content-Type": "application/x-ndjson"}).is_success
        origin = live.runtime.config.journal.origin
    config = tmp_path / "keylife.yaml"
    config.write_text(yaml.safe_dump({"data_dir": str(tmp_path / "data"), "journal": {"origin": origin}}))
    out_tty = tmp_path / "tty.sqlite"
    code, out, err = run_on_a_terminal("registry", "rebuild", "--config", str(config), "--output", str(out_tty))
    assert code == 0, err
    assert json.loads(out)["stats"]["entries"] == 2500
    assert "rebuild" in err and "2500/2500" in err, err
    piped = keylife("registry", "rebuild", "--config", str(config), "--output", str(tmp_path / "piped.sqlite"))
    assert piped.returncode == 0 and piped.stderr == ""
    assert json.loads(piped.stdout)["stats"]["entries"] == 2500


# ----- keys list / show --url -------------------------------------------------------------------------------
def test_keys_list_and_show_read_a_running_server(live: Live, tmp_path: Path) -> None:
    events = [generated(n) for n in range(1005)]
    events += [
        {"id": f"a{n}", "type": "activated", "key_id": f"k{n:05d}", "occurred_at": NOW} for n in range(0, 1005, 2)
    ]
    with live.client("ingest") as client:
        body = b"\n".join(orjson.dumps(e) for e in events)
        assert client.post("/v1/events", content=body, headers={"Content-Type": "application/x-ndjson"}).is_success
    token = secret(tmp_path / "read.token", live.tokens["read"])
    data_dir = str(live.runtime.config.data_dir)
    remote = ["--url", live.url, "--token-file", str(token)]

    listed = keylife("keys", "list", "--state", "active", "--limit", "1003", *remote)  # two API pages
    assert listed.returncode == 0, listed.stderr
    remote_items = [json.loads(line) for line in listed.stdout.splitlines()]
    assert len(remote_items) == 503 and all(item["state"] == "active" for item in remote_items)
    local = keylife("keys", "list", "--state", "active", "--limit", "1003", "--data-dir", data_dir)
    assert remote_items == [json.loads(line) for line in local.stdout.splitlines()]  # the same answer, both ways

    paged = keylife("keys", "list", "--limit", "1003", *remote)
    assert [json.loads(line)["key_id"] for line in paged.stdout.splitlines()] == [f"k{n:05d}" for n in range(1003)]
    after = keylife("keys", "list", "--after", "k01002", *remote)
    assert [json.loads(line)["key_id"] for line in after.stdout.splitlines()] == ["k01003", "k01004"]

    shown = keylife("keys", "show", "k00002", *remote)
    assert shown.returncode == 0, shown.stderr
    key = json.loads(shown.stdout)
    assert key["key_id"] == "k00002" and key["state"] == "active"
    assert [h["event"]["type"] for h in key["history"]] == ["generated", "activated"]

    missing = keylife("keys", "show", "nope", *remote)
    assert missing.returncode == 1 and "'nope' is not in the registry" in missing.stderr


def test_keys_url_with_a_token_lacking_read_is_one_line(live: Live, tmp_path: Path) -> None:
    token = secret(tmp_path / "ingest.token", live.tokens["ingest"])
    result = keylife("keys", "list", "--url", live.url, "--token-file", str(token))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    expected = f"keylife: {live.url}/v1/keys: HTTP 403 token 'ingest' lacks the 'read' scope; the viewer role has it"
    assert result.stderr.splitlines() == [expected]
