"""The forwarder inside `keylife serve` and as `keylife forward`: delivery, quarantine notices, metrics."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import orjson
import yaml

from keylife.cli.forward_cli import wait_ready
from keylife.journal.reader import iter_entries
from tests.server import live_server
from tests.test_api import ev, ndjson
from tests.waiting import wait_until as _wait

NDJSON = {"Content-Type": "application/x-ndjson"}


def _lines(path: Path) -> list[dict]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()] if path.exists() else []


def test_serve_ships_every_entry_and_journals_a_quarantine_notice(tmp_path):
    archive = tmp_path / "archive.ndjson"
    sink = {"type": "file", "name": "archive", "path": str(archive), "max_line_bytes": 1100}
    with live_server(tmp_path, forwarder={"sinks": [sink]}) as live, live.client() as client:
        events = [ev(n) for n in range(50)] + [ev(50, reason="x" * 1024)] + [ev(n) for n in range(51, 60)]
        assert client.post("/v1/events", content=ndjson(*events), headers=NDJSON).status_code == 200
        journal_dir = live.runtime.journal.directory

        def shipped() -> list[dict]:
            return [line for line in _lines(archive) if line["event"]["type"] != "checkpoint"]

        # 59 events + the notice about the 60th (which the file sink refused as too large)
        _wait(lambda: len(shipped()) == 60)
        records = shipped()
        assert [r["event"]["id"] for r in records[:59]] == [f"e-{n}" for n in range(60) if n != 50]
        assert [r["seq"] for r in records] == sorted(r["seq"] for r in records)
        notice = records[-1]["event"]
        assert notice["type"] == "forward_quarantined"
        assert notice["attributes"] | {} == notice["attributes"]
        assert notice["attributes"]["sink"] == "archive" and notice["attributes"]["reason"] == "too_large"
        quarantined = _lines(tmp_path / "data" / "forwarder" / "archive" / "quarantine.ndjson")
        assert [(q["event"]["id"], q["reason"]) for q in quarantined] == [("e-50", "too_large")]
        # hashes in the shipped copy are the journal's chain hashes
        journal = {e.seq: e for e in iter_entries(journal_dir)}
        assert all(journal[r["seq"]].event == r["event"] for r in records)
        metrics = client.get("/metrics").text
        assert 'keylife_forward_quarantined_total{reason="too_large",sink="archive"} 1.0' in metrics
        assert 'keylife_forward_up{sink="archive"} 1.0' in metrics
        assert 'keylife_forward_lag_entries{sink="archive"} 0.0' in metrics


def test_forward_alone_catches_up_and_journals_notices_through_the_api(tmp_path):
    archive = tmp_path / "alone.ndjson"
    sink = {"type": "file", "name": "alone", "path": str(archive), "max_line_bytes": 1100}
    with live_server(tmp_path) as live, live.client() as client:
        events = [ev(n) for n in range(30)] + [ev(30, reason="y" * 1024)]
        assert client.post("/v1/events", content=ndjson(*events), headers=NDJSON).status_code == 200
        token = tmp_path / "ingest.token"
        token.write_text(live.tokens["forward"])
        token.chmod(0o600)
        config = tmp_path / "forward.yaml"
        config.write_text(
            yaml.safe_dump(
                {
                    "data_dir": str(tmp_path / "data"),
                    "logging": {"level": "WARNING"},
                    "forwarder": {
                        "sinks": [sink],
                        "state_dir": str(tmp_path / "fwd-state"),
                        "report_url": live.url,
                        "report_token_file": str(token),
                        "metrics_port": 0,
                    },
                }
            )
        )
        ready = tmp_path / "forward.ready"
        proc = subprocess.Popen(
            [sys.executable, "-m", "keylife.cli", "forward", "--config", str(config), "--ready-file", str(ready)],
            stderr=subprocess.PIPE,
        )
        try:
            metrics_url = wait_ready(ready)["metrics"]
            _wait(lambda: any(r["event"]["type"] == "forward_quarantined" for r in _lines(archive)))
            text = httpx.get(metrics_url).text
            assert 'keylife_forward_quarantined_total{reason="too_large",sink="alone"} 1.0' in text
            assert 'keylife_forward_quarantine_unjournaled{sink="alone"} 0.0' in text
        finally:
            proc.terminate()
            _, err = proc.communicate(timeout=20)
        assert proc.returncode == 0, err.decode()[-2000:]
        ids = [r["event"]["id"] for r in _lines(archive) if r["event"]["type"] != "checkpoint"]
        assert ids[:30] == [f"e-{n}" for n in range(30)]
        notices = [
            e.event for e in iter_entries(live.runtime.journal.directory) if e.event["type"] == "forward_quarantined"
        ]
        assert len(notices) == 1 and notices[0]["attributes"]["sink"] == "alone"


def test_forward_until_caught_up_exits_when_done(tmp_path):
    with live_server(tmp_path) as live, live.client() as client:
        assert client.post("/v1/events", content=ndjson(*[ev(n) for n in range(20)]), headers=NDJSON).status_code == 200
    archive = tmp_path / "done.ndjson"
    config = tmp_path / "forward.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "data_dir": str(tmp_path / "data"),
                "forwarder": {"sinks": [{"type": "file", "name": "done", "path": str(archive)}], "metrics_port": 0},
            }
        )
    )
    result = subprocess.run(
        [sys.executable, "-m", "keylife.cli", "forward", "--config", str(config), "--until-caught-up"],
        capture_output=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr.decode()[-2000:]
    ids = [r["event"]["id"] for r in _lines(archive) if r["event"]["type"] != "checkpoint"]
    assert ids == [f"e-{n}" for n in range(20)]
    checkpoints = [r for r in _lines(archive) if r["event"]["type"] == "checkpoint"]
    assert checkpoints and checkpoints[-1]["event"]["size"] == 20


def test_forward_without_sinks_says_so(tmp_path):
    with live_server(tmp_path):
        pass
    result = subprocess.run(
        [sys.executable, "-m", "keylife.cli", "forward", "--data-dir", str(tmp_path / "data")],
        capture_output=True,
        timeout=60,
    )
    assert result.returncode == 2 and b"no enabled sink" in result.stderr


def test_only_the_forward_scope_may_journal_a_quarantine_notice(tmp_path):
    notice = {
        "id": "keylife-quarantine-x-entry-1",
        "type": "forward_quarantined",
        "occurred_at": "2026-11-28T10:00:00Z",
        "actor": "keylife",
        "reason": "sink x refused entry seq 1 (invalid): test",
        "attributes": {"sink": "x", "seq": "1", "reason": "invalid", "entry_hash": "00", "entry_type": "usage_report"},
    }
    with live_server(tmp_path) as live:
        with live.client("ingest") as producer:  # a producer's token cannot forge an audit notice
            assert producer.post("/v1/forwarder/quarantined", json=notice).status_code == 403
        with live.client("forward") as forwarder:
            assert forwarder.post("/v1/forwarder/quarantined", json=notice).status_code == 200
            refused = forwarder.post("/v1/forwarder/quarantined", json=notice | {"type": "revoked", "key_id": "k"})
            assert refused.status_code == 422
