"""The seams of the DataFold adapter: sources hand out ``Line``s, the ``Adapter`` maps them to
keylife events, an ``EventSink`` makes those durable. Sources and mapping never import each other.

Durability rule (what keeps "restart neither skips nor repeats"): a source persists its position
only up to lines whose events the sink has acknowledged. The adapter aggregates usage per key per
interval, so it tells the source, through ``Adapter.safe_position``, the oldest position whose
events are not yet emitted; a source never persists past it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True, slots=True)
class Line:
    """One line of node output as a source read it."""

    text: str  # without its trailing newline
    source: str  # "file:/var/log/datafold/node.log", "sse:http://node-a:9001/api/logs/stream"
    position: int  # a source-defined, increasing position of this line (file: byte offset of its start)
    node: str | None = None  # the node this source belongs to, from the config, when the line does not say


class EventSink(Protocol):
    def submit(self, events: list[dict[str, Any]]) -> None:
        """Make the events durable in keylife (idempotent on event ids); raise when that failed."""
        ...
