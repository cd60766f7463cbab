"""One sink's shipping loop: read from the cursor, batch, deliver with retries, quarantine, advance.

Guarantees (at least once, in order, per sink):

* The cursor moves only after the sink acknowledged every record up to it, or after a refused
  record is durably in the quarantine file. A crash resends at most the batch in flight.
* A retryable failure resends the same batch after a backoff; nothing later is sent first and
  nothing is held in memory beyond that batch: the journal is the buffer.
* A permanent refusal of a batch is narrowed (by the index the destination names, else by
  halving) to the records at fault, which go to quarantine; the rest is delivered.
* Each sink has its own threads, reader and cursor: a slow or dead sink holds back only itself.
  Its reader prepares up to ``PREFETCH_BATCHES`` batches ahead of the one in flight, so waiting
  for the destination overlaps with reading the journal; memory stays bounded by that.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from audit_forwarder.shipper.contract import REASONS, Prepared, Record, Refused, Rejected, Retryable, Sink
from audit_forwarder.shipper.cursor import Cursor, Position
from audit_forwarder.shipper.metrics import ForwardMetrics
from audit_forwarder.shipper.quarantine import Quarantine, Reporter
from audit_forwarder.shipper.settings import SinkSettings
from audit_forwarder.shipper.tail import JournalTail, chain_head, journal_origin
from keylife.common.backoff import Backoff
from keylife.journal.reader import journal_size

log = logging.getLogger("keylife.forwarder")

POLL_SECONDS = 0.02  # idle re-read of the journal when no commit notification arrives
PREFETCH_BATCHES = 2  # batches read and prepared ahead of the one in flight


class _Stopped(Exception):
    pass


@dataclass(slots=True)
class _Batch:
    records: list[Record]  # every record read: all of them move the cursor once acknowledged
    prepared: list[Prepared]  # the ones to send (the rest went to quarantine in prepare)


class SinkWorker:
    def __init__(
        self,
        sink: Sink,
        settings: SinkSettings,
        journal_dir: Path,
        state_dir: Path,
        metrics: ForwardMetrics,
        reporter: Reporter | None = None,
    ) -> None:
        self.sink = sink
        self.settings = settings
        self.name = settings.name
        self.journal_dir = Path(journal_dir)
        self.state_dir = Path(state_dir) / settings.name
        self.metrics = metrics
        self.origin = journal_origin(self.journal_dir)
        self.cursor = Cursor(self.state_dir / "cursor.json", self.origin)
        self.quarantine = Quarantine(self.state_dir, settings.name, reporter)
        self.up = True
        self.acknowledged = 0
        self.last_ack_time = 0.0
        self.last_error: str | None = None
        self.next_retry_at: float | None = None  # when a failed batch is resent (time.time())
        self.failure: str | None = None  # why the worker stopped for good (a damaged journal)
        self._unacked: deque[float | None] = deque()  # per batch read ahead: its oldest entry's time
        self._start: Position | None = None
        self._halt = threading.Event()  # stop, or the sending side failed: the reader stops too
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._refusals_in_row = 0
        self._held = False
        metrics.prime(self.name, REASONS)

    # ----- lifecycle ------------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"forward-{self.name}", daemon=True)
        self._thread.start()

    def request_stop(self) -> None:
        """Ask the threads to stop after the current send (which ``timeout_seconds`` bounds)."""
        self._halt.set()
        self._wake.set()

    def stop(self, timeout: float = 15.0) -> None:
        self.request_stop()
        if self._thread is not None:
            self._thread.join(timeout)
        self.sink.close()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def notify(self) -> None:
        """New entries are committed: read now rather than at the next poll."""
        self._wake.set()

    @property
    def quarantine_unjournaled(self) -> int:
        return self.quarantine.unjournaled

    def oldest_unshipped_observed(self) -> float | None:
        for oldest in list(self._unacked):  # batches read but not acknowledged, oldest first
            if oldest is not None:
                return oldest
        return None

    # ----- the loop -------------------------------------------------------------------------
    def _run(self) -> None:
        try:
            tail = self._open_tail()
        except Exception as exc:
            self._fail(f"cannot open the journal: {exc}")
            return
        batches: queue.Queue[_Batch | BaseException] = queue.Queue(maxsize=PREFETCH_BATCHES)
        reader = threading.Thread(
            target=self._read_ahead, args=(tail, batches), name=f"forward-{self.name}-read", daemon=True
        )
        reader.start()
        try:
            while not self._halt.is_set():
                self.quarantine.journal_pending()
                try:
                    item = batches.get(timeout=0.25)
                except queue.Empty:
                    continue
                if isinstance(item, BaseException):
                    raise item
                self._deliver(item.prepared)
                self._acknowledge(item)
        except _Stopped:
            pass
        except Exception as exc:
            self._fail(str(exc))
        finally:
            self._halt.set()
            reader.join()
            tail.close()

    def _read_ahead(self, tail: JournalTail, batches: queue.Queue[_Batch | BaseException]) -> None:
        """Read and prepare the next batches while the current one is in flight: the destination's
        time to answer (and the cursor's fsync) overlaps with our reading, not adds to it."""
        try:
            while not self._halt.is_set():
                records, prepared = self._next_batch(tail)
                if not records:
                    continue
                oldest = next((_epoch(r.entry.observed_at) for r in records if not r.is_checkpoint), None)
                batch = _Batch(records, prepared)
                self._unacked.append(oldest)
                while not self._halt.is_set():
                    try:
                        batches.put(batch, timeout=0.25)
                        break
                    except queue.Full:
                        continue
        except Exception as exc:
            batches.put(exc)

    def _fail(self, reason: str) -> None:
        self.failure = reason
        self.up = False
        log.error("forwarder stopped", extra={"sink": self.name, "error": reason})

    def _open_tail(self) -> JournalTail:
        position = self.cursor.load()
        if position is None:
            start = journal_size(self.journal_dir) if self.settings.start == "end" else 0
            position = Position(start, chain_head(self.journal_dir, start), 0)
            if start:
                self.cursor.save(position)
        self.acknowledged = position.next_seq
        self._start = position
        return JournalTail(
            self.journal_dir,
            position.next_seq,
            position.head,
            checkpoints_shipped=position.checkpoints_shipped,
            publish_checkpoints=self.settings.publish_checkpoints,
        )

    def _next_batch(self, tail: JournalTail) -> tuple[list[Record], list[Prepared]]:
        """Records read (all of them move the cursor) and the prepared ones to send."""
        settings = self.settings
        records: list[Record] = []
        prepared: list[Prepared] = []
        size = 0
        deadline: float | None = None
        while not self._halt.is_set():
            room = settings.batch_max_records - len(prepared)
            fresh = tail.read(room) if room > 0 and size < settings.batch_max_bytes else []
            for record in fresh:
                records.append(record)
                try:
                    item = self.sink.prepare(record)
                except Refused as refused:
                    self._quarantine(record, refused.reason, str(refused))
                    continue
                prepared.append(item)
                size += item.size
            self._check_chain(tail)
            if len(prepared) >= settings.batch_max_records or size >= settings.batch_max_bytes:
                break
            now = time.monotonic()
            if records:
                if deadline is None:
                    deadline = now + settings.batch_wait_seconds
                if now >= deadline:
                    break
            if not fresh:  # nothing new: wait for a commit notification, the poll, or the deadline
                self._wake.wait(POLL_SECONDS if deadline is None else max(0.0, min(POLL_SECONDS, deadline - now)))
                self._wake.clear()
        return records, prepared

    def _check_chain(self, tail: JournalTail) -> None:
        while tail.mismatches:
            problem = tail.mismatches.pop(0)
            self.metrics.chain_mismatches.labels(self.name).inc()
            log.error("journal does not match its signed checkpoint", extra={"sink": self.name, "error": problem})

    def _deliver(self, prepared: list[Prepared]) -> None:
        parts: deque[list[Prepared]] = deque([prepared] if prepared else [])
        backoff = Backoff(self.settings.retry_initial_seconds, self.settings.retry_max_seconds)
        first_try = True
        while parts:
            part = parts[0]
            started = time.monotonic()
            try:
                if not first_try:
                    self.metrics.retries.labels(self.name).inc()
                self.sink.send(part)
            except Retryable as exc:
                delay = backoff.next_delay(exc.retry_after)  # Retry-After honoured, at most 1 h
                self._failed(exc.reason, str(exc), retry_in=delay)
                first_try = False
                self._sleep(delay)
                continue
            except Rejected as exc:
                self._failed(exc.reason, str(exc))
                parts.popleft()
                if self._held or self._refusals_in_row >= self.settings.max_consecutive_refusals:
                    # Hold: probe with one record per backoff until the destination takes it.
                    self._held = True
                    self.up = False
                    self.last_error = f"destination refused {self._refusals_in_row} records in a row; holding: {exc}"
                    parts.extendleft([piece for piece in (part[1:], part[:1]) if piece])
                    first_try = False
                    self._sleep(backoff.next_delay())
                    continue
                self._narrow(parts, part, exc)
                continue
            self.metrics.batch_seconds.labels(self.name).observe(time.monotonic() - started)
            self.metrics.sent.labels(self.name).inc(len(part))
            parts.popleft()
            backoff.reset()
            first_try = True
            self.up = True
            self._held = False
            self._refusals_in_row = 0

    def _narrow(self, parts: deque[list[Prepared]], part: list[Prepared], exc: Rejected) -> None:
        if exc.index is not None and 0 <= exc.index < len(part):
            self._quarantine(part[exc.index].record, exc.reason, str(exc))
            self._refusals_in_row += 1
            rest = [piece for piece in (part[: exc.index], part[exc.index + 1 :]) if piece]
        elif len(part) == 1:
            self._quarantine(part[0].record, exc.reason, str(exc))
            self._refusals_in_row += 1
            rest = []
        else:
            half = len(part) // 2
            rest = [part[:half], part[half:]]
        parts.extendleft(reversed(rest))

    def _failed(self, reason: str, message: str, *, retry_in: float | None = None) -> None:
        """Count and log a failed send; ``retry_in``: the wait before the batch is resent (logged,
        and kept as ``next_retry_at``, the wall-clock time of the next attempt)."""
        self.up = False
        self.last_error = message
        self.metrics.failures.labels(self.name, reason).inc()
        extra: dict[str, object] = {"sink": self.name, "reason": reason, "error": message[:500]}
        if retry_in is not None:
            self.next_retry_at = time.time() + retry_in
            extra["retry_in_seconds"] = round(retry_in, 3)
        log.warning("delivery failed", extra=extra)

    def _quarantine(self, record: Record, reason: str, detail: str) -> None:
        self.quarantine.add(record, reason, detail)
        self.metrics.quarantined.labels(self.name, reason).inc()

    def _sleep(self, seconds: float) -> None:
        if self._halt.wait(seconds):
            raise _Stopped

    def _acknowledge(self, batch: _Batch) -> None:
        entries = [record for record in batch.records if not record.is_checkpoint]
        previous = self.cursor.position or self._start
        assert previous is not None
        shipped = max((r.checkpoint or 0 for r in batch.records if r.is_checkpoint), default=0)
        position = Position(
            entries[-1].seq + 1 if entries else previous.next_seq,
            entries[-1].entry.hash if entries else previous.head,
            max(shipped, previous.checkpoints_shipped),
        )
        self.cursor.save(position)
        self.acknowledged = position.next_seq
        self.last_ack_time = time.time()
        self._unacked.popleft()


def _epoch(observed_at: str) -> float:
    return datetime.fromisoformat(observed_at).timestamp()
