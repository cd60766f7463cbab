"""HTTP routes. Handlers stay thin: parse, authorize, hand to the ledger or the registry, answer."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import orjson
from fastapi import Depends, FastAPI, Query, Request
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, Field, ValidationError
from starlette.responses import PlainTextResponse, Response

from keylife import __version__
from keylife.api.access import auth_failure, deny
from keylife.api.auth import Principal
from keylife.api.bodies import install_disconnect_handler, no_body_parameters, read_body
from keylife.api.bulk_routes import add_bulk_routes, destroy_needs_approval
from keylife.api.incident_routes import add_incident_routes
from keylife.api.journal_routes import add_journal_routes
from keylife.api.problems import JSONBody, Problem, install
from keylife.api.report_routes import add_report_routes
from keylife.api.revocation_routes import add_revocation_routes
from keylife.api.rotation_route import add_rotation_route
from keylife.api.scrapes import ScrapeCache
from keylife.api.services import Services
from keylife.common.scopes import COMMAND_SCOPES
from keylife.domain.events import Event, EventType, format_time, validate_notice
from keylife.domain.lifecycle import KeyState
from keylife.ingest import lines as ingest
from keylife.ingest.ledger import EventRejected, LedgerStopped, Outcome
from keylife.journal.reader import get_entries

log = logging.getLogger("keylife.api")

COMMANDS: dict[str, EventType] = {
    "activate": EventType.ACTIVATED,
    "suspend": EventType.SUSPENDED,
    "reactivate": EventType.REACTIVATED,
    "deactivate": EventType.DEACTIVATED,
    "revoke": EventType.REVOKED,
    "compromise": EventType.COMPROMISED,
    "destroy": EventType.DESTROYED,
}


COMMAND_MAX_BYTES = 16 * 1024  # a command is a verb, a reason (<= 1024 chars) and an id


class CommandRequest(BaseModel):
    command: Literal["activate", "suspend", "reactivate", "deactivate", "revoke", "compromise", "destroy"]
    reason: str = Field(min_length=1, max_length=1024)
    id: str | None = Field(default=None, description="idempotency id; the same id is answered as a duplicate")
    correlation_id: str | None = Field(default=None, description="ties the command to an incident (inc-...)")


COMMAND_SCHEMA = CommandRequest.model_json_schema()


def create_app(rt: Services) -> FastAPI:
    app = FastAPI(
        title="keylife",
        version=__version__,
        description="Key lifecycle governance for DataFold networks: ingest, registry, commands.",
        default_response_class=JSONBody,
    )
    install(app)
    install_disconnect_handler(app)
    app.state.runtime = rt

    def require(scope: str | None) -> Any:
        """Authenticate, then check ``scope`` (None: any valid token; the route checks the scope
        once it knows which, as the command route does after reading the verb)."""

        async def check(request: Request) -> Principal:
            principal, why = rt.tokens.authenticate(request.headers.get("authorization"))
            if principal is None:
                auth_failure(rt, request, 401, why, None)
                raise Problem(
                    401, "unauthorized", "Authentication required", why, {"WWW-Authenticate": 'Bearer realm="keylife"'}
                )
            if scope is not None:
                deny(rt, request, principal, scope)
            return principal

        return Depends(check)

    @app.get("/healthz", tags=["health"])
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"])
    async def readyz() -> dict[str, Any]:
        if not rt.ledger.running:
            raise Problem(
                503,
                "not-ready",
                "Not ready",
                rt.ledger.problem or "journal writer is not running",
                {"Retry-After": "5"},
            )
        return {"status": "ready", "journal_size": rt.journal.size, "registry_seq": rt.registry.last_applied_seq()}

    if rt.config.exporter.metrics_listen is None:  # else only on the metrics listener (keylife.cli.serve)
        app.add_api_route("/metrics", metrics_endpoint(rt), methods=["GET"], include_in_schema=False)

    @app.post("/v1/events", tags=["ingest"], status_code=200)
    async def post_events(request: Request, principal: Principal = require("ingest")) -> Response:
        started = time.perf_counter()
        try:
            return await _ingest(rt, request, principal)
        except Problem as exc:
            rt.telemetry.requests.labels(str(exc.status)).inc()
            raise
        finally:
            rt.telemetry.ack_latency.observe(time.perf_counter() - started)

    @app.get("/v1/keys", tags=["registry"])
    async def list_keys(
        state: KeyState | None = None,
        algorithm: str | None = None,
        purpose: str | None = None,
        owner: str | None = None,
        node: str | None = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        after: str | None = None,
        _: Principal = require("read"),
    ) -> JSONBody:
        await _fresh(rt)
        items = await asyncio.to_thread(
            rt.registry.list_keys,
            state=state,
            algorithm=algorithm,
            purpose=purpose,
            owner=owner,
            node=node,
            limit=limit,
            after=after,
        )
        following = items[-1]["key_id"] if len(items) == limit else None
        return JSONBody({"items": items, "next": following})

    add_bulk_routes(app, rt, require)  # before GET /v1/keys/{key_id:path}, which would take bulk/<plan>

    # Key ids may hold '/': the ``path`` converter takes the rest of the path, raw or %2F-encoded
    # (uvicorn decodes before routing). ``/v1/keys/a/b/commands`` is a POST, so it reaches the
    # commands route below for key ``a/b``; a GET of it is the key ``a/b/commands``.
    @app.get("/v1/keys/{key_id:path}", tags=["registry"])
    async def get_key(
        key_id: str,
        history: Annotated[int, Query(ge=0, le=1000, description="latest journal entries to include")] = 100,
        _: Principal = require("read"),
    ) -> JSONBody:
        await _fresh(rt)
        key = await asyncio.to_thread(rt.registry.get_key, key_id, recent=history)
        if key is None:
            raise Problem(404, "key-not-found", "No such key", f"key {key_id!r} is not in the registry")
        entries = await asyncio.to_thread(get_entries, rt.journal, key.pop("history_seqs"))
        key["history"] = [{"seq": e.seq, "observed_at": e.observed_at, "event": e.event} for e in entries]
        return JSONBody(key)

    @app.post(
        "/v1/keys/{key_id:path}/commands",
        tags=["commands"],
        openapi_extra={"requestBody": {"required": True, "content": {"application/json": {"schema": COMMAND_SCHEMA}}}},
    )
    async def command(key_id: str, request: Request, principal: Principal = require(None)) -> JSONBody:
        body = _command(await read_body(request, COMMAND_MAX_BYTES))  # after auth: see keylife.api.bodies
        deny(rt, request, principal, COMMAND_SCOPES[body.command])
        if body.command == "destroy":  # dual control: a second person approves (keylife.response.approvals)
            answer = await destroy_needs_approval(rt, key_id, body.reason, principal.name, None)
            return JSONBody(answer, status_code=202)
        event_id = body.id or f"cmd-{time.time_ns()}-{principal.name}"
        try:
            event = Event.model_validate(
                {
                    "id": event_id,
                    "type": COMMANDS[body.command],
                    "key_id": key_id,
                    "occurred_at": format_time(datetime.now(UTC)),
                    "actor": principal.name,
                    "reason": body.reason,
                    "origin": "command",
                }
                | ({"correlation_id": body.correlation_id} if body.correlation_id else {})
            )
        except ValidationError as exc:
            raise Problem(422, "invalid-command", "The command is not valid", str(exc.errors()[0]["msg"])) from None
        (outcome,) = await _submit(rt, [event], command=True)
        if outcome.status == "refused":
            raise Problem(
                409,
                "lifecycle-conflict",
                "Command refused by the key lifecycle",
                outcome.error or "",
                key_id=key_id,
                command=body.command,
            )
        if outcome.status == "conflict":
            raise Problem(409, "id-conflict", "Idempotency id reused", outcome.error or "", id=event_id)
        await _fresh(rt)
        state = await asyncio.to_thread(rt.registry.key_state, key_id)
        return JSONBody(
            {"status": outcome.status, "id": event_id, "seq": outcome.seq, "state": state.value if state else None}
        )

    @app.post("/v1/forwarder/quarantined", tags=["forwarder"])
    async def forwarder_quarantined(request: Request, _: Principal = require("forward")) -> JSONBody:
        """Journal a quarantine notice from ``keylife forward`` (a separate process)."""
        body = await read_body(request, rt.config.api.max_body_bytes)
        try:
            event = validate_notice(orjson.loads(body))
        except (orjson.JSONDecodeError, ValidationError, ValueError, TypeError) as exc:
            raise Problem(422, "invalid-notice", "Not a forwarder quarantine notice", str(exc)[:1000]) from None
        (outcome,) = await _submit(rt, [event])
        if outcome.status not in ("accepted", "duplicate"):
            raise Problem(409, "notice-refused", "The notice was not journaled", outcome.error or outcome.status)
        return JSONBody({"status": outcome.status, "id": event.id, "seq": outcome.seq})

    @app.get("/v1/journal/checkpoint", tags=["journal"], response_class=PlainTextResponse)
    async def checkpoint(_: Principal = require("read")) -> PlainTextResponse:
        cp = rt.journal.last_checkpoint
        if cp is None:
            raise Problem(404, "no-checkpoint", "No checkpoint yet", "the journal is empty")
        return PlainTextResponse(cp.render())

    @app.get("/v1/journal/verifier-key", tags=["journal"], response_class=PlainTextResponse)
    async def verifier_key() -> PlainTextResponse:
        return PlainTextResponse(rt.journal.signer.verifier.encode() + "\n")  # the current key (rotation)

    add_journal_routes(app, rt, require)  # proofs and tiles for auditors
    add_rotation_route(app, rt, require)  # POST /v1/journal/signing-key/rotate (admin)
    add_incident_routes(app, rt, require)  # /v1/incidents..., /v1/alertmanager/webhook
    add_revocation_routes(app, rt, require)  # GET /v1/revocations[/{key}]: the signed feed, confirmations
    add_report_routes(app, rt, require)  # GET /v1/reports/compliance (audit)
    no_body_parameters(app)
    return app


def metrics_endpoint(rt: Services) -> Callable[[], Awaitable[Response]]:
    """GET /metrics over a ``ScrapeCache``: a scrape reports everything acknowledged before the render
    it is answered with began, at most ``exporter.scrape_cache_seconds`` before the scrape."""

    async def render() -> bytes:
        await _fresh(rt)
        return await asyncio.to_thread(generate_latest, rt.telemetry.registry)

    scrapes = ScrapeCache(render, rt.config.exporter.scrape_cache_seconds)

    async def metrics() -> Response:
        return Response(await scrapes.get(), media_type=CONTENT_TYPE_LATEST)

    return metrics


def _command(raw: bytes) -> CommandRequest:
    try:
        return CommandRequest.model_validate_json(raw)
    except ValidationError as exc:
        errors = [{"field": ".".join(str(p) for p in e["loc"]) or "body", "message": e["msg"]} for e in exc.errors()]
        summary = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
        raise Problem(422, "invalid-request", "The request is not valid", summary, errors=errors) from None


async def _ingest(rt: Services, request: Request, principal: Principal) -> Response:
    limit = rt.config.api.max_body_bytes
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type not in ingest.NDJSON_TYPES | ingest.JSON_TYPES:
        raise Problem(
            415,
            "unsupported-media-type",
            "Unsupported content type",
            f"send application/json (one event) or application/x-ndjson, not {content_type or 'nothing'!r}",
        )
    lines = ingest.split_body(await read_body(request, limit), content_type in ingest.NDJSON_TYPES)
    if not lines:
        raise Problem(400, "empty-body", "Empty body", "the body holds no event")
    if len(lines) > rt.config.api.max_lines:
        raise Problem(
            413,
            "too-many-lines",
            "Too many lines",
            f"{len(lines)} events in one request; the limit is {rt.config.api.max_lines}",
        )
    events, errors = ingest.parse_lines(lines)
    if errors:
        rt.telemetry.invalid_lines.inc(len({e.line for e in errors}))
        bad = len({e.line for e in errors})
        raise Problem(
            422,
            "invalid-events",
            "Invalid events",
            f"{bad} of {len(lines)} lines are not valid events; nothing was written",
            errors=[e.as_dict() for e in errors],
        )
    outcomes = await _submit(rt, events)
    numbered = [
        {"line": n, "id": o.id, "status": o.status, "seq": o.seq} | ({"error": o.error} if o.error else {})
        for (n, _), o in zip(lines, outcomes, strict=True)
    ]
    tally: dict[tuple[str, str], int] = {}
    for event, o in zip(events, outcomes, strict=True):
        tally[(event.type, o.status)] = tally.get((event.type, o.status), 0) + 1
    for (kind, status), n in tally.items():
        rt.telemetry.events.labels(kind, status).inc(n)
    if any(o.status == "conflict" for o in outcomes):
        raise Problem(
            409,
            "id-conflict",
            "Event id reused for a different event",
            "some ids were already used for other events; nothing of this request was written",
            results=numbered,
        )
    rt.telemetry.requests.labels("200").inc()
    accepted = sum(o.status == "accepted" for o in outcomes)
    return JSONBody({"accepted": accepted, "duplicate": len(outcomes) - accepted, "results": numbered})


async def _fresh(rt: Services) -> None:
    """Read-your-writes: wait until everything acknowledged so far is visible to readers."""
    await asyncio.wrap_future(rt.ledger.sync_registry())


async def _submit(rt: Services, events: list[Event], command: bool = False) -> list[Outcome]:
    try:
        return await asyncio.wrap_future(rt.ledger.submit(events, command=command))
    except LedgerStopped as exc:
        raise Problem(
            503,
            "journal-unavailable",
            "Journal unavailable",
            f"events cannot be made durable now ({exc}); nothing was written, retry later",
            {"Retry-After": "5"},
        ) from None
    except EventRejected as exc:  # this request alone; the others of its group were written
        raise Problem(
            422, "event-not-journalable", "Event cannot be journaled", f"{exc}; nothing of this request was written"
        ) from None
