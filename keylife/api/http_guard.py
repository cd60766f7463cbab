"""uvicorn's h11 protocol with the guards a public listener needs: connection cap, phase timeouts, TCP_NODELAY.

Why a protocol subclass: uvicorn's own keep-alive timer runs only after a response, so a client
that connects and sends nothing, or sends its headers a byte at a time (slowloris), or trickles
its body, held a file descriptor forever. Each connection here is always in one phase with one
deadline, counted from when that phase began (so a trickle cannot push it back):

* ``idle``: waiting for the first byte of a request (new or kept-alive connection): closed.
* ``header``: first byte received, headers incomplete: answered 408 and closed.
* ``body``: headers received, body incomplete: answered 408 (unless the app already answered) and closed.
* ``busy``: the request is complete and the application is answering: no deadline here.
* ``drain``: answered before the body was read (a 401, a 413): the rest is read and dropped, up to
  ``DRAIN_BYTES`` within ``DRAIN_SECONDS``, then the connection is closed. Closing at once with
  unread data would make the kernel send a reset, which can destroy the answer before the client
  reads it; draining a little keeps the answer readable and the connection reusable.

At ``max_connections`` the longest-waiting idle or header-phase connection makes room; when every
connection is busy the new one is answered 503 and closed, so descriptors stay bounded.
"""

from __future__ import annotations

import asyncio
import resource
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import h11
import orjson
from uvicorn.protocols.http.h11_impl import H11Protocol

from keylife.api.problems import PROBLEM_BASE

DEFAULT_MAX_CONNECTIONS = 1000
FD_RESERVE = 64  # descriptors kept for the journal, registry, forwarder and followers
DRAIN_BYTES = 1024 * 1024
DRAIN_SECONDS = 5.0


@dataclass(frozen=True)
class Guard:
    max_connections: int
    idle_timeout: float
    header_timeout: float
    body_timeout: float
    closed: Callable[[str], None] = lambda reason: None  # counts each connection closed by a guard, by reason


def listener_limits(configured: int | None) -> tuple[int, int]:
    """(connection cap, listen backlog) that fit under RLIMIT_NOFILE.

    asyncio accepts up to ``backlog`` connections in one go before any of them is seen by the
    protocol (which closes the extra ones), so the descriptors needed at worst are the process's
    own, the cap and one backlog. A configured cap is taken as given (past the limit, accept()
    fails with EMFILE: asyncio logs it and pauses accepting for a second).
    """
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        soft = 1 << 20
    backlog = min(2048, max(64, soft // 8))
    cap = max(8, min(DEFAULT_MAX_CONNECTIONS, soft - FD_RESERVE - backlog))
    return (configured if configured is not None else cap), backlog


def set_nodelay(sock: Any) -> None:
    """Small answers go out at once: without it, a response written in two parts waits for the
    client's delayed ACK (~40 ms) on every request after the first on a keep-alive connection."""
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def protocol_class(guard: Guard) -> type[GuardedH11Protocol]:
    """A protocol class bound to ``guard`` (uvicorn instantiates the class it is given)."""
    return type("KeylifeH11Protocol", (GuardedH11Protocol,), {"guard": guard})


def _raw_problem(status: int, reason: str, kind: str, title: str, detail: str, extra: str = "") -> bytes:
    body = orjson.dumps({"type": PROBLEM_BASE + kind, "title": title, "status": status, "detail": detail})
    head = (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/problem+json\r\nconnection: close\r\n"
        f"{extra}content-length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


class GuardedH11Protocol(H11Protocol):
    guard: ClassVar[Guard]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.phase = ""
        self.phase_since = 0.0
        self._deadline: asyncio.TimerHandle | None = None
        self._drained = 0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        set_nodelay(transport.get_extra_info("socket"))
        super().connection_made(transport)
        if len(self.connections) > self.guard.max_connections and not self._make_room():
            limit = self.guard.max_connections
            self._close(
                "refused",
                _raw_problem(
                    503, "Service Unavailable", "too-many-connections", "Too many connections",
                    f"the server holds its limit of {limit} connections, all busy; retry shortly",
                    "retry-after: 1\r\n",
                ),
            )  # fmt: skip
            return
        self._track()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.phase == "drain":
            self._drained += len(data)
            if self._drained > DRAIN_BYTES:
                self._close("unread_body")
                return
        super().data_received(data)
        self._track()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._track()

    def _make_room(self) -> bool:
        """Close the connection that has waited longest without a request under way; False if none."""
        waiting = [
            c
            for c in self.connections
            if c is not self and isinstance(c, GuardedH11Protocol) and c.phase in ("idle", "header")
        ]
        if not waiting:
            return False
        victim = min(waiting, key=lambda c: c.phase_since)
        victim._close("evicted")
        return True

    def _track(self) -> None:
        """Enter the phase the h11 state says we are in; a new phase starts its own deadline."""
        if self.transport is None or self.transport.is_closing():
            self._cancel()
            return
        state = self.conn.their_state
        if state is h11.IDLE:
            phase = "header" if self.conn.trailing_data[0] else "idle"
        elif state is h11.SEND_BODY:
            phase = "drain" if self.cycle is not None and self.cycle.response_complete else "body"
        else:
            phase = "busy"
        if phase == self.phase:
            return
        self._cancel()
        self.phase, self.phase_since = phase, self.loop.time()
        self._drained = 0
        timeout = {
            "idle": self.guard.idle_timeout,
            "header": self.guard.header_timeout,
            "body": self.guard.body_timeout,
            "drain": min(DRAIN_SECONDS, self.guard.body_timeout),
        }.get(phase)
        if timeout is not None:
            self._deadline = self.loop.call_later(timeout, self._expired, phase)

    def _cancel(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expired(self, phase: str) -> None:
        self._deadline = None
        if phase in ("idle", "drain"):
            self._close("idle_timeout" if phase == "idle" else "unread_body")
            return
        limit = self.guard.header_timeout if phase == "header" else self.guard.body_timeout
        answered = self.cycle is not None and self.cycle.response_started
        what = "headers" if phase == "header" else "body"
        detail = f"the request {what} did not arrive within {limit:g} s"
        self._close(
            f"{phase}_timeout",
            None if answered else _raw_problem(408, "Request Timeout", "request-timeout", "Request timeout", detail),
        )

    def _close(self, reason: str, answer: bytes | None = None) -> None:
        """Answer (if given) and close; the application, if running, sees a disconnect."""
        self._cancel()
        self.phase = "closed"
        if self.cycle is not None and not self.cycle.response_complete:
            self.cycle.disconnected = True  # its answer, if any comes, is dropped
            self.cycle.message_event.set()
        if answer is not None and not self.transport.is_closing():
            self.transport.write(answer)
        self.transport.close()
        self.guard.closed(reason)
