"""The JSON message shapes a DataFold node emits (the serde output of its structs, cited per shape
in docs/datafold.md), parsed into typed records (the text shapes are read in ``lines.py`` and
``plain.py``).

Strict where the structs are explicit (a documented field missing or of the wrong JSON type, a
``result`` or ``Duration`` of another form, a time that is not RFC 3339 / Unix seconds): the line
``Reject``s with a reason naming the field, because a half-understood record must not become a
key lifecycle fact. Tolerant elsewhere: extra fields are ignored, and variant names outside the
documented sets (a new ``event_type``, a new event-bus variant) parse, so the mapping can keep
them as generic security events instead of losing them.

The crypto audit and ``SECURITY_EVENT`` shapes are the bulk of a node log: they are checked with
plain dict lookups (no pydantic; see docs/datafold.md for the measured cost per line).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

NoneType = type(None)
OPT_STR = (str, NoneType)
KEY_STATUSES = frozenset({"active", "revoked", "suspended"})


class Reject(ValueError):
    """The line has a shape's marks but not its form; ``reason`` names the field or position."""

    def __init__(self, reason: str, shape: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.shape = shape  # set by ``parse`` when it knows which shape the line claimed to be


@dataclass(frozen=True, slots=True)
class Failure:
    error_type: str
    error_message: str
    error_code: str | None


Result = str | Failure  # "Success" | "Aborted" | "InProgress" | "Cancelled" | "Timeout" | Failure


@dataclass(slots=True)
class CryptoAudit:
    """Shape 1: a crypto audit event (log target ``crypto_audit`` / ``crypto_audit_alert``)."""

    event_id: str
    timestamp: datetime
    event_type: str
    severity: str
    component: str
    operation: str
    actor: str | None
    result: Result
    duration: float | None  # seconds
    metadata: dict[str, Any]
    correlation_id: str | None
    session_id: str | None
    stamp: str  # ``timestamp`` as the node wrote it (reused as keylife's occurred_at when already UTC)


@dataclass(slots=True)
class SecurityEvent:
    """Shape 2: ``SECURITY_EVENT: {json}``, one per signed request the node authenticated."""

    event_id: str
    correlation_id: str | None
    timestamp: datetime
    event_type: str
    severity: str
    client_info: dict[str, Any]  # ip_address, user_agent, key_id, forwarded_for (each str | None)
    request_info: dict[str, Any]
    error_details: dict[str, Any] | None
    metrics: dict[str, Any]


@dataclass(slots=True)
class BusEvent:
    """Shape 3: one event-bus event; ``fields`` are the variant's own fields besides ``base``."""

    envelope_id: str | None  # None in the bare form
    source_node: str | None  # ``PlatformInfo`` has no node id: None except in the reference samples
    target: str | None  # the target ``PlatformInfo.platform_type``, when there is one
    variant: str
    event_id: str
    timestamp: datetime
    severity: str
    component: str
    operation: str
    actor: str | None
    result: Result
    metadata: dict[str, Any]
    correlation_id: str | None
    fields: dict[str, Any]
    stamp: str  # ``base.timestamp`` as the node wrote it
    raw: dict[str, Any]  # ``{variant: body}`` as parsed: what the event ids are derived from


@dataclass(slots=True)
class AuditEntry:
    """Shape 4: an ``AuditLogEntry``; ``event`` holds the variant's fields, checked for known variants."""

    id: str
    timestamp: datetime
    client_id: str | None
    event_type: str
    event: dict[str, Any]
    correlation_id: str | None


@dataclass(slots=True)
class KeyStatus:
    """Shape 5: a successful key status answer."""

    registration_id: str
    client_id: str
    public_key: str
    key_name: str | None
    registered_at: datetime
    status: str
    last_used: datetime | None


@dataclass(slots=True)
class StatusError:
    """Shape 5: ``{"success": false, "error": {code, message, details}}``."""

    code: str
    message: str


# (shape, record, the frame's time as text when there was one, level): a plain tuple, built per line.
# shape: crypto_audit | security_event | event_bus | audit_entry | audit_text | key_status
Parsed = tuple[str, Any, str | None, str | None]


# ----- field checks -----------------------------------------------------------------------------
def _kind(kinds: type | tuple[type, ...]) -> str:
    names = {str: "a string", int: "an integer", bool: "a boolean", dict: "an object", list: "a list"}
    items = kinds if isinstance(kinds, tuple) else (kinds,)
    return " or ".join("null" if k is NoneType else names.get(k, k.__name__) for k in items)


def get(obj: dict[str, Any], name: str, kinds: type | tuple[type, ...], where: str = "") -> Any:
    """``obj[name]`` of one of ``kinds`` (a bool is not an integer here), else Reject naming it."""
    if name not in obj:
        raise Reject(f"{where}{name} is missing")
    value = obj[name]
    if not isinstance(value, kinds) or (
        isinstance(value, bool) and bool not in (kinds if isinstance(kinds, tuple) else (kinds,))
    ):
        raise Reject(f"{where}{name} must be {_kind(kinds)}, not {_json_type(value)}")
    return value


def _json_type(value: Any) -> str:
    return {NoneType: "null", bool: "a boolean", int: "an integer", float: "a number", str: "a string",
            list: "a list", dict: "an object"}.get(type(value), type(value).__name__)  # fmt: skip


def _uuid(value: str, where: str) -> str:
    if len(value) != 36 or value[8] != "-" or value[13] != "-" or value[18] != "-" or value[23] != "-":
        raise Reject(f"{where} is not a hyphenated UUID: {value[:60]!r}")
    return value


def parse_time(text: str, where: str) -> datetime:
    """An RFC 3339 time with an offset (nanoseconds are cut to microseconds)."""
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise Reject(f"{where} is not an RFC 3339 time: {text[:60]!r}") from None
    if value.tzinfo is None:
        raise Reject(f"{where} has no UTC offset: {text[:60]!r}")
    if value.year == 1 or value.year == 9999:  # only these can leave the range once in UTC
        try:
            value.astimezone(UTC)
        except OverflowError:
            raise Reject(f"{where} is outside years 0001-9999 in UTC: {text[:60]!r}") from None
    return value


def _unix(obj: dict[str, Any], where: str = "") -> datetime:
    seconds = get(obj, "timestamp", int, where)
    if not 0 <= seconds < 253402300800:  # year 10000
        raise Reject(f"{where}timestamp {seconds} is not a Unix time in seconds")
    return datetime.fromtimestamp(seconds, UTC)


def _result(value: Any, where: str) -> Result:
    if type(value) is str:
        return value
    if type(value) is dict and len(value) == 1 and type(value.get("Failure")) is dict:
        inner = value["Failure"]
        at = f"{where}.Failure."
        return Failure(get(inner, "error_type", str, at), get(inner, "error_message", str, at),
                       get(inner, "error_code", OPT_STR, at))  # fmt: skip
    raise Reject(f'{where} must be "Success", "Aborted", "InProgress" or {{"Failure": {{...}}}}')


def _duration(value: Any, where: str) -> float | None:
    if value is None:
        return None
    if type(value) is not dict:
        raise Reject(f"{where} must be a Duration {{secs, nanos}} or null")
    return get(value, "secs", int, f"{where}.") + get(value, "nanos", int, f"{where}.") / 1e9


def loads(text: str | bytes, what: str) -> Any:
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise Reject(f"{what} is not valid JSON: {exc}") from None


# ----- the shapes ---------------------------------------------------------------------------------
def crypto_audit(obj: Any) -> CryptoAudit:
    """Shape 1. The common case is one dict lookup and one type test per field; only a bad
    record pays for ``get``, which names what is wrong."""
    if type(obj) is not dict:
        raise Reject(f"crypto audit event must be a JSON object, not {_json_type(obj)}")
    try:
        eid, ts, etype, sev = obj["event_id"], obj["timestamp"], obj["event_type"], obj["severity"]
        comp, op, actor, meta = obj["component"], obj["operation"], obj["actor"], obj["metadata"]
        corr, sess, result, dur = obj["correlation_id"], obj["session_id"], obj["result"], obj["duration"]
    except KeyError as exc:
        raise Reject(f"{exc.args[0]} is missing") from None
    if not (type(eid) is str and type(ts) is str and type(etype) is str and type(sev) is str and type(comp) is str
            and type(op) is str and type(meta) is dict and (actor is None or type(actor) is str)
            and (corr is None or type(corr) is str) and (sess is None or type(sess) is str)):  # fmt: skip
        for name, kinds in (("event_id", str), ("timestamp", str), ("event_type", str), ("severity", str),
                            ("component", str), ("operation", str), ("actor", OPT_STR), ("metadata", dict),
                            ("correlation_id", OPT_STR), ("session_id", OPT_STR)):  # fmt: skip
            get(obj, name, kinds)
    if len(eid) != 36 or eid[8] != "-" or eid[23] != "-":
        _uuid(eid, "event_id")
    if corr is not None:
        _uuid(corr, "correlation_id")
    try:
        when = datetime.fromisoformat(ts)
    except ValueError:
        when = parse_time(ts, "timestamp")  # raises, naming the field
    if when.tzinfo is None or when.year == 1 or when.year == 9999:
        when = parse_time(ts, "timestamp")
    if type(dur) is dict and type(secs := dur.get("secs")) is int and type(nanos := dur.get("nanos")) is int:
        seconds: float | None = secs + nanos / 1e9
    else:
        seconds = _duration(dur, "duration")
    result = "Success" if result == "Success" else _result(result, "result")
    return CryptoAudit(eid, when, etype, sev, comp, op, actor, result,
                       seconds, meta, corr, sess, ts)  # fmt: skip


def security_event(obj: Any) -> SecurityEvent:
    """Shape 2 (the JSON after ``SECURITY_EVENT: ``); fast path as for ``crypto_audit``."""
    if type(obj) is not dict:
        raise Reject(f"SECURITY_EVENT must be a JSON object, not {_json_type(obj)}")
    try:
        eid, corr, ts, etype = obj["event_id"], obj["correlation_id"], obj["timestamp"], obj["event_type"]
        sev, client, req, err, metrics = (
            obj["severity"],
            obj["client_info"],
            obj["request_info"],
            obj["error_details"],
            obj["metrics"],
        )
        ip, agent, key, fwd = client["ip_address"], client["user_agent"], client["key_id"], client["forwarded_for"]
    except (KeyError, TypeError):
        ok = False
    else:
        ok = (type(eid) is str and len(eid) == 36 and (corr is None or type(corr) is str) and type(ts) is int
              and 0 <= ts < 253402300800 and type(etype) is str and type(sev) is str and type(req) is dict
              and (err is None or type(err) is dict) and type(metrics) is dict and (ip is None or type(ip) is str)
              and (agent is None or type(agent) is str) and (key is None or type(key) is str)
              and (fwd is None or type(fwd) is str))  # fmt: skip
    if not ok:  # the slow path names the field
        if obj.get("truncated") is True:  # security signature_auth.rs:1316-1324, security2 auth_middleware.rs:615-623
            raise Reject(f"SECURITY_EVENT truncated by the node: the event was {obj.get('original_size')} bytes, "
                         "over its security_logging.max_log_entry_size (default 8192)")  # fmt: skip
        client = get(obj, "client_info", dict)
        for name in ("ip_address", "user_agent", "key_id", "forwarded_for"):
            get(client, name, OPT_STR, "client_info.")
        eid, corr, ts = get(obj, "event_id", str), get(obj, "correlation_id", OPT_STR), _unix(obj)
        etype, sev, req = get(obj, "event_type", str), get(obj, "severity", str), get(obj, "request_info", dict)
        err, metrics = get(obj, "error_details", (dict, NoneType)), get(obj, "metrics", dict)
    _uuid(eid, "event_id")
    when = ts if isinstance(ts, datetime) else datetime.fromtimestamp(ts, UTC)
    return SecurityEvent(eid, corr, when, etype, sev, client, req, err, metrics)


BUS_VARIANTS = frozenset({"Authentication", "Authorization", "Configuration", "Performance", "Security",
                          "Verification", "System", "KeyRotation", "Generic"})  # fmt: skip


def is_bare_bus(obj: dict[str, Any]) -> bool:
    """The bare ``SecurityEvent`` the event bus's ``AuditLogHandler`` writes, one per line
    (security events/handlers.rs:108, serde's external tag): ``{"KeyRotation": {"base": ...}}``."""
    if len(obj) != 1:
        return False
    ((variant, body),) = obj.items()
    return variant in BUS_VARIANTS and type(body) is dict and ("base" in body or "event_id" in body)


def bus_event(obj: dict[str, Any]) -> BusEvent:
    """Shape 3: an ``EventEnvelope`` (security events/transport.rs:651) or the bare externally tagged
    ``SecurityEvent`` (``{"KeyRotation": {...}}``). ``source`` and ``target`` are ``PlatformInfo``
    objects (``target`` may be null) that name no node; ``raw`` keeps the event for its id."""
    if "envelope_id" in obj or "event" in obj:
        envelope_id = get(obj, "envelope_id", str)
        source = get(obj, "source", dict)
        node = text(source.get("node_id"))  # the reference samples have one; the real PlatformInfo does not
        target = get(obj, "target", (dict, str, NoneType))  # a str only in the reference samples
        event = get(obj, "event", dict)
    else:
        envelope_id, node, target, event = None, None, None, obj
    if len(event) != 1:
        raise Reject(f"event must hold exactly one variant, not {len(event)} ({', '.join(sorted(event)) or 'none'})")
    ((variant, body),) = event.items()
    if type(body) is not dict:
        raise Reject(f"event.{variant} must be an object, not {_json_type(body)}")
    if variant == "Generic" and "base" not in body:  # Generic(VerificationEvent): the body is the base
        at, base, fields = "event.Generic.", body, {}
    else:
        at = f"event.{variant}.base."
        base = get(body, "base", dict, f"event.{variant}.")
        fields = {k: v for k, v in body.items() if k != "base"}
    eid = _uuid(get(base, "event_id", str, at), f"{at}event_id")
    if variant == "KeyRotation":  # security events/event_types.rs:287
        at_kr = "event.KeyRotation."
        for name, kinds in (("rotation_type", str), ("old_key_id", OPT_STR), ("new_key_id", OPT_STR),
                            ("operation_id", OPT_STR), ("target_nodes", list), ("propagation_status", str),
                            ("rotation_reason", OPT_STR), ("user_id", OPT_STR)):  # fmt: skip
            get(body, name, kinds, at_kr)
        if not all(type(n) is str for n in body["target_nodes"]):
            raise Reject(f"{at_kr}target_nodes must be a list of node id strings")
    stamp = get(base, "timestamp", str, at)
    when = parse_time(stamp, f"{at}timestamp")
    result = _result(get(base, "result", (str, dict), at), f"{at}result")
    platform = text(target.get("platform_type")) if type(target) is dict else target
    return BusEvent(
        envelope_id, node, platform, variant, eid, when, get(base, "severity", str, at),
        get(base, "component", str, at), get(base, "operation", str, at), get(base, "actor", OPT_STR, at),
        result, get(base, "metadata", dict, at), get(base, "correlation_id", OPT_STR, at), fields, stamp, event,
    )  # fmt: skip


def text(value: Any) -> str | None:
    """A non-empty string, else None (optional text fields of the node's records)."""
    return value if isinstance(value, str) and value else None


_LIST = list
AUDIT_FIELDS: dict[str, tuple[tuple[str, Any], ...]] = {
    "KeyRegistration": (("key_id", str), ("owner_id", str), ("permissions", _LIST), ("success", bool),
                        ("error", OPT_STR)),
    "KeyRemoval": (("key_id", str), ("success", bool), ("error", OPT_STR)),
    "SignatureVerification": (("key_id", str), ("owner_id", OPT_STR), ("success", bool), ("timestamp_valid", bool),
                              ("permissions_checked", (list, NoneType)), ("error", OPT_STR)),
    "EncryptionOperation": (("operation", str), ("data_size", int), ("success", bool), ("error", OPT_STR)),
    "AuthenticationAttempt": (("endpoint", str), ("key_id", OPT_STR), ("owner_id", OPT_STR), ("success", bool),
                              ("required_permissions", (list, NoneType)), ("error", OPT_STR)),
    "ConfigurationChange": (("setting", str), ("old_value", OPT_STR), ("new_value", str), ("admin_id", OPT_STR)),
}  # fmt: skip


def audit_entry(obj: dict[str, Any]) -> AuditEntry:
    """Shape 4: ``AuditLogEntry``; ``event`` is internally tagged by ``event_type``."""
    event = get(obj, "event", dict)
    kind = get(event, "event_type", str, "event.")
    for name, kinds in AUDIT_FIELDS.get(kind, ()):
        get(event, name, kinds, "event.")
    if kind == "EncryptionOperation" and event["operation"] not in ("Encrypt", "Decrypt"):
        raise Reject(f'event.operation must be "Encrypt" or "Decrypt", not {event["operation"][:40]!r}')
    get(obj, "metrics", (dict, NoneType))
    return AuditEntry(get(obj, "id", str), _unix(obj), get(obj, "client_id", OPT_STR), kind, event,
                      get(obj, "correlation_id", OPT_STR))  # fmt: skip


def key_status(obj: dict[str, Any]) -> KeyStatus | StatusError:
    """Shape 5: ``{"success": true, "data": {...}}`` or ``{"success": false, "error": {...}}``."""
    if type(obj) is not dict:
        raise Reject(f"key status answer must be a JSON object, not {_json_type(obj)}")
    if not get(obj, "success", bool):
        error = get(obj, "error", dict)
        return StatusError(get(error, "code", str, "error."), get(error, "message", str, "error."))
    data = get(obj, "data", dict)
    at = "data."
    public_key = get(data, "public_key", str, at)
    if len(public_key) < 16 or len(public_key) % 2 or not all(c in "0123456789abcdefABCDEF" for c in public_key):
        raise Reject("data.public_key must be the hex of the public key (at least 8 bytes)")
    status = get(data, "status", str, at)
    if status not in KEY_STATUSES:
        raise Reject(f"data.status must be one of active, revoked, suspended, not {status[:40]!r}")
    used = get(data, "last_used", OPT_STR, at)
    registered = parse_time(get(data, "registered_at", str, at), "data.registered_at")
    last_used = None if used is None else parse_time(used, "data.last_used")
    return KeyStatus(
        get(data, "registration_id", str, at), get(data, "client_id", str, at), public_key.lower(),
        get(data, "key_name", OPT_STR, at), registered, status, last_used,
    )  # fmt: skip
