"""Seeded usage traffic with labelled anomalies, to measure the detector (docs/anomalies.md).

Normal traffic: hourly ``usage_report`` events per (key, node) from three kinds of keys, each with
its own level (log-uniform, 5 to 5,000 ops/h), day-to-day noise and Poisson counts:

* ``business``: used 07-19 UTC, weekends at a third; encryption keys (encrypt + decrypt);
* ``service``: used around the clock, a diurnal swing (peak 14h, trough a third of it); signing keys;
* ``batch``: a nightly batch 01-03 UTC; verification keys (verify only).

Injected after the warm-up, each labelled with an id that the report(s) carry:

* ``stolen_burst``: a stolen key decrypting or signing in bulk: 30 times its rate (at least
  2,000 ops/h more) for two hours, from its own node;
* ``new_node``: the key used from a node that never used it;
* ``night_batch``: a business key used at night (00-04 UTC);
* ``new_operation``: a verification key that starts signing.

The same seed gives the same events, byte for byte.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

START = datetime(2026, 1, 5, tzinfo=UTC)  # a Monday
KINDS = ("stolen_burst", "new_node", "night_batch", "new_operation")


@dataclass
class TrafficKey:
    key_id: str
    profile: str  # business | service | batch
    level: float  # ops per hour at the peak
    nodes: list[str]
    ops: dict[str, float]  # operation -> share
    injected: list[tuple[int, str, str]] = field(default_factory=list)  # (hour index, kind, label)


@dataclass
class Traffic:
    keys: list[TrafficKey]
    days: int
    labels: dict[str, str]  # label -> kind

    @property
    def key_days(self) -> int:
        return len(self.keys) * self.days


def _poisson(rng: random.Random, lam: float) -> int:
    if lam <= 0:
        return 0
    if lam > 30:
        return max(0, round(rng.gauss(lam, math.sqrt(lam))))
    limit, k, p = math.exp(-lam), 0, 1.0
    while True:
        p *= rng.random()
        if p <= limit:
            return k
        k += 1


def _shape(profile: str, hour: int, weekday: int) -> float:
    """The share of the key's peak rate at that hour and weekday."""
    if profile == "business":
        if not 7 <= hour <= 19:
            return 0.0
        bell = 0.4 + 0.6 * math.exp(-(((hour - 13) / 4.0) ** 2))
        return bell * (0.33 if weekday >= 5 else 1.0)
    if profile == "service":
        return 0.33 + 0.67 * (0.5 + 0.5 * math.cos((hour - 14) / 24 * 2 * math.pi))
    return 1.0 if 1 <= hour <= 3 else 0.0


def plan(seed: int, keys: int, days: int, anomalies: int, warmup_days: int = 14) -> Traffic:
    """The fleet and the anomalies to inject (``anomalies`` of each kind, after ``warmup_days``)."""
    rng = random.Random(seed)
    fleet: list[TrafficKey] = []
    for i in range(keys):
        profile = ("business", "service", "batch")[i % 3]
        ops = {"business": {"encrypt": 0.4, "decrypt": 0.6}, "service": {"sign": 1.0}, "batch": {"verify": 1.0}}
        nodes = [f"node-{(i + j) % 12:02d}" for j in range(1 + i % 3)]
        fleet.append(TrafficKey(f"key-{i:05d}", profile, math.exp(rng.uniform(math.log(5), math.log(5000))),
                                nodes, ops[profile]))  # fmt: skip
    labels: dict[str, str] = {}
    eligible = {"stolen_burst": [k for k in fleet if k.profile != "batch"], "new_node": fleet,
                "night_batch": [k for k in fleet if k.profile == "business"],
                "new_operation": [k for k in fleet if k.profile == "batch"]}  # fmt: skip
    for kind in KINDS:
        for n, key in enumerate(rng.sample(eligible[kind], min(anomalies, len(eligible[kind])))):
            day = rng.randrange(warmup_days, days)
            hour = {"stolen_burst": rng.randrange(9, 17), "night_batch": rng.randrange(0, 5),
                    "new_node": rng.randrange(9, 17) if key.profile == "business" else 2,
                    "new_operation": 2}[kind]  # fmt: skip
            label = f"{kind}-{n}"
            labels[label] = kind
            key.injected.append((day * 24 + hour, kind, label))
    return Traffic(fleet, days, labels)


def events(traffic: Traffic, seed: int) -> Iterator[tuple[dict[str, Any], str | None]]:
    """(usage_report, label or None) in time order: one report per (key, node) and hour with use."""
    rng = random.Random(seed ^ 0x5EED)
    day_noise: dict[tuple[str, int], float] = {}
    injected = {(k.key_id, h): (kind, label) for k in traffic.keys for h, kind, label in k.injected}
    for h in range(traffic.days * 24):
        at = START + timedelta(hours=h)
        hour, weekday, day = at.hour, at.weekday(), h // 24
        for key in traffic.keys:
            noise = day_noise.get((key.key_id, day))
            if noise is None:
                noise = day_noise[(key.key_id, day)] = math.exp(rng.gauss(0.0, 0.15))
            shape = _shape(key.profile, hour, weekday)
            inj = injected.get((key.key_id, h)) or injected.get((key.key_id, h - 1))
            for node in key.nodes:
                lam = key.level * shape * noise / len(key.nodes)
                usage = {op: _poisson(rng, lam * share) for op, share in key.ops.items()}
                label = None
                if inj is not None and node == key.nodes[0]:
                    kind, label = inj
                    if kind == "stolen_burst":
                        usage = {op: n * 30 + round(2000 * key.ops[op]) for op, n in usage.items()}
                    elif kind == "night_batch" and (key.key_id, h) in injected:
                        usage = {op: max(n, round(key.level * share)) for (op, n), share in
                                 zip(usage.items(), key.ops.values(), strict=True)}  # fmt: skip
                    elif kind == "new_operation" and (key.key_id, h) in injected:
                        usage = usage | {"sign": max(1, round(key.level / 10))}
                    else:
                        label = None
                usage = {op: n for op, n in usage.items() if n > 0}
                if usage:
                    yield _report(key.key_id, node, at, usage, f"{h}"), label
            if inj is not None and inj[0] == "new_node" and (key.key_id, h) in injected:
                usage = {op: max(1, round(key.level * share / 2)) for op, share in key.ops.items()}
                yield _report(key.key_id, "node-rogue", at, usage, f"{h}"), inj[1]


def _report(key_id: str, node: str, at: datetime, usage: dict[str, int], tag: str) -> dict[str, Any]:
    end = at + timedelta(hours=1)
    return {
        "id": f"u-{key_id}-{node}-{tag}",
        "type": "usage_report",
        "key_id": key_id,
        "node": node,
        "occurred_at": end.isoformat().replace("+00:00", "Z"),
        "interval_start": at.isoformat().replace("+00:00", "Z"),
        "interval_end": end.isoformat().replace("+00:00", "Z"),
        "usage": usage,
    }
