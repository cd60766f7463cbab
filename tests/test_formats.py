"""SIEM formatters: exact bytes, escaping, RFC 5424 limits, and parse-back properties."""

from __future__ import annotations

import json
import re

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from audit_forwarder.formats import cef, ecs, leef, syslog5424, syslog_severity
from audit_forwarder.shipper.contract import Record
from audit_forwarder.sinks.syslog import SyslogSink, SyslogSinkConfig
from keylife.common.canonical import canonical
from keylife.journal.writer import Entry

HASH = bytes([1]) * 32
HEX = "01" * 32
EVENT = {"id": "ev-1", "type": "compromised", "key_id": "k1", "occurred_at": "2026-11-28T16:04:18Z", "node": "n1"}
EVENT |= {"actor": "alice", "reason": "leaked", "origin": "observation", "algorithm": "ed25519"}
OBSERVED = "2026-11-28T16:04:19.123456Z"


def entry(event: dict | None = None, seq: int = 41) -> Entry:
    return Entry(seq=seq, observed_at=OBSERVED, event=EVENT if event is None else event, hash=HASH)


CONTROLS = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")  # C0, DEL, C1, line/paragraph separator


def shown(text: str, forms: dict[str, str]) -> str:
    """``text`` as a format shows it: each control character in ``forms`` as given there, every
    other one as U+FFFD (a model of the formatters' replacements, independent of their tables)."""
    return CONTROLS.sub(lambda m: forms.get(m.group(), "\ufffd"), text)


def cef_header_text(text: str) -> str:
    return shown(text, {"\r": " ", "\n": " ", "\t": " "})


def cef_value_text(text: str) -> str:
    """What a CEF parser reads back from an extension value: CR and LF exact, TAB a space."""
    return shown(text, {"\r": "\r", "\n": "\n", "\t": " "})


def leef_value_text(text: str, delimiter: str) -> str:
    space = "_" if delimiter == " " else " "
    return shown(text.replace(delimiter, space), {"\r": space, "\n": space, "\t": space})


def sd_text(text: str) -> str:
    return shown(text, {})


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


# Text heavy in what formats must escape: every control character (C0, DEL, C1, U+2028/9), the
# formats' own delimiters and escape characters, and anything else Unicode has.
SPECIAL = "".join(map(chr, [*range(0x20), *range(0x7F, 0xA0), 0x2028, 0x2029])) + '\\|="] ^;'
text = st.text(st.sampled_from(SPECIAL) | st.characters(codec="utf-8"), max_size=40)
events = st.fixed_dictionaries(
    {"id": text, "type": text, "key_id": text, "node": text, "actor": text, "reason": text, "note": text},
    optional={"attributes": st.dictionaries(text, text, max_size=3)},
)
SD_KEYS = ("id", "key_id", "node", "actor")
FAST = settings(max_examples=300, deadline=None)


@FAST
@given(events, text, st.integers(0, 2**53 - 1))
def test_cef_has_no_raw_control_character_and_parses_back(event, host, seq):
    record = cef.format_event(entry(event, seq), hostname=host, checkpoint=seq, device_version=event["note"])
    assert CONTROLS.search(record.decode()) is None
    header, ext = parse_cef(record)
    assert header == [
        "CEF:0", "DataFold", "keylife", cef_header_text(event["note"]), cef_header_text(event["type"]) or "unknown",
        cef_header_text(event["type"].replace("_", " ")) or "unknown", header[6],
    ]  # fmt: skip
    assert ext["dvchost"] == cef_value_text(host) and ext["externalId"] == cef_value_text(event["id"])
    got = (ext["suser"], ext["cs1"], ext["cs3"], ext["msg"], ext["keylifeNote"])
    assert got == tuple(cef_value_text(event[k]) for k in ("actor", "key_id", "node", "reason", "note"))
    if "attributes" in event:
        assert ext["keylifeAttributes"] == cef_value_text(canonical(event["attributes"]).decode())
    assert ext["cn1"] == str(seq) and ext["cn2"] == str(seq) and ext["cs2"] == HEX


@FAST
@given(events, text)
def test_syslog_has_no_raw_control_character_and_parses_back(event, host):
    msg = syslog5424.format_message(entry(event), hostname=host, checkpoint=7)
    assert CONTROLS.search(msg.decode()) is None
    head, sd_id, params, parsed = parse_sd(msg)
    assert sd_id == "keylife@32473" and parsed == event  # MSG: the exact event, escapes and all
    assert all(len(f) >= 1 and all(33 <= ord(c) <= 126 for c in f) for f in head[1:6])
    assert params == {"seq": "41", "hash": HEX, "checkpoint": "7"} | {k: sd_text(event[k]) for k in SD_KEYS}
    if CONTROLS.search(canonical(event).decode()) is None:  # nothing to escape: the journal's bytes
        assert msg.endswith(syslog5424.BOM + canonical(event))


@FAST
@given(events, text, st.sampled_from(["\t", "^", " ", ";"]), st.sampled_from(["1.0", "2.0"]))
def test_leef_has_no_raw_control_character_and_parses_back(event, host, delimiter, version):
    if version == "1.0":
        delimiter = "\t"
    record = leef.format_event(entry(event), hostname=host, delimiter=delimiter, version=version, device_version="1")
    header, body = split_header(record.decode(), 6 if version == "2.0" else 5)
    assert CONTROLS.search("|".join(header)) is None
    assert header[4] == (cef_header_text(event["type"]) or "unknown")
    pairs = leef.attributes(entry(event), hostname=host, checkpoint=None)
    parts = body.split(delimiter)
    assert len(parts) == len(pairs)  # the delimiter is the only control character, between attributes
    assert all(CONTROLS.search(part) is None for part in parts)
    assert [p.split("=", 1) for p in parts] == [[k, leef_value_text(v, delimiter)] for k, v in pairs]
    assert dict(pairs)["reason"] == event["reason"] and dict(pairs)["usrName"] == event["actor"]


@FAST
@given(events, text, st.sampled_from(["rfc5424", "cef", "leef", "ecs"]))
def test_every_siem_format_on_the_wire_is_free_of_raw_control_characters(event, host, fmt):
    """Through the syslog sink, framed as it is sent: nothing but the LEEF delimiter is a control
    character, anywhere in the message (header, structured data, MSG); ECS stays JSON that
    parses back to the same document."""
    sink = SyslogSink(
        SyslogSinkConfig(
            type="syslog", name="s", host="siem.example", port=6514, transport="tcp", format=fmt, hostname=host
        )
    )
    framed = sink.prepare(Record(entry(event), checkpoint=3)).payload
    length, _, message = framed.partition(b" ")
    assert int(length) == len(message)
    wire = message.decode("utf-8")
    assert CONTROLS.search(wire.replace("\t", "") if fmt == "leef" else wire) is None
    if fmt == "ecs":
        document = json.loads(message.split(syslog5424.BOM, 1)[1])
        assert document == json.loads(orjson.dumps(ecs.ecs_document(entry(event), checkpoint=3, hostname=host)))
        assert document["keylife"]["event"] == event


def test_the_characters_named_in_the_issue_in_each_format():
    nasty = {"id": "e", "type": "revoked", "actor": "a\x00b", "reason": "\x07\x1b[2J\x7f\x85\u2028\u2029\x00"}
    cef_record = cef.format_event(entry(nasty), hostname="h", device_version="1").decode()
    assert "suser=a\ufffdb " in cef_record and cef_record.endswith("msg=\ufffd\ufffd[2J" + "\ufffd" * 5)
    leef_record = leef.format_event(entry(nasty), hostname="h", device_version="1").decode()
    assert "\tusrName=a\ufffdb\t" in leef_record and leef_record.endswith("\treason=\ufffd\ufffd[2J" + "\ufffd" * 5)
    msg = syslog5424.format_message(entry(nasty), hostname="h")
    assert b'actor="a\xef\xbf\xbdb"' in msg  # U+FFFD in the PARAM-VALUE
    assert msg.endswith(b'"reason":"\\u0007\\u001b[2J\\u007f\\u0085\\u2028\\u2029\\u0000","type":"revoked"}')
    assert ecs.format_document(entry(nasty)).count(b"\\u2028") == 2  # event.reason and keylife.event.reason


def test_a_record_with_details_reaches_every_siem_format_whole():
    """Incident response records carry structured ``details``: CEF and LEEF show them as one canonical
    JSON value, RFC 5424 keeps the whole event in MSG, and the severity is a warning."""
    event = {
        "id": "keylife-1", "type": "incident", "occurred_at": "2026-11-28T16:04:18Z", "actor": "keylife",
        "correlation_id": "inc-20261128-ab12", "reason": "compromise of k1",
        "details": {"action": "opened", "severity": "critical", "keys": ["k1", "k=2"], "auto": True},
    }  # fmt: skip
    _, ext = parse_cef(cef.format_event(entry(event), hostname="h", checkpoint=None))
    assert json.loads(ext["keylifeDetails"]) == event["details"]
    assert syslog_severity("incident") == 4 and syslog_severity("lockdown") == 4
    leef_record = leef.format_event(entry(event), hostname="h", checkpoint=None).decode()
    assert canonical(event["details"]).decode() in leef_record
    *_, msg = parse_sd(syslog5424.format_message(entry(event), hostname="h", checkpoint=None))
    assert msg == event
