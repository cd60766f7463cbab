"""The journal writer: chain, checkpoints, sealing, reading back, torn-tail recovery, failed writes."""

from __future__ import annotations

import base64
import errno
import hashlib
import os
import stat
from pathlib import Path

import orjson
import pytest

from keylife.common.canonical import canonical
from keylife.journal import merkle
from keylife.journal import segments as segs
from keylife.journal.note import DASH, check_signatures, parse
from keylife.journal.reader import get_entries, iter_entries
from keylife.journal.signing import Signer, Verifier
from keylife.journal.verify import verify
from keylife.journal.writer import JournalCorrupt, genesis_hash
from tests.journal_helpers import ORIGIN, fill, open_journal, signer, usage_event


def test_entries_are_canonical_lines_chained_from_genesis(tmp_path: Path) -> None:
    journal = open_journal(tmp_path)
    fill(journal, 25)
    journal.close()
    lines = (tmp_path / "journal/segments" / segs.seg_name(0, "log")).read_bytes().split(b"\n")[:-1]
    assert len(lines) == 25
    chain = genesis_hash(ORIGIN)
    for seq, line in enumerate(lines):
        entry = orjson.loads(line)
        assert entry["seq"] == seq and entry["event"] == usage_event(seq)
        assert canonical(entry) == line
        chain = hashlib.sha256(chain + line).digest()
    assert chain == journal.head


def test_checkpoint_is_a_signed_note_an_auditor_can_check(tmp_path: Path) -> None:
    sign = signer(tmp_path)
    journal = open_journal(tmp_path, sign)
    fill(journal, 7)
    journal.close()
    note = (tmp_path / "journal/checkpoint").read_text()
    body, sig_line = note.split("\n\n")
    lines = (tmp_path / "journal/segments" / "00000000000000000000.log").read_bytes().split(b"\n")[:-1]
    root = merkle.root_of([hashlib.sha256(b"\x00" + line).digest() for line in lines])  # RFC 6962 MTH
    assert body.split("\n") == [ORIGIN, "7", base64.b64encode(root).decode()]
    dash, name, blob = sig_line.strip().split(" ")
    assert dash == DASH and name == ORIGIN
    raw = base64.b64decode(blob)
    assert raw[:4] == sign.verifier.key_id
    assert sign.verifier.verify(raw[4:], (body + "\n").encode())
    assert check_signatures(parse(note), [sign.verifier]) is None
    assert Verifier.parse(sign.verifier.encode()) == sign.verifier


def test_checkpoint_every_n_entries(tmp_path: Path) -> None:
    journal = open_journal(tmp_path, checkpoint_every=10, checkpoint_interval=1.0)
    fill(journal, 35, per_commit=5)
    history = (tmp_path / "journal/checkpoints.log").read_bytes().splitlines()
    assert [parse(orjson.loads(r)["note"]).size for r in history] == [10, 20, 30]
    journal.tick(now=journal.last_checkpoint_time + 0.5)
    assert journal.last_checkpoint is not None and journal.last_checkpoint.size == 30
    journal.tick(now=journal.last_checkpoint_time + 1.5)  # a second passed with entries waiting
    assert journal.last_checkpoint.size == 35


def test_signing_key_file_is_private_and_refused_when_readable(tmp_path: Path) -> None:
    path = tmp_path / "keys/signing.key"
    sign, created = Signer.load_or_create(path, "x")
    assert created and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert "PRIVATE" not in repr(sign)
    os.chmod(path, 0o644)
    with pytest.raises(PermissionError, match="chmod 600"):
        Signer.load_or_create(path, "x")


def test_segments_roll_seal_and_read_back(tmp_path: Path) -> None:
    journal = open_journal(tmp_path, segment_max_bytes=4096)
    fill(journal, 300)
    journal.close()
    listing = segs.list_segments(tmp_path / "journal/segments")
    sealed = [s for s in listing if s.sealed]
    assert len(sealed) >= 3 and not any(s.path("log").exists() for s in sealed)
    index = segs.read_index(sealed[1])
    assert index["first_seq"] == sealed[1].first_seq and index["count"] == index["last_seq"] - index["first_seq"] + 1
    entries = list(iter_entries(tmp_path / "journal"))
    assert [e.seq for e in entries] == list(range(300))
    assert [e.seq for e in iter_entries(tmp_path / "journal", 123)] == list(range(123, 300))
    reopened = open_journal(tmp_path)
    assert (reopened.size, reopened.head) == (300, journal.head)
    assert [e.event["id"] for e in get_entries(reopened, [5, 150, 299])] == ["ev-5", "ev-150", "ev-299"]
    assert verify(tmp_path / "journal", [reopened.signer.verifier]).ok


def test_torn_tail_is_cut_kept_and_chain_continues(tmp_path: Path) -> None:
    sign = signer(tmp_path)
    journal = open_journal(tmp_path, sign)
    fill(journal, 20)
    journal.close()
    log_path = tmp_path / "journal/segments" / segs.seg_name(0, "log")
    whole = log_path.read_bytes()
    partial = canonical({"event": usage_event(20), "observed_at": "2026-11-28T12:00:00.000000Z", "seq": 20})[:37]
    log_path.write_bytes(whole + partial)

    reopened = open_journal(tmp_path, sign)
    assert reopened.recovery.cut_bytes == len(partial) and reopened.recovery.cut_at_seq == 20
    assert Path(reopened.recovery.kept_as or "").read_bytes() == partial
    assert log_path.read_bytes() == whole
    fill(reopened, 5, start=20)
    reopened.close()
    report = verify(tmp_path / "journal", [sign.verifier])
    assert report.ok and report.entries == 25


def test_damage_in_the_middle_is_not_mistaken_for_a_torn_tail(tmp_path: Path) -> None:
    journal = open_journal(tmp_path)
    fill(journal, 10)
    journal.close()
    log_path = tmp_path / "journal/segments" / segs.seg_name(0, "log")
    lines = log_path.read_bytes().split(b"\n")
    lines[4] = lines[4][:-3]
    log_path.write_bytes(b"\n".join(lines))
    with pytest.raises(JournalCorrupt, match="not a torn write"):
        open_journal(tmp_path)


def test_failed_write_leaves_nothing_half_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    journal = open_journal(tmp_path)
    fill(journal, 10)
    before = (journal.size, journal.head)
    log_path = tmp_path / "journal/segments" / segs.seg_name(0, "log")
    size_before = log_path.stat().st_size

    real_write = os.write

    def half_then_full(fd: int, data: bytes) -> int:
        real_write(fd, bytes(data[: len(data) // 2]))
        raise OSError(errno.ENOSPC, "No space left on device")

    journal.append([usage_event(n) for n in range(10, 20)])
    monkeypatch.setattr(os, "write", half_then_full)
    with pytest.raises(OSError, match="No space"):
        journal.commit()
    monkeypatch.setattr(os, "write", real_write)
    assert (journal.size, journal.head) == before
    assert log_path.stat().st_size == size_before
    fill(journal, 3, start=10)
    journal.close()
    assert [e.seq for e in iter_entries(tmp_path / "journal")] == list(range(13))
    assert verify(tmp_path / "journal", [journal.signer.verifier]).ok


def test_origin_cannot_change_under_an_existing_chain(tmp_path: Path) -> None:
    journal = open_journal(tmp_path)
    fill(journal, 2)
    journal.close()
    from keylife.journal.writer import Journal, JournalSettings

    with pytest.raises(JournalCorrupt, match="belongs to origin"):
        Journal(tmp_path / "journal", journal.signer, JournalSettings(origin="other/origin"))


def test_sealed_bytes_per_entry_are_small(tmp_path: Path) -> None:
    journal = open_journal(tmp_path, segment_max_bytes=1 << 20)
    fill(journal, 20_000, per_commit=500)
    journal.roll()
    journal.close()
    sealed = [s for s in segs.list_segments(tmp_path / "journal/segments") if s.sealed]
    on_disk = sum(s.path(x).stat().st_size for s in sealed for x in ("zst", "idx", "sums"))
    count = sum(segs.read_index(s)["count"] for s in sealed)
    assert count == 20_000
    assert on_disk / count < 60  # behaviour check only; bench/ measures the real figure
