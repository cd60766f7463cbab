"""Request bodies are read by the handler, after authentication, under a size cap.

Why: FastAPI reads and parses a body declared as a parameter (a pydantic model) before it runs
the dependencies, so an unauthenticated client could make the server read and parse 200 MB
(4.4 s, +500 MB RSS) before the 401. Handlers here take the ``Request`` and call ``read_body``
once the auth dependency has passed; ``no_body_parameters`` refuses, at start, any route that
declares a body FastAPI would read first.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.routing import APIRoute
from starlette.requests import ClientDisconnect
from starlette.responses import Response

from keylife.api.problems import Problem


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body, refusing by the declared length first and by the bytes received after."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise Problem(413, "body-too-large", "Body too large", f"body is {declared} bytes; the limit is {limit}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise Problem(413, "body-too-large", "Body too large", f"body exceeds the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def no_body_parameters(app: FastAPI) -> None:
    """Fail at start if a route lets FastAPI read its body before authentication."""
    eager = [
        f"{sorted(route.methods or ())} {route.path}"
        for route in app.routes
        if isinstance(route, APIRoute) and route.body_field is not None
    ]
    if eager:
        raise RuntimeError(f"routes declare a body parameter, read before auth; use read_body: {', '.join(eager)}")


async def _client_gone(_request: Request, _exc: Exception) -> Response:
    """The client left (or the listener cut off a body too slow to arrive: keylife.api.http_guard, which
    has answered 408 and counted it) while the handler read the body: nothing to log, nobody to answer."""
    return Response(status_code=499)


def install_disconnect_handler(app: FastAPI) -> None:
    app.add_exception_handler(ClientDisconnect, _client_gone)
