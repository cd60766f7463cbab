"""The writer thread: group commit, recovery journaled, and failure that acknowledges nothing."""

from __future__ import annotations

import errno
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from keylife.domain.events import Event
from keylife.ingest.ledger import Ledger, LedgerStopped
from keylife.journal import segments as segs
from keylife.journal.reader import iter_entries
from keylife.registry.projection import Registry
from tests.journal_helpers import fill, open_journal, signer, usage_event
from tests.waiting import wait_until


def make(tmp_path: Path) -> Ledger:
    sign = signer(tmp_path)
    ledger = Ledger(open_journal(tmp_path, sign), Registry(tmp_path / "registry.sqlite"))
    ledger.start()
    return ledger


def test_concurrent_producers_share_fsyncs(tmp_path: Path) -> None:
    ledger = make(tmp_path)
    events = [Event.model_validate(usage_event(n)) for n in range(2000)]
    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(lambda e: ledger.submit([e]).result(10), events))
    ledger.stop()
    assert all(r[0].status == "accepted" for r in results)
    assert sorted(r[0].seq for r in results) == list(range(2000))
    assert ledger.stats["fsyncs"] < 2000  # many producers per fdatasync
    assert len(list(iter_entries(tmp_path / "journal"))) == 2000


def test_torn_tail_recovery_is_itself_journaled(tmp_path: Path) -> None:
    sign = signer(tmp_path)
    journal = open_journal(tmp_path, sign)
    fill(journal, 10)
    journal.close()
    log_path = tmp_path / "journal/segments" / segs.seg_name(0, "log")
    log_path.write_bytes(log_path.read_bytes() + b'{"event":{"id":"half')
    ledger = Ledger(open_journal(tmp_path, sign), Registry(tmp_path / "registry.sqlite"))
    ledger.start()
    ledger.stop()
    entries = list(iter_entries(tmp_path / "journal"))
    assert len(entries) == 11
    recovered = entries[-1].event
    assert recovered["type"] == "journal_recovered" and "20 bytes cut at seq 10" in recovered["reason"]


def test_registry_catches_up_after_a_crash_between_fsync_and_projection(tmp_path: Path) -> None:
    sign = signer(tmp_path)
    journal = open_journal(tmp_path, sign)
    fill(journal, 30)  # journaled, never projected: as if the process died right after the fsync
    journal.close()
    registry = Registry(tmp_path / "registry.sqlite")
    ledger = Ledger(open_journal(tmp_path, sign), registry)
    ledger.start()
    assert registry.last_applied_seq() == 29 and registry.seen("ev-29") is not None
    ledger.stop()


def test_a_failed_write_acknowledges_nothing_and_degrades_until_it_works(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ledger = make(tmp_path)
    ledger.submit([Event.model_validate(usage_event(0))]).result(5)
    wait_until(lambda: ledger.journal.last_checkpoint is not None, 5, "the first checkpoint")

    def disk_full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fdatasync", disk_full)
    future = ledger.submit([Event.model_validate(usage_event(1))])
    with pytest.raises(LedgerStopped, match="No space"):
        future.result(5)
    assert not ledger.running and ledger.failure is None
    assert "degraded: ENOSPC on fdatasync" in (ledger.problem or "")
    with pytest.raises(LedgerStopped, match="ENOSPC"):
        ledger.submit([Event.model_validate(usage_event(2))]).result(5)
    assert ledger.registry.seen("ev-1") is None  # nothing half-projected either
    monkeypatch.undo()
    wait_until(lambda: ledger.running, 10, "recovery once fdatasync works again")
    ledger.submit([Event.model_validate(usage_event(3))]).result(5)
    ledger.stop()
    assert [e.event["id"] for e in iter_entries(tmp_path / "journal")] == ["ev-0", "ev-3"]
