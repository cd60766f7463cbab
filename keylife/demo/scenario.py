"""The fleet behind ``keylife.demo.network``: keys, their lifecycles, propagation and the scenario.

One event-driven simulation: a heap of actions ordered by (time, sequence) that each return the
events happening at their instant and schedule what follows. Everything draws from one seeded
``random.Random`` in heap order, so a seed and a start give the same stream however it is sliced.

Times are whole Unix seconds on two clocks. Usage, report flushes and propagation delays run on
the wall clock. Lifecycle periods (rotation, validity, retention) run on a *lifecycle* clock equal
to the wall clock up to ``now0`` (the end of the back-filled history) and ``speed`` times faster
afterwards, so a live demo shows rotations every few minutes while usage keeps real rates.

Each slot's ``segments`` say which key is in use when; the usage side (``keylife.demo.World``)
turns them into reports, and ``_close`` lets it flush a key's counters before its state changes.
"""

from __future__ import annotations

import hashlib
import heapq
import math
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from keylife.domain.lifecycle import TARGET_STATE

DAY = 86_400
HOUR = 3_600
PEAK_HOUR = 14.0  # UTC hour of the daily usage peak; the trough is 12 hours away
MISS_P = 0.04  # chance the lagging node never reports a propagation
Ops = tuple[tuple[str, float], ...]


@dataclass(frozen=True)
class Profile:
    """What one kind of DataFold key looks like and how it is used."""

    prefix: str
    algorithm: str
    sizes: tuple[int, ...]
    purpose: str
    ops: Ops  # operation -> share of the key's rate while it is active
    tail_ops: Ops  # operations still legitimate after deactivation (decrypt, verify)
    rate: float  # median operations per second per using node
    periods: tuple[int, ...]  # rotation period (or validity) in days
    policy: str  # "rotate" before expiry | "expire" then replace | "none"


PROFILES: dict[str, Profile] = {
    "client": Profile(
        "df-client",
        "ed25519",
        (256,),
        "authentication",
        (("verify", 1.0),),
        (("verify", 0.2),),
        0.4,
        (14, 30),
        "rotate",
    ),
    "node": Profile(
        "df-node",
        "ed25519",
        (256,),
        "signing",
        (("sign", 1.0), ("verify", 0.6)),
        (("verify", 0.3),),
        0.6,
        (30,),
        "rotate",
    ),
    "data": Profile(
        "df-data",
        "aes-256-gcm",
        (256,),
        "encryption",
        (("encrypt", 0.35), ("decrypt", 1.0)),
        (("decrypt", 0.4),),
        1.5,
        (30, 90),
        "rotate",
    ),
    "data-expiring": Profile(
        "df-data",
        "aes-256-gcm",
        (256,),
        "encryption",
        (("encrypt", 0.35), ("decrypt", 1.0)),
        (("decrypt", 0.4),),
        1.0,
        (30, 60, 180),
        "expire",
    ),
    "wrap": Profile(
        "df-wrap",
        "rsa",
        (2048, 3072),
        "key_wrap",
        (("encrypt", 0.2), ("decrypt", 1.0)),
        (("decrypt", 0.5),),
        0.05,
        (180, 365),
        "rotate",
    ),
    "legacy-rsa": Profile(
        "df-legacy", "rsa", (1024,), "signing", (("sign", 0.5), ("verify", 1.0)), (), 0.05, (730,), "none"
    ),
    "legacy-3des": Profile(
        "df-legacy", "3des", (168,), "encryption", (("encrypt", 0.3), ("decrypt", 1.0)), (), 0.08, (730,), "none"
    ),
}
MIX_KINDS = ("client", "node", "data", "data-expiring", "wrap")
MIX_WEIGHTS = (0.42, 0.08, 0.30, 0.10, 0.10)
# Slots 0..7 carry the scenario; their kinds are fixed.
NOTABLE = ("client", "data", "data", "wrap", "data", "data-expiring", "legacy-rsa", "legacy-3des")
OWNERS = (
    "svc-ingest",
    "svc-query",
    "app-billing",
    "app-analytics",
    "ci-deployer",
    "alice@datafold.example",
    "bob@datafold.example",
    "svc-replicator",
    "app-mobile",
)
TEAMS = ("team-storage", "team-platform", "team-payments", "team-security")
SCHEMAS = (
    "UserProfile",
    "Transactions",
    "BlogPost",
    "Inventory",
    "AuditTrail",
    "Sessions",
    "Payments",
    "Telemetry",
    "Documents",
    "Messages",
    "Orders",
    "Invoices",
)


class Key:
    __slots__ = ("expires", "gen", "id", "next", "slot", "state")

    def __init__(self, key_id: str, slot: Slot, gen: int, expires: int, nxt: int | None) -> None:
        self.id, self.slot, self.gen, self.expires, self.next = key_id, slot, gen, expires, nxt
        self.state = "pre_activation"


class Slot:
    """A place in the fleet (one client's key, one schema's data key) that generations fill."""

    __slots__ = (
        "gen",
        "holders",
        "home",
        "idx",
        "instances",
        "key",
        "key_size",
        "owner",
        "period",
        "profile",
        "rate",
        "segments",
        "users",
    )

    def __init__(self, idx: int, profile: Profile) -> None:
        self.idx, self.profile, self.gen = idx, profile, 0
        self.key: Key | None = None
        # [key_id, from, to | None, is_tail]: who is in use when, for the usage flushes.
        self.segments: list[list[Any]] = []
        self.holders: list[int] = []
        self.users: list[int] = []
        self.home = 0
        self.key_size, self.owner, self.period, self.rate = 0, "", 0, 0.0
        self.instances: list[str] | None = None


class Fleet:
    """Keys and their lifecycles; ``keylife.demo.World`` adds the usage traffic.

    ``stream()`` yields ``(unix_seconds, event_dict)`` forever, in time order.
    """

    def __init__(
        self,
        *,
        seed: int,
        nodes: int,
        keys: int,
        start: int,
        history: int,
        interval: int,
        speed: float,
        replicas: int,
        usage_nodes: int,
    ) -> None:
        if nodes < 1 or history < HOUR or interval < 10 or speed <= 0:
            raise ValueError("need nodes >= 1, history >= 1h, interval >= 10s and speed > 0")
        keys = max(keys, len(NOTABLE))  # below that, a scenario would be missing
        self.start, self.now0, self.interval, self.speed = start, start + history, interval, speed
        self.history = history
        tag = repr((seed, nodes, keys, start, history, interval, speed, replicas, usage_nodes))
        self.world = hashlib.sha256(tag.encode()).hexdigest()[:6]
        self.rng = random.Random(f"keylife-demo/{seed}/{self.world}")
        self._prefix = f"demo-{seed}-{self.world}-"
        self._n = 0
        self._heap: list[tuple[int, int, Callable[..., Any], tuple[Any, ...]]] = []
        self._seq = 0
        self._times: dict[int, str] = {}
        self.retention = max(min(3 * DAY, history // 2), 4 * interval)  # before destruction
        self.tail = self.retention // 3  # decrypt/verify after deactivation ends well before it
        self.names = [f"node-{i + 1}" for i in range(nodes)]
        self.lagging = self.rng.randrange(nodes)
        self._node_clock = [0] * nodes  # nodes apply propagations in order (FIFO)
        self.slots = [self._make_slot(i, min(replicas, nodes), usage_nodes) for i in range(keys)]
        self._bootstrap()
        self.scenario = self._plan_scenario()

    # ----- clocks, ids, formatting --------------------------------------------------------------
    def _l(self, t: int) -> float:
        return t if t <= self.now0 else self.now0 + (t - self.now0) * self.speed

    def _w(self, lt: float) -> int:
        return int(lt) if lt <= self.now0 else self.now0 + int((lt - self.now0) / self.speed)

    def _later(self, t: int, lifecycle_seconds: float) -> int:
        return max(t + 1, self._w(self._l(t) + lifecycle_seconds))

    def _fmt(self, t: int) -> str:
        text = self._times.get(t)
        if text is None:
            if len(self._times) > 100_000:
                self._times.clear()
            text = self._times[t] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))
        return text

    def key_id(self, slot: int, gen: int) -> str:
        """DataFold names keys by the hex of 8 bytes of the public key; ours hash the world."""
        digest = hashlib.sha256(f"{self.world}/{slot}/{gen}".encode()).hexdigest()[:16]
        return f"{self.slots[slot].profile.prefix}-{digest}"

    def _push(self, t: int, fn: Callable[..., Any], *args: Any) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (t, self._seq, fn, args))

    def _ev(self, t: int, kind: str, key_id: str, node: int, actor: str, **extra: Any) -> dict[str, Any]:
        self._n += 1
        ev = {
            "id": f"{self._prefix}{self._n}",
            "type": kind,
            "key_id": key_id,
            "occurred_at": self._fmt(t),
            "node": self.names[node],
            "actor": actor,
        }
        ev.update((k, v) for k, v in extra.items() if v is not None)
        return ev

    def stream(self) -> Iterator[tuple[int, dict[str, Any]]]:
        heap = self._heap
        while heap:
            t, _, fn, args = heapq.heappop(heap)
            for ev in fn(t, *args):
                yield t, ev

    # ----- the fleet ------------------------------------------------------------------------------
    def _make_slot(self, idx: int, replicas: int, usage_nodes: int) -> Slot:
        rng = self.rng
        kind = NOTABLE[idx] if idx < len(NOTABLE) else rng.choices(MIX_KINDS, MIX_WEIGHTS)[0]
        p = PROFILES[kind]
        slot = Slot(idx, p)
        n = len(self.names)
        holders = rng.sample(range(n), replicas)
        if self.lagging not in holders:
            holders[-1] = self.lagging
        wanted = rng.choices((1, 2, 3), (3, 4, 3))[0]
        users = rng.sample(holders, min(len(holders), wanted, max(1, usage_nodes)))
        if idx == 0 and n > 1:  # the compromised key: used by the lagging node, but not owned by it
            users = [*[h for h in holders if h != self.lagging][:1], self.lagging]
        slot.holders, slot.users, slot.home = holders, users, users[0]
        slot.key_size = rng.choice(p.sizes)
        slot.period = rng.choice(p.periods) * DAY
        slot.rate = p.rate * math.exp(rng.gauss(0.0, 0.8))
        if kind == "node":
            slot.owner = self.names[slot.home]
        elif kind == "client":
            owner = rng.choice(OWNERS)
            slot.owner = owner if "@" in owner else f"{owner}-{idx}"
        else:
            slot.owner = rng.choice(TEAMS)
        if p.purpose in ("encryption", "key_wrap"):
            slot.instances = [f"prod/{s}" for s in rng.sample(SCHEMAS, rng.randint(1, 3))]
        return slot

    def _bootstrap(self) -> None:
        """Every slot's first key is generated and activated in a short burst after ``start``."""
        window = min(600, self.history // 20)
        for slot in self.slots:
            gen_t = self.start + slot.idx * window // len(self.slots)
            act_t = gen_t + 1 + slot.idx % 5
            period, phase = slot.period, self.rng.random() * slot.period
            nxt: int | None = max(int(self.start + phase), act_t + HOUR)
            if slot.profile.policy == "rotate":
                expires = nxt + period // 2
            elif slot.profile.policy == "expire":
                expires = nxt
            else:
                expires, nxt = self.start + period // 2 + int(phase), None
            if slot.idx < 5:  # scenario keys: the scenario, not the calendar, moves them
                expires, nxt = self.start + self.history + int(phase) + 7 * DAY, None
            elif slot.idx == 5:
                expires = nxt = self.start + int(0.4 * self.history)
            self._push(gen_t, self._generate, slot, act_t, "activate", None, "initial inventory", (expires, nxt))

    def _plan_scenario(self) -> dict[str, str]:
        s, h, k = self.start, self.history, self.slots
        self._push(
            s + int(0.15 * h), self._generate, k[4], self._l(s + int(0.2 * h)), "rotate", self.key_id(4, 0), None, None
        )
        self._push(s + int(0.3 * h), self._suspend, k[2], "maintenance: re-keying backup agent")
        self._push(s + int(0.4 * h), self._reactivate, k[2])
        self._push(s + int(0.55 * h), self._compromise, k[0])
        self._push(s + int(0.57 * h), self._security, k[0])
        self._push(s + int(0.65 * h), self._revoke, k[3])
        self._push(s + int(0.7 * h), self._suspend, k[1], "investigating anomalous decrypt volume")
        kid = self.key_id
        return {
            "compromised": kid(0, 0),
            "compromise_replacement": kid(0, 1),
            "suspended": kid(1, 0),
            "reactivated": kid(2, 0),
            "revoked": kid(3, 0),
            "revoke_replacement": kid(3, 1),
            "rotated": kid(4, 0),
            "rotated_successor": kid(4, 1),
            "destroyed": kid(4, 0),
            "expired": kid(5, 0),
            "expire_replacement": kid(5, 1),
            "legacy_rsa_1024": kid(6, 0),
            "legacy_3des": kid(7, 0),
            "lagging_node": self.names[self.lagging],
            "rogue_node": self.names[self.lagging],
        }

    # ----- lifecycle ------------------------------------------------------------------------------
    def _state(
        self, t: int, key: Key, kind: str, actor: str, *, skip_lagging: bool = False, **extra: Any
    ) -> dict[str, Any]:
        """A state change of ``key``, announced to every node that holds it."""
        ev = self._ev(t, kind, key.id, key.slot.home, actor, **extra)
        key.state = TARGET_STATE[kind].value
        self._propagate(t, key.slot, key.id, key.state, ev["id"], skip_lagging)
        return ev

    def _propagate(self, t: int, slot: Slot, key_id: str, state: str, cause: str, skip_lagging: bool) -> None:
        rng = self.rng
        for n in slot.holders:
            if n == self.lagging:
                if skip_lagging or rng.random() < MISS_P:
                    continue
                delay = min(6 * HOUR, int(60 * math.exp(rng.gauss(2.3, 1.0))))  # median 10 min
            elif n == slot.home:
                delay = 1
            else:
                delay = 1 + min(120, int(rng.expovariate(0.2)))
            due = self._node_clock[n] = max(t + delay, self._node_clock[n])
            self._push(due, self._propagated, key_id, n, state, cause)

    def _propagated(self, t: int, key_id: str, n: int, state: str, cause: str) -> list[dict[str, Any]]:
        return [self._ev(t, "propagated", key_id, n, self.names[n], state=state, correlation_id=cause)]

    def _generate(
        self,
        t: int,
        slot: Slot,
        act_l: float,
        mode: str,
        predecessor: str | None,
        reason: str | None,
        plan: tuple[float, float | None] | None,
    ) -> list[dict[str, Any]]:
        p, period = slot.profile, slot.period
        if plan is None:
            nxt: float | None = None if p.policy == "none" else act_l + period
            plan = (act_l + period * (1.5 if p.policy == "rotate" else 1.0), nxt)
        key = Key(
            self.key_id(slot.idx, slot.gen), slot, slot.gen, int(plan[0]), None if plan[1] is None else int(plan[1])
        )
        slot.gen += 1
        ev = self._state(
            t,
            key,
            "generated",
            "kms-rotator",
            algorithm=p.algorithm,
            key_size=slot.key_size,
            purpose=p.purpose,
            owner=slot.owner,
            expires_at=self._fmt(self._w(key.expires)),
            data_instances=slot.instances,
            predecessor=predecessor,
            reason=reason,
            attributes={"rotation_policy": f"{p.policy}-{period // DAY}d", "source": "datafold"},
        )
        then = self._rotate if mode == "rotate" else self._activate
        self._push(max(t + 1, self._w(act_l)), then, slot, key)
        return [ev]

    def _activate(self, t: int, slot: Slot, key: Key) -> list[dict[str, Any]]:
        if key.state != "pre_activation":
            return []
        ev = self._state(t, key, "activated", "kms-rotator")
        slot.key = key
        slot.segments.append([key.id, t, None, False])
        self._schedule(t, slot, key)
        return [ev]

    def _schedule(self, t: int, slot: Slot, key: Key) -> None:
        if key.next is None:
            return
        if slot.profile.policy == "rotate":
            lead = min(DAY, slot.period / 10)  # the successor exists a while before it takes over
            self._push(
                max(t + 1, self._w(key.next - lead)), self._generate, slot, key.next, "rotate", key.id, None, None
            )
        elif slot.profile.policy == "expire":
            self._push(max(t + 1, self._w(key.next)), self._expire, slot, key)

    def _rotate(self, t: int, slot: Slot, new: Key) -> list[dict[str, Any]]:
        old = slot.key
        if old is None or old.state != "active" or new.state != "pre_activation":
            return []
        out = self._close(t, slot, old)
        ev = self._ev(
            t,
            "rotated",
            old.id,
            slot.home,
            "kms-rotator",
            successor=new.id,
            reason=f"scheduled rotation ({slot.period // DAY}-day policy)",
        )
        old.state, new.state = "deactivated", "active"
        self._propagate(t, slot, old.id, old.state, ev["id"], False)
        self._propagate(t, slot, new.id, new.state, ev["id"], False)
        slot.key = new
        slot.segments.append([new.id, t, None, False])
        self._retire(t, slot, old)
        self._schedule(t, slot, new)
        out.append(ev)
        return out

    def _retire(self, t: int, slot: Slot, key: Key) -> None:
        """Old data stays readable for a while (decrypt/verify only), then the key is destroyed."""
        if slot.profile.tail_ops:
            slot.segments.append([key.id, t, self._later(t, self.tail), True])
        self._push(self._later(t, self.retention), self._destroy, key)

    def _replace(self, t: int, slot: Slot, old: Key, gap: float, reason: str) -> None:
        self._push(self._later(t, gap), self._generate, slot, self._l(t) + gap * 1.25, "activate", old.id, reason, None)

    def _expire(self, t: int, slot: Slot, key: Key) -> list[dict[str, Any]]:
        if key.state != "active" or slot.key is not key:
            return []
        out = self._close(t, slot, key)
        out.append(self._state(t, key, "expired", "kms-scheduler", reason="validity period ended; no rotation policy"))
        self._retire(t, slot, key)
        self._replace(t, slot, key, min(2 * HOUR, 0.05 * self.history), "replacement for an expired key")
        return out

    def _destroy(self, t: int, key: Key) -> list[dict[str, Any]]:
        if key.state != "deactivated":
            return []
        return [self._state(t, key, "destroyed", "kms-rotator", reason="retention period ended")]

    # ----- the scenario's incidents ----------------------------------------------------------------
    def _suspend(self, t: int, slot: Slot, reason: str) -> list[dict[str, Any]]:
        key = slot.key
        if key is None or key.state != "active":
            return []
        return [*self._close(t, slot, key), self._state(t, key, "suspended", "admin-dana", reason=reason)]

    def _reactivate(self, t: int, slot: Slot) -> list[dict[str, Any]]:
        key = slot.key
        if key is None or key.state != "suspended":
            return []
        ev = self._state(t, key, "reactivated", "admin-dana", reason="maintenance finished")
        slot.segments.append([key.id, t, None, False])
        key.next = int(self._l(t) + (key.expires - self._l(t)) / 2)
        self._schedule(t, slot, key)
        return [ev]

    def _compromise(self, t: int, slot: Slot) -> list[dict[str, Any]]:
        """The lagging node misses the news and keeps using the key: the conflict to alert on."""
        key = slot.key
        if key is None or key.state != "active":
            return []
        out = self._close(t, slot, key)
        out.append(
            self._state(
                t, key, "compromised", "secops-ir", skip_lagging=True, reason="private key found in a public repository"
            )
        )
        self._keep_using(t, slot, key.id, self.lagging)
        self._replace(t, slot, key, 600, "emergency replacement after compromise")
        return out

    def _security(self, t: int, slot: Slot) -> list[dict[str, Any]]:
        home = slot.home
        return [
            self._ev(
                t,
                "security_event",
                self.key_id(slot.idx, 0),
                home,
                self.names[home],
                reason="invalid_key_rotation_attempt: rotation signed with a compromised key",
                attributes={"threat_level": "high", "source": "203.0.113.45", "operation": "invalid_key_rotation"},
            )
        ]

    def _revoke(self, t: int, slot: Slot) -> list[dict[str, Any]]:
        key = slot.key
        if key is None or key.state != "active":
            return []
        out = self._close(t, slot, key)
        out.append(
            self._state(
                t, key, "revoked", "policy-engine", reason="policy: owning team decommissioned; its keys are withdrawn"
            )
        )
        self._replace(t, slot, key, HOUR, "replacement for a key revoked by policy")
        return out

    # ----- filled in by the usage side (keylife.demo.World) ---------------------------------------
    def _close(self, t: int, slot: Slot, key: Key) -> list[dict[str, Any]]:
        """Final usage reports for ``key`` up to ``t``, emitted just before its state changes."""
        return []

    def _keep_using(self, t: int, slot: Slot, key_id: str, node: int) -> None:
        """From ``t`` on, ``node`` keeps using ``key_id`` whatever its state."""
