"""A bulk plan survives its server (issue 14, item 6): kill -9 serve mid-plan, start it again, and
the plan resumes at start-up and finishes with every key done exactly once."""

from __future__ import annotations

import os
import signal
from collections import Counter
from pathlib import Path

import httpx
import yaml

from keylife.api.auth import hash_token, new_token
from keylife.journal.reader import iter_entries
from keylife.journal.signing import Verifier
from keylife.journal.verify import verify
from tests.bulk_helpers import make_keys
from tests.server import start_server
from tests.waiting import wait_until

KEYS = 400


def test_a_plan_killed_mid_way_resumes_at_start_and_does_every_key_once(tmp_path: Path) -> None:
    token = new_token()
    config = tmp_path / "keylife.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "data_dir": str(tmp_path / "data"),
                "listen": {"host": "127.0.0.1", "port": 0},
                "journal": {"origin": "test.keylife/bulk-resume"},
                "api": {"tokens": [{"name": "sec", "sha256": hash_token(token), "scopes": ["admin", "ingest"]}]},
                "logging": {"level": "WARNING"},
                "bulk": {"batch_size": 50},
            }
        )
    )
    keys = [f"key-{i:04d}" for i in range(KEYS)]
    proc, url = start_server(config, tmp_path / "ready.json")
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=30) as c:
        make_keys(c, keys)
        plan = c.post(
            "/v1/keys/bulk",
            json={"selector": {"all": True}, "action": "revoke", "reason": "r", "rate_per_second": 100},
        ).json()["plan"]
        assert c.post(f"/v1/bulk/{plan}/execute").status_code == 200
        wait_until(lambda: c.get(f"/v1/bulk/{plan}").json()["done"] >= 100, what="part of the plan done")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    proc, url = start_server(config, tmp_path / "ready.json")  # resumes the started plan
    try:
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=30) as c:
            cut = c.get(f"/v1/bulk/{plan}").json()
            assert cut["state"] == "started" and 0 < cut["remaining"] < KEYS, cut
            wait_until(lambda: c.get(f"/v1/bulk/{plan}").json()["state"] == "finished", what="plan finished")
            done = c.get(f"/v1/bulk/{plan}").json()
            assert done["done"] + done["duplicate"] == KEYS and done["refused"] == 0 and done["remaining"] == 0
            listed = c.get("/v1/keys", params={"state": "revoked", "limit": 1000}).json()["items"]
            assert len(listed) == KEYS
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    events = [e.event for e in iter_entries(tmp_path / "data/journal")]
    per_key = Counter(e["key_id"] for e in events if e["type"] == "revoked")
    assert set(per_key) == set(keys) and set(per_key.values()) == {1}  # every key once
    assert {e["id"] for e in events if e["type"] == "revoked"} == {f"bulk-{plan}-{i}" for i in range(KEYS)}
    phases = [e["details"]["phase"] for e in events if e["type"] == "bulk_operation"]
    assert phases == ["planned", "started", "finished"]  # a resumed plan is not started twice
    verifier = Verifier.parse((tmp_path / "data/journal/verifier.key").read_text())
    report = verify(tmp_path / "data/journal", [verifier])
    assert report.ok, [str(f) for f in report.faults]
