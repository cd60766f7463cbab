"""Everything that reads DataFold output as text: the line frames, the ``SECURITY_AUDIT`` text
shape, and ``parse``, which tells a line's shape and hands JSON messages to ``shapes.py``.

The framings the node binaries really produce (docs/datafold.md, "Reading a line"):

* mainline and security: the web logger (``src/web_logger.rs:31``, installed by
  ``src/bin/datafold_node.rs`` and ``datafold_http_server.rs``): ``INFO - message`` on stdout and in
  the HTTP buffer (``/api/logs``, ``/api/logs/stream``); no time, no target;
* security2: env_logger 0.10's default format (``src/logging/mod.rs:151``, ``env_logger::init()``):
  ``[2025-06-16T12:00:00Z INFO  crypto_audit] message`` (level padded to five, then the target), only
  ERROR unless ``RUST_LOG`` says more; ANSI colours when stderr is a terminal (stripped here);
* whole-line JSON: the event bus's ``AuditLogHandler`` file, key status answers.

This runs once per line of a node log, so it is plain string slicing (no regex, no datetime):
the timestamp is handed on as text and parsed only by the shapes that need it. ``parse`` then
hands the message to the parser of its shape (``shapes.py``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import orjson

from keylife.datafold.answers import is_answer, node_answer
from keylife.datafold.plain import recognise, unified_audit
from keylife.datafold.shapes import (
    Parsed,
    Reject,
    audit_entry,
    bus_event,
    crypto_audit,
    is_bare_bus,
    loads,
    security_event,
)  # fmt: skip

LEVELS = frozenset({"ERROR", "WARN", "INFO", "DEBUG", "TRACE"})
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


# (timestamp, level, target, message): the time as RFC 3339 text; time and target are None in
# the HTTP form. A plain tuple: building a NamedTuple costs as much as the split itself.
Split = tuple[str | None, str, str | None, str]


def split_line(text: str) -> Split | None:
    """The frame of an env_logger or web-logger line; None for anything else (noise, whole-line JSON)."""
    if text[:1] == "\x1b":  # env_logger styles "[", the level and "]" when writing to a terminal
        text = _ANSI.sub("", text)
    if text[:1] == "[":
        parts = text.split(None, 3)  # one C call: "[time", "LEVEL", "target]", message
        if len(parts) < 3:
            return None
        level = parts[1]
        if level[-1:] == "]":  # env_logger without a module path: "[time LEVEL] message"
            level, target, message = level[:-1], None, text.split("]", 1)[1].lstrip(" ")
        else:
            target = parts[2]
            if target[-1:] != "]":
                return None
            target, message = target[:-1], parts[3] if len(parts) == 4 else ""
        stamp = parts[0][1:]
        # A cheap look at the time (YYYY-MM-DDTHH:MM:SS...); the shape that needs it parses it fully.
        if level not in LEVELS or len(stamp) < 20 or stamp[4] != "-" or stamp[10] != "T":
            return None
        return (stamp, level, target, message)
    sep = text.find(" - ", 0, 9)
    if sep > 0:
        level = text[:sep]
        if level in LEVELS:
            return (None, level, None, text[sep + 3 :])
    return None


# ----- the text shape: SECURITY_AUDIT lines ---------------------------------------------------
@dataclass(slots=True)
class AuditText:
    """Shape 4, text form: ``SECURITY_AUDIT: <title> - k=v, ...``; ``kind`` names a documented title."""

    kind: str
    title: str
    fields: dict[str, str | None]
    client: str | None
    message: str


_TEXT = re.compile(r"(?P<title>[^=]+?) - (?P<fields>[a-z_]+=.*)\Z", re.S)
_FIELD = re.compile(r'([a-z_]+)=(?:Some\("((?:[^"\\]|\\.)*)"\)|(None)|"((?:[^"\\]|\\.)*)"|([^,]*))(?:, |\Z)')
# Documented titles (DataFold's security audit logger) and the fields each must carry.
TEXT_KINDS: dict[str, tuple[str, tuple[str, ...]]] = {
    "Key registered": ("key_registered", ("key_id", "owner_id")),
    "Key registration failed": ("key_registration_failed", ("key_id",)),
    "Signature verified": ("signature_verified", ("key_id",)),
    "Signature verification failed": ("signature_failed", ("key_id",)),
    "Authentication successful": ("authentication_ok", ("endpoint",)),
    "Authentication failed": ("authentication_failed", ("endpoint",)),
    "Event logged": ("event_logged", ("type",)),
}


def audit_text(message: str) -> AuditText:
    """Shape 4, text form (the message after ``SECURITY_AUDIT: ``). Undocumented titles are kept as
    ``kind="other"``; a documented title without its fields rejects."""
    match = _TEXT.match(message)
    if match is None:
        return AuditText("other", message.strip(), {}, None, message)
    title, rest = match["title"].strip(), match["fields"]
    fields: dict[str, str | None] = {}
    pos = 0
    while pos < len(rest):
        item = _FIELD.match(rest, pos)
        if item is None:
            raise Reject(
                f"SECURITY_AUDIT fields: cannot read a name=value pair at character {pos}: {rest[pos : pos + 40]!r}"
            )
        name, some, none, quoted, bare = item.groups()
        raw = some if some is not None else quoted
        fields[name] = None if none else (_unescape(raw) if raw is not None else bare.strip())
        pos = item.end()
    kind, needed = TEXT_KINDS.get(title, ("other", ()))
    for name in needed:
        if not fields.get(name):
            raise Reject(f"SECURITY_AUDIT '{title}': {name} is missing")
    return AuditText(kind, title, fields, fields.get("client"), message)


def _unescape(raw: str) -> str:
    return raw.replace('\\"', '"').replace("\\\\", "\\") if "\\" in raw else raw


# ----- dispatch -----------------------------------------------------------------------------------
def _whole_json(obj: Any) -> tuple[str, Any] | None:
    """Which shape a JSON object is, by its distinctive fields."""
    if type(obj) is not dict:
        return None
    for shape, marks, parser in _MARKS:
        if marks(obj):
            try:
                return shape, parser(obj)
            except Reject as exc:
                exc.shape = shape
                raise
    return None


_MARKS: tuple[tuple[str, Any, Any], ...] = (
    # the crypto audit first: under the web logger (mainline, security) it is the bulk of the JSON messages,
    # and no other shape has a top-level "component" and "event_id"
    ("crypto_audit", lambda o: "component" in o and "event_id" in o, crypto_audit),
    ("security_event", lambda o: "client_info" in o, security_event),
    (
        "event_bus",
        lambda o: "envelope_id" in o or ("event" in o and "source" in o and "version" in o) or is_bare_bus(o),
        bus_event,
    ),
    ("audit_entry", lambda o: type(o.get("event")) is dict and "event_type" in o["event"], audit_entry),
    ("key_status", is_answer, node_answer),  # every key and rotation answer of the three branches: answers.py
)


def parse(text: str) -> Parsed | None:
    """The shape of one line, None for noise; ``Reject`` when it has a shape's marks but not its form.

    Whole-line JSON (event bus, audit entries, key status answers) must be a shape: those sources
    carry nothing else. A framed message is a shape when its target is ``crypto_audit``, it starts
    with ``SECURITY_EVENT:`` / ``SECURITY_AUDIT:``, it is a JSON object with a shape's fields, or it
    is one of the plain lines of ``plain.py`` (shape ``plain``); every other message is noise.
    """
    shape = None
    try:
        if text[:1] == "{":
            found = _whole_json(loads(text, "line"))
            if found is None:
                raise Reject("JSON line matches no DataFold shape (no envelope_id, event.event_type, success, ...)")
            return (found[0], found[1], None, None)
        frame = split_line(text)
        if frame is None:
            found_plain = unified_audit(text) if text[:2] == "[1" else None
            return None if found_plain is None else ("plain", found_plain, None, None)
        stamp, level, target, message = frame
        if target == "crypto_audit":
            shape = "crypto_audit"
            try:
                obj = orjson.loads(message)  # the hot path: no wrapper call
            except orjson.JSONDecodeError:
                obj = loads(message, "crypto audit message")  # raises, saying where
            return (shape, crypto_audit(obj), stamp, level)
        if message.startswith("SECURITY_EVENT: "):
            shape = "security_event"
            return (shape, security_event(loads(message[16:], "SECURITY_EVENT (truncated?)")), stamp, level)
        if message.startswith("SECURITY_AUDIT: "):
            shape = "audit_text"
            return (shape, audit_text(message[16:]), stamp, level)
        if message[:1] == "{":  # the HTTP buffer hides the target: a JSON message is judged by its fields
            try:
                obj = orjson.loads(message)
            except orjson.JSONDecodeError:
                if target is None:
                    raise Reject("message looks like JSON but is not valid JSON") from None
                return None
            found = _whole_json(obj)
            if found is not None:
                return (found[0], found[1], stamp, level)
            return None
        found_plain = recognise(message)
        return None if found_plain is None else ("plain", found_plain, stamp, level)
    except Reject as exc:
        exc.shape = exc.shape or shape
        raise
