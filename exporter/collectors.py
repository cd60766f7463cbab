"""prometheus_client custom collectors: families built fresh at each scrape from a snapshot.

Nothing here is a global mutated during a scrape. ``FleetCollector`` formats the shared
snapshot of the fleet index (``SingleFlight``); ``PipelineCollector`` reads the journal,
ledger and registry positions at scrape time (a few attribute reads).
"""

from __future__ import annotations

import platform
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Protocol

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)

from exporter.metrics_spec import FLEET, INCIDENTS, PIPELINE, Spec
from exporter.snapshot import SingleFlight, Snapshot
from keylife import __version__

_SPECS = {spec.name: spec for spec in (*FLEET, *PIPELINE, *INCIDENTS)}


def family(name: str) -> Any:
    spec: Spec = _SPECS[name]
    labels = list(spec.labels)
    if spec.kind == "gauge":
        return GaugeMetricFamily(name, spec.help, labels=labels)
    if spec.kind == "counter":
        return CounterMetricFamily(name, spec.help, labels=labels)
    if spec.kind == "histogram":
        return HistogramMetricFamily(name, spec.help, labels=labels)
    return InfoMetricFamily(name, spec.help, labels=labels)


class SnapshotFamilies(Protocol):
    """More families built from the same snapshot as the fleet's (the posture score)."""

    def describe(self) -> Iterator[Metric]: ...
    def families(self, snap: Snapshot) -> Iterator[Metric]: ...


class FleetCollector:
    """The fleet families, and those of ``extras``, from ONE snapshot per scrape (a snapshot is the
    costly part of a scrape at a million keys; SingleFlight shares one only between concurrent scrapes)."""

    def __init__(self, snapshots: SingleFlight, extras: Sequence[SnapshotFamilies] = ()) -> None:
        self.snapshots = snapshots
        self.extras = tuple(extras)

    def describe(self) -> Iterator[Metric]:
        for spec in FLEET:
            yield family(spec.name)
        for extra in self.extras:
            yield from extra.describe()

    def collect(self) -> Iterator[Metric]:
        snap = self.snapshots.get()
        yield from fleet_families(snap)
        for extra in self.extras:
            yield from extra.families(snap)


def fleet_families(snap: Snapshot) -> Iterator[Metric]:
    keys = family("keylife_keys")
    for (state, algorithm, purpose), n in sorted(snap.keys.items()):
        keys.add_metric([state, algorithm, purpose], n)
    yield keys
    yield _by_label("keylife_keys_by_expiry_band", snap.expiry_bands)
    yield _by_label("keylife_keys_by_rotation_band", snap.rotation_bands)
    age = family("keylife_keys_by_age")  # gauge buckets: the population's ages now, not observations
    for bound, n in snap.age_buckets:
        age.add_metric([_le(bound)], n)
    age.add_metric(["+Inf"], snap.age_count)
    yield age
    yield _single("keylife_keys_age_sum_seconds", snap.age_sum)
    age_sum = family("keylife_keys_age_by_purpose_sum_seconds")
    age_count = family("keylife_keys_not_destroyed_by_purpose")
    for purpose, (n, total) in snap.age_by_purpose.items():
        age_sum.add_metric([purpose], total)
        age_count.add_metric([purpose], n)
    yield age_sum
    yield age_count
    usage = family("keylife_key_usage_operations")
    for (op, algorithm, purpose), n in sorted(snap.usage.items()):
        usage.add_metric([op, algorithm, purpose], n)
    yield usage
    yield _by_label("keylife_key_transitions", snap.transitions, zero=_TRANSITION_TYPES)
    yield _by_label("keylife_key_violations", snap.violations, zero=_VIOLATION_KINDS)
    yield _by_label("keylife_keys_noncompliant", snap.noncompliant)
    yield _single("keylife_fleet_compliance_ratio", snap.compliance_ratio)
    attention = family("keylife_key_attention")
    expiry = family("keylife_key_expiry_timestamp_seconds")
    rotation = family("keylife_key_rotation_due_timestamp_seconds")
    info = family("keylife_key_info")
    operations = family("keylife_key_operations")
    limit = family("keylife_key_operations_limit")
    for key in snap.attention:
        for reason in key.reasons:
            attention.add_metric([key.key_id, reason], 1)
        labels = [key.key_id, key.state, key.algorithm, key.purpose]
        info.add_metric(labels, 1)
        if "operations_high" in key.reasons and key.operations_limit is not None and key.operations is not None:
            operations.add_metric([key.key_id], key.operations)
            limit.add_metric([key.key_id], key.operations_limit)
        if key.expires_at is not None:
            expiry.add_metric(labels, key.expires_at)
        if key.rotation_due is not None:
            rotation.add_metric(labels, key.rotation_due)
    yield from (attention, info, expiry, rotation, operations, limit)
    yield _single("keylife_keys_attention", snap.attention_total)
    yield _single("keylife_keys_attention_omitted", snap.attention_total - len(snap.attention))
    yield _by_label("keylife_node_last_report_timestamp_seconds", snap.node_last_seen)
    yield _by_label("keylife_node_unconfirmed_keys", snap.node_unconfirmed)
    yield _single("keylife_keys_propagation_pending", snap.propagation_pending)
    lag = family("keylife_propagation_lag_seconds")
    lag.add_metric([], [(_le(b), n) for b, n in snap.lag_buckets] + [("+Inf", snap.lag_count)], snap.lag_sum)
    yield lag
    yield _single("keylife_fleet_snapshot_timestamp_seconds", snap.taken_at)


class PipelineCollector:
    """Positions of the journal, the registry and the writer, read at scrape time."""

    def __init__(self, read: Callable[[], dict[str, float]]) -> None:
        self.read = read

    def describe(self) -> Iterator[Metric]:
        for spec in PIPELINE:
            yield family(spec.name)

    def collect(self) -> Iterator[Metric]:
        values = self.read()
        for spec in PIPELINE:
            if spec.kind == "info":
                info = family(spec.name)
                info.add_metric([], {"version": __version__, "python": platform.python_version()})
                yield info
            elif spec.name in values:
                yield _single(spec.name, values[spec.name])


def _single(name: str, value: float) -> Any:
    metric = family(name)
    metric.add_metric([], value)
    return metric


def _by_label(name: str, values: dict[str, int] | dict[str, float], zero: tuple[str, ...] = ()) -> Any:
    metric = family(name)
    for label in sorted(set(values) | set(zero)):
        metric.add_metric([label], values.get(label, 0))
    return metric


def _le(bound: float) -> str:
    return f"{bound:g}" if bound < 1e15 else repr(bound)


def _zero_sets() -> tuple[tuple[str, ...], tuple[str, ...]]:
    from keylife.domain.lifecycle import TARGET_STATE
    from keylife.registry.queries import VIOLATION_KINDS

    return tuple(TARGET_STATE), tuple(VIOLATION_KINDS)


_TRANSITION_TYPES, _VIOLATION_KINDS = _zero_sets()
