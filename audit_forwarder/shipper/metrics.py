"""Per-sink forwarder metrics: counters kept by the workers, gauges read from them at scrape time."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector


class SinkState(Protocol):
    """What a worker exposes for the scrape-time gauges."""

    name: str
    up: bool
    acknowledged: int  # entries acknowledged (= the cursor's next seq)
    last_ack_time: float
    quarantine_unjournaled: int

    def oldest_unshipped_observed(self) -> float | None: ...


class ForwardMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.sent = Counter(
            "keylife_forward_records_sent",
            "Records the sink acknowledged (journal entries and published checkpoints).",
            ["sink"],
            registry=registry,
        )
        self.failures = Counter(
            "keylife_forward_failures",
            "Failed deliveries by reason; each failed attempt counts once.",
            ["sink", "reason"],
            registry=registry,
        )
        self.retries = Counter(
            "keylife_forward_retries",
            "Batches sent again after a retryable failure.",
            ["sink"],
            registry=registry,
        )
        self.quarantined = Counter(
            "keylife_forward_quarantined",
            "Records the sink refused for good, moved to its quarantine file and journaled.",
            ["sink", "reason"],
            registry=registry,
        )
        self.chain_mismatches = Counter(
            "keylife_forward_chain_mismatches",
            "Signed checkpoints whose hash differs from the chain the forwarder read (tampering or damage).",
            ["sink"],
            registry=registry,
        )
        self.batch_seconds = Histogram(
            "keylife_forward_batch_seconds",
            "Time from sending a batch to its acknowledgement (successful batches).",
            ["sink"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10),
            registry=registry,
        )

    def prime(self, sink: str, reasons: Iterable[str]) -> None:
        """Create a sink's series at zero, so rate() and absent-alerts work from the first scrape."""
        self.sent.labels(sink)
        self.retries.labels(sink)
        self.chain_mismatches.labels(sink)
        for reason in reasons:
            self.failures.labels(sink, reason)
            self.quarantined.labels(sink, reason)


class SinkGauges(Collector):
    """Up, lag, age of the oldest unshipped entry: computed when scraped, from the workers."""

    def __init__(self, states: Callable[[], list[SinkState]], journal_size: Callable[[], int]) -> None:
        self._states = states
        self._journal_size = journal_size

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterable[Metric]:
        states = self._states()
        size = self._journal_size()
        now = time.time()
        families = {name: GaugeMetricFamily(name, help_text, labels=["sink"]) for name, help_text in GAUGES}
        for state in states:
            oldest = state.oldest_unshipped_observed() if size > state.acknowledged else None
            values = {
                "keylife_forward_up": 1.0 if state.up else 0.0,
                "keylife_forward_lag_entries": float(max(0, size - state.acknowledged)),
                "keylife_forward_acknowledged_entries": float(state.acknowledged),
                "keylife_forward_oldest_unshipped_age_seconds": max(0.0, now - oldest) if oldest is not None else 0.0,
                "keylife_forward_last_ack_timestamp_seconds": state.last_ack_time,
                "keylife_forward_quarantine_unjournaled": float(state.quarantine_unjournaled),
            }
            for name, value in values.items():
                families[name].add_metric([state.name], value)
        return list(families.values())


# The scrape-time gauges (name, help), one series per sink; docs/metrics.md is generated from this.
GAUGES = (
    ("keylife_forward_up", "1 while the sink's last delivery attempt succeeded."),
    ("keylife_forward_lag_entries", "Journal entries the sink has not acknowledged yet."),
    ("keylife_forward_acknowledged_entries", "Journal entries the sink acknowledged (its durable cursor)."),
    (
        "keylife_forward_oldest_unshipped_age_seconds",
        "Age of the oldest journal entry the sink has not acknowledged (0 when caught up).",
    ),
    ("keylife_forward_last_ack_timestamp_seconds", "When the sink last acknowledged a batch (Unix time; 0 before)."),
    (
        "keylife_forward_quarantine_unjournaled",
        "Quarantined records whose notice is not yet in the journal (keylife unreachable).",
    ),
)
