"""The incident metrics: open incidents by severity, time to mitigate and time to close.

Read from the registry's incident tables at each scrape (``keylife.registry.incidents``): there
are few incidents, and the durations are differences of journaled times, so the figures are the
same after a restart or a rebuild (they feed the reporting KPIs).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from typing import Any

from prometheus_client.core import Metric

from exporter.collectors import family
from exporter.metrics_spec import INCIDENT_CLOSE_BUCKETS, INCIDENT_MITIGATE_BUCKETS, INCIDENTS
from keylife.registry.incidents import SEVERITIES, durations, open_counts
from keylife.registry.queries import RegistryReader


class IncidentCollector:
    def __init__(self, reader: RegistryReader) -> None:
        self.reader = reader

    def describe(self) -> Iterator[Metric]:
        for spec in INCIDENTS:
            yield family(spec.name)

    def collect(self) -> Iterator[Metric]:
        db = self.reader._reader()
        try:
            counts = open_counts(db)
        except sqlite3.OperationalError:  # a registry an older keylife wrote (keylife exporter beside it)
            return
        gauge = family("keylife_incidents_open")
        for severity in SEVERITIES:
            gauge.add_metric([severity], counts.get(severity, 0))
        yield gauge
        mitigate, close = durations(db)
        yield _histogram("keylife_incident_mitigate_seconds", mitigate, INCIDENT_MITIGATE_BUCKETS)
        yield _histogram("keylife_incident_close_seconds", close, INCIDENT_CLOSE_BUCKETS)


def _histogram(name: str, values: list[float], bounds: tuple[float, ...]) -> Any:
    metric = family(name)
    buckets = [(f"{b:g}", sum(v <= b for v in values)) for b in bounds] + [("+Inf", len(values))]
    metric.add_metric([], buckets, sum(values))
    return metric
