"""Lockdown and release: suspend every active key a selector matches in one journaled action,
and later reactivate exactly the keys that lockdown suspended and that are still suspended by it.

Lockdown needs no second person (dual control is for the irreversible): a suspension is undone
by a release, and the release itself is a separate scope (``release``, security-admin).

Journal: per key a ``suspended`` command with id ``<lockdown>-<index>`` and correlation_id = the
lockdown id (the registry's ``lockdown_keys`` follows these), then one ``lockdown`` record
(details.phase applied: lockdown, selector, counts, rule and trigger_key when a rule caused it,
incident). A release: ``reactivated`` commands ``<lockdown>-release-<index>`` with the same
correlation id, then the ``lockdown`` record with phase released, its counts and the keys left alone.
"""

from __future__ import annotations

import secrets
import threading
from typing import Any

import orjson

from keylife.domain.events import EventType
from keylife.domain.lifecycle import KeyState
from keylife.ingest.ledger import Ledger
from keylife.registry import plans as store
from keylife.registry.projection import Registry
from keylife.response import commands
from keylife.response import selector as sel
from keylife.response.errors import Refused

LEFT_ALONE_LISTED = 256  # keys named in the released record (details lists hold at most 256)


class Lockdowns:
    def __init__(self, ledger: Ledger, registry: Registry, batch: int = 5000) -> None:
        self.ledger, self.registry, self.batch = ledger, registry, batch
        self._release_lock = threading.Lock()  # two releases of one lockdown at once would race

    def _conn(self) -> Any:
        self.ledger.sync_registry().result()
        return self.registry._reader()

    def apply(
        self, selector: sel.Selector, reason: str, actor: str, *, incident: str | None = None,
        rule: str | None = None, trigger_key: str | None = None, keys: list[str] | None = None,
        described: dict[str, Any] | None = None,
    ) -> dict[str, Any]:  # fmt: skip
        """Suspend the active keys ``selector`` matches (or ``keys``, already resolved by a rule, whose
        scope ``described`` records)."""
        if keys is None:
            keys = sel.resolve(self._conn(), selector.model_copy(update={"states": [KeyState.ACTIVE]}))
        lockdown_id = f"{store.LOCKDOWN_PREFIX}{secrets.token_hex(8)}"
        tally = commands.run(
            self.ledger, keys, EventType.SUSPENDED, prefix=lockdown_id, actor=actor, reason=reason,
            correlation=lockdown_id, batch=self.batch,
        )  # fmt: skip
        details: dict[str, Any] = {
            "phase": "applied", "lockdown": lockdown_id, "matched": len(keys), "suspended": tally.done,
            "refused": tally.refused,
            "selector": orjson.dumps(described or selector.describe(), option=orjson.OPT_SORT_KEYS).decode()[:4096],
        }  # fmt: skip
        for name, value in (("incident", incident), ("rule", rule), ("trigger_key", trigger_key)):
            if value:
                details[name] = value
        self._record(details, actor, reason, lockdown_id)
        return {"lockdown": lockdown_id, "state": "applied", **details, "refusals": tally.refusals}

    def release(self, lockdown_id: str, reason: str, actor: str) -> dict[str, Any]:
        with self._release_lock:
            conn = self._conn()
            found = store.lockdown(conn, lockdown_id)
            if found is None:
                raise Refused(404, "lockdown-not-found", "No such lockdown", f"lockdown {lockdown_id!r} does not exist")
            if found["phase"] == "released":
                raise Refused(
                    409, "lockdown-released", "Lockdown already released",
                    f"lockdown {lockdown_id} was released at {found['released_at']}", lockdown=lockdown_id,
                )  # fmt: skip
            conn.execute("BEGIN")  # one snapshot: what it suspended and what is still suspended by it
            try:
                suspended = store.locked_keys(conn, lockdown_id)
                still = store.still_locked(conn, lockdown_id)
            finally:
                conn.execute("COMMIT")
            held = set(still)
            left_alone = [k for k in suspended if k not in held]
            states = {k: self.registry.key_state(k) for k in left_alone[:LEFT_ALONE_LISTED]}
            tally = commands.run(
                self.ledger, still, EventType.REACTIVATED, prefix=f"{lockdown_id}-release", actor=actor, reason=reason,
                correlation=lockdown_id, batch=self.batch,
            )  # fmt: skip
            details = {
                "phase": "released", "lockdown": lockdown_id, "suspended": len(suspended), "released": tally.done,
                "refused": tally.refused, "left_alone": len(left_alone),
                "left_alone_keys": left_alone[:LEFT_ALONE_LISTED],
            }  # fmt: skip
            if found.get("incident"):  # the release belongs to the incident the lockdown answered
                details["incident"] = found["incident"]
            self._record(details, actor, reason, lockdown_id)
        return details | {
            "state": "released",
            "left_alone_detail": [{"key_id": k, "state": s.value if s else None} for k, s in states.items()],
            "refusals": tally.refusals,
        }

    def get(self, lockdown_id: str) -> dict[str, Any]:
        conn = self._conn()
        found = store.lockdown(conn, lockdown_id)
        if found is None:
            raise Refused(404, "lockdown-not-found", "No such lockdown", f"lockdown {lockdown_id!r} does not exist")
        found["keys_suspended"] = len(store.locked_keys(conn, lockdown_id))
        found["keys_still_suspended"] = len(store.still_locked(conn, lockdown_id))
        return found

    def list(self) -> list[dict[str, Any]]:
        return store.lockdowns(self._conn())

    def _record(self, details: dict[str, Any], actor: str, reason: str, lockdown_id: str) -> None:
        event = self.ledger.system_event(
            EventType.LOCKDOWN, actor=actor, reason=reason, correlation_id=lockdown_id, details=details
        )
        (outcome,) = self.ledger.submit([event]).result()
        if outcome.status != "accepted":
            raise RuntimeError(f"lockdown record not journaled: {outcome.error or outcome.status}")
