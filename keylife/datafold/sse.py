"""A client for a DataFold node's ``GET /api/logs/stream`` (server-sent events).

Parsing follows the WHATWG HTML standard, section "Server-sent events" (the event stream
interpretation): UTF-8 with an optional BOM, lines ending in CRLF, LF or CR, ``:`` comments,
``data`` lines joined with LF, ``id`` (ignored when it holds NUL) kept across events, ``retry``
in milliseconds when all digits, dispatch on a blank line, and an event cut off by the end of
the stream is discarded (so a dropped connection never hands out half an event).

Unlike a browser's EventSource, the client never gives up: a log source that stops for good
would be a silent audit gap, so every failure (connection refused, a non-200 answer, a wrong
content type, a stream that ends) reconnects after the ``retry`` delay, doubled per failure in
a row up to a cap, and sends ``Last-Event-ID`` so a node that keeps ids resumes where we were.
"""

from __future__ import annotations

import codecs
import contextlib
import logging
import queue
import random
import re
import socket
import threading
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson

from keylife.datafold.contract import Line
from keylife.datafold.follow import STATE_VERSION, load_state, save_state
from keylife.datafold.signing import refusal_code

log = logging.getLogger("keylife.datafold.sse")

_EOL = re.compile(r"\r\n|\r|\n")


@dataclass(frozen=True, slots=True)
class SseEvent:
    data: str
    event: str = "message"
    id: str = ""  # the last event ID at dispatch (it carries over events that set none)


class SseParser:
    """Incremental event-stream parser: feed decoded text in any chunks, get whole events."""

    def __init__(self, last_id: str = "") -> None:
        self._pending = ""
        self._skip_lf = False  # the previous chunk ended in CR: a leading LF belongs to it
        self._data: list[str] = []
        self._event = ""
        # The spec's "last event ID buffer" (set by an id field) and the source's "last event ID
        # string" (set from it at each dispatch, sent as Last-Event-ID). Only the second counts:
        # the id of an event cut off by a dropped connection must not be claimed as received.
        self._id_buffer = last_id
        self.last_id = last_id
        self.retry_ms: int | None = None

    def feed(self, text: str) -> list[SseEvent]:
        if not text:
            return []
        if self._skip_lf and text.startswith("\n"):
            text = text[1:]
        text = self._pending + text
        events: list[SseEvent] = []
        start = 0
        for match in _EOL.finditer(text):
            event = self._line(text[start : match.start()])
            if event is not None:
                events.append(event)
            start = match.end()
        self._skip_lf = start == len(text) and text.endswith("\r")
        self._pending = text[start:]
        return events

    def _line(self, line: str) -> SseEvent | None:
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            return None  # a comment: heartbeats keep proxies from closing an idle stream
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id":
            if "\0" not in value:
                self._id_buffer = value
        elif name == "retry" and value.isascii() and value.isdigit():
            self.retry_ms = int(value)
        return None

    def _dispatch(self) -> SseEvent | None:
        self.last_id = self._id_buffer  # even without data: "id: 9" alone moves the resume point
        data, event = self._data, self._event
        self._data, self._event = [], ""
        if not data:
            return None
        return SseEvent("\n".join(data), event or "message", self.last_id)

    def reset_stream(self) -> None:
        """The connection ended: an event without its blank line is dropped (its id too); the
        last dispatched id and the retry delay are kept."""
        self._pending, self._skip_lf, self._data, self._event = "", False, [], ""
        self._id_buffer = self.last_id


class SseClient:
    """Log lines of one node's stream, for as long as ``stop`` is not set."""

    def __init__(
        self,
        url: str,
        *,
        node: str | None = None,
        last_event_id: str = "",
        headers: dict[str, str] | None = None,
        client: httpx.Client | None = None,
        retry_seconds: float = 1.0,
        max_retry_seconds: float = 30.0,
        read_timeout: float = 90.0,
        stop: threading.Event | None = None,
        verify: Any = True,
        auth: httpx.Auth | None = None,
    ) -> None:
        self.url = url
        self.source = "sse:" + url
        self.node = node
        self.parser = SseParser(last_event_id)
        self.headers = headers or {}
        self.retry_seconds = retry_seconds
        self.max_retry_seconds = max_retry_seconds
        self.stop = stop or threading.Event()
        timeout = httpx.Timeout(10.0, read=read_timeout)
        self.auth = auth
        self._client = client or httpx.Client(timeout=timeout, verify=verify, auth=auth)
        if client is not None and auth is not None:
            client.auth = auth
        self._own_client = client is None
        self.problem: str | None = None  # why the stream is down now (logged once per change), None when up
        self._response: httpx.Response | None = None
        self._counter = 0
        self._connected = False
        self.stats = {"connects": 0, "failures": 0, "events": 0, "refusals": 0}

    def lines(self) -> Iterator[Line]:
        """Each ``message`` event's data as a Line; position counts events in this process."""
        for event in self.events():
            if event.event != "message":
                continue
            self._counter += 1
            yield Line(event.data, self.source, self._counter, self.node)

    def events(self) -> Iterator[SseEvent]:
        failures = 0
        while not self.stop.is_set():
            self._connected = False
            quiet = False
            lasting = False  # the node answered, but will answer the same until someone acts
            try:
                yield from self._connect_once()
                problem = "the stream ended"
            except httpx.ReadTimeout:
                problem, quiet = "nothing received within the read timeout", True
            except _Refused as exc:
                problem, lasting = str(exc), True
            except (httpx.HTTPError, _BadAnswer, OSError) as exc:
                problem = f"{type(exc).__name__}: {exc}"
            self.parser.reset_stream()
            if self.stop.is_set():
                return
            # A stream that was up (even if quiet) starts the backoff over: the next gap stays short.
            failures = 1 if self._connected else failures + 1
            self.stats["failures"] += 1
            retry = self.retry_seconds if self.parser.retry_ms is None else self.parser.retry_ms / 1000
            delay = self.max_retry_seconds if lasting else min(self.max_retry_seconds, retry * 2 ** (failures - 1))
            delay *= random.uniform(0.9, 1.1)  # a fleet of readers does not reconnect in step
            extra = {"url": self.url, "problem": problem, "delay": round(delay, 3), "last_event_id": self.last_id}
            if lasting:  # one line per change, not one per attempt
                if problem != self.problem:
                    log.error(
                        f"log stream unusable: {problem}; retrying every {self.max_retry_seconds:g}s", extra=extra
                    )
                self.problem = problem
            else:
                self.problem = None
                level = logging.INFO if quiet and self._connected else logging.WARNING
                log.log(level, "log stream interrupted; reconnecting", extra=extra)
            self.stop.wait(delay)

    @property
    def last_id(self) -> str:
        return self.parser.last_id

    def _connect_once(self) -> Iterator[SseEvent]:
        headers = {"Accept": "text/event-stream", "Cache-Control": "no-cache", **self.headers}
        if self.parser.last_id:
            headers["Last-Event-ID"] = self.parser.last_id
        with self._client.stream("GET", self.url, headers=headers) as response:
            self._response = response
            try:
                if response.status_code != 200:
                    self._refused(response)
                    raise _BadAnswer(f"HTTP {response.status_code}")
                kind = response.headers.get("content-type", "").split(";")[0].strip().lower()
                if kind != "text/event-stream":
                    raise _BadAnswer(f"content type {kind!r}, not text/event-stream")
                self.stats["connects"] += 1
                self._connected = True
                if self.problem is not None:
                    log.info("log stream usable again", extra={"url": self.url, "was": self.problem})
                    self.problem = None
                decoder = codecs.getincrementaldecoder("utf-8")("replace")
                first = True
                for chunk in response.iter_bytes():
                    text = decoder.decode(chunk)
                    if first and text:
                        text, first = text.removeprefix("\ufeff"), False
                    for event in self.parser.feed(text):
                        self.stats["events"] += 1
                        yield event
                    if self.stop.is_set():
                        return
            finally:
                self._response = None

    def _refused(self, response: httpx.Response) -> None:
        """Raise ``_Refused`` for answers that stay the same until someone acts: the signature
        middleware's refusal, and a node without a log stream (``security2``'s
        ``logging::subscribe()`` is always None, ``src/logging/mod.rs:143-146``, so
        ``routes/log_routes.rs:43-44`` answers 500 ``{"error": "Log streaming not available"}``;
        its ``/api/logs`` answers ``[]`` for the same reason, ``mod.rs:137-140``)."""
        code = getattr(self.auth, "refusal", None) or refusal_code(response)
        if code is not None:
            self.stats["refusals"] += 1
            hint = "" if self.auth is not None else " (this source does not sign: set sign to auto or always)"
            raise _Refused(f"HTTP {response.status_code} {code} from the node's signature check{hint}")
        if response.status_code == 500:
            try:
                body = orjson.loads(response.read()[:4096])
            except (orjson.JSONDecodeError, httpx.HTTPError):
                return
            if isinstance(body, dict) and body.get("error") == "Log streaming not available":
                raise _Refused(
                    "the node has no log stream: /api/logs/stream answers 500 'Log streaming not available' "
                    "(security2 never installs its web log output; read the node's log file instead)"
                )

    def close(self) -> None:
        """Stop: wake a read blocked on a quiet stream (shutting its socket down), then close."""
        self.stop.set()
        response = self._response
        if response is not None:
            stream = response.extensions.get("network_stream")
            sock = stream.get_extra_info("socket") if stream is not None else None
            if isinstance(sock, socket.socket):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def close_client(self) -> None:
        if self._own_client:
            self._client.close()


class _BadAnswer(Exception):
    """The server answered, but not with an event stream."""


class _Refused(_BadAnswer):
    """The server answered with a refusal or lack that retrying soon will not change."""


class SseSource:
    """An ``SseClient`` read on its own thread, as a runner ``Source``.

    The reading thread keeps the connection drained while the runner waits on its sink (a slow
    reader would make the node drop us); the bounded queue still pushes back when the sink is
    down for long. The persisted position is the event id of the last line done: a restart sends
    it as ``Last-Event-ID``, and a node that keeps ids resumes right after it.
    """

    def __init__(
        self,
        url: str,
        state_path: Path | None = None,
        *,
        node: str | None = None,
        stop: threading.Event | None = None,
        queue_size: int = 10_000,
        **client_options: Any,
    ) -> None:
        self.source = "sse:" + url
        self.url, self.node, self.state_path = url, node, state_path
        self.stop = stop or threading.Event()
        state = load_state(state_path)
        last_id = state.get("last_event_id", "") if state and state.get("url") == url else ""
        self.client = SseClient(url, node=node, last_event_id=last_id, stop=self.stop, **client_options)
        self._queue: queue.Queue[tuple[Line, str]] = queue.Queue(queue_size)
        self._ids: deque[tuple[int, str]] = deque()  # (position, event id) of lines handed out, not yet persisted
        self._saved_id = last_id
        self._counter = 0
        self._thread: threading.Thread | None = None

    def _pump(self) -> None:
        for event in self.client.events():
            if event.event != "message":
                continue  # the node's log lines are plain messages; other types are not ours
            self._counter += 1
            item = (Line(event.data, self.source, self._counter, self.node), event.id)
            while not self.stop.is_set():
                try:
                    self._queue.put(item, timeout=0.25)
                    break
                except queue.Full:
                    continue

    def read(self, max_lines: int, timeout: float) -> list[tuple[Line, int]] | None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._pump, name=f"datafold-sse {self.url}", daemon=True)
            self._thread.start()
        out: list[tuple[Line, int]] = []
        try:
            item = self._queue.get(timeout=timeout)
            while True:
                line, event_id = item
                self._ids.append((line.position, event_id))
                out.append((line, line.position + 1))
                if len(out) >= max_lines:
                    break
                item = self._queue.get_nowait()
        except queue.Empty:
            if not out and not self._thread.is_alive():
                return None
        return out

    @property
    def errors(self) -> int:
        return self.client.stats["failures"]

    @property
    def refusals(self) -> int:
        return self.client.stats["refusals"]

    @property
    def problem(self) -> str | None:
        return self.client.problem

    def persist(self, position: int) -> None:
        last = None
        while self._ids and self._ids[0][0] < position:
            last = self._ids.popleft()[1]
        if last is None or self.state_path is None or last == self._saved_id:
            return
        save_state(self.state_path, {"version": STATE_VERSION, "url": self.url, "last_event_id": last})
        self._saved_id = last

    def close(self) -> None:
        self.client.close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.client.close_client()
