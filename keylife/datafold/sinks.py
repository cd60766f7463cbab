"""Where the adapter's events go: a keylife server over HTTP, or the ledger of this process.

Both sinks are idempotent on event ids (a retried batch comes back as duplicates) and tell a
*transient* failure (raise ``SinkUnavailable``: retry later, keep the position) from a
*permanent* refusal (raise ``SinkRejected`` naming the events refused, by index, so the runner
drops those and sends the rest again: one bad event must not stall a log source for good).

An id conflict (an id already journaled for a different event) is permanent too, but keylife
writes nothing of a request that holds one, so the sinks resend the rest themselves and count
the conflicts: nobody can fix an old event, and the other events must not be lost for it.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import httpx
import orjson

from keylife.common.backoff import Backoff
from keylife.ingest.ledger import Ledger, LedgerStopped
from keylife.ingest.lines import parse_lines

log = logging.getLogger("keylife.datafold.sinks")


class SinkUnavailable(RuntimeError):
    """keylife could not take the events now (down, overloaded, stopping): try again later."""


class SinkRejected(RuntimeError):
    """keylife refused events for good; ``errors`` name them by ``index`` in the submitted list
    (empty when the whole request was refused, e.g. a bad token)."""

    def __init__(self, message: str, errors: list[dict[str, Any]] | None = None, status: int | None = None) -> None:
        super().__init__(message)
        self.errors = errors or []
        self.status = status

    @property
    def indexes(self) -> list[int]:
        return sorted({int(e["index"]) for e in self.errors if "index" in e})


def _stats() -> dict[str, int]:
    return {"accepted": 0, "duplicate": 0, "conflict": 0}


def _log_conflicts(ids: list[str]) -> None:
    log.error(
        "event ids already journaled for different events; these events are dropped",
        extra={"count": len(ids), "ids": ids[:20]},
    )


class HttpEventSink:
    """POST NDJSON to ``<url>/v1/events``; 429, 5xx and connection errors are retried with
    backoff (Retry-After honoured) for up to ``retry_seconds``, then ``SinkUnavailable``."""

    def __init__(
        self,
        url: str,
        token: str,
        *,
        client: httpx.Client | None = None,
        timeout: float = 60.0,
        retry_seconds: float = 60.0,
        max_batch_lines: int = 1000,
        max_batch_bytes: int = 4 * 1024 * 1024,  # half the server's default body limit
        backoff: Backoff | None = None,
        stop: threading.Event | None = None,
        verify: Any = True,
    ) -> None:
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/x-ndjson"}
        self._client = client or httpx.Client(timeout=timeout, verify=verify)
        self._own_client = client is None
        self.url = url.rstrip("/") + "/v1/events"
        self.headers = headers
        self.retry_seconds = retry_seconds
        self.max_batch_lines = max_batch_lines
        self.max_batch_bytes = max_batch_bytes
        self.backoff = backoff or Backoff(0.2, 10.0)
        self.stop = stop or threading.Event()
        self.stats = _stats()

    def submit(self, events: list[dict[str, Any]]) -> None:
        lines = [orjson.dumps(event) for event in events]
        start = 0
        while start < len(lines):
            end, size = start, 0
            while end < len(lines) and end - start < self.max_batch_lines:
                if end > start and size + len(lines[end]) + 1 > self.max_batch_bytes:
                    break
                size += len(lines[end]) + 1
                end += 1
            self._post(lines[start:end], list(range(start, end)))
            start = end

    def _post(self, lines: list[bytes], indexes: list[int]) -> None:
        deadline = time.monotonic() + self.retry_seconds
        self.backoff.reset()
        while True:
            retry_after = None
            try:
                response = self._client.post(self.url, content=b"\n".join(lines), headers=self.headers)
            except httpx.TransportError as exc:
                problem = f"{type(exc).__name__}: {exc}"
            else:
                if response.status_code == 200:
                    answer = orjson.loads(response.content)
                    self.stats["accepted"] += answer["accepted"]
                    self.stats["duplicate"] += answer["duplicate"]
                    return
                body = _json(response)
                if response.status_code == 409 and body.get("results"):
                    self._resend_without_conflicts(lines, indexes, body["results"])
                    return
                if response.status_code != 429 and response.status_code < 500:
                    errors = [
                        {**e, "index": indexes[e["line"] - 1]}
                        for e in body.get("errors", [])
                        if isinstance(e.get("line"), int) and 0 < e["line"] <= len(indexes)
                    ]
                    detail = body.get("detail") or response.text[:500]
                    raise SinkRejected(f"HTTP {response.status_code}: {detail}", errors, response.status_code)
                problem = f"HTTP {response.status_code}"
                retry_after = _retry_after(response)
            delay = self.backoff.next_delay(retry_after)
            if time.monotonic() + delay > deadline or self.stop.is_set():
                raise SinkUnavailable(f"{self.url}: {problem}")
            log.info("keylife did not take the batch; retrying", extra={"problem": problem, "delay": round(delay, 3)})
            if self.stop.wait(delay):
                raise SinkUnavailable(f"{self.url}: {problem} (stopping)")

    def _resend_without_conflicts(self, lines: list[bytes], indexes: list[int], results: list[dict[str, Any]]) -> None:
        conflicts = {r["line"] - 1 for r in results if r.get("status") == "conflict"}
        if not conflicts:  # a 409 that names no conflicting line: nothing safe to drop
            raise SinkRejected("HTTP 409 without a conflicting line", status=409)
        self.stats["conflict"] += len(conflicts)
        _log_conflicts([r["id"] for r in results if r.get("status") == "conflict"])
        keep = [i for i in range(len(lines)) if i not in conflicts]
        if keep:
            self._post([lines[i] for i in keep], [indexes[i] for i in keep])

    def close(self) -> None:
        if self._own_client:
            self._client.close()


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        body = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        return {}
    return body if isinstance(body, dict) else {}


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after", "")
    try:
        return float(value)
    except ValueError:
        return None


class LedgerEventSink:
    """Submit to the ledger of this process (``keylife serve``), validated exactly as the HTTP
    ingest validates (the same ``parse_lines``: schema, producer-only types, clock skew)."""

    def __init__(self, ledger: Ledger, timeout: float = 60.0) -> None:
        self.ledger = ledger
        self.timeout = timeout
        self.stats = _stats()

    def submit(self, events: list[dict[str, Any]]) -> None:
        if not events:
            return
        parsed, errors = parse_lines([(n, orjson.dumps(event)) for n, event in enumerate(events, start=1)])
        if errors:
            raise SinkRejected(
                f"{len({e.line for e in errors})} of {len(events)} events are not valid",
                [{**e.as_dict(), "index": e.line - 1} for e in errors],
            )
        while parsed:
            try:
                outcomes = self.ledger.submit(parsed).result(self.timeout)
            except (LedgerStopped, TimeoutError) as exc:
                raise SinkUnavailable(f"ledger: {type(exc).__name__}: {exc}") from exc
            conflicts = {i for i, o in enumerate(outcomes) if o.status == "conflict"}
            if not conflicts:
                accepted = sum(o.status == "accepted" for o in outcomes)
                self.stats["accepted"] += accepted
                self.stats["duplicate"] += len(outcomes) - accepted
                return
            self.stats["conflict"] += len(conflicts)
            _log_conflicts([outcomes[i].id for i in sorted(conflicts)])
            parsed = [event for i, event in enumerate(parsed) if i not in conflicts]
