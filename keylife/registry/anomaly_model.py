"""The usage baseline of one key and of each (key, node), and the judgement of one usage report.

Pure arithmetic, no SQL: ``keylife.registry.anomalies`` keeps the states and persists them. Every
step is O(1) per report (fixed-size arrays) and deterministic (floats in a fixed order), so a
rebuild from the journal gives the same baselines and the same flags.

The choice (docs/anomalies.md): the log of the report's rate (``log1p(ops per hour)``) against a
seasonal baseline per (key, node): an EWMA level per hour of day plus a day-of-week offset, with an
EWMA of the absolute residual as its scale (a mean absolute deviation: robust, unlike a variance,
and O(1) unlike a running median). Residuals are clipped to 3 scales before they update the
baseline (a Huber step), so a burst does not teach the baseline that bursts are normal. The z-score
``(x - level) / max(scale * 1.2533, SCALE_FLOOR)`` is the spike/drop score. The per-key state holds
what the key ever did: its operations, its nodes' count, and its hour-of-day profile.
"""

from __future__ import annotations

import math
from array import array
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

HOURS, DAYS = 24, 7
ALPHA = 0.1  # EWMA weight once a bucket has 10 observations (before: the running mean)
BETA = 0.05  # the day-of-week offsets' weight
CLIP = 3.0  # residuals are clipped to this many scales before they update the baseline
SCALE_INIT = 0.5  # the scale of a bucket's first observation (log space: a factor of 1.6)
SCALE_FLOOR = 0.35  # no scale below this (log space): steady keys do not flag small wobbles
MAD_TO_SIGMA = 1.2533  # mean absolute deviation -> standard deviation for normal residuals
Z_SPIKE = 7.0  # |z| at or above this flags a spike (up) or a drop (down)
WARM_BUCKET = 5  # observations of that hour of day by that (key, node) before spikes and drops are judged
WARM_KEY = 72  # reports of the key before new nodes, new operations and unusual hours are judged
UNUSUAL_SHARE = 0.002  # an hour (with its two neighbours) holding less than this share of the key's reports

KINDS = ("spike", "drop", "new_node", "new_operation", "unusual_hour")


@dataclass
class KeyState:
    """What one key ever did."""

    reports: int = 0
    ops: set[str] = field(default_factory=set)
    hours: array = field(default_factory=lambda: array("q", [0] * HOURS))  # reports per hour of day

    def encode(self) -> tuple[str, bytes, int]:
        return ",".join(sorted(self.ops)), self.hours.tobytes(), self.reports

    @classmethod
    def decode(cls, ops: str, hours: bytes, reports: int) -> KeyState:
        h = array("q")
        h.frombytes(hours)
        return cls(reports, set(ops.split(",")) if ops else set(), h)


class NodeState:
    """The seasonal baseline of one (key, node): level, scale and count per hour, offset per weekday."""

    __slots__ = ("v",)
    # v: level[24] | scale[24] | count[24] | dow[7]
    _L, _S, _N, _D = 0, HOURS, 2 * HOURS, 3 * HOURS

    def __init__(self, v: array | None = None) -> None:
        self.v = v if v is not None else array("d", [0.0] * (3 * HOURS + DAYS))

    def encode(self) -> bytes:
        return self.v.tobytes()

    @classmethod
    def decode(cls, blob: bytes) -> NodeState:
        v = array("d")
        v.frombytes(blob)
        return cls(v)

    def judge(self, x: float, hour: int, dow: int) -> tuple[float, float, float, int] | None:
        """(z, expected, scale, observations) of ``x`` at that hour and weekday, or None before warm-up."""
        v = self.v
        n = int(v[self._N + hour])
        if n < WARM_BUCKET:
            return None
        expected = v[self._L + hour] + v[self._D + dow]
        scale = max(v[self._S + hour] * MAD_TO_SIGMA, SCALE_FLOOR)
        return (x - expected) / scale, expected, scale, n

    def learn(self, x: float, hour: int, dow: int) -> None:
        v = self.v
        li, si, ni, di = self._L + hour, self._S + hour, self._N + hour, self._D + dow
        n = v[ni] + 1.0
        v[ni] = n
        if n == 1.0:
            v[li], v[si] = x - v[di], SCALE_INIT
            return
        scale = max(v[si] * MAD_TO_SIGMA, SCALE_FLOOR)
        r = x - v[li] - v[di]
        rc = max(-CLIP * scale, min(CLIP * scale, r))  # the Huber step: a burst moves the baseline little
        a = max(ALPHA, 1.0 / n)
        v[li] += a * rc
        v[si] += a * (abs(rc) - v[si])
        v[di] += BETA * rc
        mean = sum(v[self._D : self._D + DAYS]) / DAYS  # keep the offsets centred (level and offset separable)
        for i in range(self._D, self._D + DAYS):
            v[i] -= mean


def report_time(ev: dict[str, Any], at: str) -> tuple[int, int, float]:
    """(hour of day, weekday, hours covered) of a usage report: its interval, else its occurred_at."""
    start, end = ev.get("interval_start"), ev.get("interval_end")
    when = start or at
    hour = int(when[11:13])
    dow = date(int(when[0:4]), int(when[5:7]), int(when[8:10])).weekday()
    span = 1.0
    if start and end:
        seconds = (_parse(end) - _parse(start)).total_seconds()
        span = max(seconds / 3600.0, 1.0 / 60.0)  # at least a minute: a zero-length interval is a point
    return hour, dow, span


def _parse(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def rate_value(total: int, span_hours: float) -> float:
    """The quantity judged: log1p of operations per hour."""
    return math.log1p(total / span_hours)


def unusual_hour(key: KeyState, hour: int) -> tuple[bool, float]:
    """(unusual?, share) of the key's reports at that hour and its two neighbours (before this one)."""
    h = key.hours
    near = h[(hour - 1) % HOURS] + h[hour] + h[(hour + 1) % HOURS]
    share = near / key.reports if key.reports else 1.0
    return key.reports >= WARM_KEY and share < UNUSUAL_SHARE, share
