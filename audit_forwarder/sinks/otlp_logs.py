"""OTLP logs sink: each record one OpenTelemetry log record, sent by the SDK's ``OTLPLogExporter``.

Mapping (OpenTelemetry Logs Data Model):

* ``body``: the event as a map (AnyValue kvlist), not its canonical JSON text: collectors and backends
  index a structured body directly, and nothing is lost (events hold only JSON values; ``null`` becomes
  an empty AnyValue). The chain hash in the attributes, not the body bytes, ties the copy to the journal.
* ``timestamp`` = ``occurred_at`` (when it happened, per the node); left unset (0, "unknown" in OTLP)
  when the event has none or it does not parse. ``observed_timestamp`` = ``observed_at`` (the journal's
  time, the data model's "when the collection system observed it").
* ``severity_number`` / ``severity_text``: the RFC 5424 severity of ``audit_forwarder.formats`` mapped as
  the data model's appendix maps syslog (Critical ERROR2, Error ERROR, Warning WARN, Notice INFO2,
  Informational INFO); the text is the syslog keyword (``notice``), as ECS ``log.level``.
* ``event_name`` = ``keylife.<event type>``: the data model's field naming the class of an event record.
* attributes: ``keylife.seq``, ``keylife.hash`` (hex), ``keylife.checkpoint`` (when known),
  ``keylife.key_id``, ``keylife.event_type``, ``keylife.event_id``, ``keylife.node``, and ``enduser.id``
  for the actor (semantic conventions: "username, email address, or other identifier" of the end user).
* resource: ``service.name=keylife``, ``service.version``, plus ``OTEL_RESOURCE_ATTRIBUTES``;
  scope ``keylife.audit_forwarder``. Records carry no trace context.

Delivery. ``export`` returns only SUCCESS or FAILURE: it does not tell a refusal that will repeat
from an outage, so every FAILURE is ``Retryable("connect")`` and the exporter's log line has the gRPC
status or HTTP code. The exporter retries transient failures itself (UNAVAILABLE, 429, 502-504) with
backoff, but only within its ``timeout``, set to ``timeout_seconds``: ``send`` returns within about that
long and the shipper keeps control of retries, cursor and metrics.

Transport. ``insecure: true`` means plain text, allowed only to a loopback collector; otherwise TLS
always verifies (there is no "skip verification"): ``tls.ca_file`` replaces the default trust store,
``tls.cert_file``/``key_file`` give mutual TLS, ``tls.server_name`` (gRPC only) overrides the name checked;
without ``tls.ca_file`` the transport's default roots apply (gRPC's bundled roots; certifi for HTTP).
``headers`` (often an API key) are ``SecretStr``: masked in the config's repr and dumps.
Settings left unset may still come from the exporters' own ``OTEL_EXPORTER_OTLP_*`` variables.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, Literal
from urllib.parse import urlsplit

import grpc
import orjson
from opentelemetry._logs import LogRecord, SeverityNumber
from opentelemetry.context import Context
from opentelemetry.sdk._logs import ReadableLogRecord
from opentelemetry.sdk._logs.export import LogRecordExporter, LogRecordExportResult
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import INVALID_SPAN, set_span_in_context
from pydantic import Field, SecretStr, model_validator

from audit_forwarder.formats import event_type, field_text, parse_time, product_version, syslog_severity
from audit_forwarder.formats.ecs import log_level
from audit_forwarder.shipper.contract import Prepared, Record, Refused, Retryable
from audit_forwarder.shipper.settings import SinkSettings, TlsClientSettings, is_loopback
from keylife.common.secret_files import read_secret_file

SCOPE_NAME = "keylife.audit_forwarder"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MAX_NANOS = 2**64  # OTLP times are fixed64 nanoseconds since the epoch
# RFC 5424 severity -> SeverityNumber (Logs Data Model, appendix B, syslog column).
_SEVERITY = {
    0: SeverityNumber.FATAL,
    1: SeverityNumber.ERROR3,
    2: SeverityNumber.ERROR2,
    3: SeverityNumber.ERROR,
    4: SeverityNumber.WARN,
    5: SeverityNumber.INFO2,
    6: SeverityNumber.INFO,
    7: SeverityNumber.DEBUG,
}
_NO_TRACE = set_span_in_context(INVALID_SPAN, Context())  # a record carries no trace/span id
_RECORD_OVERHEAD = 160  # bytes of an encoded record besides body and attribute text (an estimate)


def _host(endpoint: str) -> str | None:
    return urlsplit(endpoint if "://" in endpoint else f"//{endpoint}").hostname


class OtlpLogsSinkConfig(SinkSettings):
    type: Literal["otlp_logs"]
    endpoint: str = Field(min_length=1)  # gRPC: host:port or http(s)://host:port; http/protobuf: a URL
    protocol: Literal["grpc", "http/protobuf"] = "grpc"
    headers: dict[str, SecretStr] = Field(default_factory=dict)  # often credentials: masked in repr and dumps
    insecure: bool = False  # plain text; only to a collector on loopback (never "skip verification")
    tls: TlsClientSettings | None = None

    @model_validator(mode="after")
    def _check(self) -> OtlpLogsSinkConfig:
        scheme = self.endpoint.split("://", 1)[0].lower() if "://" in self.endpoint else None
        if scheme not in (None, "http", "https") or (scheme is None and self.protocol != "grpc"):
            raise ValueError(f"OTLP endpoint {self.endpoint!r}: expected an http:// or https:// URL")
        if _host(self.endpoint) is None:
            raise ValueError(f"OTLP endpoint {self.endpoint!r}: no host")
        if scheme is not None and (scheme == "http") != self.insecure:
            raise ValueError(f"OTLP endpoint {self.endpoint!r}: http:// needs insecure: true, https:// excludes it")
        if self.insecure and not is_loopback(_host(self.endpoint)):
            raise ValueError(f"OTLP endpoint {self.endpoint!r}: insecure (plain text) only to a loopback collector")
        if self.insecure and self.tls is not None:
            raise ValueError("OTLP: insecure and tls exclude each other")
        if self.protocol == "http/protobuf" and self.tls is not None and self.tls.server_name:
            raise ValueError("OTLP: tls.server_name is supported for gRPC only")
        return self


def _nanos(value: Any) -> int | None:
    """An RFC 3339 time as OTLP nanoseconds, or None when it is absent, malformed or out of range."""
    if not isinstance(value, str):
        return None
    try:
        nanos = (parse_time(value) - _EPOCH) // timedelta(microseconds=1) * 1000
    except ValueError:
        return None
    return nanos if 0 <= nanos < _MAX_NANOS else None


def _attributes(record: Record) -> dict[str, Any]:
    entry, event = record.entry, record.entry.event
    attributes: dict[str, Any] = {
        "keylife.seq": entry.seq,
        "keylife.hash": entry.hash.hex(),
        "keylife.event_type": event_type(event),
    }
    if record.checkpoint is not None:
        attributes["keylife.checkpoint"] = record.checkpoint
    for name, key in (("keylife.key_id", "key_id"), ("keylife.event_id", "id"), ("keylife.node", "node")):
        if event.get(key) is not None:
            attributes[name] = field_text(event[key])
    if event.get("actor") is not None:
        attributes["enduser.id"] = field_text(event["actor"])
    return attributes


def _read(path: Any) -> bytes | None:
    return None if path is None else path.read_bytes()


def make_exporter(config: OtlpLogsSinkConfig) -> LogRecordExporter:
    """The SDK exporter for ``config``; its own timeout (and so its internal retries) is ``timeout_seconds``."""
    timeout = config.timeout_seconds
    tls = config.tls
    if config.protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter

        credentials = None
        options = None
        if not config.insecure:
            credentials = grpc.ssl_channel_credentials(
                root_certificates=_read(tls.ca_file) if tls else None,
                private_key=read_secret_file(tls.key_file, "TLS private key") if tls and tls.key_file else None,
                certificate_chain=_read(tls.cert_file) if tls else None,
            )
            if tls is not None and tls.server_name:
                options = (("grpc.ssl_target_name_override", tls.server_name),)
        headers = {k.lower(): v.get_secret_value() for k, v in config.headers.items()}  # gRPC keys: lower case
        return OTLPLogExporter(
            endpoint=config.endpoint,
            insecure=config.insecure,
            credentials=credentials,
            headers=headers,
            timeout=timeout,
            channel_options=options,
        )
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter as HttpLogExporter

    endpoint = config.endpoint.rstrip("/")
    if "/" not in endpoint.split("://", 1)[1]:
        endpoint += "/v1/logs"
    return HttpLogExporter(
        endpoint=endpoint,
        certificate_file=str(tls.ca_file) if tls and tls.ca_file else None,
        client_key_file=str(tls.key_file) if tls and tls.key_file else None,
        client_certificate_file=str(tls.cert_file) if tls and tls.cert_file else None,
        headers={k: v.get_secret_value() for k, v in config.headers.items()},
        timeout=timeout,
    )


class OtlpLogsSink:
    """One OTLP endpoint; ``send`` is one ``export`` call."""

    def __init__(self, config: OtlpLogsSinkConfig, exporter: LogRecordExporter) -> None:
        self.name = config.name
        self._config = config
        self._exporter = exporter
        self._resource = Resource.create({"service.name": "keylife", "service.version": product_version()})
        self._scope = InstrumentationScope(SCOPE_NAME, product_version())

    def prepare(self, record: Record) -> Prepared:
        entry = record.entry
        observed = _nanos(entry.observed_at)
        if observed is None:
            raise Refused("invalid", f"seq {entry.seq}: observed_at {entry.observed_at!r} is not an OTLP time")
        kind = event_type(entry.event)
        severity = syslog_severity(kind)
        attributes = _attributes(record)
        log_record = LogRecord(
            timestamp=_nanos(entry.event.get("occurred_at")),
            observed_timestamp=observed,
            context=_NO_TRACE,
            severity_text=log_level(kind),
            severity_number=_SEVERITY[severity],
            body=entry.event,
            attributes=attributes,
            event_name=f"keylife.{kind}",
        )
        readable = ReadableLogRecord(log_record=log_record, resource=self._resource, instrumentation_scope=self._scope)
        size = (
            _RECORD_OVERHEAD + len(orjson.dumps(entry.event)) + sum(len(k) + len(str(v)) for k, v in attributes.items())
        )
        return Prepared(record, readable, size)

    def send(self, batch: list[Prepared]) -> None:
        if not batch:
            return
        where = f"OTLP/{self._config.protocol} logs export to {self._config.endpoint}"
        try:
            result = self._exporter.export([prepared.payload for prepared in batch])
        except Exception as error:  # the gRPC exporter lets non-RPC errors (encoding) through
            raise Retryable("protocol", f"{where}: {type(error).__name__}: {error}") from error
        if result is not LogRecordExportResult.SUCCESS:
            raise Retryable(
                "connect",
                f"{where} failed after the exporter's own retries (up to {self._config.timeout_seconds:g}s); "
                "the exporter's log names the status",
            )

    def close(self) -> None:
        self._exporter.shutdown()


def build(config: OtlpLogsSinkConfig) -> OtlpLogsSink:
    return OtlpLogsSink(config, make_exporter(config))
