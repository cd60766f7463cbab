"""The listener under slow, idle and hostile clients, against real servers (issue 10, items 3, 9 and 15).

A ``keylife serve`` subprocess where the process matters (descriptor limits, its own log lines),
the in-process server of tests/server.py where a test reads the server's own sockets.
"""

from __future__ import annotations

import json
import re
import resource
import selectors
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx
import orjson
import pytest
import yaml
from fastapi import FastAPI
from pydantic import BaseModel

from keylife.api.auth import hash_token, new_token
from keylife.api.bodies import no_body_parameters
from keylife.journal.reader import iter_entries
from tests.server import live_server, start_server
from tests.server_process import terminate
from tests.waiting import wait_until

NOW = "2026-11-28T10:00:00Z"
RFC3339_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")


def event(n: int) -> bytes:
    return orjson.dumps({"id": f"g-{n}", "type": "generated", "key_id": f"k-{n}", "occurred_at": NOW})


def write_config(tmp: Path, token: str, **sections: dict) -> Path:
    config = {
        "data_dir": str(tmp / "data"),
        "listen": {"host": "127.0.0.1", "port": 0},
        "journal": {"origin": "test.keylife/guard"},
        "api": {"tokens": [{"name": "ops", "sha256": hash_token(token), "scopes": ["ingest", "read", "admin"]}]},
        "logging": {"level": "INFO", "format": "json"},
    }
    for name, values in sections.items():
        config[name] = config.get(name, {}) | values
    path = tmp / "keylife.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@contextmanager
def serving(tmp: Path, preexec: Callable[[], None] | None = None, **sections: dict) -> Iterator[tuple[str, str, Path]]:
    """(url, token, stderr path) of a ``keylife serve`` subprocess, stopped on exit."""
    token = new_token()
    config = write_config(tmp, token, **sections)
    ready = tmp / "ready.json"
    if preexec is None:
        proc, url = start_server(config, ready)
    else:  # start_server's way, with a resource limit set in the child before exec
        stderr = (tmp / "ready.stderr").open("ab")
        proc = subprocess.Popen(
            [sys.executable, "-m", "keylife.cli", "serve", "--config", str(config), "--ready-file", str(ready)],
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            preexec_fn=preexec,
        )
        stderr.close()
        wait_until(lambda: ready.exists() or proc.poll() is not None, 30, "the server's ready file")
        assert proc.poll() is None, (tmp / "ready.stderr").read_text()[-3000:]
        url = json.loads(ready.read_text())["url"]
        wait_until(lambda: _answers(f"{url}/healthz"), 30, "the server answering")
    try:
        yield url, token, tmp / "ready.stderr"
    finally:
        terminate(proc, 20)


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def connect(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=30)


def until_closed(sock: socket.socket, limit: float) -> tuple[bytes, float]:
    """Everything the server sends until it closes (or ``limit`` s pass), and when it closed."""
    started, got = time.monotonic(), b""
    sock.settimeout(0.2)
    while time.monotonic() - started < limit:
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            continue
        except ConnectionResetError:
            break
        if not chunk:
            break
        got += chunk
    return got, time.monotonic() - started


def closed_after(socks: list[socket.socket], since: float, limit: float) -> list[float | None]:
    """When (seconds after ``since``) the server closed each socket, watching all at once; None: open."""
    closed: list[float | None] = [None] * len(socks)
    with selectors.DefaultSelector() as watch:
        for n, sock in enumerate(socks):
            watch.register(sock, selectors.EVENT_READ, n)
        while watch.get_map() and time.monotonic() - since < limit:
            for key, _ in watch.select(0.1):
                try:
                    data = key.fileobj.recv(65536)  # type: ignore[union-attr]
                except ConnectionResetError:
                    data = b""
                if not data:
                    closed[key.data] = time.monotonic() - since
                    watch.unregister(key.fileobj)
    return closed


def trickle(url: str, head: bytes, body: bytes, every: float, limit: float) -> tuple[bytes, float]:
    """Send ``head`` then ``body`` one byte every ``every`` s (a slowloris when ``head`` is empty and the
    headers are in ``body``), until the server closes; its answer and how long it let us go on."""
    sock = connect(url)
    try:
        sock.sendall(head)
        started = time.monotonic()
        got = b""
        sock.settimeout(every)
        for byte in body:
            if time.monotonic() - started > limit:
                break
            try:
                sock.sendall(bytes([byte]))
                chunk = sock.recv(65536)
            except TimeoutError:
                continue
            except (BrokenPipeError, ConnectionResetError):
                break
            if not chunk:
                break
            got += chunk
        more, _ = until_closed(sock, 2)
        return got + more, time.monotonic() - started
    finally:
        sock.close()


def metric(text: str, name: str) -> float:
    line = next((line for line in text.splitlines() if line.startswith(name + " ")), None)
    return float(line.split()[1]) if line else 0.0


def test_idle_slowloris_and_trickled_bodies_are_cut_off_while_others_are_served(tmp_path: Path) -> None:
    listen = {"idle_timeout_seconds": 1.0, "header_timeout_seconds": 1.5, "body_timeout_seconds": 2.0}
    with serving(tmp_path, listen=listen) as (url, token, stderr), ExitStack() as stack:
        opened = time.monotonic()
        idle = [connect(url) for _ in range(30)]
        for sock in idle:
            stack.callback(sock.close)
        headers = f"POST /v1/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
        slowloris = (headers + "Content-Type: application/x-ndjson\r\n" + "X-Pad: y\r\n" * 200).encode()
        trickled = (headers + "Content-Type: application/x-ndjson\r\nContent-Length: 1000\r\n\r\n").encode()
        with ThreadPoolExecutor(3) as pool:
            loris = pool.submit(trickle, url, b"", slowloris, 0.05, 20)
            body = pool.submit(trickle, url, trickled, event(1) + b"\n" + b" " * 900, 0.05, 20)
            closed = pool.submit(closed_after, idle, opened, 20)
            with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}) as client:
                for n in range(2, 6):  # meanwhile, a normal client is served as usual
                    r = client.post("/v1/events", content=event(n), headers={"Content-Type": "application/json"})
                    assert r.status_code == 200, r.text
                    time.sleep(0.2)
            answers = closed.result()
            loris_answer, loris_took = loris.result()
            body_answer, body_took = body.result()
        assert all(took is not None and 0.9 <= took <= 3.5 for took in answers), answers
        assert loris_answer.startswith(b"HTTP/1.1 408 Request Timeout\r\n"), loris_answer[:200]
        assert b"the request headers did not arrive within 1.5 s" in loris_answer
        assert 1.3 <= loris_took <= 4.5, loris_took  # its bytes kept coming: the deadline did not move
        assert body_answer.startswith(b"HTTP/1.1 408 Request Timeout\r\n"), body_answer[:200]
        assert b"the request body did not arrive within 2 s" in body_answer
        assert 1.8 <= body_took <= 5.0, body_took
        text = httpx.get(f"{url}/metrics").text
        assert metric(text, 'keylife_http_connections_closed_total{reason="idle_timeout"}') >= 30
        assert metric(text, 'keylife_http_connections_closed_total{reason="header_timeout"}') == 1
        assert metric(text, 'keylife_http_connections_closed_total{reason="body_timeout"}') == 1
        lines = [json.loads(line) for line in stderr.read_text().splitlines() if line.startswith("{")]
        assert not [line for line in lines if line["level"] == "ERROR"], lines  # a cut-off client is no error
        assert lines and all(RFC3339_UTC.match(line["time"]) for line in lines), lines[:3]


def test_an_unauthenticated_huge_body_is_refused_before_the_server_reads_it(tmp_path: Path) -> None:
    with live_server(tmp_path) as live:
        url = live.url
        for path, auth in [
            ("/v1/keys/k-1/commands", ""),  # FastAPI used to read and parse 200 MB before the 401
            ("/v1/forwarder/quarantined", ""),
            ("/v1/events", "Authorization: Bearer kl_wrong\r\n"),
            ("/v1/keys/k-1/commands", f"Authorization: Bearer {live.tokens['admin']}\r\n"),  # authorized: too large
        ]:
            sock = connect(url)
            try:
                sock.sendall(
                    f"POST {path} HTTP/1.1\r\nHost: x\r\n{auth}Content-Type: application/json\r\n"
                    "Content-Length: 200000000\r\n\r\n".encode()
                )
                started = time.monotonic()
                sock.settimeout(5)
                answer = sock.recv(65536)  # nothing of the body sent yet: the answer cannot wait for it
                took = time.monotonic() - started
                status = 413 if "commands" in path and auth else 401
                assert answer.startswith(f"HTTP/1.1 {status} ".encode()), (path, answer[:300])
                assert took < 2, took
                sent = 0
                with pytest.raises(OSError):  # the server drains a little of the rest, then closes
                    chunk = b"x" * 65536
                    while sent < 200_000_000:
                        sock.sendall(chunk)
                        sent += len(chunk)
                assert sent < 32 * 2**20, f"{path}: the server took {sent} bytes of a body it had refused"
            finally:
                sock.close()
        text = httpx.get(f"{url}/metrics").text
        assert metric(text, 'keylife_http_connections_closed_total{reason="unread_body"}') == 4


def test_a_refused_small_body_leaves_the_connection_usable(tmp_path: Path) -> None:
    """The unread rest of a refused body is drained, not answered with a reset: the client reads its 401
    and reuses the connection."""
    with live_server(tmp_path) as live, httpx.Client(base_url=live.url) as client:
        body = b'{"command": "revoke", "reason": "' + b"x" * 50_000 + b'"}'
        assert client.post("/v1/keys/k-1/commands", content=body).status_code == 401
        good = client.post(
            "/v1/keys/k-1/commands",
            json={"command": "revoke", "reason": "x"},
            headers={"Authorization": f"Bearer {live.tokens['admin']}"},
        )
        assert good.status_code == 409 and "does not exist" in good.json()["detail"]
        assert len(live.server.server_state.connections) == 1  # one connection served both


class Thing(BaseModel):
    name: str


def test_every_body_is_read_after_auth_and_under_a_cap(tmp_path: Path) -> None:
    eager = FastAPI()

    @eager.post("/things")
    async def post_thing(thing: Thing) -> dict:
        return {}

    with pytest.raises(RuntimeError, match=r"\['POST'\] /things"):
        no_body_parameters(eager)  # create_app runs this check on its own routes
    with live_server(tmp_path, api={"max_body_bytes": 4096}) as live, live.client("forward") as c:
        chunked = c.post("/v1/forwarder/quarantined", content=iter([b"{" + b" " * 5000 + b"}"]))
        assert chunked.status_code == 413 and "exceeds the limit of 4096" in chunked.json()["detail"]
        declared = c.post("/v1/forwarder/quarantined", content=b" " * 5000)
        assert declared.status_code == 413 and "body is 5000 bytes; the limit is 4096" in declared.json()["detail"]
    with live_server(tmp_path / "b") as live, live.client("admin") as c:
        bad = c.post("/v1/keys/k-1/commands", json={"command": "explode", "reason": "x"})
        assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "command"
        paths = c.get("/openapi.json").json()["paths"]
        schema = paths["/v1/keys/{key_id}/commands"]["post"]["requestBody"]["content"]["application/json"]["schema"]
        assert set(schema["properties"]) == {"command", "reason", "id", "correlation_id"}


def _nofile(limit: int) -> Callable[[], None]:
    return lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))


@pytest.mark.parametrize("explicit_cap", [False, True], ids=["auto-cap", "cap-above-the-fd-limit"])
def test_at_the_descriptor_limit_the_server_survives_and_serves_again(tmp_path: Path, explicit_cap: bool) -> None:
    """``listen.max_connections`` unset: the cap is fitted under RLIMIT_NOFILE and idle connections make
    room for a new client at once. Set above the limit: accept() fails with EMFILE, which must neither
    spin nor flood the log, and once idle connections time out or go away the server serves again."""
    listen = {"idle_timeout_seconds": 30.0 if not explicit_cap else 2.0}
    if explicit_cap:
        listen["max_connections"] = 1000
    journal = {"checkpoint_interval_seconds": 3600, "checkpoint_every": 100_000}  # no file opened meanwhile
    with serving(tmp_path, preexec=_nofile(128), listen=listen, journal=journal) as (url, token, stderr):
        auth = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        sockets = [connect(url) for _ in range(200)]  # more than 128 descriptors can hold
        try:
            started = time.monotonic()
            deadline = started + 20
            while True:  # a normal client: at once with the auto cap, after idle timeouts at the fd limit
                try:
                    r = httpx.post(f"{url}/v1/events", content=event(1), headers=auth, timeout=3)
                    if r.status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, "never served while idle connections were held"
            if not explicit_cap:
                assert time.monotonic() - started < 3  # made room by closing the longest-idle connection
        finally:
            for sock in sockets:
                sock.close()
        wait_until(lambda: _answers(f"{url}/healthz"), 10, "the server answering after the clients left")
        r = httpx.post(f"{url}/v1/events", content=event(2), headers=auth, timeout=10)
        assert r.status_code == 200, r.text
        text = httpx.get(f"{url}/metrics", timeout=10).text
        reason = "idle_timeout" if explicit_cap else "evicted"
        assert metric(text, f'keylife_http_connections_closed_total{{reason="{reason}"}}') >= 1
        lines = stderr.read_text().splitlines()
        assert len(lines) < 100, "\n".join(lines[-20:])  # rate-limited: not one line per failed accept
        if explicit_cap:
            assert any("out of system resource" in line for line in lines)  # accept() did hit EMFILE


def test_keep_alive_requests_are_not_delayed_by_nagle(tmp_path: Path) -> None:
    with live_server(tmp_path) as live, live.client() as client:
        took = []
        for n in range(12):
            started = time.perf_counter()
            r = client.post("/v1/events", content=event(n), headers={"Content-Type": "application/json"})
            took.append(time.perf_counter() - started)
            assert r.status_code == 200
        # before: every request after the first waited ~40 ms for a delayed ACK
        assert statistics.median(took[1:]) < 0.020, [round(t * 1000, 1) for t in took]
        (connection,) = live.server.server_state.connections
        sock = connection.transport.get_extra_info("socket")
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0


def _auth_failure_clients(live) -> list[str]:
    return [
        e.event["attributes"]["client"]
        for e in iter_entries(live.runtime.journal.directory)
        if e.event["type"] == "auth_failure"
    ]


@pytest.mark.parametrize(("trusted", "recorded"), [([], "127.0.0.1"), (["127.0.0.1"], "6.6.6.6")])
def test_forwarded_for_is_believed_only_from_configured_proxies(
    tmp_path: Path, trusted: list[str], recorded: str
) -> None:
    with live_server(tmp_path, listen={"trusted_proxies": trusted}) as live, live.client(None) as anon:
        r = anon.get("/v1/keys", headers={"Authorization": "Bearer kl_wrong", "X-Forwarded-For": "6.6.6.6"})
        assert r.status_code == 401
        wait_until(lambda: _auth_failure_clients(live), 10, "the auth failure journaled")
        assert _auth_failure_clients(live) == [recorded]


def test_trusted_proxies_must_be_addresses(tmp_path: Path) -> None:
    from keylife.cli.config import ConfigError, load

    with pytest.raises(ConfigError, match=r"listen.trusted_proxies: .*'\*' is not an IP address or network"):
        load(None, env={"KEYLIFE_LISTEN__TRUSTED_PROXIES": "['*']"})
    assert load(None, env={"KEYLIFE_LISTEN__TRUSTED_PROXIES": "['10.0.0.0/8', '::1']"}).listen.trusted_proxies
