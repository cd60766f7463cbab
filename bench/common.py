"""Helpers every benchmark shares: demo events, core pinning, CPU accounting, percentiles.

Why here: each benchmark module should read as "set up, time one thing, report", so the
plumbing (where events come from, how a process is pinned, how CPU time is read from /proc)
lives once, and every benchmark measures the same demo stream the same way.
"""

from __future__ import annotations

import itertools
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

# A fixed start keeps the stream (ids included) the same from run to run, and in the past so
# ingest never refuses an event as "from the future".
START = datetime(2026, 1, 1, tzinfo=UTC)
ORIGIN = "bench.keylife/local"
CLK_TCK = os.sysconf("SC_CLK_TCK")
REPO = Path(__file__).resolve().parent.parent


def log(message: str) -> None:
    """Progress goes to stderr: stdout carries only the JSON document."""
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def demo_events(limit: int | None, size: str = "bench", days: float | None = None) -> list[dict[str, Any]]:
    """The first ``limit`` events (None: all) of the demo stream (``SIZES[size]``), as producers send them.

    ``days`` stretches the history when one day of the preset holds fewer than ``limit`` events.
    """
    from keylife.demo.network import SIZES, DemoConfig, DemoNetwork

    options = dict(SIZES[size])
    if days is not None:
        options["history"] = timedelta(days=days)
    network = DemoNetwork(DemoConfig(**options, start=START))
    return list(itertools.islice(network.iter_history(), limit))


def payloads(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The journal's form of each event (validated, normalised), as the ledger would append it."""
    from keylife.domain.events import Event

    return [Event.model_validate(e).payload() for e in events]


def pin(core: int) -> int:
    """Pin this process to one core (the lowest allowed when ``core`` is not); return the core."""
    allowed = sorted(os.sched_getaffinity(0))
    chosen = core if core in allowed else allowed[0]
    os.sched_setaffinity(0, {chosen})
    return chosen


def cores() -> tuple[int, int]:
    """(server core, client core): two different cores when the machine has them."""
    allowed = sorted(os.sched_getaffinity(0))
    return allowed[0], allowed[1] if len(allowed) > 1 else allowed[0]


def cpu_seconds(pid: int | None = None) -> float:
    """utime + stime of a process (all its threads) from /proc/<pid>/stat."""
    stat = Path(f"/proc/{pid or os.getpid()}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile (no interpolation: a p99 is a latency some request really had)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), int(-(-p * len(ordered) // 100))))
    return ordered[rank - 1]


def dir_bytes(path: Path, suffixes: tuple[str, ...] | None = None) -> int:
    """Bytes of the files under ``path`` (only those ending in one of ``suffixes`` if given)."""
    return sum(
        p.stat().st_size for p in path.rglob("*") if p.is_file() and (suffixes is None or p.name.endswith(suffixes))
    )


@contextmanager
def scratch(prefix: str) -> Iterator[Path]:
    """A temporary directory on the same disk as the repo's default data (fsync costs are real)."""
    base = os.environ.get("KEYLIFE_BENCH_TMP")
    with tempfile.TemporaryDirectory(prefix=f"keylife-bench-{prefix}-", dir=base) as tmp:
        yield Path(tmp)


@dataclass
class Metric:
    """One row of the README table."""

    measurement: str
    figure: float
    unit: str
    target: str | None = None  # e.g. ">= 20000" or "<= 20"; None: reported for context
    digits: int = 0

    def met(self) -> bool | None:
        if self.target is None:
            return None
        op, _, bound = self.target.partition(" ")
        limit = float(bound.replace(",", "").replace("_", ""))
        return self.figure >= limit if op == ">=" else self.figure <= limit

    def as_dict(self) -> dict[str, Any]:
        figure = round(self.figure, self.digits) if self.digits else round(self.figure)
        return {
            "measurement": self.measurement,
            "figure": figure,
            "unit": self.unit,
            "target": self.target,
            "met": self.met(),
        }


def result(metrics: list[Metric], params: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """What a benchmark returns: table rows, the parameters it ran with, and context figures."""
    return {"metrics": [m.as_dict() for m in metrics], "params": params, "extra": extra}


class Stopwatch:
    """Wall and own-process CPU time between construction and ``stop``."""

    def __init__(self) -> None:
        self.wall0, self.cpu0 = time.perf_counter(), time.process_time()
        self.wall = self.cpu = 0.0

    def stop(self) -> Stopwatch:
        self.wall = time.perf_counter() - self.wall0
        self.cpu = time.process_time() - self.cpu0
        return self
