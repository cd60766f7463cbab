"""IBM QRadar Log Event Extended Format (LEEF 1.0 and 2.0) for journal entries.

``LEEF:2.0|DataFold|keylife|<version>|<event type>|<delimiter>|key=value<delim>key=value...``
(LEEF 1.0 has no delimiter field and always uses a tab).

Escaping choices (LEEF defines no escape sequence inside attribute values, and QRadar does not
unescape them):

* header fields: ``\\`` -> ``\\\\`` and ``|`` -> ``\\|``; CR, LF and TAB become a space;
* attribute values: the delimiter, TAB, CR and LF are *replaced* by a space (by ``_`` when the
  delimiter is itself a space), so a value can never split an attribute or a record. This is
  lossy by design; the exact event is in the journal and in the RFC 5424 MSG.
* every other control character (C0, DEL, C1, U+2028, U+2029: see ``audit_forwarder.formats``)
  becomes U+FFFD, in the header and in values. A raw NUL made rsyslog escape the rest of the
  message, tabs included, so QRadar saw the whole record as one attribute.
* attribute keys keep letters, digits, ``_`` and ``.`` only;
* the delimiter is written as itself when printable ASCII, else as ``xHH`` (tab: ``x09``);
  ``|``, ``=`` and ``\\`` cannot be delimiters.

Attributes: ``devTime`` (observed_at, UTC, ms) with ``devTimeFormat``, ``cat`` (event type),
``sev`` (1..10), ``usrName`` (actor), then keylife's own: ``dvchost``, ``eventId``, ``keyId``,
``node``, ``seq``, ``chainHash``, ``checkpoint``, ``reason``, and every other top-level event
field under its own name (lists and objects as canonical JSON).
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

from audit_forwarder.formats import (
    PRODUCT,
    VENDOR,
    cef_severity,
    control_table,
    event_type,
    field_text,
    parse_time,
    product_version,
)
from keylife.journal.reader import Entry

DEV_TIME_FORMAT = "yyyy-MM-dd'T'HH:mm:ss.SSSZ"  # Java SimpleDateFormat, as QRadar expects
_HEADER_ESCAPES = control_table() | str.maketrans({"\\": "\\\\", "|": "\\|", "\r": " ", "\n": " ", "\t": " "})
_MAPPED = frozenset({"id", "type", "actor", "reason", "key_id", "node"})
_KEY_CHARS = re.compile(r"[^A-Za-z0-9_.]")
_FORBIDDEN_DELIMITERS = frozenset("|=\\\r\n")


def escape_header(value: str) -> str:
    return value.translate(_HEADER_ESCAPES)


def clean_value(value: str, delimiter: str) -> str:
    """``value`` with the delimiter, line breaks and control characters replaced (module docstring)."""
    return value.translate(_value_table(delimiter))


@lru_cache(maxsize=16)
def _value_table(delimiter: str) -> dict[int, str]:
    replacement = "_" if delimiter == " " else " "
    return control_table() | dict.fromkeys(map(ord, (delimiter, "\t", "\r", "\n")), replacement)


def delimiter_field(delimiter: str) -> str:
    if len(delimiter) != 1 or not delimiter.isascii() or delimiter in _FORBIDDEN_DELIMITERS:
        raise ValueError(f"LEEF delimiter must be one ASCII character other than | = \\ CR LF, not {delimiter!r}")
    code = ord(delimiter)
    return delimiter if 33 <= code <= 126 else f"x{code:02X}"


def dev_time(observed_at: str) -> str:
    moment = parse_time(observed_at)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}+0000"


def attributes(entry: Entry, *, hostname: str, checkpoint: int | None) -> list[tuple[str, str]]:
    event = entry.event
    kind = event_type(event)
    pairs: list[tuple[str, Any]] = [
        ("devTime", dev_time(entry.observed_at)),
        ("devTimeFormat", DEV_TIME_FORMAT),
        ("cat", kind),
        ("sev", max(1, cef_severity(kind))),
        ("usrName", event.get("actor")),
        ("dvchost", hostname),
        ("eventId", event.get("id")),
        ("keyId", event.get("key_id")),
        ("node", event.get("node")),
        ("seq", entry.seq),
        ("chainHash", entry.hash.hex()),
        ("checkpoint", checkpoint),
        ("reason", event.get("reason")),
    ]
    pairs += [(_KEY_CHARS.sub("_", name), value) for name, value in sorted(event.items()) if name not in _MAPPED]
    return [(key, field_text(value)) for key, value in pairs if value is not None]


def format_event(
    entry: Entry,
    *,
    hostname: str,
    checkpoint: int | None = None,
    version: str = "2.0",
    delimiter: str = "\t",
    device_version: str | None = None,
) -> bytes:
    """One LEEF record (no syslog header, no trailing newline), UTF-8."""
    if version not in ("1.0", "2.0"):
        raise ValueError(f"LEEF version {version!r}: only 1.0 and 2.0 are supported")
    if version == "1.0" and delimiter != "\t":
        raise ValueError("LEEF 1.0 attributes are always tab-delimited")
    header = [
        f"LEEF:{version}",
        escape_header(VENDOR),
        escape_header(PRODUCT),
        escape_header(product_version() if device_version is None else device_version),
        escape_header(event_type(entry.event)),
    ]
    if version == "2.0":
        header.append(delimiter_field(delimiter))
    pairs = attributes(entry, hostname=hostname, checkpoint=checkpoint)
    body = delimiter.join(f"{key}={clean_value(value, delimiter)}" for key, value in pairs)
    return ("|".join(header) + "|" + body).encode()
