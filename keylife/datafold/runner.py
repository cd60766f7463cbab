"""Glue between a line source, the adapter and a sink, with the durability rule of ``contract``.

A ``Runner`` reads lines, feeds the adapter, sends the events in batches (up to
``batch_events`` or every ``batch_seconds``), asks the adapter for finished usage aggregates
every ``flush_seconds``, and persists the source's position only up to lines whose events the
sink acknowledged and never past ``adapter.safe_position(source)``. So a restart neither skips
a line (its events were not acknowledged, or are still held in an aggregate) nor repeats one
(the position moved once they were).

When the sink fails the runner stops reading and retries (with backoff) until it succeeds or is
stopped, rather than piling up events it cannot deliver. Events the sink refuses for good are
dropped, counted and logged: one bad event must not stall a node's log forever. A non-following
run (``keylife ingest datafold --file``) instead raises on a sink failure, so the command fails.

On stop, held aggregates are *not* forced out: they cover part of an interval, and the next run
re-reads their lines from the held-back position and emits the whole interval once. Only a run
that has read its whole input (``follow=False``) flushes everything.
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from keylife.datafold.contract import EventSink, Line
from keylife.datafold.sinks import SinkRejected

log = logging.getLogger("keylife.datafold.runner")


class Adapter(Protocol):
    """What the runner needs of ``keylife.datafold.mapping.Adapter``."""

    def feed(self, line: Line) -> list[dict[str, Any]]: ...
    def flush(self, upto: Any = None) -> list[dict[str, Any]]: ...
    def safe_position(self, source: str) -> int | None: ...
    def status(
        self, answer: dict[str, Any], client_id: str, node: str | None, http_status: int | None = None
    ) -> list[dict[str, Any]]: ...


class Source(Protocol):
    """Lines with the position just after each; ``persist`` records "everything before is done"."""

    source: str

    def read(self, max_lines: int, timeout: float) -> list[tuple[Line, int]] | None: ...
    def persist(self, position: int) -> None: ...
    def close(self) -> None: ...


@dataclass
class Counters:
    """Read by metrics and logs from other threads; written by the runner's thread only."""

    lines: int = 0  # lines read and fed to the adapter
    events: int = 0  # events the adapter produced
    submitted: int = 0  # events the sink acknowledged (accepted or duplicate)
    rejected: int = 0  # events the sink refused for good (dropped, logged)
    batches: int = 0
    sink_failures: int = 0  # failed deliveries (each retried)
    adapter_errors: int = 0  # lines the adapter failed on (logged, passed over)
    source_errors: int = 0  # failed reads: stream interruptions, unanswered polls (each retried)
    refusals: int = 0  # requests the node's signature middleware refused (each retried, logged once per change)
    problem: str | None = None  # why the source delivers nothing now (a refusal, no log stream), None when fine
    position: int | None = None  # the last position persisted

    def snapshot(self) -> dict[str, Any]:
        return asdict(self)


class Runner:
    def __init__(
        self,
        source: Source,
        adapter: Adapter,
        sink: EventSink,
        *,
        stop: threading.Event | None = None,
        follow: bool = True,
        batch_events: int = 1000,
        batch_seconds: float = 0.5,
        flush_seconds: float = 60.0,
        read_timeout: float = 0.25,
        retry_initial: float = 0.5,
        retry_max: float = 30.0,
    ) -> None:
        self.source, self.adapter, self.sink = source, adapter, sink
        self.stop = stop or threading.Event()
        self.follow = follow
        self.batch_events, self.batch_seconds = batch_events, batch_seconds
        self.flush_seconds, self.read_timeout = flush_seconds, read_timeout
        self.retry_initial, self.retry_max = retry_initial, retry_max
        self.counters = Counters()
        self._pending: list[dict[str, Any]] = []
        self._pending_since: float | None = None
        self._fed: int | None = None  # position just after the last line fed
        self._acked: int | None = None  # ... after the last line whose events were acknowledged
        self._delivered_at = time.monotonic()

    def run(self) -> Counters:
        """Until stopped (or, not following, until the input ends); returns the counters."""
        next_flush = time.monotonic() + self.flush_seconds
        try:
            while not self.stop.is_set():
                got = self.source.read(self.batch_events, self.read_timeout)
                self.counters.source_errors = getattr(self.source, "errors", 0)
                self.counters.refusals = getattr(self.source, "refusals", 0)
                self.counters.problem = getattr(self.source, "problem", None)
                if got is None:  # the input ended
                    if not self.follow:  # ... and all of it was read: every aggregate is complete
                        self._add(self.adapter.flush())
                    break
                for line, resume in got:
                    self._add(self._feed(line))
                    self.counters.lines += 1
                    self._fed = resume
                if time.monotonic() >= next_flush:
                    self._add(self.adapter.flush(upto=datetime.now(UTC)))
                    next_flush = time.monotonic() + self.flush_seconds
                if self._due():
                    self._deliver()
            self._deliver()
        finally:
            self.source.close()
        return self.counters

    def _feed(self, line: Line) -> list[dict[str, Any]]:
        """A mapping bug on one line must not stop the source for good (a restart would meet the
        same line again): it is logged with the line, counted, and the line passed over."""
        try:
            return self.adapter.feed(line)
        except Exception:
            self.counters.adapter_errors += 1
            log.exception(
                "the adapter failed on a line; passed over",
                extra={"source": line.source, "position": line.position, "line": line.text[:2000]},
            )
            return []

    def _add(self, events: list[dict[str, Any]]) -> None:
        if events:
            self._pending.extend(events)
            self.counters.events += len(events)
            if self._pending_since is None:
                self._pending_since = time.monotonic()

    def _due(self) -> bool:
        if not self._pending:  # lines without events move the position too, at the same pace
            return self._fed != self._acked and time.monotonic() - self._delivered_at >= self.batch_seconds
        assert self._pending_since is not None
        return len(self._pending) >= self.batch_events or time.monotonic() - self._pending_since >= self.batch_seconds

    def _deliver(self) -> None:
        """Send what is pending; on success move and persist the position. Retries until it
        succeeds or the runner stops (following), or raises (not following)."""
        upto = self._fed
        failures = 0
        while self._pending:
            try:
                submit_dropping_rejects(self.sink, self._pending, self.counters, self.source.source)
            except Exception as error:
                self.counters.sink_failures += 1
                if not self.follow:
                    raise
                failures += 1
                delay = min(self.retry_max, self.retry_initial * 2 ** (failures - 1))
                log.warning(
                    "events not delivered; the position stays and delivery is retried",
                    extra={"source": self.source.source, "error": str(error), "delay": delay},
                )
                if self.stop.wait(delay):
                    return
            else:
                self._pending, self._pending_since = [], None
        self._delivered_at = time.monotonic()
        self._acked = upto
        self._persist()

    def _persist(self) -> None:
        position = self._acked
        if position is None:
            return
        safe = self.adapter.safe_position(self.source.source)
        if safe is not None:
            position = min(position, safe)
        if self.counters.position is None or position > self.counters.position:
            self.source.persist(position)
            self.counters.position = position


def submit_dropping_rejects(sink: EventSink, events: list[dict[str, Any]], counters: Counters, source: str) -> None:
    """Submit ``events``; those keylife refuses for good are removed from the list (in place),
    counted and logged, and the rest sent again. Any other failure raises, list intact."""
    while events:
        try:
            sink.submit(events)
        except SinkRejected as exc:
            if not exc.indexes:
                raise
            for error in exc.errors[:20]:
                log.error(
                    "event refused by keylife; dropped",
                    extra={"source": source, "error": error, "event": events[error["index"]]},
                )
            bad = set(exc.indexes)
            counters.rejected += len(bad)
            events[:] = [event for i, event in enumerate(events) if i not in bad]
            continue
        counters.submitted += len(events)
        counters.batches += 1
        return


class PollRunner:
    """Key status rounds: each round's events go to the sink together. A failed round is counted
    and logged, never fatal: status is state, not a stream, so the next round simply asks again."""

    def __init__(
        self,
        url: str,
        clients: list[str],
        adapter: Adapter,
        sink: EventSink,
        *,
        node: str | None = None,
        interval: float = 60.0,
        stop: threading.Event | None = None,
        **poller_options: Any,
    ) -> None:
        from keylife.datafold.poll import KeyStatusPoller

        self.adapter, self.sink, self.node, self.interval = adapter, sink, node, interval
        self.stop = stop or threading.Event()
        self.source = f"poll:{url}"
        self.counters = Counters()
        self._events: list[dict[str, Any]] = []
        self.poller = KeyStatusPoller(url, clients, self._on_answer, interval=interval, **poller_options)

    def _on_answer(self, answer: dict[str, Any], client_id: str, http_status: int) -> None:
        events = self.adapter.status(answer, client_id, self.node, http_status)
        self.counters.lines += 1
        self.counters.events += len(events)
        self._events.extend(events)

    def run_once(self) -> None:
        self._events = []
        self.poller.poll_once()
        self.counters.source_errors = self.poller.stats["errors"]
        self.counters.refusals = self.poller.stats["refusals"]
        self.counters.problem = self.poller.problem
        try:
            submit_dropping_rejects(self.sink, self._events, self.counters, self.source)
        except Exception as exc:
            self.counters.sink_failures += 1
            log.warning("key status events not delivered; the next round asks again", extra={"error": str(exc)})

    def run(self) -> Counters:
        try:
            while not self.stop.is_set():
                self.run_once()
                self.stop.wait(self.interval)
        finally:
            self.poller.close()
        return self.counters


def run_poll(
    url: str,
    clients: list[str],
    adapter: Adapter,
    sink: EventSink,
    stop_event: threading.Event | None = None,
    **options: Any,
) -> Counters:
    """Poll one node for the key status of ``clients`` until stopped."""
    return PollRunner(url, clients, adapter, sink, stop=stop_event, **options).run()


# ----- the kinds of source --------------------------------------------------------------
def state_file(state_dir: Path, source: str) -> Path:
    """One state file per source, named readably and uniquely."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", source.split("/")[-1] or "source")[:60]
    return Path(state_dir) / f"{source.split(':', 1)[0]}-{slug}-{hashlib.sha256(source.encode()).hexdigest()[:12]}.json"


def file_runner(
    path: Path | str,
    adapter: Adapter,
    sink: EventSink,
    state_path: Path | None = None,
    follow: bool = True,
    stop_event: threading.Event | None = None,
    *,
    node: str | None = None,
    poll_interval: float = 0.25,
    **options: Any,
) -> Runner:
    from keylife.datafold.follow import FileFollower

    follower = FileFollower(path, state_path, node=node, follow=follow, poll_interval=poll_interval)
    return Runner(follower, adapter, sink, stop=stop_event, follow=follow, read_timeout=poll_interval, **options)


def run_file(
    path: Path | str,
    adapter: Adapter,
    sink: EventSink,
    state_path: Path | None = None,
    follow: bool = True,
    stop_event: threading.Event | None = None,
    **options: Any,
) -> Counters:
    """Follow (or, ``follow=False``, read once to the end) one node log file."""
    return file_runner(path, adapter, sink, state_path, follow, stop_event, **options).run()


def sse_runner(
    url: str,
    adapter: Adapter,
    sink: EventSink,
    state_path: Path | None = None,
    stop_event: threading.Event | None = None,
    *,
    node: str | None = None,
    sse_options: dict[str, Any] | None = None,
    **options: Any,
) -> Runner:
    from keylife.datafold.sse import SseSource

    stop = stop_event or threading.Event()
    source = SseSource(url, state_path, node=node, stop=stop, **(sse_options or {}))
    return Runner(source, adapter, sink, stop=stop, follow=True, **options)


def run_sse(
    url: str,
    adapter: Adapter,
    sink: EventSink,
    state_path: Path | None = None,
    stop_event: threading.Event | None = None,
    **options: Any,
) -> Counters:
    """Follow one node's ``/api/logs/stream`` until stopped."""
    return sse_runner(url, adapter, sink, state_path, stop_event, **options).run()
