"""Splunk HEC sink (audit_forwarder.sinks.splunk_hec) against the in-test collector (tests.fakes.splunk_hec)."""

from __future__ import annotations

import hashlib
import json
import logging
import socket
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from audit_forwarder.formats.ecs import ecs_document
from audit_forwarder.shipper.contract import DeliveryError, Prepared, Record, Rejected, Retryable
from audit_forwarder.shipper.settings import TlsClientSettings
from audit_forwarder.sinks.splunk_hec import SplunkHecSink, SplunkHecSinkConfig, build, epoch_literal
from keylife.journal.writer import Entry
from tests.fakes.splunk_hec import SplunkHec, parse_events, splunk_hec
from tests.tls_helpers import make_server_cert

TOKEN = "6f1c2a9e-2b7d-4c55-9d0e-5a3b8e7f10aa"
CHANNEL = uuid.UUID("0f1e2d3c-4b5a-4968-8776-a5b4c3d2e1f0")
OBSERVED = "2026-11-28T10:00:00.000000Z"


def record(seq: int, kind: str = "usage_report", observed: str = OBSERVED) -> Record:
    event = {"id": f"e{seq}", "type": kind, "key_id": "k1", "occurred_at": "2026-11-28T09:59:59Z"}
    event |= {"actor": "node-a", "node": "n1"}
    return Record(Entry(seq, observed, event, hashlib.sha256(b"x%d" % seq).digest()), checkpoint=1000)


def config(tmp_path: Path, url: str, token: str = TOKEN, **settings: object) -> SplunkHecSinkConfig:
    token_file = tmp_path / "hec.token"
    token_file.touch(mode=0o600)
    token_file.write_text(token + "\n")
    options: dict[str, object] = {"index": "keylife", "host": "fwd-1", "timeout_seconds": 2.0} | settings
    return SplunkHecSinkConfig(type="splunk_hec", name="splunk", url=url, token_file=token_file, **options)


@contextmanager
def sink_for(cfg: SplunkHecSinkConfig) -> Iterator[SplunkHecSink]:
    sink = build(cfg)
    try:
        yield sink
    finally:
        sink.close()


def send(sink: SplunkHecSink, records: list[Record]) -> list[Prepared]:
    batch = [sink.prepare(r) for r in records]
    sink.send(batch)
    return batch


def failure(sink: SplunkHecSink, batch: list[Prepared]) -> DeliveryError:
    with pytest.raises(DeliveryError) as caught:
        sink.send(batch)
    assert TOKEN not in str(caught.value)
    return caught.value


def test_a_batch_arrives_in_order_as_concatenated_hec_events_with_fields_and_the_ecs_document(
    tmp_path: Path,
) -> None:
    records = [record(0), record(1, "revoked"), record(2, "compromised")]
    with splunk_hec(TOKEN) as hec, sink_for(config(tmp_path, hec.url)) as sink:
        batch = send(sink, records)
        events = hec.wait_for(3)
    body = hec.requests[0]["body"]
    assert body == b"".join(p.payload for p in batch) and body.startswith(b'{"time":1795860000.000000,')
    assert b"\n" not in body and b"}{" in body  # HEC's batch form: objects back to back, no array
    assert hec.requests[0]["headers"]["authorization"] == f"Splunk {TOKEN}"
    assert "x-splunk-request-channel" not in hec.requests[0]["headers"]
    assert hec.answers == [(200, b'{"text":"Success","code":0}')]
    for rec, event in zip(records, events, strict=True):
        assert event["time"] == 1795860000.0
        assert (event["host"], event["source"], event["sourcetype"], event["index"]) == (
            "fwd-1",
            "keylife",
            "keylife:audit",
            "keylife",
        )
        assert event["fields"] == {"seq": str(rec.seq), "event_type": rec.entry.event["type"], "key_id": "k1"}
        assert event["event"] == ecs_document(rec.entry, checkpoint=1000, hostname="fwd-1")
    assert [e["event"]["keylife"]["seq"] for e in events] == [0, 1, 2]


def test_time_is_exact_to_the_microsecond_and_never_a_float_literal() -> None:
    assert epoch_literal("2026-11-28T10:00:00.123456Z") == b"1795860000.123456"
    assert epoch_literal("2026-11-28T11:00:00.000001+01:00") == b"1795860000.000001"
    assert epoch_literal("1969-12-31T23:59:58.500000Z") == b"-1.500000"


def test_indexer_ack_polls_on_the_channel_until_the_ack_is_true(tmp_path: Path) -> None:
    with (
        splunk_hec(TOKEN, ack=True, ack_delay=0.3) as hec,
        sink_for(config(tmp_path, hec.url, indexer_ack=True, channel=CHANNEL)) as sink,
    ):
        started = time.monotonic()
        send(sink, [record(0), record(1)])
        assert time.monotonic() - started >= 0.3
        send(sink, [record(2)])
    assert [e["fields"]["seq"] for e in hec.events] == ["0", "1", "2"]
    first, *polls = hec.requests
    assert first["path"] == "/services/collector/event"
    assert first["headers"]["x-splunk-request-channel"] == str(CHANNEL)
    assert hec.answers[0] == (200, b'{"text":"Success","code":0,"ackId":0}')
    assert hec.answers[1] == (200, b'{"text":"Success","code":0,"ackId":1}')
    ack_polls = [r for r in polls if r["path"] == "/services/collector/ack"]
    asked = [json.loads(r["body"])["acks"] for r in ack_polls]
    assert asked[0] == [0] and asked[-1] == [1] and asked == sorted(asked) and asked.count([0]) >= 2
    assert all(r["headers"]["x-splunk-request-channel"] == str(CHANNEL) for r in ack_polls)


def test_an_ack_not_confirmed_within_the_timeout_is_retryable_timeout(tmp_path: Path) -> None:
    cfg = {"indexer_ack": True, "timeout_seconds": 0.4}
    with splunk_hec(TOKEN, ack=True, ack_delay=30) as hec, sink_for(config(tmp_path, hec.url, **cfg)) as sink:
        started = time.monotonic()
        error = failure(sink, [sink.prepare(record(0))])
        assert time.monotonic() - started < 2
    assert isinstance(error, Retryable) and error.reason == "timeout"
    assert len(hec.events) == 1  # it arrived; the resend will duplicate it, which the contract allows


def test_a_token_with_ack_on_needs_a_channel_which_is_a_configuration_fault(tmp_path: Path) -> None:
    with splunk_hec(TOKEN, ack=True) as hec, sink_for(config(tmp_path, hec.url)) as sink:
        error = failure(sink, [sink.prepare(record(0))])
    assert isinstance(error, Retryable) and error.reason == "http_4xx"
    assert "Data channel is missing" in str(error) and "indexer_ack: true" in str(error)


def test_ack_requested_from_a_token_without_ack_takes_the_200_and_warns_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = {"indexer_ack": True}
    with splunk_hec(TOKEN) as hec, sink_for(config(tmp_path, hec.url, **cfg)) as sink, caplog.at_level(logging.WARNING):
        send(sink, [record(0)])
        send(sink, [record(1)])
    assert len(hec.events) == 2
    assert [r.message for r in caplog.records].count(caplog.records[0].message) == 1
    assert "without an ackId" in caplog.text and TOKEN not in caplog.text


@pytest.mark.parametrize(
    ("bad_payload", "code"),
    [
        (b'{"time":1795860000.000000,"event":""}', 13),
        (b'{"time":1795860000.000000,"host":"x"}', 12),
        (b'{"event":{"a":1},"fields":{"nested":{"no":"pe"}}}', 15),
        (b'{"event":', 6),
    ],
)
def test_an_invalid_event_is_rejected_with_its_index(tmp_path: Path, bad_payload: bytes, code: int) -> None:
    with splunk_hec(TOKEN) as hec, sink_for(config(tmp_path, hec.url)) as sink:
        batch = [sink.prepare(record(0)), Prepared(record(1), bad_payload, len(bad_payload)), sink.prepare(record(2))]
        error = failure(sink, batch)
    assert isinstance(error, Rejected) and error.reason == "invalid" and error.index == 1
    assert f"code {code}" in str(error)
    assert json.loads(hec.answers[0][1])["invalid-event-number"] == 1
    assert [e["fields"]["seq"] for e in hec.events] == ["0"]  # HEC kept the event before the bad one


def test_a_400_without_an_event_number_is_rejected_for_the_shipper_to_split(tmp_path: Path) -> None:
    with splunk_hec(TOKEN) as hec, sink_for(config(tmp_path, hec.url)) as sink:
        hec.fail_next(400)
        error = failure(sink, [sink.prepare(record(0)), sink.prepare(record(1))])
    assert isinstance(error, Rejected) and error.reason == "invalid" and error.index is None


@pytest.mark.parametrize(("status", "reason"), [(503, "http_5xx"), (429, "http_429")])
def test_busy_answers_are_retryable_with_retry_after(tmp_path: Path, status: int, reason: str) -> None:
    with splunk_hec(TOKEN) as hec, sink_for(config(tmp_path, hec.url)) as sink:
        hec.fail_next(status, retry_after=7)
        batch = [sink.prepare(record(0))]
        error = failure(sink, batch)
        sink.send(batch)  # the shipper's retry
        hec.wait_for(1)
    assert isinstance(error, Retryable) and error.reason == reason and error.retry_after == 7.0
    if status == 503:
        assert "code 9 'Server is busy'" in str(error)


def test_an_internal_error_is_retryable_without_retry_after(tmp_path: Path) -> None:
    with splunk_hec(TOKEN) as hec, sink_for(config(tmp_path, hec.url)) as sink:
        hec.fail_next(500)
        error = failure(sink, [sink.prepare(record(0))])
    assert isinstance(error, Retryable) and error.reason == "http_5xx" and error.retry_after is None


def test_refused_tokens_are_retryable_auth_and_the_token_never_shows(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    wrong = "11111111-2222-4333-8444-555555555555"
    with splunk_hec(TOKEN) as hec, caplog.at_level(logging.DEBUG):
        cfg = config(tmp_path, hec.url, token=wrong)
        with sink_for(cfg) as sink:
            invalid = failure(sink, [sink.prepare(record(0))])
        hec.token_disabled = True
        with sink_for(config(tmp_path, hec.url)) as sink:
            disabled = failure(sink, [sink.prepare(record(0))])
    assert isinstance(invalid, Retryable) and invalid.reason == "auth" and "code 4 'Invalid token'" in str(invalid)
    assert isinstance(disabled, Retryable) and disabled.reason == "auth" and "code 1 'Token disabled'" in str(disabled)
    for text in (str(invalid), str(disabled), repr(cfg), cfg.model_dump_json(), caplog.text):
        assert wrong not in text and TOKEN not in text
    assert hec.events == []


def test_a_batch_over_the_collectors_limit_is_too_large(tmp_path: Path) -> None:
    with splunk_hec(TOKEN) as hec, sink_for(config(tmp_path, hec.url)) as sink:
        hec.max_content_length = 100
        error = failure(sink, [sink.prepare(record(0))])
    assert isinstance(error, Rejected) and error.reason == "too_large"


def test_a_wrong_url_path_is_retryable_not_a_verdict_on_the_records(tmp_path: Path) -> None:
    with splunk_hec(TOKEN) as hec, sink_for(config(tmp_path, hec.url + "/splunk")) as sink:
        error = failure(sink, [sink.prepare(record(0))])
    assert isinstance(error, Retryable) and error.reason == "http_4xx" and "HTTP 404" in str(error)


def test_a_refused_connection_and_a_silent_peer(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    with sink_for(config(tmp_path, f"http://127.0.0.1:{closed_port}")) as sink:
        refused = failure(sink, [sink.prepare(record(0))])
    with socket.socket() as silent:  # accepts (the kernel's backlog) and never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(4)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        with sink_for(config(tmp_path, url, timeout_seconds=0.3)) as sink:
            started = time.monotonic()
            timed_out = failure(sink, [sink.prepare(record(0))])
            assert time.monotonic() - started < 2
    assert isinstance(refused, Retryable) and refused.reason == "connect"
    assert isinstance(timed_out, Retryable) and timed_out.reason == "timeout"


def test_tls_with_the_test_ca_delivers_and_an_unknown_ca_is_a_tls_failure(tmp_path: Path) -> None:
    ca, cert, key = make_server_cert(tmp_path / "pki")
    with splunk_hec(TOKEN, tls=(cert, key)) as hec:
        assert hec.url.startswith("https://")
        with sink_for(config(tmp_path, hec.url, tls=TlsClientSettings(ca_file=ca))) as sink:
            send(sink, [record(0), record(1)])
        other_ca, _, _ = make_server_cert(tmp_path / "other")
        with sink_for(config(tmp_path, hec.url, tls=TlsClientSettings(ca_file=other_ca))) as sink:
            error = failure(sink, [sink.prepare(record(2))])
    assert [e["fields"]["seq"] for e in hec.events] == ["0", "1"]
    assert isinstance(error, Retryable) and error.reason == "tls"


@pytest.mark.parametrize(
    ("url", "extra", "message"),
    [
        ("http://splunk.example:8088", {}, "plain http only to a loopback host"),
        ("http://127.0.0.1:8088", {"tls": {}}, "need an https:// url"),
        ("https://splunk.example:8088?token=x", {}, "no query"),
        ("splunk.example:8088", {}, "expected http.s.://host"),
    ],
)
def test_config_refuses_unsafe_urls(tmp_path: Path, url: str, extra: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        config(tmp_path, url, **extra)


def test_the_fake_parses_concatenated_objects_like_hec() -> None:
    events = parse_events('{"event":1} \n{"event":2}{"event":3}')
    assert events == [{"event": 1}, {"event": 2}, {"event": 3}]
    assert isinstance(SplunkHec(TOKEN), SplunkHec)
