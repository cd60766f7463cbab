"""What the in-test OTLP receivers share (metrics: ``otlp_receiver``; logs: ``otlp_logs_receiver``).

Spec followed: the OTLP protocol specification (opentelemetry-proto ``docs/specification.md``):

- OTLP/gRPC: the signal's ``Export(Export<Signal>ServiceRequest) returns (Export<Signal>ServiceResponse)``;
  success is an empty response, a refusal a gRPC status (``fail_with``: UNAVAILABLE is retryable,
  UNAUTHENTICATED or INVALID_ARGUMENT are not).
- OTLP/HTTP: ``POST /v1/<signal>`` with ``Content-Type: application/x-protobuf`` (optionally
  ``Content-Encoding: gzip``) carrying the same request; success is ``200`` with a protobuf response;
  other paths 404, other content types 415, a body that does not decode 400; ``fail_with`` answers that
  HTTP status instead. Only the protobuf encoding is served (not OTLP/HTTP JSON).

Every request that arrives is recorded (decoded) with its gRPC metadata or HTTP headers, refused or not.
"""

from __future__ import annotations

import gzip
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import grpc
from google.protobuf.message import DecodeError, Message


class Recorder:
    """Every request that arrived, with its headers; ``wait_for`` blocks until enough did."""

    what = "OTLP"

    def __init__(self) -> None:
        self.requests: list[Any] = []
        self.headers: list[dict[str, str]] = []
        self.endpoint = ""
        self.fail_with: Any = None  # a grpc.StatusCode (gRPC) or an HTTP status (HTTP)
        self._cond = threading.Condition()

    def _record(self, request: Message, headers: dict[str, str]) -> None:
        with self._cond:
            self.requests.append(request)
            self.headers.append(headers)
            self._cond.notify_all()

    def wait_for(self, count: int, timeout: float = 10.0) -> list[Any]:
        """Block until ``count`` requests arrived; the requests so far (AssertionError on timeout)."""
        with self._cond:
            if not self._cond.wait_for(lambda: len(self.requests) >= count, timeout):
                raise AssertionError(f"{len(self.requests)} {self.what} requests arrived, waited for {count}")
            return list(self.requests)


class GrpcExport(Recorder):
    """A recorder that is also the signal's gRPC servicer (``Export``)."""

    response_type: type[Message]

    def Export(self, request: Message, context: grpc.ServicerContext) -> Message:  # the proto method name
        self._record(request, {k: v for k, v in context.invocation_metadata() if isinstance(v, str)})
        if self.fail_with is not None:
            context.abort(self.fail_with, "refused by the test receiver")
        return self.response_type()


def _http_handler(
    receiver: Recorder, path: str, request_type: type[Message], response_type: type[Message]
) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # the http.server method name
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if self.path != path:
                return self._answer(404, b"", "text/plain")
            if self.headers.get_content_type() != "application/x-protobuf":
                return self._answer(415, b"", "text/plain")
            if self.headers.get("Content-Encoding", "").lower() == "gzip":
                body = gzip.decompress(body)
            request = request_type()
            try:
                request.ParseFromString(body)
            except DecodeError:
                return self._answer(400, b"", "text/plain")
            receiver._record(request, {k.lower(): v for k, v in self.headers.items()})
            if receiver.fail_with is not None:
                return self._answer(receiver.fail_with, b"", "text/plain")
            self._answer(200, response_type().SerializeToString(), "application/x-protobuf")

        def _answer(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:  # quiet test output
            pass

    return Handler


@contextmanager
def serve_grpc(receiver: Any, add_to_server: Callable[[Any, grpc.Server], None]) -> Iterator[Any]:
    """The receiver as a gRPC service on 127.0.0.1 (plain text); ``endpoint`` is ``127.0.0.1:PORT``."""
    server = grpc.server(ThreadPoolExecutor(max_workers=4))
    add_to_server(receiver, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    receiver.endpoint = f"127.0.0.1:{port}"
    try:
        yield receiver
    finally:
        server.stop(grace=None).wait()


@contextmanager
def serve_http(
    receiver: Recorder, path: str, request_type: type[Message], response_type: type[Message]
) -> Iterator[Any]:
    """The receiver as OTLP/HTTP on 127.0.0.1; ``endpoint`` is ``http://127.0.0.1:PORT``."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _http_handler(receiver, path, request_type, response_type))
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), name="otlp-http-receiver", daemon=True)
    thread.start()
    receiver.endpoint = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
