"""keylife's own logs: structured JSON on stderr (python-json-logger), or plain text for people.

Timestamps are RFC 3339 in UTC with microseconds (``2026-12-05T16:11:18.123456Z``), in both
formats, so lines from several hosts sort and parse the same way. asyncio and uvicorn log a
line per failed accept or broken connection: at the file-descriptor limit that was 116k lines
in 13 s, so their lines pass a rate limit (one per source per ``RATE_LIMIT_SECONDS``, the next
line saying how many were suppressed meanwhile).
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from pythonjsonlogger.json import JsonFormatter

FIELDS = "%(asctime)s %(levelname)s %(name)s %(message)s"
RATE_LIMITED = ("asyncio", "uvicorn")  # these loggers and their children
RATE_LIMIT_SECONDS = 10.0


def rfc3339(created: float) -> str:
    return datetime.fromtimestamp(created, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class _Json(JsonFormatter):
    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return rfc3339(record.created)


class _Text(logging.Formatter):
    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return rfc3339(record.created)


class RateLimit(logging.Filter):
    """At most one line per message source (logger, file, line) per ``interval`` seconds.

    The first line of a window passes; later ones in the window are counted, and the next line
    that passes carries the count (``suppressed`` field, and a note in its message), so nothing
    disappears without a trace. ``counted`` (if set) is told each suppressed line's logger name.
    """

    def __init__(
        self,
        interval: float = RATE_LIMIT_SECONDS,
        prefixes: tuple[str, ...] = RATE_LIMITED,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self.interval, self.prefixes, self.clock = interval, prefixes, clock
        self.counted: Callable[[str], None] | None = None
        self._windows: dict[tuple[str, str, int], tuple[float, int]] = {}  # source -> (window start, suppressed)
        self._lock = threading.Lock()

    def _limited(self, name: str) -> bool:
        return any(name == p or name.startswith(p + ".") for p in self.prefixes)

    def filter(self, record: logging.LogRecord) -> bool:
        if not self._limited(record.name):
            return True
        source = (record.name, record.pathname, record.lineno)
        now = self.clock()
        with self._lock:
            start, suppressed = self._windows.get(source, (float("-inf"), 0))
            if now - start < self.interval:
                self._windows[source] = (start, suppressed + 1)
                passed = False
            else:
                self._windows[source] = (now, 0)
                if len(self._windows) > 1000:  # sources are code locations, but stay bounded anyway
                    self._windows = {source: (now, 0)}
                passed = True
        if not passed:
            if self.counted is not None:
                self.counted(record.name)
            return False
        if suppressed:
            record.msg = f"{record.getMessage()} [{suppressed} similar lines suppressed in the last window]"
            record.args = None
            record.suppressed = suppressed
        return True


RATE_LIMIT = RateLimit()


def _drop_colour(record: logging.LogRecord) -> bool:
    record.__dict__.pop("color_message", None)  # uvicorn's ANSI copy of the message
    return True


def setup(level: str = "INFO", fmt: str = "json") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_drop_colour)
    handler.addFilter(RATE_LIMIT)
    if fmt == "json":
        handler.setFormatter(_Json(FIELDS, rename_fields={"levelname": "level", "asctime": "time"}))
    else:
        handler.setFormatter(_Text("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    logging.getLogger("httpx").setLevel(logging.WARNING)


def uvicorn_log_config() -> dict[str, Any]:
    """Let uvicorn log through the root handler above instead of installing its own."""
    return {"version": 1, "disable_existing_loggers": False}
