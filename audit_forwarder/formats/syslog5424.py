"""RFC 5424 syslog messages for journal entries, and RFC 6587 / RFC 5425 octet-counting framing.

``<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID [keylife@PEN ...] BOM{canonical JSON event}``

Choices (RFC 5424 section 6 leaves them to the sender):

* Header fields (HOSTNAME <= 255, APP-NAME <= 48, PROCID <= 128, MSGID <= 32) must be
  PRINTUSASCII (33..126): every other character is replaced by ``_``, then the field is
  truncated to its limit; an empty field becomes the NILVALUE ``-``. Never refused, so one odd
  hostname cannot stop a sink.
* TIMESTAMP is ``observed_at`` normalised to UTC with exactly 6 fractional digits and ``Z``.
* The SD-ELEMENT is an index of the entry, not its copy: PARAM-VALUEs escape ``"``, ``\\`` and
  ``]`` with a backslash (6.3.3), and control characters (C0, DEL, C1, U+2028, U+2029: which
  6.3.3 cannot escape and which would break newline-framed receivers) are replaced by U+FFFD.
  Absent values are omitted.
* MSG is the authoritative event: canonical JSON (RFC 8785) after the UTF-8 BOM (6.4). JSON
  escapes U+0000..U+001F itself; DEL, C1 controls and U+2028 / U+2029, which canonical JSON
  leaves raw, are written as JSON ``\\uXXXX`` escapes too (``json_escape_controls``). RFC 5424
  8.2 lets a receiver rewrite control characters in MSG (rsyslog's ``#NNN``); a MSG without any
  gives it nothing to rewrite, and it parses back to exactly the journal's event. Only an event
  with such a character differs from the journal's bytes: re-canonicalise the parsed event to
  recompute its chain hash.

Speed: a sink formats every entry it ships (tens of thousands a second), so the common case
(plain ASCII fields, a timestamp already in the output form) takes regex fast paths that find
the characters needing work, and only they pay for the slow path. The bytes are the same either
way (``tests/test_formats.py`` holds them exact and checks the escaping on generated text).
"""

from __future__ import annotations

import re
from datetime import datetime
from functools import lru_cache
from typing import Any

from audit_forwarder.formats import event_type, json_escape_controls, parse_time, syslog_severity
from keylife.common.canonical import canonical
from keylife.journal.reader import Entry

# 32473 is the Private Enterprise Number RFC 5612 reserves for documentation and examples
# (RFC 5424 uses it too). A deployment with its own IANA PEN passes it as ``pen``.
EXAMPLE_PEN = "32473"
SD_NAME = "keylife"
BOM = b"\xef\xbb\xbf"
NILVALUE = "-"
FACILITY_AUTHPRIV = 10
LIMITS = {"hostname": 255, "app_name": 48, "procid": 128, "msgid": 32}

_PEN_RE = re.compile(r"[0-9]+(\.[0-9]+)*\Z")  # \Z: "$" would accept a trailing newline
_SD_NAME_FORBIDDEN = frozenset('= ]"')
_PARAM_ESCAPES = str.maketrans({"\\": "\\\\", '"': '\\"', "]": "\\]"})
_NOT_PRINTUSASCII = re.compile(r"[^\x21-\x7e]")
# Unicode general category Cc is exactly U+0000..U+001F and U+007F..U+009F; U+2028/9 break lines too.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_PARAM_WORK = re.compile('[\x00-\x1f\x7f-\x9f\u2028\u2029"\\\\\\]]')
_UTC_MICROS = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{6}Z")


def header_field(value: str | None, limit: int) -> str:
    """A header field as PRINTUSASCII, at most ``limit`` characters, ``-`` when empty."""
    if not value:
        return NILVALUE
    return _NOT_PRINTUSASCII.sub("_", value)[:limit]


def check_sd_name(name: str) -> str:
    """SD-NAME: 1..32 PRINTUSASCII except ``=``, space, ``]`` and ``"`` (RFC 5424 section 6)."""
    if not 1 <= len(name) <= 32 or any(not 33 <= ord(ch) <= 126 or ch in _SD_NAME_FORBIDDEN for ch in name):
        raise ValueError(f"{name!r} is not a valid RFC 5424 SD-NAME")
    return name


@lru_cache(maxsize=64)
def sd_id(pen: str = EXAMPLE_PEN) -> str:
    if not _PEN_RE.match(pen):
        raise ValueError(f"private enterprise number {pen!r} must be digits (and dots)")
    return check_sd_name(f"{SD_NAME}@{pen}")


def param_value(value: Any) -> str:
    """PARAM-VALUE with ``"``, ``\\`` and ``]`` escaped and control characters replaced."""
    text = value if type(value) is str else str(value)  # str() of a str subclass (an enum) may differ
    if isinstance(value, bool):
        text = text.lower()
    if _PARAM_WORK.search(text) is None:
        return text
    return _CONTROL.sub("\ufffd", text).translate(_PARAM_ESCAPES)


def timestamp(observed_at: str) -> str:
    """RFC 3339 in UTC with microseconds (RFC 5424 allows at most 6 fractional digits)."""
    if _UTC_MICROS.fullmatch(observed_at):  # already the output form (the journal writes it so)
        datetime.fromisoformat(observed_at)  # still refuse an impossible date, as the slow path does
        return observed_at
    return parse_time(observed_at).isoformat(timespec="microseconds").replace("+00:00", "Z")


_EVENT_PARAMS = tuple(check_sd_name(name) for name in ("id", "key_id", "node", "actor"))


def structured_data(entry: Entry, *, checkpoint: int | None, pen: str = EXAMPLE_PEN) -> str:
    """``[keylife@PEN seq=.. hash=.. checkpoint=.. id=.. key_id=.. node=.. actor=..]``, absent ones left out."""
    event = entry.event
    seq = entry.seq
    # an int's decimal form never needs escaping (bool, an int subclass, goes through param_value)
    text = f'[{sd_id(pen)} seq="{seq if type(seq) is int else param_value(seq)}" hash="{entry.hash.hex()}"'
    if checkpoint is not None:
        text += f' checkpoint="{checkpoint if type(checkpoint) is int else param_value(checkpoint)}"'
    for name in _EVENT_PARAMS:
        value = event.get(name)
        if value is not None:
            text += f' {name}="{param_value(value)}"'
    return text + "]"


def format_message(
    entry: Entry,
    *,
    hostname: str,
    app_name: str = "keylife",
    procid: str = NILVALUE,
    facility: int = FACILITY_AUTHPRIV,
    checkpoint: int | None = None,
    pen: str = EXAMPLE_PEN,
    event_json: bytes | None = None,
) -> bytes:
    """One RFC 5424 message (no framing, no trailing newline). ``event_json``: the event's
    canonical JSON when the caller already holds it (the journal line has it)."""
    sd = structured_data(entry, checkpoint=checkpoint, pen=pen)
    head = header(entry, hostname=hostname, app_name=app_name, procid=procid, facility=facility, sd=sd)
    return head.encode() + BOM + json_escape_controls(canonical(entry.event) if event_json is None else event_json)


def header(
    entry: Entry,
    *,
    hostname: str,
    app_name: str = "keylife",
    procid: str = NILVALUE,
    facility: int = FACILITY_AUTHPRIV,
    sd: str = NILVALUE,
) -> str:
    """``<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID SD`` and the space before MSG.

    Public so a sink can put another MSG (a CEF or LEEF record) behind the same header; ``sd``
    is taken as it is (``-`` or an already escaped SD-ELEMENT).
    """
    start, fields = _fixed_header(event_type(entry.event), facility, hostname, app_name, procid)
    return f"{start}{timestamp(entry.observed_at)} {fields} {sd} "


@lru_cache(maxsize=4096)
def _fixed_header(kind: str, facility: int, hostname: str, app_name: str, procid: str) -> tuple[str, str]:
    """``("<PRI>1 ", "HOSTNAME APP-NAME PROCID MSGID")``: all but the timestamp depends only on the
    event type and the sender's settings, so a sink computes it once per type, not per message."""
    if not 0 <= facility <= 23:
        raise ValueError(f"facility {facility} is outside 0..23")
    pri = facility * 8 + syslog_severity(kind)
    fields = (
        header_field(hostname, LIMITS["hostname"]),
        header_field(app_name, LIMITS["app_name"]),
        header_field(procid, LIMITS["procid"]),
        header_field(kind, LIMITS["msgid"]),
    )
    return f"<{pri}>1 ", " ".join(fields)


def frame_octet_counting(message: bytes) -> bytes:
    """``MSG-LEN SP SYSLOG-MSG`` (RFC 6587 section 3.4.1, RFC 5425 section 4.3)."""
    return str(len(message)).encode() + b" " + message
