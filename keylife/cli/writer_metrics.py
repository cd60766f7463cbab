"""The journal writer's labelled state for ``/metrics``: degraded (and why) and I/O failures.

``PipelineCollector`` serves the pipeline's unlabelled values; these two families carry labels
(the cause, the operation and errno), so they are built here from the same specs
(``exporter.metrics_spec.PIPELINE``), which also generate ``docs/metrics.md``.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import Metric

from exporter.collectors import family
from keylife.ingest.ledger import Ledger
from keylife.journal.writer import Journal


class WriterCollector:
    def __init__(self, journal: Journal, ledger: Ledger) -> None:
        self.journal = journal
        self.ledger = ledger

    def describe(self) -> Iterator[Metric]:
        # PipelineCollector already describes every PIPELINE name; describing them twice would
        # make the registry refuse this collector as a duplicate.
        return iter(())

    def collect(self) -> Iterator[Metric]:
        degraded = family("keylife_ingest_writer_degraded")
        state = self.ledger.degraded
        degraded.add_metric([state.cause if state is not None else "none"], 1.0 if state is not None else 0.0)
        yield degraded
        failures = family("keylife_journal_io_failures")
        counts = dict(self.journal.io_failures)  # copies: the writer and sealing threads add to them
        for key, n in dict(self.ledger.registry_failures).items():
            counts[key] = counts.get(key, 0) + n
        for (operation, cause), n in sorted(counts.items()):
            failures.add_metric([operation, cause], float(n))
        yield failures
