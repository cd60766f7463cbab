"""Poll a DataFold node for the status of configured client keys.

The node only *answers* key status (``GET /api/crypto/keys/status/{client_id}``); it logs no
event when an operator revokes or suspends a key by other means. Polling closes that gap: each
answer goes to a callback (the adapter's ``status``), which decides what changed.

A poller is a background observer, so nothing it meets is fatal: refused connections, 5xx
answers, bodies that are not JSON and exceptions in the callback are counted, logged and
retried at the next round.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import httpx
import orjson

log = logging.getLogger("keylife.datafold.poll")

StatusCallback = Callable[[dict[str, Any], str], None]


class KeyStatusPoller:
    """Ask ``base_url`` for each client id's key status every ``interval`` seconds."""

    def __init__(
        self,
        base_url: str,
        client_ids: list[str],
        callback: StatusCallback,
        *,
        interval: float = 60.0,
        headers: dict[str, str] | None = None,
        client: httpx.Client | None = None,
        timeout: float = 10.0,
        verify: Any = True,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.client_ids = list(client_ids)
        self.callback = callback
        self.interval = interval
        self._client = client or httpx.Client(timeout=timeout, headers=headers or {}, verify=verify)
        self._own_client = client is None
        self.stats = {"rounds": 0, "answers": 0, "errors": 0}

    def url_for(self, client_id: str) -> str:
        return f"{self.base_url}/api/crypto/keys/status/{quote(client_id, safe='')}"

    def poll_once(self) -> int:
        """One round over every client id; returns how many answers reached the callback."""
        handed = 0
        for client_id in self.client_ids:
            answer = self._fetch(client_id)
            if answer is None:
                continue
            try:
                self.callback(answer, client_id)
            except Exception:
                self.stats["errors"] += 1
                log.exception("key status callback failed", extra={"client_id": client_id})
                continue
            handed += 1
            self.stats["answers"] += 1
        self.stats["rounds"] += 1
        return handed

    def _fetch(self, client_id: str) -> dict[str, Any] | None:
        """The node's JSON answer, ``{"success": false, ...}`` ones included (a client the node no
        longer knows is news too); None, counted and logged, when there is no usable answer."""
        url = self.url_for(client_id)
        try:
            response = self._client.get(url)
        except httpx.HTTPError as exc:
            return self._error(client_id, f"{type(exc).__name__}: {exc}")
        if response.status_code >= 500:
            return self._error(client_id, f"HTTP {response.status_code}")
        try:
            answer = orjson.loads(response.content)
        except orjson.JSONDecodeError:
            return self._error(client_id, f"HTTP {response.status_code} with a body that is not JSON")
        if not isinstance(answer, dict) or "success" not in answer:
            return self._error(client_id, f"HTTP {response.status_code} without the node's answer shape")
        return answer

    def _error(self, client_id: str, problem: str) -> None:
        self.stats["errors"] += 1
        log.warning("key status poll failed", extra={"client_id": client_id, "url": self.base_url, "problem": problem})
        return None

    def run(self, stop: threading.Event) -> None:
        """Poll until ``stop`` is set; the first round starts at once."""
        while not stop.is_set():
            self.poll_once()
            stop.wait(self.interval)

    def close(self) -> None:
        if self._own_client:
            self._client.close()
