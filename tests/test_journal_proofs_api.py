"""Auditors' journal routes on a live server: inclusion and consistency proofs that verify against
signed checkpoints, and C2SP tiles whose hashes are the tree's."""

from __future__ import annotations

import base64
import hashlib
import time
from pathlib import Path

import httpx
import orjson

from keylife.api.journal_routes import parse_tile_path
from keylife.journal import merkle
from keylife.journal.note import Checkpoint, parse
from keylife.journal.reader import iter_entries
from tests.server import live_server

NOW = "2026-11-28T10:00:00Z"


def _events(start: int, count: int) -> bytes:
    return b"".join(
        orjson.dumps({"id": f"p-{n}", "type": "usage_report", "key_id": f"k-{n % 3}", "occurred_at": NOW,
                      "node": "node-1", "usage": {"encrypt": n}}) + b"\n"
        for n in range(start, start + count)
    )  # fmt: skip


def _hashes(values: list[str]) -> list[bytes]:
    return [base64.b64decode(v) for v in values]


def _checkpoint_of(reader: httpx.Client, size: int) -> Checkpoint:
    """The checkpoint of ``size``, signed within about a second (checkpoint_interval)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        r = reader.get("/v1/journal/checkpoint")
        if r.status_code == 200 and (cp := parse(r.text)).size == size:
            return cp
        time.sleep(0.05)
    raise AssertionError(f"no checkpoint of size {size}")


def test_proofs_and_tiles_verify_against_signed_checkpoints(tmp_path: Path) -> None:
    with live_server(tmp_path) as live, live.client() as c, live.client("read") as reader:
        headers = {"Content-Type": "application/x-ndjson"}
        assert c.post("/v1/events", content=_events(0, 300), headers=headers).status_code == 200
        old = _checkpoint_of(reader, 300)
        assert c.post("/v1/events", content=_events(300, 200), headers=headers).status_code == 200
        new = _checkpoint_of(reader, 500)
        lines = [orjson.dumps({"event": e.event, "observed_at": e.observed_at, "seq": e.seq})
                 for e in iter_entries(live.runtime.journal.directory)]  # fmt: skip

        r = reader.get("/v1/journal/proof/inclusion", params={"seq": 7})  # size: the latest checkpoint
        assert r.status_code == 200
        body = r.json()
        assert body["size"] == new.size and _hashes([body["root"]]) == [new.hash]
        leaf = merkle.leaf_hash(lines[7])
        merkle.verify_inclusion(7, new.size, leaf, _hashes(body["proof"]), new.hash)
        body = reader.get("/v1/journal/proof/inclusion", params={"seq": 7, "size": old.size}).json()
        merkle.verify_inclusion(7, old.size, leaf, _hashes(body["proof"]), old.hash)

        body = reader.get("/v1/journal/proof/consistency", params={"from": old.size, "to": new.size}).json()
        merkle.verify_consistency(old.size, new.size, old.hash, new.hash, _hashes(body["proof"]))

        leaves = [hashlib.sha256(b"\x00" + line).digest() for line in lines]
        tile = reader.get("/v1/journal/tile/0/000")
        assert tile.status_code == 200 and tile.headers["cache-control"].endswith("immutable")
        assert tile.content == b"".join(leaves[:256])
        partial = reader.get(f"/v1/journal/tile/0/001.p/{new.size - 256}")
        assert partial.status_code == 200 and partial.content == b"".join(leaves[256 : new.size])
        assert reader.get("/v1/journal/tile/0/001").status_code == 404  # not full yet

        missing = reader.get("/v1/journal/proof/inclusion", params={"seq": new.size + 5})
        assert missing.status_code == 404 and "not in" in missing.json()["detail"]
        assert reader.get("/v1/journal/tile/1/000").status_code == 404  # 65,536 entries make the first
        assert reader.get("/v1/journal/tile/0/../../etc").status_code == 404
        with live.client("ingest") as ingest_only:
            assert ingest_only.get("/v1/journal/proof/inclusion", params={"seq": 1}).status_code == 403


def test_tile_paths_parse_as_c2sp_writes_them() -> None:
    assert parse_tile_path("1/x001/x234/067") == (1, 1234067, 256)
    assert parse_tile_path("0/005.p/17") == (0, 5, 17)
