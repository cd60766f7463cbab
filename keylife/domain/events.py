"""The one key lifecycle event model: what producers send and what the journal stores.

Every limit here is deliberate: an event ends up in a journal kept for years and in SIEMs
with their own line limits, so sizes are bounded and every violation names its field.
"""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    model_validator,
)

from keylife.common.canonical import canonical
from keylife.domain.lifecycle import TARGET_STATE, KeyState

MAX_SAFE_INT = 2**53 - 1  # RFC 8785 / I-JSON: integers beyond this do not survive JSON tooling
MAX_EVENT_BYTES = 16 * 1024
MAX_FUTURE_SKEW = timedelta(hours=24)


class EventType(StrEnum):
    GENERATED = "generated"
    ACTIVATED = "activated"
    SUSPENDED = "suspended"
    REACTIVATED = "reactivated"
    DEACTIVATED = "deactivated"
    ROTATED = "rotated"
    EXPIRED = "expired"
    REVOKED = "revoked"
    COMPROMISED = "compromised"
    DESTROYED = "destroyed"
    USAGE_REPORT = "usage_report"
    PROPAGATED = "propagated"
    POLICY_VIOLATION = "policy_violation"
    SECURITY_EVENT = "security_event"
    # Written by keylife itself; producers may not send them.
    ADMIN_ACTION = "admin_action"
    COMMAND_REFUSED = "command_refused"
    AUTH_FAILURE = "auth_failure"
    JOURNAL_RECOVERED = "journal_recovered"
    SIGNING_KEY_ROTATED = "signing_key_rotated"
    FORWARD_QUARANTINED = "forward_quarantined"
    JOURNAL_PRUNED = "journal_pruned"  # keylife journal prune (keylife/journal/prune.py)
    # Incident response (keylife/response/): written by keylife for an authorised person or a rule.
    INCIDENT = "incident"  # opened, status, assigned, note, linked, alert
    BULK_OPERATION = "bulk_operation"  # a bulk plan started / finished: plan, selector, actor, counts
    LOCKDOWN = "lockdown"  # a lockdown applied or released
    APPROVAL = "approval"  # dual control: requested, granted, expired
    # Compliance and analytics: written by keylife.
    ANOMALY = "anomaly"  # a usage pattern judged against the key's own baseline (details: kind, score, baseline)
    REPORT = "report"  # a compliance report generated (details: kind, period, checkpoint, digest)


SYSTEM_TYPES = frozenset(
    {
        EventType.ADMIN_ACTION,
        EventType.COMMAND_REFUSED,
        EventType.AUTH_FAILURE,
        EventType.JOURNAL_RECOVERED,
        EventType.SIGNING_KEY_ROTATED,
        EventType.FORWARD_QUARANTINED,
        EventType.JOURNAL_PRUNED,
        EventType.INCIDENT,
        EventType.BULK_OPERATION,
        EventType.LOCKDOWN,
        EventType.APPROVAL,
        EventType.ANOMALY,
        EventType.REPORT,
    }
)
# Records that carry ``details`` (structured fields of their own); no other type may.
DETAILED_TYPES = frozenset(
    {
        EventType.INCIDENT,
        EventType.BULK_OPERATION,
        EventType.LOCKDOWN,
        EventType.APPROVAL,
        EventType.ANOMALY,
        EventType.REPORT,
    }
)
STATE_TYPES = frozenset(EventType(t) for t in TARGET_STATE)
# Events that concern no single key.
KEYLESS_TYPES = frozenset(
    {
        EventType.AUTH_FAILURE,
        EventType.JOURNAL_RECOVERED,
        EventType.SIGNING_KEY_ROTATED,
        EventType.ADMIN_ACTION,
        EventType.FORWARD_QUARANTINED,
        EventType.JOURNAL_PRUNED,
        *DETAILED_TYPES,
    }
)

_KEYLESS = frozenset(str(t) for t in KEYLESS_TYPES)
_DETAILED = frozenset(str(t) for t in DETAILED_TYPES)

_ID_RE = r"^[A-Za-z0-9][A-Za-z0-9._:@/+=-]*$"
_NAME_RE = r"^[A-Za-z0-9][A-Za-z0-9._:@/+=-]*$"
# Python's ``$`` also matches before a trailing newline, so every Python-side guard is a
# ``fullmatch``; the ``pattern=`` constraints run in pydantic-core's Rust regex, where ``$`` is
# the end of the text (tests/test_ingest_validation.py proves both with a trailing "\n").
_ATTR_KEY_RE = re.compile(r"[a-z][a-z0-9_.]{0,62}")

EventId = Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=_ID_RE)]
KeyId = Annotated[str, StringConstraints(min_length=1, max_length=256, pattern=_ID_RE)]
Name = Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=_NAME_RE)]
Word = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")]
Text = Annotated[str, StringConstraints(min_length=1, max_length=1024)]
Count = Annotated[int, Field(ge=0, le=MAX_SAFE_INT)]
Operation = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,31}$")]


def _utc_representable(value: datetime) -> datetime:
    """Refuse a time that leaves years 0001-9999 once converted to UTC
    (``9999-12-31T23:59:59-01:00``): ``payload`` could not write it, and the writer would fail
    on it instead of the producer getting a 422 naming the field. Only years 1 and 9999 can
    overflow, so the common case is one comparison."""
    if (value.year == 1 or value.year == 9999) and value.utcoffset():
        try:
            value.astimezone(UTC)
        except OverflowError:
            raise ValueError(
                f"{value.isoformat()} is outside 0001-01-01T00:00:00Z..9999-12-31T23:59:59.999999Z in UTC"
            ) from None
    return value


# Any offset is accepted; ``payload`` writes every time in UTC (normalising here, per field,
# would cost a conversion per datetime on the ingest hot path; the range check above is cheap).
UtcTime = Annotated[AwareDatetime, AfterValidator(_utc_representable)]


DetailValue = (
    Annotated[str, StringConstraints(max_length=4096)]
    | Annotated[int, Field(ge=-MAX_SAFE_INT, le=MAX_SAFE_INT)]
    | bool
    | Annotated[list[Annotated[str, StringConstraints(max_length=256)]], Field(max_length=256)]
)


def _check_details(value: dict[str, Any] | None) -> dict[str, Any] | None:
    if value is None:
        return None
    for key in value:
        if not _ATTR_KEY_RE.fullmatch(key):
            raise ValueError(f"details name {key!r} must match ^{_ATTR_KEY_RE.pattern}$")
    return value


def _check_attributes(value: dict[str, str] | None) -> dict[str, str] | None:
    if value is None:
        return None
    for key, item in value.items():
        if not _ATTR_KEY_RE.fullmatch(key):
            raise ValueError(f"attribute name {key!r} must match ^{_ATTR_KEY_RE.pattern}$")
        if len(item) > 256:
            raise ValueError(f"attribute {key!r} is {len(item)} characters long; at most 256")
    return value


class Event(BaseModel):
    """A key lifecycle event as a producer sends it (``observed_at`` is the journal's)."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_enum_values=True)

    id: EventId
    type: EventType
    key_id: KeyId | None = None
    occurred_at: UtcTime
    node: Name | None = None
    actor: Name | None = None
    reason: Text | None = None
    correlation_id: EventId | None = None
    origin: Literal["observation", "command"] = "observation"

    algorithm: Word | None = None
    key_size: Annotated[int, Field(ge=1, le=65536)] | None = None
    curve: Word | None = None
    purpose: Word | None = None
    owner: Name | None = None
    expires_at: UtcTime | None = None
    predecessor: KeyId | None = None
    successor: KeyId | None = None
    data_instances: Annotated[list[Name], Field(max_length=64)] | None = None

    usage: Annotated[dict[Operation, Count], Field(max_length=32)] | None = None
    interval_start: UtcTime | None = None
    interval_end: UtcTime | None = None
    state: KeyState | None = None
    violation: Word | None = None
    attributes: Annotated[dict[str, str], Field(max_length=32), AfterValidator(_check_attributes)] | None = None
    # Structured fields of keylife's own records (DETAILED_TYPES): an incident's severity and
    # status, a bulk plan's selector and counts. Bounded: strings, safe integers, booleans,
    # lists of at most 256 short strings.
    details: Annotated[dict[str, DetailValue], Field(max_length=64), AfterValidator(_check_details)] | None = None

    @model_validator(mode="after")
    def _fields_for_type(self) -> Event:
        t: str = self.type  # plain strings below: enum attribute access is slow on the hot path
        if self.key_id is None and t not in _KEYLESS:
            raise ValueError(f"key_id is required for '{t}' events")
        if t == "rotated" and not self.successor:
            raise ValueError("successor is required for 'rotated' events (the key that replaces key_id)")
        if t == "rotated" and self.successor == self.key_id:
            raise ValueError("successor must differ from key_id")
        if t == "usage_report":
            if not self.usage:
                raise ValueError("usage is required for 'usage_report' events: counts per operation")
            if self.interval_start and self.interval_end and self.interval_end < self.interval_start:
                raise ValueError("interval_end is before interval_start")
        elif self.usage is not None:
            raise ValueError(f"usage is only allowed on 'usage_report' events, not '{t}'")
        if t == "propagated" and (self.node is None or self.state is None):
            raise ValueError("'propagated' events need node and state (the state the node applied)")
        if t == "policy_violation" and not self.violation:
            raise ValueError("violation is required for 'policy_violation' events (the rule broken)")
        if self.details is not None and t not in _DETAILED:
            raise ValueError(f"details are only allowed on {', '.join(sorted(_DETAILED))} records, not '{t}'")
        return self

    def payload(self) -> dict[str, Any]:
        """The event as the journal stores it: JSON types only, absent fields and the default
        origin omitted, every time in UTC (a time sent with another offset is converted here,
        not in a per-field validator on the ingest hot path)."""
        # The serializer itself: model_dump's Python wrapper costs as much as the dump.
        out = self.__pydantic_serializer__.to_python(self, mode="json", exclude_none=True, exclude_defaults=True)
        for name in _TIME_FIELDS:
            value = getattr(self, name)
            if value is not None and value.utcoffset():
                out[name] = _fmt(value)
        return out


_TIME_FIELDS = ("occurred_at", "expires_at", "interval_start", "interval_end")


def _fmt(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def format_time(value: datetime) -> str:
    """RFC 3339 in UTC with a ``Z``, microseconds only when there are any."""
    return _fmt(value)


def check_not_future(event: Event, now: datetime) -> str | None:
    """A clock far ahead of ours is an error in the producer, named plainly."""
    if event.occurred_at - now > MAX_FUTURE_SKEW:
        return f"occurred_at {_fmt(event.occurred_at)} is more than 24h ahead of the server clock"
    return None


def event_digest(payload: dict[str, Any], canonical_bytes: bytes | None = None) -> bytes:
    """What makes two events with one id "the same" for idempotent ingest.

    A command is stamped with the server clock when it arrives, so its retry differs only in
    ``occurred_at``; that field is left out of a command's digest so a retry is a duplicate.
    ``canonical_bytes`` (``canonical(payload)``, when the caller has it) saves a serialisation.
    """
    if payload.get("origin") == "command":
        return hashlib.sha256(canonical({k: v for k, v in payload.items() if k != "occurred_at"})).digest()
    return hashlib.sha256(canonical(payload) if canonical_bytes is None else canonical_bytes).digest()


def validate_notice(notice: dict[str, Any]) -> Event:
    """A forwarder's quarantine notice, validated as the one event type it may be."""
    event = Event.model_validate(notice)
    if event.type != EventType.FORWARD_QUARANTINED:
        raise ValueError(f"a forwarder notice must be a '{EventType.FORWARD_QUARANTINED}' event, not '{event.type}'")
    return event
