"""Fault tests of the forwarder against the Loki fake: outage, SIGKILL mid-batch, 400, 429."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import cramjam
import orjson
import yaml
from prometheus_client import CollectorRegistry

from audit_forwarder.shipper.service import Forwarder
from audit_forwarder.sinks.loki import LokiSinkConfig
from audit_forwarder.sinks.loki_push_pb2 import PushRequest
from keylife.cli.forward_cli import wait_ready
from keylife.cli.verify_cli import run_verify
from keylife.journal.reader import iter_entries
from tests.fakes.loki import FakeLoki
from tests.journal_helpers import fill, open_journal
from tests.server import live_server
from tests.test_api import ev, ndjson
from tests.waiting import wait_until as _wait


def _entry_seqs(loki: FakeLoki) -> list[int]:
    return [int(e.metadata["seq"]) for e in loki.entries if e.labels["category"] != "checkpoint"]


def _delivered_seqs(loki: FakeLoki) -> list[int]:
    """Every entry seq in every push Loki answered 2xx or 400, duplicates included (decoded from the wire)."""
    out = []
    for request in list(loki.requests):
        if request.status >= 500 or request.status == 429 or not request.body:
            continue
        push = PushRequest.FromString(bytes(cramjam.snappy.decompress_raw(request.body)))
        for stream in push.streams:
            if 'category="checkpoint"' in stream.labels:
                continue
            out += [int(next(p.value for p in e.structuredMetadata if p.name == "seq")) for e in stream.entries]
    return out


def _forwarder(tmp: Path, url: str, **sink: object) -> tuple[Forwarder, CollectorRegistry]:
    registry = CollectorRegistry()
    config = LokiSinkConfig(type="loki", name="loki", url=url, retry_initial_seconds=0.05, **sink)
    return Forwarder(tmp / "journal", tmp / "state", [config], registry), registry


def test_an_outage_loses_nothing_and_keeps_order(tmp_path):
    journal = open_journal(tmp_path)
    fill(journal, 1500)
    loki = FakeLoki()
    loki.up()
    loki.down()  # a port that refuses connections
    forwarder, registry = _forwarder(tmp_path, loki.url, batch_max_records=200, retry_max_seconds=0.2)
    forwarder.start()
    try:
        _wait(
            lambda: (
                (
                    registry.get_sample_value("keylife_forward_failures_total", {"sink": "loki", "reason": "connect"})
                    or 0
                )
                >= 3
            )
        )
        assert registry.get_sample_value("keylife_forward_up", {"sink": "loki"}) == 0
        assert registry.get_sample_value("keylife_forward_lag_entries", {"sink": "loki"}) == 1500
        fill(journal, 500, start=1500)  # the journal keeps growing during the outage
        loki.up()
        _wait(lambda: len(_entry_seqs(loki)) >= 2000, what="all 2000 entries in Loki")
    finally:
        forwarder.stop()
        loki.down()
    assert _entry_seqs(loki) == list(range(2000))  # complete, in journal order
    assert registry.get_sample_value("keylife_forward_up", {"sink": "loki"}) == 1
    assert registry.get_sample_value("keylife_forward_lag_entries", {"sink": "loki"}) == 0


def test_sigkill_mid_batch_then_restart_loses_nothing_and_duplicates_at_most_the_batch_in_flight(tmp_path):
    journal = open_journal(tmp_path)
    fill(journal, 5000, per_commit=100)
    journal.close()
    batch = 250
    config = tmp_path / "forward.yaml"
    with FakeLoki() as loki:
        handle, in_flight = loki.handle, threading.Event()
        pushes = {"started": 0, "stored": 0}

        def slow_handle(headers, body):  # every push takes 150 ms: there is always a batch in flight
            pushes["started"] += 1
            in_flight.set()
            time.sleep(0.15)
            try:
                return handle(headers, body)
            finally:
                pushes["stored"] += 1

        loki.handle = slow_handle
        sink = {"type": "loki", "name": "loki", "url": loki.url, "batch_max_records": batch}
        config.write_text(
            yaml.safe_dump(
                {
                    "data_dir": str(tmp_path / "data"),
                    "journal": {"dir": str(tmp_path / "journal"), "origin": "test.keylife/journal"},
                    "logging": {"level": "WARNING"},
                    "forwarder": {"sinks": [sink], "metrics_port": 0},
                }
            )
        )
        ready = tmp_path / "ready.json"
        command = [sys.executable, "-m", "keylife.cli", "forward", "--config", str(config), "--ready-file", str(ready)]
        first = subprocess.Popen(command, stderr=subprocess.DEVNULL)
        wait_ready(ready)
        _wait(lambda: len(loki.requests) >= 4, what="four pushes acknowledged")
        in_flight.clear()
        _wait(in_flight.is_set, what="a push in flight")
        os.kill(first.pid, signal.SIGKILL)  # mid-batch: Loki has the batch, the forwarder has no ack
        first.wait()
        _wait(lambda: pushes["stored"] == pushes["started"], what="the orphaned push stored by the fake")
        cursor = orjson.loads((tmp_path / "data/forwarder/loki/cursor.json").read_bytes())
        ready.unlink()
        second = subprocess.Popen([*command[:-2], "--until-caught-up"], stderr=subprocess.PIPE)
        _, err = second.communicate(timeout=120)
        assert second.returncode == 0, err.decode()[-2000:]
    delivered = _delivered_seqs(loki)
    assert sorted(set(delivered)) == list(range(5000))  # nothing lost
    assert _entry_seqs(loki) == list(range(5000))  # Loki's stored copy: complete, in order, no duplicate
    duplicated = sorted(seq for seq, n in Counter(delivered).items() if n > 1)
    # The bound: only the batch that was in flight (unacknowledged) when the forwarder died is sent
    # twice, and it starts exactly at the durable cursor.
    assert 0 < len(duplicated) <= batch
    assert duplicated == list(range(cursor["next_seq"], cursor["next_seq"] + len(duplicated)))


def test_a_400_goes_to_quarantine_with_a_signed_journal_record_and_a_metric(tmp_path):
    with FakeLoki(max_line_size=600) as loki:
        sink = {"type": "loki", "name": "loki", "url": loki.url, "retry_initial_seconds": 0.05}
        with live_server(tmp_path, forwarder={"sinks": [sink]}) as live, live.client() as client:
            events = [ev(0), ev(1, reason="z" * 1000), ev(2)]
            headers = {"Content-Type": "application/x-ndjson"}
            assert client.post("/v1/events", content=ndjson(*events), headers=headers).status_code == 200
            _wait(lambda: any(e.labels.get("category") == "system" for e in loki.entries), what="the notice in Loki")
            metrics = client.get("/metrics").text
            journal_dir = live.runtime.journal.directory
            refused_seq = next(e.seq for e in iter_entries(journal_dir) if e.event["id"] == "e-1")
    assert 'keylife_forward_quarantined_total{reason="too_large",sink="loki"} 1.0' in metrics
    assert [e.metadata.get("event_id") for e in loki.entries if e.labels["category"] != "checkpoint"][:2] == [
        "e-0",
        "e-2",
    ]
    notice = next(e.event for e in iter_entries(journal_dir) if e.event["type"] == "forward_quarantined")
    assert notice["attributes"]["seq"] == str(refused_seq)
    assert notice["attributes"]["reason"] == "too_large" and "max entry size" in notice["reason"].lower()
    quarantine = tmp_path / "data/forwarder/loki/quarantine.ndjson"
    (line,) = [orjson.loads(x) for x in quarantine.read_bytes().splitlines()]
    assert line["seq"] == refused_seq and line["event"]["id"] == "e-1"
    assert run_verify(journal_dir, [], [], as_json=True, allow_unanchored=True) == 0  # the notice is signed


def test_429_retry_after_is_honoured(tmp_path):
    journal = open_journal(tmp_path)
    fill(journal, 50)
    with FakeLoki() as loki:
        handle, times = loki.handle, []

        def timed(headers, body):
            times.append(time.monotonic())
            return handle(headers, body)

        loki.handle = timed
        loki.fail_next(429, retry_after=2)  # delay-seconds: an integer (RFC 9110 10.2.3)
        forwarder, registry = _forwarder(tmp_path, loki.url)
        forwarder.start()
        try:
            _wait(lambda: len(_entry_seqs(loki)) == 50)
        finally:
            forwarder.stop()
    assert times[1] - times[0] >= 2.0
    assert registry.get_sample_value("keylife_forward_failures_total", {"sink": "loki", "reason": "http_429"}) == 1
    assert registry.get_sample_value("keylife_forward_retries_total", {"sink": "loki"}) == 1


def test_a_dead_sink_holds_back_only_itself(tmp_path):
    from audit_forwarder.sinks.file import FileSinkConfig

    journal = open_journal(tmp_path)
    fill(journal, 800)
    dead = FakeLoki()
    dead.up()
    dead.down()
    archive = tmp_path / "archive.ndjson"
    registry = CollectorRegistry()
    sinks = [
        LokiSinkConfig(type="loki", name="loki", url=dead.url, retry_initial_seconds=0.05, retry_max_seconds=0.2),
        FileSinkConfig(type="file", name="archive", path=archive),
    ]
    forwarder = Forwarder(tmp_path / "journal", tmp_path / "state", sinks, registry)
    forwarder.start()
    try:
        _wait(lambda: registry.get_sample_value("keylife_forward_lag_entries", {"sink": "archive"}) == 0)
        _wait(lambda: registry.get_sample_value("keylife_forward_up", {"sink": "loki"}) == 0)  # it tried, and failed
        assert registry.get_sample_value("keylife_forward_lag_entries", {"sink": "loki"}) == 800
    finally:
        forwarder.stop()
    lines = [orjson.loads(line) for line in archive.read_bytes().splitlines()]
    assert [x["seq"] for x in lines if x["event"]["type"] != "checkpoint"] == list(range(800))
