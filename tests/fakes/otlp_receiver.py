"""In-test OTLP *metrics* receivers on 127.0.0.1 (port 0) that record every export request.

Spec followed: the OTLP protocol specification and ``opentelemetry/proto/collector/metrics/v1/metrics_service.proto``
(``MetricsService.Export``, ``POST /v1/metrics``); the shared behaviour is described in ``otlp_common``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2_grpc import (
    MetricsServiceServicer,
    add_MetricsServiceServicer_to_server,
)

from tests.fakes.otlp_common import GrpcExport, Recorder, serve_grpc, serve_http


class OtlpGrpcReceiver(GrpcExport, MetricsServiceServicer):
    """``endpoint`` is ``127.0.0.1:PORT`` (plain text)."""

    response_type = ExportMetricsServiceResponse


class OtlpHttpReceiver(Recorder):
    """``endpoint`` is ``http://127.0.0.1:PORT`` (the exporter adds ``/v1/metrics``)."""


@contextmanager
def otlp_grpc_receiver() -> Iterator[OtlpGrpcReceiver]:
    with serve_grpc(OtlpGrpcReceiver(), add_MetricsServiceServicer_to_server) as receiver:
        yield receiver


@contextmanager
def otlp_http_receiver() -> Iterator[OtlpHttpReceiver]:
    with serve_http(
        OtlpHttpReceiver(), "/v1/metrics", ExportMetricsServiceRequest, ExportMetricsServiceResponse
    ) as receiver:
        yield receiver
