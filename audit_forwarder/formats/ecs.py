"""Elastic Common Schema (ECS 8.x) documents for journal entries: Elastic, and Splunk HEC's ``event``.

Field reference: https://www.elastic.co/guide/en/ecs/8.17/ecs-field-reference.html (ECS 8.17 is the
last 8.x). Only ECS field names are used at the top level; what ECS has no field for goes under
``keylife.*`` (a custom field set, as ECS asks: "custom fields ... nested under a name of your own").

Times. ``@timestamp`` = ``observed_at``, the journal's time: it is always present, set by keylife's
own clock and ordered with ``seq``, while ``occurred_at`` is the node's claim (another clock, possibly
absent or malformed). ``event.created`` ("when the event was first read by an agent, or by your
pipeline") is also ``observed_at``: the journal *is* the point where keylife first read the event;
ECS allows both to be equal. ``occurred_at`` stays in ``keylife.event`` and, when it parses as
RFC 3339, also in ``keylife.occurred_at`` normalised to UTC (microseconds, ``Z``) for date mapping.

Categorisation (ECS allowed values; event.type pairs follow "expected event types" per category,
and IAM events carry two types, the activity and its target: ``admin`` is the target for objects
that are neither users nor groups, which is what keys are):

=======================================================  ===================  ==================  =======
event type                                               event.category       event.type          outcome
=======================================================  ===================  ==================  =======
generated                                                iam                  admin, creation     success
activated, reactivated, deactivated, suspended, rotated,
signing_key_rotated, revoked, expired, admin_action,
bulk_operation, lockdown, approval                       iam                  admin, change       success
destroyed                                                iam                  admin, deletion     success
incident, anomaly                                        intrusion_detection  info                -
report                                                   configuration        info                -
compromised (event.kind "alert")                         iam                  admin, change       -
security_event (event.kind "alert")                      intrusion_detection  info                -
auth_failure                                             authentication       start               failure
command_refused                                          iam                  admin, change       failure
propagated                                               configuration        change              success
journal_recovered                                        file                 change              -
checkpoint                                               configuration        info                -
policy_violation, usage_report, any other type           iam                  admin, info         -
=======================================================  ===================  ==================  =======

``event.outcome`` is set only where the event says how an attempted action ended (ECS: not for
``info`` events or where an outcome makes no sense). Other mappings: ``event.action`` = the keylife
type, ``event.id`` = the event id, ``event.sequence`` = seq (ECS: "to make the exact ordering of
events unambiguous"), ``event.reason`` = the event's reason, ``event.severity`` = the CEF-style 0..10
severity of ``audit_forwarder.formats``, ``log.level`` = its RFC 5424 keyword, ``user.name`` = actor,
``host.name`` = node (the host the event is about), ``observer`` = keylife itself (vendor, product,
version, and the forwarder's hostname when given), ``related.user`` / ``related.hosts`` for pivots.
``keylife`` holds seq, the chain hash (hex), the covering checkpoint size, key_id, and the whole
original event as ``keylife.event`` (map it as ``flattened`` in Elasticsearch: its fields vary by type).
"""

from __future__ import annotations

from typing import Any

import orjson

from audit_forwarder.formats import (
    PRODUCT,
    VENDOR,
    cef_severity,
    event_type,
    field_text,
    json_escape_controls,
    parse_time,
    product_version,
    syslog_severity,
)
from keylife.journal.reader import Entry

__all__ = ["DATASET", "ECS_VERSION", "LOG_LEVELS", "ecs_document", "format_document", "log_level"]

ECS_VERSION = "8.17.0"
DATASET = "keylife.audit"
# RFC 5424 severity keywords (section 6.2.1), the values ECS suggests for log.level ("err", "informational").
LOG_LEVELS = {0: "emergency", 1: "alert", 2: "critical", 3: "error", 4: "warning", 5: "notice", 6: "informational"}

_Categorisation = tuple[list[str], list[str], str | None]  # event.category, event.type, event.outcome
_IAM_CHANGE: _Categorisation = (["iam"], ["admin", "change"], "success")
_DEFAULT: _Categorisation = (["iam"], ["admin", "info"], None)
_CATEGORISATION: dict[str, _Categorisation] = {
    "generated": (["iam"], ["admin", "creation"], "success"),
    "activated": _IAM_CHANGE,
    "reactivated": _IAM_CHANGE,
    "deactivated": _IAM_CHANGE,
    "suspended": _IAM_CHANGE,
    "rotated": _IAM_CHANGE,
    "signing_key_rotated": _IAM_CHANGE,
    "revoked": _IAM_CHANGE,
    "expired": _IAM_CHANGE,
    "admin_action": _IAM_CHANGE,
    "bulk_operation": _IAM_CHANGE,
    "lockdown": _IAM_CHANGE,
    "approval": _IAM_CHANGE,
    "incident": (["intrusion_detection"], ["info"], None),
    "anomaly": (["intrusion_detection"], ["info"], None),
    "report": (["configuration"], ["info"], None),
    "destroyed": (["iam"], ["admin", "deletion"], "success"),
    "compromised": (["iam"], ["admin", "change"], None),
    "security_event": (["intrusion_detection"], ["info"], None),
    "auth_failure": (["authentication"], ["start"], "failure"),
    "command_refused": (["iam"], ["admin", "change"], "failure"),
    "propagated": (["configuration"], ["change"], "success"),
    "journal_recovered": (["file"], ["change"], None),
    "checkpoint": (["configuration"], ["info"], None),
}
_ALERTS = frozenset({"compromised", "security_event"})


def log_level(kind: str) -> str:
    """The RFC 5424 keyword of an event type's severity (``notice``, ``critical``, ...)."""
    return LOG_LEVELS[syslog_severity(kind)]


def _text(value: Any) -> str | None:
    """A keyword field's value: ``None`` stays absent, anything else as text (objects as canonical JSON)."""
    return None if value is None else field_text(value)


def _one_line(value: str) -> str:
    return " ".join(value.split())


def _summary(kind: str, event: dict[str, Any], seq: int) -> str:
    """``message``: what happened, to which key, by whom and where, on one line."""
    if kind == "checkpoint":
        root = _text(event.get("root_hash")) or "?"
        text = f"keylife checkpoint: {_text(event.get('origin')) or '?'} size {_text(event.get('size'))} root {root}"
        return _one_line(text)
    parts = [f"keylife {kind}"]
    key_id = _text(event.get("key_id"))
    if key_id is not None:
        parts.append(f"key {key_id}")
    actor = _text(event.get("actor"))
    if actor is not None:
        parts.append(f"by {actor}")
    node = _text(event.get("node"))
    if node is not None:
        parts.append(f"on {node}")
    text = " ".join(parts) + f" (seq {seq})"
    reason = _text(event.get("reason"))
    if reason is not None:
        text += f": {reason}"
    return _one_line(text)


def _occurred_at(value: Any) -> str | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = parse_time(value)
    except ValueError:
        return None
    return parsed.isoformat(timespec="microseconds").replace("+00:00", "Z")


def ecs_document(entry: Entry, *, checkpoint: int | None = None, hostname: str | None = None) -> dict[str, Any]:
    """The ECS document of one entry (a new dict; ``keylife.event`` is the entry's event itself, not a copy).

    ``hostname`` is the forwarder's own host, reported as ``observer.hostname``.
    """
    event = entry.event
    kind = event_type(event)
    category, types, outcome = _CATEGORISATION.get(kind, _DEFAULT)
    ecs_event: dict[str, Any] = {
        "kind": "alert" if kind in _ALERTS else "event",
        "category": list(category),
        "type": list(types),
        "action": kind,
        "sequence": entry.seq,
        "created": entry.observed_at,
        "severity": cef_severity(kind),
        "dataset": DATASET,
        "module": PRODUCT,
    }
    if outcome is not None:
        ecs_event["outcome"] = outcome
    event_id = _text(event.get("id"))
    if event_id is not None:
        ecs_event["id"] = event_id
    reason = _text(event.get("reason"))
    if reason is not None:
        ecs_event["reason"] = reason

    observer: dict[str, Any] = {"vendor": VENDOR, "product": PRODUCT, "version": product_version()}
    if hostname:
        observer["hostname"] = hostname
    keylife: dict[str, Any] = {"seq": entry.seq, "hash": entry.hash.hex()}
    if checkpoint is not None:
        keylife["checkpoint"] = checkpoint
    key_id = _text(event.get("key_id"))
    if key_id is not None:
        keylife["key_id"] = key_id
    occurred = _occurred_at(event.get("occurred_at"))
    if occurred is not None:
        keylife["occurred_at"] = occurred
    keylife["event"] = event

    document: dict[str, Any] = {
        "@timestamp": entry.observed_at,
        "ecs": {"version": ECS_VERSION},
        "message": _summary(kind, event, entry.seq),
        "event": ecs_event,
        "log": {"level": log_level(kind)},
        "observer": observer,
    }
    related: dict[str, list[str]] = {}
    actor = _text(event.get("actor"))
    if actor is not None:
        document["user"] = {"name": actor}
        related["user"] = [actor]
    node = _text(event.get("node"))
    if node is not None:
        document["host"] = {"name": node}
        related["hosts"] = [node]
    if related:
        document["related"] = related
    document["keylife"] = keylife
    return document


def format_document(entry: Entry, *, checkpoint: int | None = None, hostname: str | None = None) -> bytes:
    """The ECS document as one line of compact JSON (UTF-8, no trailing newline: NDJSON-ready), with no
    raw control character (DEL, C1 and U+2028 / U+2029 JSON-escaped: ``formats.json_escape_controls``)."""
    return json_escape_controls(orjson.dumps(ecs_document(entry, checkpoint=checkpoint, hostname=hostname)))
