"""``keylife witness serve``: the witness's HTTP side (C2SP tlog-witness) on the standard library.

* ``POST <prefix>/add-checkpoint``: ``service.Witness.add_checkpoint``;
* ``GET /metrics``: Prometheus text (requests by origin and result, latest size per log);
* ``GET <prefix>/checkpoint/<origin>``: the latest checkpoint of a log with a fresh cosignature (read-only,
  for monitors and auditors: what the witness vouches for now, fetched without asking the log).

There is no authentication beyond the log's signature on the checkpoint (tlog-witness,
*Introduction*). It binds loopback unless told otherwise; with ``--tls-cert``/``--tls-key`` it serves HTTPS.
HTTP/1.1 keep-alive is supported, as the spec asks.
"""

from __future__ import annotations

import logging
import socket
import ssl
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from keylife.witness.protocol import MAX_BODY
from keylife.witness.service import Reply, Witness

log = logging.getLogger("keylife.witness")

BODY_TIMEOUT = 10.0  # seconds a client may take to send a request


class WitnessHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # the listen backlog (the stdlib's 5 refuses a burst of logs)

    def __init__(
        self, address: tuple[str, int], witness: Witness, prefix: str = "", tls: ssl.SSLContext | None = None
    ) -> None:
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        super().__init__(address, _Handler)
        self.witness = witness
        self.prefix = prefix.rstrip("/")
        self.tls = tls

    def finish_request(self, request: Any, client_address: Any) -> None:
        """With TLS, the handshake runs here, in the connection's own thread (a slow client holds
        only its thread, never the accepting one), bounded by the same timeout as a request."""
        if self.tls is None:
            super().finish_request(request, client_address)
            return
        request.settimeout(BODY_TIMEOUT)
        try:
            wrapped = self.tls.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError):
            return  # a failed handshake: nothing to answer
        try:
            super().finish_request(wrapped, client_address)
        finally:
            wrapped.close()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body are two writes: without it each answer waits ~40 ms
    server: WitnessHTTPServer
    timeout = BODY_TIMEOUT

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: refusals are logged once by the service, with their reason."""

    def do_POST(self) -> None:
        if self.path != f"{self.server.prefix}/add-checkpoint":
            self._send(Reply(404, b"not found: POST <prefix>/add-checkpoint\n"))
            return
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            self._send(Reply(411, b"Content-Length required\n"), close=True)
            return
        if length > MAX_BODY or length < 0:
            self._send(Reply(413, f"body larger than {MAX_BODY} bytes\n".encode()), close=True)
            return
        body = self.rfile.read(length)
        self._send(self.server.witness.add_checkpoint(body))

    def do_GET(self) -> None:
        if self.path == "/metrics":
            data = generate_latest(self.server.witness.metrics.registry)
            self._send(Reply(200, data, CONTENT_TYPE_LATEST))
            return
        prefix = f"{self.server.prefix}/checkpoint/"
        if self.path.startswith(prefix):
            origin = urllib.parse.unquote(self.path[len(prefix) :])
            note = self.server.witness.latest_cosigned(origin)
            if note is not None:
                self._send(Reply(200, note.encode()))
                return
        self._send(Reply(404, b"not found\n"))

    def _send(self, reply: Reply, *, close: bool = False) -> None:
        self.send_response(reply.status)
        self.send_header("Content-Type", reply.content_type)
        self.send_header("Content-Length", str(len(reply.body)))
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(reply.body)


def tls_context(cert: Path, key: Path) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert, key)
    return context


def run(server: WitnessHTTPServer, stop: threading.Event) -> None:
    """Serve until ``stop`` is set (a signal handler sets it)."""
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True)
    thread.start()
    stop.wait()
    server.shutdown()
    server.server_close()
