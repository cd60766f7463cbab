"""Syslog sink: RFC 5424 messages over TCP (RFC 6587) or TLS (RFC 5425), octet-counting framed.

What "acknowledged" means here. Syslog over TCP and TLS has no application acknowledgement: a
receiver never answers. The strongest honest signal is the peer's TCP stack: after ``sendall``
of a batch, ``send`` polls the kernel's send queue (``ioctl(TIOCOUTQ)``, on Linux the bytes not
yet ACKed by the peer, unsent ones included) until it is empty, and checks that the peer has said
nothing meanwhile (a syslog receiver never sends, so a readable socket means EOF, a reset or a
TLS alert). Only then does ``send`` return. That proves every byte of the batch reached the
receiving host's kernel; it does not prove the receiver parsed, queued or stored it: a receiver
that crashes with the batch in its socket buffer or its in-memory queue loses it, and we have
already moved on. RELP (rsyslog's Reliable Event Logging Protocol, ``imrelp``) acknowledges each
message after the receiver took it into its queue and would be stronger; plain syslog is what
SIEMs accept everywhere. Any failure closes the connection and raises ``Retryable`` (reason
``connect``, ``timeout``, ``tls`` or ``protocol``); the shipper resends the whole batch on a new
connection, so an unacknowledged batch may arrive twice, but nothing acknowledged is lost.
Linux only (``TIOCOUTQ`` on a TCP socket).

Mutual TLS refused. With TLS 1.3 the client's handshake completes before the server has looked
at the client's certificate, and rsyslog checks the peer's certificate only after the handshake
under any TLS version, so a server that refuses us does it *after* ``connect`` by closing the
connection or sending an alert. A new TLS connection therefore waits ``tls_settle_seconds``
(0.25 s) for such an answer before its first byte of data; the post-send check catches a later
one. Either way nothing is reported delivered: an alert, or an EOF on a TLS connection that has
not yet had a batch acknowledged, is ``Retryable("tls")`` naming the server's refusal.

Formats. ``rfc5424``: ``syslog5424.format_message`` (structured data + BOM + canonical JSON).
``cef`` and ``leef``: the CEF / LEEF record is the MSG of an RFC 5424 message, which is how
ArcSight and QRadar take them over syslog (their formatters emit no syslog header). That MSG
has no BOM (it is MSG-ANY: parsers look for ``CEF:`` / ``LEEF:`` at its first byte) and the
STRUCTURED-DATA is ``-`` (the record itself carries seq, chain hash and checkpoint). LEEF's
default delimiter is a tab, which relays that escape control characters (rsyslog's default)
turn into ``#011``; set ``leef_delimiter`` (e.g. ``^``) when such a relay is in the path.
``ecs``: the ECS document (``formats/ecs.py``) as MSG after a BOM, STRUCTURED-DATA ``-``, for
an Elastic Agent or Logstash syslog input that decodes JSON messages.

Size. ``max_message_bytes`` (8192 by default) bounds one message, framing excluded; ``prepare``
refuses a longer one (``too_large``, to quarantine). 8192 is rsyslog's default
``maxMessageSize`` and what RFC 5425 says receivers SHOULD take (they MUST take 2048). A longer
message is not refused by rsyslog but truncated, and the rest of its frame is then read as a
separate bogus message: silent corruption. Raise it only with the receiver's limit.

The connection is made lazily by ``send``, kept open between batches and dropped on any
failure; the next ``send`` reconnects. A kept connection that the receiver closed while idle is
noticed before sending and replaced at once.
"""

from __future__ import annotations

import errno
import fcntl
import select
import socket
import ssl
import struct
import termios
import time
from collections.abc import Callable
from typing import Literal

from pydantic import Field, field_validator

from audit_forwarder.formats import cef, ecs, leef, product_version, syslog5424
from audit_forwarder.shipper.contract import Prepared, Record, Refused, Retryable
from audit_forwarder.shipper.settings import SinkSettings, TlsClientSettings

DEFAULT_MAX_MESSAGE_BYTES = 8192
_ACK_POLL_FIRST = 0.0002  # seconds; the poll interval doubles up to _ACK_POLL_MAX
_ACK_POLL_MAX = 0.01
_OUTQ = struct.Struct("i")


class SyslogSinkConfig(SinkSettings):
    """One syslog destination (``type: syslog`` in ``forwarder.sinks``)."""

    type: Literal["syslog"]
    host: str = Field(min_length=1)
    port: int = Field(ge=1, le=65535)  # 6514 is RFC 5425's port for TLS, 601/514 usual for TCP
    transport: Literal["tcp", "tls"] = "tls"
    tls: TlsClientSettings = TlsClientSettings()  # verification always on; mTLS with cert_file/key_file
    format: Literal["rfc5424", "cef", "leef", "ecs"] = "rfc5424"
    hostname: str = Field(default_factory=socket.gethostname)  # HOSTNAME field, CEF dvchost
    app_name: str = "keylife"
    facility: int = Field(syslog5424.FACILITY_AUTHPRIV, ge=0, le=23)
    pen: str = syslog5424.EXAMPLE_PEN  # IANA private enterprise number of the SD-ID keylife@PEN
    leef_delimiter: str = "\t"
    max_message_bytes: int = Field(DEFAULT_MAX_MESSAGE_BYTES, ge=480, le=16 * 1024 * 1024)
    tls_settle_seconds: float = Field(0.25, ge=0, le=10)  # wait for a post-handshake refusal

    @field_validator("pen")
    @classmethod
    def _pen(cls, value: str) -> str:
        syslog5424.sd_id(value)  # raises ValueError on a malformed PEN
        return value

    @field_validator("leef_delimiter")
    @classmethod
    def _delimiter(cls, value: str) -> str:
        leef.delimiter_field(value)
        return value


def _unacked_bytes(sock: socket.socket) -> int:
    """Bytes in the kernel's send queue: not yet sent, or sent but not ACKed by the peer."""
    return _OUTQ.unpack(fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0" * _OUTQ.size))[0]


class SyslogSink:
    """Ships records as octet-counted syslog messages over one kept TCP or TLS connection."""

    def __init__(self, config: SyslogSinkConfig) -> None:
        self.name = config.name
        self.config = config
        self._context: ssl.SSLContext | None = config.tls.context() if config.transport == "tls" else None
        self._sock: socket.socket | None = None
        self._acknowledged = False  # has this connection had a batch acknowledged yet?
        # looked up once: importlib.metadata reads the package metadata from disk on every call
        self._version = product_version()
        self._render: Callable[[Record], bytes] = {
            "rfc5424": self._rfc5424,
            "cef": self._cef,
            "leef": self._leef,
            "ecs": self._ecs,
        }[config.format]

    # -- formatting (pure) -------------------------------------------------------------------

    def _rfc5424(self, record: Record) -> bytes:
        c = self.config
        return syslog5424.format_message(
            record.entry,
            hostname=c.hostname,
            app_name=c.app_name,
            facility=c.facility,
            checkpoint=record.checkpoint,
            pen=c.pen,
            event_json=record.event_json,
        )

    def _header(self, record: Record) -> bytes:
        c = self.config
        return syslog5424.header(record.entry, hostname=c.hostname, app_name=c.app_name, facility=c.facility).encode()

    def _cef(self, record: Record) -> bytes:
        body = cef.format_event(
            record.entry, hostname=self.config.hostname, checkpoint=record.checkpoint, device_version=self._version
        )
        return self._header(record) + body

    def _leef(self, record: Record) -> bytes:
        c = self.config
        body = leef.format_event(
            record.entry,
            hostname=c.hostname,
            checkpoint=record.checkpoint,
            delimiter=c.leef_delimiter,
            device_version=self._version,
        )
        return self._header(record) + body

    def _ecs(self, record: Record) -> bytes:
        """An ECS document as MSG (BOM + JSON), for an Elastic Agent or Logstash syslog input."""
        document = ecs.format_document(record.entry, checkpoint=record.checkpoint, hostname=self.config.hostname)
        return self._header(record) + syslog5424.BOM + document

    def prepare(self, record: Record) -> Prepared:
        """The framed message (``MSG-LEN SP SYSLOG-MSG``), or ``Refused("too_large")``."""
        message = self._render(record)
        if len(message) > self.config.max_message_bytes:
            raise Refused(
                "too_large",
                f"seq {record.seq}: a {len(message)}-byte syslog message is over max_message_bytes "
                f"({self.config.max_message_bytes}); receivers truncate longer ones",
            )
        framed = syslog5424.frame_octet_counting(message)
        return Prepared(record, framed, len(framed))

    # -- delivery ----------------------------------------------------------------------------

    def send(self, batch: list[Prepared]) -> None:
        """Write the batch and return once the peer's TCP stack ACKed every byte (module docstring)."""
        if not batch:
            return
        data = b"".join(prepared.payload for prepared in batch)
        sock = self._connection()
        try:
            sock.sendall(data)
            self._await_ack(sock)
        except OSError as exc:  # ssl.SSLError and TimeoutError included
            self._drop()
            raise self._failure(exc, "sending") from exc
        except BaseException:  # Retryable, or an interrupt: a half-sent frame must never be continued
            self._drop()
            raise
        self._acknowledged = True

    def close(self) -> None:
        """Close the kept connection; over TLS say close_notify first so the receiver logs a clean end."""
        sock, self._sock = self._sock, None
        if isinstance(sock, ssl.SSLSocket):
            try:
                sock.settimeout(0.1)
                sock.unwrap()  # the same socket object; waits at most 0.1 s for the peer's close_notify
            except (OSError, ValueError):
                pass
        if sock is not None:
            sock.close()

    def _drop(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()

    def _connection(self) -> socket.socket:
        """The kept connection if the peer has not closed it meanwhile, else a new one."""
        if self._sock is not None:
            try:
                self._check_quiet(self._sock, 0, "before sending")
                return self._sock
            except Retryable:
                self._drop()  # closed while idle (receiver restarted): nothing of ours was lost
        self._acknowledged = False
        c = self.config
        where = f"{c.host}:{c.port}"
        try:
            raw = socket.create_connection((c.host, c.port), timeout=c.timeout_seconds)
        except TimeoutError as exc:
            raise Retryable("timeout", f"connecting to {where}: no answer within {c.timeout_seconds}s") from exc
        except OSError as exc:
            raise Retryable("connect", f"connecting to {where}: {exc.strerror or exc}") from exc
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # no Nagle delay on a batch's last segment
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        sock: socket.socket = raw
        if self._context is not None:
            try:
                sock = self._context.wrap_socket(raw, server_hostname=c.tls.server_name or c.host)
                self._check_quiet(sock, c.tls_settle_seconds, "after the TLS handshake")
            except OSError as exc:
                sock.close()
                raise self._failure(exc, "TLS handshake") from exc
            except BaseException:
                sock.close()
                raise
        self._sock = sock
        return sock

    def _await_ack(self, sock: socket.socket) -> None:
        """Poll until the send queue is empty, failing as soon as the peer says anything."""
        timeout = self.config.timeout_seconds
        deadline = time.monotonic() + timeout
        delay = _ACK_POLL_FIRST
        while True:
            queued = _unacked_bytes(sock)
            if queued == 0:
                self._check_quiet(sock, 0, "waiting for the acknowledgement")
                return
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise Retryable("timeout", f"{queued} bytes not acknowledged by the receiver's TCP within {timeout}s")
            self._check_quiet(sock, min(delay, remaining), "waiting for the acknowledgement")
            delay = min(delay * 2, _ACK_POLL_MAX)

    def _check_quiet(self, sock: socket.socket, wait: float, doing: str) -> None:
        """Return if the peer stays silent for ``wait`` seconds (or answers only with TLS
        handshake messages such as session tickets); raise ``Retryable`` on EOF, reset, alert or data."""
        deadline = time.monotonic() + wait
        while True:
            pending = isinstance(sock, ssl.SSLSocket) and sock.pending() > 0
            readable = pending or bool(select.select([sock], [], [], max(0.0, deadline - time.monotonic()))[0])
            if readable:
                self._inspect(sock, doing)
            if not readable or time.monotonic() >= deadline:
                return

    def _inspect(self, sock: socket.socket, doing: str) -> None:
        """Read what made the socket readable without blocking; raise unless it was TLS housekeeping."""
        tls = isinstance(sock, ssl.SSLSocket)
        try:
            if tls:
                sock.setblocking(False)
                try:
                    data = sock.recv(1)
                finally:
                    sock.settimeout(self.config.timeout_seconds)
            else:
                data = sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
        except (ssl.SSLWantReadError, BlockingIOError):
            return
        except ssl.SSLZeroReturnError as exc:
            raise self._closed() from exc
        except (ssl.SSLError, OSError) as exc:
            raise self._failure(exc, doing) from exc
        if not data:
            raise self._closed()
        raise Retryable("protocol", f"the syslog receiver {self._where()} sent data; receivers never send")

    def _closed(self) -> Retryable:
        """The peer ended the connection: over TLS before any acknowledgement, that is its refusal."""
        if self._context is not None and not self._acknowledged:
            return Retryable(
                "tls",
                f"the server {self._where()} closed the TLS connection before acknowledging anything on it: "
                "it refused this client (mutual TLS: no client certificate, or one it does not trust or permit)",
            )
        return Retryable("connect", f"the receiver {self._where()} closed the connection")

    def _failure(self, exc: OSError, doing: str) -> Retryable:
        """Map an exception from the socket or TLS layer to a bounded ``Retryable`` reason."""
        where = self._where()
        if isinstance(exc, ssl.SSLEOFError | ssl.SSLZeroReturnError):
            return self._closed()
        if isinstance(exc, ssl.SSLCertVerificationError):
            return Retryable("tls", f"{doing} with {where}: server certificate refused: {exc.verify_message}")
        if isinstance(exc, ssl.SSLError):
            detail = exc.reason or str(exc)
            if "ALERT" in str(detail).upper():
                return Retryable("tls", f"{doing} with {where}: the server refused us with TLS alert {detail}")
            return Retryable("tls", f"{doing} with {where}: TLS error {detail}")
        if isinstance(exc, TimeoutError):
            return Retryable("timeout", f"{doing} with {where}: no progress within {self.config.timeout_seconds}s")
        if exc.errno in (errno.ECONNRESET, errno.EPIPE):
            return self._closed()
        return Retryable("connect", f"{doing} with {where}: {exc.strerror or exc}")

    def _where(self) -> str:
        return f"{self.config.host}:{self.config.port}"


def build(config: SyslogSinkConfig) -> SyslogSink:
    """The sink for one ``type: syslog`` entry of the configuration."""
    return SyslogSink(config)
