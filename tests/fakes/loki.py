"""An in-test Loki push endpoint on 127.0.0.1 (port 0) that records every request and accepted entry.

Spec followed: Loki's HTTP API docs for ``POST /loki/api/v1/push``, ``pkg/push/push.proto``, the
request parser ``pkg/loghttp/push/push.go`` (``ParseLokiRequest``), the distributor's handler and
validation (``pkg/distributor/http.go``, ``distributor.go``, ``validator.go``) and the messages and
default limits of ``pkg/validation`` (``validate.go``, ``limits.go``):

- Body: ``application/json`` (v1 push JSON, ``values`` of ``[ns, line]`` or ``[ns, line, {metadata}]``)
  or ``application/x-protobuf`` (a ``PushRequest`` in snappy *block* format). ``Content-Encoding`` may
  be empty, ``snappy`` (ignored, as Loki does), ``gzip`` or ``deflate``; another one is a 400.
- A label string that does not parse (``{name="value", ...}``, PromQL metric syntax) refuses the whole
  request with 400 ``couldn't parse labels: ...``, as ``ParseLokiRequest`` does. The distributor then
  validates stream by stream and entry by entry: an empty label set, more than 15 label names
  (``service_name`` not counted), a duplicate name, a name over 1024 or a value over 2048 bytes drop the
  stream; a timestamp older than ``reject_old_samples_max_age`` (1 week) or newer than now +
  ``creation_grace_period`` (10 minutes), a line over ``max_line_size`` (256KB) or structured metadata
  over 64KB / 128 entries drop the entry. Valid entries are stored and the answer is 400 with the
  errors in ``util.GroupedErrors`` form (``"; "``-joined, ``"N errors like: "`` when grouped), else 204.
- The ingester's deduplication: an entry with the same tenant, stream, timestamp and line as a stored
  one is dropped silently. Out-of-order entries are accepted (Loki 3 unordered writes).
- ``require_tenant`` is Loki with ``auth_enabled: true``: no ``X-Scope-OrgID`` is 401 ``no org id``;
  without it the tenant is ``fake``. ``basic_auth`` / ``bearer_token`` stand for the auth proxy
  (Loki has none of its own) and answer 401 on a mismatch.

Deliberately stricter than Loki, to catch client bugs: a content type other than the two above is 415
(Loki decodes any non-JSON body as snappy protobuf); a label string whose names are not sorted is
refused like a parse error when ``strict_label_order`` (Loki sorts them and goes on); metric-name
prefixes (``foo{...}``) and quoted UTF-8 label names are not parsed. Not modelled: rate limits (script
them with ``fail_next(429, ...)``), stream limits, "too far behind" for unordered writes.
"""

from __future__ import annotations

import base64
import contextlib
import gzip
import socket
import ssl
import threading
import time
import zlib
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, NamedTuple

import cramjam
import orjson
from google.protobuf.message import DecodeError

from audit_forwarder.sinks.loki_push_pb2 import PushRequest
from tests.fakes.loki_labels import NAME_RE, parse_labels, render_labels

PUSH_PATH = "/loki/api/v1/push"


class AcceptedEntry(NamedTuple):
    tenant: str
    labels: dict[str, str]
    ts_ns: int
    line: str
    metadata: dict[str, str]


class PushRecord(NamedTuple):
    status: int
    headers: dict[str, str]  # lower-cased names
    body: bytes  # as received (still compressed)


class BadRequest(Exception):
    """The whole request is refused (400) before any entry is looked at."""


def _rfc3339(ts_ns: int) -> str:
    """Go's ``time.RFC3339`` in UTC: what Loki's messages show."""
    return datetime.fromtimestamp(ts_ns // 1_000_000_000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def grouped_errors(errors: list[str]) -> str:
    """``util.GroupedErrors.Error()`` (insertion order instead of Go's random map order)."""
    counts: dict[str, int] = {}
    for error in errors:
        counts[error] = counts.get(error, 0) + 1
    grouped = len(counts) > 1
    return "; ".join(f"{n} errors like: {e}" if grouped or n > 1 else e for e, n in counts.items())


class FakeLoki:
    """Use as a context manager; ``url`` is the base URL the sink is given."""

    def __init__(
        self,
        *,
        max_line_size: int = 256 * 1024,
        reject_old_samples_max_age: float = 7 * 24 * 3600.0,
        creation_grace_period: float = 600.0,
        max_label_names_per_series: int = 15,
        max_label_name_length: int = 1024,
        max_label_value_length: int = 2048,
        max_structured_metadata_size: int = 64 * 1024,
        max_structured_metadata_entries: int = 128,
        require_tenant: bool = False,
        basic_auth: tuple[str, str] | None = None,
        bearer_token: str | None = None,
        tls: tuple[Path, Path] | None = None,  # (certificate, key)
        strict_label_order: bool = True,
    ) -> None:
        self.limits = {
            "max_line_size": max_line_size,
            "reject_old_samples_max_age": reject_old_samples_max_age,
            "creation_grace_period": creation_grace_period,
            "max_label_names_per_series": max_label_names_per_series,
            "max_label_name_length": max_label_name_length,
            "max_label_value_length": max_label_value_length,
            "max_structured_metadata_size": max_structured_metadata_size,
            "max_structured_metadata_entries": max_structured_metadata_entries,
        }
        self.require_tenant = require_tenant
        self.basic_auth = basic_auth
        self.bearer_token = bearer_token
        self.strict_label_order = strict_label_order
        self.entries: list[AcceptedEntry] = []
        self.requests: list[PushRecord] = []
        self._seen: set[tuple[str, str, int, str]] = set()
        self._failures: list[tuple[int, str | None]] = []
        self._cond = threading.Condition()
        self._context: ssl.SSLContext | None = None
        if tls is not None:
            self._context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            self._context.load_cert_chain(str(tls[0]), str(tls[1]))
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._connections: set[socket.socket] = set()
        self.port = 0

    # -- lifecycle -------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"{'https' if self._context else 'http'}://127.0.0.1:{self.port}"

    def __enter__(self) -> FakeLoki:
        self.up()
        return self

    def __exit__(self, *exc: object) -> None:
        self.down()

    def up(self) -> None:
        """Listen (again, on the same port after ``down``)."""
        server = _Server(("127.0.0.1", self.port), _handler(self), self)
        self.port = server.server_address[1]
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, args=(0.02,), name="fake-loki", daemon=True)
        self._thread.start()

    def down(self) -> None:
        """Stop listening and cut every open connection: new connections are refused."""
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        with self._cond:
            for conn in list(self._connections):
                with contextlib.suppress(OSError):  # already closed by the client
                    conn.shutdown(socket.SHUT_RDWR)
        assert self._thread is not None
        self._thread.join()
        self._server = self._thread = None

    # -- scripting and inspection ----------------------------------------------------------------

    def fail_next(self, status: int, count: int = 1, retry_after: str | float | None = None) -> None:
        """Answer the next ``count`` pushes with ``status`` (and ``Retry-After``), storing nothing."""
        with self._cond:
            self._failures.extend([(status, None if retry_after is None else str(retry_after))] * count)

    def wait_for(self, count: int, timeout: float = 5.0) -> list[AcceptedEntry]:
        with self._cond:
            if not self._cond.wait_for(lambda: len(self.entries) >= count, timeout):
                raise AssertionError(f"{len(self.entries)} entries stored, waited for {count}")
            return list(self.entries)

    # -- the push endpoint -----------------------------------------------------------------------

    def _take_failure(self) -> tuple[int, str | None] | None:
        with self._cond:
            return self._failures.pop(0) if self._failures else None

    def _authorized(self, headers: dict[str, str]) -> bool:
        given = headers.get("authorization", "")
        if self.bearer_token is not None:
            return given == f"Bearer {self.bearer_token}"
        if self.basic_auth is not None:
            return given == "Basic " + base64.b64encode(":".join(self.basic_auth).encode()).decode()
        return True

    def handle(self, headers: dict[str, str], body: bytes) -> tuple[int, str, dict[str, str]]:
        """(status, text, extra headers) for one push: the whole of Loki's behaviour lives here."""
        if not self._authorized(headers):
            return 401, "Unauthorized", {}
        tenant = headers.get("x-scope-orgid", "")
        if not tenant:
            if self.require_tenant:
                return 401, "no org id", {}
            tenant = "fake"
        failure = self._take_failure()
        if failure is not None:
            status, retry_after = failure
            extra = {"Retry-After": retry_after} if retry_after is not None else {}
            text = (
                f"Ingestion rate limit exceeded for user {tenant} (limit: 4194304 bytes/sec)"
                if status == 429
                else f"scripted failure {status}"
            )
            return status, text, extra
        content_type = headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type not in ("", "application/json", "application/x-protobuf"):
            return 415, f"unsupported Content-Type {content_type!r}", {}
        try:
            streams = self._decode(content_type, headers.get("content-encoding", ""), body)
        except (BadRequest, ValueError, DecodeError, OSError, zlib.error) as exc:
            return 400, str(exc), {}
        if not streams:
            return 422, "error at least one valid stream is required for ingestion", {}
        errors = self._ingest(tenant, streams)
        return (400, grouped_errors(errors), {}) if errors else (204, "", {})

    def _decode(self, content_type: str, encoding: str, body: bytes) -> list[tuple[str, list[tuple]]]:
        """[(label string, [(ts_ns, line, [(name, value)])])] from either wire format."""
        if encoding == "gzip":
            body = gzip.decompress(body)
        elif encoding == "deflate":
            body = zlib.decompress(body, -zlib.MAX_WBITS)
        elif encoding not in ("", "snappy"):
            raise BadRequest(f'Content-Encoding "{encoding}" not supported')
        if content_type == "application/json":
            return [_json_stream(stream) for stream in orjson.loads(body).get("streams") or []]
        request = PushRequest.FromString(bytes(cramjam.snappy.decompress_raw(body)))
        return [
            (
                stream.labels,
                [
                    (
                        e.timestamp.seconds * 1_000_000_000 + e.timestamp.nanos,
                        e.line,
                        [(p.name, p.value) for p in e.structuredMetadata],
                    )
                    for e in stream.entries
                ],
            )
            for stream in request.streams
        ]

    def _ingest(self, tenant: str, streams: list[tuple[str, list[tuple]]]) -> list[str]:
        parsed = []
        for text, entries in streams:  # ParseLokiRequest: any unparsable label string fails the request
            try:
                parsed.append((parse_labels(text, strict_order=self.strict_label_order), entries))
            except ValueError as exc:
                return [f"couldn't parse labels: {exc}"]
        errors: list[str] = []
        now_ns = time.time_ns()
        for pairs, entries in parsed:
            if not entries:
                continue
            stream = render_labels(sorted(pairs))
            error = self._stream_error(stream, pairs)
            if error is not None:
                errors.append(error)
                continue
            for ts_ns, line, metadata in entries:
                error = self._entry_error(stream, now_ns, ts_ns, line, metadata)
                if error is not None:
                    errors.append(error)
                    continue
                self._store(AcceptedEntry(tenant, dict(pairs), ts_ns, line, dict(metadata)), stream)
        return errors

    def _stream_error(self, stream: str, pairs: list[tuple[str, str]]) -> str | None:
        limits = self.limits
        if not pairs:
            return "error at least one label pair is required per stream"
        count = len(pairs) - any(name == "service_name" for name, _ in pairs)
        if count > limits["max_label_names_per_series"]:
            return f"entry for stream '{stream}' has {count} label names; limit {limits['max_label_names_per_series']}"
        last = ""
        for name, value in sorted(pairs):
            if len(name.encode()) > limits["max_label_name_length"]:
                return f"stream '{stream}' has label name too long: '{name}'"
            if len(value.encode()) > limits["max_label_value_length"]:
                return f"stream '{stream}' has label value too long: '{value}'"
            if name == last:
                return f"stream '{stream}' has duplicate label name: '{name}'"
            last = name
        return None

    def _entry_error(self, stream: str, now_ns: int, ts_ns: int, line: str, metadata: list) -> str | None:
        """``Validator.ValidateEntry``: the checks in Loki's order, with Loki's messages."""
        limits = self.limits
        oldest = now_ns - int(limits["reject_old_samples_max_age"] * 1e9)
        if ts_ns < oldest:
            return (
                f"entry for stream '{stream}' has timestamp too old: {_rfc3339(ts_ns)}, "
                f"oldest acceptable timestamp is: {_rfc3339(oldest)}"
            )
        if ts_ns > now_ns + int(limits["creation_grace_period"] * 1e9):
            return f"entry for stream '{stream}' has timestamp too new: {_rfc3339(ts_ns)}"
        size = len(line.encode())
        if size > limits["max_line_size"]:
            return (
                f"Max entry size '{limits['max_line_size']}' bytes exceeded for stream '{stream}' "
                f"while adding an entry with length '{size}' bytes"
            )
        metadata_size = sum(len(name.encode()) + len(value.encode()) for name, value in metadata)
        if metadata and metadata_size > limits["max_structured_metadata_size"]:
            return (
                f"stream '{stream}' has structured metadata too large: '{metadata_size}' bytes, "
                f"limit: '{limits['max_structured_metadata_size']}' bytes."
            )
        if len(metadata) > limits["max_structured_metadata_entries"]:
            return (
                f"stream '{stream}' has too many structured metadata labels: '{len(metadata)}', "
                f"limit: '{limits['max_structured_metadata_entries']}'."
            )
        return None

    def _store(self, entry: AcceptedEntry, stream: str) -> None:
        key = (entry.tenant, stream, entry.ts_ns, entry.line)
        with self._cond:
            if key in self._seen:
                return
            self._seen.add(key)
            self.entries.append(entry)
            self._cond.notify_all()

    def _record(self, record: PushRecord) -> None:
        with self._cond:
            self.requests.append(record)


def _json_stream(stream: dict[str, Any]) -> tuple[str, list[tuple]]:
    """A v1 JSON stream in the protobuf shape; labels go through the same parser as protobuf's."""
    labels = stream.get("stream") or {}
    for name in labels:
        if not NAME_RE.match(name):
            raise BadRequest(f"couldn't parse labels: invalid label name {name!r}")
    text = render_labels(sorted(labels.items()))
    entries = []
    for value in stream.get("values") or []:
        if not isinstance(value, list) or len(value) not in (2, 3) or not isinstance(value[0], str):
            raise BadRequest(f'invalid entry {value!r}: want ["<ns>", "<line>"(, {{metadata}})]')
        metadata = value[2] if len(value) == 3 else {}
        if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
            raise BadRequest("structured metadata values must be strings")
        entries.append((int(value[0]), value[1], list(metadata.items())))
    return text, entries


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler], fake: FakeLoki) -> None:
        self.fake = fake
        super().__init__(address, handler)

    def get_request(self) -> tuple[socket.socket, Any]:
        """Accept; with TLS the handshake runs later in the connection's own thread."""
        sock, address = super().get_request()
        if self.fake._context is not None:
            sock = self.fake._context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        with self.fake._cond:
            self.fake._connections.add(sock)
        return sock, address

    def shutdown_request(self, request: Any) -> None:
        with self.fake._cond:
            self.fake._connections.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:  # a refused handshake is expected
        pass


def _handler(fake: FakeLoki) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as Loki's Go server

        def do_POST(self) -> None:  # the http.server method name
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            headers = {k.lower(): v for k, v in self.headers.items()}
            if self.path.split("?")[0] != PUSH_PATH:
                status, text, extra = 404, "404 page not found", {}
            else:
                status, text, extra = fake.handle(headers, body)
            fake._record(PushRecord(status, headers, body))
            self.send_response(status)
            for name, value in extra.items():
                self.send_header(name, value)
            data = (text + "\n").encode() if status != 204 else b""
            if data:
                self.send_header("Content-Type", "text/plain; charset=utf-8")
                self.send_header("X-Content-Type-Options", "nosniff")
            if status != 204:  # RFC 9110 8.6: no Content-Length in a 204
                self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: object) -> None:  # quiet test output
            pass

    return Handler
