"""The Loki sink against tests/fakes/loki.py: wire formats, streams, answers, auth, TLS."""

from __future__ import annotations

import gzip
import hashlib
import socket
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import cramjam
import httpx
import orjson
import pytest
from pydantic import ValidationError

from audit_forwarder.shipper.contract import Prepared, Record, Refused, Rejected, Retryable
from audit_forwarder.sinks.loki import (
    LokiSink,
    LokiSinkConfig,
    build,
    epoch_nanos,
    rejection_reason,
    retry_after_seconds,
)
from keylife.common.canonical import canonical
from keylife.journal.writer import Entry, format_observed
from tests.fakes.loki import FakeLoki, parse_labels
from tests.tls_helpers import make_server_cert

SECRET = "s3cr3t-never-in-messages"


def chain_hash(seq: int) -> bytes:
    return hashlib.sha256(f"x{seq}".encode()).digest()


def record(seq: int, kind: str = "usage_report", *, age: float = 1.0, checkpoint: int | None = 1000, **extra) -> Record:
    """A journal record observed ``age`` seconds ago (the fake checks timestamps against its clock)."""
    event = {"id": f"e{seq}", "type": kind, "key_id": "k1", "occurred_at": "2026-11-28T10:00:00Z", "actor": "node-a"}
    event.update(extra)
    observed = format_observed(time.time() - age + seq * 1e-6)
    return Record(Entry(seq, observed, event, chain_hash(seq)), checkpoint=checkpoint)


def checkpoint_record(size: int) -> Record:
    root = hashlib.sha256(b"root").digest()
    event = {"type": "checkpoint", "origin": "keylife.test", "size": size, "root_hash": root.hex(), "note": "n"}
    return Record(Entry(size - 1, format_observed(time.time() - 0.5), event, root), checkpoint=size)


def make_sink(url: str, **options) -> LokiSink:
    options.setdefault("timeout_seconds", 2.0)
    return build(LokiSinkConfig(name="loki", type="loki", url=url, **options))


@pytest.fixture
def loki() -> Iterator[FakeLoki]:
    with FakeLoki() as fake:
        yield fake


def ship(sink: LokiSink, records: list[Record]) -> list[Prepared]:
    batch = [sink.prepare(r) for r in records]
    sink.send(batch)
    return batch


# -- delivery --------------------------------------------------------------------------------


@pytest.mark.parametrize("encoding", ["protobuf", "json"])
def test_delivers_in_order_with_static_labels_metadata_and_canonical_lines(loki: FakeLoki, encoding: str) -> None:
    sink = make_sink(loki.url, encoding=encoding, environment="staging")
    records = [
        record(0),
        record(1, "activated"),
        record(2, "compromised", node="n1"),
        record(3, "policy_violation", violation="weak_key"),
        record(4),
        checkpoint_record(5),
    ]
    ship(sink, records)
    entries = loki.wait_for(6)
    assert loki.requests[-1].status == 204
    assert (
        loki.requests[-1].headers["content-type"]
        == {
            "protobuf": "application/x-protobuf",
            "json": "application/json",
        }[encoding]
    )
    assert "content-encoding" not in loki.requests[-1].headers
    by_seq = {int(e.metadata["seq"]): e for e in entries if e.metadata["event_type"] != "checkpoint"}
    expected_labels = {
        0: ("usage", "info"),
        1: ("lifecycle", "info"),
        2: ("lifecycle", "critical"),
        3: ("security", "warning"),
        4: ("usage", "info"),
    }
    for seq, (category, severity) in expected_labels.items():
        assert by_seq[seq].labels == {
            "category": category,
            "environment": "staging",
            "service": "keylife",
            "severity": severity,
        }
    for r in records[:5]:
        got = by_seq[r.seq]
        assert got.line == canonical(r.entry.event).decode()
        assert got.ts_ns == epoch_nanos(r.entry.observed_at)
        assert got.metadata["hash"] == r.entry.hash.hex()
        assert got.metadata["checkpoint"] == "1000"
        assert got.metadata["event_id"] == f"e{r.seq}"
        assert got.metadata["event_type"] == r.entry.event["type"]
        assert got.metadata["key_id"] == "k1"
        assert got.metadata["actor"] == "node-a"
    assert by_seq[2].metadata["node"] == "n1"
    assert "node" not in by_seq[0].metadata
    [checkpoint] = [e for e in entries if e.metadata["event_type"] == "checkpoint"]
    assert (checkpoint.labels["category"], checkpoint.labels["severity"]) == ("checkpoint", "notice")
    assert checkpoint.metadata["seq"] == "4"  # a checkpoint of size 5 covers seq 0..4
    # each stream keeps journal order
    usage = [int(e.metadata["seq"]) for e in entries if e.labels["category"] == "usage"]
    assert usage == [0, 4]
    sink.close()


def test_label_strings_are_canonical_sorted_and_few(loki: FakeLoki) -> None:
    sink = make_sink(loki.url)
    prepared = sink.prepare(record(0))
    labels = prepared.payload[0]
    assert labels == '{category="usage", environment="production", service="keylife", severity="info"}'
    assert parse_labels(labels, strict_order=True) == sorted(parse_labels(labels, strict_order=True))
    kinds = ["generated", "revoked", "usage_report", "propagated", "auth_failure", "journal_recovered", "whatever"]
    streams = {sink.prepare(record(i, kind)).payload[0] for i, kind in enumerate(kinds)}
    assert len(streams) == 7
    assert all(len(parse_labels(s, strict_order=True)) == 4 for s in streams)
    assert any(
        'category="system", environment="production", service="keylife", severity="notice"' in s for s in streams
    )


def test_checkpoint_record_goes_to_the_checkpoint_stream(loki: FakeLoki) -> None:
    sink = make_sink(loki.url)
    ship(sink, [checkpoint_record(1000)])
    [entry] = loki.wait_for(1)
    assert entry.labels["category"] == "checkpoint"
    assert entry.metadata == {
        "seq": "999",
        "hash": hashlib.sha256(b"root").hexdigest(),
        "checkpoint": "1000",
        "event_type": "checkpoint",
    }
    assert '"type":"checkpoint"' in entry.line


def test_prepared_size_is_line_plus_metadata_bytes(loki: FakeLoki) -> None:
    r = record(7)
    line = canonical(r.entry.event)
    prepared = make_sink(loki.url, encoding="json").prepare(r)
    metadata = prepared.payload[3]
    named = len(line) + sum(len(n) + len(v) for n, v in metadata)
    assert prepared.size == named
    wire = make_sink(loki.url).prepare(r)  # protobuf: the encoded entry, framing included
    assert wire.size == len(wire.payload[1]) and named < wire.size < named + 64
    assert r.checkpoint is not None


def test_tenant_header_and_bearer_token_are_sent(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.touch(mode=0o600)
    token.write_text(SECRET + "\n")
    with FakeLoki(require_tenant=True, bearer_token=SECRET) as loki:
        sink = make_sink(loki.url, tenant="team-a", bearer_token_file=token)
        ship(sink, [record(0)])
        [entry] = loki.wait_for(1)
        assert entry.tenant == "team-a"
        headers = loki.requests[-1].headers
        assert headers["x-scope-orgid"] == "team-a"
        assert headers["authorization"] == f"Bearer {SECRET}"


def test_basic_auth_is_sent(tmp_path: Path) -> None:
    password = tmp_path / "password"
    password.touch(mode=0o600)
    password.write_text(SECRET)
    with FakeLoki(basic_auth=("shipper", SECRET)) as loki:
        sink = make_sink(loki.url, basic_user="shipper", basic_password_file=password)
        ship(sink, [record(0)])
        assert loki.wait_for(1)[0].tenant == "fake"


# -- refusals in prepare ---------------------------------------------------------------------


def test_prepare_refuses_a_line_over_max_line_bytes(loki: FakeLoki) -> None:
    sink = make_sink(loki.url, max_line_bytes=200)
    sink.prepare(record(0))
    with pytest.raises(Refused) as caught:
        sink.prepare(record(1, reason="x" * 300))
    assert caught.value.reason == "too_large"


def test_prepare_refuses_an_observed_at_that_is_not_a_time(loki: FakeLoki) -> None:
    r = record(0)
    broken = Record(Entry(0, "yesterday", r.entry.event, r.entry.hash), checkpoint=None)
    with pytest.raises(Refused) as caught:
        make_sink(loki.url).prepare(broken)
    assert caught.value.reason == "invalid"


def test_prepare_refuses_a_timestamp_older_than_the_max_age(loki: FakeLoki) -> None:
    sink = make_sink(loki.url, reject_old_samples_max_age_seconds=3600)
    sink.prepare(record(0, age=3000))
    with pytest.raises(Refused) as caught:
        sink.prepare(record(1, age=3700))
    assert caught.value.reason == "too_old"
    make_sink(loki.url, reject_old_samples_max_age_seconds=None).prepare(record(2, age=30 * 86400))


# -- answers ---------------------------------------------------------------------------------


def test_429_is_retryable_with_retry_after(loki: FakeLoki) -> None:
    sink = make_sink(loki.url)
    loki.fail_next(429, retry_after=7)
    batch = [sink.prepare(record(0))]
    with pytest.raises(Retryable) as caught:
        sink.send(batch)
    assert (caught.value.reason, caught.value.retry_after) == ("http_429", 7.0)
    assert "Ingestion rate limit exceeded" in str(caught.value)
    sink.send(batch)
    assert len(loki.wait_for(1)) == 1


def test_retry_after_http_date_and_garbage() -> None:
    now = time.time()
    later = datetime.fromtimestamp(now, UTC) + timedelta(seconds=30)
    assert retry_after_seconds(format_datetime(later, usegmt=True), now=now) == pytest.approx(30, abs=1)
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT", now=now) == 0.0
    assert retry_after_seconds("soon") is None
    assert retry_after_seconds(None) is None


def test_500_is_retryable_and_the_resend_delivers(loki: FakeLoki) -> None:
    sink = make_sink(loki.url)
    loki.fail_next(500)
    batch = [sink.prepare(record(i)) for i in range(3)]
    with pytest.raises(Retryable) as caught:
        sink.send(batch)
    assert caught.value.reason == "http_5xx"
    sink.send(batch)
    assert [e.metadata["seq"] for e in loki.wait_for(3)] == ["0", "1", "2"]


@pytest.mark.parametrize(("status", "reason"), [(413, "too_large"), (422, "http_4xx")])
def test_other_refusals_are_rejected(loki: FakeLoki, status: int, reason: str) -> None:
    sink = make_sink(loki.url)
    loki.fail_next(status)
    with pytest.raises(Rejected) as caught:
        sink.send([sink.prepare(record(0))])
    assert caught.value.reason == reason


@pytest.mark.parametrize("status", [404, 405])
def test_a_wrong_url_is_retried_not_blamed_on_the_records(loki: FakeLoki, status: int) -> None:
    sink = make_sink(loki.url)
    loki.fail_next(status)
    with pytest.raises(Retryable) as caught:
        sink.send([sink.prepare(record(0))])
    assert caught.value.reason == "http_4xx" and "check the sink's url" in str(caught.value)


def test_400_for_one_bad_entry_keeps_the_valid_ones_and_the_bisected_resend_adds_no_duplicates() -> None:
    with FakeLoki(max_line_size=300) as loki:
        sink = make_sink(loki.url)  # the sink's own limit is Loki's default, above the fake's
        batch = [sink.prepare(r) for r in (record(0), record(1, reason="y" * 400), record(2))]
        with pytest.raises(Rejected) as caught:
            sink.send(batch)
        assert caught.value.reason == "too_large"
        assert "Max entry size '300' bytes exceeded for stream" in str(caught.value)
        assert [e.metadata["seq"] for e in loki.wait_for(2)] == ["0", "2"]
        sink.send(batch[:1])  # the shipper narrows: the halves without the bad record go again
        sink.send(batch[2:])
        with pytest.raises(Rejected):
            sink.send(batch[1:2])
        assert len(loki.entries) == 2


def test_loki_too_old_answer_maps_to_too_old() -> None:
    with FakeLoki(reject_old_samples_max_age=60) as loki:
        sink = make_sink(loki.url, reject_old_samples_max_age_seconds=None)
        with pytest.raises(Rejected) as caught:
            sink.send([sink.prepare(record(0, age=120))])
        assert caught.value.reason == "too_old"
        assert "has timestamp too old" in str(caught.value)


def test_rejection_reason_needs_every_error_to_agree() -> None:
    old = "entry for stream '{a=\"b\"}' has timestamp too old: 2026-11-01T00:00:00Z, oldest acceptable ..."
    new = "entry for stream '{a=\"b\"}' has timestamp too new: 2026-12-01T00:00:00Z"
    assert rejection_reason(old) == "too_old"
    assert rejection_reason(f"2 errors like: {old}") == "too_old"
    assert rejection_reason(f"1 errors like: {old}; 1 errors like: {new}") == "invalid"
    assert rejection_reason("couldn't parse labels: 1:2: parse error") == "invalid"


def test_message_is_truncated_to_500_characters() -> None:
    with FakeLoki(max_line_size=10) as loki:
        sink = make_sink(loki.url)
        with pytest.raises(Rejected) as caught:
            sink.send([sink.prepare(record(i)) for i in range(20)])
        assert len(str(caught.value)) <= len("Loki answered 400: ") + 500


def test_down_is_retryable_connect_and_up_again_delivers(loki: FakeLoki) -> None:
    sink = make_sink(loki.url)
    ship(sink, [record(0)])  # a kept-alive connection exists
    loki.down()
    batch = [sink.prepare(record(1))]
    with pytest.raises(Retryable) as caught:
        sink.send(batch)
    assert caught.value.reason == "connect"
    loki.up()
    sink.send(batch)
    assert len(loki.wait_for(2)) == 2


def test_no_answer_is_retryable_timeout() -> None:
    with socket.create_server(("127.0.0.1", 0)) as silent:  # listens, never answers
        sink = make_sink(f"http://127.0.0.1:{silent.getsockname()[1]}", timeout_seconds=0.2)
        with pytest.raises(Retryable) as caught:
            sink.send([sink.prepare(record(0))])
        assert caught.value.reason == "timeout"


# -- auth ------------------------------------------------------------------------------------


def test_wrong_token_is_retryable_auth_never_leaks_and_a_fixed_file_is_picked_up(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.touch(mode=0o600)
    token.write_text("wrong-" + SECRET)
    with FakeLoki(bearer_token=SECRET) as loki:
        sink = make_sink(loki.url, bearer_token_file=token)
        batch = [sink.prepare(record(0))]
        with pytest.raises(Retryable) as caught:
            sink.send(batch)
        assert caught.value.reason == "auth"
        assert SECRET not in str(caught.value) and SECRET not in repr(caught.value)
        assert SECRET not in sink._scrub(f"proxy echoed: Bearer wrong-{SECRET}")  # an echo is scrubbed too
        token.write_text(SECRET)  # the operator fixes the file
        sink.send(batch)
        assert len(loki.wait_for(1)) == 1


def test_missing_tenant_is_retryable_auth() -> None:
    with FakeLoki(require_tenant=True) as loki:
        sink = make_sink(loki.url)
        with pytest.raises(Retryable) as caught:
            sink.send([sink.prepare(record(0))])
        assert caught.value.reason == "auth"
        assert "no org id" in str(caught.value)


def test_config_errors_do_not_show_secrets(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.touch(mode=0o600)
    token.write_text(SECRET)
    with pytest.raises(ValidationError) as caught:
        LokiSinkConfig(name="l", type="loki", url=f"http://u:{SECRET}@127.0.0.1:3100")
    assert "credentials" in str(caught.value)
    with pytest.raises(ValidationError):
        LokiSinkConfig(name="l", type="loki", url="http://h", basic_user="u", bearer_token_file=token)
    with pytest.raises(ValidationError):
        LokiSinkConfig(name="l", type="loki", url="http://h", basic_user="u")
    with pytest.raises(ValidationError):
        LokiSinkConfig(name="l", type="loki", url="ftp://h")
    assert LokiSinkConfig(name="l", type="loki", url="http://h:3100/").url == "http://h:3100"


# -- TLS -------------------------------------------------------------------------------------


def test_tls_without_the_ca_fails_tls_and_with_it_delivers(tmp_path: Path) -> None:
    ca, cert, key = make_server_cert(tmp_path)
    with FakeLoki(tls=(cert, key)) as loki:
        assert loki.url.startswith("https://")
        untrusting = make_sink(loki.url)
        with pytest.raises(Retryable) as caught:
            untrusting.send([untrusting.prepare(record(0))])
        assert caught.value.reason == "tls"
        sink = make_sink(loki.url, tls={"ca_file": ca})
        ship(sink, [record(1)])
        assert loki.wait_for(1)[0].metadata["seq"] == "1"


# -- bytes on the wire -----------------------------------------------------------------------


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[pos]
        value |= (byte & 0x7F) << shift
        pos += 1
        if byte < 0x80:
            return value, pos
        shift += 7


def _fields(data: bytes) -> Iterator[tuple[int, int | bytes]]:
    """Protobuf wire format by hand (varint and length-delimited only), independent of the _pb2."""
    pos = 0
    while pos < len(data):
        key, pos = _varint(data, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(data, pos)
            yield number, value
        elif wire == 2:
            size, pos = _varint(data, pos)
            yield number, data[pos : pos + size]
            pos += size
        else:
            raise AssertionError(f"unexpected wire type {wire}")


def test_protobuf_body_is_raw_snappy_and_decodes_by_hand(loki: FakeLoki) -> None:
    sink = make_sink(loki.url)
    records = [record(0), record(1)]
    ship(sink, records)
    loki.wait_for(2)
    body = loki.requests[-1].body
    assert not body.startswith(b"\xff\x06\x00\x00sNaPpY")  # not the framed format
    raw = bytes(cramjam.snappy.decompress_raw(body))
    assert raw[0] == 0x0A  # field 1 (streams), length-delimited
    [(number, stream)] = list(_fields(raw))
    assert number == 1
    stream_fields = list(_fields(stream))
    assert stream_fields[0] == (1, b'{category="usage", environment="production", service="keylife", severity="info"}')
    entries = [value for number, value in stream_fields if number == 2]
    assert len(entries) == 2
    for r, entry in zip(records, entries, strict=True):
        fields = list(_fields(entry))
        timestamp = dict(_fields(fields[0][1]))
        assert timestamp[1] * 10**9 + timestamp.get(2, 0) == epoch_nanos(r.entry.observed_at)
        assert fields[1] == (2, canonical(r.entry.event))
        metadata = [dict(_fields(value)) for number, value in fields[2:] if number == 3]
        assert {m[1].decode(): m[2].decode() for m in metadata}["seq"] == str(r.seq)


def test_epoch_nanos_is_exact() -> None:
    assert epoch_nanos("1970-01-01T00:00:01.000001Z") == 1_000_001_000
    assert epoch_nanos("2026-11-28T10:00:00.123456Z") == 1795860000123456000
    assert epoch_nanos("2026-11-28T11:00:00.123456+01:00") == 1795860000123456000


# -- the fake itself -------------------------------------------------------------------------


def _push_json(loki: FakeLoki, streams: list[dict], content_type: str = "application/json", gz: bool = False):
    body = orjson.dumps({"streams": streams})
    headers = {"Content-Type": content_type} | ({"Content-Encoding": "gzip"} if gz else {})
    with httpx.Client(trust_env=False) as client:
        return client.post(loki.url + "/loki/api/v1/push", content=gzip.compress(body) if gz else body, headers=headers)


def test_the_fake_parses_labels_like_loki() -> None:
    assert parse_labels('{a="x", b="y\\"z",}', strict_order=True) == [("a", "x"), ("b", 'y"z')]
    assert parse_labels('{a="", b="y"}', strict_order=True) == [("b", "y")]
    for bad in ('{b="y", a="x"}', "{a=x}", '{1a="x"}', 'a="x"', '{a="x" b="y"}'):
        with pytest.raises(ValueError):
            parse_labels(bad, strict_order=True)
    assert parse_labels('{b="y", a="x"}', strict_order=False) == [("b", "y"), ("a", "x")]


def test_the_fake_refuses_what_loki_refuses(loki: FakeLoki) -> None:
    now = str(time.time_ns())
    assert _push_json(loki, [{"stream": {"a": "x"}, "values": [[now, "l"]]}], "text/plain").status_code == 415
    many = {f"l{i:02d}": "v" for i in range(16)}
    answer = _push_json(
        loki, [{"stream": many, "values": [[now, "l"]]}, {"stream": {"a": "x"}, "values": [[now, "ok"]]}]
    )
    assert answer.status_code == 400
    assert "has 16 label names; limit 15" in answer.text
    assert [e.line for e in loki.entries] == ["ok"]
    assert _push_json(loki, [{"stream": {"a": "x"}, "values": [[now, "ok"]]}]).status_code == 204
    assert len(loki.entries) == 1  # the exact duplicate was dropped
    assert _push_json(loki, [{"stream": {}, "values": [[now, "l"]]}]).status_code == 400
    gzipped = _push_json(loki, [{"stream": {"a": "x"}, "values": [[now, "gz", {"k": "v"}]]}], gz=True)
    assert gzipped.status_code == 204
    assert loki.entries[-1].line == "gz" and loki.entries[-1].metadata == {"k": "v"}
    future = str(time.time_ns() + 3600 * 10**9)
    answer = _push_json(loki, [{"stream": {"a": "x"}, "values": [[future, "l"]]}])
    assert (answer.status_code, "has timestamp too new" in answer.text) == (400, True)
