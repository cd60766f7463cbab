"""``POST /v1/journal/signing-key/rotate`` (scope ``admin``): rotate the journal signing key of a
running serve (docs/journal.md, *Rotating the signing key*).

The rotation runs on the writer thread between two groups (``Ledger.run_exclusive``), so no
entry lands between the rotation entry and the checkpoint both keys sign. The answer holds the
seq and the two verifier keys (public), never key material.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI

from keylife.api.auth import Principal
from keylife.api.problems import JSONBody, Problem
from keylife.api.services import Services
from keylife.ingest.ledger import LedgerStopped
from keylife.journal.key_rotation import RotationRefused, rotate
from keylife.journal.writer import JournalCorrupt


def add_rotation_route(app: FastAPI, rt: Services, require: Callable[[str], Any]) -> None:
    admin = require("admin")

    @app.post("/v1/journal/signing-key/rotate", tags=["journal"])
    async def rotate_signing_key(_: Principal = admin) -> JSONBody:
        """Journal a new signing key, signed by the current one; the writer signs with it from now on."""
        future = rt.ledger.run_exclusive(lambda: rotate(rt.journal, rt.config.signing_key_path))
        try:
            rotation = await asyncio.wrap_future(future)
        except LedgerStopped as exc:
            detail = f"the key was not rotated: {exc}"
            raise Problem(503, "journal-unavailable", "Journal unavailable", detail, {"Retry-After": "5"}) from None
        except (RotationRefused, JournalCorrupt) as exc:
            raise Problem(409, "rotation-refused", "Signing key not rotated", str(exc)) from None
        except OSError as exc:  # before the entry: nothing changed; after it: the next start finishes
            detail = (
                f"the rotation failed ({exc.strerror or exc}); if its entry was journaled, the next start finishes it"
            )
            raise Problem(503, "journal-unavailable", "Journal unavailable", detail, {"Retry-After": "5"}) from None
        return JSONBody({"seq": rotation.seq, "retired": rotation.old.encode(), "current": rotation.new.encode()})
