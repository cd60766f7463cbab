"""RFC 5424 syslog messages for journal entries, and RFC 6587 / RFC 5425 octet-counting framing.

``<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID [keylife@PEN ...] BOM{canonical JSON event}``

Choices (RFC 5424 section 6 leaves them to the sender):

* Header fields (HOSTNAME <= 255, APP-NAME <= 48, PROCID <= 128, MSGID <= 32) must be
  PRINTUSASCII (33..126): every other character is replaced by ``_``, then the field is
  truncated to its limit; an empty field becomes the NILVALUE ``-``. Never refused, so one odd
  hostname cannot stop a sink.
* TIMESTAMP is ``observed_at`` normalised to UTC with exactly 6 fractional digits and ``Z``.
* The SD-ELEMENT is an index of the entry, not its copy: PARAM-VALUEs escape ``"``, ``\\`` and
  ``]`` with a backslash (6.3.3), and control characters (which 6.3.3 cannot escape and which
  would break newline-framed receivers) are replaced by U+FFFD. Absent values are omitted.
  MSG is the authoritative event: canonical JSON (RFC 8785) after the UTF-8 BOM (6.4), in
  which control characters are JSON-escaped, so a message never holds a raw CR or LF.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Any

from audit_forwarder.formats import event_type, parse_time, syslog_severity
from audit_forwarder.journal.canonical import canonical
from audit_forwarder.journal.writer import Entry

# 32473 is the Private Enterprise Number RFC 5612 reserves for documentation and examples
# (RFC 5424 uses it too). A deployment with its own IANA PEN passes it as ``pen``.
EXAMPLE_PEN = "32473"
SD_NAME = "keylife"
BOM = b"\xef\xbb\xbf"
NILVALUE = "-"
FACILITY_AUTHPRIV = 10
LIMITS = {"hostname": 255, "app_name": 48, "procid": 128, "msgid": 32}

_PEN_RE = re.compile(r"^[0-9]+(\.[0-9]+)*$")
_SD_NAME_FORBIDDEN = frozenset('= ]"')
_PARAM_ESCAPES = str.maketrans({"\\": "\\\\", '"': '\\"', "]": "\\]"})


def header_field(value: str | None, limit: int) -> str:
    """A header field as PRINTUSASCII, at most ``limit`` characters, ``-`` when empty."""
    if not value:
        return NILVALUE
    printable = "".join(ch if 33 <= ord(ch) <= 126 else "_" for ch in value)
    return printable[:limit]


def check_sd_name(name: str) -> str:
    """SD-NAME: 1..32 PRINTUSASCII except ``=``, space, ``]`` and ``"`` (RFC 5424 section 6)."""
    if not 1 <= len(name) <= 32 or any(not 33 <= ord(ch) <= 126 or ch in _SD_NAME_FORBIDDEN for ch in name):
        raise ValueError(f"{name!r} is not a valid RFC 5424 SD-NAME")
    return name


def sd_id(pen: str = EXAMPLE_PEN) -> str:
    if not _PEN_RE.match(pen):
        raise ValueError(f"private enterprise number {pen!r} must be digits (and dots)")
    return check_sd_name(f"{SD_NAME}@{pen}")


def param_value(value: Any) -> str:
    """PARAM-VALUE with ``"``, ``\\`` and ``]`` escaped and control characters replaced."""
    text = str(value).lower() if isinstance(value, bool) else str(value)
    text = "".join("\ufffd" if unicodedata.category(ch) == "Cc" else ch for ch in text)
    return text.translate(_PARAM_ESCAPES)


def timestamp(observed_at: str) -> str:
    """RFC 3339 in UTC with microseconds (RFC 5424 allows at most 6 fractional digits)."""
    return parse_time(observed_at).isoformat(timespec="microseconds").replace("+00:00", "Z")


def structured_data(entry: Entry, *, checkpoint: int | None, pen: str = EXAMPLE_PEN) -> str:
    event = entry.event
    params: list[tuple[str, Any]] = [
        ("seq", entry.seq),
        ("hash", entry.hash.hex()),
        ("checkpoint", checkpoint),
        ("id", event.get("id")),
        ("key_id", event.get("key_id")),
        ("node", event.get("node")),
        ("actor", event.get("actor")),
    ]
    body = "".join(f' {check_sd_name(name)}="{param_value(value)}"' for name, value in params if value is not None)
    return f"[{sd_id(pen)}{body}]"


def format_message(
    entry: Entry,
    *,
    hostname: str,
    app_name: str = "keylife",
    procid: str = NILVALUE,
    facility: int = FACILITY_AUTHPRIV,
    checkpoint: int | None = None,
    pen: str = EXAMPLE_PEN,
) -> bytes:
    """One RFC 5424 message (no framing, no trailing newline)."""
    if not 0 <= facility <= 23:
        raise ValueError(f"facility {facility} is outside 0..23")
    kind = event_type(entry.event)
    pri = facility * 8 + syslog_severity(kind)
    head = " ".join(
        (
            f"<{pri}>1",
            timestamp(entry.observed_at),
            header_field(hostname, LIMITS["hostname"]),
            header_field(app_name, LIMITS["app_name"]),
            header_field(procid, LIMITS["procid"]),
            header_field(kind, LIMITS["msgid"]),
            structured_data(entry, checkpoint=checkpoint, pen=pen),
        )
    )
    return head.encode() + b" " + BOM + canonical(entry.event)


def frame_octet_counting(message: bytes) -> bytes:
    """``MSG-LEN SP SYSLOG-MSG`` (RFC 6587 section 3.4.1, RFC 5425 section 4.3)."""
    return str(len(message)).encode() + b" " + message
