"""Splunk HTTP Event Collector (HEC) sink: ECS documents as HEC events, with optional indexer acknowledgement.

Wire format ("Format events for HTTP Event Collector"): one HEC event object per record,
``{"time": <epoch seconds, 6 decimals>, "host", "source", "sourcetype", "index", "event": <ECS document>,
"fields": {"seq", "event_type", "key_id"}}``; a batch is the objects concatenated (no array, no
separator) in one ``POST <url>/services/collector/event`` with ``Authorization: Splunk <token>``.
``time`` is written as a decimal literal from the exact microseconds (never a float, never exponent
notation, which HEC refuses with code 15); ``fields`` are indexed fields, so they are flat strings
(HEC accepts only strings or arrays of strings there). ``host`` is the configured name, else this
machine's hostname; the node an event is about is ``host.name`` inside the ECS document.
``sourcetype`` defaults to ``keylife:audit`` so Splunk admins can attach props (``KV_MODE = json``);
``_json`` also works without any props.

Acknowledgement. Without ``indexer_ack`` a 2xx answer carrying HEC's JSON (``{"text":"Success",
"code":0}``) is the acknowledgement: HEC then holds the events in memory, not yet indexed (Splunk's
own caveat). With ``indexer_ack`` every request names a channel (``X-Splunk-Request-Channel``: the
configured UUID, else a UUID v4 drawn at start; a fresh channel per process is enough because the
sink waits for each ack before the next send, so nothing is pending across restarts), the answer
carries an ``ackId``, and ``send`` polls ``POST <url>/services/collector/ack?channel=<uuid>`` with
``{"acks":[id]}`` until ``{"acks":{"id":true}}`` or ``timeout_seconds`` pass; then ``Retryable("timeout")``
and the shipper sends the batch again: duplicates are possible, loss is not. A token without
acknowledgement answers no ``ackId``; the 200 is then the best confirmation there is (warned once),
because retrying would duplicate every batch for ever.

Answers (Splunk's "Troubleshoot HTTP Event Collector" status table):

* 2xx with HEC's JSON -> delivered (an HTML 200 from a wrong URL is ``Retryable("protocol")``).
* 400 with ``invalid-event-number`` n -> ``Rejected("invalid", index=n)``. HEC reads the body as a
  stream: the events before n may already be indexed (Splunk's pages do not promise either way, and
  with acknowledgement on a 400 carries no ``ackId`` to confirm them), so the shipper resending them is
  the safe side: duplicates, not losses. Other 400 -> ``Rejected("invalid")`` (the shipper splits).
* 400 codes that blame the configuration, not the records (7 incorrect index, 10/11 data channel
  missing/invalid, 14 ack disabled) -> ``Retryable("http_4xx")``: quarantining every record would not help.
* 401/403 (codes 1-4) -> ``Retryable("auth")``; 413 -> ``Rejected("too_large")``;
  429 -> ``Retryable("http_429")`` and 503 (code 9, busy) / other 5xx -> ``Retryable("http_5xx")``,
  both with ``Retry-After`` when given; other 4xx (wrong path, method) -> ``Retryable("http_4xx")``;
  redirects are not followed (they would carry the token elsewhere) -> ``Retryable("protocol")``.
* Connection refused/reset -> ``connect``; no answer in ``timeout_seconds`` -> ``timeout``; handshake or
  certificate failure -> ``tls``.

The token is read from ``token_file`` at build time and lives only in the client's headers: no
message, log line or config repr holds it. Plain ``http://`` is accepted for a loopback host only.
"""

from __future__ import annotations

import contextlib
import logging
import math
import socket
import ssl
import time
import uuid
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import httpx
import orjson
from pydantic import Field, model_validator

from audit_forwarder.formats import event_type, field_text, parse_time, product_version
from audit_forwarder.formats.ecs import ecs_document
from audit_forwarder.shipper.contract import Prepared, Record, Rejected, Retryable
from audit_forwarder.shipper.settings import SinkSettings, TlsClientSettings, is_loopback
from keylife.common.secret_files import check_secret_file, read_secret_text

log = logging.getLogger(__name__)

EVENT_PATH = "/services/collector/event"
ACK_PATH = "/services/collector/ack"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ACK_POLL_FIRST, _ACK_POLL_MAX = 0.05, 1.0
# 400 codes about the token or the configuration: every record would be refused the same way.
_CONFIG_CODES = {
    7: "the token may not write to the configured index",
    10: "the token uses indexer acknowledgement: set indexer_ack: true",
    11: "the data channel is not a valid GUID",
    14: "the token has indexer acknowledgement off: set indexer_ack: false",
}


class SplunkHecSinkConfig(SinkSettings):
    type: Literal["splunk_hec"]
    url: str = Field(min_length=1)  # base URL, e.g. https://splunk.example:8088
    token_file: Path  # holds the HEC token (a GUID); read once at start
    index: str | None = None  # the token's default index when unset
    source: str = "keylife"
    sourcetype: str = "keylife:audit"
    host: str | None = None  # HEC "host" metadata; this machine's hostname when unset
    indexer_ack: bool = False
    channel: uuid.UUID | None = None  # indexer acknowledgement channel; a UUID v4 per process when unset
    tls: TlsClientSettings | None = None  # https only; unset: the system trust store, no client certificate

    @model_validator(mode="after")
    def _check(self) -> SplunkHecSinkConfig:
        parts = urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"Splunk HEC url {self.url!r}: expected http(s)://host[:port]")
        if parts.query or parts.fragment or parts.username or parts.password:
            raise ValueError(f"Splunk HEC url {self.url!r}: no query, fragment or credentials (use token_file)")
        if parts.scheme == "http" and not is_loopback(parts.hostname):
            raise ValueError(f"Splunk HEC url {self.url!r}: plain http only to a loopback host; use https")
        if parts.scheme == "http" and self.tls is not None:
            raise ValueError(f"Splunk HEC url {self.url!r}: tls settings need an https:// url")
        if not self.token_file.is_file():
            raise ValueError(f"token_file {self.token_file} is not a readable file")
        check_secret_file(self.token_file, "token file")  # the one rule for secret files
        return self


def epoch_literal(observed_at: str) -> bytes:
    """``observed_at`` as HEC's ``time``: epoch seconds with 6 decimals, exact (no float rounding)."""
    micros = (parse_time(observed_at) - _EPOCH) // timedelta(microseconds=1)
    sign = "-" if micros < 0 else ""
    seconds, fraction = divmod(abs(micros), 1_000_000)
    return f"{sign}{seconds}.{fraction:06d}".encode()


def retry_after_seconds(value: str | None) -> float | None:
    """``Retry-After`` (RFC 9110: delay-seconds or an HTTP-date) as seconds from now."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        return max(0.0, (when - datetime.now(UTC)).total_seconds())
    return max(0.0, seconds) if math.isfinite(seconds) else None


def _caused_by_tls(error: BaseException) -> bool:
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        if isinstance(current, ssl.SSLError | ssl.CertificateError):
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False


def _json_object(response: httpx.Response) -> dict[str, Any] | None:
    try:
        body = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        return None
    return body if isinstance(body, dict) else None


def _hec_body(response: httpx.Response) -> dict[str, Any] | None:
    """HEC's JSON answer (an object with ``text`` or ``code``), or None when the answer is something else."""
    body = _json_object(response)
    return body if body is not None and ("code" in body or "text" in body) else None


def _describe(response: httpx.Response, body: dict[str, Any] | None) -> str:
    if body is None:
        snippet = response.text[:120].replace("\n", " ")
        return f"HTTP {response.status_code}" + (f" ({snippet!r})" if snippet else "")
    return f"HTTP {response.status_code} code {body.get('code')} {str(body.get('text'))[:120]!r}"


class SplunkHecSink:
    """One HEC endpoint over a keep-alive ``httpx.Client``."""

    def __init__(self, config: SplunkHecSinkConfig, token: str) -> None:
        self.name = config.name
        self._config = config
        self._base = config.url.rstrip("/")
        self._host = config.host or socket.gethostname()
        self.channel = str(config.channel or uuid.uuid4())
        headers = {
            "Authorization": f"Splunk {token}",
            "Content-Type": "application/json",
            "User-Agent": f"keylife/{product_version()}",
        }
        if config.indexer_ack:
            headers["X-Splunk-Request-Channel"] = self.channel
        # the system trust store (TLS 1.2+) unless tls.ca_file replaces it; for http:// it is never used
        verify = (config.tls or TlsClientSettings()).context()
        sni = config.tls.server_name if config.tls is not None else None
        self._extensions: dict[str, Any] = {"sni_hostname": sni} if sni else {}
        self._client = httpx.Client(
            headers=headers, verify=verify, timeout=config.timeout_seconds, follow_redirects=False
        )
        self._warned_no_ack = False

    # ----- records -------------------------------------------------------------------------------
    def prepare(self, record: Record) -> Prepared:
        entry = record.entry
        kind = event_type(entry.event)
        fields = {"seq": str(entry.seq), "event_type": kind}
        key_id = entry.event.get("key_id")
        if key_id is not None:
            fields["key_id"] = field_text(key_id)
        envelope: dict[str, Any] = {"host": self._host, "source": self._config.source}
        envelope["sourcetype"] = self._config.sourcetype
        if self._config.index:
            envelope["index"] = self._config.index
        envelope["event"] = ecs_document(entry, checkpoint=record.checkpoint, hostname=self._host)
        envelope["fields"] = fields
        payload = orjson.dumps(envelope)
        with contextlib.suppress(ValueError):  # not a journal time: HEC then stamps the time of receipt
            payload = b'{"time":' + epoch_literal(entry.observed_at) + b"," + payload[1:]
        return Prepared(record, payload, len(payload))

    # ----- delivery ------------------------------------------------------------------------------
    def send(self, batch: list[Prepared]) -> None:
        if not batch:
            return
        url = self._base + EVENT_PATH
        response = self._post(url, b"".join(p.payload for p in batch), "event batch")
        body = self._accepted(response, len(batch))
        if not self._config.indexer_ack:
            return
        ack_id = body.get("ackId")
        if isinstance(ack_id, int) and not isinstance(ack_id, bool):
            self._await_ack(ack_id)
        elif not self._warned_no_ack:
            self._warned_no_ack = True
            log.warning(
                "sink %s: indexer_ack is on but %s answered without an ackId (the token does not use indexer "
                "acknowledgement); HTTP 200 is taken as the acknowledgement",
                self.name,
                url,
            )

    def _post(self, url: str, content: bytes, what: str) -> httpx.Response:
        try:
            return self._client.post(url, content=content, extensions=self._extensions)
        except httpx.TimeoutException as error:
            raise Retryable(
                "timeout", f"{what} to {url}: no answer within {self._config.timeout_seconds:g}s"
            ) from error
        except httpx.TransportError as error:
            reason = "tls" if _caused_by_tls(error) else "connect"
            raise Retryable(reason, f"{what} to {url}: {type(error).__name__}: {error}") from error

    def _accepted(self, response: httpx.Response, count: int) -> dict[str, Any]:
        """HEC's answer to an event batch when it took the batch; otherwise the contract's error."""
        status = response.status_code
        body = _hec_body(response)
        detail = _describe(response, body)
        if 200 <= status < 300:
            if body is None:
                raise Retryable("protocol", f"{detail}: not an HTTP Event Collector answer (check the url)")
            return body
        code = body.get("code") if body is not None else None
        retry_after = retry_after_seconds(response.headers.get("Retry-After"))
        if status == 400:
            if code in _CONFIG_CODES:
                raise Retryable("http_4xx", f"{detail}: {_CONFIG_CODES[code]}")
            number = body.get("invalid-event-number") if body is not None else None
            index = number if isinstance(number, int) and not isinstance(number, bool) else None
            if index is not None and not 0 <= index < count:
                index = None
            where = f" (event {index} of {count})" if index is not None else ""
            raise Rejected("invalid", f"{detail}{where}", index=index)
        raise self._failure(status, detail, retry_after)

    @staticmethod
    def _failure(status: int, detail: str, retry_after: float | None) -> Rejected | Retryable:
        if status in (401, 403):
            return Retryable("auth", f"{detail}: the HEC token was refused")
        if status == 413:
            return Rejected("too_large", f"{detail}: the batch is over the collector's max_content_length")
        if status == 429:
            return Retryable("http_429", detail, retry_after=retry_after)
        if status >= 500:
            return Retryable("http_5xx", detail, retry_after=retry_after)
        if 400 <= status < 500:
            return Retryable("http_4xx", f"{detail}: not about the records (check the url)")
        return Retryable("protocol", f"{detail}: unexpected answer (redirects are not followed)")

    def _await_ack(self, ack_id: int) -> None:
        """Poll the ack endpoint until ``ack_id`` reads true; ``Retryable("timeout")`` after ``timeout_seconds``."""
        url = f"{self._base}{ACK_PATH}?channel={self.channel}"
        query = orjson.dumps({"acks": [ack_id]})
        deadline = time.monotonic() + self._config.timeout_seconds
        delay = _ACK_POLL_FIRST
        while True:
            response = self._post(url, query, "indexer acknowledgement query")
            body = _json_object(response)
            if response.status_code != 200 or body is None:
                raise self._ack_failure(response)
            acks = body.get("acks")
            if isinstance(acks, dict) and acks.get(str(ack_id)) is True:
                return
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise Retryable(
                    "timeout",
                    f"indexer acknowledgement {ack_id} on channel {self.channel} not confirmed within "
                    f"{self._config.timeout_seconds:g}s; the batch will be sent again (duplicates possible)",
                )
            time.sleep(min(delay, remaining))
            delay = min(delay * 2, _ACK_POLL_MAX)

    def _ack_failure(self, response: httpx.Response) -> Retryable:
        """A failed ack query says nothing about the records: always retryable (the batch is sent again)."""
        status, body = response.status_code, _hec_body(response)
        detail = f"indexer acknowledgement query: {_describe(response, body)}"
        code = body.get("code") if body is not None else None
        if status == 400 and code in _CONFIG_CODES:
            return Retryable("http_4xx", f"{detail}: {_CONFIG_CODES[code]}")
        failure = self._failure(status, detail, retry_after_seconds(response.headers.get("Retry-After")))
        return failure if isinstance(failure, Retryable) and status != 200 else Retryable("protocol", detail)

    def close(self) -> None:
        self._client.close()


def build(config: SplunkHecSinkConfig) -> SplunkHecSink:
    """The sink for ``config``: reads the token file (never echoed) and opens the client."""
    token = read_secret_text(config.token_file, "token file")  # owner-only, or refused
    if not token or any(c.isspace() for c in token):
        raise ValueError(f"token_file {config.token_file} must hold one HEC token on one line")
    return SplunkHecSink(config, token)
