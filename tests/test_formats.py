"""SIEM formatters: exact bytes, escaping, RFC 5424 limits, and parse-back properties."""

from __future__ import annotations

import json
import re
import unicodedata

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from audit_forwarder.formats import cef, leef, syslog5424, syslog_severity
from audit_forwarder.journal.writer import Entry

HASH = bytes([1]) * 32
HEX = "01" * 32
EVENT = {"id": "ev-1", "type": "compromised", "key_id": "k1", "occurred_at": "2026-11-28T16:04:18Z", "node": "n1"}
EVENT |= {"actor": "alice", "reason": "leaked", "origin": "observation", "algorithm": "ed25519"}
OBSERVED = "2026-11-28T16:04:19.123456Z"


def entry(event: dict | None = None, seq: int = 41) -> Entry:
    return Entry(seq=seq, observed_at=OBSERVED, event=EVENT if event is None else event, hash=HASH)


def split_header(text: str, count: int) -> tuple[list[str], str]:
    """CEF / LEEF header: ``count`` fields ended by unescaped pipes, ``\\|`` and ``\\\\`` unescaped."""
    m = re.match(r"((?:\\.|[^\\|])*)\|" * count, text, re.S)
    return [re.sub(r"\\(.)", r"\1", f, flags=re.S) for f in m.groups()], text[m.end() :]


def parse_cef(record: bytes) -> tuple[list[str], dict[str, str]]:
    """Extension: each unescaped ``=`` ends a key (the word before it); its value runs to the next key."""
    header, ext = split_header(record.decode(), 7)
    equals = [m.start() for m in re.finditer(r"\\.|=", ext, re.S) if m.group() == "="]
    starts = [ext.rfind(" ", 0, e) + 1 for e in equals]
    ends = [s - 1 for s in starts[1:]] + [len(ext)]
    unescape = {"\\": "\\", "=": "=", "n": "\n", "r": "\r"}
    return header, {
        ext[k:e]: re.sub(r"\\(.)", lambda m: unescape[m.group(1)], ext[e + 1 : end], flags=re.S)
        for k, e, end in zip(starts, equals, ends, strict=True)
    }


def parse_sd(message: bytes) -> tuple[list[str], str, dict[str, str], dict]:
    """RFC 5424 header fields, SD-ID and params of the one SD-ELEMENT, and the JSON MSG after the BOM."""
    *head, rest = message.decode("utf-8").split(" ", 6)
    m = re.fullmatch(r'\[([^ \]"=]+)((?: [^ \]"=]+="(?:\\.|[^"\\])*")*)\] \ufeff(.*)', rest, re.S)
    params = re.findall(r' ([^ \]"=]+)="((?:\\.|[^"\\])*)"', m.group(2), re.S)
    unescaped = {k: re.sub(r'\\(["\\\]])', r"\1", v) for k, v in params}
    return head, m.group(1), unescaped, json.loads(m.group(3))


def test_syslog_exact_bytes():
    msg = syslog5424.format_message(entry(), hostname="host.example", checkpoint=1000)
    assert msg == (
        b"<82>1 2026-11-28T16:04:19.123456Z host.example keylife - compromised "
        b'[keylife@32473 seq="41" hash="' + HEX.encode() + b'" checkpoint="1000" id="ev-1" key_id="k1" '
        b'node="n1" actor="alice"] \xef\xbb\xbf{"actor":"alice","algorithm":"ed25519","id":"ev-1","key_id":"k1",'
        b'"node":"n1","occurred_at":"2026-11-28T16:04:18Z","origin":"observation","reason":"leaked",'
        b'"type":"compromised"}'
    )
    assert syslog5424.frame_octet_counting(msg) == str(len(msg)).encode() + b" " + msg
    assert syslog5424.frame_octet_counting("é".encode()) == b"2 \xc3\xa9"


def test_cef_exact_bytes():
    record = cef.format_event(entry(), hostname="host.example", checkpoint=1000, device_version="1.2.3")
    expected = (
        "CEF:0|DataFold|keylife|1.2.3|compromised|compromised|10|rt=1795881859123 dvchost=host.example "
        f"externalId=ev-1 suser=alice cs1Label=keyId cs1=k1 cs2Label=chainHash cs2={HEX} cs3Label=node cs3=n1 "
        "cn1Label=journalSeq cn1=41 cn2Label=checkpointSize cn2=1000 start=1795881858000 msg=leaked "
        "keylifeAlgorithm=ed25519 keylifeOrigin=observation"
    )
    assert record == expected.encode()


def test_leef_exact_bytes():
    record = leef.format_event(entry(), hostname="host.example", checkpoint=1000, device_version="1.2.3")
    expected = (
        "LEEF:2.0|DataFold|keylife|1.2.3|compromised|x09|devTime=2026-11-28T16:04:19.123+0000\t"
        "devTimeFormat=yyyy-MM-dd'T'HH:mm:ss.SSSZ\tcat=compromised\tsev=10\tusrName=alice\tdvchost=host.example\t"
        f"eventId=ev-1\tkeyId=k1\tnode=n1\tseq=41\tchainHash={HEX}\tcheckpoint=1000\treason=leaked\t"
        "algorithm=ed25519\toccurred_at=2026-11-28T16:04:18Z\torigin=observation"
    )
    assert record == expected.encode()
    v1 = leef.format_event(entry(), hostname="h", version="1.0", device_version="1.2.3")
    assert v1.startswith(b"LEEF:1.0|DataFold|keylife|1.2.3|compromised|devTime=")
    assert leef.format_event(entry(), hostname="h", delimiter="^", device_version="1").split(b"|")[5] == b"^"


NASTY = {**EVENT, "type": "a|b\\c", "actor": 'q"u]o\\te', "reason": "x=1 | y\\z\nnew\rline clé 🔑", "node": "]"}


def test_cef_escaping():
    record = cef.format_event(entry(NASTY), hostname="h", device_version="1|2")
    text = record.decode()
    assert text.startswith("CEF:0|DataFold|keylife|1\\|2|a\\|b\\\\c|a\\|b\\\\c|4|")
    assert "msg=x\\=1 | y\\\\z\\nnew\\rline clé 🔑" in text
    assert 'suser=q"u]o\\\\te' in text
    assert b"\n" not in record and b"\r" not in record
    header, ext = parse_cef(record)
    assert header[3:5] == ["1|2", "a|b\\c"] and ext["msg"] == NASTY["reason"]
    assert cef.escape_header("a\nb\rc") == "a b c"
    bare = cef.format_event(entry({"id": "x", "occurred_at": "not a time"}), hostname="h", device_version="1")
    assert b"|unknown|unknown|4|" in bare and b"cs1Label" not in bare and b"cn2" not in bare
    assert b"keylifeOccurredAt=not a time" in bare


def test_syslog_escaping_and_non_ascii():
    msg = syslog5424.format_message(entry(NASTY), hostname="h")
    assert b'actor="q\\"u\\]o\\\\te"' in msg and b'node="\\]"' in msg
    assert b"\n" not in msg and b"\r" not in msg
    _, _, params, event = parse_sd(msg)
    assert params["actor"] == NASTY["actor"] and event == NASTY
    assert "clé 🔑".encode() in msg  # MSG is UTF-8, not \u-escaped
    assert syslog5424.param_value("a\nb\x00c\x7f") == "a\ufffdb\ufffdc\ufffd" and syslog5424.param_value(True) == "true"


def test_leef_escaping():
    record = leef.format_event(entry(NASTY), hostname="h", device_version="1")
    assert record.startswith(b"LEEF:2.0|DataFold|keylife|1|a\\|b\\\\c|x09|")
    assert "reason=x=1 | y\\z new line clé 🔑".encode() in record
    assert leef.clean_value("a\tb c", "\t") == "a b c" and leef.clean_value("a b\nc", " ") == "a_b_c"
    for bad in ("|", "=", "\\", "\n", "ab", "é"):
        with pytest.raises(ValueError):
            leef.format_event(entry(), hostname="h", delimiter=bad)
    with pytest.raises(ValueError):
        leef.format_event(entry(), hostname="h", version="1.0", delimiter="^")


def test_syslog_field_limits_severities_and_timestamp():
    long_type = {**EVENT, "type": "t" * 40}
    msg = syslog5424.format_message(entry(long_type), hostname="h" * 300, app_name="a" * 60, procid="p" * 200)
    assert [len(f) for f in msg.split(b" ", 6)[2:6]] == [255, 48, 128, 32]
    odd = syslog5424.format_message(entry(), hostname="höst name\n", app_name="", procid="1 2")
    assert odd.split(b" ", 6)[2:5] == [b"h_st_name_", b"-", b"1_2"]
    assert syslog5424.format_message(entry({"id": "x"}), hostname="h").split(b" ")[5] == b"unknown"
    assert b"[keylife@1234.5 " in syslog5424.format_message(entry(), hostname="h", pen="1234.5")
    for kwargs in ({"pen": "12a"}, {"pen": ""}, {"facility": 24}):
        with pytest.raises(ValueError):
            syslog5424.format_message(entry(), hostname="h", **kwargs)
    for name in ("", "a" * 33, "a=b", "a b", "a]", 'a"', "é"):
        with pytest.raises(ValueError):
            syslog5424.check_sd_name(name)

    assert max(syslog_severity(t) for t in ("compromised", "auth_failure", "command_refused")) <= 4
    assert syslog_severity("usage_report") == 6 and syslog_severity("something_new") == 5
    assert syslog5424.timestamp("2026-11-28T17:04:19.5+01:00") == "2026-11-28T16:04:19.500000Z"
    pri = syslog5424.format_message(entry({**EVENT, "type": "usage_report"}), hostname="h", facility=4)
    assert pri.startswith(b"<38>1 ")


text = st.text(max_size=40)
events = st.fixed_dictionaries(
    {"id": text, "type": text, "key_id": text, "node": text, "actor": text, "reason": text, "note": text}
)
SD_KEYS = ("id", "key_id", "node", "actor")
FAST = settings(max_examples=300, deadline=None)


@FAST
@given(events, text, st.integers(0, 2**53 - 1))
def test_cef_extension_parses_back(event, host, seq):
    record = cef.format_event(entry(event, seq), hostname=host, checkpoint=seq, device_version=event["note"])
    assert b"\n" not in record and b"\r" not in record
    header, ext = parse_cef(record)
    flat = {k: v.replace("\n", " ").replace("\r", " ") for k, v in event.items()}
    assert header == ["CEF:0", "DataFold", "keylife", flat["note"], flat["type"] or "unknown", header[5], header[6]]
    assert ext["dvchost"] == host and ext["externalId"] == event["id"] and ext["suser"] == event["actor"]
    got = (ext["cs1"], ext["cs3"], ext["msg"], ext["keylifeNote"])
    assert got == (event["key_id"], event["node"], event["reason"], event["note"])
    assert ext["cn1"] == str(seq) and ext["cn2"] == str(seq) and ext["cs2"] == HEX


@FAST
@given(events, text)
def test_syslog_structured_data_parses_back(event, host):
    msg = syslog5424.format_message(entry(event), hostname=host, checkpoint=7)
    assert b"\n" not in msg and b"\r" not in msg
    head, sd_id, params, parsed = parse_sd(msg)
    assert sd_id == "keylife@32473" and parsed == event
    assert all(len(f) >= 1 and all(33 <= ord(c) <= 126 for c in f) for f in head[1:6])
    unfold = {k: "".join("\ufffd" if unicodedata.category(c) == "Cc" else c for c in event[k]) for k in event}
    assert params == {"seq": "41", "hash": HEX, "checkpoint": "7"} | {k: unfold[k] for k in SD_KEYS}


@FAST
@given(events, text, st.sampled_from(["\t", "^", " ", ";"]))
def test_leef_values_never_hold_the_delimiter(event, host, delimiter):
    record = leef.format_event(entry(event), hostname=host, delimiter=delimiter, device_version="1")
    assert b"\n" not in record and b"\r" not in record
    header, body = split_header(record.decode(), 6)
    assert header[4] == (event["type"].replace("\n", " ").replace("\r", " ") or "unknown")
    pairs = leef.attributes(entry(event), hostname=host, checkpoint=None)
    parts = body.split(delimiter)
    assert len(parts) == len(pairs)
    assert [p.split("=", 1)[0] for p in parts] == [k for k, _ in pairs]
