"""Many keys, one command each, through the ledger in batches: the engine under bulk plans,
lockdowns and releases.

Every key's transition is a command of its own (the lifecycle decides each: a refusal is per
key, journaled as ``command_refused``, and does not stop the rest) with a deterministic id
``<prefix>-<index>``, so re-sending a batch after a crash answers ``duplicate`` for what was
already journaled instead of doing it twice.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from keylife.domain.events import Event, EventType, format_time
from keylife.ingest.ledger import Ledger

MAX_REFUSALS_KEPT = 1000  # per operation, in its progress (the journal has every one)


@dataclass
class Tally:
    done: int = 0
    refused: int = 0
    duplicate: int = 0
    refusals: list[dict[str, str]] = field(default_factory=list)  # {key_id, reason}, capped

    def as_dict(self) -> dict[str, Any]:
        return {"done": self.done, "refused": self.refused, "duplicate": self.duplicate, "refusals": self.refusals}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Tally:
        return cls(d.get("done", 0), d.get("refused", 0), d.get("duplicate", 0), list(d.get("refusals", [])))


def command_events(
    keys: list[str], start: int, kind: EventType, prefix: str, actor: str, reason: str, correlation: str,
    attributes: dict[str, str] | None = None,
) -> list[Event]:  # fmt: skip
    """The command events for ``keys`` (numbered from ``start``); validated like any command."""
    now = format_time(datetime.now(UTC))
    base: dict[str, Any] = {
        "type": kind, "occurred_at": now, "actor": actor, "reason": reason, "origin": "command",
        "correlation_id": correlation,
    }  # fmt: skip
    if attributes:
        base["attributes"] = attributes
    return [Event.model_validate(base | {"id": f"{prefix}-{start + i}", "key_id": key}) for i, key in enumerate(keys)]


def run(
    ledger: Ledger,
    keys: list[str],
    kind: EventType,
    *,
    prefix: str,
    actor: str,
    reason: str,
    correlation: str,
    start: int = 0,
    tally: Tally | None = None,
    batch: int = 5000,
    rate_per_second: float | None = None,
    after_batch: Callable[[int, Tally], None] | None = None,
    stop: Callable[[], bool] | None = None,
    attributes: dict[str, str] | None = None,
) -> Tally:
    """Journal one ``kind`` command per key from index ``start`` on; ``after_batch(next_index, tally)``
    runs once each batch is durable (the caller saves its position there). A rate limit shrinks the
    batches and paces them. ``stop()`` true ends the run after the current batch."""
    tally = tally or Tally()
    if rate_per_second:
        batch = max(1, min(batch, int(rate_per_second)))
    began, sent = time.monotonic(), 0
    index = start
    while index < len(keys):
        if stop is not None and stop():
            break
        if rate_per_second and sent:
            delay = began + sent / rate_per_second - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        chunk = keys[index : index + batch]
        events = command_events(chunk, index, kind, prefix, actor, reason, correlation, attributes)
        outcomes = ledger.submit(events, command=True).result()
        for key, outcome in zip(chunk, outcomes, strict=True):
            if outcome.status == "accepted":
                tally.done += 1
            elif outcome.status == "duplicate":
                tally.duplicate += 1
            else:
                tally.refused += 1
                if len(tally.refusals) < MAX_REFUSALS_KEPT:
                    tally.refusals.append({"key_id": key, "reason": outcome.error or outcome.status})
        index += len(chunk)
        sent += len(chunk)
        if after_batch is not None:
            after_batch(index, tally)
    return tally
