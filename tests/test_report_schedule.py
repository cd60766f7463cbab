"""Scheduled compliance reports: the period just completed, written atomically with retention,
announced as a journaled ``report`` record, counted in metrics; a failed run is counted, never silent."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import orjson

from keylife.config import ReportsConfig
from keylife.response.reports.schedule import ReportScheduler, last_period
from tests.server import live_server
from tests.waiting import wait_until


def test_the_last_completed_period_of_each_schedule() -> None:
    now = datetime(2025, 3, 5, 13, 30, tzinfo=UTC)  # a Wednesday
    assert (last_period("daily", now).start, last_period("daily", now).end) == (
        datetime(2025, 3, 4, tzinfo=UTC), datetime(2025, 3, 5, tzinfo=UTC))  # fmt: skip
    weekly = last_period("weekly", now)
    assert (weekly.start, weekly.end) == (datetime(2025, 2, 24, tzinfo=UTC), datetime(2025, 3, 3, tzinfo=UTC))
    monthly = last_period("monthly", datetime(2025, 1, 1, 0, 0, 1, tzinfo=UTC))
    assert (monthly.start, monthly.end) == (datetime(2024, 12, 1, tzinfo=UTC), datetime(2025, 1, 1, tzinfo=UTC))


def test_serve_writes_announces_and_counts_its_scheduled_reports(tmp_path: Path) -> None:
    schedules = [{"name": "daily", "every": "daily", "formats": ["json", "csv"]},
                 {"name": "team-a", "every": "monthly", "selector": {"owner": "team-a"}}]  # fmt: skip
    with live_server(tmp_path, reports={"schedules": schedules, "check_interval_seconds": 3600}) as live:
        directory = tmp_path / "data" / "reports"
        day = last_period("daily", datetime.now(UTC))
        month = last_period("monthly", datetime.now(UTC))
        daily = directory / f"daily_{day.start:%Y-%m-%d}_{day.end:%Y-%m-%d}"
        team = directory / f"team-a_{month.start:%Y-%m-%d}_{month.end:%Y-%m-%d}"
        wait_until(lambda: all(p.exists() for p in (daily.with_suffix(".json"), daily.with_suffix(".csv"),
                                                    team.with_suffix(".json"), team.with_suffix(".html"))),
                   what="the scheduled reports on disk")  # fmt: skip
        report = orjson.loads(daily.with_suffix(".json").read_bytes())
        assert report["period"] == {"from": f"{day.start:%Y-%m-%dT%H:%M:%SZ}", "to": f"{day.end:%Y-%m-%dT%H:%M:%SZ}"}
        assert orjson.loads(team.with_suffix(".json").read_bytes())["selector"] == {"owner": "team-a"}
        wait_until(lambda: live.runtime.registry.seen(f"report-daily-{day.start:%Y-%m-%d}") is not None,
                   what="the report record in the registry")  # fmt: skip
        seen = live.runtime.registry.seen(f"report-daily-{day.start:%Y-%m-%d}")
        assert seen is not None
        (entry,) = live.runtime.journal.tree.lines(seen[0], 1)
        event = orjson.loads(entry)["event"]
        assert event["type"] == "report" and event["details"] == {
            "kind": "compliance", "schedule": "daily", "period_from": report["period"]["from"],
            "period_to": report["period"]["to"], "checkpoint_size": report["checkpoint"]["size"],
            "digest": report["digest"], "path": daily.name, "formats": ["json", "csv"],
        }  # fmt: skip
        metrics = httpx.get(f"{live.url}/metrics", headers={"Authorization": f"Bearer {live.tokens['all']}"}).text
        assert 'keylife_reports_generated_total{schedule="daily"} 1.0' in metrics
        assert 'keylife_report_failures_total{schedule="team-a"} 0.0' in metrics
        assert 'keylife_report_last_success_timestamp_seconds{schedule="daily"}' in metrics


def test_retention_reruns_and_a_failed_run(tmp_path: Path) -> None:
    with live_server(tmp_path) as live:
        now = [datetime(2025, 6, 10, 1, tzinfo=UTC)]
        config = ReportsConfig.model_validate({"retention": 2, "schedules": [{"name": "d", "every": "daily"}]})
        blocked = tmp_path / "blocked"
        blocked.write_text("a file where the directory should be")
        failing = ReportScheduler(config, blocked, live.runtime.reports, live.runtime.ledger, clock=lambda: now[0])
        assert failing.run_due() == [] and failing.failures["d"] == 1 and failing.generated["d"] == 0

        directory = tmp_path / "reports"
        directory.mkdir()
        scheduler = ReportScheduler(config, directory, live.runtime.reports, live.runtime.ledger, clock=lambda: now[0])
        written = []
        for _ in range(3):
            written += scheduler.run_due()
            assert scheduler.run_due() == []  # the same period again: already on disk
            now[0] += timedelta(days=1)
        assert written == ["d_2025-06-09_2025-06-10", "d_2025-06-10_2025-06-11", "d_2025-06-11_2025-06-12"]
        kept = [f"{n}.{f}" for n in written[1:] for f in ("html", "json")]
        assert sorted(p.name for p in directory.iterdir()) == kept
        assert scheduler.generated["d"] == 3 and not list(directory.glob(".*.tmp"))
