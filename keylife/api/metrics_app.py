"""The app of the separate metrics listener (``exporter.metrics_listen``): /metrics and /healthz only.

Why separate: /metrics is unauthenticated, so it can live on an internal port in plain HTTP
while the API listener speaks TLS and stays reachable from producers; nothing else of the API
is served here.
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from keylife.api.app import metrics_endpoint
from keylife.api.services import Services


def metrics_app(rt: Services) -> Starlette:
    scrape = metrics_endpoint(rt)

    async def metrics(_request: Request) -> Response:
        return await scrape()

    async def healthz(_request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    return Starlette(routes=[Route("/metrics", metrics, methods=["GET"]), Route("/healthz", healthz, methods=["GET"])])
