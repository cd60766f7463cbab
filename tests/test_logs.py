"""keylife's log lines: RFC 3339 UTC timestamps, and a rate limit on asyncio/uvicorn floods (issue 10)."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator

import pytest

from keylife.common import logs

RFC3339_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.mark.parametrize("fmt", ["json", "text"])
def test_log_lines_carry_rfc3339_utc_timestamps(restore_logging: None, capsys, fmt: str) -> None:
    logs.setup("INFO", fmt)
    logging.getLogger("keylife.test").info("hello")
    line = capsys.readouterr().err.strip().splitlines()[-1]
    stamp = json.loads(line)["time"] if fmt == "json" else line.split(" ")[0]
    assert RFC3339_UTC.match(stamp), line


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def record(name: str, message: str, lineno: int = 10) -> logging.LogRecord:
    return logging.LogRecord(name, logging.ERROR, "/x/base_events.py", lineno, message, None, None)


def test_a_flood_from_one_source_passes_one_line_per_window_with_the_count() -> None:
    clock = Clock()
    suppressed: list[str] = []
    limit = logs.RateLimit(interval=10, clock=clock)
    limit.counted = suppressed.append
    passed = [limit.filter(record("asyncio", f"socket.accept() out of system resource fd={n}")) for n in range(5000)]
    assert passed.count(True) == 1 and passed[0]
    assert len(suppressed) == 4999 and set(suppressed) == {"asyncio"}  # counted (a metric), not silent
    assert limit.filter(record("uvicorn.error", "Exception in ASGI application"))  # another source
    assert limit.filter(record("asyncio", "other place", lineno=99))  # another line of the same logger
    assert limit.filter(record("keylife.api", "authentication failure"))  # keylife's own: not limited here
    clock.now = 10.5
    next_window = record("asyncio", "socket.accept() out of system resource fd=7")
    assert limit.filter(next_window)
    assert next_window.suppressed == 4999
    assert next_window.getMessage().endswith("[4999 similar lines suppressed in the last window]")
