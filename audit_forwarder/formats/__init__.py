"""Pure formatters that turn one journal entry into the bytes a SIEM receives (no networking).

* ``syslog5424.format_message``: RFC 5424 with a ``keylife@PEN`` SD-ELEMENT and the canonical
  JSON event as MSG; ``syslog5424.frame_octet_counting`` for TCP/TLS (RFC 6587 / RFC 5425).
* ``cef.format_event``: ArcSight CEF:0 with its header and extension escaping.
* ``leef.format_event``: IBM QRadar LEEF 1.0 / 2.0.

Every record carries ``seq``, the chain hash (hex) and, when known, the checkpoint size it
falls under, so a SIEM's copy can be checked against the journal.

Control characters. C0 controls (U+0000..U+001F), DEL and C1 controls (U+007F..U+009F, NEL
among them: Unicode category Cc) and the line and paragraph separators U+2028 / U+2029 end, split
or corrupt records in receivers (a NUL makes rsyslog escape the rest of a message, dropping LEEF's
tab delimiters; NEL and U+2028 are line breaks to some parsers; ESC sequences reach terminals).
None reaches the wire raw. Each format uses its own escape where its spec has one (CEF's ``\\n``
and ``\\r``; JSON's ``\\uXXXX``); where the spec has none (CEF and LEEF otherwise, RFC 5424
PARAM-VALUEs), the character is replaced by U+FFFD, or by a space where the format already did
so for line breaks. Those replacements are lossy by design: the exact event is in the journal,
in the RFC 5424 MSG and in the ECS JSON. ``tests/test_formats.py`` checks it on generated text.

Severity is decided here once for every format, from the event type (RFC 5424 numeric
severities: 2 critical, 3 error, 4 warning, 5 notice, 6 informational):

=================================================================  ======  ====
event type                                                         syslog  CEF / LEEF sev
=================================================================  ======  ====
compromised                                                        2 crit  10
journal_recovered, security_event                                  3 err    8
auth_failure, command_refused, policy_violation,
forward_quarantined, incident, lockdown, anomaly                   4 warn   6
revoked, destroyed, expired, suspended, admin_action,
signing_key_rotated, bulk_operation, approval, report, and any
type not listed here                                               5 note   4
generated, activated, reactivated, deactivated, rotated,
propagated, usage_report                                           6 info   2
=================================================================  ======  ====
"""

from __future__ import annotations

import functools
import re
from datetime import UTC, datetime, timedelta
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from keylife.common.canonical import canonical

__all__ = [
    "CONTROL",
    "PRODUCT",
    "REPLACEMENT",
    "VENDOR",
    "cef_severity",
    "control_table",
    "epoch_millis",
    "event_type",
    "field_text",
    "json_escape_controls",
    "parse_time",
    "product_version",
    "syslog_severity",
]

VENDOR = "DataFold"
PRODUCT = "keylife"

_SYSLOG_SEVERITY = {
    "compromised": 2,
    "journal_recovered": 3,
    "security_event": 3,
    "auth_failure": 4,
    "command_refused": 4,
    "forward_quarantined": 4,
    "policy_violation": 4,
    "incident": 4,
    "lockdown": 4,
    "anomaly": 4,
    "generated": 6,
    "activated": 6,
    "reactivated": 6,
    "deactivated": 6,
    "rotated": 6,
    "propagated": 6,
    "usage_report": 6,
}
_DEFAULT_SYSLOG_SEVERITY = 5  # notice: revocations, destruction, admin actions and unknown types
_CEF_FROM_SYSLOG = {2: 10, 3: 8, 4: 6, 5: 4, 6: 2}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

# Every character no SIEM format may carry raw (module docstring): Cc, and U+2028 / U+2029.
CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
CONTROL_CODES = (*range(0x20), *range(0x7F, 0xA0), 0x2028, 0x2029)
REPLACEMENT = "\ufffd"
# The UTF-8 of the controls JSON leaves raw (RFC 8259 escapes only U+0000..U+001F): DEL, C1
# (0xC2 0x80..0x9F) and U+2028 / U+2029 (0xE2 0x80 0xA8 / 0xA9). In valid UTF-8, 0xC2 and 0xE2
# are lead bytes, so these patterns match those characters and nothing else.
_JSON_RAW_CONTROL = re.compile(rb"\x7f|\xc2[\x80-\x9f]|\xe2\x80[\xa8\xa9]")


def control_table() -> dict[int, str]:
    """A ``str.translate`` table mapping every control character to U+FFFD; a format adds its
    own escapes (``|table``) for the characters its spec has a form for."""
    return dict.fromkeys(CONTROL_CODES, REPLACEMENT)


def _json_escape(match: re.Match[bytes]) -> bytes:
    return b"\\u%04x" % ord(match.group().decode())


def json_escape_controls(document: bytes) -> bytes:
    """UTF-8 JSON with DEL, C1 controls and U+2028 / U+2029 written as ``\\uXXXX`` escapes.

    These can only occur inside JSON strings, where the escape parses back to the same character,
    so the document's value is unchanged; only its bytes differ from the canonical form."""
    if document.isascii() and b"\x7f" not in document:  # the common case, far faster than the search
        return document
    if _JSON_RAW_CONTROL.search(document) is None:
        return document
    return _JSON_RAW_CONTROL.sub(_json_escape, document)


def event_type(event: dict) -> str:
    kind = event.get("type")
    return str(kind) if kind else "unknown"


def syslog_severity(kind: str) -> int:
    """RFC 5424 numeric severity (0 emergency .. 7 debug) for an event type."""
    return _SYSLOG_SEVERITY.get(kind, _DEFAULT_SYSLOG_SEVERITY)


def cef_severity(kind: str) -> int:
    """CEF / LEEF severity (0..10, higher is worse) for an event type."""
    return _CEF_FROM_SYSLOG[syslog_severity(kind)]


def parse_time(value: str) -> datetime:
    """An RFC 3339 timestamp as an aware UTC datetime (a naive one is taken as UTC)."""
    parsed = datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def epoch_millis(value: str) -> int:
    """Milliseconds since the Unix epoch, truncated (exact integer arithmetic, no floats)."""
    return (parse_time(value) - _EPOCH) // timedelta(milliseconds=1)


@functools.cache  # package metadata is read from disk: once per process, not once per record
def product_version() -> str:
    try:
        return version("datafold-keylife")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "0.0.0+source"


def field_text(value: Any) -> str:
    """A field as text: strings as they are, numbers in decimal, the rest as canonical JSON."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool | dict | list) or value is None:
        return canonical(value).decode()
    return str(value)
