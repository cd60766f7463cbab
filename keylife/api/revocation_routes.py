"""The revocation feed and per-key confirmation (``read`` scope; docs/revocation-feed.md).

* ``GET /v1/revocations[?since=V]``: the signed feed. Default: the C2SP signed note (text/plain);
  ``Accept: application/json``: the JSON document embedding it. ``ETag`` names the version and
  ``since``; ``If-None-Match`` with it answers 304 (a poller that is up to date costs nothing).
* ``GET /v1/revocations/{key_id}``: the key's withdrawal and which node confirmed it, when.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Request
from starlette.responses import Response

from keylife.api.problems import JSONBody, Problem
from keylife.api.services import Services
from keylife.registry import revocations as rv
from keylife.response.feed import FeedError


def _wants_json(request: Request) -> bool:
    accept = request.headers.get("accept", "")
    return any(part.split(";")[0].strip() == "application/json" for part in accept.split(","))


def _matches(header: str | None, tag: str) -> bool:
    if header is None:
        return False
    return header.strip() == "*" or tag in (t.strip().removeprefix("W/") for t in header.split(","))


def add_revocation_routes(app: FastAPI, rt: Services, require: Callable[[str | None], Any]) -> None:
    async def fresh() -> None:  # read-your-writes: a revoke just acknowledged is in the next poll
        await asyncio.wrap_future(rt.ledger.sync_registry())

    @app.get("/v1/revocations", tags=["revocations"])
    async def feed(request: Request, _: Any = require("read")) -> Response:
        extra = sorted(set(request.query_params) - {"since"})
        if extra:
            raise Problem(400, "unknown-parameter", "Unknown query parameter", f"only 'since' is accepted, not {extra}")
        await fresh()
        json = _wants_json(request)
        try:
            answer = await asyncio.to_thread(
                rt.revocations.answer, rt.journal.signer, request.query_params.get("since"), json
            )
        except FeedError as exc:
            raise Problem(400, exc.kind, "Bad since", str(exc), parameter="since", version=exc.version) from None
        headers = {"ETag": answer.etag, "Cache-Control": "no-cache", "Vary": "Accept",
                   "X-Keylife-Feed-Version": str(answer.version)}  # fmt: skip
        if _matches(request.headers.get("if-none-match"), answer.etag):
            return Response(status_code=304, headers=headers)
        return Response(answer.body, media_type=answer.media_type, headers=headers)

    @app.get("/v1/revocations/{key_id:path}", tags=["revocations"])
    async def key_revocation(key_id: str, _: Any = require("read")) -> JSONBody:
        await fresh()
        found = await asyncio.to_thread(lambda: rv.revocation(rt.registry._reader(), key_id))
        if found is None:
            exists = await asyncio.to_thread(rt.registry.key_exists, key_id)
            why = "was never revoked or compromised" if exists else "is not in the registry"
            raise Problem(404, "no-revocation", "No revocation", f"key {key_id!r} {why}", key_id=key_id)
        return JSONBody(found)
