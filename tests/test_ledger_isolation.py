"""One producer's bad request never fails another producer's request in the same group commit."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from keylife.domain.events import Event
from keylife.ingest.ledger import EventRejected, Ledger
from keylife.journal.reader import iter_entries
from keylife.journal.verify import verify
from keylife.registry.projection import Registry
from tests.journal_helpers import open_journal, signer, usage_event
from tests.waiting import wait_until


def _unencodable(n: int) -> Event:
    """An event the writer cannot encode: its time, converted to UTC, is past year 9999. Built
    without validation (which refuses it at the API), to stand for any request that fails while
    it is being journaled."""
    event = Event.model_validate(usage_event(n))
    late = datetime(9999, 12, 31, 23, 59, 59, tzinfo=timezone(timedelta(hours=-1)))
    return event.model_copy(update={"occurred_at": late})


def test_a_request_that_cannot_be_journaled_fails_alone(tmp_path: Path) -> None:
    ledger = Ledger(open_journal(tmp_path, signer(tmp_path)), Registry(tmp_path / "registry.sqlite"))
    ledger.start()
    with pytest.raises(OverflowError):
        _unencodable(0).payload()  # the fault is real, not a mock
    ledger.journal.lock.acquire()  # hold the writer inside the first group's commit...
    try:
        first = ledger.submit([Event.model_validate(usage_event(1))])
        wait_until(lambda: ledger._queue.empty(), 5, "the writer to take the first request")
        groups = ledger.stats["groups"]
        good_before = ledger.submit([Event.model_validate(usage_event(n)) for n in (2, 3)])
        bad = ledger.submit([Event.model_validate(usage_event(4)), _unencodable(5)])
        good_after = ledger.submit([Event.model_validate(usage_event(6))])
    finally:
        ledger.journal.lock.release()  # ...so that the next three requests form one group
    assert [o.status for o in first.result(5)] == ["accepted"]
    assert [o.status for o in good_before.result(5)] == ["accepted", "accepted"]
    assert [o.status for o in good_after.result(5)] == ["accepted"]
    with pytest.raises(EventRejected, match="event 'ev-5' cannot be encoded: OverflowError"):
        bad.result(5)
    assert ledger.stats["groups"] == groups + 2  # the three were one group
    assert ledger.running and ledger.failure is None
    assert ledger.registry.seen("ev-4") is None  # nothing of the failed request, not even its good line
    again = ledger.submit([Event.model_validate(usage_event(7))])
    assert again.result(5)[0].status == "accepted"
    ledger.stop()
    ids = [e.event["id"] for e in iter_entries(tmp_path / "journal")]
    assert ids == ["ev-1", "ev-2", "ev-3", "ev-6", "ev-7"]
    assert verify(tmp_path / "journal", [ledger.journal.signer.verifier]).ok
