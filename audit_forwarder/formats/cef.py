"""ArcSight Common Event Format (CEF:0) for journal entries.

``CEF:0|DataFold|keylife|<version>|<event type>|<name>|<severity 0..10>|<extension>``

Escaping, per "Implementing ArcSight Common Event Format":

* header fields: ``\\`` -> ``\\\\`` and ``|`` -> ``\\|``; newlines are not allowed in the header,
  so CR and LF become a space there;
* extension values: ``\\`` -> ``\\\\``, ``=`` -> ``\\=``, LF -> ``\\n``, CR -> ``\\r`` (pipes and
  spaces need no escaping); extension keys are alphanumeric.
* TAB becomes a space; every other control character (C0, DEL, C1, U+2028, U+2029: see
  ``audit_forwarder.formats``), for which the spec defines no escape, becomes U+FFFD in the
  header and in extension values. That is lossy (the exact event is in the journal and the
  RFC 5424 MSG), but a strict CEF parser reads it, where an invented ``\\uXXXX`` escape could be
  refused or mangled.

Extension keys come from the CEF dictionary where one fits: ``rt`` (observed_at, ms since the
epoch), ``dvchost``, ``externalId`` (event id), ``suser`` (actor), ``msg`` (reason), ``start``
(occurred_at, ms), ``cs1`` key id, ``cs2`` chain hash, ``cs3`` node, ``cn1`` seq, ``cn2``
checkpoint size, each with its ``Label``. Every other top-level field of the event becomes a
custom key ``keylife<CamelCaseName>`` (lists and objects as canonical JSON).
"""

from __future__ import annotations

import re
from typing import Any

from audit_forwarder.formats import (
    PRODUCT,
    VENDOR,
    cef_severity,
    control_table,
    epoch_millis,
    event_type,
    field_text,
    product_version,
)
from keylife.journal.reader import Entry

_HEADER_ESCAPES = control_table() | str.maketrans({"\\": "\\\\", "|": "\\|", "\r": " ", "\n": " ", "\t": " "})
_VALUE_ESCAPES = control_table() | str.maketrans({"\\": "\\\\", "=": "\\=", "\n": "\\n", "\r": "\\r", "\t": " "})
_MAPPED = frozenset({"id", "type", "actor", "reason", "key_id", "node", "occurred_at"})
_KEY_PART = re.compile(r"[A-Za-z0-9]+")


def escape_header(value: str) -> str:
    return value.translate(_HEADER_ESCAPES)


def escape_value(value: str) -> str:
    return value.translate(_VALUE_ESCAPES)


def custom_key(name: str) -> str:
    """``key_size`` -> ``keylifeKeySize``: CEF keys hold letters and digits only."""
    return PRODUCT + "".join(part[:1].upper() + part[1:] for part in _KEY_PART.findall(name))


def extension_pairs(entry: Entry, *, hostname: str, checkpoint: int | None) -> list[tuple[str, str]]:
    event = entry.event
    pairs: list[tuple[str, Any]] = [
        ("rt", epoch_millis(entry.observed_at)),
        ("dvchost", hostname),
        ("externalId", event.get("id")),
        ("suser", event.get("actor")),
        ("cs1Label", "keyId"),
        ("cs1", event.get("key_id")),
        ("cs2Label", "chainHash"),
        ("cs2", entry.hash.hex()),
        ("cs3Label", "node"),
        ("cs3", event.get("node")),
        ("cn1Label", "journalSeq"),
        ("cn1", entry.seq),
        ("cn2Label", "checkpointSize"),
        ("cn2", checkpoint),
    ]
    occurred = event.get("occurred_at")
    if occurred is not None:
        try:
            pairs.append(("start", epoch_millis(str(occurred))))
        except ValueError:
            pairs.append((custom_key("occurred_at"), occurred))
    pairs.append(("msg", event.get("reason")))
    pairs += [(custom_key(name), value) for name, value in sorted(event.items()) if name not in _MAPPED]
    present = [(key, value) for key, value in pairs if value is not None]
    # a label without its value says nothing: drop it
    keys = {key for key, _ in present}
    return [(key, field_text(value)) for key, value in present if not key.endswith("Label") or key[:-5] in keys]


def format_event(
    entry: Entry,
    *,
    hostname: str,
    checkpoint: int | None = None,
    device_version: str | None = None,
) -> bytes:
    """One CEF record (no syslog header, no trailing newline), UTF-8."""
    kind = event_type(entry.event)
    header = [
        "CEF:0",
        escape_header(VENDOR),
        escape_header(PRODUCT),
        escape_header(product_version() if device_version is None else device_version),
        escape_header(kind),
        escape_header(kind.replace("_", " ")),
        str(cef_severity(kind)),
    ]
    extension = " ".join(
        f"{key}={escape_value(value)}"
        for key, value in extension_pairs(entry, hostname=hostname, checkpoint=checkpoint)
    )
    return ("|".join(header) + "|" + extension).encode()
