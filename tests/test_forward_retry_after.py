"""A destination's Retry-After is honoured but never parks a sink for more than an hour.

Real sinks against the Loki and Splunk HEC fakes, driven by the real forwarder: the wait the worker
decides on is read from its "delivery failed" log line and its ``next_retry_at``, then the
forwarder is stopped (which ends the wait at once), so nothing actually waits an hour.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from audit_forwarder.shipper.service import Forwarder
from audit_forwarder.sinks import loki, splunk_hec
from audit_forwarder.sinks.loki import LokiSinkConfig
from audit_forwarder.sinks.splunk_hec import SplunkHecSinkConfig
from keylife.common.backoff import RETRY_AFTER_CAP, Backoff
from tests.fakes.loki import FakeLoki
from tests.fakes.splunk_hec import splunk_hec as running_hec
from tests.journal_helpers import fill, open_journal
from tests.waiting import wait_until

HOUR = 3600.0
FAR_FUTURE = "Fri, 31 Dec 9999 23:59:59 GMT"  # an HTTP-date (RFC 9110 5.6.7), about 8,000 years ahead
TOKEN = "00000000-0000-4000-8000-00000000c0de"


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextmanager
def forwarder_log() -> Iterator[_Records]:
    """The forwarder's log records, whatever an earlier test did to propagation or levels."""
    handler, logger = _Records(), logging.getLogger("keylife.forwarder")
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)


def first_wait(forwarder: Forwarder, log: _Records) -> tuple[float, float, str]:
    """Start, wait for the first failed send; (logged wait, next attempt time - now, reason). Stops it."""
    worker = forwarder.workers[0]
    forwarder.start()
    try:
        wait_until(lambda: worker.next_retry_at is not None, 10, "a failed send")
        ahead = worker.next_retry_at - time.time()
    finally:
        stopping = time.monotonic()
        forwarder.stop()  # ends the pending wait now
        assert time.monotonic() - stopping < 5
    [failed] = [r for r in log.records if r.getMessage() == "delivery failed"]
    return failed.retry_in_seconds, ahead, failed.reason


@pytest.mark.parametrize(
    ("status", "retry_after", "reason"), [(429, "100000", "http_429"), (503, FAR_FUTURE, "http_5xx")]
)
def test_loki_retry_after_beyond_an_hour_waits_exactly_an_hour(tmp_path: Path, status, retry_after, reason) -> None:
    fill(open_journal(tmp_path), 20)
    with FakeLoki() as fake, forwarder_log() as log:
        fake.fail_next(status, retry_after=retry_after)
        registry = CollectorRegistry()
        sink = LokiSinkConfig(type="loki", name="loki", url=fake.url, retry_initial_seconds=0.05)
        waited, ahead, logged_reason = first_wait(
            Forwarder(tmp_path / "journal", tmp_path / "state", [sink], registry), log
        )
    assert waited == HOUR and logged_reason == reason
    assert HOUR - 5 < ahead <= HOUR  # the next attempt is scheduled an hour out, not 100,000 s or 8,000 years
    assert registry.get_sample_value("keylife_forward_failures_total", {"sink": "loki", "reason": reason}) == 1
    assert fake.entries == []  # not resent meanwhile


def test_splunk_hec_retry_after_beyond_an_hour_waits_exactly_an_hour(tmp_path: Path) -> None:
    fill(open_journal(tmp_path), 20)
    token_file = tmp_path / "hec.token"
    token_file.touch(mode=0o600)
    token_file.write_text(TOKEN + "\n")
    with running_hec(TOKEN) as hec, forwarder_log() as log:
        hec.fail_next(503, retry_after=100000)
        sink = SplunkHecSinkConfig(type="splunk_hec", name="splunk", url=hec.url, token_file=token_file)
        forwarder = Forwarder(tmp_path / "journal", tmp_path / "state", [sink], CollectorRegistry())
        waited, ahead, reason = first_wait(forwarder, log)
    assert (waited, reason) == (HOUR, "http_5xx") and HOUR - 5 < ahead <= HOUR


def test_both_parsers_read_a_far_http_date_and_the_backoff_caps_it() -> None:
    """The sinks pass on what the destination said; the cap is the backoff's, for every value."""
    in_a_day = format_datetime(datetime.now(UTC) + timedelta(days=1), usegmt=True)
    for parse in (loki.retry_after_seconds, splunk_hec.retry_after_seconds):
        assert parse(FAR_FUTURE) > 2.5e11 and parse("100000") == 100000
        assert 86_390 < parse(in_a_day) <= 86_400
    assert RETRY_AFTER_CAP == HOUR
    backoff = Backoff(0.5, 60)
    for asked in (3600, 3601, 100000, 2.5e11):
        assert all(backoff.next_delay(asked) == HOUR for _ in range(200))
    assert all(1800 <= backoff.next_delay(1800) <= 1980 for _ in range(200))  # below the cap: + up to 10% jitter
