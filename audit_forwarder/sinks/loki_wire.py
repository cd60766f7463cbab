"""Loki's ``PushRequest`` (``loki_push.proto``) in protobuf wire format, written directly.

Why not the protobuf library's message objects: filling ``EntryAdapter`` messages with ``add()``
cost about 4 us a record, the largest single cost of shipping to Loki. Here each entry is
encoded once, in ``prepare``, into its final bytes; a batch is then only length prefixes and
concatenation. The wire format (protobuf encoding spec: varints, tag = field << 3 | wire type,
length-delimited fields) is small for these four messages, and ``tests/test_loki_wire.py``
holds the output byte-equal to the protobuf library's own serialisation for generated input.

    PushRequest    { repeated StreamAdapter streams = 1; }
    StreamAdapter  { string labels = 1; repeated EntryAdapter entries = 2; uint64 hash = 3; }
    EntryAdapter   { Timestamp timestamp = 1; string line = 2; repeated LabelPairAdapter structuredMetadata = 3; }
    LabelPairAdapter { string name = 1; string value = 2; }
    Timestamp      { int64 seconds = 1; int32 nanos = 2; }
"""

from __future__ import annotations

from collections.abc import Iterable


def _encode_varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


_SMALL = [_encode_varint(n) for n in range(1 << 14)]  # every 1- and 2-byte varint, looked up
# The low 14 bits of a larger value: two bytes, both with the continuation bit set.
_LOW = [bytes(((n & 0x7F) | 0x80, ((n >> 7) & 0x7F) | 0x80)) for n in range(1 << 14)]
_NAME_PREFIXES: dict[str, bytes] = {}


def varint(value: int) -> bytes:
    """Unsigned base-128 varint; ``value`` >= 0. Table lookups up to 2^42 (nanoseconds, seconds)."""
    if value < 16384:
        return _SMALL[value]
    if value < 1 << 28:
        return _LOW[value & 0x3FFF] + _SMALL[value >> 14]
    if value < 1 << 42:
        return _LOW[value & 0x3FFF] + _LOW[(value >> 14) & 0x3FFF] + _SMALL[value >> 28]
    return _encode_varint(value)


def _name_prefix(name: str) -> bytes:
    """``name`` field (1) of a LabelPairAdapter and the tag of its ``value`` field (2)."""
    prefix = _NAME_PREFIXES.get(name)
    if prefix is None:
        raw = name.encode()
        prefix = (b"\x0a" + varint(len(raw)) + raw if raw else b"") + b"\x12"
        if len(_NAME_PREFIXES) < 256:
            _NAME_PREFIXES[name] = prefix
    return prefix


def entry(ts_ns: int, line: bytes, metadata: Iterable[tuple[str, str]]) -> bytes:
    """One EntryAdapter (without its own tag and length): timestamp, line, structured metadata."""
    seconds, nanos = divmod(ts_ns, 1_000_000_000)
    # proto3 leaves fields at their default (0, "") out; so do we, to stay byte-equal.
    timestamp = (b"\x08" + varint(seconds) if seconds else b"") + (b"\x10" + varint(nanos) if nanos else b"")
    parts = [b"\x0a", _SMALL[len(timestamp)], timestamp]
    if line:
        parts += (b"\x12", varint(len(line)), line)
    for name, value in metadata:
        prefix = _name_prefix(name)
        raw = value.encode()
        tail = varint(len(raw)) + raw if raw else b""
        body_len = len(prefix) + len(tail) - (0 if raw else 1)  # no value: no value tag either
        parts += (b"\x1a", varint(body_len), prefix if raw else prefix[:-1], tail)
    return b"".join(parts)


def push_request(streams: Iterable[tuple[str, list[bytes]]]) -> bytes:
    """A PushRequest of (label string, encoded entries) streams, in the order given."""
    out = []
    for labels, entries in streams:
        raw = labels.encode()
        body = [b"\x0a", varint(len(raw)), raw] if raw else []
        for encoded in entries:
            body += (b"\x12", varint(len(encoded)), encoded)
        stream = b"".join(body)
        out += (b"\x0a", varint(len(stream)), stream)
    return b"".join(out)
