"""The usage baseline of one key and of each (key, node), and the judgement of one usage report.

Pure arithmetic, no SQL: ``keylife.registry.anomalies`` keeps the states and persists them. Every
step is O(1) per report (fixed-size arrays) and deterministic (floats in a fixed order), so a
rebuild from the journal gives the same baselines and the same flags.

The choice (docs/anomalies.md): the log of the report's rate (``log1p(ops per hour)``) against a
seasonal baseline per (key, node): an EWMA level per hour of day plus a day-of-week offset, with an
EWMA of the absolute residual as its scale (a mean absolute deviation: robust, unlike a variance,
and O(1) unlike a running median). Residuals are clipped to 3 scales before they update the
baseline (a Huber step), so a burst does not teach the baseline that bursts are normal. The score
is ``(x - level) / sqrt(s^2 + 1/(c + 1))`` with ``s = max(scale * 1.2533, SCALE_FLOOR)`` and ``c``
the operations expected over the report's interval (counting noise). The per-key state is the sum
of its (key, node) states: the operations it did, its nodes, its reports per hour of day.
"""

from __future__ import annotations

import math
from array import array
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

HOURS, DAYS = 24, 7
ALPHA = 0.1  # EWMA weight once a bucket has 10 observations (before: the running mean)
BETA = 0.05  # the day-of-week offsets' weight
CLIP = 3.0  # residuals are clipped to this many scales before they update the baseline
SCALE_INIT = 0.5  # the scale of a bucket's first observation (log space: a factor of 1.6)
SCALE_FLOOR = 0.35  # no scale below this (log space): steady keys do not flag small wobbles
MAD_TO_SIGMA = 1.2533  # mean absolute deviation -> standard deviation for normal residuals
Z_SPIKE = 7.0  # |z| at or above this flags a spike (up) or a drop (down)
COUNT_MAX = 16_000_000.0  # counts saturate here (float32 is exact up to 2^24)
WARM_BUCKET = 5  # observations of that hour of day by that (key, node) before spikes and drops are judged
WARM_KEY = 72  # reports of the key before new nodes, new operations and unusual hours are judged
UNUSUAL_SHARE = 0.002  # an hour (with its two neighbours) holding less than this share of the key's reports

KINDS = ("spike", "drop", "new_node", "new_operation", "unusual_hour")


@dataclass
class KeyState:
    """What one key ever did: the sum of its (key, node) states, kept in memory (never stored apart)."""

    reports: int = 0
    ops: set[str] = field(default_factory=set)
    hours: list[int] = field(default_factory=lambda: [0] * HOURS)  # reports per hour of day
    nodes: dict[str, NodeState] = field(default_factory=dict)

    def add(self, node: str, state: NodeState) -> None:
        self.nodes[node] = state
        self.ops |= state.ops
        v = state.v
        for h in range(HOURS):
            n = int(v[_HOURS + h])
            self.hours[h] += n
            self.reports += n


_HOURS = 3 * HOURS + DAYS  # where a (key, node) state keeps its reports per hour of day


class NodeState:
    """The seasonal baseline of one (key, node) (level, scale and count per hour, offset per weekday),
    its reports per hour of day and the operations it did: one row of ``anomaly_key_nodes``."""

    __slots__ = ("ops", "v")
    # v: level[24] | scale[24] | count[24] | weekday offset[7] | reports[24], as float32: every store
    # rounds, so the state in memory is the state on disk (a restart continues bit for bit), half the bytes.

    def __init__(self, v: array | None = None, ops: set[str] | None = None) -> None:
        self.v = v if v is not None else array("f", [0.0] * (4 * HOURS + DAYS))
        self.ops = ops if ops is not None else set()

    def encode(self) -> tuple[str, bytes]:
        return ",".join(sorted(self.ops)), self.v.tobytes()

    @classmethod
    def decode(cls, ops: str, blob: bytes) -> NodeState:
        v = array("f")
        v.frombytes(blob)
        return cls(v, set(ops.split(",")) if ops else set())

    def count(self, hour: int) -> None:
        """One more report at that hour (saturating: float32 counts exactly up to 2^24)."""
        if self.v[_HOURS + hour] < COUNT_MAX:
            self.v[_HOURS + hour] += 1.0

    def step(self, x: float, hour: int, dow: int, span: float = 1.0) -> tuple[float, float, float, int] | None:
        """Judge ``x`` (over ``span`` hours) at that hour and weekday, then learn it. Returns (z, expected,
        scale, observations) when ``|z| >= Z_SPIKE`` after the bucket's warm-up, else None."""
        v = self.v
        li, si, ni, di = hour, HOURS + hour, 2 * HOURS + hour, 3 * HOURS + dow
        n = v[ni]
        if n < COUNT_MAX:
            v[ni] = n + 1.0
        if n == 0.0:
            v[li], v[si] = x - v[di], SCALE_INIT
            return None
        scale = v[si] * MAD_TO_SIGMA
        if scale < SCALE_FLOOR:
            scale = SCALE_FLOOR
        expected = v[li] + v[di]
        r = x - expected
        limit = CLIP * scale
        # Counting noise on top: a short interval holds few operations, and a Poisson count of about
        # ``c`` wobbles by 1/sqrt(c) in log space (a 5-minute report of 1 where 14 were expected is chance).
        counted = math.expm1(expected) * span if expected > 0.0 else 0.0
        z = r / math.sqrt(scale * scale + 1.0 / (counted + 1.0))
        rc = limit if r > limit else -limit if r < -limit else r  # the Huber step: a burst moves it little
        a = 1.0 / (n + 1.0) if n < 9.0 else ALPHA
        v[li] += a * rc
        v[si] += a * ((rc if rc >= 0.0 else -rc) - v[si])
        v[di] += BETA * rc
        if n >= WARM_BUCKET and (z >= Z_SPIKE or z <= -Z_SPIKE):
            return z, expected, scale, int(n)
        return None


def report_time(ev: dict[str, Any], at: str) -> tuple[int, int, float]:
    """(hour of day, weekday, hours covered) of a usage report: its interval, else its occurred_at."""
    start, end = ev.get("interval_start"), ev.get("interval_end")
    when = start or at
    hour = int(when[11:13])
    dow = _day(when[:10])[0]
    span = 1.0
    if start and end:
        seconds = _seconds(end) - _seconds(start)
        span = max(seconds / 3600.0, 1.0 / 60.0)  # at least a minute: a zero-length interval is a point
    return hour, dow, span


_DAYS: dict[str, tuple[int, float]] = {}  # "YYYY-MM-DD" -> (weekday, its midnight in seconds); few distinct


def _day(day: str) -> tuple[int, float]:
    found = _DAYS.get(day)
    if found is None:
        if len(_DAYS) > 4096:
            _DAYS.clear()
        d = date(int(day[0:4]), int(day[5:7]), int(day[8:10]))
        found = _DAYS[day] = (d.weekday(), (d.toordinal() - 1) * 86400.0)
    return found


def _seconds(value: str) -> float:
    """Seconds since 0001-01-01 of a journal time (UTC, ``Z``); slicing, not parsing, on the ingest path."""
    if value[-1] == "Z" and len(value) >= 20 and value[19] in ".Z":
        return _day(value[:10])[1] + int(value[11:13]) * 3600 + int(value[14:16]) * 60 + float(value[17:-1])
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return (
        _day(parsed.astimezone(UTC).date().isoformat())[1]
        + (
            parsed.astimezone(UTC) - parsed.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        ).total_seconds()
    )


def rate_value(total: int, span_hours: float) -> float:
    """The quantity judged: log1p of operations per hour."""
    return math.log1p(total / span_hours)


def unusual_hour(key: KeyState, hour: int) -> tuple[bool, float]:
    """(unusual?, share) of the key's reports at that hour and its two neighbours (before this one)."""
    h = key.hours
    near = h[(hour - 1) % HOURS] + h[hour] + h[(hour + 1) % HOURS]
    share = near / key.reports if key.reports else 1.0
    return key.reports >= WARM_KEY and share < UNUSUAL_SHARE, share
