"""Read-only journal routes for auditors (``read`` scope): inclusion and consistency proofs over the
RFC 6962 tree, and its tiles at C2SP tlog-tiles paths.

* ``GET /v1/journal/proof/inclusion?seq=N&size=S`` (S defaults to the latest checkpoint's size)
* ``GET /v1/journal/proof/consistency?from=A&to=B``
* ``GET /v1/journal/tile/<L>/<N>[.p/<W>]`` (levels >= 0; full tiles are immutable)
* ``GET /v1/journal/checkpoint/cosigned``: the latest checkpoint with its witnesses' cosignatures
  (C2SP tlog-cosignature lines after the log's signature; docs/journal.md, *Witnesses*)

Hashes are base64, as in checkpoints. Sizes beyond the tree are refused (404), not guessed.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import FastAPI, Query
from starlette.responses import PlainTextResponse, Response

from keylife.api.problems import Problem
from keylife.api.services import Services
from keylife.journal.proofs import consistency_answer, inclusion_answer
from keylife.journal.tree import TILE_WIDTH
from keylife.witness.cosigned import LATEST_NAME

_TILE = re.compile(r"(\d+)/((?:x\d{3}/)*\d{3})(?:\.p/(\d+))?\Z")


def parse_tile_path(path: str) -> tuple[int, int, int]:
    """(level, index, width) of ``<L>/<N>[.p/<W>]``; ValueError when it is not a tile path."""
    match = _TILE.match(path)
    if not match:
        raise ValueError("not a tile path")
    level, index = int(match.group(1)), int(match.group(2).replace("x", "").replace("/", ""))
    width = int(match.group(3)) if match.group(3) else TILE_WIDTH
    if (match.group(3) and not 1 <= width < TILE_WIDTH) or level > 63:
        raise ValueError("bad tile width or level")
    return level, index, width


def add_journal_routes(app: FastAPI, rt: Services, require: Callable[[str], Any]) -> None:
    journal = rt.journal

    def _size(size: int | None) -> int:
        if size is None:
            if journal.last_checkpoint is None:
                raise Problem(
                    404, "no-checkpoint", "No checkpoint yet", "the journal has no checkpoint to prove against"
                )
            return journal.last_checkpoint.size
        return size

    def _answer(compute: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        with journal.lock:  # the writer thread grows the tree under this lock
            try:
                return compute()
            except ValueError as exc:
                raise Problem(404, "not-in-tree", "Not in the tree", str(exc)) from exc

    @app.get("/v1/journal/proof/inclusion", tags=["journal"])
    def inclusion(
        seq: Annotated[int, Query(ge=0)],
        size: Annotated[int | None, Query(ge=1)] = None,
        _: Any = require("read"),
    ) -> dict[str, Any]:
        tree_size = _size(size)
        return _answer(lambda: inclusion_answer(journal.tree, seq, tree_size))

    @app.get("/v1/journal/proof/consistency", tags=["journal"])
    def consistency(
        old: Annotated[int, Query(alias="from", ge=0)],
        new: Annotated[int, Query(alias="to", ge=1)],
        _: Any = require("read"),
    ) -> dict[str, Any]:
        return _answer(lambda: consistency_answer(journal.tree, old, new))

    @app.get("/v1/journal/tile/{path:path}", tags=["journal"])
    def tile(path: str, _: Any = require("read")) -> Response:
        try:
            level, index, width = parse_tile_path(path)
        except ValueError as exc:
            raise Problem(404, "not-a-tile", "No such tile", f"{path}: {exc}") from exc
        with journal.lock:
            try:
                data = journal.tree.tile(level, index, width)
            except ValueError as exc:
                raise Problem(404, "not-in-tree", "No such tile", str(exc)) from exc
        immutable = "public, max-age=31536000, immutable" if width == TILE_WIDTH else "no-store"
        return Response(data, media_type="application/octet-stream", headers={"Cache-Control": immutable})

    @app.get("/v1/journal/checkpoint/cosigned", tags=["journal"], response_class=PlainTextResponse)
    def cosigned(_: Any = require("read")) -> PlainTextResponse:
        try:
            note = (journal.directory / LATEST_NAME).read_text()
        except FileNotFoundError:
            raise Problem(
                404,
                "not-cosigned",
                "No cosigned checkpoint",
                "no witness has cosigned a checkpoint of this journal yet",
            ) from None
        return PlainTextResponse(note)
