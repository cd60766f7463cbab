"""Bulk plans, lockdowns and approvals (issue 14, BULK): thin shells over ``keylife.response``.

* ``POST /v1/keys/bulk`` (bulk + the action's own scope): a plan; ``dry_run`` (default true)
  only plans, else it executes at once. ``POST /v1/bulk/{plan}/execute``; ``GET
  /v1/bulk/{plan}`` (read; ``?keys=true`` lists the planned set). A plan lives under ``/v1/bulk/``,
  not ``/v1/keys/bulk/``: key ids may hold '/', and ``GET /v1/keys/bulk/x`` is the key ``bulk/x``.
* ``POST /v1/lockdowns`` (lockdown), ``GET /v1/lockdowns[/{id}]`` (read),
  ``POST /v1/lockdowns/{id}/release`` (release).
* ``GET /v1/approvals`` (read), ``POST /v1/approvals/{id}/approve`` (approve; another identity).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Annotated, Any, Literal, TypeVar

from fastapi import FastAPI, Request
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from keylife.api.access import deny
from keylife.api.auth import Principal
from keylife.api.bodies import read_body
from keylife.api.problems import JSONBody, Problem
from keylife.api.services import Services
from keylife.common.scopes import COMMAND_SCOPES
from keylife.domain.events import EventId, Name, Text
from keylife.ingest.ledger import LedgerStopped
from keylife.response import selector as sel
from keylife.response.bulk import ACTIONS
from keylife.response.errors import Refused

BULK_MAX_BYTES = 64 * 1024 * 1024  # 100,000 ids of up to 256 characters, JSON-quoted
SMALL_MAX_BYTES = 64 * 1024
T = TypeVar("T")


class BulkRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    selector: dict[str, Any]
    action: Literal["revoke", "suspend", "reactivate", "compromise", "deactivate", "destroy"]
    reason: Text
    dry_run: bool = True
    rate_per_second: Annotated[float, Field(gt=0, le=1_000_000)] | None = None
    incident: EventId | None = None


class LockdownRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    selector: dict[str, Any] | None = None
    node: Name | None = None
    owner: Name | None = None
    reason: Text
    incident: EventId | None = None


class ReleaseRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: Text = "lockdown released"


def _parse(model: type[T], raw: bytes) -> T:
    try:
        return model.model_validate_json(raw or b"{}")  # type: ignore[attr-defined,no-any-return]
    except ValidationError as exc:
        errors = [{"field": ".".join(str(p) for p in e["loc"]) or "body", "message": e["msg"]} for e in exc.errors()]
        summary = "; ".join(f"{e['field']}: {e['message']}" for e in errors[:20])
        raise Problem(422, "invalid-request", "The request is not valid", summary, errors=errors[:20]) from None


def _selector(raw: Any) -> sel.Selector:
    try:
        return sel.parse_selector(raw)
    except sel.SelectorError as exc:
        raise Problem(422, "invalid-selector", "The selector is not valid", str(exc), errors=exc.errors) from None


async def call(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run a blocking service call off the event loop; its refusals become problem+json."""
    try:
        return await asyncio.to_thread(fn, *args, **kwargs)
    except Refused as exc:
        raise Problem(exc.status, exc.kind, exc.title, exc.detail, **exc.extra) from None
    except LedgerStopped as exc:
        raise Problem(
            503, "journal-unavailable", "Journal unavailable", f"{exc}; retry later", {"Retry-After": "5"}
        ) from None


def add_bulk_routes(app: FastAPI, rt: Services, require: Callable[[str | None], Any]) -> None:
    service = rt.bulk

    @app.post("/v1/keys/bulk", tags=["bulk"])
    async def bulk_plan(request: Request, principal: Principal = require("bulk")) -> JSONBody:
        body = _parse(BulkRequest, await read_body(request, BULK_MAX_BYTES))
        deny(rt, request, principal, COMMAND_SCOPES[body.action] if body.action in ACTIONS else "bulk")
        selector = _selector(body.selector)
        plan, keys = await call(
            service.plans.plan, selector, body.action, body.reason, principal.name,
            rate_per_second=body.rate_per_second, incident=body.incident,
        )  # fmt: skip
        answer = {
            "plan": plan["plan"], "state": "planned", "action": plan["action"], "digest": plan["digest"],
            "total": plan["total"], "selector": plan["selector_summary"], "keys": keys,
            "dual_control": service.plans.needs_approval(plan),
        }  # fmt: skip
        if body.dry_run:
            return JSONBody(answer)
        status, result = await call(service.execute, plan["plan"], principal.name)
        return JSONBody(answer | {"execution": result}, status_code=status)

    @app.post("/v1/bulk/{plan_id}/execute", tags=["bulk"])
    async def bulk_execute(plan_id: str, request: Request, principal: Principal = require("bulk")) -> JSONBody:
        plan = await call(service.plans.load, plan_id)
        deny(rt, request, principal, COMMAND_SCOPES[plan["action"]])
        status, result = await call(service.execute, plan_id, principal.name)
        return JSONBody(result, status_code=status)

    @app.get("/v1/bulk/{plan_id}", tags=["bulk"])
    async def bulk_progress(plan_id: str, keys: bool = False, _: Principal = require("read")) -> JSONBody:
        progress = await call(service.plans.progress, plan_id)
        if keys:
            progress["keys"] = await call(service.plans.store.keys, plan_id)
        return JSONBody(progress)

    @app.post("/v1/lockdowns", tags=["lockdown"])
    async def lockdown(request: Request, principal: Principal = require("lockdown")) -> JSONBody:
        body = _parse(LockdownRequest, await read_body(request, BULK_MAX_BYTES))
        raw = dict(body.selector or {})
        for name in ("node", "owner"):
            if getattr(body, name) is not None:
                if name in raw:
                    raise Problem(422, "invalid-selector", "The selector is not valid",
                                  f"{name}: given both at the top level and in selector")  # fmt: skip
                raw[name] = getattr(body, name)
        if not raw:
            raise Problem(422, "invalid-selector", "The selector is not valid",
                          "name what to lock down: node, owner or a selector")  # fmt: skip
        result = await call(
            service.lockdowns.apply, _selector(raw), body.reason, principal.name, incident=body.incident
        )
        return JSONBody(result)

    @app.get("/v1/lockdowns", tags=["lockdown"])
    async def lockdowns(_: Principal = require("read")) -> JSONBody:
        return JSONBody({"items": await call(service.lockdowns.list)})

    @app.get("/v1/lockdowns/{lockdown_id}", tags=["lockdown"])
    async def lockdown_get(lockdown_id: str, _: Principal = require("read")) -> JSONBody:
        return JSONBody(await call(service.lockdowns.get, lockdown_id))

    @app.post("/v1/lockdowns/{lockdown_id}/release", tags=["lockdown"])
    async def release(lockdown_id: str, request: Request, principal: Principal = require("release")) -> JSONBody:
        body = _parse(ReleaseRequest, await read_body(request, SMALL_MAX_BYTES))
        return JSONBody(await call(service.lockdowns.release, lockdown_id, body.reason, principal.name))

    @app.get("/v1/approvals", tags=["approvals"])
    async def approvals(phase: str | None = None, _: Principal = require("read")) -> JSONBody:
        return JSONBody({"items": await call(service.approvals.list, phase)})

    @app.post("/v1/approvals/{approval_id}/approve", tags=["approvals"])
    async def approve(approval_id: str, principal: Principal = require("approve")) -> JSONBody:
        return JSONBody(await call(service.approve, approval_id, principal.name))


def destroy_needs_approval(rt: Services, key_id: str, reason: str, actor: str, correlation: str | None) -> Any:
    """The command route's destroy: dual control, so a 202 with the approval id (nothing runs yet)."""
    return call(rt.bulk.request_destroy, key_id, reason, actor, correlation)
