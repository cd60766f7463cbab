"""In-test OTLP *logs* receivers on 127.0.0.1 (port 0) that record every export request.

Modelled on ``tests.fakes.otlp_receiver`` (metrics). Spec followed: the OTLP protocol specification
(opentelemetry-proto ``docs/specification.md``) and ``opentelemetry/proto/collector/logs/v1/logs_service.proto``:

- OTLP/gRPC: a grpcio server implementing ``LogsService.Export(ExportLogsServiceRequest) returns
  (ExportLogsServiceResponse)``; success is an empty response, a refusal a gRPC status (``fail_with``:
  UNAVAILABLE is retryable for the exporter, INVALID_ARGUMENT or UNAUTHENTICATED are not).
- OTLP/HTTP: ``POST /v1/logs`` with ``Content-Type: application/x-protobuf`` (optionally gzip) carrying
  the same message; success is 200 with a protobuf ``ExportLogsServiceResponse``; other paths 404, other
  content types 415, an undecodable body 400; ``fail_with`` answers that HTTP status instead.

Every request that arrives is recorded (decoded) with its metadata or headers, refused or not.
``records()`` flattens the recorded requests into their log records, in arrival order.
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
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest, ExportLogsServiceResponse
from opentelemetry.proto.collector.logs.v1.logs_service_pb2_grpc import (
    LogsServiceServicer,
    add_LogsServiceServicer_to_server,
)
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord


class _Recorder:
    def __init__(self) -> None:
        self.requests: list[ExportLogsServiceRequest] = []
        self.headers: list[dict[str, str]] = []
        self.endpoint = ""
        self._cond = threading.Condition()

    def _record(self, request: ExportLogsServiceRequest, headers: dict[str, str]) -> None:
        with self._cond:
            self.requests.append(request)
            self.headers.append(headers)
            self._cond.notify_all()

    def wait_for(self, count: int, timeout: float = 10.0) -> list[ExportLogsServiceRequest]:
        """Block until ``count`` requests arrived; the requests so far (AssertionError on timeout)."""
        with self._cond:
            if not self._cond.wait_for(lambda: len(self.requests) >= count, timeout):
                raise AssertionError(f"{len(self.requests)} OTLP log requests arrived, waited for {count}")
            return list(self.requests)

    def records(self) -> list[LogRecord]:
        with self._cond:
            return [
                record
                for request in self.requests
                for resource_logs in request.resource_logs
                for scope_logs in resource_logs.scope_logs
                for record in scope_logs.log_records
            ]


class OtlpLogsGrpcReceiver(_Recorder, LogsServiceServicer):
    """``endpoint`` is ``127.0.0.1:PORT`` (plain text)."""

    def __init__(self) -> None:
        super().__init__()
        self.fail_with: grpc.StatusCode | None = None

    def Export(self, request: ExportLogsServiceRequest, context: grpc.ServicerContext):  # the proto method name
        self._record(request, {k: v for k, v in context.invocation_metadata() if isinstance(v, str)})
        if self.fail_with is not None:
            context.abort(self.fail_with, "refused by the test receiver")
        return ExportLogsServiceResponse()


class OtlpLogsHttpReceiver(_Recorder):
    """``endpoint`` is ``http://127.0.0.1:PORT`` (the sink adds ``/v1/logs``)."""

    def __init__(self) -> None:
        super().__init__()
        self.fail_with: int | None = None


def _http_handler(receiver: OtlpLogsHttpReceiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # the http.server method name
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if self.path != "/v1/logs":
                return self._answer(404, b"", "text/plain")
            if self.headers.get_content_type() != "application/x-protobuf":
                return self._answer(415, b"", "text/plain")
            if self.headers.get("Content-Encoding", "").lower() == "gzip":
                body = gzip.decompress(body)
            request = ExportLogsServiceRequest()
            try:
                request.ParseFromString(body)
            except DecodeError:
                return self._answer(400, b"", "text/plain")
            receiver._record(request, {k.lower(): v for k, v in self.headers.items()})
            if receiver.fail_with is not None:
                return self._answer(receiver.fail_with, b"", "text/plain")
            self._answer(200, ExportLogsServiceResponse().SerializeToString(), "application/x-protobuf")

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
def otlp_logs_grpc_receiver() -> Iterator[OtlpLogsGrpcReceiver]:
    receiver = OtlpLogsGrpcReceiver()
    server = grpc.server(ThreadPoolExecutor(max_workers=4))
    add_LogsServiceServicer_to_server(receiver, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    receiver.endpoint = f"127.0.0.1:{port}"
    try:
        yield receiver
    finally:
        server.stop(grace=None).wait()


@contextmanager
def otlp_logs_http_receiver() -> Iterator[OtlpLogsHttpReceiver]:
    receiver = OtlpLogsHttpReceiver()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _http_handler(receiver))
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), name="otlp-logs-http", daemon=True)
    thread.start()
    receiver.endpoint = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
