"""Anomaly flags journaled as ``anomaly`` records, so they reach the SIEMs.

The registry's ``anomalies`` extension judges each usage report as it projects it and stages the
flags; after each registry commit its delta reaches ``on_delta`` (a registry listener on the writer
thread), which only queues them. A worker thread of this service journals each as one ``anomaly``
record whose id derives from the usage report's seq and the kind, so a replay or a catch-up is a
duplicate, never a second record. At start it journals the flags a stop left unjournaled.
"""

from __future__ import annotations

import logging
import queue
import threading
from typing import Any

from keylife.domain.events import Event, EventType
from keylife.ingest.ledger import Ledger
from keylife.registry import anomalies as q
from keylife.registry.projection import ProjectionDelta, Registry

log = logging.getLogger("keylife.anomalies")

WAIT_SECONDS = 30.0
BATCH = 500


def anomaly_event(flag: dict[str, Any]) -> Event:
    """The ``anomaly`` record of one flag (deterministic id: the report's seq and the kind)."""
    details = flag["details"]
    fields: dict[str, Any] = {
        "id": f"anomaly-{flag['seq']}-{flag['kind']}",
        "type": EventType.ANOMALY,
        "key_id": flag["key_id"],
        "occurred_at": flag["at"],
        "actor": "keylife",
        "reason": _reason(flag),
        "details": details,
    }
    if flag.get("node"):
        fields["node"] = flag["node"]
    return Event.model_validate(fields)


def _reason(flag: dict[str, Any]) -> str:
    d, kind = flag["details"], flag["kind"]
    if kind in ("spike", "drop"):
        return (f"usage {kind}: {d['observed_ops_per_hour']} ops/h in {d['hour_judged']}h UTC where "
                f"{d['expected_ops_per_hour']} were expected (z {d['score']})")  # fmt: skip
    if kind == "new_node":
        return f"first use from node {flag.get('node') or '(none)'} after {d['key_hours']} hours of use"
    if kind == "new_operation":
        return f"first {flag.get('operation')} ever for this key after {d['key_hours']} hours of use"
    return f"use at {d['hour']:02d}h UTC, an hour the key is almost never used at (share {d['share']})"


class AnomalyService:
    def __init__(self, ledger: Ledger, registry: Registry) -> None:
        self.ledger, self.registry = ledger, registry
        self._queue: queue.Queue[list[dict[str, Any]] | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="anomalies", daemon=True)
        self.journaled = 0  # records written since start (tests and logs)

    def start(self) -> None:
        """Queue the flags a stop left unjournaled, then start the worker."""
        pending = q.pending_flags(self.registry._reader())
        if pending:
            self._queue.put(pending)
        self._thread.start()

    def stop(self) -> None:
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join(timeout=WAIT_SECONDS)

    def on_delta(self, delta: ProjectionDelta) -> None:
        """The registry listener (writer thread): hand new flags to the worker, nothing more."""
        flags = delta.extensions.get("anomalies")
        if flags:
            self._queue.put(list(flags))

    def _run(self) -> None:
        while (flags := self._queue.get()) is not None:
            for i in range(0, len(flags), BATCH):
                try:
                    self._journal(flags[i : i + BATCH])
                except Exception:  # logged; the flag stays pending in the registry for the next start
                    log.exception("could not journal %d anomaly flags", len(flags[i : i + BATCH]))

    def _journal(self, flags: list[dict[str, Any]]) -> None:
        outcomes = self.ledger.submit([anomaly_event(f) for f in flags]).result(timeout=WAIT_SECONDS)
        for flag, outcome in zip(flags, outcomes, strict=True):
            if outcome.status == "accepted":
                self.journaled += 1
                log.warning("usage anomaly", extra={"kind": flag["kind"], "seq": flag["seq"]})
            elif outcome.status != "duplicate":
                log.error("anomaly flag of entry %d not journaled: %s", flag["seq"], outcome.error or outcome.status)
