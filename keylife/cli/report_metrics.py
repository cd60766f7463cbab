"""Scheduled reports for ``/metrics``: written and failed runs per schedule, and the last success
(zero-filled for every configured schedule, so ``KeylifeReportFailed`` sees a series from the start)."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import Metric

from exporter.collectors import family
from keylife.config import ReportsConfig
from keylife.response.reports.schedule import ReportScheduler


class ReportCollector:
    def __init__(self, scheduler: ReportScheduler, config: ReportsConfig) -> None:
        self.scheduler, self.names = scheduler, [s.name for s in config.schedules]

    def describe(self) -> Iterator[Metric]:
        return iter(())  # PipelineCollector already describes every PIPELINE name

    def collect(self) -> Iterator[Metric]:
        s = self.scheduler
        generated, failures = family("keylife_reports_generated"), family("keylife_report_failures")
        last = family("keylife_report_last_success_timestamp_seconds")
        for name in self.names:
            generated.add_metric([name], float(s.generated[name]))
            failures.add_metric([name], float(s.failures[name]))
            if name in s.last_success:
                last.add_metric([name], s.last_success[name])
        yield from (generated, failures, last)
