"""Small clients of a running keylife server: ``keylife ingest`` (NDJSON) and ``keys list/show --url``.

Ingest is idempotent (event ids), so a batch answered 429 or 503 is sent again after the
server's ``Retry-After``, a bounded number of times. Errors the operator can act on are raised
as ``ClientError`` with one line that names the URL; ``keylife`` prints it and exits 2.
"""

from __future__ import annotations

import email.utils
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import orjson

from keylife.cli.progress import terminal_progress

RETRY_STATUSES = (429, 503)
MAX_WAIT_SECONDS = 60.0  # one wait, whatever Retry-After says: the operator is watching


class ClientError(Exception):
    """The server could not be used (unreachable, refused the token, still busy after retries)."""


def key_path(key_id: str) -> str:
    """``/v1/keys/{id}`` with the id quoted whole, so ids holding '/', '?' or '%' round-trip."""
    return "/v1/keys/" + quote(key_id, safe="")


def _batches(path: Path, size: int) -> Iterator[tuple[list[int], list[bytes], int]]:
    """(file line numbers, lines, bytes of the file read so far) of up to ``size`` non-blank lines."""
    numbers: list[int] = []
    batch: list[bytes] = []
    consumed = 0
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            consumed += len(raw)
            if raw.strip():
                numbers.append(number)
                batch.append(raw.rstrip(b"\n"))
            if len(batch) >= size:
                yield numbers, batch, consumed
                numbers, batch = [], []
    if batch:
        yield numbers, batch, consumed


def retry_after(value: str | None, attempt: int) -> float:
    """Seconds to wait: the server's Retry-After (seconds or an HTTP date), else 1, 2, 4 ... s; capped."""
    if value:
        value = value.strip()
        if value.isdigit():
            return min(float(value), MAX_WAIT_SECONDS)
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            when = None
        if when is not None:
            if when.tzinfo is None:
                when = when.replace(tzinfo=UTC)
            return min(max(0.0, (when - datetime.now(UTC)).total_seconds()), MAX_WAIT_SECONDS)
    return min(float(2**attempt), MAX_WAIT_SECONDS)


def _detail(response: httpx.Response) -> dict[str, Any]:
    if response.headers.get("content-type", "").split(";")[0].endswith("json"):
        try:
            body = response.json()
        except ValueError:
            return {}
        return body if isinstance(body, dict) else {}
    return {}


def _post_with_retries(
    client: httpx.Client, body: bytes, retries: int, sleep: Callable[[float], None]
) -> tuple[httpx.Response, int]:
    """(the last response, how many retries it took); retries only 429 and 503."""
    attempt = 0
    while True:
        response = client.post("/v1/events", content=body)
        if response.status_code not in RETRY_STATUSES or attempt >= retries:
            return response, attempt
        sleep(retry_after(response.headers.get("retry-after"), attempt))
        attempt += 1


def post_ndjson_file(
    path: Path,
    url: str,
    token: str,
    batch: int = 1000,
    *,
    retries: int = 5,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    """Post ``path`` in batches; stop at the first refused batch and say which lines and why.

    0: all sent; 1: a batch was refused (its lines and reasons on stderr); ClientError: the
    server stayed busy for ``retries`` retries, or could not be reached.
    """
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/x-ndjson"}
    accepted = duplicate = 0
    total = path.stat().st_size
    with (
        httpx.Client(base_url=url.rstrip("/"), headers=headers, timeout=60) as client,
        terminal_progress(f"ingest {path.name}", total, unit="bytes") as update,
    ):
        for numbers, lines, consumed in _batches(path, batch):
            response, _ = _post_with_retries(client, b"\n".join(lines), retries, sleep)
            if response.status_code in RETRY_STATUSES:
                raise ClientError(
                    f"{url}: still HTTP {response.status_code} after {retries} retries at the batch starting "
                    f"at line {numbers[0]} ({_detail(response).get('detail', '')}); "
                    f"{accepted} accepted and {duplicate} duplicates before it; run it again later"
                )
            if response.status_code != 200:
                body = _detail(response)
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
            update(consumed, note=f"{accepted + duplicate} events")
    print(orjson.dumps({"accepted": accepted, "duplicate": duplicate}).decode())
    return 0


class Reader:
    """``keys list`` / ``keys show`` against a running server's API (a ``read`` token)."""

    def __init__(self, url: str, token: str) -> None:
        self.url = url.rstrip("/")
        self._client = httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {token}"}, timeout=30, trust_env=False
        )

    def __enter__(self) -> Reader:
        return self

    def __exit__(self, *_: object) -> None:
        self._client.close()

    def _get(self, path: str, params: dict[str, Any]) -> httpx.Response | None:
        response = self._client.get(path, params={k: v for k, v in params.items() if v is not None})
        if response.status_code == 404 and _detail(response).get("type", "").endswith("key-not-found"):
            return None
        if response.status_code != 200:
            detail = _detail(response).get("detail", "") or response.reason_phrase
            raise ClientError(f"{self.url}{path}: HTTP {response.status_code} {detail}")
        return response

    def list_keys(self, limit: int, **filters: str | None) -> Iterator[dict[str, Any]]:
        """Up to ``limit`` keys in key_id order, following the API's pages (1000 at most each)."""
        after = filters.pop("after", None)
        left = limit
        while left > 0:
            response = self._get("/v1/keys", {**filters, "after": after, "limit": min(left, 1000)})
            assert response is not None
            page = response.json()
            yield from page["items"]
            left -= len(page["items"])
            after = page.get("next")
            if not after or not page["items"]:
                return

    def get_key(self, key_id: str) -> dict[str, Any] | None:
        response = self._get(key_path(key_id), {})
        return None if response is None else response.json()
