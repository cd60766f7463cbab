"""The journal's public reading API: the one module code outside ``keylife/`` may import from the journal.

``audit_forwarder`` (the shipper, the formats) reads the journal only through this module
(``tests/test_layers.py`` enforces it). It offers:

* ``Entry`` (seq, observed_at, event, chain hash), ``format_observed``, ``genesis_hash``;
* replay and lookups: ``iter_entries`` (from a seq, registry rebuild), ``get_entries`` (by seq),
  ``journal_size`` (for a process watching a journal another process writes);
* following: ``EntryTail`` (committed entries with their chain hashes, never past what ``.sums``
  vouches for), ``chain_head``, ``journal_origin``, ``TailError``;
* checkpoints: ``Checkpoint``, ``CheckpointLog`` (``checkpoints.log`` read incrementally),
  ``parse_checkpoint`` (a signed note), ``NoteError``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import orjson

from keylife.journal import segments as segs
from keylife.journal.note import Checkpoint, NoteError
from keylife.journal.note import parse as parse_checkpoint
from keylife.journal.tail import CheckpointLog, EntryTail, TailError, chain_head, journal_origin
from keylife.journal.writer import Entry, Journal, format_observed, genesis_hash

__all__ = [
    "Checkpoint",
    "CheckpointLog",
    "Entry",
    "EntryTail",
    "NoteError",
    "TailError",
    "chain_head",
    "format_observed",
    "genesis_hash",
    "get_entries",
    "iter_entries",
    "journal_origin",
    "journal_size",
    "parse_checkpoint",
    "pruned_upto",
]


def _to_entry(line: bytes) -> Entry:
    value = orjson.loads(line)
    return Entry(value["seq"], value["observed_at"], value["event"], b"")


def iter_entries(directory: Path, from_seq: int = 0) -> Iterator[Entry]:
    """Committed entries with seq >= ``from_seq``, in order (chain hashes are not recomputed)."""
    seg_list = segs.list_segments(Path(directory) / "segments")
    for position, seg in enumerate(seg_list):
        following = seg_list[position + 1].first_seq if position + 1 < len(seg_list) else None
        if following is not None and following <= from_seq:
            continue
        if seg.sealed:
            for first, data in segs.iter_frames(seg):
                lines = segs.split_lines(data)
                if first + len(lines) <= from_seq:
                    continue
                for line in lines[max(0, from_seq - first) :]:
                    yield _to_entry(line)
        elif seg.path("log").exists():
            for line in segs.split_lines(seg.path("log").read_bytes()):
                if segs.entry_seq(line) >= from_seq:
                    yield _to_entry(line)


def get_entries(journal: Journal, seqs: list[int]) -> list[Entry]:
    """Entries by seq, for a key's history: one frame read per sealed frame touched."""
    wanted = sorted(set(seqs))
    found: dict[int, bytes] = journal.active_lines(wanted)
    rest = [s for s in wanted if s not in found]
    if rest:
        for seg in reversed(segs.list_segments(journal.seg_dir)):
            mine = [s for s in rest if s >= seg.first_seq]
            rest = [s for s in rest if s < seg.first_seq]
            if mine and not seg.sealed:  # closed, sealing in progress
                for line in segment_lines_safe(seg):
                    found.setdefault(segs.entry_seq(line), line)
                continue
            done_frames: set[int] = set()
            for seq in mine:
                if seq in found:
                    continue
                lines = segs.frame_lines(seg, seq)
                if not lines:
                    continue
                first = segs.entry_seq(lines[0])
                if first in done_frames:
                    continue
                done_frames.add(first)
                for line in lines:
                    found.setdefault(segs.entry_seq(line), line)
    return [_to_entry(found[s]) for s in wanted if s in found]


def segment_lines_safe(seg: segs.SegmentFiles) -> list[bytes]:
    try:
        return list(segs.segment_lines(seg))
    except FileNotFoundError:  # sealed between the listing and the read
        return list(segs.segment_lines(seg)) if seg.sealed else []


def pruned_upto(directory: Path) -> int:
    """Entries at the start of the journal whose bodies were pruned (0: none); ``iter_entries`` starts
    after them, so a projection rebuilt from the journal lacks their history."""
    upto = 0
    for first, end, _seg in segs.pruned_ranges(Path(directory) / "segments"):
        if first == upto:
            upto = end
    return upto


def journal_size(directory: Path) -> int:
    """Entries in a journal, read from indexes and digest files (no entry is parsed): for a
    process that watches a journal another process writes."""
    total = 0
    for seg in segs.list_segments(Path(directory) / "segments"):
        try:
            if seg.sealed or seg.pruned:
                total += segs.read_index(seg)["count"]
            else:
                total += seg.path("sums").stat().st_size // segs.SUM_BYTES
        except (OSError, ValueError, KeyError):
            continue  # sealed or rolled while we looked: the next read counts it
    return total
