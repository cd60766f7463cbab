"""Crypto audit records that are not key usage: rotation records and security signals (issue 12
items 3, 6 and 10). Only the security branch writes them (crypto/audit_logger.rs:714-718, one
``AuditEvent`` as JSON on target ``crypto_audit``).

What the source shows, and so what the mapping can honestly say:

* ``key_rotation_start`` / ``key_rotation_complete`` / ``key_rotation_rollback``
  (db_operations/key_rotation_operations.rs:115-170, :247-262), ``rollback_started``
  (db_operations/key_rotation_rollback.rs:262-270) and ``validate_rotation_request``
  (crypto/key_rotation.rs:350-358) all go through ``log_key_operation`` (audit_logger.rs:312-345):
  ``metadata`` is only ``{"key_type": "key_rotation"}`` (or ``"key_rotation_rollback"``), ``actor`` is
  always null, ``correlation_id`` is the rotation's operation id. They name no key, so they become
  security events on the node's identity (``datafold-node:<node>``), correlated by operation id;
  never a ``rotated`` (which needs both keys) and never the AES master key (the rotated key is a
  client's Ed25519 key).
* ``key_rotation_validated`` / ``invalid_key_rotation`` (datafold_node/key_rotation_routes.rs:166-250)
  carry ``metadata.target`` = hex of the old public key: they land on that key (its 8-byte id, the
  name rotation records use). ``metadata.actor`` is ``"anonymous"`` when the request named none:
  kept as an attribute, never a subject. ``metadata.errors`` is one string joined with ``"; "``.
* A record carrying ``metadata.old_key`` and ``new_key`` (only the reference samples do) is still a
  ``rotated``.
"""

from __future__ import annotations

import re
from typing import Any

from keylife.datafold.build import CLIENT_KEY, failure, make, master_key, meta_attrs, node_key, text, utc
from keylife.datafold.shapes import CryptoAudit, Failure
from keylife.datafold.status import key_id_of

_HEX = re.compile(r"[0-9a-fA-F]{16,}\Z")
ROTATION_KEY_TYPES = frozenset({"key_rotation", "key_rotation_rollback"})
# operation -> the signal it is (Success / other result decides "completed" vs "failed" below)
_SIGNALS = {"key_rotation_start": "rotation_started", "key_rotation_complete": "rotation_completed",
            "key_rotation_rollback": "rotation_rolled_back", "rollback_started": "rotation_rollback_started",
            "validate_rotation_request": "rotation_request_checked"}  # fmt: skip
_USED = {"old_key", "new_key", "target", "errors", "threat_level", "source", "reason", "actor", "correlation_id",
         "event_type", "key_type"}  # fmt: skip


def signal(r: CryptoAudit) -> str | None:
    """The rotation signal a KeyOperation record is, or None when it is not about a rotation."""
    if r.event_type != "KeyOperation" or (r.metadata.get("key_type") not in ROTATION_KEY_TYPES
                                          and not r.operation.startswith("key_rotation")):  # fmt: skip
        return None
    # key_rotation_audit.rs:289-470 logs free-text descriptions ("Key rotation operation initiated") as operations
    name = _SIGNALS.get(r.operation, "rotation_event")
    if isinstance(r.result, Failure) and name in ("rotation_completed", "rotation_request_checked"):
        return "rotation_failed" if name == "rotation_completed" else "rotation_request_rejected"
    return name


def crypto_events(r: CryptoAudit, node: str) -> list[dict[str, Any]]:
    """The keylife events of one crypto audit record that is not a successful use."""
    et, op, meta = r.event_type, r.operation, r.metadata
    old, new, target = meta.get("old_key"), meta.get("new_key"), meta.get("target")
    at = utc(r.stamp, r.timestamp)
    meta_actor = text(meta.get("actor"))
    actor = r.actor or (meta_actor if meta_actor != "anonymous" else None)
    base = {"node": node, "actor": actor, "correlation_id": r.correlation_id or text(meta.get("correlation_id"))}
    sig = signal(r)
    if sig == "rotation_completed" and isinstance(old, str) and old and isinstance(new, str) and new:
        attrs = {"datafold.shape": "crypto_audit", "datafold.operation": op}
        return [make(f"df-{r.event_id}-0", "rotated", old, at, successor=new, reason=text(meta.get("reason")),
                     attributes=attrs, **base, **CLIENT_KEY)]  # fmt: skip
    if isinstance(old, str) and old:
        key = old
    elif isinstance(target, str) and _HEX.match(target):
        key = key_id_of(target)  # key_rotation_routes.rs:171/:226: hex of the old public key
    elif et in ("Encryption", "Decryption"):
        key = master_key(node)
    else:
        key = node_key(node)
    errors = meta.get("errors")
    attrs = {"datafold.shape": "crypto_audit", "datafold.event_type": et, "datafold.operation": op,
             "datafold.component": r.component, "datafold.signal": sig, "severity": r.severity.lower(),
             **failure(r.result), "threat_level": text(meta.get("threat_level")),
             "source_ip": text(meta.get("source")), "rotation_reason": text(meta.get("reason")),
             "new_key": text(new), "errors": "; ".join(map(str, errors)) if isinstance(errors, list) else text(errors),
             "public_key": target if isinstance(target, str) and _HEX.match(target) else None,
             "session_id": r.session_id, "key_type": text(meta.get("key_type")),
             "datafold.actor": meta_actor if meta_actor == "anonymous" else None,
             **meta_attrs(meta, _USED)}  # fmt: skip
    if isinstance(r.result, Failure):
        reason = r.result.error_message
    elif sig is not None:
        reason = sig.replace("_", " ") + (f" (operation {r.correlation_id})" if r.correlation_id else "")
    else:
        reason = f"{et} {op}"
    return [make(f"df-{r.event_id}-0", "security_event", key, at, reason=reason, attributes=attrs, **base)]
