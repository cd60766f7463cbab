"""Usage aggregation: one ``usage_report`` per (node, key, interval) instead of one event per use.

A node logs every encryption and every authenticated request; keylife wants counts per
operation per interval (ARCHITECTURE.md: "usage arrives as aggregated reports"). The rules below
make a report come out the same however often, and through however many sources, its lines are read:

* **Event time, not arrival time**: the interval is ``floor(event time / interval)``. An
  aggregate closes when the node's newest event time is ``lateness`` past the interval's end
  (a watermark: the same lines close it at the same line, however fast they are read); ``flush``
  closes an ended interval early only for a node that has gone quiet (``idle`` wall-clock
  seconds without a use), so a replay of an old log is never cut at wherever the reader was
  when the flush timer fired.
* **Content-addressed ids**: a report's id is a digest of (node, key, interval start, the
  sorted source event ids it counts). Re-reading the same lines gives the same id and body and
  the journal dedupes it; a different set of lines (a line arriving after its interval closed)
  gives a different id, never a different body under one id (which keylife would refuse).
* **Dedupe by source event id** inside an open aggregate: the node's log file and its HTTP log
  buffer carry the same crypto audit event; read through both, it counts once.
* **Safe positions**: ``safe_position`` is the oldest line of a source still held open, or of
  an emitted aggregate that overlaps one still open (restarting inside it would re-read only
  its tail and report that part again under another id), so a restart re-reads whole aggregates.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any


@dataclass(slots=True)
class Aggregate:
    node: str
    key_id: str
    start: int  # Unix seconds, a multiple of the interval
    meta: dict[str, Any]  # algorithm / key_size / purpose carried on the report
    counts: dict[str, int] = field(default_factory=dict)
    ids: set[str] = field(default_factory=set)
    first: dict[str, int] = field(default_factory=dict)  # source -> position of its oldest line here
    last: dict[str, int] = field(default_factory=dict)  # source -> position of its newest line here


def fmt(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


class UsageAggregator:
    """Open aggregates keyed by (node, key, interval start); see the module docstring for why."""

    def __init__(self, interval: int = 60, lateness: int | None = 60, idle: float | None = None) -> None:
        if interval < 1:
            raise ValueError("interval must be at least 1 second")
        self.interval = interval
        self.lateness = lateness  # None: only flush() closes aggregates
        self.idle = float(lateness or interval) if idle is None else idle
        self._open: dict[tuple[str, str, int], Aggregate] = {}
        self._newest: dict[str, float] = {}  # node -> newest event time seen (the watermark)
        self._newest_start: dict[str, int] = {}  # node -> newest interval start seen
        self._quiet_since: dict[str, float] = {}  # node -> monotonic time of its last use
        self._emitted: dict[str, list[tuple[int, int]]] = {}  # source -> (first, last) of emitted aggregates

    def add(
        self,
        node: str,
        key_id: str,
        op: str,
        at: float,
        event_id: str,
        source: str,
        position: int,
        meta: dict[str, Any],
    ) -> list[dict[str, Any]] | None:
        """Count one use. None for a duplicate (already counted), else the reports the node's
        watermark closed (usually none)."""
        iv = self.interval
        start = int(at // iv) * iv
        k = (node, key_id, start)
        agg = self._open.get(k)
        if agg is None:
            agg = self._open[k] = Aggregate(node, key_id, start, meta)
        elif event_id in agg.ids:
            return None
        agg.ids.add(event_id)
        counts = agg.counts
        counts[op] = counts.get(op, 0) + 1
        if source not in agg.first:
            agg.first[source] = position
        agg.last[source] = position
        self._quiet_since[node] = time.monotonic()
        if at > self._newest.get(node, 0.0):
            self._newest[node] = at
        newest = self._newest_start.get(node)
        if newest is None or start > newest:  # a new interval began: an old one may be complete
            self._newest_start[node] = start
            if newest is not None and self.lateness is not None:
                horizon = at - iv - self.lateness  # intervals that ended `lateness` before this use
                return self._emit([a for a in self._open.values() if a.node == node and a.start <= horizon])
        return []

    def flush(self, upto: datetime | None = None) -> list[dict[str, Any]]:
        """Reports of aggregates complete by ``upto``: their interval ended by then and the node's
        watermark passed it, or the node has been quiet for ``idle`` seconds. None: all of them
        (the whole input has been read)."""
        if upto is None:
            return self._emit(list(self._open.values()))
        limit = upto.timestamp() - self.interval
        now, late = time.monotonic(), self.lateness or 0
        done = [
            a
            for a in self._open.values()
            if a.start <= limit
            and (
                a.start + self.interval + late <= self._newest.get(a.node, 0.0)
                or now - self._quiet_since.get(a.node, now) >= self.idle
            )
        ]
        return self._emit(done)

    def safe_position(self, source: str) -> int | None:
        """The position a restart of ``source`` must re-read from; None when nothing is held."""
        held = [a.first[source] for a in self._open.values() if source in a.first]
        emitted = self._emitted.get(source)
        if not held:
            self._emitted.pop(source, None)  # nothing open: every emitted aggregate lies wholly before
            return None
        oldest = min(held)
        if emitted:
            emitted[:] = [(first, last) for first, last in emitted if last >= oldest]  # the overlapping ones
            if emitted:
                oldest = min(oldest, *(first for first, _ in emitted))
        return oldest

    def held(self) -> int:
        return len(self._open)

    def _emit(self, done: list[Aggregate]) -> list[dict[str, Any]]:
        done.sort(key=lambda a: (a.start, a.node, a.key_id))
        out = []
        for agg in done:
            del self._open[(agg.node, agg.key_id, agg.start)]
            for source, first in agg.first.items():
                self._emitted.setdefault(source, []).append((first, agg.last[source]))
            out.append(self.report(agg))
        return out

    def report(self, agg: Aggregate) -> dict[str, Any]:
        """The ``usage_report`` of one aggregate (see the module docstring for the id)."""
        digest = hashlib.sha256("\0".join([agg.node, agg.key_id, str(agg.start), *sorted(agg.ids)]).encode())
        stamp = datetime.fromtimestamp(agg.start, UTC).strftime("%Y%m%dT%H%M%SZ")
        end = fmt(agg.start + self.interval)
        return {
            "id": f"df-usage-{stamp}-{digest.hexdigest()[:32]}",
            "type": "usage_report",
            "key_id": agg.key_id,
            "occurred_at": end,
            "node": agg.node,
            "usage": dict(sorted(agg.counts.items())),
            "interval_start": fmt(agg.start),
            "interval_end": end,
            **agg.meta,
        }
