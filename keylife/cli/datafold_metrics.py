"""The DataFold sources' state for ``/metrics``: which source is stuck, and why (issue 12, item 9).

Families come from ``exporter.metrics_spec.PIPELINE`` (which also generates ``docs/metrics.md``);
values are the runners' counters, read at scrape time.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from prometheus_client.core import Metric

from exporter.collectors import family
from keylife.datafold.service import DataFoldService

_CODE = re.compile(r"\b([A-Z][A-Z_]{5,})\b")  # the middleware's error code inside a problem text


def cause(problem: str | None) -> str:
    """A bounded label for a source's problem text (the text itself is in the log line)."""
    if problem is None:
        return "none"
    if "signature check" in problem:
        found = _CODE.search(problem)
        return found.group(1)[:40] if found else "refused"
    if "no log stream" in problem:
        return "no_log_stream"
    return "unavailable"


class DataFoldCollector:
    def __init__(self, service: DataFoldService) -> None:
        self.service = service

    def describe(self) -> Iterator[Metric]:
        return iter(())  # PipelineCollector already describes every PIPELINE name

    def collect(self) -> Iterator[Metric]:
        problem = family("keylife_datafold_source_problem")
        refusals = family("keylife_datafold_refusals")
        for source, counters in sorted(self.service.counters().items()):
            label = cause(counters.problem)
            problem.add_metric([source, label], 0.0 if label == "none" else 1.0)
            refusals.add_metric([source], float(counters.refusals))
        yield problem
        yield refusals
