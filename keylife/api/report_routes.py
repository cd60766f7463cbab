"""``GET /v1/reports/compliance``: the compliance report (``audit`` scope), docs/reporting.md.

Query: ``from``, ``to`` (UTC dates or RFC 3339; default the last 30 days up to tomorrow 00:00 UTC),
``generated_at`` (default now), ``format`` (json | csv | html), and selector fields ``owner``,
``purpose``, ``algorithm``, ``node``, ``state`` (repeatable). The figures are read from one registry
snapshot bound to a checkpoint signed for it; the JSON carries the checkpoint and its own digest.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import FastAPI, Query
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response

from keylife.api.auth import Principal
from keylife.api.problems import Problem
from keylife.api.services import Services
from keylife.response.reports import machine
from keylife.response.reports.html import to_html
from keylife.response.reports.model import Period
from keylife.response.selector import SelectorError, parse_selector

MEDIA = {"json": "application/json", "csv": "text/csv; charset=utf-8", "html": "text/html; charset=utf-8"}


def _time(text: str, name: str) -> datetime:
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise Problem(422, "invalid-parameter", "Invalid parameter", f"{name}: not a date or RFC 3339 time") from None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def add_report_routes(app: FastAPI, rt: Services, require: Callable[[str | None], Any]) -> None:
    @app.get("/v1/reports/compliance", tags=["reports"])
    async def compliance(
        _: Principal = require("audit"),
        start: Annotated[str | None, Query(alias="from", max_length=40)] = None,
        end: Annotated[str | None, Query(alias="to", max_length=40)] = None,
        generated_at: Annotated[str | None, Query(max_length=40)] = None,
        format: Literal["json", "csv", "html"] = "json",
        owner: Annotated[str | None, Query(max_length=128)] = None,
        purpose: Annotated[str | None, Query(max_length=64)] = None,
        algorithm: Annotated[str | None, Query(max_length=64)] = None,
        node: Annotated[str | None, Query(max_length=128)] = None,
        state: Annotated[list[str] | None, Query()] = None,
    ) -> Response:
        now = datetime.now(UTC)
        stop = _time(end, "to") if end else now.replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=1)
        begin = _time(start, "from") if start else stop - timedelta(days=30)
        if begin >= stop:
            raise Problem(422, "invalid-parameter", "Invalid parameter", "from must be before to")
        stamp = _time(generated_at, "generated_at") if generated_at else now
        raw: dict[str, Any] = {k: v for k, v in (("owner", owner), ("purpose", purpose), ("algorithm", algorithm),
                                                 ("node", node), ("states", state)) if v}  # fmt: skip
        try:
            selector = parse_selector(raw) if raw else None
        except SelectorError as exc:
            raise Problem(422, "invalid-selector", "Invalid selector", str(exc)) from None
        report = await run_in_threadpool(
            rt.reports.compliance, Period(begin, stop), stamp.strftime("%Y-%m-%dT%H:%M:%SZ"), selector
        )
        body = {"json": machine.to_json, "csv": machine.to_csv, "html": to_html}[format](report)
        headers = {"X-Report-Digest": report["digest"], "X-Report-Checkpoint-Size": str(report["checkpoint"]["size"])}
        return Response(body, media_type=MEDIA[format], headers=headers)
