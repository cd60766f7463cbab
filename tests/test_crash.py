"""kill -9 the server while producers post: every acknowledged event survives, the chain verifies."""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from pathlib import Path

import httpx
import orjson
import yaml

from keylife.api.auth import hash_token, new_token
from keylife.journal.reader import iter_entries
from keylife.journal.signing import Verifier
from keylife.journal.verify import verify
from keylife.registry.projection import RegistryReader
from tests.server import start_server

ROUNDS = 4
PRODUCERS = 4


def producer(url: str, token: str, prefix: str, acked: set[str], stop: threading.Event) -> None:
    n = 0
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=5) as client:
        while not stop.is_set():
            batch = [
                {
                    "id": f"{prefix}-{n + i}",
                    "type": "usage_report",
                    "key_id": f"k-{(n + i) % 50}",
                    "occurred_at": "2026-11-28T10:00:00Z",
                    "node": prefix,
                    "usage": {"encrypt": 1},
                }
                for i in range(random.randint(1, 40))
            ]
            n += len(batch)
            try:
                r = client.post(
                    "/v1/events",
                    content=b"\n".join(orjson.dumps(e) for e in batch),
                    headers={"Content-Type": "application/x-ndjson"},
                )
            except httpx.TransportError:
                return  # the server died mid-request: this batch is unacknowledged
            if r.status_code == 200:
                acked.update(res["id"] for res in r.json()["results"] if res["status"] in ("accepted", "duplicate"))


def test_every_acknowledged_event_survives_kill_9(tmp_path: Path) -> None:
    token = new_token()
    config = tmp_path / "keylife.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "data_dir": str(tmp_path / "data"),
                "listen": {"host": "127.0.0.1", "port": 0},
                "journal": {"origin": "test.keylife/crash", "segment_max_bytes": 65536},
                "api": {"tokens": [{"name": "p", "sha256": hash_token(token), "scopes": ["ingest", "read"]}]},
                "logging": {"level": "WARNING"},
            }
        )
    )
    acked: set[str] = set()
    rng = random.Random(7)
    for round_ in range(ROUNDS):
        proc, url = start_server(config, tmp_path / "ready.json")
        stop = threading.Event()
        threads = [
            threading.Thread(target=producer, args=(url, token, f"r{round_}p{p}", acked, stop))
            for p in range(PRODUCERS)
        ]
        for t in threads:
            t.start()
        time.sleep(rng.uniform(0.3, 1.2))
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        stop.set()
        for t in threads:
            t.join()
    assert len(acked) > 200, "the producers got too few acknowledgements for the test to mean anything"

    proc, url = start_server(config, tmp_path / "ready.json")  # recovery runs at start-up
    try:
        verifier = Verifier.parse((tmp_path / "data/journal/verifier.key").read_text())
        journal_ids = {e.event["id"] for e in iter_entries(tmp_path / "data/journal")}
        lost = acked - journal_ids
        assert not lost, f"{len(lost)} acknowledged events are missing, e.g. {sorted(lost)[:3]}"
        registry = RegistryReader(tmp_path / "data/registry.sqlite")
        assert all(registry.seen(event_id) is not None for event_id in acked)
        registry.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)
    report = verify(tmp_path / "data/journal", [verifier])
    assert report.ok, [str(f) for f in report.faults]
    assert report.entries >= len(acked)
