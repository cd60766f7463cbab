"""The forwarder: one worker per configured sink over one journal directory, and their metrics."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from prometheus_client import CollectorRegistry

from audit_forwarder.shipper.metrics import ForwardMetrics, SinkGauges
from audit_forwarder.shipper.quarantine import Reporter
from audit_forwarder.shipper.sink_types import SinkConfig, build_sink
from audit_forwarder.shipper.worker import SinkWorker
from keylife.journal.reader import journal_size

log = logging.getLogger("keylife.forwarder")


class Lock(Protocol):
    """What holds the state directory for this forwarder alone (``keylife.datalock.DataLock``)."""

    def release(self) -> None: ...


class Forwarder:
    def __init__(
        self,
        journal_dir: Path,
        state_dir: Path,
        sinks: list[SinkConfig],
        registry: CollectorRegistry,
        *,
        reporter: Reporter | None = None,
        journal_size_fn: Callable[[], int] | None = None,
        lock: Lock | None = None,
    ) -> None:
        self.journal_dir = Path(journal_dir)
        self.state_dir = Path(state_dir)
        self.lock = lock  # released by stop(), once no worker can move a cursor any more
        self.metrics = ForwardMetrics(registry)
        names = [sink.name for sink in sinks]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"sink names must be unique; repeated: {', '.join(duplicates)}")
        self.workers = [
            SinkWorker(build_sink(config), config, self.journal_dir, self.state_dir, self.metrics, reporter)
            for config in sinks
            if config.enabled
        ]
        size = journal_size_fn or (lambda: journal_size(self.journal_dir))
        registry.register(SinkGauges(lambda: list(self.workers), size))

    def start(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True, mode=0o750)
        for worker in self.workers:
            worker.start()
        if self.workers:
            log.info("forwarder started", extra={"sinks": [w.name for w in self.workers]})

    def notify(self, *_: object) -> None:
        """Entries were committed: wake every worker (cheap; called from the journal writer)."""
        for worker in self.workers:
            worker.notify()

    def stop(self) -> None:
        for worker in self.workers:  # all at once: sinks stuck in a send wait in parallel
            worker.request_stop()
        for worker in self.workers:
            worker.stop()
        if self.lock is not None and not any(worker.running for worker in self.workers):
            # A worker stuck past its join timeout keeps the lock until the process exits (the
            # kernel drops it then), so a second forwarder cannot start beside it.
            self.lock.release()
            self.lock = None
