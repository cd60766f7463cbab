"""The writer answers first and does its upkeep off the acknowledgement path.

A checkpoint (sign, append to ``checkpoints.log``, fdatasync, replace ``checkpoint``: three
fsyncs) is due about once a second under load. It runs on a background thread, so a producer
whose request arrives meanwhile is answered as soon as its own entries are durable, and a
checkpoint that fails still degrades the writer (named cause, 503) until it works again.
"""

from __future__ import annotations

import errno
import os
import threading
import time
from pathlib import Path

import pytest

from keylife.domain.events import Event
from keylife.ingest.ledger import Ledger, LedgerStopped
from keylife.journal.signing import Signer
from keylife.journal.verify import verify
from keylife.registry.projection import Registry
from tests.journal_helpers import open_journal, signer, usage_event
from tests.waiting import wait_until


def _ledger(tmp_path: Path, sign: Signer) -> Ledger:
    journal = open_journal(tmp_path, sign, checkpoint_interval=0.05)
    ledger = Ledger(journal, Registry(tmp_path / "registry.sqlite"))
    ledger.start()
    return ledger


def test_a_slow_checkpoint_does_not_hold_acknowledgements(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sign = signer(tmp_path)
    ledger = _ledger(tmp_path, sign)
    ledger.submit([Event.model_validate(usage_event(0))]).result(5)
    wait_until(lambda: ledger.journal.last_checkpoint is not None, 5, "the first checkpoint")

    signing, release = threading.Event(), threading.Event()
    real_sign = Signer.sign

    def slow_sign(self: Signer, message: bytes) -> bytes:
        signing.set()
        release.wait(10)  # the checkpoint stalls here (think: a slow disk under its fsyncs)
        return real_sign(self, message)

    monkeypatch.setattr(Signer, "sign", slow_sign)
    ledger.submit([Event.model_validate(usage_event(1))]).result(5)
    assert signing.wait(5), "a checkpoint over seq 1 should have started"
    started = time.monotonic()
    outcomes = ledger.submit([Event.model_validate(usage_event(2))]).result(5)
    waited = time.monotonic() - started
    assert outcomes[0].status == "accepted" and outcomes[0].seq == 2
    assert waited < 2.0, f"the acknowledgement waited {waited:.2f} s behind a checkpoint"
    assert ledger.journal.last_checkpoint is not None and ledger.journal.last_checkpoint.size == 1
    release.set()
    wait_until(
        lambda: ledger.journal.last_checkpoint is not None and ledger.journal.last_checkpoint.size == 3,
        5,
        "the checkpoints to catch up once signing is fast again",
    )
    ledger.stop()
    report = verify(tmp_path / "journal", [sign.verifier])
    assert report.ok, [str(f) for f in report.faults]  # a checkpoint log out of size order is `rollback`
    assert report.covered == 3


def test_a_failed_background_checkpoint_degrades_and_recovers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sign = signer(tmp_path)
    ledger = _ledger(tmp_path, sign)
    ledger.submit([Event.model_validate(usage_event(0))]).result(5)
    wait_until(lambda: ledger.journal.last_checkpoint is not None, 5, "the first checkpoint")
    real_fdatasync = os.fdatasync

    def full_for_checkpoints(fd: int) -> None:
        if os.readlink(f"/proc/self/fd/{fd}").endswith("checkpoints.log"):
            raise OSError(errno.ENOSPC, "No space left on device")
        real_fdatasync(fd)

    monkeypatch.setattr(os, "fdatasync", full_for_checkpoints)
    ledger.submit([Event.model_validate(usage_event(1))]).result(5)  # durable: the segment syncs fine
    wait_until(lambda: not ledger.running, 5, "the failed checkpoint to degrade the writer")
    assert "ENOSPC on checkpoint" in (ledger.problem or "")
    with pytest.raises(LedgerStopped, match="ENOSPC"):
        ledger.submit([Event.model_validate(usage_event(2))]).result(5)
    monkeypatch.undo()
    wait_until(lambda: ledger.running, 10, "recovery once checkpoints can be written again")
    assert ledger.journal.last_checkpoint is not None and ledger.journal.last_checkpoint.size == 2
    ledger.submit([Event.model_validate(usage_event(3))]).result(5)
    ledger.stop()
    report = verify(tmp_path / "journal", [sign.verifier])
    assert report.ok, [str(f) for f in report.faults]


def test_upkeep_still_runs_under_continuous_load(tmp_path: Path) -> None:
    """Upkeep waits for an idle moment, but never longer than ``UPKEEP_MAX_DELAY``: checkpoints
    and registry commits go on while producers never let the writer idle."""
    sign = signer(tmp_path)
    ledger = _ledger(tmp_path, sign)
    stop = threading.Event()
    sizes: list[int] = []

    def produce(worker: int) -> None:
        n = 0
        while not stop.is_set():
            ledger.submit([Event.model_validate(usage_event(worker * 1_000_000 + n))]).result(5)
            n += 1

    threads = [threading.Thread(target=produce, args=(w,)) for w in range(8)]
    for t in threads:
        t.start()
    try:
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            cp = ledger.journal.last_checkpoint
            sizes.append(cp.size if cp else 0)
            time.sleep(0.05)
    finally:
        stop.set()
        for t in threads:
            t.join()
    ledger.stop()
    assert len(set(sizes)) >= 4, f"checkpoints stalled under load: sizes seen {sorted(set(sizes))}"
    assert ledger.registry.last_applied_seq() == ledger.journal.committed_size - 1
