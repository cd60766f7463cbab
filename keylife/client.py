"""A small client for posting NDJSON to a keylife server (``keylife ingest``)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson


def _batches(path: Path, size: int) -> Iterator[tuple[list[int], list[bytes]]]:
    """(file line numbers, lines) of up to ``size`` non-blank lines at a time."""
    numbers: list[int] = []
    batch: list[bytes] = []
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            if raw.strip():
                numbers.append(number)
                batch.append(raw.rstrip(b"\n"))
            if len(batch) >= size:
                yield numbers, batch
                numbers, batch = [], []
    if batch:
        yield numbers, batch


def post_ndjson_file(path: Path, url: str, token: str, batch: int = 1000) -> int:
    """Post ``path`` in batches; stop at the first refused batch and say which lines and why."""
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/x-ndjson"}
    accepted = duplicate = 0
    with httpx.Client(base_url=url.rstrip("/"), headers=headers, timeout=60) as client:
        for numbers, lines in _batches(path, batch):
            response = client.post("/v1/events", content=b"\n".join(lines))
            if response.status_code != 200:
                body = response.json() if response.headers.get("content-type", "").endswith("json") else {}
                print(
                    f"batch starting at line {numbers[0]}: HTTP {response.status_code} {body.get('detail', '')}",
                    file=sys.stderr,
                )
                for err in body.get("errors", []):  # the server numbers the lines of the body it got
                    print(
                        f"  line {numbers[err['line'] - 1]}: {err.get('field') or ''} {err['message']}",
                        file=sys.stderr,
                    )
                print(f"{accepted} accepted and {duplicate} duplicates before the failure", file=sys.stderr)
                return 1
            result = orjson.loads(response.content)
            accepted += result["accepted"]
            duplicate += result["duplicate"]
    print(orjson.dumps({"accepted": accepted, "duplicate": duplicate}).decode())
    return 0
