"""Parsing an ingest body into events, line by line, with an exact error for each bad line.

A body is one JSON event (``application/json``) or NDJSON (``application/x-ndjson``). Every
line is checked before anything is written: if any line is bad the whole request is refused
(422) with one error per bad line, so a producer fixes and resends, and ingest stays
idempotent on event ids.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import orjson
from pydantic import ValidationError

from keylife.domain.events import MAX_EVENT_BYTES, SYSTEM_TYPES, Event, check_not_future

NDJSON_TYPES = frozenset({"application/x-ndjson", "application/ndjson", "application/jsonl", "application/json-seq"})
JSON_TYPES = frozenset({"application/json"})


@dataclass
class LineError:
    line: int
    message: str
    field: str | None = None
    id: str | None = None

    def as_dict(self) -> dict[str, object]:
        out: dict[str, object] = {"line": self.line, "message": self.message}
        if self.field:
            out["field"] = self.field
        if self.id:
            out["id"] = self.id
        return out


def split_body(body: bytes, ndjson: bool) -> list[tuple[int, bytes]]:
    """(line number, bytes) for each non-blank line; a JSON body is line 1."""
    if not ndjson:
        return [(1, body)]
    return [(n, raw) for n, raw in enumerate(body.split(b"\n"), start=1) if raw.strip()]


def parse_lines(lines: list[tuple[int, bytes]], now: datetime | None = None) -> tuple[list[Event], list[LineError]]:
    """Validate every line on its own, so each result is exactly what that line alone says.

    Lines are never joined into one JSON array first: a string left open on one line and closed
    on the next (``{"reason":"}`` / ``{", ...}``) would shift the object boundaries and turn lines
    that are each invalid into valid events with the wrong line numbers. One pydantic-core call
    per line costs about 10% more parsing time than one call for the joined batch.
    """
    now = now or datetime.now(UTC)
    parsed: list[tuple[int, Event]] = []
    errors: list[LineError] = []
    validate = Event.model_validate_json
    for number, raw in lines:
        if len(raw) > MAX_EVENT_BYTES:
            errors.append(LineError(number, f"line is {len(raw)} bytes; an event may be at most {MAX_EVENT_BYTES}"))
            continue
        try:
            parsed.append((number, validate(raw)))
        except ValidationError as exc:
            errors += _line_errors(number, exc, raw)
    events, rule_errors = _check_rules(parsed, now)
    if not errors:
        return events, rule_errors
    return events, sorted(errors + rule_errors, key=lambda e: e.line)


def _check_rules(parsed: list[tuple[int, Event]], now: datetime) -> tuple[list[Event], list[LineError]]:
    """What the schema alone cannot say: reserved types, commands, clocks far ahead."""
    events: list[Event] = []
    errors: list[LineError] = []
    for number, event in parsed:
        if event.type in SYSTEM_TYPES:
            errors.append(LineError(number, f"type '{event.type}' is written by keylife itself", "type", event.id))
        elif event.origin == "command":
            errors.append(
                LineError(number, "commands go through POST /v1/keys/{key_id}/commands, not ingest", "origin", event.id)
            )
        elif (skew := check_not_future(event, now)) is not None:
            errors.append(LineError(number, skew, "occurred_at", event.id))
        else:
            events.append(event)
    return events, errors


def _line_errors(number: int, exc: ValidationError, raw: bytes) -> list[LineError]:
    event_id = _peek_id(raw)
    out = []
    for err in exc.errors(include_url=False):
        field = ".".join(str(part) for part in err["loc"]) or None
        message = err["msg"]
        if err["type"] == "json_invalid":
            message = f"malformed JSON: {err.get('ctx', {}).get('error', message)}"
        elif err["type"] == "model_type":
            message = "each line must be a JSON object (one event)"
        elif err["type"] == "enum" and field == "type":
            message = f"unknown event type {err.get('input')!r}; expected one of: {err['ctx']['expected']}"
        elif err["type"] == "extra_forbidden":
            message = "unknown field"
        elif err["type"] == "value_error":
            message = message.removeprefix("Value error, ")
        out.append(LineError(number, message, field, event_id))
    return out


def _peek_id(raw: bytes) -> str | None:
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    if isinstance(value, dict) and isinstance(value.get("id"), str):
        return value["id"][:128]
    return None
