"""A DataFold time whose offset takes it out of years 0001-9999 in UTC is a rejected line, never
an exception that stops the source (issue 10, item 5, on the DataFold path).

Before: ``0001-01-01T00:00:00+01:00`` in a crypto audit line raised OverflowError out of
``Adapter.feed`` when the event's time was written in UTC.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest

from keylife.datafold.contract import Line
from keylife.datafold.mapping import Adapter
from keylife.domain.events import Event
from tests.datafold_samples import samples_dir

ISO = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:\d\d)")


@pytest.mark.parametrize("bad", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"])
@pytest.mark.parametrize("name", ["node-log.log", "event-bus.jsonl", "security-audit-text.log"])
def test_times_outside_the_utc_range_are_rejected_lines(tmp_path: Path, name: str, bad: str) -> None:
    adapter = Adapter(
        tmp_path / "rejects.ndjson", tmp_path / "key-status.json", clock=lambda: datetime(2026, 1, 1, tzinfo=UTC)
    )
    events = []
    for n, text in enumerate((samples_dir() / name).read_text().splitlines()):
        events += adapter.feed(Line(ISO.sub(bad, text), f"file:/var/log/datafold/{name}", n, "node-a"))
    events += adapter.flush()
    for event in events:  # whatever still maps is an event keylife can journal
        Event.model_validate(event).payload()
    rejects = [orjson.loads(raw) for raw in (tmp_path / "rejects.ndjson").read_bytes().splitlines()]
    assert any("outside years 0001-9999 in UTC" in r["reason"] or "24h ahead" in r["reason"] for r in rejects)
    assert sum(v for k, v in adapter.counts.items() if k.startswith("rejected.")) == len(rejects)
