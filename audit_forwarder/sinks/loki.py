"""Loki sink: journal records pushed to Grafana Loki's ``POST /loki/api/v1/push``.

Streams. Loki indexes labels, so a stream is a few static labels with small value sets:
``service`` and ``environment`` (config), ``category`` (below) and ``severity`` (the syslog
severity ``audit_forwarder.formats`` assigns, by name: critical, error, warning, notice, info).
About ten streams in all. The label string is rendered once per (category, severity) in Loki's
canonical form, names sorted: ``{category="usage", environment="production", service="keylife",
severity="info"}``. Everything per record goes to Loki 3 structured metadata (not indexed, no
cardinality cost): ``seq``, ``hash`` (chain hash, hex), ``checkpoint`` (size, when known),
``event_id``, ``event_type``, ``key_id``, ``actor``, ``node`` (absent ones are left out). The
line is the canonical JSON event (RFC 8785), so a copy in Loki can be checked against the journal;
its timestamp is ``observed_at`` (the journal's clock).

=============  ====================================================================
category       event types
=============  ====================================================================
lifecycle      generated, activated, suspended, reactivated, deactivated, rotated,
               expired, revoked, compromised, destroyed
usage          usage_report
propagation    propagated
security       policy_violation, security_event, auth_failure, command_refused
system         admin_action, journal_recovered, signing_key_rotated, any other type
checkpoint     checkpoint (the signed checkpoints published alongside the entries)
=============  ====================================================================

Wire. ``protobuf`` (default): a ``logproto.PushRequest`` (``loki_push.proto``) compressed with
snappy's *block* format, ``Content-Type: application/x-protobuf`` and no ``Content-Encoding``,
as promtail and Loki's own ``ParseLokiRequest`` do (it snappy-decodes any non-JSON body).
``json``: ``{"streams": [{"stream": {...}, "values": [["<ns>", "<line>", {metadata}]]}]}``.

Answers. 2xx: delivered. 429 and 5xx: ``Retryable`` (with ``Retry-After``). 401/403:
``Retryable("auth")`` (an operator fixes credentials; nothing is quarantined for that), and the
next attempt reads the secret files again, so a fixed file is picked up without a restart. 400:
``Rejected``. Loki's distributor validates entry by entry, stores the valid ones and answers 400
naming the others (``util.GroupedErrors``, joined by "; "); the shipper's bisecting resend is
harmless because Loki's ingester drops an entry identical (timestamp and line) to one its stream
still holds in memory, which a resend seconds later is. The reason is ``too_old`` when every error
is "has timestamp too old", ``too_large`` when every error is a line or structured-metadata size
limit, ``invalid`` otherwise. 413: ``Rejected("too_large")``; 408: ``Retryable("timeout")``; 404
and 405 (a wrong URL): ``Retryable("http_4xx")``; other 4xx: ``Rejected("http_4xx")``; 1xx/3xx
(redirects are not followed): ``Retryable("protocol")``.
No answer: ``Retryable`` ``connect``, ``timeout`` or ``tls``. Proxies, ``.netrc`` and CA bundles
from the environment are ignored (``trust_env=False``): the config says everything.

``prepare`` refuses what Loki's default limits would refuse anyway: a line over
``max_line_bytes`` (``max_line_size``, 256KB), structured metadata over 64KB, and a timestamp
older than ``reject_old_samples_max_age_seconds`` (1 week) by our clock.
"""

from __future__ import annotations

import base64
import email.utils
import ssl
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

import cramjam
import httpx
import orjson
from pydantic import Field, field_validator, model_validator

from audit_forwarder.formats import event_type, product_version, syslog_severity
from audit_forwarder.shipper.contract import Prepared, Record, Refused, Rejected, Retryable
from audit_forwarder.shipper.settings import SinkSettings, TlsClientSettings
from audit_forwarder.sinks import loki_wire
from keylife.common.secret_files import SecretFileError, check_secret_file, read_secret_file

PUSH_PATH = "/loki/api/v1/push"
MAX_STRUCTURED_METADATA_BYTES = 64 * 1024  # Loki's max_structured_metadata_size default
_LABEL_VALUE = r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,63}$"  # nothing to escape inside "..."
_TENANT = r"^[A-Za-z0-9!._*'()-]{1,150}$"  # dskit tenant.ValidTenantID
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
_SEVERITY_NAMES = {0: "emergency", 1: "alert", 2: "critical", 3: "error", 4: "warning", 5: "notice", 6: "info"}
_LIFECYCLE = "generated activated suspended reactivated deactivated rotated expired revoked compromised destroyed"
_CATEGORIES = {
    **dict.fromkeys(_LIFECYCLE.split(), "lifecycle"),
    **dict.fromkeys(["policy_violation", "security_event", "auth_failure", "command_refused"], "security"),
    "usage_report": "usage",
    "propagated": "propagation",
    "checkpoint": "checkpoint",
}
_DEFAULT_CATEGORY = "system"
# Structured metadata taken from the event: (metadata name, event field).
_EVENT_METADATA = (
    ("event_id", "id"),
    ("event_type", "type"),
    ("key_id", "key_id"),
    ("actor", "actor"),
    ("node", "node"),
)
# Loki's 400 texts (pkg/validation/validate.go) that name a limit the contract has a reason for.
_REASON_MARKERS = (
    ("has timestamp too old", "too_old"),
    ("Max entry size", "too_large"),
    ("structured metadata too large", "too_large"),
    ("too many structured metadata labels", "too_large"),
)
_MESSAGE_CHARS = 500


class LokiSinkConfig(SinkSettings):
    """One Loki destination (``type: loki`` in ``forwarder.sinks``)."""

    type: Literal["loki"]
    url: str  # base URL, e.g. http://127.0.0.1:3100 (a path prefix of a gateway is kept)
    encoding: Literal["protobuf", "json"] = "protobuf"
    tenant: str | None = Field(None, pattern=_TENANT)  # X-Scope-OrgID
    basic_user: str | None = Field(None, min_length=1, pattern=r"^[^:\r\n]+$")
    basic_password_file: Path | None = None
    bearer_token_file: Path | None = None
    tls: TlsClientSettings | None = None  # for an https URL; None = the system trust store
    environment: str = Field("production", pattern=_LABEL_VALUE)
    service: str = Field("keylife", pattern=_LABEL_VALUE)
    max_line_bytes: int = Field(256 * 1024, ge=1, le=64 * 1024 * 1024)
    reject_old_samples_max_age_seconds: float | None = Field(7 * 24 * 3600, gt=0)
    # Loki's per-distributor burst (ingestion_burst_size_mb, 6MB by default) must hold a whole
    # push, or it answers 429 for ever: keep batches well under it.
    batch_max_bytes: int = Field(1024 * 1024, ge=1024, le=4 * 1024 * 1024)

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("url must be an http:// or https:// base URL, e.g. http://127.0.0.1:3100")
        if parts.username is not None or parts.password is not None:
            raise ValueError("url must not carry credentials: use basic_user/basic_password_file")
        if parts.query or parts.fragment:
            raise ValueError("url takes no query or fragment")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _auth(self) -> LokiSinkConfig:
        if (self.basic_user is None) != (self.basic_password_file is None):
            raise ValueError("basic_user and basic_password_file go together")
        if self.basic_user is not None and self.bearer_token_file is not None:
            raise ValueError("give basic_user/basic_password_file or bearer_token_file, not both")
        for path, what in ((self.basic_password_file, "password file"), (self.bearer_token_file, "token file")):
            if path is not None and not path.is_file():
                raise ValueError(f"{path} is not a readable file")
            if path is not None:
                check_secret_file(path, what)  # the one rule for secret files
        if self.tls is not None and not self.url.startswith("https://"):
            raise ValueError("tls is set but url is not https://")
        return self


def build(config: LokiSinkConfig) -> LokiSink:
    return LokiSink(config)


def epoch_nanos(observed_at: str) -> int:
    """Nanoseconds since the epoch of an RFC 3339 time (naive = UTC); exact integer arithmetic.

    ``datetime.fromisoformat`` (C, Python >= 3.11) measured faster than slicing the fixed
    ``YYYY-MM-DDTHH:MM:SS.ffffffZ`` form by hand, and it accepts any offset."""
    parsed = datetime.fromisoformat(observed_at)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return (parsed - _EPOCH) // _MICROSECOND * 1000


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """``Retry-After`` (RFC 9110 10.2.3): delay-seconds or an HTTP-date; None when absent or bad."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def rejection_reason(text: str) -> str:
    """The contract reason for Loki's 400 text: a specific one only when every error agrees."""
    reasons = {next((r for marker, r in _REASON_MARKERS if marker in part), "invalid") for part in text.split("; ")}
    return reasons.pop() if len(reasons) == 1 else "invalid"


def _is_tls_failure(exc: BaseException) -> bool:
    """httpx wraps httpcore's error, which wraps the ``ssl`` one: look down the chain."""
    seen: BaseException | None = exc
    for _ in range(8):
        if seen is None:
            return False
        if isinstance(seen, ssl.SSLError | ssl.CertificateError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _read_secret(path: Path, what: str) -> str:
    """A secret file's content without its trailing newline; errors name the file, never the secret."""
    try:
        secret = read_secret_file(path, f"{what} file").decode("utf-8").rstrip("\r\n")
    except SecretFileError:
        raise
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read the {what} file {path}: {type(exc).__name__}") from None
    if not secret or any(ch in secret for ch in "\r\n\0"):
        raise ValueError(f"the {what} file {path} must hold one non-empty line")
    return secret


class LokiSink:
    """Pushes batches to one Loki over a kept-alive httpx client (one per sink)."""

    def __init__(self, config: LokiSinkConfig) -> None:
        self.name = config.name
        self.config = config
        self._push_url = config.url + PUSH_PATH
        self._max_age_ns = (
            None
            if config.reject_old_samples_max_age_seconds is None
            else int(config.reject_old_samples_max_age_seconds * 1e9)
        )
        self._streams: dict[str, str] = {}  # event type -> label string
        self._label_sets: dict[str, dict[str, str]] = {}  # label string -> labels (JSON encoding)
        self._content_type = "application/x-protobuf" if config.encoding == "protobuf" else "application/json"
        self._encode = self._protobuf if config.encoding == "protobuf" else self._json
        self._wire = config.encoding == "protobuf"
        headers = {"User-Agent": f"keylife/{product_version()}", "Content-Type": self._content_type}
        if config.tenant is not None:
            headers["X-Scope-OrgID"] = config.tenant
        verify: ssl.SSLContext | bool = config.tls.context() if config.tls is not None else True
        self._extensions = {"sni_hostname": config.tls.server_name} if config.tls and config.tls.server_name else {}
        # trust_env=False: no proxy, .netrc or SSL_CERT_FILE from the environment; the config says it all.
        self._client = httpx.Client(headers=headers, verify=verify, timeout=config.timeout_seconds, trust_env=False)
        self._secrets: tuple[str, ...] = ()
        self._authorization = self._load_authorization()
        self._reload_authorization = False  # set by a 401/403: read the secret files again first

    # -- prepare (pure) ----------------------------------------------------------------------

    def _labels_for(self, kind: str) -> str:
        """The stream's label string for an event type, rendered once (names sorted)."""
        labels = self._streams.get(kind)
        if labels is None:
            pairs = {
                "category": _CATEGORIES.get(kind, _DEFAULT_CATEGORY),
                "environment": self.config.environment,
                "service": self.config.service,
                "severity": _SEVERITY_NAMES.get(syslog_severity(kind), "notice"),
            }
            labels = "{" + ", ".join(f'{name}="{pairs[name]}"' for name in sorted(pairs)) + "}"
            self._label_sets[labels] = pairs
            if len(self._streams) < 1024:  # event types are a closed set; stay bounded regardless
                self._streams[kind] = labels
        return labels

    def prepare(self, record: Record) -> Prepared:
        entry = record.entry
        event = entry.event
        kind = event_type(event)
        line_bytes = record.event_bytes()
        if len(line_bytes) > self.config.max_line_bytes:
            raise Refused(
                "too_large", f"line is {len(line_bytes)} bytes; Loki takes {self.config.max_line_bytes} (max_line_size)"
            )
        try:
            ts_ns = epoch_nanos(entry.observed_at)
        except ValueError:
            raise Refused("invalid", f"observed_at {entry.observed_at!r} is not an RFC 3339 time") from None
        if self._max_age_ns is not None and ts_ns < time.time_ns() - self._max_age_ns:
            raise Refused(
                "too_old",
                f"observed_at {entry.observed_at} is older than reject_old_samples_max_age "
                f"({self.config.reject_old_samples_max_age_seconds:g}s)",
            )
        metadata = [("seq", str(entry.seq)), ("hash", entry.hash.hex())]
        if record.checkpoint is not None:
            metadata.append(("checkpoint", str(record.checkpoint)))
        for name, field in _EVENT_METADATA:
            value = event.get(field)
            if value is not None:
                metadata.append((name, value if value.__class__ is str else str(value)))
        if self._wire:  # protobuf: the entry's final bytes now, so a batch is only concatenation
            encoded = loki_wire.entry(ts_ns, line_bytes, metadata)
            metadata_bytes = len(encoded) - len(line_bytes)  # an upper bound of names + values
            payload: tuple = (self._labels_for(kind), encoded)
        else:
            metadata_bytes = len("".join(map("".join, metadata)).encode())  # names and values, UTF-8
            payload = (self._labels_for(kind), ts_ns, line_bytes.decode(), metadata)
        if metadata_bytes > MAX_STRUCTURED_METADATA_BYTES:
            raise Refused("too_large", f"structured metadata is {metadata_bytes} bytes; Loki takes 64KB")
        return Prepared(record, payload, len(line_bytes) + metadata_bytes)

    # -- send --------------------------------------------------------------------------------

    @staticmethod
    def _by_stream(batch: list[Prepared]) -> dict[str, list[tuple]]:
        """Payloads grouped by label string; each stream keeps journal (= timestamp) order."""
        streams: dict[str, list[tuple]] = {}
        for item in batch:
            payload = item.payload
            streams.setdefault(payload[0], []).append(payload)
        return streams

    def _protobuf(self, batch: list[Prepared]) -> bytes:
        """A snappy-block-compressed PushRequest from the entries ``prepare`` encoded."""
        streams = [(labels, [p[1] for p in payloads]) for labels, payloads in self._by_stream(batch).items()]
        return bytes(cramjam.snappy.compress_raw(loki_wire.push_request(streams)))

    def _json(self, batch: list[Prepared]) -> bytes:
        streams = [
            {
                "stream": self._label_sets[labels],
                "values": [[str(ts_ns), line, dict(metadata)] for _, ts_ns, line, metadata in payloads],
            }
            for labels, payloads in self._by_stream(batch).items()
        ]
        return orjson.dumps({"streams": streams})

    def send(self, batch: list[Prepared]) -> None:
        if not batch:
            return
        body = self._encode(batch)
        if self._reload_authorization:
            self._authorization = self._load_authorization(keep_on_error=True)
            self._reload_authorization = False
        headers = {"Authorization": self._authorization} if self._authorization else None
        try:
            response = self._client.post(self._push_url, content=body, headers=headers, extensions=self._extensions)
        except httpx.TimeoutException as exc:
            raise Retryable("timeout", f"Loki {self._push_url}: no answer in time ({type(exc).__name__})") from exc
        except httpx.TransportError as exc:
            reason = "tls" if _is_tls_failure(exc) else "connect"
            raise Retryable(reason, f"Loki {self._push_url}: {type(exc).__name__}: {exc}") from exc
        self._check(response)

    def _check(self, response: httpx.Response) -> None:
        """Map Loki's answer onto the contract (see the module docstring); 2xx returns."""
        status = response.status_code
        if 200 <= status < 300:
            return
        text = response.text
        detail = self._scrub(f"Loki answered {status}: {text.strip()[:_MESSAGE_CHARS]}")
        retry_after = retry_after_seconds(response.headers.get("Retry-After"))
        if status == 429:
            raise Retryable("http_429", detail, retry_after=retry_after)
        if status >= 500:
            raise Retryable("http_5xx", detail, retry_after=retry_after)
        if status in (401, 403):
            self._reload_authorization = True
            raise Retryable("auth", detail)
        if status == 408:
            raise Retryable("timeout", detail, retry_after=retry_after)
        if status == 400:
            raise Rejected(rejection_reason(text.strip()), detail)
        if status == 413:
            raise Rejected("too_large", detail)
        if status in (404, 405):  # a wrong URL or a proxy in the way: the operator's fix, not the record's
            raise Retryable("http_4xx", detail + " (check the sink's url)")
        if 400 <= status < 500:
            raise Rejected("http_4xx", detail)
        raise Retryable("protocol", detail)  # 1xx/3xx: redirects are not followed; a URL to fix

    def _scrub(self, text: str) -> str:
        """Text without our secrets, should a proxy echo the request back in its answer."""
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    def _load_authorization(self, *, keep_on_error: bool = False) -> str | None:
        """The Authorization header value from the secret files (read again after a 401/403)."""
        config = self.config
        try:
            if config.bearer_token_file is not None:
                token = _read_secret(config.bearer_token_file, "bearer token")
                self._secrets = (token,)
                return "Bearer " + token
            if config.basic_user is not None and config.basic_password_file is not None:
                password = _read_secret(config.basic_password_file, "basic auth password")
                credentials = base64.b64encode(f"{config.basic_user}:{password}".encode()).decode()
                self._secrets = (password, credentials)
                return "Basic " + credentials
        except ValueError:
            if keep_on_error:
                return self._authorization
            raise
        return None

    def close(self) -> None:
        self._client.close()
