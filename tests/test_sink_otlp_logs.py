"""OTLP logs sink (audit_forwarder.sinks.otlp_logs) against in-test OTLP/gRPC and OTLP/HTTP logs receivers."""

from __future__ import annotations

import hashlib
import socket
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

import grpc
import pytest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.logs.v1.logs_pb2 import SEVERITY_NUMBER_ERROR2, SEVERITY_NUMBER_INFO, SEVERITY_NUMBER_INFO2

from audit_forwarder.shipper.contract import Record, Retryable
from audit_forwarder.sinks.otlp_logs import SCOPE_NAME, OtlpLogsSink, OtlpLogsSinkConfig, build
from keylife.journal.writer import Entry
from tests.fakes.otlp_logs_receiver import otlp_logs_grpc_receiver, otlp_logs_http_receiver

OBSERVED = "2026-11-28T10:00:00.000000Z"
OBSERVED_NS = 1_795_860_000 * 10**9
OCCURRED_NS = (1_795_860_000 - 1) * 10**9 + 250_000_000
RECEIVERS = {"grpc": otlp_logs_grpc_receiver, "http/protobuf": otlp_logs_http_receiver}


def record(seq: int, kind: str = "usage_report", checkpoint: int | None = 1000) -> Record:
    event = {"id": f"e{seq}", "type": kind, "key_id": "k1", "occurred_at": "2026-11-28T09:59:59.25Z"}
    event |= {"actor": "node-a", "node": "n1", "tags": ["a", None], "n": 3, "ok": True}
    return Record(Entry(seq, OBSERVED, event, hashlib.sha256(b"x%d" % seq).digest()), checkpoint=checkpoint)


def config(endpoint: str, protocol: str = "grpc", **settings: Any) -> OtlpLogsSinkConfig:
    options: dict[str, Any] = {"insecure": True, "timeout_seconds": 2.0} | settings
    return OtlpLogsSinkConfig(type="otlp_logs", name="otel", endpoint=endpoint, protocol=protocol, **options)


@contextmanager
def sink_for(cfg: OtlpLogsSinkConfig) -> Iterator[OtlpLogsSink]:
    sink = build(cfg)
    try:
        yield sink
    finally:
        sink.close()


def plain(value: AnyValue) -> Any:
    """An AnyValue as the Python value it encodes."""
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "kvlist_value":
        return {kv.key: plain(kv.value) for kv in value.kvlist_value.values}
    if kind == "array_value":
        return [plain(v) for v in value.array_value.values]
    return getattr(value, kind)


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_records_arrive_in_order_with_body_attributes_severity_and_times(protocol: str) -> None:
    receiver_cm: AbstractContextManager = RECEIVERS[protocol]()
    records = [record(0), record(1, "compromised"), record(2, "revoked", checkpoint=None)]
    with receiver_cm as receiver:
        cfg = config(
            receiver.endpoint, protocol, headers={"X-Scope-OrgID": "tenant-1", "Authorization": "Bearer tok-9f3e"}
        )
        assert "tok-9f3e" not in repr(cfg) and "tok-9f3e" not in cfg.model_dump_json()
        with sink_for(cfg) as sink:
            sink.send([sink.prepare(r) for r in records])
        (request,) = receiver.wait_for(1)
        got = receiver.records()
    assert (
        receiver.headers[0]["x-scope-orgid"] == "tenant-1" and receiver.headers[0]["authorization"] == "Bearer tok-9f3e"
    )
    (resource_logs,) = request.resource_logs
    resource = {kv.key: plain(kv.value) for kv in resource_logs.resource.attributes}
    assert resource["service.name"] == "keylife" and "service.version" in resource
    assert resource_logs.scope_logs[0].scope.name == SCOPE_NAME
    assert len(got) == 3
    for rec, log in zip(records, got, strict=True):
        assert plain(AnyValue(kvlist_value=log.body.kvlist_value)) == rec.entry.event
        attributes = {kv.key: plain(kv.value) for kv in log.attributes}
        expected = {
            "keylife.seq": rec.seq,
            "keylife.hash": rec.entry.hash.hex(),
            "keylife.event_type": rec.entry.event["type"],
            "keylife.key_id": "k1",
            "keylife.event_id": f"e{rec.seq}",
            "keylife.node": "n1",
            "enduser.id": "node-a",
        }
        if rec.checkpoint is not None:
            expected["keylife.checkpoint"] = rec.checkpoint
        assert attributes == expected
        assert log.time_unix_nano == OCCURRED_NS and log.observed_time_unix_nano == OBSERVED_NS
        assert log.event_name == f"keylife.{rec.entry.event['type']}"
        assert log.trace_id == b"" and log.span_id == b""
    assert [(g.severity_number, g.severity_text) for g in got] == [
        (SEVERITY_NUMBER_INFO, "informational"),
        (SEVERITY_NUMBER_ERROR2, "critical"),
        (SEVERITY_NUMBER_INFO2, "notice"),
    ]


def test_a_checkpoint_without_occurred_at_leaves_the_timestamp_unknown() -> None:
    event = {"type": "checkpoint", "origin": "o", "size": 1000, "root_hash": "ab" * 32, "note": "o\n1000\n"}
    checkpoint = Record(Entry(999, OBSERVED, event, bytes(32)), checkpoint=1000)
    with otlp_logs_grpc_receiver() as receiver, sink_for(config(receiver.endpoint)) as sink:
        sink.send([sink.prepare(checkpoint)])
        receiver.wait_for(1)
        (log,) = receiver.records()
    assert log.time_unix_nano == 0 and log.observed_time_unix_nano == OBSERVED_NS
    assert {kv.key for kv in log.attributes} == {
        "keylife.seq",
        "keylife.hash",
        "keylife.event_type",
        "keylife.checkpoint",
    }


def test_grpc_unavailable_is_retryable_within_the_timeout() -> None:
    with otlp_logs_grpc_receiver() as receiver, sink_for(config(receiver.endpoint, timeout_seconds=1.0)) as sink:
        receiver.fail_with = grpc.StatusCode.UNAVAILABLE
        batch = [sink.prepare(record(0))]
        started = time.monotonic()
        with pytest.raises(Retryable) as caught:
            sink.send(batch)
        assert time.monotonic() - started < 2.5
        receiver.fail_with = None
        sink.send(batch)  # the shipper's retry
    assert caught.value.reason == "connect" and receiver.endpoint in str(caught.value)
    assert len(receiver.requests) >= 2


@pytest.mark.parametrize("status", [503, 400])
def test_http_refusals_are_retryable(status: int) -> None:
    with (
        otlp_logs_http_receiver() as receiver,
        sink_for(config(receiver.endpoint, "http/protobuf", timeout_seconds=1.0)) as sink,
    ):
        receiver.fail_with = status
        started = time.monotonic()
        with pytest.raises(Retryable) as caught:
            sink.send([sink.prepare(record(0))])
        assert time.monotonic() - started < 2.5
    assert caught.value.reason == "connect"


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_a_receiver_that_is_down_is_retryable_within_the_timeout(protocol: str) -> None:
    port = closed_port()
    endpoint = f"127.0.0.1:{port}" if protocol == "grpc" else f"http://127.0.0.1:{port}"
    with sink_for(config(endpoint, protocol, timeout_seconds=1.0)) as sink:
        started = time.monotonic()
        with pytest.raises(Retryable) as caught:
            sink.send([sink.prepare(record(0))])
        elapsed = time.monotonic() - started
    assert caught.value.reason == "connect" and elapsed < 2.5


@pytest.mark.parametrize(
    ("endpoint", "protocol", "settings", "message"),
    [
        ("collector.example:4317", "grpc", {"insecure": True}, "only to a loopback collector"),
        ("http://127.0.0.1:4318", "http/protobuf", {"insecure": False}, "http:// needs insecure"),
        ("https://collector.example:4318", "http/protobuf", {"insecure": True}, "https:// excludes it"),
        ("collector.example:4318", "http/protobuf", {"insecure": False}, "expected an http:// or https:// URL"),
        ("127.0.0.1:4317", "grpc", {"insecure": True, "tls": {}}, "insecure and tls exclude each other"),
    ],
)
def test_config_refuses_plain_text_beyond_loopback(endpoint: str, protocol: str, settings: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        config(endpoint, protocol, **settings)


def test_a_verifying_grpc_sink_builds_without_a_collector() -> None:
    sink = build(config("collector.example:4317", insecure=False))
    sink.close()
