"""Incident routes: the workflow (``incident`` scope), reading (``read``), evidence (``audit``), and
Alertmanager's webhook (``alerts``).

* ``GET /v1/incidents[?status=&severity=&limit=]``, ``GET /v1/incidents/{id}[?timeline_limit=]`` (with its timeline)
* ``POST /v1/incidents`` {title, severity, keys?, nodes?, assignee?}
* ``POST /v1/incidents/{id}/notes`` {text, id?}, ``/assign`` {assignee, id?}, ``/status`` {status, reason?},
  ``/keys`` {keys?, nodes?}
* ``GET /v1/incidents/{id}/export``: the report with its proof bundle (docs/incident-response.md)
* ``POST /v1/alertmanager/webhook``: Alertmanager's webhook payload version 4

The work is ``keylife.response``'s; these handlers parse, authorise and turn its refusals into
problem+json.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Annotated, Any, Literal, TypeVar

import orjson
from fastapi import FastAPI, Query, Request
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from keylife.api.auth import Principal
from keylife.api.bodies import read_body
from keylife.api.problems import JSONBody, Problem
from keylife.api.services import Services
from keylife.ingest.ledger import EventRejected, LedgerStopped
from keylife.response import alerts
from keylife.response.incident_report import report, timeline
from keylife.response.incidents import IncidentService, Refusal

BODY_MAX = 64 * 1024
WEBHOOK_MAX = 4 * 1024 * 1024  # a notification of a large group
Severity = Literal["critical", "high", "medium", "low"]
Status = Literal["open", "mitigating", "resolved", "closed"]
Name = Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:@/+=-]*$")]
KeyId = Annotated[str, StringConstraints(min_length=1, max_length=256, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:@/+=-]*$")]
EventId = Name


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class OpenBody(_Body):
    title: Annotated[str, StringConstraints(min_length=1, max_length=512)]
    severity: Severity
    keys: Annotated[list[KeyId], Field(max_length=256)] = []
    nodes: Annotated[list[Name], Field(max_length=256)] = []
    assignee: Name | None = None


class NoteBody(_Body):
    text: Annotated[str, StringConstraints(min_length=1, max_length=1024)]
    id: EventId | None = None


class AssignBody(_Body):
    assignee: Name
    id: EventId | None = None


class StatusBody(_Body):
    status: Status
    reason: Annotated[str, StringConstraints(min_length=1, max_length=1024)] | None = None


class LinkBody(_Body):
    keys: Annotated[list[KeyId], Field(max_length=256)] = []
    nodes: Annotated[list[Name], Field(max_length=256)] = []


M = TypeVar("M", bound=BaseModel)


def _parse(model: type[M], raw: bytes) -> M:
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        errors = [{"field": ".".join(str(p) for p in e["loc"]) or "body", "message": e["msg"]} for e in exc.errors()]
        summary = "; ".join(f"{e['field']}: {e['message']}" for e in errors[:20])
        raise Problem(422, "invalid-request", "The request is not valid", summary, errors=errors[:100]) from None


def add_incident_routes(app: FastAPI, rt: Services, require: Callable[[str], Any]) -> None:
    def service() -> IncidentService:
        if rt.incidents is None:
            raise Problem(503, "incidents-unavailable", "Incidents unavailable", "this server runs no incident service")
        return rt.incidents

    async def call(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        try:
            return await asyncio.to_thread(fn, *args, **kwargs)
        except Refusal as exc:
            raise Problem(exc.status, exc.kind, exc.title, exc.detail, **exc.extra) from None
        except (LedgerStopped, TimeoutError) as exc:
            raise Problem(503, "journal-unavailable", "Journal unavailable",
                          f"the incident record cannot be made durable now ({exc or 'timed out'}); retry later",
                          {"Retry-After": "5"}) from None  # fmt: skip
        except EventRejected as exc:
            raise Problem(422, "event-not-journalable", "Record cannot be journaled", str(exc)) from None

    @app.get("/v1/incidents", tags=["incidents"])
    async def list_incidents(
        status: Status | None = None,
        severity: Severity | None = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        _: Principal = require("read"),
    ) -> JSONBody:
        items = await call(service().list, status=status, severity=severity, limit=limit)
        return JSONBody({"items": items})

    @app.post("/v1/incidents", tags=["incidents"], status_code=201)
    async def open_incident(request: Request, principal: Principal = require("incident")) -> JSONBody:
        body = _parse(OpenBody, await read_body(request, BODY_MAX))
        opened = await call(service().open, actor=principal.name, title=body.title, severity=body.severity,
                            keys=body.keys, nodes=body.nodes, assignee=body.assignee)  # fmt: skip
        return JSONBody(opened, status_code=201)

    @app.get("/v1/incidents/{incident}", tags=["incidents"])
    async def show(
        incident: str,
        timeline_limit: Annotated[int, Query(ge=1, le=10000, description="latest timeline entries")] = 1000,
        _: Principal = require("read"),
    ) -> JSONBody:
        found = await call(service().get, incident)
        seqs = found.pop("timeline_seqs")
        found["timeline_omitted"] = max(0, len(seqs) - timeline_limit)  # the oldest; the export has them all
        found["timeline"] = await asyncio.to_thread(timeline, rt.journal, seqs[-timeline_limit:])
        return JSONBody(found)

    @app.post("/v1/incidents/{incident}/notes", tags=["incidents"])
    async def note(incident: str, request: Request, principal: Principal = require("incident")) -> JSONBody:
        body = _parse(NoteBody, await read_body(request, BODY_MAX))
        outcome = await call(service().note, incident, actor=principal.name, text=body.text, event_id=body.id)
        return _answer(incident, outcome)

    @app.post("/v1/incidents/{incident}/assign", tags=["incidents"])
    async def assign(incident: str, request: Request, principal: Principal = require("incident")) -> JSONBody:
        body = _parse(AssignBody, await read_body(request, BODY_MAX))
        outcome = await call(service().assign, incident, actor=principal.name, assignee=body.assignee,
                             event_id=body.id)  # fmt: skip
        return _answer(incident, outcome)

    @app.post("/v1/incidents/{incident}/status", tags=["incidents"])
    async def status(incident: str, request: Request, principal: Principal = require("incident")) -> JSONBody:
        body = _parse(StatusBody, await read_body(request, BODY_MAX))
        outcome = await call(service().set_status, incident, actor=principal.name, status=body.status,
                             reason=body.reason)  # fmt: skip
        return _answer(incident, outcome, incident_status=body.status)

    @app.post("/v1/incidents/{incident}/keys", tags=["incidents"])
    async def link(incident: str, request: Request, principal: Principal = require("incident")) -> JSONBody:
        body = _parse(LinkBody, await read_body(request, BODY_MAX))
        if not body.keys and not body.nodes:
            raise Problem(422, "invalid-request", "The request is not valid", "give keys, nodes or both")
        outcome = await call(service().link, incident, actor=principal.name, keys=body.keys, nodes=body.nodes)
        return _answer(incident, outcome)

    @app.get("/v1/incidents/{incident}/export", tags=["incidents"])
    async def export(incident: str, principal: Principal = require("audit")) -> JSONBody:
        found = await call(service().get, incident)
        try:
            return JSONBody(await asyncio.to_thread(report, rt.journal, found, principal.name))
        except ValueError as exc:
            raise Problem(503, "no-covering-checkpoint", "Evidence not ready", str(exc), {"Retry-After": "2"}) from None

    @app.post("/v1/alertmanager/webhook", tags=["incidents"])
    async def alertmanager(request: Request, principal: Principal = require("alerts")) -> JSONBody:
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if kind != "application/json":
            raise Problem(415, "unsupported-media-type", "Unsupported content type",
                          f"Alertmanager sends application/json, not {kind or 'nothing'!r}")  # fmt: skip
        raw = await read_body(request, WEBHOOK_MAX)
        try:
            version = orjson.loads(raw).get("version")
        except (orjson.JSONDecodeError, AttributeError):
            raise Problem(400, "invalid-json", "Not JSON", "the body is not a JSON object") from None
        if version != "4":
            raise Problem(422, "unsupported-webhook-version", "Unsupported webhook version",
                          f"version is {version!r}; keylife accepts Alertmanager's webhook payload version \"4\"",
                          field="version")  # fmt: skip
        payload = _parse(alerts.WebhookPayload, raw)
        results = await call(alerts.handle, service(), payload, principal.name)
        return JSONBody({"receiver": payload.receiver, "results": results})


def _answer(incident: str, outcome: Any, **extra: Any) -> JSONBody:
    return JSONBody({"incident": incident, "status": outcome.status, "id": outcome.id, "seq": outcome.seq} | extra)
