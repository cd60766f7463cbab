"""Labelled usage anomalies in the demo network's traffic: what the detector (docs/anomalies.md) is
measured on, and what a newcomer sees it flag in ``keylife serve --demo``.

After a warm-up of five days (the detector judges an hour of day once it has seen it five times),
``per_kind`` of each kind land at seeded times in the back-filled history, on keys outside the
scenario's notable slots, each as one extra ``usage_report`` whose id is labelled:

* ``stolen_burst``: the key used from its home node at 30 times its hourly rate plus 2,000
  operations within one report interval;
* ``new_node``: the key used from a node of the fleet that never used it (one interval of its
  normal volume);
* ``night_batch``: a batch at 03h UTC, the trough of the daily rhythm: ten hours of the key's
  daytime peak volume in one interval.

The injections draw from their own seeded generator, so the rest of the stream (ids included) is
the same as without them; a history shorter than the warm-up gets none.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, Any

from keylife.demo.scenario import DAY, HOUR, NOTABLE, Slot

if TYPE_CHECKING:
    from keylife.demo.network import World

KINDS = ("stolen_burst", "new_node", "night_batch")
WARMUP = 5 * DAY
PEAK = 1.7  # the daily rhythm's peak factor (World._rhythm)


class Injector:
    """Plans the injections on a world's event heap and remembers their labels (event id -> kind)."""

    def __init__(self, world: World, per_kind: int) -> None:
        self.world = world
        self.labels: dict[str, str] = {}
        lo, hi = world.start + WARMUP, world.now0 - HOUR
        slots = [s for s in world.slots if s.idx >= len(NOTABLE)]
        if per_kind <= 0 or hi <= lo or not slots:
            return
        rng = random.Random(f"keylife-demo-anomalies/{world.world}")
        for kind in KINDS:
            for _ in range(per_kind):
                slot = rng.choice(slots)
                t = rng.randrange(lo, hi)
                if kind == "night_batch":
                    t = (t // DAY) * DAY + 3 * HOUR + rng.randrange(10, 50) * 60
                    t = t if t < hi else t - DAY
                    if t < lo:
                        continue
                world._push(t, self._inject, kind, slot)

    def _inject(self, t: int, kind: str, slot: Slot) -> list[dict[str, Any]]:
        world = self.world
        key_id = next((s[0] for s in slot.segments if s[2] is None and not s[3]), None)
        if key_id is None:  # between generations: nothing in use to abuse
            return []
        node = slot.home
        hourly = slot.rate * HOUR
        if kind == "new_node":
            strangers = [n for n in range(len(world.names)) if n not in slot.users]
            if not strangers:
                return []
            node = strangers[slot.idx % len(strangers)]
            total = max(1.0, slot.rate * world.interval)
        elif kind == "stolen_burst":
            total = 30 * hourly + 2000
        else:
            total = 10 * PEAK * hourly
        usage = {op: max(1, round(total * share)) for op, share in slot.profile.ops}
        event = {
            "id": f"{world._prefix}anomaly-{len(self.labels) + 1}",  # apart from the stream's numbering
            "type": "usage_report",
            "key_id": key_id,
            "occurred_at": world._fmt(t),
            "node": world.names[node],
            "actor": world.names[node],
            "usage": usage,
            "interval_start": world._fmt(t - world.interval),
            "interval_end": world._fmt(t),
        }
        self.labels[event["id"]] = kind
        return [event]
