"""Bulk plans: a selector resolved to an exact key set (dry run), stored with its digest, and
executed only by plan id while the set still matches, in journaled batches that resume after a
crash (``keylife.response.commands``).

A plan's life in the journal: ``bulk_operation`` records with details.phase planned, started,
finished (plan id, action, selector, digest, actor, approver, counts); every key's command has
id ``bulk-<plan>-<index>`` and correlation_id = the plan id. A started plan is not checked
against its digest again: it is finishing what was approved, and resuming re-sends only what
its saved position has not covered (re-sent keys answer ``duplicate``).
"""

from __future__ import annotations

import logging
import secrets
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from keylife.config import BulkConfig
from keylife.domain.events import EventType, format_time
from keylife.ingest.ledger import Ledger
from keylife.registry.projection import Registry
from keylife.response import commands
from keylife.response import selector as sel
from keylife.response.errors import Refused
from keylife.response.plan_store import PlanStore

log = logging.getLogger("keylife.bulk")

ACTIONS: dict[str, EventType] = {
    "revoke": EventType.REVOKED,
    "suspend": EventType.SUSPENDED,
    "reactivate": EventType.REACTIVATED,
    "compromise": EventType.COMPROMISED,
    "deactivate": EventType.DEACTIVATED,
    "destroy": EventType.DESTROYED,
}


def now() -> str:
    return format_time(datetime.now(UTC))


class BulkPlans:
    """Plans: make, check, execute (one thread per running plan), report progress, resume."""

    def __init__(self, config: BulkConfig, ledger: Ledger, registry: Registry, directory: Path) -> None:
        self.config, self.ledger, self.registry = config, ledger, registry
        self.store = PlanStore(directory)
        self._lock = threading.Lock()
        self._running: dict[str, threading.Thread] = {}
        self._stopping = threading.Event()

    # ----- planning ---------------------------------------------------------------------------
    def resolve(self, selector: sel.Selector) -> list[str]:
        """The selector's key set now, after everything acknowledged is visible (read-your-writes)."""
        self.ledger.sync_registry().result()
        return sel.resolve(self.registry._reader(), selector)

    def plan(
        self, selector: sel.Selector, action: str, reason: str, actor: str, *,
        rate_per_second: float | None = None, incident: str | None = None,
    ) -> tuple[dict[str, Any], list[str]]:  # fmt: skip
        """Resolve, store and journal (phase planned) a plan; returns it and its key set."""
        keys = self.resolve(selector)
        plan_id = f"plan-{secrets.token_hex(8)}"
        plan: dict[str, Any] = {
            "plan": plan_id, "action": action, "reason": reason, "actor": actor, "selector": selector.stored(),
            "selector_summary": selector.describe(), "digest": sel.digest(keys, action), "total": len(keys),
            "created_at": now(), "rate_per_second": rate_per_second, "incident": incident, "state": "planned",
            "position": 0, "tally": commands.Tally().as_dict(), "approver": None, "approval": None,
        }  # fmt: skip
        self.store.create(plan, keys)
        self._journal(plan, "planned")
        return plan, keys

    def needs_approval(self, plan: dict[str, Any]) -> bool:
        return plan["action"] == "destroy" or plan["total"] >= self.config.dual_control_min_keys

    def load(self, plan_id: str) -> dict[str, Any]:
        plan = self.store.load(plan_id)
        if plan is None:
            raise Refused(404, "plan-not-found", "No such plan", f"plan {plan_id!r} does not exist")
        return plan

    def check_current(self, plan: dict[str, Any]) -> None:
        """409 with the difference unless the selector still resolves to the planned set."""
        keys = self.resolve(sel.Selector.model_validate(plan["selector"]))
        if sel.digest(keys, plan["action"]) == plan["digest"]:
            return
        diff = sel.difference(self.store.keys(plan["plan"]), keys)
        raise Refused(
            409, "stale-plan", "The key set changed since the plan was made",
            f"plan {plan['plan']} no longer matches its digest: {diff['added_count']} keys added, "
            f"{diff['removed_count']} removed; make a new plan (dry run) and review it",
            plan=plan["plan"], digest=plan["digest"], current_digest=sel.digest(keys, plan["action"]), **diff,
        )  # fmt: skip

    # ----- execution ----------------------------------------------------------------------------
    def start(self, plan: dict[str, Any], approver: str | None = None, check: bool = True) -> dict[str, Any]:
        """Start (or resume) a plan on a thread of its own; a plan already finished or running is
        answered as it is (executing twice is idempotent)."""
        with self._lock:
            if plan["plan"] in self._running or plan["state"] == "finished":
                return self.progress(plan["plan"])
            if plan["state"] != "started":
                if check:
                    self.check_current(plan)
                plan |= {"state": "started", "approver": approver, "started_at": now()}
                self.store.save(plan)
                self._journal(plan, "started")
            thread = threading.Thread(target=self._execute, args=(plan,), name=f"keylife-{plan['plan']}", daemon=True)
            self._running[plan["plan"]] = thread
            thread.start()
        return self.progress(plan["plan"])

    def _execute(self, plan: dict[str, Any]) -> None:
        plan_id = plan["plan"]
        try:
            keys = self.store.keys(plan_id)

            def saved(position: int, tally: commands.Tally) -> None:
                plan.update(position=position, tally=tally.as_dict())
                self.store.save(plan)

            tally = commands.run(
                self.ledger, keys, ACTIONS[plan["action"]], prefix=f"bulk-{plan_id}", actor=plan["actor"],
                reason=plan["reason"], correlation=plan_id, start=plan["position"],
                tally=commands.Tally.from_dict(plan["tally"]), batch=self.config.batch_size,
                rate_per_second=plan.get("rate_per_second"), after_batch=saved, stop=self._stopping.is_set,
                attributes={"approved_by": plan["approver"]} if plan.get("approver") else None,
            )  # fmt: skip
            if plan["position"] < len(keys):
                return  # stopped: resumed at the next start
            plan.update(state="finished", finished_at=now(), tally=tally.as_dict())
            self._journal(plan, "finished")
            self.store.save(plan)
        except Exception as exc:  # the plan stays started: resumed by the next start of serve
            log.warning("bulk plan stopped; it resumes at the next start", extra={"plan": plan_id, "reason": str(exc)})
            plan["error"] = f"{type(exc).__name__}: {exc}"[:500]
            self.store.save(plan)
        finally:
            with self._lock:
                self._running.pop(plan_id, None)

    def resume_all(self) -> list[str]:
        """Start every plan a previous process left started (called once the ledger runs)."""
        resumed = []
        for plan in self.store.all():
            if plan["state"] == "started":
                self.start(plan, plan.get("approver"), check=False)
                resumed.append(plan["plan"])
        return resumed

    def stop(self) -> None:
        self._stopping.set()
        with self._lock:
            threads = list(self._running.values())
        for thread in threads:
            thread.join(timeout=30)

    def progress(self, plan_id: str) -> dict[str, Any]:
        plan = self.load(plan_id)
        tally = plan["tally"]
        remaining = plan["total"] - plan["position"] if plan["state"] in ("started", "finished") else plan["total"]
        out = {k: plan.get(k) for k in ("plan", "state", "action", "reason", "actor", "approver", "approval",
                                        "digest", "total", "created_at", "started_at", "finished_at", "incident",
                                        "rate_per_second", "error")}  # fmt: skip
        out |= {"selector": plan["selector_summary"], "remaining": remaining, **tally}
        out["running"] = plan_id in self._running
        return out

    def _journal(self, plan: dict[str, Any], phase: str) -> None:
        tally = plan["tally"]
        details: dict[str, Any] = {
            "phase": phase, "plan": plan["plan"], "action": plan["action"], "digest": plan["digest"],
            "selector": orjson.dumps(plan["selector_summary"], option=orjson.OPT_SORT_KEYS).decode()[:4096],
            "total": plan["total"], "actor": plan["actor"],
        }  # fmt: skip
        if plan.get("approver"):
            details["approver"] = plan["approver"]
        if plan.get("incident"):
            details["incident"] = plan["incident"]
        if phase == "finished":
            details |= {"done": tally["done"], "refused": tally["refused"], "duplicate": tally["duplicate"]}
        event = self.ledger.system_event(
            EventType.BULK_OPERATION, actor=plan["actor"], reason=plan["reason"], correlation_id=plan["plan"],
            details=details,
        )  # fmt: skip
        (outcome,) = self.ledger.submit([event]).result()
        if outcome.status != "accepted":
            raise RuntimeError(f"bulk_operation record not journaled: {outcome.error or outcome.status}")
