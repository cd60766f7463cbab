"""The rendered ``/metrics`` body, shared by the scrapes that arrive within its age.

It lives with the API (not the exporter) because it is about serving: the exporter builds the
families, and this bounds how often a scrape may make it do so.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable


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
