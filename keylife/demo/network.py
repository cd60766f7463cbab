"""A simulated DataFold network that feeds keylife: what ``keylife serve --demo`` shows a newcomer.

Deterministic: a seed and a start give the same events, ids included (``demo-{seed}-{world}-{n}``,
``world`` hashing the whole config), so re-posting a run is a no-op for the idempotent ingest,
while a run with another start is another world with its own key ids and cannot collide with it.
(So a restarted ``serve --demo`` on a kept data directory adds a fresh fleet beside the old one,
which goes quiet; pass a fixed ``start`` to replay the same world instead.)

Time: ``history()`` back-fills ``[start, start + history]`` (default: the week before now), so
dashboards have a past. Afterwards, in ``run_live``, events are stamped with the real clock and
posted as they fall due: usage and propagation keep their real-world pace (reports every interval,
propagation in seconds, the lagging node in minutes to hours) while the *lifecycle* clock runs
``speed`` times faster, so with the default 60 a 30-day rotation comes every 12 hours of wall time
and the default fleet of 40 keys rotates, expires or destroys a key every several minutes. Expiry dates
of keys reaching past the history are compressed the same way, so they stay consistent with what
the stream later does. With ``speed=1`` the whole run is real time. ``occurred_at`` is never later
than the real clock when live.

What the fleet contains, beside routine rotation, expiry and destruction: see ``scenario_keys()``
(a compromised key the lagging node keeps using, a suspended key, one suspended then reactivated,
one revoked by policy, a legacy RSA-1024 and a 3DES key for policy checks to flag).
"""

from __future__ import annotations

import logging
import math
import random
import ssl
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson

from keylife.demo.enforcement import FeedEnforcer, fleet_holders
from keylife.demo.injected import Injector
from keylife.demo.scenario import DAY, HOUR, Fleet, Key, Ops, Slot

log = logging.getLogger("keylife.demo")

Event = dict[str, Any]

# Presets for benchmarks and docs; ``DemoConfig(**SIZES["bench"])``.
SIZES: dict[str, dict[str, Any]] = {
    "tiny": {"nodes": 3, "keys": 12, "history": timedelta(days=1)},
    "default": {},
    "bench": {"nodes": 100, "keys": 10_000, "history": timedelta(days=1), "interval": timedelta(hours=1)},
    "large": {"nodes": 100, "keys": 100_000, "history": timedelta(days=1), "interval": timedelta(hours=1)},
}


@dataclass(frozen=True)
class DemoConfig:
    """The simulated network's shape. ``start`` None means ``now - history`` at construction."""

    nodes: int = 5
    keys: int = 40  # fewer than 8 count as 8: the scenario needs its notable keys
    seed: int = 1
    start: datetime | None = None
    history: timedelta = timedelta(days=7)
    interval: timedelta = timedelta(minutes=5)  # usage report interval
    speed: float = 60.0  # lifecycle seconds per wall second once live
    replicas: int = 5  # nodes holding (and propagating) each key; the lagging node holds all
    usage_nodes: int = 3  # at most this many nodes use a key
    anomalies: int = 1  # labelled usage anomalies of each kind injected after 5 days (keylife.demo.injected)


SHARDS = 8  # a node flushes its counters in this many batches spread over the interval
PEAK_HOUR = 14.0  # UTC hour of the daily usage peak; the trough is 12 hours away


class World(Fleet):
    """The fleet plus its usage traffic: per node, per key, per interval ``usage_report`` events.

    A node flushes its counters in SHARDS batches at fixed offsets into the next interval, so a
    live stream trickles rather than bursts. Before a key's state changes, every node using it
    flushes that key (``_close``), so legitimate use never lands after the change: the only
    conflicting use in the stream is the compromised key the lagging node goes on using.
    """

    def __init__(self, *, anomalies: int = 0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        nodes, interval, rnd = len(self.names), self.interval, self.rng.random
        cap = max(1, int(min(0.95 * interval, 300)) - 2)  # every flush lands before the next interval
        self._delay = [[2 + int(rnd() * cap) for _ in range(SHARDS)] for _ in range(nodes)]
        self._flushed_to = [[self.start] * SHARDS for _ in range(nodes)]
        self._by_shard: list[list[list[Slot]]] = [[[] for _ in range(SHARDS)] for _ in range(nodes)]
        self._rogue: list[list[list[tuple[Slot, str, int]]]] = [[[] for _ in range(SHARDS)] for _ in range(nodes)]
        for slot in self.slots:
            for n in slot.users:
                self._by_shard[n][slot.idx % SHARDS].append(slot)
        self._push((self.start // interval + 1) * interval, self._tick)
        self.injector = Injector(self, anomalies)

    @staticmethod
    def _rhythm(t: int) -> float:
        """Daily sinusoid peaking at PEAK_HOUR UTC, quieter weekends."""
        factor = 1.0 + 0.7 * math.cos(2 * math.pi * ((t % DAY) / HOUR - PEAK_HOUR) / 24)
        return factor * 0.6 if (t // DAY + 3) % 7 >= 5 else factor

    def _report(
        self, slot: Slot, key_id: str, span: int, ops: Ops, factor: float, head: tuple[str, str, str, str]
    ) -> Event | None:
        """One report; ``head`` is (occurred_at, node, interval_start, interval_end), formatted."""
        rnd = self.rng.random
        scale = slot.rate * span * factor * (0.7 + 0.6 * rnd())
        usage = {}
        for op, share in ops:
            count = int(scale * share + rnd())
            if count:
                usage[op] = count
        if not usage:
            return None
        self._n += 1
        return {
            "id": f"{self._prefix}{self._n}",
            "type": "usage_report",
            "key_id": key_id,
            "occurred_at": head[0],
            "node": head[1],
            "actor": head[1],
            "usage": usage,
            "interval_start": head[2],
            "interval_end": head[3],
        }

    def _close(self, t: int, slot: Slot, key: Key) -> list[Event]:
        seg = next((s for s in slot.segments if s[0] == key.id and s[2] is None and not s[3]), None)
        if seg is None:
            return []
        slot.segments.remove(seg)
        out = []
        for n in slot.users:
            lo = max(seg[1], self._flushed_to[n][slot.idx % SHARDS])
            head = (self._fmt(t), self.names[n], self._fmt(lo), self._fmt(t))
            if t > lo and (
                r := self._report(slot, key.id, t - lo, slot.profile.ops, self._rhythm((lo + t) // 2), head)
            ):
                out.append(r)
        return out

    def _keep_using(self, t: int, slot: Slot, key_id: str, node: int) -> None:
        self._rogue[node][slot.idx % SHARDS].append((slot, key_id, t))

    def _tick(self, t: int) -> tuple[()]:
        """An interval ends: every node flushes each shard of its counters after its own delay."""
        for n, shards in enumerate(self._by_shard):
            for sh in range(SHARDS):
                if shards[sh] or self._rogue[n][sh]:
                    self._push(t + self._delay[n][sh], self._flush, n, sh, t - self.interval, t)
        self._push(t + self.interval, self._tick)
        return ()

    def _flush(self, t: int, n: int, sh: int, s: int, e: int) -> list[Event]:
        self._flushed_to[n][sh] = e
        rh, fmt, report = self._rhythm((s + e) // 2), self._fmt, self._report
        occurred, name = fmt(t), self.names[n]
        full = (occurred, name, fmt(s), fmt(e))
        out = []
        for slot in self._by_shard[n][sh]:
            segs = slot.segments
            stale = False
            for key_id, a, b, tail in segs:
                if b is not None and b <= s:
                    stale = True
                    continue
                lo = a if a > s else s
                hi = e if b is None or b > e else b
                if hi <= lo:
                    continue
                head = full if lo == s and hi == e else (occurred, name, fmt(lo), fmt(hi))
                if tail:
                    decay = 0.4 * math.exp(-3 * (lo - a) / (b - a))
                    r = report(slot, key_id, hi - lo, slot.profile.tail_ops, rh * decay, head)
                else:
                    r = report(slot, key_id, hi - lo, slot.profile.ops, rh, head)
                if r is not None:
                    out.append(r)
            if stale:
                slot.segments = [x for x in segs if x[2] is None or x[2] > s]
        for slot, key_id, a in self._rogue[n][sh]:
            lo = max(a, s)
            head = full if lo == s else (occurred, name, fmt(lo), fmt(e))
            if e > lo and (r := report(slot, key_id, e - lo, slot.profile.ops, rh, head)):
                out.append(r)
        return out


class DemoNetwork:
    """The stream of a simulated network, consumed forward: ``advance`` never repeats an event."""

    def __init__(self, config: DemoConfig) -> None:
        self.config = config
        start = config.start if config.start is not None else datetime.now(UTC) - config.history
        if start.tzinfo is None:
            raise ValueError("DemoConfig.start must be timezone-aware")
        self._world = World(
            seed=config.seed,
            nodes=config.nodes,
            keys=config.keys,
            start=math.floor(start.timestamp()),
            history=int(config.history.total_seconds()),
            interval=int(config.interval.total_seconds()),
            speed=config.speed,
            replicas=config.replicas,
            usage_nodes=config.usage_nodes,
            anomalies=config.anomalies,
        )
        self._stream = self._world.stream()
        self._next: tuple[int, Event] | None = None

    @property
    def start(self) -> datetime:
        return datetime.fromtimestamp(self._world.start, UTC)

    @property
    def now(self) -> datetime:
        """The end of the back-filled history: where live time takes over."""
        return datetime.fromtimestamp(self._world.now0, UTC)

    def _until(self, limit: int) -> Iterator[Event]:
        while True:
            if self._next is None:
                self._next = next(self._stream)
            if self._next[0] > limit:
                return
            event, self._next = self._next[1], None
            yield event

    def advance(self, until: datetime) -> list[Event]:
        """Every event not yet returned with ``occurred_at <= until``, in time order."""
        if until.tzinfo is None:
            raise ValueError("until must be timezone-aware")
        return list(self._until(math.floor(until.timestamp())))

    def iter_history(self) -> Iterator[Event]:
        """Lazily, the events up to ``now`` not yet returned (all of them on a fresh network)."""
        return self._until(self._world.now0)

    def history(self) -> list[Event]:
        return list(self.iter_history())

    def enforcer(self) -> FeedEnforcer:
        """The nodes as enforcement points of the revocation feed (the lagging node never confirms)."""
        world = self._world
        return FeedEnforcer(fleet_holders(world), world.names[world.lagging], self.config.seed, world._prefix)

    def injected(self) -> dict[str, str]:
        """The labelled usage anomalies emitted so far: event id -> kind (``keylife.demo.injected``)."""
        return dict(self._world.injector.labels)

    def scenario_keys(self) -> dict[str, str]:
        """The notable keys and nodes by role, for tests and docs."""
        return dict(self._world.scenario)


# ----- live feeding -------------------------------------------------------------------------------
RETRYABLE = frozenset({408, 425, 429, 500, 502, 503, 504})


class DemoStopped(Exception):
    """The server refuses our token: retrying cannot help, so the demo stops."""


def _log_error(exc: Exception) -> None:
    log.warning("demo: posting events failed: %s", exc)


def _guarded(on_error: Callable[[Exception], None]) -> Callable[[Exception], None]:
    """A caller's error hook that fails must not take the demo (or the server thread) down."""

    def call(exc: Exception) -> None:
        try:
            on_error(exc)
        except Exception:
            log.exception("demo: the on_error hook failed")

    return call


def _batches(events: Iterable[Event], size: int) -> Iterator[list[Event]]:
    chunk: list[Event] = []
    for event in events:
        chunk.append(event)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


class _Poster:
    """Posts NDJSON batches; retries what a retry can fix, never raises into the caller's thread."""

    def __init__(
        self, client: httpx.Client, url: str, token: str, stop: threading.Event, on_error: Callable[[Exception], None]
    ) -> None:
        self.client, self.url, self.stop, self.on_error = client, url, stop, on_error
        self.headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/x-ndjson"}
        self.accepted = self.duplicate = self.dropped = 0
        self._jitter = random.Random()

    def send(self, events: Iterable[Event], size: int) -> None:
        for chunk in _batches(events, size):
            if self.stop.is_set():
                return
            self._post(b"\n".join(orjson.dumps(e) for e in chunk) + b"\n", len(chunk))

    def _post(self, body: bytes, count: int) -> None:
        attempt = 0
        while not self.stop.is_set():
            delay = min(30.0, 0.5 * 2**attempt) * (0.5 + self._jitter.random())
            try:
                response = self.client.post(self.url, content=body, headers=self.headers)
            except httpx.TransportError as exc:
                self.on_error(exc)
            else:
                if response.status_code < 300:
                    self._count(response)
                    return
                exc = httpx.HTTPStatusError(
                    f"POST {self.url} answered {response.status_code}: {response.text[:300]}",
                    request=response.request,
                    response=response,
                )
                self.on_error(exc)
                if response.status_code in (401, 403):
                    raise DemoStopped(f"the server refuses the demo's token ({response.status_code})")
                if response.status_code not in RETRYABLE:
                    self.dropped += count  # the batch itself is wrong: resending cannot help
                    log.error("demo: dropped %d events refused with %d", count, response.status_code)
                    return
                delay = max(delay, _retry_after(response))
            attempt += 1
            self.stop.wait(delay)

    def _count(self, response: httpx.Response) -> None:
        try:
            body = orjson.loads(response.content)
            self.accepted += int(body.get("accepted", 0))
            self.duplicate += int(body.get("duplicate", 0))
        except (orjson.JSONDecodeError, AttributeError, TypeError, ValueError):
            log.debug("demo: the server's answer carried no counts")


def _retry_after(response: httpx.Response) -> float:
    try:
        return min(60.0, float(response.headers.get("Retry-After", "0")))
    except ValueError:
        return 0.0


def run_live(
    base_url: str,
    token: str,
    config: DemoConfig,
    *,
    stop: threading.Event,
    batch: int = 500,
    on_error: Callable[[Exception], None] = _log_error,
    poll: float = 2.0,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    verify: ssl.SSLContext | bool = True,
) -> None:
    """Post the history, then follow the real clock every ``poll`` seconds until ``stop`` is set; each
    round the nodes also poll the revocation feed and confirm the keys they refuse
    (``keylife.demo.enforcement``).

    Safe as a thread target: every failure is logged (and handed to ``on_error``), nothing raises.
    Connection errors, 429 and 5xx are retried with backoff (honouring Retry-After) for as long as
    it takes, so the demo may start before the server listens; a 401/403 stops the demo.
    """
    url = f"{base_url.rstrip('/')}/v1/events"
    report = _guarded(on_error)
    try:
        if config.start is None:
            config = replace(config, start=clock() - config.history)
        network = DemoNetwork(config)
        with httpx.Client(timeout=30.0, verify=verify) as client:
            poster = _Poster(client, url, token, stop, report)
            poster.send(network.iter_history(), batch)
            log.info(
                "demo: history posted (%d accepted, %d duplicate, %d dropped)",
                poster.accepted,
                poster.duplicate,
                poster.dropped,
            )
            enforcer = network.enforcer()  # the nodes poll the revocation feed and confirm what they refuse
            while not stop.is_set():
                now = clock()
                confirmed = enforcer.poll(client, base_url.rstrip("/"), token, now)
                poster.send([*filter(enforcer.allows, network.advance(now)), *confirmed], batch)
                stop.wait(poll)
    except DemoStopped as exc:
        log.error("demo stopped: %s", exc)
    except Exception as exc:
        log.exception("demo stopped after an unexpected error")
        if on_error is not _log_error:  # already logged just above
            report(exc)
