"""One scrape's worth of plain data, and the single-flight cache that shares it.

Concurrent scrapes must neither race nor multiply the work: while a snapshot is being built,
every other scrape waits for that one and gets the same object.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class AttentionKey:
    key_id: str
    reasons: tuple[str, ...]
    state: str
    algorithm: str
    purpose: str
    expires_at: float | None
    rotation_due: float | None
    operations: int | None = None  # only for keys with an operations limit
    operations_limit: int | None = None


@dataclass(frozen=True)
class Snapshot:
    taken_at: float
    keys: dict[tuple[str, str, str], int]
    expiry_bands: dict[str, int]
    rotation_bands: dict[str, int]
    age_buckets: list[tuple[float, int]]  # (upper bound in seconds, keys at most that old), cumulative
    age_count: int
    age_sum: float
    usage: dict[tuple[str, str, str], int]
    transitions: dict[str, int]
    violations: dict[str, int]
    noncompliant: dict[str, int]
    compliance_ratio: float
    attention: list[AttentionKey]
    attention_total: int
    node_last_seen: dict[str, float]
    node_unconfirmed: dict[str, int]
    propagation_pending: int
    lag_buckets: list[tuple[float, int]]
    lag_count: int
    lag_sum: float
    pipeline: dict[str, float] = field(default_factory=dict)


class SingleFlight:
    """Build at most one snapshot at a time; scrapes that arrive meanwhile share it."""

    def __init__(self, build: Callable[[], Snapshot]) -> None:
        self._build = build
        self._lock = threading.Lock()
        self._done = threading.Condition(self._lock)
        self._building = False
        self._generation = 0
        self._latest: Snapshot | None = None
        self._error: BaseException | None = None
        self.builds = 0

    def get(self) -> Snapshot:
        with self._lock:
            if self._building:
                generation = self._generation
                while self._building and self._generation == generation:
                    self._done.wait()
                if self._error is not None:
                    raise self._error
                assert self._latest is not None
                return self._latest
            self._building = True
        try:
            snapshot = self._build()
            error = None
        except BaseException as exc:
            snapshot, error = None, exc
        with self._lock:
            self._building = False
            self._generation += 1
            self._error = error
            if snapshot is not None:
                self._latest = snapshot
                self.builds += 1
            self._done.notify_all()
        if error is not None:
            raise error
        assert snapshot is not None
        return snapshot


class ScrapeCache:
    """The rendered /metrics body, reused while younger than ``max_age`` seconds; one render at a time.

    Why: every scrape used to wait for the registry to catch up, build a snapshot and format it, so
    a few clients scraping in a loop took most of a core from ingest. Now a scrape is answered by a
    render that began at most ``max_age`` before the scrape arrived (it reports everything
    acknowledged before that render began), renders never overlap, and scrapes arriving while one
    runs share it when it is recent enough, or wait and share the next one. ``max_age`` 0: every
    scrape gets a render that began after it arrived (read-your-writes on every scrape).
    """

    def __init__(
        self, render: Callable[[], Awaitable[bytes]], max_age: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._render, self.max_age, self._clock = render, max_age, clock
        self._body: bytes | None = None
        self._began = float("-inf")  # when the render that made ``_body`` began
        self._flight: asyncio.Task[bytes] | None = None
        self._flight_began = float("-inf")
        self.renders = 0

    async def get(self) -> bytes:
        arrived = self._clock()
        oldest = arrived - self.max_age
        while True:
            if self._body is not None and self._began >= oldest:
                return self._body
            flight = self._flight
            if flight is not None:
                if self._flight_began >= oldest:
                    return await asyncio.shield(flight)
                await asyncio.wait([flight])  # too old for this scrape: let it finish, then start the next
                continue
            self._flight_began = self._clock()
            self._flight = asyncio.ensure_future(self._run(self._flight_began))
            return await asyncio.shield(self._flight)

    async def _run(self, began: float) -> bytes:
        try:
            body = await self._render()
        finally:
            self._flight = None
        self._body, self._began = body, began
        self.renders += 1
        return body
