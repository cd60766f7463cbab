"""Durable acknowledgement, checked by the order of the system calls, not by a crash.

A kill -9 cannot show a missing fsync (the page cache outlives the process), so this test
records, in one process running the real API (uvicorn on a loopback port), the real ledger and
the real journal: every ``os.write`` to a journal segment (file and byte range), the start and
the end of every ``fdatasync``/``fsync`` of it, and the moment each ingest request's future is
resolved, which is before the HTTP answer can be written. It then requires that the bytes of
every acknowledged entry were written before a sync of that file began, and that this sync had
returned before the acknowledgement. It fails if the fdatasync is removed, moved after the
acknowledgement, or made to cover less than the group it acknowledges.
"""

from __future__ import annotations

import itertools
import os
import random
import threading
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import orjson
import pytest

from keylife.ingest.ledger import Outcome
from keylife.journal import segments as segs
from tests.server import live_server


@dataclass
class Recorder:
    """Journal-segment writes, syncs and acknowledgements, in one global order."""

    order: itertools.count = field(default_factory=itertools.count)
    lock: threading.Lock = field(default_factory=threading.Lock)
    writes: list[tuple[int, str, int, int]] = field(default_factory=list)  # (order, path, start, end)
    syncs: list[tuple[int, int, str]] = field(default_factory=list)  # (order began, order returned, path)
    acks: list[tuple[int, list[Outcome]]] = field(default_factory=list)

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        real_write, real_fdatasync, real_fsync = os.write, os.fdatasync, os.fsync

        def segment(fd: int) -> str | None:
            try:
                path = os.readlink(f"/proc/self/fd/{fd}")
            except OSError:
                return None
            return path if "/segments/" in path and path.endswith(".log") else None

        def write(fd: int, data: bytes) -> int:
            written = real_write(fd, data)
            path = segment(fd)
            if path is not None:
                end = os.lseek(fd, 0, os.SEEK_CUR)  # O_APPEND: just past what this call wrote
                with self.lock:
                    self.writes.append((next(self.order), path, end - written, end))
            return written

        def synced(real: object) -> object:
            def sync(fd: int) -> None:
                path = segment(fd)
                began = next(self.order)
                real(fd)  # type: ignore[operator]
                if path is not None:
                    with self.lock:
                        self.syncs.append((began, next(self.order), path))

            return sync

        monkeypatch.setattr(os, "write", write)
        monkeypatch.setattr(os, "fdatasync", synced(real_fdatasync))
        monkeypatch.setattr(os, "fsync", synced(real_fsync))

    def watch(self, future: Future[list[Outcome]]) -> None:
        """Record the acknowledgement when the future resolves: this callback is added before
        the API's own (``asyncio.wrap_future``), so it runs before the answer can be sent."""

        def acknowledged(done: Future[list[Outcome]]) -> None:
            if done.exception() is None:
                self.acks.append((next(self.order), done.result()))

        future.add_done_callback(acknowledged)

    def durable_before(self, path: str, moment: int) -> list[tuple[int, int]]:
        """Byte ranges of ``path`` written before a sync that began and returned before ``moment``."""
        began = max((b for b, returned, p in self.syncs if p == path and returned < moment), default=None)
        if began is None:
            return []
        ranges = sorted((start, end) for order, p, start, end in self.writes if p == path and order < began)
        merged: list[tuple[int, int]] = []
        for start, end in ranges:
            if merged and start <= merged[-1][1]:
                merged[-1] = (merged[-1][0], max(merged[-1][1], end))
            else:
                merged.append((start, end))
        return merged


def _entry_ranges(seg_dir: Path) -> dict[int, tuple[str, int, int]]:
    """seq -> (segment path, first byte, byte after its newline) of every entry on disk."""
    out = {}
    for seg in segs.list_segments(seg_dir):
        path = seg.path("log")
        data = path.read_bytes()
        pos = 0
        for line in segs.split_lines(data):
            out[segs.entry_seq(line)] = (os.path.realpath(path), pos, pos + len(line) + 1)
            pos += len(line) + 1
    return out


def _produce(url: str, token: str, prefix: str, requests: int, answers: list[dict]) -> None:
    rng = random.Random(prefix)
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=30) as client:
        for r in range(requests):
            batch = [
                {
                    "id": f"{prefix}-{r}-{i}",
                    "type": "usage_report",
                    "key_id": f"k-{rng.randrange(30)}",
                    "occurred_at": "2026-11-28T10:00:00Z",
                    "node": prefix,
                    "usage": {"encrypt": 1},
                }
                for i in range(rng.randint(1, 25))
            ]
            if r % 7 == 3:
                batch.append(dict(batch[0]))  # a duplicate in the same request
            response = client.post(
                "/v1/events",
                content=b"\n".join(orjson.dumps(e) for e in batch),
                headers={"Content-Type": "application/x-ndjson"},
            )
            assert response.status_code == 200, response.text
            answers.append(response.json())


def test_every_acknowledged_entry_was_fdatasynced_before_its_answer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    recorder = Recorder()
    with live_server(tmp_path) as live:
        ledger = live.runtime.ledger
        submit = ledger.submit

        def watched_submit(*args: object, **kwargs: object) -> Future[list[Outcome]]:
            future = submit(*args, **kwargs)  # type: ignore[arg-type]
            recorder.watch(future)
            return future

        monkeypatch.setattr(ledger, "submit", watched_submit)
        recorder.install(monkeypatch)
        answers: list[dict] = []
        producers = [
            threading.Thread(target=_produce, args=(live.url, live.tokens["ingest"], f"p{n}", 40, answers))
            for n in range(4)
        ]
        for thread in producers:
            thread.start()
        for thread in producers:
            thread.join()
        monkeypatch.undo()
        ranges = _entry_ranges(live.runtime.journal.seg_dir)

    assert len(answers) == 160 and len(recorder.acks) >= 160
    assert len(recorder.syncs) > 10 and len(recorder.writes) > 10
    checked = 0
    for moment, outcomes in recorder.acks:
        for outcome in outcomes:
            if outcome.seq is None:
                continue
            path, start, end = ranges[outcome.seq]
            durable = recorder.durable_before(path, moment)
            assert any(a <= start and end <= b for a, b in durable), (
                f"entry {outcome.seq} ({outcome.id}, bytes {start}-{end} of {path}) was acknowledged "
                f"before a completed sync covered it; durable then: {durable[-3:]}"
            )
            checked += 1
    acknowledged = {(o.id, o.seq) for _, outcomes in recorder.acks for o in outcomes}
    answered = {(r["id"], r["seq"]) for answer in answers for r in answer["results"]}
    assert answered <= acknowledged  # every seq an HTTP answer named was checked above
    assert checked >= len(answered) > 1000
