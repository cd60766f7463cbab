"""Authorisation failures: the 403 that names what is missing, and the journaling of every refusal."""

from __future__ import annotations

import logging

from starlette.requests import Request

from keylife.api.auth import Principal
from keylife.api.problems import Problem
from keylife.api.services import Services
from keylife.common.scopes import role_for
from keylife.domain.events import EventType

log = logging.getLogger("keylife.api")


def deny(rt: Services, request: Request, principal: Principal, scope: str) -> None:
    """403 (journaled like any auth failure) unless ``principal`` holds ``scope``; the answer names
    the scope and the role that has it, so the person refused knows whom to ask."""
    why = principal.lacks(scope)
    if why is None:
        return
    auth_failure(rt, request, 403, why, principal.name)
    needed = role_for(scope)
    raise Problem(
        403, "forbidden", "Missing scope", why, required_scope=scope, **({"required_role": needed} if needed else {})
    )


def auth_failure(rt: Services, request: Request, code: int, why: str, who: str | None) -> None:
    """Count every failure; journal it unless the rate limit holds it back (then count that)."""
    rt.telemetry.auth_failures.labels(str(code)).inc()
    allowed, held = rt.auth_limiter.allow()
    client = request.client.host if request.client else "unknown"
    if not allowed:
        rt.telemetry.auth_unjournaled.inc()
        return
    log.warning(
        "authentication failure", extra={"code": code, "reason": why, "client": client, "path": request.url.path}
    )
    attributes = {"code": str(code), "client": client[:256], "path": request.url.path[:256], "method": request.method}
    if held:
        attributes["unjournaled_before"] = str(held)
    event = rt.ledger.system_event(
        EventType.AUTH_FAILURE, reason=why, attributes=attributes, **({"actor": who} if who else {})
    )
    rt.ledger.submit([event])  # fire and forget: the 401/403 does not wait on the disk
