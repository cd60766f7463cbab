"""Retry delays: exponential with full jitter (spreads a fleet's retries), floored by Retry-After."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

# Honour a destination's Retry-After, but not past this: a bogus header must not park a sink for days.
RETRY_AFTER_CAP = 3600.0
_RNG = random.Random()  # seeded once: seeding from os.urandom per batch showed in profiles


@dataclass
class Backoff:
    initial: float
    maximum: float
    attempt: int = 0
    rng: random.Random = field(default=_RNG)

    def next_delay(self, retry_after: float | None = None) -> float:
        """The wait before the next try. Retry-After (when given) is a floor, plus up to 10% jitter,
        and the whole wait is at most ``RETRY_AFTER_CAP``, whatever the destination asked for."""
        ceiling = min(self.maximum, self.initial * (2**self.attempt))
        self.attempt += 1
        if retry_after is not None and retry_after > 0:
            floor = min(retry_after, RETRY_AFTER_CAP)
            return min(RETRY_AFTER_CAP, floor + self.rng.uniform(0, floor * 0.1))
        return self.rng.uniform(self.initial / 2, max(self.initial / 2, ceiling))

    def reset(self) -> None:
        self.attempt = 0
