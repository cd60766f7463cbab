"""Anomaly metrics: the flags of the last day, per key and kind, read from the registry at scrape time.

The registry's ``anomalies`` extension stages a flag per judged usage report (docs/anomalies.md);
here they become ``keylife_key_anomaly{key_id, kind}`` (flags in the window, the most recently
flagged (key, kind) pairs first up to ``exporter.attention_cap``) and an uncapped count per kind.
The window is measured on the reports' own times against the wall clock, so a restart or a rebuild
serves the same series, and a flag leaves the series (and its alert resolves) a day after.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

from prometheus_client.core import GaugeMetricFamily, Metric

from exporter.metrics_spec import ANOMALIES
from keylife.registry.anomalies import recent_counts
from keylife.registry.anomaly_model import KINDS
from keylife.registry.queries import open_readonly, ts

WINDOW_SECONDS = 86400.0
_SPECS = {spec.name: spec for spec in ANOMALIES}


def _family(name: str) -> GaugeMetricFamily:
    spec = _SPECS[name]
    return GaugeMetricFamily(name, spec.help, labels=list(spec.labels))


class AnomalyCollector:
    def __init__(self, registry_path: Path, cap: int, clock: Callable[[], float] = time.time) -> None:
        self.registry_path, self.cap, self.clock = Path(registry_path), cap, clock

    def describe(self) -> Iterator[Metric]:
        for spec in ANOMALIES:
            yield _family(spec.name)

    def collect(self) -> Iterator[Metric]:
        since = ts(datetime.fromtimestamp(self.clock() - WINDOW_SECONDS, UTC).isoformat())
        try:
            conn = open_readonly(self.registry_path)
        except sqlite3.Error:
            return
        try:
            rows = recent_counts(conn, since)
        except sqlite3.Error:  # no registry yet, or one an older keylife wrote
            return
        finally:
            conn.close()
        per_key = _family("keylife_key_anomaly")
        by_kind = dict.fromkeys(KINDS, 0)
        for _key, kind, n, _at in rows:
            by_kind[kind] = by_kind.get(kind, 0) + n
        for key_id, kind, n, _at in rows[: self.cap]:
            per_key.add_metric([key_id, kind], n)
        yield per_key
        recent = _family("keylife_anomalies_recent")
        for kind, n in by_kind.items():
            recent.add_metric([kind], n)
        yield recent
        omitted = _family("keylife_key_anomaly_omitted")
        omitted.add_metric([], max(0, len(rows) - self.cap))
        yield omitted
