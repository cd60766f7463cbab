"""OTLP push of the Prometheus registry (exporter.otlp) to in-test OTLP/gRPC and OTLP/HTTP receivers."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager

import grpc
import pytest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.metrics.v1 import metrics_pb2
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    StateSetMetricFamily,
)

import keylife
from exporter.otlp import INSTANCE_ID, SCOPE_NAME, OtlpMetricsPusher, OtlpSettings
from tests.fakes.otlp_receiver import otlp_grpc_receiver, otlp_http_receiver

CUMULATIVE = metrics_pb2.AGGREGATION_TEMPORALITY_CUMULATIVE


class Fleet:
    """A custom collector like the exporter's: families built fresh at each collect()."""

    def __init__(self) -> None:
        self.revocations = 3.0
        self.broken = False

    def describe(self) -> list:
        return []

    def collect(self) -> Iterator:
        if self.broken:
            raise RuntimeError("registry snapshot unavailable")
        keys = GaugeMetricFamily("keylife_keys", "Keys by state and algorithm.", labels=["state", "algorithm"])
        keys.add_metric(["active", "ed25519"], 7)
        keys.add_metric(["revoked", "rsa-2048"], 2)
        yield keys
        yield GaugeMetricFamily("keylife_journal_size_bytes", "Journal size.", value=4096)
        transitions = CounterMetricFamily("keylife_transitions", "Lifecycle transitions.", labels=["type"])
        transitions.add_metric(["revoke"], self.revocations)
        transitions.add_metric(["activate"], 11, created=1_700_000_000.25)
        yield transitions
        yield HistogramMetricFamily(
            "keylife_propagation_lag_seconds",
            "Time from a state change to a node's confirmation.",
            buckets=[("0.1", 1), ("1", 4), ("10", 6), ("+Inf", 7)],
            sum_value=12.5,
        )
        yield InfoMetricFamily("keylife_build", "Build information.", value={"version": "1.2.3", "revision": "abc"})
        yield StateSetMetricFamily("keylife_verify", "Last verify result.", value={"ok": True, "failed": False})


def _registry() -> tuple[CollectorRegistry, Fleet]:
    registry = CollectorRegistry(auto_describe=True)
    fleet = Fleet()
    registry.register(fleet)
    return registry, fleet


@contextmanager
def _pusher(registry: CollectorRegistry, endpoint: str, **settings) -> Iterator[OtlpMetricsPusher]:
    settings = {"insecure": True, "timeout_seconds": 5.0, **settings}
    pusher = OtlpMetricsPusher(registry, OtlpSettings(endpoint, **settings), {"deployment.environment.name": "test"})
    try:
        yield pusher
    finally:
        pusher.shutdown()


def _metrics(request: ExportMetricsServiceRequest) -> dict[str, metrics_pb2.Metric]:
    (resource_metrics,) = request.resource_metrics
    (scope_metrics,) = resource_metrics.scope_metrics
    assert scope_metrics.scope.name == SCOPE_NAME
    return {m.name: m for m in scope_metrics.metrics}


def _attrs(point) -> dict[str, str]:
    return {kv.key: kv.value.string_value for kv in point.attributes}


def _points(metric: metrics_pb2.Metric) -> dict[tuple, object]:
    data = getattr(metric, metric.WhichOneof("data"))
    return {tuple(sorted(_attrs(p).items())): p for p in data.data_points}


def _exports(registry: CollectorRegistry, outcome: str) -> float | None:
    return registry.get_sample_value("keylife_otlp_exports_total", {"outcome": outcome})


def _check_batch(request: ExportMetricsServiceRequest) -> None:
    resource = _attrs(request.resource_metrics[0].resource)
    assert resource["service.name"] == "keylife"
    assert resource["service.version"] == keylife.__version__
    assert resource["service.instance.id"] == INSTANCE_ID
    assert resource["deployment.environment.name"] == "test"
    metrics = _metrics(request)

    keys = metrics["keylife_keys"]
    assert keys.WhichOneof("data") == "gauge" and keys.description == "Keys by state and algorithm."
    points = _points(keys)
    assert points[(("algorithm", "ed25519"), ("state", "active"))].as_double == 7
    assert points[(("algorithm", "rsa-2048"), ("state", "revoked"))].as_double == 2
    assert metrics["keylife_journal_size_bytes"].unit == "By"

    assert "keylife_transitions_total" not in metrics
    transitions = metrics["keylife_transitions"]
    assert transitions.WhichOneof("data") == "sum"
    assert transitions.sum.is_monotonic and transitions.sum.aggregation_temporality == CUMULATIVE
    points = _points(transitions)
    assert points[(("type", "revoke"),)].as_double == 3
    activate = points[(("type", "activate"),)]
    assert activate.as_double == 11 and activate.start_time_unix_nano == 1_700_000_000_250_000_000

    lag = metrics["keylife_propagation_lag_seconds"]
    assert lag.unit == "s" and lag.histogram.aggregation_temporality == CUMULATIVE
    (point,) = lag.histogram.data_points
    assert list(point.explicit_bounds) == [0.1, 1.0, 10.0]
    assert list(point.bucket_counts) == [1, 3, 2, 1]  # per bucket, from cumulative 1, 4, 6, 7
    assert point.count == 7 and point.sum == 12.5
    assert not point.HasField("min") and not point.HasField("max")

    build = metrics["keylife_build_info"]
    assert build.WhichOneof("data") == "sum" and not build.sum.is_monotonic
    (point,) = build.sum.data_points
    assert _attrs(point) == {"version": "1.2.3", "revision": "abc"} and point.as_double == 1
    verify = {dict(k)["keylife_verify"]: p.as_double for k, p in _points(metrics["keylife_verify"]).items()}
    assert verify == {"ok": 1, "failed": 0}

    exports = _points(metrics["keylife_otlp_exports"])  # the pusher's own counter rides along
    assert set(exports) == {(("outcome", o),) for o in ("success", "failure", "collect_error")}


def test_grpc_push_maps_every_family() -> None:
    registry, _ = _registry()
    with otlp_grpc_receiver() as receiver, _pusher(registry, receiver.endpoint, headers={"X-Tenant": "t1"}) as pusher:
        assert pusher.force_flush() is True
        (request,) = receiver.wait_for(1)
        _check_batch(request)
        assert receiver.headers[0]["x-tenant"] == "t1"
        assert _exports(registry, "success") == 1 and _exports(registry, "failure") == 0


def test_http_push_maps_every_family(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment.name=prod,host.name=h1")
    registry, _ = _registry()
    with otlp_http_receiver() as receiver, _pusher(registry, receiver.endpoint, protocol="http/protobuf") as pusher:
        assert pusher.force_flush() is True
        (request,) = receiver.wait_for(1)
        _check_batch(request)  # the caller's deployment.environment.name wins over the environment's
        assert _attrs(request.resource_metrics[0].resource)["host.name"] == "h1"
        assert receiver.headers[0]["content-type"] == "application/x-protobuf"
        assert _exports(registry, "success") == 1


def test_cumulative_start_times_follow_the_series() -> None:
    registry, fleet = _registry()
    with otlp_grpc_receiver() as receiver, _pusher(registry, receiver.endpoint) as pusher:
        for revocations in (3, 5, 1):  # 1: the counter went down, a reset
            fleet.revocations = revocations
            assert pusher.force_flush()
            time.sleep(0.01)
        first, second, third = (_points(_metrics(r)["keylife_transitions"]) for r in receiver.wait_for(3))
    key = (("type", "revoke"),)
    assert first[key].start_time_unix_nano == first[key].time_unix_nano  # unknown start: zero-duration first point
    assert second[key].start_time_unix_nano == first[key].start_time_unix_nano < second[key].time_unix_nano
    assert second[key].as_double == 5
    assert third[key].start_time_unix_nano == third[key].time_unix_nano > second[key].time_unix_nano


def test_periodic_push_of_prometheus_client_metrics() -> None:
    registry, _ = _registry()
    Counter("keylife_ingest_events", "Events.", ["outcome"], registry=registry).labels("accepted").inc(4)
    ack = Histogram("keylife_ingest_ack_seconds", "Ack latency.", buckets=(0.01, 0.1), registry=registry)
    for seconds in (0.005, 0.05, 0.07, 3):
        ack.observe(seconds)
    with otlp_grpc_receiver() as receiver:
        with _pusher(registry, receiver.endpoint, interval_seconds=0.05) as pusher:
            pusher.start()
            receiver.wait_for(2)
        count = len(receiver.requests)  # shutdown sent one last batch
        metrics = _metrics(receiver.requests[-1])
    assert count >= 3 and metrics["keylife_ingest_events"].sum.is_monotonic
    (point,) = metrics["keylife_ingest_events"].sum.data_points
    assert point.as_double == 4 and 0 < point.start_time_unix_nano < point.time_unix_nano  # from _created
    (point,) = metrics["keylife_ingest_ack_seconds"].histogram.data_points
    assert list(point.explicit_bounds) == [0.01, 0.1] and list(point.bucket_counts) == [1, 2, 1]
    assert point.count == 4 and point.sum == pytest.approx(3.125)
    assert 0 < point.start_time_unix_nano < point.time_unix_nano


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_down_receiver_is_counted_not_raised(protocol: str) -> None:
    registry, _ = _registry()
    endpoint = f"127.0.0.1:{_free_port()}" if protocol == "grpc" else f"http://127.0.0.1:{_free_port()}"
    with _pusher(registry, endpoint, protocol=protocol, timeout_seconds=0.5, interval_seconds=0.05) as pusher:
        assert pusher.force_flush() is False
        assert _exports(registry, "failure") == 1
        pusher.start()
        deadline = time.monotonic() + 10
        while _exports(registry, "failure") < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert _exports(registry, "failure") >= 3 and _exports(registry, "success") == 0
    assert _exports(registry, "failure") is None  # unregistered at shutdown
    assert pusher.force_flush() is False


def test_refusal_and_collect_errors_are_counted() -> None:
    registry, fleet = _registry()
    with otlp_grpc_receiver() as receiver, _pusher(registry, receiver.endpoint) as pusher:
        receiver.fail_with = grpc.StatusCode.UNAUTHENTICATED
        assert pusher.force_flush() is False
        fleet.broken = True
        assert pusher.force_flush() is False
        assert len(receiver.requests) == 1
        fleet.broken = False
        counts = {o: _exports(registry, o) for o in ("success", "failure", "collect_error")}
    assert counts == {"success": 0, "failure": 1, "collect_error": 1}


def test_tls_is_the_default() -> None:
    registry, _ = _registry()
    with otlp_grpc_receiver() as plain_text:  # a TLS client gets no answer from a plain-text server
        with _pusher(registry, plain_text.endpoint, insecure=False, timeout_seconds=0.5) as pusher:
            assert pusher.force_flush() is False
            assert _exports(registry, "failure") == 1
        assert plain_text.requests == []


def test_settings_default_to_tls_and_refuse_contradictions() -> None:
    settings = OtlpSettings("collector.example:4317")
    assert (settings.protocol, settings.insecure, settings.interval_seconds) == ("grpc", False, 15.0)
    for bad in (
        {"endpoint": "http://collector:4317"},  # plain text without insecure
        {"endpoint": "https://collector:4317", "insecure": True},
        {"endpoint": "collector:4318", "protocol": "http/protobuf"},  # HTTP needs a URL
        {"endpoint": "collector:4317", "protocol": "http/json"},
        {"endpoint": "collector:4317", "interval_seconds": 0},
    ):
        with pytest.raises(ValueError):
            OtlpSettings(**bad)
