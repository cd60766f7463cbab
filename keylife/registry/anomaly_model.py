"""The usage baseline of each key, judged and learned one hour at a time.

Pure arithmetic, no SQL: ``keylife.registry.anomalies`` keeps the states and persists them. Every
step is O(1) (fixed-size arrays) and deterministic (floats in a fixed order, float32 storage), so a
rebuild from the journal gives the same baselines and the same flags.

The choice (docs/anomalies.md): a key's reports are summed per hour (the *bucket*, opened by the
first report whose ``interval_start`` falls in a later hour than the open one), and the bucket's
rate, ``x = log1p(ops per hour)``, is judged against the key's seasonal baseline: an EWMA level
per hour of day plus a day-of-week offset, with an EWMA of the absolute residual as its scale (a
mean absolute deviation: robust, unlike a variance, and O(1) unlike a running median). Residuals
are clipped to 3 scales before they update the baseline (a Huber step), so a burst does not teach
the baseline that bursts are normal. The score is ``(x - expected) / sqrt(s^2 + 1/(c + 1))`` with
``s = max(1.2533 * scale, SCALE_FLOOR)`` and ``c`` the operations expected over the bucket's span
(counting noise).

Why hours, not reports: a report every few minutes is mostly counting noise, and judging each one
would cost the full arithmetic per report. A report only adds to its key's open hour; the count at
which the hour is a spike is computed when it opens, so a burst is flagged by the report that
crosses it, not an hour later. The baseline is judged (for a drop) and learned once per key per
hour, when the next hour opens.
"""

from __future__ import annotations

import math
import struct
from array import array
from datetime import UTC, date, datetime

HOURS, DAYS = 24, 7
ALPHA = 0.1  # an hour of day's level weight once it has 10 observations (before: the running mean)
BETA = 0.05  # the day-of-week offsets' weight
GAMMA = 0.02  # the scale's weight once the key has 50 observations (a memory of about two days of hours)
CLIP = 3.0  # residuals are clipped to this many scales before they update the baseline
SCALE_INIT = 0.5  # the scale before the second observation (log space: a factor of 1.6)
SCALE_FLOOR = 0.35  # no scale below this (log space): steady keys do not flag small wobbles
MAD_TO_SIGMA = 1.2533  # mean absolute deviation -> standard deviation for normal residuals
Z_SPIKE = 7.0  # |z| at or above this flags a spike (up) or a drop (down)
COUNT_MAX = 65_535  # observations per hour of day saturate here (stored as 16-bit counters)
OPS_MAX = 2**63 - 1  # an hour's operations saturate here (stored as a signed 64-bit integer)
WARM_BUCKET = 5  # observations of that hour of day before spikes and drops are judged
WARM_KEY = 72  # hours with use of the key before new nodes, new operations and unusual hours are judged
UNUSUAL_SHARE = 0.002  # an hour (with its two neighbours) holding less than this share of the key's hours
MIN_SPAN = 1.0 / 60.0  # hours: a bucket covers at least a minute (a zero-length interval is a point)

KINDS = ("spike", "drop", "new_node", "new_operation", "unusual_hour")

_DOW, _SCALE = HOURS, HOURS + DAYS
WIDTH = HOURS + DAYS + 1  # float32: level[24] | weekday offset[7] | scale; then uint16 observations[24]
_ZERO_F = array("f", [0.0] * WIDTH)
_ZERO_N = array("H", [0] * HOURS)
_F_BYTES = 4 * WIDTH
_N_END = _F_BYTES + 2 * HOURS
_TAIL = struct.Struct("<13sdqd?")  # the open hour: hid, span, count, limit (-1: none yet), flagged


class KeyState:
    """One key's baseline (a level and observations per hour of day, an offset per weekday, one
    scale), the operations it did, the nodes that used it, and its open hour: one row of
    ``anomaly_keys`` (a 214-byte blob). ``v`` is float32: every store rounds, so the state in
    memory is the state on disk (a restart continues bit for bit).

    The open hour: ``hid`` (``YYYY-MM-DDTHH``, UTC), ``span`` (the hours it covers, from the opening
    report's interval start to the end of the hour, or that report's interval end if later),
    ``count`` (the operations its reports added up to so far), ``limit`` (the count at which it is
    a spike; infinite while that hour of day warms up) and ``flagged`` (a spike already raised)."""

    __slots__ = ("buckets", "count", "flagged", "hid", "limit", "n", "nodes", "ops", "span", "v")

    def __init__(
        self, v: array | None = None, n: array | None = None, ops: set[str] | None = None,
        nodes: set[str] | None = None,
    ) -> None:  # fmt: skip
        self.v = v if v is not None else array("f", _ZERO_F)
        self.n = n if n is not None else array("H", _ZERO_N)
        self.ops = ops if ops is not None else set()
        self.nodes = nodes if nodes is not None else set()
        self.buckets = sum(self.n) if n is not None else 0  # hours with use, the open one included
        self.hid = ""
        self.span, self.count, self.limit, self.flagged = 1.0, 0, math.inf, False

    def encode(self) -> bytes:
        """The baseline and the open hour as one blob (the operations and nodes are stored apart: they
        rarely change)."""
        limit = self.limit if self.limit != math.inf else -1.0
        tail = _TAIL.pack(self.hid.encode(), self.span, self.count, limit, self.flagged)
        return self.v.tobytes() + self.n.tobytes() + tail

    @classmethod
    def decode(cls, blob: bytes, ops: str, nodes: str) -> KeyState:
        v, n = array("f"), array("H")
        v.frombytes(blob[:_F_BYTES])
        n.frombytes(blob[_F_BYTES:_N_END])
        key = cls(v, n, set(ops.split(",")) if ops else set(), set(nodes.split(",")) if nodes else set())
        hid, key.span, key.count, limit, key.flagged = _TAIL.unpack(blob[_N_END:])
        key.hid = hid.decode()
        key.limit = math.inf if limit < 0 else limit
        key.buckets += 1 if key.hid else 0
        return key

    def inherit(self) -> KeyState:
        """The baseline, operations and nodes without the open hour (a successor key starts from them)."""
        return KeyState(array("f", self.v), array("H", self.n), set(self.ops), set(self.nodes))

    def hours(self, hour: int) -> int:
        """Hours of use the key had at that hour of day (judged ones: the open hour is not counted yet)."""
        return self.n[hour]

    def open(self, hid: str, start: str | None, end: str | None) -> None:
        """Start a new hour: its span, and the count at which it is a spike."""
        hour, dow, hour_start = hour_of(hid)
        first = seconds(start) if start else hour_start
        last = hour_start + 3600.0
        if end:
            last = max(last, seconds(end))
        self.buckets += 1
        self.hid, self.count, self.flagged = hid, 0, False
        self.span = max((last - first) / 3600.0, MIN_SPAN)
        self.limit = self._limit(hour, dow, self.span)

    def _limit(self, hour: int, dow: int, span: float) -> float:
        """The count over ``span`` hours whose z is ``Z_SPIKE``: an hour's count only grows, so a report
        that brings it to this is a spike whatever comes after it."""
        if self.n[hour] < WARM_BUCKET:
            return math.inf
        expected, scale = self.expected(hour, dow)
        counted = math.expm1(expected) * span if expected > 0.0 else 0.0
        return span * math.expm1(expected + Z_SPIKE * math.sqrt(scale * scale + 1.0 / (counted + 1.0)))

    def expected(self, hour: int, dow: int) -> tuple[float, float]:
        """(expected log rate, scale as a standard deviation) at that hour and weekday."""
        v = self.v
        scale = v[_SCALE] * MAD_TO_SIGMA
        return v[hour] + v[_DOW + dow], scale if scale > SCALE_FLOOR else SCALE_FLOOR

    def score(self, x: float, hour: int, dow: int, span: float) -> tuple[float, float, float]:
        """(z, expected, scale) of ``x`` over ``span`` hours. Counting noise on top of the scale: a
        Poisson count of about ``c`` wobbles by 1/sqrt(c) in log space."""
        expected, scale = self.expected(hour, dow)
        counted = math.expm1(expected) * span if expected > 0.0 else 0.0
        return (x - expected) / math.sqrt(scale * scale + 1.0 / (counted + 1.0)), expected, scale

    def step(self, x: float, hour: int, dow: int, span: float) -> tuple[float, float, float, int] | None:
        """Judge ``x`` (over ``span`` hours) at that hour and weekday, then learn it. Returns (z, expected,
        scale, observations) when ``|z| >= Z_SPIKE`` after the hour's warm-up, else None."""
        v, counts = self.v, self.n
        n = counts[hour]
        if n < COUNT_MAX:
            counts[hour] = n + 1
        di = _DOW + dow
        if n == 0:
            v[hour] = x - v[di]
            if self.buckets <= 1:
                v[_SCALE] = SCALE_INIT
            return None
        z, expected, scale = self.score(x, hour, dow, span)
        r = x - expected
        limit = CLIP * scale
        rc = limit if r > limit else -limit if r < -limit else r  # the Huber step: a burst moves it little
        v[hour] += rc / (n + 1.0) if n < 9 else ALPHA * rc
        seen = self.buckets
        v[_SCALE] += ((rc if rc >= 0.0 else -rc) - v[_SCALE]) * (1.0 / seen if seen < 50 else GAMMA)
        v[di] += BETA * rc
        if n >= WARM_BUCKET and (z >= Z_SPIKE or z <= -Z_SPIKE):
            return z, expected, scale, n
        return None


_HIDS: dict[str, tuple[int, int, float]] = {}  # "YYYY-MM-DDTHH" -> (hour, weekday, its start in seconds)


def hour_of(hid: str) -> tuple[int, int, float]:
    """(hour of day, weekday, start in seconds since 0001-01-01) of an hour id ``YYYY-MM-DDTHH``."""
    found = _HIDS.get(hid)
    if found is None:
        if len(_HIDS) > 4096:
            _HIDS.clear()
        hour = int(hid[11:13])
        dow, midnight = day(hid[:10])
        found = _HIDS[hid] = (hour, dow, midnight + hour * 3600.0)
    return found


_DAYS: dict[str, tuple[int, float]] = {}  # "YYYY-MM-DD" -> (weekday, its midnight in seconds); few distinct


def day(value: str) -> tuple[int, float]:
    """(weekday, midnight in seconds since 0001-01-01) of a ``YYYY-MM-DD`` date."""
    found = _DAYS.get(value)
    if found is None:
        if len(_DAYS) > 4096:
            _DAYS.clear()
        d = date(int(value[0:4]), int(value[5:7]), int(value[8:10]))
        found = _DAYS[value] = (d.weekday(), (d.toordinal() - 1) * 86400.0)
    return found


def seconds(value: str) -> float:
    """Seconds since 0001-01-01 of a journal time (UTC); slicing and a cache, not parsing, for the
    usual ``Z`` form (an hour-aligned time is one dict lookup)."""
    if value[-1] == "Z" and len(value) >= 20 and value[19] in ".Z":
        start = hour_of(value[:13])[2]
        if value[14:19] == "00:00" and len(value) == 20:
            return start
        return start + int(value[14:16]) * 60 + float(value[17:-1])
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(UTC)
    midnight = parsed.replace(hour=0, minute=0, second=0, microsecond=0)
    return day(parsed.date().isoformat())[1] + (parsed - midnight).total_seconds()


def rate_value(total: int, span_hours: float) -> float:
    """The quantity judged: log1p of operations per hour."""
    return math.log1p(total / span_hours)


def unusual_hour(key: KeyState, hour: int) -> tuple[bool, float]:
    """(unusual?, share) of the key's buckets at that hour and its two neighbours (before this one)."""
    near = key.hours((hour - 1) % HOURS) + key.hours(hour) + key.hours((hour + 1) % HOURS)
    share = near / key.buckets if key.buckets else 1.0
    return key.buckets >= WARM_KEY and share < UNUSUAL_SHARE, share
