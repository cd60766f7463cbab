"""The BULK side of incident response in one object for the runtime and the API: plans, lockdowns,
approvals (dual control), and the automatic lockdown that follows a compromise.

Automatic lockdown (``bulk.auto_lockdown``, off when empty): the commit reaction hands every
committed ``compromised`` entry to a worker thread of its own (never the writer's: submitting
and waiting there would deadlock it), which applies each rule's lockdown, journaled with
details.rule and details.trigger_key.
"""

from __future__ import annotations

import logging
import queue
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from keylife.config import AutoLockdownRule, BulkConfig
from keylife.domain.events import Event, EventType, format_time
from keylife.domain.lifecycle import KeyState, command_allowed, command_refusal
from keylife.ingest.ledger import Ledger
from keylife.journal.writer import Entry
from keylife.registry import plans as store
from keylife.registry.projection import Registry, ts
from keylife.response import selector as sel
from keylife.response.approvals import Approvals
from keylife.response.bulk import BulkPlans
from keylife.response.errors import Refused
from keylife.response.lockdown import Lockdowns

log = logging.getLogger("keylife.response")
AUTO_CATCH_UP = timedelta(hours=24)  # compromises this recent are locked down at start if a rule has not yet


class BulkService:
    def __init__(self, config: BulkConfig, ledger: Ledger, registry: Registry, data_dir: Path) -> None:
        self.config, self.ledger, self.registry = config, ledger, registry
        self.plans = BulkPlans(config, ledger, registry, data_dir / "plans")
        self.lockdowns = Lockdowns(ledger, registry, config.batch_size)
        self.approvals = Approvals(ledger, registry, config.approval_ttl_seconds)
        self._triggers: queue.Queue[str | None] = queue.Queue()
        self._worker: threading.Thread | None = None
        self.automatic: dict[str, int] = {}  # rule -> lockdowns applied by it (this process)

    def start(self) -> list[str]:
        """Resume the plans a previous process left started; start the automatic-lockdown worker,
        first handing it the compromises of the last day, so one a stop caught between its commit and
        its lockdown is still locked down (a rule that already acted on a key is not applied again)."""
        if self.config.auto_lockdown:
            since = ts(format_time(datetime.now(UTC) - AUTO_CATCH_UP))
            for key_id in store.compromised_since(self.registry._reader(), since):
                self._triggers.put(key_id)
            self._worker = threading.Thread(target=self._auto, name="keylife-auto-lockdown", daemon=True)
            self._worker.start()
        return self.plans.resume_all()

    def stop(self) -> None:
        if self._worker is not None:
            self._triggers.put(None)
            self._worker.join(timeout=30)
        self.plans.stop()

    # ----- plans ----------------------------------------------------------------------------------
    def execute(self, plan_id: str, actor: str) -> tuple[int, dict[str, Any]]:
        """Start a plan, or ask for a second approver first (202) when dual control applies."""
        plan = self.plans.load(plan_id)
        if plan["state"] in ("started", "finished"):
            return 200, self.plans.start(plan)
        if self.plans.needs_approval(plan):
            pending = self._pending_approval(plan)
            if pending is not None:  # asked again before the second person came: the same approval
                return 202, pending
            self.plans.check_current(plan)
            answer = self.approvals.request(
                "bulk", actor, plan["reason"], plan=plan_id, action=plan["action"], total=str(plan["total"])
            )
            plan["approval"] = answer["approval"]
            self.plans.store.save(plan)
            return 202, answer | {"plan": plan_id}
        return 200, self.plans.start(plan)

    def _pending_approval(self, plan: dict[str, Any]) -> dict[str, Any] | None:
        if not plan.get("approval"):
            return None
        found = next((a for a in self.approvals.list("requested") if a["approval"] == plan["approval"]), None)
        if found is None:
            return None
        return {"status": "approval_required", "approval": found["approval"], "operation": "bulk",
                "requested_by": found["requested_by"], "expires_at": found["details"].get("expires_at"),
                "plan": plan["plan"]}  # fmt: skip

    def approve(self, approval_id: str, approver: str) -> dict[str, Any]:
        """Grant an approval and run what it held back."""
        found = self.approvals.grant(approval_id, approver)
        details = found["details"]
        if found["operation"] == "bulk":
            plan = self.plans.load(details["plan"])
            return {"approval": approval_id, "status": "granted", "result": self.plans.start(plan, approver)}
        if found["operation"] == "destroy":
            outcome = self._destroy(details, found["requested_by"], approver, approval_id)
            return {"approval": approval_id, "status": "granted", "result": outcome}
        raise Refused(422, "unknown-operation", "Unknown operation", f"approval holds {found['operation']!r}")

    # ----- destroy: always dual control -----------------------------------------------------------
    def request_destroy(self, key_id: str, reason: str, actor: str, correlation: str | None) -> dict[str, Any]:
        self.ledger.sync_registry().result()
        state = self.registry.key_state(key_id)
        exists = state is not None or self.registry.key_exists(key_id)
        if not command_allowed(state, exists, EventType.DESTROYED):  # refused now, not after a second person came
            raise Refused(
                409, "lifecycle-conflict", "Command refused by the key lifecycle",
                command_refusal(state, exists, EventType.DESTROYED), key_id=key_id, command="destroy",
            )  # fmt: skip
        params = {"key_id": key_id} | ({"correlation": correlation} if correlation else {})
        return self.approvals.request("destroy", actor, reason, reason=reason, **params)

    def _destroy(self, details: dict[str, Any], requested_by: str, approver: str, approval_id: str) -> dict[str, Any]:
        event = Event.model_validate(
            {
                "id": f"destroy-{approval_id}", "type": EventType.DESTROYED, "key_id": details["key_id"],
                "occurred_at": format_time(datetime.now(UTC)), "actor": requested_by, "reason": details["reason"],
                "origin": "command", "correlation_id": details.get("correlation") or approval_id,
                "attributes": {"approved_by": approver, "approval": approval_id},
            }
        )  # fmt: skip
        (outcome,) = self.ledger.submit([event], command=True).result()
        if outcome.status == "refused":
            raise Refused(
                409, "lifecycle-conflict", "Command refused by the key lifecycle", outcome.error or "",
                key_id=details["key_id"], command="destroy", approval=approval_id,
            )  # fmt: skip
        self.ledger.sync_registry().result()
        state = self.registry.key_state(details["key_id"])
        return {"status": outcome.status, "id": event.id, "seq": outcome.seq, "state": state.value if state else None}

    # ----- automatic lockdown ---------------------------------------------------------------------
    def react(self, entries: list[Entry]) -> None:
        """Commit reaction (writer thread): only hand compromised keys over."""
        if not self.config.auto_lockdown:
            return
        for entry in entries:
            event = entry.event
            if event.get("type") == "compromised" and event.get("key_id"):
                self._triggers.put(event["key_id"])

    def _auto(self) -> None:
        while (key_id := self._triggers.get()) is not None:
            for rule in self.config.auto_lockdown:
                try:
                    self.ledger.sync_registry().result()
                    if store.lockdown_triggered(self.registry._reader(), rule.name, key_id[:4096]):
                        continue  # applied before a restart, or a compromise reported twice
                    self.auto_lockdown(rule, key_id)
                except Exception:
                    log.exception("automatic lockdown failed", extra={"rule": rule.name})

    def auto_lockdown(self, rule: AutoLockdownRule, key_id: str) -> dict[str, Any] | None:
        """One rule's lockdown around a compromised key (None when its scope matches nothing)."""
        self.ledger.sync_registry().result()
        conn = self.registry._reader()
        found = self.registry.get_key(key_id, recent=0)
        owner = found.get("owner") if found else None
        nodes = self.registry.key_nodes(key_id)
        selectors: list[sel.Selector] = []
        active = [KeyState.ACTIVE]
        if rule.scope == "same_owner_same_node" and owner:
            selectors = [sel.Selector(owner=owner, node=n, states=active) for n in nodes]
        elif rule.scope == "same_owner" and owner:
            selectors = [sel.Selector(owner=owner, states=active)]
        elif rule.scope == "same_node":
            selectors = [sel.Selector(node=n, states=active) for n in nodes]
        keys = sorted({k for s in selectors for k in sel.resolve(conn, s)})
        if not keys:
            return None
        scope: dict[str, Any] = {"scope": rule.scope, "states": ["active"]}
        if rule.scope != "same_node":
            scope["owner"] = owner
        if rule.scope != "same_owner":
            scope["nodes"] = nodes[:100]
        result = self.lockdowns.apply(
            sel.Selector(all=True), f"automatic lockdown: rule {rule.name} after {key_id[:200]} was marked compromised",
            "keylife", rule=rule.name, trigger_key=key_id[:4096], keys=keys, described=scope,
        )  # fmt: skip
        self.automatic[rule.name] = self.automatic.get(rule.name, 0) + 1
        return result
