"""The rotation status answer: the one DataFold record that names both keys of a rotation (issue 12
item 3). ``POST /api/crypto/keys/rotate/status`` answers ``ApiResponse::success(KeyRotationStatusResponse)``
(security datafold_node/key_rotation_routes.rs:317-352, struct at :61-81; ``ApiResponse`` at
crypto_routes.rs:22-29): ``{"success": true, "data": {"correlation_id", "status" ({:?} of
security_types.rs:58 RotationStatus), "old_public_key", "new_public_key" (hex), "reason", "started_at",
"completed_at", "associations_updated", "error_details"}}``.

Fetching it is the key status poller's business (item 7, elsewhere); this reads the answer wherever
it comes from (a poller, or a line holding it) and maps it. The crypto audit's rotation records
share its ``correlation_id`` (their ``correlation_id`` is the operation id), which is how keylife's
events of both join.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from keylife.datafold.build import CLIENT_KEY, make
from keylife.datafold.shapes import OPT_STR, Reject, _uuid, get, parse_time
from keylife.datafold.status import key_id_of

FINAL_FAILURES = frozenset({"Failed", "Cancelled", "RolledBack"})


@dataclass(slots=True)
class RotationStatus:
    correlation_id: str
    status: str
    old_public_key: str
    new_public_key: str
    reason: str | None
    started_at: datetime
    completed_at: datetime | None
    associations_updated: int | None
    error_details: str | None


def is_rotation_status(obj: dict[str, Any]) -> bool:
    data = obj.get("data")
    return type(data) is dict and "old_public_key" in data and "new_public_key" in data


def _hex_key(data: dict[str, Any], name: str) -> str:
    value = get(data, name, str, "data.")
    if len(value) < 16 or len(value) % 2 or any(c not in "0123456789abcdefABCDEF" for c in value):
        raise Reject(f"data.{name} must be the hex of a public key")
    return value.lower()


def rotation_status(obj: dict[str, Any]) -> RotationStatus:
    data = get(obj, "data", dict)
    done = get(data, "completed_at", OPT_STR, "data.")
    reason = data.get("reason")
    count = data.get("associations_updated")
    started = parse_time(get(data, "started_at", str, "data."), "data.started_at")
    return RotationStatus(
        _uuid(get(data, "correlation_id", str, "data."), "data.correlation_id"), get(data, "status", str, "data."),
        _hex_key(data, "old_public_key"), _hex_key(data, "new_public_key"),
        reason if isinstance(reason, str) else None, started,
        None if done is None else parse_time(done, "data.completed_at"), count if type(count) is int else None,
        get(data, "error_details", OPT_STR, "data.") if "error_details" in data else None,
    )  # fmt: skip


def rotation_status_events(r: RotationStatus, node: str) -> list[dict[str, Any]]:
    """``Completed``: one ``rotated`` old -> new (8-byte key ids, as the event bus names them);
    ``Failed`` / ``Cancelled`` / ``RolledBack``: a security event on the old key; anything else is
    not final yet and says nothing. Ids are fixed by the answer, so polling it again is a duplicate."""
    old, new = key_id_of(r.old_public_key), key_id_of(r.new_public_key)
    at = r.completed_at or r.started_at
    attrs = {"datafold.shape": "rotation_status", "rotation_status": r.status, "old_public_key": r.old_public_key,
             "new_public_key": r.new_public_key, "associations_updated": r.associations_updated,
             "error": r.error_details}  # fmt: skip
    stem = f"df-rot-{r.correlation_id}"
    if r.status == "Completed" and old != new:
        return [make(f"{stem}-0", "rotated", old, at, successor=new, node=node, reason=r.reason,
                     correlation_id=r.correlation_id, attributes=attrs, **CLIENT_KEY)]  # fmt: skip
    if r.status in FINAL_FAILURES:
        reason = f"key rotation {r.status}" + (f": {r.error_details}" if r.error_details else "")
        return [make(f"{stem}-{r.status.lower()}", "security_event", old, at, node=node, reason=reason,
                     correlation_id=r.correlation_id, attributes=attrs)]  # fmt: skip
    return []
