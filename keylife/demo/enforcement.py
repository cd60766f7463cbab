"""The demo's nodes as enforcement points of the signed revocation feed (docs/revocation-feed.md).

While ``serve --demo`` runs, the simulated nodes poll ``GET /v1/revocations?since=V`` (with the
ETag, so an unchanged feed is a 304) and, for each newly withdrawn key they hold, report
``propagated`` with the entry's state from each holder after a small delay, as a node patch or a
sidecar would once it refuses the key, and stop using it (``allows``). The scenario's lagging node
never applies the feed: it is the node ``keylife incident revoke --wait`` and
``KeylifeRevocationUnconfirmed`` name, and the one still using the key.

Deterministic under the seed: which nodes confirm (every holder but the lagging node) and each
one's delay (``delay_for``: from the seed, the node and the feed version) do not depend on timing.
"""

from __future__ import annotations

import hashlib
import heapq
import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from keylife.demo.scenario import Fleet

log = logging.getLogger("keylife.demo")

Event = dict[str, Any]
MIN_DELAY, MAX_DELAY = 1.0, 3.0  # seconds from seeing an entry to reporting the key refused


def fleet_holders(world: Fleet) -> Callable[[str], list[str]]:
    """key id -> the nodes holding it in the simulated fleet ([] for a key the fleet never had)."""
    index: dict[str, list[str]] = {}

    def build() -> None:
        for slot in world.slots:
            names = [world.names[n] for n in slot.holders]
            for gen in range(slot.gen + 1):
                index.setdefault(world.key_id(slot.idx, gen), names)

    def holders(key_id: str) -> list[str]:
        if key_id not in index:
            build()  # a generation made since the last look
        return index.get(key_id, [])

    return holders


class FeedEnforcer:
    """Polls the feed and yields the holders' confirmations as they fall due."""

    def __init__(self, holders: Callable[[str], list[str]], lagging: str, seed: int, prefix: str) -> None:
        self.holders, self.lagging, self.seed, self.prefix = holders, lagging, seed, prefix
        self.since = 0
        self.etag: str | None = None
        self.enabled = True
        self._problem: str | None = None  # the last one logged: a failing poll every 2 s logs once
        self._due: list[tuple[datetime, str, Event]] = []
        self._refused: dict[tuple[str, str], datetime] = {}  # (key, node) -> when the node refused the key

    def delay_for(self, node: str, version: int) -> float:
        digest = hashlib.sha256(f"{self.seed}/{node}/{version}".encode()).digest()
        return MIN_DELAY + (MAX_DELAY - MIN_DELAY) * digest[0] / 255

    def poll(self, client: httpx.Client, base_url: str, token: str, now: datetime) -> list[Event]:
        """One poll of the feed, then the confirmations due at ``now``."""
        if self.enabled:
            self._fetch(client, base_url, token, now)
        out = []
        while self._due and self._due[0][0] <= now:
            _, _, event = heapq.heappop(self._due)
            out.append(event)
        return out

    def allows(self, event: Event) -> bool:
        """False for a usage report from a node after it refused the key: a node that applied the
        feed no longer uses the key, only the lagging one does (and is paged for it)."""
        if event.get("type") != "usage_report":
            return True
        refused = self._refused.get((event["key_id"], event.get("node", "")))
        if refused is None:
            return True
        return datetime.fromisoformat(str(event.get("interval_start", event["occurred_at"]))) < refused

    def _fetch(self, client: httpx.Client, base_url: str, token: str, now: datetime) -> None:
        headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
        if self.etag:
            headers["If-None-Match"] = self.etag
        try:
            answer = client.get(f"{base_url}/v1/revocations", params={"since": self.since}, headers=headers)
        except httpx.TransportError as exc:
            self._note(f"polling the revocation feed failed: {exc}")
            return
        if answer.status_code == 304:
            return
        if answer.status_code in (401, 403):
            log.warning("demo: the token cannot read the revocation feed (%d); nodes will not confirm revocations",
                        answer.status_code)  # fmt: skip
            self.enabled = False
            return
        if answer.status_code == 400:  # since-ahead: another keylife behind the URL; start over
            self.since, self.etag = 0, None
            return
        if answer.status_code != 200:
            self._note(f"the revocation feed answered {answer.status_code}")
            return
        self._problem = None
        document = answer.json()
        for entry in document["entries"]:
            self._schedule(entry, now)
        self.since, self.etag = document["version"], answer.headers.get("etag")

    def _note(self, problem: str) -> None:
        if problem != self._problem:
            log.warning("demo: %s", problem)
            self._problem = problem

    def _schedule(self, entry: dict[str, Any], now: datetime) -> None:
        for node in self.holders(entry["key_id"]):
            if node == self.lagging:
                continue  # the lagging node never applies the feed
            due = now + timedelta(seconds=self.delay_for(node, entry["version"]))
            event = {
                "id": f"{self.prefix}enf-{node}-{entry['version']}",
                "type": "propagated",
                "key_id": entry["key_id"],
                "occurred_at": due.astimezone(UTC).isoformat().replace("+00:00", "Z"),
                "node": node,
                "actor": node,
                "state": entry["state"],
                "reason": f"refused after revocation feed version {entry['version']}",
            }
            heapq.heappush(self._due, (due, event["id"], event))
            self._refused.setdefault((entry["key_id"], node), due)
