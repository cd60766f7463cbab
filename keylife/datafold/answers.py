"""A DataFold node's key answers, every shape the three branches produce, as typed records.

keylife asks a node about keys over HTTP (``poll.py``); the answers are also accepted as whole-line
JSON. Each shape below is what the node's serde output is, cited by branch and file:line:

* **Key status** (``security``, ``security2``: ``GET /api/crypto/keys/status/{client_id}``): the
  ``ApiResponse`` wrapper (``crypto_routes.rs:22-29``, ``data``/``error`` skipped when None) around
  ``PublicKeyStatusResponse`` (``security`` ``crypto_routes.rs:181-189``); errors are ``ApiError``
  ``{code, message, details}`` (``:51-55``): 404 ``CLIENT_NOT_FOUND`` / ``REGISTRATION_NOT_FOUND``,
  500 ``DATABASE_ERROR`` / ``INTERNAL_ERROR`` (``security`` ``:719-790``, ``security2`` ``:733-804``).
* **Registration** (same branches, ``POST /api/crypto/keys/register``): ``PublicKeyRegistrationResponse``
  (``crypto_routes.rs:170-177``): a key status without ``last_used``; 409/400 errors as above.
* **System key** (``mainline``, ``GET /api/security/system-key``, ``security_routes.rs:53-70``):
  ``{"success": true, "key": PublicKeyInfo}`` (``security/types.rs:47-64``: base64 Ed25519 key,
  Unix-second times, ``is_active``; ``id`` is always ``SYSTEM_WIDE_PUBLIC_KEY``, ``constants.rs:9``);
  404 ``{"success": false, "error": "System key not found"}`` and 500 with ``error`` a plain string.
  ``POST`` answers ``KeyRegistrationResponse`` (``types.rs:157-164``), ``DELETE``
  ``{"success": true, "message": ...}`` (``security_routes.rs:41-44``): no key facts.
* **Rotation status / history** (``security``, ``POST /api/crypto/keys/rotate/status`` and
  ``/history``, ``key_rotation_routes.rs:62-123, 325-470``): ``KeyRotationStatusResponse`` and
  ``KeyRotationHistoryResponse`` name both keys (hex ``old_public_key`` / ``new_public_key``),
  ``status`` is ``format!("{:?}", RotationStatus)`` (``security_types.rs:58-73``), ``reason`` a unit
  variant of ``RotationReason`` (``crypto/key_rotation.rs:28-41``). 404 ``ROTATION_NOT_FOUND``.
  On ``security2`` both are stubs answering 501 ``not_implemented`` (``key_rotation_routes.rs:96-148``).
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from datetime import UTC, datetime
from types import NoneType
from typing import Any

from keylife.datafold.shapes import OPT_STR, KeyStatus, Reject, StatusError, get, key_status, parse_time

SYSTEM_KEY_ID = "SYSTEM_WIDE_PUBLIC_KEY"  # mainline src/constants.rs:9
SYSTEM_KEY_MISSING = "System key not found"  # mainline security_routes.rs:63
# Errors that say the node has no such key (any 404 whose error is a plain string says the same).
NOT_FOUND = frozenset({"CLIENT_NOT_FOUND", "REGISTRATION_NOT_FOUND", "NOT_FOUND"})


@dataclass(slots=True)
class SystemKey:
    """mainline's system-wide key (``PublicKeyInfo``)."""

    id: str
    public_key: str  # hex, decoded from the node's base64
    owner_id: str
    created_at: datetime
    expires_at: datetime | None
    is_active: bool
    permissions: list[str]


@dataclass(slots=True)
class Rotation:
    """One rotation record: a status answer's ``data`` or one history entry."""

    correlation_id: str
    status: str
    old_public_key: str
    new_public_key: str
    reason: str
    started_at: datetime
    completed_at: datetime | None
    associations_updated: int | None = None
    error_details: str | None = None
    actor: str | None = None


@dataclass(slots=True)
class Rotations:
    records: list[Rotation]


@dataclass(slots=True)
class Acknowledged:
    """An answer that says something was done but names no key (system key registered / removed)."""

    what: str


Answer = KeyStatus | StatusError | SystemKey | Rotations | Acknowledged


# Fields beside "success" that make a JSON object a node answer. Besides the key answers: mainline's
# other security_routes.rs answers (verification_result :80-89, keypair :104-111 -- it holds a
# secret key, so it must never reach rejects.ndjson --, status :125-133, examples :213-216).
_ANSWER_FIELDS = ("data", "error", "key", "message", "public_key_id", "status", "verification_result", "keypair",
                  "examples")  # fmt: skip


def is_answer(obj: dict[str, Any]) -> bool:
    """The marks of a node answer among whole-line JSON (no log record has a top-level ``success``)."""
    return "success" in obj and any(name in obj for name in _ANSWER_FIELDS)


def node_answer(obj: Any, http_status: int | None = None) -> Answer:
    """The record an answer is; ``Reject`` when it has an answer's marks but not a known form.
    ``http_status``: the poller's; a 404 whose ``error`` is a plain string is "no such key"."""
    if type(obj) is not dict:
        raise Reject(f"node answer must be a JSON object, not {type(obj).__name__}")
    if not get(obj, "success", bool):
        error = obj.get("error")
        if isinstance(error, str):  # mainline's handlers: json!({"success": false, "error": e.to_string()})
            if http_status == 404 or (http_status is None and error == SYSTEM_KEY_MISSING):
                return StatusError("NOT_FOUND", error)
            return StatusError("ERROR", error)
        return key_status(obj)  # ApiError {code, message, details}; Reject names what is missing
    if "key" in obj:
        return _system_key(get(obj, "key", dict))
    data = obj.get("data")
    if type(data) is not dict:  # no key facts: a registration id, a message, a verification, the demo keypair
        if "public_key_id" in obj:  # mainline KeyRegistrationResponse
            return Acknowledged(f"system key registered as {get(obj, 'public_key_id', OPT_STR)}")
        if "data" in obj and "message" not in obj:
            get(obj, "data", dict)  # rejects, naming the field
        return Acknowledged(next(name for name in _ANSWER_FIELDS if name in obj))
    if "old_public_key" in data:
        return Rotations([_rotation(data, "data.")])
    if "rotations" in data:
        entries = get(data, "rotations", list, "data.")
        return Rotations([_rotation(_obj(e, f"data.rotations[{i}]."), f"data.rotations[{i}].")
                          for i, e in enumerate(entries)])  # fmt: skip
    if "new_key_id" in data or ("correlation_id" in data and "timestamp" in data):
        # security KeyRotationApiResponse (key_rotation_routes.rs:36-51, 266-274): names only the new
        # key, and new_key_id is hex(new_public_key_hex.as_bytes()[..8]) (key_rotation_operations.rs:300),
        # the ASCII of 4 key bytes, not a key name; security2 KeyRotationResponse stub (:31-43, 78-90).
        # The status / history answer of the same correlation id names both keys.
        return Acknowledged(f"rotation {str(data.get('correlation_id'))[:60]} requested")
    if "total_rotations" in data or ("valid" in data and "errors" in data):  # rotation stats / validation
        return Acknowledged("rotation statistics or validation")
    if "registration_id" in data and "last_used" not in data:  # a registration answer: no use yet
        return key_status({"success": True, "data": {**data, "last_used": None}})
    return key_status(obj)


def _obj(value: Any, where: str) -> dict[str, Any]:
    if type(value) is not dict:
        raise Reject(f"{where.rstrip('.')} must be an object")
    return value


def _hex_key(value: str, where: str) -> str:
    if len(value) < 16 or len(value) % 2 or not all(c in "0123456789abcdefABCDEF" for c in value):
        raise Reject(f"{where} must be the hex of a public key (at least 8 bytes)")
    return value.lower()


def _unix(value: Any, where: str) -> datetime:
    try:
        return datetime.fromtimestamp(value, UTC)
    except (OverflowError, OSError, ValueError) as exc:
        raise Reject(f"{where} is not a Unix time: {value!r}") from exc


def _system_key(key: dict[str, Any]) -> SystemKey:
    raw = get(key, "public_key", str, "key.")
    try:
        public = base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise Reject("key.public_key must be the base64 of the public key") from exc
    if len(public) < 8:
        raise Reject("key.public_key is shorter than 8 bytes")
    expires = get(key, "expires_at", (int, NoneType), "key.")
    permissions = get(key, "permissions", list, "key.")
    return SystemKey(
        get(key, "id", str, "key."), public.hex(), get(key, "owner_id", str, "key."),
        _unix(get(key, "created_at", int, "key."), "key.created_at"),
        None if expires is None else _unix(expires, "key.expires_at"), get(key, "is_active", bool, "key."),
        [p for p in permissions if isinstance(p, str)],
    )  # fmt: skip


def _rotation(data: dict[str, Any], at: str) -> Rotation:
    completed = get(data, "completed_at", OPT_STR, at)
    updated = data.get("associations_updated")  # status answers only
    details = get(data, "error_details", OPT_STR, at) if "error_details" in data else None  # status answers only
    actor = get(data, "actor", OPT_STR, at) if "actor" in data else None  # history entries only
    return Rotation(
        get(data, "correlation_id", str, at), get(data, "status", str, at),
        _hex_key(get(data, "old_public_key", str, at), f"{at}old_public_key"),
        _hex_key(get(data, "new_public_key", str, at), f"{at}new_public_key"),
        get(data, "reason", str, at),  # a unit variant of RotationReason
        parse_time(get(data, "started_at", str, at), f"{at}started_at"),
        None if completed is None else parse_time(completed, f"{at}completed_at"),
        updated if type(updated) is int else None, details, actor,
    )  # fmt: skip
