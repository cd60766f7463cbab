"""Put the exporter together over a registry: fleet index, snapshot cache, collectors.

Used in-process by ``keylife serve`` (following the registry through its commit deltas) and
by ``keylife exporter`` (following an existing registry and journal from another process).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from prometheus_client import CollectorRegistry

from exporter.anomalies import AnomalyCollector
from exporter.collectors import FleetCollector, PipelineCollector
from exporter.fleet import ATTENTION_HORIZON, FleetIndex
from exporter.incidents import IncidentCollector
from exporter.policy import Policy
from exporter.posture import PostureFamilies, SinkStatus
from exporter.revocations import RevocationCollector
from exporter.snapshot import SingleFlight
from keylife.registry.queries import RegistryReader


@dataclass
class Exporter:
    index: FleetIndex
    snapshots: SingleFlight

    @classmethod
    def over(
        cls,
        registry_path: Path,
        policy: Policy,
        metrics: CollectorRegistry,
        pipeline: Callable[[], dict[str, float]],
        attention_cap: int = 500,
        clock: Callable[[], float] = time.time,
        expiry_horizon: float = ATTENTION_HORIZON,
        sinks: Callable[[], list[SinkStatus]] | None = None,
    ) -> Exporter:
        """Load the index from the registry's committed tables and register the collectors."""
        index = FleetIndex.from_registry(policy, registry_path)
        snapshots = SingleFlight(lambda: index.snapshot(clock(), attention_cap, expiry_horizon))
        posture = PostureFamilies(registry_path, pipeline, sinks, attention_cap, index.owner_of)
        metrics.register(FleetCollector(snapshots, [posture]))  # one snapshot for both
        metrics.register(PipelineCollector(pipeline))
        metrics.register(IncidentCollector(RegistryReader(registry_path)))  # incidents: few, read per scrape
        metrics.register(RevocationCollector(registry_path, attention_cap))
        metrics.register(AnomalyCollector(registry_path, attention_cap, clock))  # flags of the last day
        return cls(index, snapshots)
