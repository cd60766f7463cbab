"""In-test OTLP metrics receivers on 127.0.0.1 (port 0) that record every export request.

Spec followed: the OTLP protocol specification (opentelemetry-proto ``docs/specification.md``) and the
service in opentelemetry-proto ``opentelemetry/proto/collector/metrics/v1/metrics_service.proto``:

- OTLP/gRPC: a real grpcio server implementing ``MetricsService.Export(ExportMetricsServiceRequest)
  returns (ExportMetricsServiceResponse)``; success is an empty response, a refusal is a gRPC status
  (``fail_with``: UNAVAILABLE is retryable, UNAUTHENTICATED or INVALID_ARGUMENT are not).
- OTLP/HTTP: ``POST /v1/metrics`` with ``Content-Type: application/x-protobuf`` (optionally
  ``Content-Encoding: gzip``) carrying the same request message; success is ``200`` with a
  protobuf-encoded ``ExportMetricsServiceResponse``; other paths answer 404, other content types 415,
  a body that does not decode 400; ``fail_with`` answers that HTTP status instead.

Every request that arrives is recorded (decoded), with its gRPC metadata or HTTP headers, refused
or not. Only the protobuf encoding is accepted (OTLP/HTTP JSON is not served).
"""

from __future__ import annotations

import gzip
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import grpc
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2_grpc import (
    MetricsServiceServicer,
    add_MetricsServiceServicer_to_server,
)


class _Recorder:
    def __init__(self) -> None:
        self.requests: list[ExportMetricsServiceRequest] = []
        self.headers: list[dict[str, str]] = []
        self.endpoint = ""
        self._cond = threading.Condition()

    def _record(self, request: ExportMetricsServiceRequest, headers: dict[str, str]) -> None:
        with self._cond:
            self.requests.append(request)
            self.headers.append(headers)
            self._cond.notify_all()

    def wait_for(self, count: int, timeout: float = 10.0) -> list[ExportMetricsServiceRequest]:
        """Block until ``count`` requests arrived; the requests so far (AssertionError on timeout)."""
        with self._cond:
            if not self._cond.wait_for(lambda: len(self.requests) >= count, timeout):
                raise AssertionError(f"{len(self.requests)} OTLP requests arrived, waited for {count}")
            return list(self.requests)


class OtlpGrpcReceiver(_Recorder, MetricsServiceServicer):
    """``endpoint`` is ``127.0.0.1:PORT`` (plain text)."""

    def __init__(self) -> None:
        super().__init__()
        self.fail_with: grpc.StatusCode | None = None

    def Export(self, request: ExportMetricsServiceRequest, context: grpc.ServicerContext):  # the proto method name
        self._record(request, {k: v for k, v in context.invocation_metadata() if isinstance(v, str)})
        if self.fail_with is not None:
            context.abort(self.fail_with, "refused by the test receiver")
        return ExportMetricsServiceResponse()


class OtlpHttpReceiver(_Recorder):
    """``endpoint`` is ``http://127.0.0.1:PORT`` (the exporter adds ``/v1/metrics``)."""

    def __init__(self) -> None:
        super().__init__()
        self.fail_with: int | None = None


def _http_handler(receiver: OtlpHttpReceiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # the http.server method name
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if self.path != "/v1/metrics":
                return self._answer(404, b"", "text/plain")
            if self.headers.get_content_type() != "application/x-protobuf":
                return self._answer(415, b"", "text/plain")
            if self.headers.get("Content-Encoding", "").lower() == "gzip":
                body = gzip.decompress(body)
            request = ExportMetricsServiceRequest()
            try:
                request.ParseFromString(body)
            except DecodeError:
                return self._answer(400, b"", "text/plain")
            receiver._record(request, {k.lower(): v for k, v in self.headers.items()})
            if receiver.fail_with is not None:
                return self._answer(receiver.fail_with, b"", "text/plain")
            self._answer(200, ExportMetricsServiceResponse().SerializeToString(), "application/x-protobuf")

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
def otlp_grpc_receiver() -> Iterator[OtlpGrpcReceiver]:
    receiver = OtlpGrpcReceiver()
    server = grpc.server(ThreadPoolExecutor(max_workers=4))
    add_MetricsServiceServicer_to_server(receiver, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    receiver.endpoint = f"127.0.0.1:{port}"
    try:
        yield receiver
    finally:
        server.stop(grace=None).wait()


@contextmanager
def otlp_http_receiver() -> Iterator[OtlpHttpReceiver]:
    receiver = OtlpHttpReceiver()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _http_handler(receiver))
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), name="otlp-http-receiver", daemon=True)
    thread.start()
    receiver.endpoint = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
