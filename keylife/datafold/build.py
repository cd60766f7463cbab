"""How one keylife event dict is made from DataFold facts, and the names the mapping gives keys.

Kept apart from the mapping table so every path (mapping, key status) builds events the same way:
values that would make keylife refuse the event (and with it the whole batch a source sends) are
checked here, once: a key id that is not a keylife id rejects the line, an actor or correlation
id that is not a keylife name moves into the attributes, attributes are bounded to keylife's limits.
"""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime
from typing import Any

import orjson

from keylife.datafold.shapes import Failure, Reject, text  # noqa: F401 - text: re-exported for the maps

# At-rest data is encrypted with AES-256-GCM keys derived from each node's database master key;
# the crypto audit names no key, so keylife tracks one key per node under this name.
MASTER_KEY = {"algorithm": "aes-256-gcm", "key_size": 256, "purpose": "encryption"}
CLIENT_KEY = {"algorithm": "ed25519", "purpose": "signing"}  # every request is signed with the client's Ed25519 key
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@/+=-]*\Z")
_ATTR_BAD = re.compile(r"[^a-z0-9_.]+")


def is_key_id(value: str | None) -> bool:
    return value is not None and len(value) <= 256 and _NAME.match(value) is not None


def master_key(node: str) -> str:
    return f"datafold-master:{node}"


def node_key(node: str) -> str:
    """The node's identity: the one subject of every signal that concerns the node and names no key
    (a rotation record of the crypto audit, a failed request with no key id, a configuration change)."""
    return f"datafold-node:{node}"


def system_key(node: str) -> str:
    """mainline's one system-wide verifying key (``SYSTEM_WIDE_PUBLIC_KEY``, mainline constants.rs:9):
    one per node, so named per node."""
    return f"datafold-system:{node}"


def content_stem(raw: Any) -> str:
    """An id stem for a source event whose own id is not unique (the event bus's propagation events
    are clones of the rotation event, ``base.event_id`` included: security events/
    key_rotation_handlers.rs:373-401): SHA-256 of the event's whole content, keys sorted, so two
    distinct events never share it and the same event read twice (envelope or bare) always does."""
    digest = hashlib.sha256(orjson.dumps(raw, option=orjson.OPT_SORT_KEYS)).hexdigest()
    return digest[:24]


def _fmt(at: datetime | str) -> str:
    if isinstance(at, str):
        return at
    if at.tzinfo is not UTC:
        at = at.astimezone(UTC)
    return at.isoformat()[:-6] + "Z"  # "+00:00" -> "Z"


def utc(stamp: str, parsed: datetime) -> str | datetime:
    """The node's own text when it is already keylife's form (UTC, ``Z``, at most microseconds):
    formatting a datetime costs more than the rest of building the event."""
    return stamp if stamp[-1:] == "Z" and len(stamp) <= 27 and stamp[10:11] == "T" else parsed


def source_id(value: str) -> str:
    """A source id usable inside an event id (<= 128 chars, keylife's id alphabet)."""
    return value if len(value) <= 100 and _NAME.match(value) else hashlib.sha256(value.encode()).hexdigest()[:32]


# Fields whose values come from the node and must fit keylife's name rules. A key id that does
# not fit rejects the line (the event would be about nothing); an actor, correlation id or owner
# that does not fit is kept in the attributes instead.
_KEYS = ("successor", "predecessor")
_NAMES = {"actor": 128, "correlation_id": 128, "owner": 128, "node": 128}


_SEEN: set[str] = set()  # names already found good: most events repeat a few nodes and actors


def _name_ok(value: str, limit: int) -> bool:
    if len(value) <= limit and _NAME.match(value):
        if len(_SEEN) > 100_000:
            _SEEN.clear()
        _SEEN.add(value)
        return True
    return False


def make(event_id: str, kind: str, key_id: str, at: datetime | str, **fields: Any) -> dict[str, Any]:
    """One keylife event dict that keylife's ``Event`` accepts (the tests check every mapping with
    ``Event.model_validate``; this does the same checks for the values that come from the node, at a
    fraction of the cost). ``None`` fields and attributes are left out."""
    if not is_key_id(key_id):
        raise Reject(f"key id {key_id[:80]!r} is not a valid keylife key id")
    ev: dict[str, Any] = {"id": event_id, "type": kind, "key_id": key_id, "occurred_at": _fmt(at)}
    attrs = fields.pop("attributes", None)
    for name, value in fields.items():
        if value is None:
            continue
        limit = _NAMES.get(name)
        if limit is not None and value not in _SEEN and not _name_ok(value, limit):
            if name == "node":
                raise Reject(f"node id {value[:80]!r} is not a valid keylife name")
            attrs = {**(attrs or {}), f"datafold.{name}": value}
            continue
        if name in _KEYS and not is_key_id(value):
            raise Reject(f"{name} {value[:80]!r} is not a valid keylife key id")
        ev[name] = value if name != "reason" or len(value) <= 1024 else value[:1024]
    if attrs:
        clean = {}
        for k, v in attrs.items():
            if v is None or v == "":
                continue
            if type(v) is not str:
                v = ("true" if v else "false") if isinstance(v, bool) else str(v)  # booleans as DataFold wrote them
            clean[k] = v if len(v) <= 256 else v[:256]
        if clean:
            ev["attributes"] = clean if len(clean) <= 32 else dict(list(clean.items())[:32])
    return ev


def meta_attrs(meta: dict[str, Any], used: set[str], prefix: str = "meta") -> dict[str, Any]:
    """Scalar metadata the mapping did not use, kept as ``<prefix>.<name>`` (never dropped)."""
    out = {}
    for name, value in meta.items():
        if name not in used and isinstance(value, str | int | float | bool):
            key = _ATTR_BAD.sub("_", name.lower()).strip("_")[:50]  # keylife: ^[a-z][a-z0-9_.]{0,62}$
            if key and key[0].isalpha():
                out[f"{prefix}.{key}"] = value
    return out


def failure(result: Any) -> dict[str, Any]:
    if isinstance(result, Failure):
        return {"result": "Failure", "error_type": result.error_type, "error_code": result.error_code,
                "error_message": result.error_message}  # fmt: skip
    return {"result": result}
