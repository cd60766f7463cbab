"""The security posture score: six weighted components, each 0..1, and a score 0..100 (docs/posture.md).

The formula is plain arithmetic over counts, so anyone can redo it from the exported components:

    score = 100 * sum(weight[c] * value[c] for measured c) / sum(weight[c] for measured c)

A component that cannot be measured in this process (no forwarder configured, no journal verification
finished yet) is left out and the others' weights are scaled up, rather than guessed as 0 or 1; its
``keylife_posture_component_weight`` is then 0 and its ``keylife_posture_component`` series absent.

The per-key components (policy compliance, rotation on time, no use after revocation) come from the
fleet index's snapshot (exporter/fleet.py: counts kept as keys change, plus the problem sets, so a
scrape costs what the problems cost, not what the fleet costs); propagation from the registry's
``revocations`` counters (one row per withdrawn key); journal and forwarders from the process.
Per owner, the same formula: the per-key components over the owner's keys, the process components
as for the fleet.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prometheus_client.core import GaugeMetricFamily, Metric

from exporter.fleet import UNOWNED
from exporter.metrics_spec import POSTURE
from exporter.snapshot import PostureCounts, Snapshot
from keylife.registry.queries import open_readonly

# Nominal weights (they sum to 1). Use after revocation and policy breaches weigh most: they are the
# failures an auditor reports first; forwarders least: a SIEM behind loses no evidence (the journal has it).
WEIGHTS: dict[str, float] = {
    "policy_compliance": 0.25,
    "rotation_on_time": 0.15,
    "no_use_after_revocation": 0.20,
    "propagation_confirmed": 0.15,
    "journal_verified": 0.15,
    "forwarders_current": 0.10,
}
COMPONENTS = tuple(WEIGHTS)
# A sink is current while it is up and its oldest unshipped entry is younger than this (the
# KeylifeForwarderLagging alert's default threshold).
FORWARDER_CURRENT_SECONDS = 300.0


@dataclass(frozen=True, slots=True)
class SinkStatus:
    """What the posture needs from one forwarder sink (the composition root reads the workers)."""

    up: bool
    oldest_unshipped_age: float  # seconds; 0 when caught up


def ratio(bad: int, total: int) -> float:
    """1 - bad/total, 1 when there is nothing to judge, clipped to 0..1."""
    return 1.0 if total <= 0 else min(1.0, max(0.0, 1.0 - bad / total))


def key_components(group: PostureCounts.Group, revocation_pairs: tuple[int, int]) -> dict[str, float]:
    """The components judged key by key: over a group of keys (the fleet, or one owner's).
    ``revocation_pairs`` is (unconfirmed, expected) (withdrawn key, node) pairs of the group."""
    unconfirmed, expected = revocation_pairs
    return {
        "policy_compliance": ratio(group.noncompliant, group.usable),
        "rotation_on_time": ratio(group.overdue, group.rotating),
        "no_use_after_revocation": ratio(group.used_after, group.withdrawn),
        "propagation_confirmed": ratio(unconfirmed, expected),
    }


def journal_component(pipeline: Mapping[str, float]) -> float | None:
    """1 when the last periodic verification found no fault and the journal still matches its checkpoints;
    0 when either failed; None (not measured) before the first verification finished."""
    if pipeline.get("keylife_journal_integrity_ok") == 0.0:
        return 0.0
    ok = pipeline.get("keylife_journal_verify_ok")
    return None if ok is None else float(ok == 1.0)


def forwarder_component(sinks: list[SinkStatus] | None) -> float | None:
    """The share of sinks that are up and less than FORWARDER_CURRENT_SECONDS behind; None without sinks."""
    if not sinks:
        return None
    current = sum(s.up and s.oldest_unshipped_age <= FORWARDER_CURRENT_SECONDS for s in sinks)
    return current / len(sinks)


def weights(values: Mapping[str, float | None]) -> dict[str, float]:
    """The effective weights: the nominal ones over the measured components, scaled to sum to 1."""
    measured = {c: WEIGHTS[c] for c in COMPONENTS if values.get(c) is not None}
    total = sum(measured.values())
    return {c: (measured[c] / total if c in measured else 0.0) for c in COMPONENTS}


def score(values: Mapping[str, float | None]) -> float:
    """The posture score 0..100 of some component values (None: not measured)."""
    effective = weights(values)
    return 100.0 * sum(effective[c] * (values[c] or 0.0) for c in COMPONENTS if effective[c])


def revocation_pairs(
    conn: sqlite3.Connection, owner_of: Callable[[str], str]
) -> tuple[tuple[int, int], dict[str, tuple[int, int]]]:
    """(unconfirmed, expected) withdrawn-key/node pairs, for the fleet and per owner, from the per-key
    counters of ``revocations`` (one row per withdrawn key); the owner from the fleet index, since a join
    with ``keys`` costs a B-tree lookup per withdrawn key (8 ms for 2,000 of them at a million keys)."""
    owners: dict[str, tuple[int, int]] = {}
    for key_id, unconfirmed, expected in conn.execute(
        "SELECT key_id, expected - confirmed, expected FROM revocations WHERE expected > 0"
    ):
        owner = owner_of(key_id)
        before = owners.get(owner, (0, 0))
        owners[owner] = (before[0] + unconfirmed, before[1] + expected)
    fleet = (sum(o for o, _ in owners.values()), sum(t for _, t in owners.values()))
    return fleet, owners


class PostureFamilies:
    """``keylife_posture_*`` at each scrape, from the fleet collector's snapshot (``FleetCollector`` extras),
    the registry and the process."""

    def __init__(
        self,
        registry_path: Path,
        pipeline: Callable[[], dict[str, float]],
        sinks: Callable[[], list[SinkStatus]] | None,
        cap: int,
        owner_of: Callable[[str], str] = lambda _key: UNOWNED,
    ) -> None:
        self.registry_path, self.pipeline, self.sinks, self.cap = Path(registry_path), pipeline, sinks, cap
        self.owner_of = owner_of  # a key's owner, as the fleet index knows it

    def describe(self) -> Iterator[Metric]:
        for spec in POSTURE:
            yield GaugeMetricFamily(spec.name, spec.help, labels=list(spec.labels))

    def families(self, snap: Snapshot) -> Iterator[Metric]:
        counts = snap.posture
        fleet_pairs, owner_pairs = self._pairs()
        process = {
            "journal_verified": journal_component(self.pipeline()),
            "forwarders_current": forwarder_component(self.sinks() if self.sinks else None),
        }
        fleet: dict[str, float | None] = {**key_components(counts.fleet, fleet_pairs), **process}
        effective = weights(fleet)
        component, weight = _family("keylife_posture_component"), _family("keylife_posture_component_weight")
        for name in COMPONENTS:
            weight.add_metric([name], effective[name])
            if fleet[name] is not None:
                component.add_metric([name], fleet[name])
        yield component
        yield weight
        yield _single("keylife_posture_score", score(fleet))
        owners = {
            owner: score({**key_components(group, owner_pairs.get(owner, (0, 0))), **process})
            for owner, group in counts.owners.items()
        }
        shown = sorted(owners.items(), key=lambda item: (item[1], item[0]))[: self.cap]  # the worst first
        by_owner = _family("keylife_posture_owner_score")
        for owner, value in shown:
            by_owner.add_metric([owner], value)
        yield by_owner
        yield _single("keylife_posture_owners", len(owners))
        yield _single("keylife_posture_owners_omitted", len(owners) - len(shown))

    def _pairs(self) -> tuple[tuple[int, int], dict[str, tuple[int, int]]]:
        try:
            conn = open_readonly(self.registry_path)
        except sqlite3.Error:
            return (0, 0), {}
        try:
            return revocation_pairs(conn, self.owner_of)
        except sqlite3.Error:  # no registry yet, or one an older keylife wrote
            return (0, 0), {}
        finally:
            conn.close()


_SPECS = {spec.name: spec for spec in POSTURE}


def _family(name: str) -> Any:
    return GaugeMetricFamily(name, _SPECS[name].help, labels=list(_SPECS[name].labels))


def _single(name: str, value: float) -> Any:
    metric = _family(name)
    metric.add_metric([], value)
    return metric
