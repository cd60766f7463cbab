"""Pure formatters that turn one journal entry into the bytes a SIEM receives (no networking).

* ``syslog5424.format_message``: RFC 5424 with a ``keylife@PEN`` SD-ELEMENT and the canonical
  JSON event as MSG; ``syslog5424.frame_octet_counting`` for TCP/TLS (RFC 6587 / RFC 5425).
* ``cef.format_event``: ArcSight CEF:0 with its header and extension escaping.
* ``leef.format_event``: IBM QRadar LEEF 1.0 / 2.0.

Every record carries ``seq``, the chain hash (hex) and, when known, the checkpoint size it
falls under, so a SIEM's copy can be checked against the journal.

Severity is decided here once for every format, from the event type (RFC 5424 numeric
severities: 2 critical, 3 error, 4 warning, 5 notice, 6 informational):

=================================================================  ======  ====
event type                                                         syslog  CEF / LEEF sev
=================================================================  ======  ====
compromised                                                        2 crit  10
journal_recovered, security_event                                  3 err    8
auth_failure, command_refused, policy_violation,
forward_quarantined                                                4 warn   6
revoked, destroyed, expired, suspended, admin_action,
signing_key_rotated, and any type not listed here                  5 note   4
generated, activated, reactivated, deactivated, rotated,
propagated, usage_report                                           6 info   2
=================================================================  ======  ====
"""

from __future__ import annotations

import functools
from datetime import UTC, datetime, timedelta
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from audit_forwarder.journal.canonical import canonical

__all__ = [
    "PRODUCT",
    "VENDOR",
    "cef_severity",
    "epoch_millis",
    "event_type",
    "field_text",
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
