"""An in-test Splunk HTTP Event Collector (HEC) on 127.0.0.1 (port 0) that records the events it accepts.

Protocol followed (Splunk Enterprise "Getting Data In" manual):

- "Format events for HTTP Event Collector": ``POST /services/collector/event`` (and ``/services/collector``)
  with ``Authorization: Splunk <token>``; the body is one JSON event object or several *concatenated*
  (whitespace between them allowed, no array); each needs an ``event`` key; ``fields`` holds indexed
  fields, a flat object whose values are strings or arrays of strings. ``Content-Encoding: gzip`` allowed.
- "Troubleshoot HTTP Event Collector", the status code table. Bodies are ``{"text": ..., "code": N}``
  plus ``"invalid-event-number": i`` (0-based) when one event of the batch is at fault:
  0 200 Success; 1 403 Token disabled; 2 401 Token is required; 3 401 Invalid authorization;
  4 403 Invalid token; 5 400 No data; 6 400 Invalid data format; 8 500 Internal server error;
  9 503 Server is busy; 10 400 Data channel is missing; 11 400 Invalid data channel;
  12 400 Event field is required; 13 400 Event field cannot be blank; 14 400 ACK is disabled;
  15 400 Error in handling indexed fields; 17 200 HEC is healthy (``GET /services/collector/health``).
- "About HTTP Event Collector Indexer Acknowledgment": with acknowledgement on, each request names a
  channel (a GUID, in ``X-Splunk-Request-Channel`` or ``?channel=``); success answers
  ``{"text":"Success","code":0,"ackId":N}`` with ack ids counted per channel from 0;
  ``POST /services/collector/ack?channel=<guid>`` with ``{"acks":[N,...]}`` answers
  ``{"acks":{"N":true|false}}``; an id reported true is released (asked again, it reads false).
  Here an ack turns true ``ack_delay`` seconds after its request was accepted.

Choices where the pages are silent (documented so tests can rely on them):

- A batch with a bad event: the events *before* it are kept (``keep_prefix_on_error``), as HEC parses the
  body as a stream; so a client that resends them makes duplicates, never losses.
- Only the ``Splunk <token>`` scheme is accepted (no Basic, no query-string token).
- An unknown path answers 404 ``{"text":"The requested URL was not found on this server.","code":404}``;
  a body over ``max_content_length`` answers 413 in plain text, as splunkd's HTTP layer does.

Scripted faults: ``fail_next(status, count, retry_after=None)`` answers the next ``count`` event
requests with ``status`` (Splunk's body for it when the table has one) and an optional ``Retry-After``.
"""

from __future__ import annotations

import gzip
import json
import ssl
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

EVENT_PATHS = frozenset({"/services/collector/event", "/services/collector", "/services/collector/event/1.0"})
ACK_PATH = "/services/collector/ack"
HEALTH_PATH = "/services/collector/health"
_FAULT_BODIES = {
    400: (6, "Invalid data format"),
    401: (3, "Invalid authorization"),
    403: (4, "Invalid token"),
    500: (8, "Internal server error"),
    503: (9, "Server is busy"),
}


class HecError(Exception):
    def __init__(self, status: int, code: int, text: str, event_number: int | None = None) -> None:
        super().__init__(text)
        self.status, self.code, self.text, self.event_number = status, code, text, event_number

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"text": self.text, "code": self.code}
        if self.event_number is not None:
            body["invalid-event-number"] = self.event_number
        return body


class SplunkHec:
    """The collector's state; ``url`` is the base (``http(s)://127.0.0.1:PORT``), as a client is configured."""

    def __init__(self, token: str, *, ack: bool = False, ack_delay: float = 0.0) -> None:
        self.token = token
        self.token_disabled = False
        self.ack = ack
        self.ack_delay = ack_delay
        self.keep_prefix_on_error = True
        self.max_content_length = 800 * 1024 * 1024  # splunkd's default [http_input] max_content_length
        self.url = ""
        self.events: list[dict[str, Any]] = []  # accepted event objects, in arrival order
        self.requests: list[dict[str, Any]] = []  # every request: path, headers (lower-case), body bytes
        self.answers: list[tuple[int, bytes]] = []  # every answer to an event request: status, body
        self._faults: list[tuple[int, float | None]] = []
        self._acks: dict[str, dict[int, float]] = {}  # channel -> ack id -> when it turns true
        self._next_ack: dict[str, int] = {}
        self._cond = threading.Condition()

    # ----- test controls ---------------------------------------------------------------------------
    def fail_next(self, status: int, count: int = 1, retry_after: float | None = None) -> None:
        with self._cond:
            self._faults += [(status, retry_after)] * count

    def wait_for(self, count: int, timeout: float = 10.0) -> list[dict[str, Any]]:
        """Block until ``count`` events were accepted; the events so far (AssertionError on timeout)."""
        with self._cond:
            if not self._cond.wait_for(lambda: len(self.events) >= count, timeout):
                raise AssertionError(f"{len(self.events)} HEC events accepted, waited for {count}")
            return list(self.events)

    # ----- protocol ---------------------------------------------------------------------------------
    def _authorise(self, headers: dict[str, str]) -> None:
        value = headers.get("authorization")
        if not value:
            raise HecError(401, 2, "Token is required")
        scheme, _, token = value.partition(" ")
        if scheme != "Splunk" or not token.strip():
            raise HecError(401, 3, "Invalid authorization")
        if token.strip() != self.token:
            raise HecError(403, 4, "Invalid token")
        if self.token_disabled:
            raise HecError(403, 1, "Token disabled")

    def _channel(self, headers: dict[str, str], query: dict[str, list[str]]) -> str | None:
        channel = headers.get("x-splunk-request-channel") or (query.get("channel") or [None])[0]
        if not self.ack:
            return channel
        if not channel:
            raise HecError(400, 10, "Data channel is missing")
        try:
            uuid.UUID(channel)
        except ValueError:
            raise HecError(400, 11, "Invalid data channel") from None
        return channel.lower()

    def handle_event(self, headers: dict[str, str], query: dict[str, list[str]], body: bytes) -> dict[str, Any]:
        with self._cond:
            if self._faults:
                status, retry_after = self._faults.pop(0)
                raise _Fault(status, retry_after)
        self._authorise(headers)
        channel = self._channel(headers, query)
        events = parse_events(body.decode("utf-8", errors="replace"))
        accepted: list[dict[str, Any]] = []
        failure: HecError | None = None
        for number, event in enumerate(events):
            if isinstance(event, HecError):
                failure = event
                break
            problem = check_event(event, number)
            if problem is not None:
                failure = problem
                break
            accepted.append(event)
        if failure is not None and not self.keep_prefix_on_error:
            accepted = []
        with self._cond:
            self.events += accepted
            self._cond.notify_all()
            if failure is not None:
                raise failure
            if not accepted:
                raise HecError(400, 5, "No data")
            if not self.ack or channel is None:
                return {"text": "Success", "code": 0}
            ack_id = self._next_ack.get(channel, 0)
            self._next_ack[channel] = ack_id + 1
            self._acks.setdefault(channel, {})[ack_id] = time.monotonic() + self.ack_delay
            return {"text": "Success", "code": 0, "ackId": ack_id}

    def handle_ack(self, headers: dict[str, str], query: dict[str, list[str]], body: bytes) -> dict[str, Any]:
        self._authorise(headers)
        if not self.ack:
            raise HecError(400, 14, "ACK is disabled")
        channel = self._channel(headers, query)
        try:
            wanted = json.loads(body)["acks"]
            if not isinstance(wanted, list) or not all(isinstance(i, int) for i in wanted):
                raise ValueError
        except (ValueError, KeyError, TypeError):
            raise HecError(400, 6, "Invalid data format") from None
        now = time.monotonic()
        with self._cond:
            pending = self._acks.get(channel or "", {})
            answer = {}
            for ack_id in wanted:
                ready = ack_id in pending and pending[ack_id] <= now
                if ready:
                    del pending[ack_id]  # released once reported true
                answer[str(ack_id)] = ready
        return {"acks": answer}


class _Fault(Exception):
    def __init__(self, status: int, retry_after: float | None) -> None:
        super().__init__(status)
        self.status, self.retry_after = status, retry_after


def parse_events(text: str) -> list[dict[str, Any] | HecError]:
    """The event objects of a body, in order; a piece that is not a JSON object ends the list as a HecError."""
    decoder = json.JSONDecoder()
    events: list[dict[str, Any] | HecError] = []
    index = 0
    while True:
        while index < len(text) and text[index].isspace():
            index += 1
        if index >= len(text):
            return events
        try:
            value, index = decoder.raw_decode(text, index)
        except (json.JSONDecodeError, RecursionError):
            value = None
        if not isinstance(value, dict):
            return [*events, HecError(400, 6, "Invalid data format", len(events))]
        events.append(value)


def check_event(event: dict[str, Any], number: int) -> HecError | None:
    if "event" not in event:
        return HecError(400, 12, "Event field is required", number)
    value = event["event"]
    if value is None or (isinstance(value, str) and not value.strip()):
        return HecError(400, 13, "Event field cannot be blank", number)
    fields = event.get("fields")
    if fields is not None:
        flat = isinstance(fields, dict) and all(
            isinstance(v, str) or (isinstance(v, list) and all(isinstance(i, str) for i in v)) for v in fields.values()
        )
        if not flat:
            return HecError(400, 15, "Error in handling indexed fields", number)
    return None


def _handler(hec: SplunkHec) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as splunkd

        def do_GET(self) -> None:  # the http.server method name
            if urlsplit(self.path).path == HEALTH_PATH:
                return self._json(200, {"text": "HEC is healthy", "code": 17})
            self._json(404, {"text": "The requested URL was not found on this server.", "code": 404})

        def do_POST(self) -> None:  # the http.server method name
            length = int(self.headers.get("Content-Length") or 0)
            if length > hec.max_content_length:
                self.close_connection = True
                text = f"Content-Length of {length} too large (maximum is {hec.max_content_length})"
                return self._answer(413, text.encode(), "text/plain", {})
            body = self.rfile.read(length)
            headers = {k.lower(): v for k, v in self.headers.items()}
            parts = urlsplit(self.path)
            with hec._cond:
                hec.requests.append({"path": parts.path, "headers": headers, "body": body})
            if headers.get("content-encoding", "").lower() == "gzip":
                body = gzip.decompress(body)
            query = parse_qs(parts.query)
            try:
                if parts.path in EVENT_PATHS:
                    return self._json(200, hec.handle_event(headers, query, body), record=True)
                if parts.path == ACK_PATH:
                    return self._json(200, hec.handle_ack(headers, query, body))
                self._json(404, {"text": "The requested URL was not found on this server.", "code": 404})
            except HecError as error:
                self._json(error.status, error.body(), record=parts.path in EVENT_PATHS)
            except _Fault as fault:
                extra = {} if fault.retry_after is None else {"Retry-After": f"{fault.retry_after:g}"}
                if fault.status in _FAULT_BODIES:
                    code, text = _FAULT_BODIES[fault.status]
                    return self._json(fault.status, {"text": text, "code": code}, extra, record=True)
                self._answer(fault.status, self.responses.get(fault.status, ("",))[0].encode(), "text/plain", extra)

        def _json(self, status: int, body: dict, extra: dict | None = None, *, record: bool = False) -> None:
            data = json.dumps(body, separators=(",", ":")).encode()
            if record:
                with hec._cond:
                    hec.answers.append((status, data))
            self._answer(status, data, "application/json; charset=UTF-8", extra or {})

        def _answer(self, status: int, body: bytes, content_type: str, extra: dict[str, str]) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            for name, value in extra.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:  # quiet test output
            pass

    return Handler


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    tls: ssl.SSLContext | None = None

    def finish_request(self, request: Any, client_address: Any) -> None:
        if self.tls is not None:  # the handshake runs in the request's thread, not the accept loop
            try:
                request = self.tls.wrap_socket(request, server_side=True)
            except (ssl.SSLError, OSError):
                return
        super().finish_request(request, client_address)

    def handle_error(self, request: Any, client_address: Any) -> None:  # quiet: clients hang up mid-request
        pass


@contextmanager
def splunk_hec(
    token: str = "00000000-0000-4000-8000-00000000c0de",
    *,
    ack: bool = False,
    ack_delay: float = 0.0,
    tls: tuple[Path, Path] | None = None,
) -> Iterator[SplunkHec]:
    """A running collector; ``tls=(cert, key)`` serves HTTPS."""
    hec = SplunkHec(token, ack=ack, ack_delay=ack_delay)
    server = _Server(("127.0.0.1", 0), _handler(hec))
    scheme = "http"
    if tls is not None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(str(tls[0]), str(tls[1]))
        server.tls, scheme = context, "https"
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), name="splunk-hec", daemon=True)
    thread.start()
    hec.url = f"{scheme}://127.0.0.1:{server.server_address[1]}"
    try:
        yield hec
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
