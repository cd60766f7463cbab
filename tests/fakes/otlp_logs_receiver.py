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

from collections.abc import Iterator
from contextlib import contextmanager

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest, ExportLogsServiceResponse
from opentelemetry.proto.collector.logs.v1.logs_service_pb2_grpc import (
    LogsServiceServicer,
    add_LogsServiceServicer_to_server,
)
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord

from tests.fakes.otlp_common import GrpcExport, Recorder, serve_grpc, serve_http


class _LogsRecorder(Recorder):
    what = "OTLP log"

    def records(self) -> list[LogRecord]:
        with self._cond:
            return [
                record
                for request in self.requests
                for resource_logs in request.resource_logs
                for scope_logs in resource_logs.scope_logs
                for record in scope_logs.log_records
            ]


class OtlpLogsGrpcReceiver(GrpcExport, _LogsRecorder, LogsServiceServicer):
    """``endpoint`` is ``127.0.0.1:PORT`` (plain text)."""

    response_type = ExportLogsServiceResponse


class OtlpLogsHttpReceiver(_LogsRecorder):
    """``endpoint`` is ``http://127.0.0.1:PORT`` (the sink adds ``/v1/logs``)."""


@contextmanager
def otlp_logs_grpc_receiver() -> Iterator[OtlpLogsGrpcReceiver]:
    with serve_grpc(OtlpLogsGrpcReceiver(), add_LogsServiceServicer_to_server) as receiver:
        yield receiver


@contextmanager
def otlp_logs_http_receiver() -> Iterator[OtlpLogsHttpReceiver]:
    with serve_http(
        OtlpLogsHttpReceiver(), "/v1/logs", ExportLogsServiceRequest, ExportLogsServiceResponse
    ) as receiver:
        yield receiver
