"""One scrape's worth of plain data, and the single-flight cache that shares it.

Concurrent scrapes must neither race nor multiply the work: while a snapshot is being built,
every other scrape waits for that one and gets the same object.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
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
class PostureCounts:
    """What the posture score divides (exporter/posture.py), for the fleet and for each owner."""

    @dataclass(frozen=True, slots=True)
    class Group:
        usable: int = 0  # keys pre-activation, active or suspended
        noncompliant: int = 0  # usable keys breaking a policy rule
        rotating: int = 0  # active keys with a rotation due under the policy
        overdue: int = 0  # ... past it
        withdrawn: int = 0  # keys revoked, compromised or destroyed, and any other key used after withdrawal
        used_after: int = 0  # keys with a conflicting use not closed by destroying them

    fleet: Group = field(default_factory=Group)
    owners: dict[str, Group] = field(default_factory=dict)


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
    age_by_purpose: dict[str, tuple[int, float]] = field(default_factory=dict)  # purpose -> (keys, sum of ages)
    posture: PostureCounts = field(default_factory=PostureCounts)


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
