"""Poll a DataFold node for the status of its keys.

The node only *answers* key status; it logs no event when an operator revokes or suspends a key
by other means. Polling closes that gap: each answer goes to a callback (the adapter's
``status``), which decides what changed (``status.py``, ``answers.py``). What is asked, per branch:

* ``security`` / ``security2``: ``GET /api/crypto/keys/status/{client_id}`` per configured client
  (``crypto_routes.rs:719-790`` / ``:733-800``);
* ``mainline``: ``GET /api/security/system-key`` (``system_key``; ``http_server.rs:234-239``),
  which has no per-client keys;
* with ``rotations``, ``POST /api/crypto/keys/rotate/history`` for each client's current public key
  (``security`` ``key_rotation_routes.rs:390-470``): the one answer that names both keys of a
  rotation. ``security2`` answers it 501 ``not_implemented`` (``key_rotation_routes.rs:112-127``):
  asked once, reported, not asked again.

A poller is a background observer, so nothing it meets is fatal: refused connections, 5xx answers,
bodies that are not JSON, refusals by the node's signature middleware and exceptions in the
callback are counted and retried at the next round. Each *change* of problem is logged once
(``problem`` holds the current one), so a node that keeps refusing is one clear line, not a flood.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import httpx
import orjson

from keylife.datafold.answers import SYSTEM_KEY_ID
from keylife.datafold.signing import refusal_code

log = logging.getLogger("keylife.datafold.poll")

StatusCallback = Callable[[dict[str, Any], str, int], None]  # (answer, client id, HTTP status)
SYSTEM_KEY_PATH = "/api/security/system-key"
HISTORY_PATH = "/api/crypto/keys/rotate/history"


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
        auth: httpx.Auth | None = None,
        system_key: bool = False,
        rotations: bool = False,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.client_ids = list(client_ids)
        self.callback = callback
        self.interval = interval
        self.system_key, self.rotations = system_key, rotations
        self.auth = auth
        self._client = client or httpx.Client(timeout=timeout, headers=headers or {}, verify=verify, auth=auth)
        if client is not None and auth is not None:
            client.auth = auth
        self._own_client = client is None
        self.stats = {"rounds": 0, "answers": 0, "errors": 0, "refusals": 0}
        self.problem: str | None = None  # the current problem, None while answers come back

    def url_for(self, client_id: str) -> str:
        return f"{self.base_url}/api/crypto/keys/status/{quote(client_id, safe='')}"

    def poll_once(self) -> int:
        """One round over every key asked about; returns how many answers reached the callback."""
        handed = 0
        problems: list[str] = []
        asks = [(c, "GET", self.url_for(c), None) for c in self.client_ids]
        if self.system_key:
            asks.append((SYSTEM_KEY_ID, "GET", self.base_url + SYSTEM_KEY_PATH, None))
        for client_id, method, url, body in asks:
            got = self._fetch(client_id, method, url, body, problems)
            if got is None:
                continue
            answer, status = got
            if self.rotations and status == 200 and client_id != SYSTEM_KEY_ID:
                handed += self._history(answer, client_id, problems)  # first: it may name this change
            handed += self._hand(answer, client_id, status)
        self.stats["rounds"] += 1
        self._report(problems[0] if problems else None)
        return handed

    def _history(self, status_answer: dict[str, Any], client_id: str, problems: list[str]) -> int:
        data = status_answer.get("data")
        public = data.get("public_key") if isinstance(data, dict) else None
        if not isinstance(public, str):
            return 0
        got = self._fetch(client_id, "POST", self.base_url + HISTORY_PATH, {"public_key": public, "limit": 20},
                          problems)  # fmt: skip
        if got is None:
            if problems and problems[-1].startswith("HTTP 404 with no body"):  # mainline: no such route
                problems.pop()
                self.stats["errors"] -= 1
                self._no_history(404, None)
            return 0
        answer, status = got
        error = answer.get("error")
        if status in (404, 501) and not answer.get("success"):
            self._no_history(status, error.get("code") if isinstance(error, dict) else error)
            return 0
        return self._hand(answer, client_id, status)

    def _no_history(self, status: int, code: Any) -> None:
        self.rotations = False
        log.warning(
            "the DataFold node does not answer rotation history; not asked again",
            extra={"url": self.base_url, "status": status, "code": code},
        )

    def _hand(self, answer: dict[str, Any], client_id: str, status: int) -> int:
        try:
            self.callback(answer, client_id, status)
        except Exception:
            self.stats["errors"] += 1
            log.exception("key status callback failed", extra={"client_id": client_id})
            return 0
        self.stats["answers"] += 1
        return 1

    def _fetch(
        self, client_id: str, method: str, url: str, body: Any, problems: list[str]
    ) -> tuple[dict[str, Any], int] | None:
        """The node's JSON answer and its status, ``{"success": false, ...}`` ones included (a
        client the node no longer knows is news too); None, counted, when there is no usable answer."""
        try:
            response = self._client.request(method, url, json=body)
        except httpx.HTTPError as exc:
            return self._error(problems, f"{type(exc).__name__}: {exc}")
        refused = None
        if response.status_code >= 400:
            refused = getattr(self.auth, "refusal", None) if self.auth is not None else refusal_code(response)
        if refused is not None:
            self.stats["refusals"] += 1
            return self._error(problems, f"refused by the node's signature check: {refused}")
        if response.status_code >= 500 and response.status_code != 501:
            return self._error(problems, f"HTTP {response.status_code}")
        try:
            answer = orjson.loads(response.content)
        except orjson.JSONDecodeError:
            if response.status_code == 404 and not response.content:
                return self._error(problems, f"HTTP 404 with no body: the node has no {method} {httpx.URL(url).path}"
                                   " (mainline: poll with system_key; security/security2: with clients)")  # fmt: skip
            return self._error(problems, f"HTTP {response.status_code} with a body that is not JSON")
        if not isinstance(answer, dict) or "success" not in answer:
            return self._error(problems, f"HTTP {response.status_code} without the node's answer shape")
        return answer, response.status_code

    def _error(self, problems: list[str], problem: str) -> None:
        self.stats["errors"] += 1
        problems.append(problem)
        return None

    def _report(self, problem: str | None) -> None:
        """Log each change of problem once: a node that keeps failing is one line, not one per round."""
        if problem == self.problem:
            return
        if problem is None:
            log.info("key status polling works again", extra={"url": self.base_url})
        else:
            log.warning(f"key status poll failed: {problem}", extra={"url": self.base_url, "problem": problem})
        self.problem = problem

    def run(self, stop: threading.Event) -> None:
        """Poll until ``stop`` is set; the first round starts at once."""
        while not stop.is_set():
            self.poll_once()
            stop.wait(self.interval)

    def close(self) -> None:
        if self._own_client:
            self._client.close()
