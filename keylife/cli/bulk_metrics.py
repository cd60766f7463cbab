"""Lockdowns for ``/metrics``: automatic lockdowns by rule (what ``KeylifeAutomaticLockdown`` pages
on, naming the rule) and the lockdowns still applied. Read from the registry at scrape time (a
few rows), so the counts follow the journal across restarts."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import Metric

from exporter.collectors import family
from keylife.registry import plans
from keylife.registry.projection import Registry


class LockdownCollector:
    def __init__(self, registry: Registry, rules: list[str]) -> None:
        self.registry, self.rules = registry, rules

    def describe(self) -> Iterator[Metric]:
        return iter(())  # PipelineCollector already describes every PIPELINE name

    def collect(self) -> Iterator[Metric]:
        by_rule, applied = plans.lockdown_counts(self.registry._reader())
        automatic = family("keylife_automatic_lockdowns")
        for rule in sorted(set(by_rule) | set(self.rules)):
            automatic.add_metric([rule], float(by_rule.get(rule, 0)))
        yield automatic
        current = family("keylife_lockdowns_applied")
        current.add_metric([], float(applied))
        yield current
