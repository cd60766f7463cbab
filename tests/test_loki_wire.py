"""The hand-written PushRequest encoding is byte-equal to the protobuf library's, for any input."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from audit_forwarder.sinks import loki_wire
from audit_forwarder.sinks.loki_push_pb2 import PushRequest

text = st.text(max_size=300)
metadata = st.lists(st.tuples(st.text(min_size=1, max_size=40), text), max_size=10)
entries = st.lists(st.tuples(st.integers(0, 2**62), st.text(max_size=20_000), metadata), min_size=1, max_size=5)
streams = st.lists(st.tuples(st.text(min_size=1, max_size=200), entries), min_size=1, max_size=4)


def _library(streams_in: list) -> bytes:
    request = PushRequest()
    for labels, items in streams_in:
        stream = request.streams.add()
        stream.labels = labels
        for ts_ns, line, pairs in items:
            entry = stream.entries.add(line=line)
            entry.timestamp.seconds, entry.timestamp.nanos = divmod(ts_ns, 1_000_000_000)
            for name, value in pairs:
                entry.structuredMetadata.add(name=name, value=value)
    return request.SerializeToString()


@settings(max_examples=300, deadline=None)
@given(streams)
def test_push_request_bytes_equal_the_protobuf_library(streams_in):
    ours = loki_wire.push_request(
        [
            (labels, [loki_wire.entry(ts, line.encode(), pairs) for ts, line, pairs in items])
            for labels, items in streams_in
        ]
    )
    assert ours == _library(streams_in)
    assert PushRequest.FromString(ours) == PushRequest.FromString(_library(streams_in))


@given(st.integers(0, 2**64 - 1))
def test_varint(value):
    from google.protobuf.internal.encoder import _VarintBytes

    assert loki_wire.varint(value) == _VarintBytes(value)
