"""Dual control: an irreversible operation (destroy, a large bulk plan) waits for a second person.

The request is journaled (``approval`` with details.phase requested: approval id, operation,
requested_by and what to run); a different identity holding the ``approve`` scope grants it
(phase granted, with both names) and the operation runs; the requester approving their own
request is refused, and a request not granted within ``bulk.approval_ttl_seconds`` expires
(phase expired, journaled when noticed: on approve or on listing).
"""

from __future__ import annotations

import secrets
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

from keylife.domain.events import EventType, format_time
from keylife.ingest.ledger import Ledger
from keylife.registry import plans as store
from keylife.registry.projection import Registry
from keylife.response.errors import Refused


class Approvals:
    def __init__(self, ledger: Ledger, registry: Registry, ttl_seconds: float) -> None:
        self.ledger, self.registry, self.ttl = ledger, registry, ttl_seconds
        self._lock = threading.Lock()

    def _conn(self) -> Any:
        self.ledger.sync_registry().result()
        return self.registry._reader()

    def request(self, operation: str, requested_by: str, why: str, **params: str) -> dict[str, Any]:
        approval_id = f"appr-{secrets.token_hex(8)}"
        expires = datetime.now(UTC) + timedelta(seconds=self.ttl)
        details = {
            "phase": "requested", "approval": approval_id, "operation": operation, "requested_by": requested_by,
            "expires_at": format_time(expires), **params,
        }  # fmt: skip
        self._record(details, requested_by, why, approval_id)
        return {"status": "approval_required", "approval": approval_id, "operation": operation,
                "requested_by": requested_by, "expires_at": details["expires_at"]}  # fmt: skip

    def get(self, approval_id: str) -> dict[str, Any]:
        found = store.approval(self._conn(), approval_id)
        if found is None:
            raise Refused(404, "approval-not-found", "No such approval", f"approval {approval_id!r} does not exist")
        return found

    def list(self, phase: str | None = None) -> list[dict[str, Any]]:
        items = store.approvals(self._conn(), None)
        for item in items:
            if item["phase"] == "requested" and self._expired(item):
                self._expire(item)
                item["phase"] = "expired"
        return [i for i in items if phase is None or i["phase"] == phase]

    def grant(self, approval_id: str, approver: str) -> dict[str, Any]:
        """Grant (journaled with both names) and return the approval, or refuse saying why."""
        with self._lock:
            found = self.get(approval_id)
            requested_by = found["requested_by"]
            if found["phase"] == "requested" and self._expired(found):
                self._expire(found)
                found["phase"] = "expired"
            if found["phase"] == "expired":
                raise Refused(
                    410, "approval-expired", "Approval expired",
                    f"approval {approval_id} was not granted before {found['details'].get('expires_at')}; "
                    "request the operation again",
                    approval=approval_id,
                )  # fmt: skip
            if found["phase"] != "requested":
                raise Refused(
                    409, "approval-decided", "Approval already granted",
                    f"approval {approval_id} was granted by {found['approved_by']}", approval=approval_id,
                )  # fmt: skip
            if approver == requested_by:
                raise Refused(
                    403, "same-approver", "The second approver must be another person",
                    f"{approver} requested this {found['operation']}; dual control needs a different token "
                    "identity with the approve scope (role security-admin)",
                    approval=approval_id, requested_by=requested_by,
                )  # fmt: skip
            details = {
                "phase": "granted", "approval": approval_id, "operation": found["operation"],
                "requested_by": requested_by, "approved_by": approver,
            }  # fmt: skip
            self._record(details, approver, f"approved {found['operation']} requested by {requested_by}", approval_id)
            found |= {"phase": "granted", "approved_by": approver}
            return found

    def _expired(self, item: dict[str, Any]) -> bool:
        expires = item["details"].get("expires_at")
        return bool(expires) and datetime.fromisoformat(expires) <= datetime.now(UTC)

    def _expire(self, item: dict[str, Any]) -> None:
        details = {
            "phase": "expired", "approval": item["approval"], "operation": item["operation"],
            "requested_by": item["requested_by"],
        }  # fmt: skip
        self._record(details, "keylife", "no second approver within the approval time", item["approval"])

    def _record(self, details: dict[str, Any], actor: str, reason: str, approval_id: str) -> None:
        event = self.ledger.system_event(
            EventType.APPROVAL, actor=actor, reason=reason, correlation_id=approval_id, details=details
        )
        (outcome,) = self.ledger.submit([event]).result()
        if outcome.status != "accepted":
            raise RuntimeError(f"approval record not journaled: {outcome.error or outcome.status}")
