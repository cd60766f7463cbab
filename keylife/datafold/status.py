"""Key status answers (``GET /api/crypto/keys/status/{client_id}``) turned into lifecycle changes.

A status answer is a snapshot, polled again and again: only a *change* against the last answer
seen for that client is an event. The last-seen status lives in a small JSON file so a restart
does not re-emit everything it already reported.

Why the state is written *before* the events are handed on: a status change has no time of its
own (the answer says what the status is, not since when), so its event is stamped with the poll
time and numbered with the client's change counter; written first, a restart can never re-emit
that change under the same id with another time (a conflict the journal would refuse). The cost
is at-most-once for a change whose events were lost in a crash between the write and the
sink's acknowledgement; the next real change re-syncs. The first sight of an active key is
different: generated + activated at ``registered_at`` are fully determined by the answer, so
their ids are too, and re-emitting them is harmless (the journal dedupes).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

from keylife.datafold.answers import NOT_FOUND, SYSTEM_KEY_ID, Rotation, Rotations, SystemKey
from keylife.datafold.build import CLIENT_KEY, make, source_id
from keylife.datafold.shapes import KeyStatus, StatusError

STATUS_URL = re.compile(r"/api/crypto/keys/status/([^/?#\s]+)")  # a poll source names the client asked
# Known client, same key: the keylife event that brings keylife from the old status to the new one.
CHANGE = {"revoked": "revoked", "suspended": "suspended", "active": "reactivated", "expired": "expired"}


def key_id_of(public_key_hex: str) -> str:
    """DataFold names a key by the hex of its public key's first 8 bytes (EVENTS.md, shape 5)."""
    return public_key_hex[:16].lower()


class StatusTracker:
    """Last-seen status per client, persisted as ``{"clients": {client_id: {...}}}``."""

    def __init__(self, path: Path | None, clock: Callable[[], datetime]) -> None:
        self.path = path
        self.clock = clock
        self.clients: dict[str, dict[str, Any]] = {}
        self.rotated: set[tuple[str, str]] = set()  # (old, new) key ids a rotation answer reported
        if path is not None and path.exists():
            self.clients = orjson.loads(path.read_bytes()).get("clients", {})

    def handle(
        self, record: KeyStatus | StatusError | SystemKey | Rotations, client: str | None, node: str | None
    ) -> list[dict[str, Any]]:
        """Any key answer: rotation records become their events (and the pairs they name are
        remembered, so the key change they explain is not told twice); the rest is ``answer``."""
        if isinstance(record, Rotations):
            out = []
            for rotation in record.records:
                out += rotation_events(rotation, node)
                if rotation.status == "Completed":
                    self.rotated.add((key_id_of(rotation.old_public_key), key_id_of(rotation.new_public_key)))
            return out
        if client is None and isinstance(record, StatusError) and record.code == "NOT_FOUND":
            client = SYSTEM_KEY_ID  # mainline's 404 "System key not found": the one key it asks about
        return self.answer(record, client, node)

    def answer(
        self, record: KeyStatus | StatusError | SystemKey, client: str | None, node: str | None
    ) -> list[dict[str, Any]]:
        """The events one answer implies; ``client`` is the client id asked about (an error answer
        does not name it)."""
        if isinstance(record, StatusError):
            return self._error(record, client, node)
        extra: dict[str, Any] = {}
        if isinstance(record, SystemKey):
            record, extra = self._system_key(record)
        client, key = record.client_id, key_id_of(record.public_key)
        prev = self.clients.get(client)
        attrs = {"client_id": client, "registration_id": record.registration_id, "public_key": record.public_key}
        if record.key_name:
            attrs["key_name"] = record.key_name
        base = {"node": node, "actor": client, "attributes": attrs | extra}
        if prev is not None and prev["key_id"] == key and prev["status"] == record.status:
            return []
        out: list[dict[str, Any]] = []
        if prev is None or prev["key_id"] != key:
            if prev is not None and (prev["key_id"], key) in self.rotated:
                pass  # a rotation answer named both keys: its event (with the node's times) carries this change
            elif prev is not None and prev["status"] == "active":  # the client's active key was replaced
                out.append(self._change(client, prev["key_id"], "rotated", record, base, successor=key))
            elif record.status == "active":
                stem = f"df-status-{record.registration_id}-{key}"
                at = record.registered_at
                out.append(make(f"{stem}-0", "generated", key, at, **base, **CLIENT_KEY))
                out.append(make(f"{stem}-1", "activated", key, at, **base))
            if record.status != "active":  # first sight (or a new key) already suspended or revoked
                out.append(self._change(client, key, CHANGE[record.status], record, base))
        else:
            out.append(self._change(client, key, CHANGE[record.status], record, base))
        self._remember(client, key, record.status, record.registration_id)
        return out

    def _change(
        self, client: str, key: str, kind: str, record: KeyStatus,
        base: dict[str, Any], **fields: Any,
    ) -> dict[str, Any]:  # fmt: skip
        entry = self.clients.setdefault(client, {"key_id": key, "status": None, "changes": 0})
        entry["changes"] = n = entry.get("changes", 0) + 1
        reason = f"key status of client {client} on the node: {record.status}"
        return make(f"df-status-{record.registration_id}-{key}-c{n}", kind, key, self.clock(), reason=reason,
                    **base, **fields)  # fmt: skip

    def _error(self, record: StatusError, client: str | None, node: str | None) -> list[dict[str, Any]]:
        """No such key (``CLIENT_NOT_FOUND``, ``REGISTRATION_NOT_FOUND``, mainline's 404 "System key not
        found") for a client whose key was live: the node removed it (revoked). Other errors say
        nothing about the key (a failed poll) and change nothing."""
        prev = self.clients.get(client) if client else None
        if record.code not in NOT_FOUND or prev is None or prev["status"] in ("revoked", "removed"):
            return []
        n = prev["changes"] = prev.get("changes", 0) + 1
        key = prev["key_id"]
        event = make(f"df-status-{prev.get('registration_id', client)}-{key}-c{n}", "revoked", key, self.clock(),
                     node=node, actor=client, reason=f"key status of client {client}: {record.message}",
                     attributes={"client_id": client, "error_code": record.code})  # fmt: skip
        self._remember(client, key, "removed", prev.get("registration_id"))
        return [event]

    def _system_key(self, key: SystemKey) -> tuple[KeyStatus, dict[str, Any]]:
        """mainline's one system-wide key, tracked under its id like a client: ``is_active`` false is
        suspended, an ``expires_at`` passed (by the adapter's clock) is expired."""
        status = "active" if key.is_active else "suspended"
        if key.expires_at is not None and key.expires_at <= self.clock():
            status = "expired"
        record = KeyStatus(key.id, key.id, key.public_key, None, key.created_at, status, None)
        extra = {"owner_id": key.owner_id, "permissions": ",".join(key.permissions), "datafold.key_id": key.id}
        return record, extra

    def _remember(self, client: str, key: str, status: str, registration_id: str | None) -> None:
        entry = self.clients.setdefault(client, {"changes": 0})
        entry.update(key_id=key, status=status, registration_id=registration_id)
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_name(self.path.name + ".tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
            try:
                os.fchmod(fd, 0o640)  # whatever the umask
                os.write(fd, orjson.dumps({"clients": self.clients}, option=orjson.OPT_SORT_KEYS))
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, self.path)


def rotation_events(rotation: Rotation, node: str | None) -> list[dict[str, Any]]:
    """A rotation record names both keys (the only node record that does). ``Completed``: the old
    key rotated to the new one at ``completed_at``; ``Failed`` / ``Cancelled`` / ``RolledBack`` (and
    a status this code does not know): a security event on the old key naming the new; the rest
    (``Requested``, ``Validating``, ``InProgress``) changed nothing yet. Ids come from the node's
    correlation id and the status, so the status and history answers of one rotation, asked again
    and again, make one event each."""
    r = rotation
    if r.status in ("Requested", "Validating", "InProgress"):
        return []
    old, new = key_id_of(r.old_public_key), key_id_of(r.new_public_key)
    at = r.completed_at or r.started_at
    attrs = {"datafold.shape": "rotation_status", "rotation_status": r.status, "rotation_reason": r.reason,
             "old_public_key": r.old_public_key, "new_public_key": r.new_public_key,
             "started_at": r.started_at.isoformat(), "associations_updated": r.associations_updated,
             "error_details": r.error_details}  # fmt: skip
    base = {"node": node, "actor": r.actor, "correlation_id": r.correlation_id}
    stem = f"df-rotation-{source_id(r.correlation_id)}"
    if r.status == "Completed":
        reason = f"key rotation {r.correlation_id} completed ({r.reason})"
        return [make(stem, "rotated", old, at, successor=new, reason=reason,
                     attributes=attrs, **base, **CLIENT_KEY)]  # fmt: skip
    attrs["successor"] = new
    reason = f"key rotation {r.correlation_id} {r.status} ({r.reason})" + (
        f": {r.error_details}" if r.error_details else ""
    )
    return [make(f"{stem}-{re.sub('[^a-z0-9]', '', r.status.lower())[:20]}", "security_event", old, at,
                 reason=reason, attributes=attrs, **base)]  # fmt: skip
