"""DataFold node output -> keylife events (what ``POST /v1/events`` accepts). docs/datafold.md has
the table; this module dispatches it (the per-shape rules live in ``cryptomap``, ``authmap``,
``busmap``, ``plainmap``; node answers in ``answers`` and ``status``).

Three rules shape everything here:

* **Deterministic ids**: the n-th keylife event made from a source event is ``df-<source id>-<n>``,
  so re-reading a file (or reading the same event through the log file and the HTTP buffer)
  yields the same ids and bodies and the journal dedupes them. Event-bus ids add a digest of the
  event (its clones share ``base.event_id``); text lines, which carry no id, hash node, time,
  message and occurrence, or, without a time (the web logger), node, source, position and message;
  usage reports are content-addressed (``usage.py``).
* **Only what the lifecycle accepts**: a rotation is one ``rotated`` event (keylife moves the old
  key to ``deactivated`` and makes the successor active, creating it if unseen); adding
  ``deactivated`` would be a ``skipped_transition`` violation.
* **Nothing silently dropped**: a line is a shape (mapped; unknown variants become a generic
  ``security_event`` carrying the raw type), noise (counted), or rejected (written to
  ``rejects.ndjson`` with its reason, counted). Every value that comes from the node is checked
  against keylife's rules here (``build.make``; ``validate=True`` adds keylife's own model),
  because one invalid event would make keylife refuse the whole batch it travels in.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from pydantic import ValidationError

from keylife.datafold.answers import Acknowledged, Answer, node_answer
from keylife.datafold.authmap import correlation, describe
from keylife.datafold.build import (
    CLIENT_KEY,
    MASTER_KEY,
    is_key_id,
    make,
    master_key,
    meta_attrs,
    node_key,
    source_id,
    text,
)
from keylife.datafold.busmap import bus_events
from keylife.datafold.contract import Line
from keylife.datafold.cryptomap import crypto_events
from keylife.datafold.lines import AuditText, parse
from keylife.datafold.plain import Plain
from keylife.datafold.plainmap import AlertBook, plain_events
from keylife.datafold.shapes import (
    AuditEntry,
    BusEvent,
    CryptoAudit,
    Reject,
    SecurityEvent,
    parse_time,
)  # fmt: skip
from keylife.datafold.status import STATUS_URL, StatusTracker
from keylife.datafold.usage import UsageAggregator
from keylife.domain.events import MAX_FUTURE_SKEW, Event, check_not_future

log = logging.getLogger("keylife.datafold.mapping")
SHAPES = (
    "crypto_audit",
    "security_event",
    "event_bus",
    "audit_entry",
    "audit_text",
    "key_status",
    "plain",
)


class Adapter:
    """Maps ``Line``s to keylife event dicts; holds usage aggregates and the key status memory.

    ``rejects_path``: NDJSON of rejected lines (created 0640; None: rejects are only counted and
    logged). ``state_path``: the key status memory (None: in memory only). ``node``: the node
    name for lines whose source did not say. ``usage_*``: the aggregation interval, how late a
    use may arrive, and how long a node must be quiet before ``flush`` closes its interval early
    (usage.py). ``clock``: stamps key status changes and bounds future times. ``validate``: run
    every event through keylife's ``Event`` model too (~4 µs each; ``make`` already checks what
    comes from the node). ``counts``: ``noise``, ``parsed.<shape>``, ``rejected.<shape>``,
    ``events.<shape>``, ``events.usage_report``, ``usage.duplicate``.
    """

    def __init__(
        self,
        rejects_path: Path | str | None = None,
        state_path: Path | str | None = None,
        *,
        node: str | None = None,
        usage_interval_seconds: float = 60,
        usage_lateness_seconds: float | None = 60,
        usage_idle_seconds: float | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        validate: bool = False,
    ) -> None:
        self.rejects_path = None if rejects_path is None else Path(rejects_path)
        self.node = node
        self.clock = clock
        self.validate = validate
        lateness = None if usage_lateness_seconds is None else int(usage_lateness_seconds)
        self.usage = UsageAggregator(int(usage_interval_seconds), lateness, usage_idle_seconds)
        self.tracker = StatusTracker(None if state_path is None else Path(state_path), clock)
        self.counts: Counter[str] = Counter()
        self._rejects_fd: int | None = None
        self._texts: dict[str, tuple[str, dict[str, list[int]]]] = {}  # source -> (time, {message: positions})
        self._horizon = 0.0  # Unix time 24 h past the clock, refreshed when an event passes it
        self._valid: set[str] = set()  # key ids and nodes already checked against keylife's rules
        self._keys = {s: (f"parsed.{s}", f"events.{s}") for s in SHAPES}
        self._map: dict[str, Callable[[Any, Line, str | None], list[dict[str, Any]]]] = {
            "crypto_audit": self._crypto, "security_event": self._security, "event_bus": self._bus,
            "audit_entry": self._entry, "audit_text": self._text, "key_status": self._status_line,
            "plain": self._plain,
        }  # fmt: skip
        self.alerts = AlertBook()
        self.verified: dict[str, tuple[str, Any]] = {}  # source -> (key, path) of its last logged auth success
        self._verified = self.verified
        self.node_of, self.use = self._node, self._use  # for plainmap

    # ----- the contract ---------------------------------------------------------------------------
    def feed(self, line: Line) -> list[dict[str, Any]]:
        """The events this line makes ready now (usage is held in aggregates; see ``flush``)."""
        counts = self.counts
        parsed = None
        try:
            parsed = parse(line.text)
            if parsed is None:
                counts["noise"] += 1
                return []
            shape, record, stamp, _level = parsed
            events = self._map[shape](record, line, stamp)
            # A usage line returns only reports its line closed (counted in _use), any other only its events.
            if events and events[0]["type"] != "usage_report":
                when = getattr(record, "timestamp", None)
                if when is not None and when.timestamp() > self._horizon:
                    self._not_future(when)
                if self.validate:
                    self._check(events)
                counts[self._keys[shape][1]] += len(events)
        except Reject as exc:
            return self._reject(line, exc.shape or (parsed[0] if parsed else None), exc.reason)
        counts[self._keys[shape][0]] += 1
        return events

    def flush(self, upto: datetime | None = None) -> list[dict[str, Any]]:
        """Usage reports of intervals that ended by ``upto`` (all open ones when None)."""
        out = self.usage.flush(upto)
        self.counts["events.usage_report"] += len(out)
        return out

    def safe_position(self, source: str) -> int | None:
        """The oldest position of ``source`` whose usage is still held: persist no further."""
        return self.usage.safe_position(source)

    def status(self, answer: dict[str, Any], client_id: str, node: str | None = None,
               http_status: int | None = None) -> list[dict[str, Any]]:  # fmt: skip
        """A key answer the poller got for ``client_id`` (shape 5, any form in ``answers.py``)."""
        line = Line(orjson.dumps(answer).decode(), f"poll:/api/crypto/keys/status/{client_id}", -1, node)
        try:
            events = self._answer(node_answer(answer, http_status), client_id, node or self.node)
            if self.validate:
                self._check(events)
        except Reject as exc:
            return self._reject(line, "key_status", exc.reason)
        self.counts["parsed.key_status"] += 1
        self.counts["events.key_status"] += len(events)
        return events

    def rotation_status(self, answer: dict[str, Any], node: str | None = None) -> list[dict[str, Any]]:
        """A rotation status answer (``POST /api/crypto/keys/rotate/status``) a poller got: rotation events."""
        return self.status(answer, "", node)  # answers.py reads both keys; status.rotation_events maps them

    def close(self) -> None:
        if self._rejects_fd is not None:
            os.close(self._rejects_fd)
            self._rejects_fd = None

    # ----- plumbing -------------------------------------------------------------------------------
    def _node(self, line: Line) -> str:
        return line.node or self.node or "unknown"

    def _not_future(self, when: datetime) -> None:
        """keylife refuses an event more than 24 h ahead of its clock, and with it the batch: such
        a line (a node clock far off) is rejected here instead."""
        self._horizon = (self.clock() + MAX_FUTURE_SKEW).timestamp()
        if when.timestamp() > self._horizon:
            raise Reject(f"timestamp {when.isoformat()} is more than 24h ahead of this clock")

    def _check(self, events: list[dict[str, Any]]) -> None:
        """Optional (``validate=True``): every event through keylife's own model, ~4 µs each."""
        now = self.clock()
        for ev in events:
            if ev["type"] == "usage_report":
                continue  # built from checked parts by usage.py
            try:
                skew = check_not_future(Event.model_validate(ev), now)
            except ValidationError as exc:
                err = exc.errors(include_url=False)[0]
                where = ".".join(str(p) for p in err["loc"])
                raise Reject(f"mapped {ev['type']} event is not valid for keylife: {where}: {err['msg']}") from None
            if skew:
                raise Reject(skew)

    def _reject(self, line: Line, shape: str | None, reason: str) -> list[dict[str, Any]]:
        self.counts["rejected." + (shape or "unknown")] += 1
        record = {"source": line.source, "position": line.position, "shape": shape, "reason": reason,
                  "line": line.text[:65536]}  # fmt: skip
        if self.rejects_path is None:
            log.warning("datafold line rejected", extra=record)
            return []
        if self._rejects_fd is None:
            self.rejects_path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.rejects_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
            os.fchmod(fd, 0o640)  # whatever the umask: lines may hold client ids and addresses
            self._rejects_fd = fd
        os.write(self._rejects_fd, orjson.dumps(record) + b"\n")
        return []

    def _use(self, node: str, key: str | None, op: str, at: datetime, event_id: str, line: Line,
             meta: dict[str, Any]) -> list[dict[str, Any]]:  # fmt: skip
        """Count one use into its aggregate (the hot path: a node log is mostly uses)."""
        if key not in self._valid or node not in self._valid:  # the report carries both: check them once
            if not is_key_id(key):
                raise Reject(f"{op} use names no valid key id ({key!r})")
            if len(node) > 128 or not is_key_id(node):
                raise Reject(f"node id {node[:80]!r} is not a valid keylife name")
            if len(self._valid) > 100_000:
                self._valid.clear()
            self._valid.update((key, node))  # type: ignore[arg-type]
        ts = at.timestamp()
        if ts > self._horizon:
            self._not_future(at)
        out = self.usage.add(node, key, op, ts, event_id, line.source, line.position, meta)  # type: ignore[arg-type]
        if out is None:
            self.counts["usage.duplicate"] += 1
            return []
        if out:
            self.counts["events.usage_report"] += len(out)
        return out

    # ----- shape 1: crypto audit ------------------------------------------------------------------
    def _crypto(self, r: CryptoAudit, line: Line, _: str | None) -> list[dict[str, Any]]:
        node = self._node(line)
        et = r.event_type
        if (et == "Encryption" or et == "Decryption") and r.result == "Success":
            kind = "encrypt" if et == "Encryption" else "decrypt"
            return self._use(node, master_key(node), kind, r.timestamp, r.event_id, line, MASTER_KEY)
        if r.severity in ("Critical", "Error") or et == "Security":  # audit_logger.rs:722-725: an alert follows
            self.alerts.expect(line.source, r.severity, r.component, r.operation)
        return crypto_events(r, node)

    # ----- shape 2: SECURITY_EVENT ----------------------------------------------------------------
    def _security(self, r: SecurityEvent, line: Line, _: str | None) -> list[dict[str, Any]]:
        node, client, req = self._node(line), r.client_info, r.request_info
        key = client["key_id"]  # null on every failure (signature_auth.rs:1958); set on success (:2298-2299)
        if r.event_type == "AuthenticationSuccess":
            if not key:
                raise Reject("client_info.key_id is null: an AuthenticationSuccess must name the key it verified")
            self._verified[line.source] = (key, req.get("path"))  # the middleware's info! line repeats it
            return self._use(node, key, "verify", r.timestamp, r.event_id, line, CLIENT_KEY)
        variant, code, err_attrs, rejected_key = describe(r.error_details)
        attrs = {"datafold.shape": "security_event", "datafold.event_type": r.event_type,
                 "severity": r.severity.lower(), "source_ip": client["ip_address"],
                 "forwarded_for": client["forwarded_for"], "user_agent": client["user_agent"],
                 "http.method": text(req.get("method")), "http.path": text(req.get("path")), **err_attrs,
                 "processing_time_ms": r.metrics.get("processing_time_ms"),
                 "pattern_score": r.metrics.get("pattern_score") or None}  # fmt: skip
        detail = err_attrs.get("error_message") if variant is None else (
            code if not err_attrs.get("auth.reason") else f"{code} ({err_attrs['auth.reason']})")  # fmt: skip
        reason = r.event_type + (f": {detail}" if detail else "")
        subject = key or rejected_key or node_key(node)
        return [make(f"df-{r.event_id}-0", "security_event", subject, r.timestamp, node=node, actor=key,
                     correlation_id=correlation(r.correlation_id), reason=reason, attributes=attrs)]  # fmt: skip

    # ----- shape 3: event bus ---------------------------------------------------------------------
    def _bus(self, r: BusEvent, line: Line, _: str | None) -> list[dict[str, Any]]:
        return bus_events(r, r.source_node or self._node(line))

    # ----- plain lines (plain.py) -----------------------------------------------------------------
    def _plain(self, r: Plain, line: Line, stamp: str | None) -> list[dict[str, Any]]:
        return plain_events(self, r, line, stamp)

    def text_stem(self, line: Line, stamp: str | None, message: str) -> tuple[str, datetime, str | None]:
        """(id stem, time, time_source) of a text line, which carries no id. With a frame time: a hash
        of node, time, message and the line's number among identical lines of that second. Without one
        (the web logger of mainline and security prints no time): the time of reading, said in
        ``time_source="read"``, and a hash of node, source, position and message, so re-reading the
        same file position gives the same id."""
        node = self._node(line)
        if stamp is None:
            digest = hashlib.sha256(f"{node}\0{line.source}\0{line.position}\0{message}".encode()).hexdigest()
            return "df-r" + digest[:32], self.clock(), "read"
        at = parse_time(stamp, "line timestamp")
        if at.timestamp() > self._horizon:
            self._not_future(at)
        seen = self._texts.get(line.source)
        if seen is None or seen[0] != stamp:
            seen = self._texts[line.source] = (stamp, {})
        at_positions = seen[1].setdefault(message, [])  # identical lines in one second stay apart, and a
        if line.position not in at_positions:  # line read again (a source restarted) keeps its number
            at_positions.append(line.position)
        nth = at_positions.index(line.position)
        return "df-t" + hashlib.sha256(f"{node}\0{stamp}\0{message}\0{nth}".encode()).hexdigest()[:32], at, None

    # ----- shape 4: audit entries and their text form ---------------------------------------------
    def _entry(self, r: AuditEntry, line: Line, _: str | None) -> list[dict[str, Any]]:
        node, ev, kind = self._node(line), r.event, r.event_type
        return self._audit(node, line, f"df-{source_id(r.id)}", r.timestamp, kind, ev, r.client_id, r.correlation_id)

    def _text(self, r: AuditText, line: Line, stamp: str | None) -> list[dict[str, Any]]:
        node = self._node(line)
        stem, at, time_source = self.text_stem(line, stamp, r.message)
        fields, kind = r.fields, r.kind
        as_entry = {"key_registered": ("KeyRegistration", True), "key_registration_failed": ("KeyRegistration", False),
                    "signature_verified": ("SignatureVerification", True),
                    "signature_failed": ("SignatureVerification", False),
                    "authentication_ok": ("AuthenticationAttempt", True),
                    "authentication_failed": ("AuthenticationAttempt", False)}.get(kind)  # fmt: skip
        logged = fields.get("type") if kind == "event_logged" else None
        if logged in ("encryption_encrypt", "encryption_decrypt"):  # the text does not say whether it succeeded:
            as_entry = ("EncryptionOperation", True)  # an attempt is a use of the master key all the same
            fields = {**fields, "operation": "Encrypt" if logged.endswith("encrypt") else "Decrypt"}
        if as_entry is None:
            extra = meta_attrs(fields, {"type", "client"}, "text")
            attrs = {"datafold.shape": "audit_text", "datafold.event": logged or r.title, "client_id": r.client,
                     "time_source": time_source, **extra}  # fmt: skip
            subject = text(fields.get("key_id")) or node_key(node)  # a client name is not a key
            return [make(f"{stem}-0", "security_event", subject, at, node=node, actor=r.client,
                         reason=f"SECURITY_AUDIT: {r.message}", attributes=attrs)]  # fmt: skip
        ev = {**fields, "success": as_entry[1], "permissions": []}
        return self._audit(node, line, stem, at, as_entry[0], ev, r.client, None, "audit_text", time_source)

    def _audit(self, node: str, line: Line, stem: str, at: datetime, kind: str, ev: dict[str, Any],
               client: str | None, corr: str | None, shape: str = "audit_entry",
               time_source: str | None = None) -> list[dict[str, Any]]:  # fmt: skip
        """Shape 4, either form: ``stem`` is the id stem (``df-<entry id>`` or the text hash)."""
        ok, key, error = ev.get("success"), ev.get("key_id"), ev.get("error")
        base = {"node": node, "actor": client, "correlation_id": corr}
        if kind == "EncryptionOperation" and ok:
            op = "encrypt" if ev["operation"] == "Encrypt" else "decrypt"
            return self._use(node, master_key(node), op, at, stem, line, MASTER_KEY)
        if kind == "SignatureVerification" and ok:
            return self._use(node, key, "verify", at, stem, line, CLIENT_KEY)
        if kind == "KeyRegistration" and ok:
            attrs = {"client_id": client, "permissions": ",".join(map(str, ev.get("permissions") or [])) or None,
                     "time_source": time_source}  # fmt: skip
            owner = ev["owner_id"]
            return [make(f"{stem}-0", "generated", key, at, owner=owner, attributes=attrs, **base, **CLIENT_KEY),
                    make(f"{stem}-1", "activated", key, at, attributes={"time_source": time_source},
                         **base)]  # fmt: skip
        if kind == "KeyRemoval" and ok:
            return [make(f"{stem}-0", "revoked", key, at, reason="key removed from the node", **base)]
        if kind == "AuthenticationAttempt" and ok:
            return []  # access granted: the request's signature verification is the use, counted there
        if kind == "ConfigurationChange":  # a setting of the node, not of any client's key
            subject = node_key(node)
        else:
            # never the client: a client name (``admin-console``) is not a key
            subject = key or (master_key(node) if kind == "EncryptionOperation" else node_key(node))
        rest = meta_attrs(ev, {"event_type", "key_id", "error", "success", "permissions", "client"}, "audit")
        attrs = {"datafold.shape": shape, "datafold.event_type": kind, "client_id": client, "error": error,
                 "time_source": time_source, **rest}  # fmt: skip
        if kind == "ConfigurationChange":
            base["actor"] = text(ev.get("admin_id")) or client
        reason = f"{kind} failed: {error}" if ok is False and error else f"{kind}" + (" failed" if ok is False else "")
        return [make(f"{stem}-0", "security_event", subject, at, reason=reason, attributes=attrs, **base)]

    # ----- shape 5: key status --------------------------------------------------------------------
    def _status_line(self, r: Any, line: Line, _: str | None) -> list[dict[str, Any]]:
        found = STATUS_URL.search(line.source)
        client = found.group(1) if found else getattr(r, "client_id", None)
        return self._answer(r, client, self._node(line))

    def _answer(self, r: Answer, client: str | None, node: str | None) -> list[dict[str, Any]]:
        if isinstance(r, Acknowledged):
            self.counts["answers.acknowledged"] += 1
            return []
        return self.tracker.handle(r, client, node)
