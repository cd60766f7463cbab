"""The shipping loop against a scripted sink: order, retries, quarantine, cursor, restart."""

from __future__ import annotations

import threading
import time

import orjson
from prometheus_client import CollectorRegistry

from audit_forwarder.shipper.contract import Prepared, Record, Refused, Rejected, Retryable
from audit_forwarder.shipper.metrics import ForwardMetrics
from audit_forwarder.shipper.settings import SinkSettings
from audit_forwarder.shipper.worker import SinkWorker
from tests.journal_helpers import fill, open_journal
from tests.waiting import wait_until as _wait


class ScriptedSink:
    """Delivers into ``self.delivered`` unless a rule says otherwise (a test double of a sink)."""

    def __init__(self) -> None:
        self.name = "scripted"
        self.delivered: list[Record] = []
        self.batches: list[list[int]] = []
        self.failures: list[Exception] = []  # raised by the next send calls, in order
        self.refuse_seqs: set[int] = set()  # the destination rejects batches holding these
        self.too_large: set[int] = set()  # prepare refuses these
        self.send_times: list[float] = []
        self.lock = threading.Lock()

    def prepare(self, record: Record) -> Prepared:
        if record.seq in self.too_large and not record.is_checkpoint:
            raise Refused("too_large", f"seq {record.seq} is too large")
        return Prepared(record, record.seq, 100)

    def send(self, batch: list[Prepared]) -> None:
        with self.lock:
            self.send_times.append(time.monotonic())
            if self.failures:
                raise self.failures.pop(0)
            bad = [i for i, p in enumerate(batch) if p.payload in self.refuse_seqs and not p.record.is_checkpoint]
            if bad:
                raise Rejected("invalid", f"entry {batch[bad[0]].payload} is invalid")
            self.batches.append([p.record.seq for p in batch])
            self.delivered.extend(p.record for p in batch)

    def close(self) -> None:
        pass


class ListReporter:
    def __init__(self) -> None:
        self.notices: list[dict] = []

    def report(self, notice: dict) -> None:
        self.notices.append(notice)


def _settings(**over) -> SinkSettings:
    base = {"name": "scripted", "batch_max_records": 50, "retry_initial_seconds": 0.01, "retry_max_seconds": 0.05}
    return SinkSettings(**(base | over))


def _worker(tmp_path, sink, reporter=None, **over) -> tuple[SinkWorker, ForwardMetrics, CollectorRegistry]:
    registry = CollectorRegistry()
    metrics = ForwardMetrics(registry)
    worker = SinkWorker(sink, _settings(**over), tmp_path / "journal", tmp_path / "forwarder", metrics, reporter)
    return worker, metrics, registry


def _entries(sink: ScriptedSink) -> list[int]:
    return [r.seq for r in sink.delivered if not r.is_checkpoint]


def test_delivers_everything_in_order_then_follows_new_commits(tmp_path):
    journal = open_journal(tmp_path, checkpoint_every=100)
    fill(journal, 300)
    sink = ScriptedSink()
    worker, _, registry = _worker(tmp_path, sink)
    worker.start()
    try:
        _wait(lambda: worker.acknowledged == 300)
        fill(journal, 40, start=300)
        worker.notify()
        _wait(lambda: worker.acknowledged == 340)
    finally:
        worker.stop()
    assert _entries(sink) == list(range(340))
    assert all(len(batch) <= 50 for batch in sink.batches)
    assert registry.get_sample_value("keylife_forward_records_sent_total", {"sink": "scripted"}) == len(sink.delivered)
    cursor = orjson.loads((tmp_path / "forwarder" / "scripted" / "cursor.json").read_bytes())
    last_entry = [r for r in sink.delivered if not r.is_checkpoint][-1]
    assert cursor["next_seq"] == 340 and cursor["head"] == last_entry.entry.hash.hex()


def test_retryable_failures_resend_the_same_batch_and_lose_nothing(tmp_path):
    journal = open_journal(tmp_path)
    fill(journal, 120)
    sink = ScriptedSink()
    sink.failures = [Retryable("connect", "refused")] * 3 + [Retryable("http_5xx", "503")]
    worker, _, registry = _worker(tmp_path, sink)
    worker.start()
    try:
        _wait(lambda: worker.acknowledged == 120)
    finally:
        worker.stop()
    assert _entries(sink) == list(range(120))
    assert registry.get_sample_value("keylife_forward_failures_total", {"sink": "scripted", "reason": "connect"}) == 3
    assert registry.get_sample_value("keylife_forward_failures_total", {"sink": "scripted", "reason": "http_5xx"}) == 1
    assert registry.get_sample_value("keylife_forward_retries_total", {"sink": "scripted"}) == 4


def test_retry_after_is_honoured(tmp_path):
    journal = open_journal(tmp_path)
    fill(journal, 10)
    sink = ScriptedSink()
    sink.failures = [Retryable("http_429", "slow down", retry_after=0.6)]
    worker, _, _ = _worker(tmp_path, sink)
    worker.start()
    try:
        _wait(lambda: worker.acknowledged == 10)
    finally:
        worker.stop()
    assert sink.send_times[1] - sink.send_times[0] >= 0.6


def test_a_refused_record_is_quarantined_journaled_and_counted_and_the_rest_delivered(tmp_path):
    journal = open_journal(tmp_path)
    fill(journal, 100)
    sink = ScriptedSink()
    sink.refuse_seqs = {37}
    sink.too_large = {80}
    reporter = ListReporter()
    worker, _, registry = _worker(tmp_path, sink, reporter)
    worker.start()
    try:
        _wait(lambda: worker.acknowledged == 100)
    finally:
        worker.stop()
    assert _entries(sink) == [n for n in range(100) if n not in (37, 80)]
    lines = [orjson.loads(x) for x in (tmp_path / "forwarder/scripted/quarantine.ndjson").read_bytes().splitlines()]
    assert sorted((line["seq"], line["reason"]) for line in lines) == [(37, "invalid"), (80, "too_large")]
    assert {line["seq"]: line["event"]["id"] for line in lines} == {37: "ev-37", 80: "ev-80"}
    assert sorted(n["attributes"]["seq"] for n in reporter.notices) == ["37", "80"]
    assert all(
        n["type"] == "forward_quarantined" and n["id"].startswith("keylife-quarantine-") for n in reporter.notices
    )
    assert (
        registry.get_sample_value("keylife_forward_quarantined_total", {"sink": "scripted", "reason": "invalid"}) == 1
    )
    assert (
        registry.get_sample_value("keylife_forward_quarantined_total", {"sink": "scripted", "reason": "too_large"}) == 1
    )


def test_a_destination_refusing_everything_is_held_not_quarantined_wholesale(tmp_path):
    journal = open_journal(tmp_path)
    fill(journal, 200)
    sink = ScriptedSink()
    sink.refuse_seqs = set(range(200))
    worker, _, _ = _worker(tmp_path, sink, max_consecutive_refusals=5)
    worker.start()
    try:
        _wait(lambda: not worker.up and "in a row" in (worker.last_error or ""))
        time.sleep(0.2)
        quarantined = worker.quarantine.count
        assert quarantined == 5  # then it holds, probing with backoff
        sink.refuse_seqs = set()  # the operator fixed the destination
        _wait(lambda: worker.acknowledged == 200)
    finally:
        worker.stop()
    assert worker.up
    assert len(_entries(sink)) == 200 - quarantined


def test_restart_resumes_from_the_cursor_without_resending_acknowledged_batches(tmp_path):
    journal = open_journal(tmp_path)
    fill(journal, 150)
    sink = ScriptedSink()
    worker, _, _ = _worker(tmp_path, sink)
    worker.start()
    _wait(lambda: worker.acknowledged == 150)
    worker.stop()
    fill(journal, 50, start=150)
    again = ScriptedSink()
    worker, _, _ = _worker(tmp_path, again)
    worker.start()
    try:
        _wait(lambda: worker.acknowledged == 200)
    finally:
        worker.stop()
    assert _entries(again) == list(range(150, 200))


def test_lag_and_oldest_age_gauges(tmp_path):
    from audit_forwarder.shipper.metrics import SinkGauges

    journal = open_journal(tmp_path)
    fill(journal, 30)
    sink = ScriptedSink()
    sink.failures = [Retryable("connect", "down")] * 1000
    worker, _, registry = _worker(tmp_path, sink, retry_max_seconds=0.02)
    registry.register(SinkGauges(lambda: [worker], lambda: journal.size))
    worker.start()
    try:
        _wait(
            lambda: registry.get_sample_value("keylife_forward_oldest_unshipped_age_seconds", {"sink": "scripted"}) > 0
        )
        _wait(lambda: registry.get_sample_value("keylife_forward_up", {"sink": "scripted"}) == 0)
        assert registry.get_sample_value("keylife_forward_lag_entries", {"sink": "scripted"}) == 30
    finally:
        worker.stop()


class FlakyReporter(ListReporter):
    """keylife unreachable for the first ``failures`` notices."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures

    def report(self, notice: dict) -> None:
        if self.failures:
            self.failures -= 1
            raise ConnectionError("keylife is down")
        super().report(notice)


def test_a_notice_that_cannot_be_journaled_stays_pending_and_survives_a_restart(tmp_path, monkeypatch):
    from audit_forwarder.shipper import quarantine as quarantine_module
    from audit_forwarder.shipper.metrics import SinkGauges

    monkeypatch.setattr(quarantine_module, "REPORT_RETRY_SECONDS", 0.05)
    journal = open_journal(tmp_path)
    fill(journal, 20)
    sink = ScriptedSink()
    sink.too_large = {5, 6}
    down = FlakyReporter(failures=10**6)  # keylife stays down for this whole run
    worker, _, registry = _worker(tmp_path, sink, down)
    registry.register(SinkGauges(lambda: [worker], lambda: journal.size))
    worker.start()
    try:
        _wait(lambda: worker.acknowledged == 20)
        _wait(lambda: registry.get_sample_value("keylife_forward_quarantine_unjournaled", {"sink": "scripted"}) == 2)
    finally:
        worker.stop()
    assert down.notices == []
    back = FlakyReporter(failures=1)  # after a restart keylife answers (once it is back)
    worker, _, _ = _worker(tmp_path, ScriptedSink(), back)
    worker.start()
    try:
        _wait(lambda: len(back.notices) == 2)
    finally:
        worker.stop()
    assert sorted(n["attributes"]["seq"] for n in back.notices) == ["5", "6"]
    assert worker.quarantine.unjournaled == 0
