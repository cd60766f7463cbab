"""Revocation metrics, read from the registry's revocation tables at scrape time.

A few indexed queries per scrape (the unconfirmed pairs have a partial index of their own), so the
numbers survive a restart and agree with ``GET /v1/revocations/{key}``. The per-pair series are
capped by ``exporter.attention_cap`` (oldest first: the pairs an alert is about); the per-node
gauge is not, and ``keylife_revocation_unconfirmed_pairs_omitted`` says how many pairs the cap hid.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily, Metric

from exporter.metrics_spec import REVOCATION
from keylife.registry import revocations as rv
from keylife.registry.queries import open_readonly

BUCKETS = (1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 900.0, 1800.0, 3600.0, 21600.0, 86400.0)
_SPECS = {spec.name: spec for spec in REVOCATION}


def _family(name: str) -> Any:
    spec = _SPECS[name]
    kind = HistogramMetricFamily if spec.kind == "histogram" else GaugeMetricFamily
    return kind(name, spec.help, labels=list(spec.labels))


def _epoch(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


class RevocationCollector:
    def __init__(self, registry_path: Path, cap: int) -> None:
        self.registry_path = Path(registry_path)
        self.cap = cap

    def describe(self) -> Iterator[Metric]:
        for spec in REVOCATION:
            yield _family(spec.name)

    def collect(self) -> Iterator[Metric]:
        try:
            conn = open_readonly(self.registry_path)
        except sqlite3.Error:
            return
        try:
            conn.execute("BEGIN")  # one snapshot for every family
            durations = rv.completion_seconds(conn)
            by_node = rv.unconfirmed_by_node(conn)
            known = [node for (node,) in conn.execute("SELECT node FROM nodes")]
            pairs, total = rv.unconfirmed_pairs(conn, self.cap)
            version = rv.feed_version(conn)
        except sqlite3.Error:  # no registry yet, or one an older keylife wrote
            return
        finally:
            conn.close()
        histogram = _family("keylife_revocation_confirmation_seconds")
        buckets = [(f"{b:g}" if b != int(b) else f"{b:.1f}", sum(d <= b for d in durations)) for b in BUCKETS]
        histogram.add_metric([], [*buckets, ("+Inf", len(durations))], sum(durations))
        yield histogram
        gauge = _family("keylife_revocation_unconfirmed_pairs")
        for node in sorted(set(known) | set(by_node)):
            gauge.add_metric([node], by_node.get(node, 0))
        yield gauge
        since = _family("keylife_revocation_unconfirmed_since_timestamp_seconds")
        for key_id, node, at in pairs:
            since.add_metric([key_id, node], _epoch(at))
        yield since
        omitted = _family("keylife_revocation_unconfirmed_pairs_omitted")
        omitted.add_metric([], total - len(pairs))
        yield omitted
        feed = _family("keylife_revocation_feed_version")
        feed.add_metric([], version)
        yield feed
