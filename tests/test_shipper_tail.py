"""The journal tail: every committed entry once, in order, with the writer's chain hash."""

from __future__ import annotations

import hashlib

import pytest

from audit_forwarder.shipper.tail import JournalTail, TailError, chain_head
from keylife.common.canonical import canonical
from keylife.journal.writer import Entry
from tests.journal_helpers import fill, open_journal, usage_event


def _read_all(tail: JournalTail, step: int = 37) -> list:
    out = []
    while True:
        got = tail.read(step)
        if not got:
            return out
        out.extend(got)


def _written(journal, count: int, per_commit: int = 10) -> list[Entry]:
    entries = []
    for base in range(0, count, per_commit):
        entries += journal.append([usage_event(n) for n in range(base, min(base + per_commit, count))])
        journal.commit()
    return entries


def test_reads_sealed_and_open_segments_with_writer_hashes_and_checkpoints(tmp_path):
    journal = open_journal(tmp_path, segment_max_bytes=20_000, checkpoint_every=100)
    written = _written(journal, 1000)
    journal.checkpoint()
    tail = JournalTail(journal.directory, 0, chain_head(journal.directory, 0))
    records = _read_all(tail)
    entries = [r for r in records if not r.is_checkpoint]
    assert [r.seq for r in entries] == list(range(1000))
    assert [r.entry.hash for r in entries] == [e.hash for e in written]
    assert [r.entry.event for r in entries] == [e.event for e in written]
    assert all(r.event_json == canonical(r.entry.event) for r in entries)  # sliced from the line, exact
    # each checkpoint follows the last entry it covers, and entries name the checkpoint covering them
    sizes = [r.checkpoint for r in records if r.is_checkpoint]
    assert sizes == sorted(set(sizes)) and sizes[-1] == 1000 and 100 in sizes
    for position, record in enumerate(records):
        if record.is_checkpoint:
            assert records[position - 1].seq == record.checkpoint - 1
            root = tail.entries.root_at(record.checkpoint)  # the RFC 6962 root of the entries read
            assert record.entry.event["root_hash"] == root.hex()
            assert "\n\u2014 " in record.entry.event["note"]  # the signed note, with its signature line
    assert entries[0].checkpoint == 100 and entries[99].checkpoint == 100 and entries[100].checkpoint == 200
    assert not tail.mismatches
    assert len(list((journal.directory / "segments").glob("*.zst"))) >= 5  # the test crossed sealed segments


def test_resumes_mid_journal_from_chain_head(tmp_path):
    journal = open_journal(tmp_path, segment_max_bytes=20_000)
    written = _written(journal, 600)
    for start in (1, 99, 250, 599, 600):
        head = chain_head(journal.directory, start)
        assert head == (written[start - 1].hash if start else head)
        tail = JournalTail(journal.directory, start, head, publish_checkpoints=False)
        got = _read_all(tail, step=1000)
        assert [r.seq for r in got] == list(range(start, 600))
        assert [r.entry.hash for r in got] == [e.hash for e in written[start:]]


def test_follows_a_growing_journal_across_rolls_and_sealing(tmp_path):
    journal = open_journal(tmp_path, segment_max_bytes=8_000, seal_in_background=True)
    tail = JournalTail(journal.directory, 0, chain_head(journal.directory, 0), publish_checkpoints=False)
    seen = []
    for round_ in range(30):
        fill(journal, 25, per_commit=5, start=round_ * 25)
        seen += _read_all(tail, step=7)
    journal.wait_sealed()
    seen += _read_all(tail)
    assert [r.seq for r in seen] == list(range(750))
    head = chain_head(journal.directory, 0)
    for record in seen:  # recompute the chain independently from the lines
        line = (
            b'{"event":'
            + __import__("orjson").dumps(record.entry.event, option=__import__("orjson").OPT_SORT_KEYS)
            + b',"observed_at":"'
            + record.entry.observed_at.encode()
            + b'","seq":'
            + str(record.seq).encode()
            + b"}"
        )
        head = hashlib.sha256(head + line).digest()
        assert record.entry.hash == head


def test_never_hands_out_a_line_the_writer_has_not_committed(tmp_path):
    journal = open_journal(tmp_path)
    fill(journal, 10)
    seg = next((journal.directory / "segments").glob("*.log"))
    with open(seg, "ab") as handle:  # bytes written, no digest in .sums yet: not committed
        handle.write(b'{"event":{"id":"x"},"observed_at":"2026-11-28T00:00:00.000000Z","seq":10}\n')
    tail = JournalTail(journal.directory, 0, chain_head(journal.directory, 0), publish_checkpoints=False)
    assert [r.seq for r in _read_all(tail)] == list(range(10))


def test_a_checkpoint_that_does_not_match_the_chain_is_reported(tmp_path):
    journal = open_journal(tmp_path)
    fill(journal, 20)
    journal.checkpoint()
    seg = next((journal.directory / "segments").glob("*.log"))
    seg.write_bytes(seg.read_bytes().replace(b'"encrypt":5}', b'"encrypt":7}', 1))  # rewritten under the tail
    tail = JournalTail(journal.directory, 0, chain_head(journal.directory, 0))
    _read_all(tail)
    assert tail.mismatches and "checkpoint 20 signs" in tail.mismatches[0]


def test_a_gap_in_seq_stops_the_tail(tmp_path):
    journal = open_journal(tmp_path)
    fill(journal, 10)
    tail = JournalTail(journal.directory, 3, chain_head(journal.directory, 3), publish_checkpoints=False)
    tail.entries._log_offset = 0  # simulate a reader that lost its place
    tail.read(1)
    tail.entries._log_offset = 0  # simulate a reader that lost its place
    with pytest.raises(TailError, match="expected seq 4"):
        tail.read(1)
