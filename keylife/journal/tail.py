"""Follow a journal directory from a seq: committed entries in order, with their chain hashes.

The journal's public reading side for a process that follows it (the shipper). It needs nothing
from the writer but its files, so the same code serves ``keylife serve`` (in-process) and
``keylife forward`` (another process, possibly another host's copy):

* Sealed segments are read frame by frame (one zstd frame holds 4,096 entries).
* The open segment is read up to the count its ``.sums`` file vouches for. The writer appends
  a digest to ``.sums`` only after the entry's ``fdatasync`` succeeded, so a line the writer
  might still cut back (a failed write) is never handed out.
* The chain hash is carried forward from the caller's hash (``sha256(prev + line)``), so the
  reader can name every entry's hash without rereading the journal from its start.
* Checkpoints are read incrementally from ``checkpoints.log`` (``CheckpointLog``).
* Pruned segments (keylife/journal/prune.py) have no entries to hand out: the tail moves past
  them, takes the chain hash from their ``.idx`` and logs the seqs it skipped (``skipped``), so
  a follower never waits for entries that are gone.
"""

from __future__ import annotations

import bisect
import hashlib
import logging
import os
from pathlib import Path
from typing import BinaryIO

import orjson

from keylife.journal import segments as segs
from keylife.journal.note import Checkpoint, NoteError, parse
from keylife.journal.tree import Tree, open_tree
from keylife.journal.writer import Entry, format_observed, genesis_hash

log = logging.getLogger("keylife.journal")


class TailError(RuntimeError):
    """The journal cannot be followed from here (a gap, a foreign origin, a damaged line)."""


def journal_origin(directory: Path) -> str:
    meta = Path(directory) / "journal.json"
    try:
        return orjson.loads(meta.read_bytes())["origin"]
    except FileNotFoundError:
        raise TailError(f"{directory} is not a keylife journal (no journal.json)") from None


class CheckpointLog:
    """The signed checkpoints of a journal, read incrementally from ``checkpoints.log``."""

    def __init__(self, directory: Path) -> None:
        self.path = Path(directory) / "checkpoints.log"
        self.sizes: list[int] = []
        self.by_size: dict[int, tuple[Checkpoint, str]] = {}
        self._offset = 0
        self.malformed = 0

    def refresh(self) -> None:
        try:
            with open(self.path, "rb") as handle:
                handle.seek(self._offset)
                data = handle.read()
                mtime = os.fstat(handle.fileno()).st_mtime
        except FileNotFoundError:
            return
        end = data.rfind(b"\n")
        if end < 0:
            return
        for line in data[: end + 1].splitlines():
            try:
                checkpoint = parse(orjson.loads(line)["note"])
            except (orjson.JSONDecodeError, KeyError, TypeError, NoteError):
                self.malformed += 1
                continue
            if checkpoint.size not in self.by_size:
                if not self.sizes or checkpoint.size > self.sizes[-1]:
                    self.sizes.append(checkpoint.size)
                else:
                    bisect.insort(self.sizes, checkpoint.size)
                self.by_size[checkpoint.size] = (checkpoint, format_observed(mtime))
        self._offset += end + 1

    def covering(self, seq: int) -> int | None:
        """Size of the first checkpoint that covers ``seq`` (size > seq), if one exists."""
        at = bisect.bisect_right(self.sizes, seq)
        return self.sizes[at] if at < len(self.sizes) else None

    def between(self, low: int, high: int) -> list[int]:
        """Sizes s with low < s <= high, in order."""
        return self.sizes[bisect.bisect_right(self.sizes, low) : bisect.bisect_right(self.sizes, high)]


def chain_head(directory: Path, seq: int) -> bytes:
    """The chain hash after entry ``seq - 1`` (genesis for 0), hashing at most one segment."""
    directory = Path(directory)
    head = genesis_hash(journal_origin(directory))
    if seq == 0:
        return head
    for seg in segs.list_segments(directory / "segments"):
        if seg.first_seq >= seq:
            break
        if seg.sealed or seg.pruned:
            index = segs.read_index(seg)
            if index["last_seq"] < seq:
                head = bytes.fromhex(index["last_hash"])
                continue
            if seg.pruned:  # inside a pruned segment: EntryTail moves on to its end
                return bytes.fromhex(index["prev_hash"]) if seq == index["first_seq"] else head
            head = bytes.fromhex(index["prev_hash"])
        for line in segs.segment_lines(seg):
            if segs.entry_seq(line) >= seq:
                return head
            head = hashlib.sha256(head + line).digest()
    return head


class EntryTail:
    """Hands out committed entries from ``next_seq`` on, each with its chain hash; ``read`` never blocks."""

    def __init__(self, directory: Path, next_seq: int, head: bytes) -> None:
        self.directory = Path(directory)
        self.seg_dir = self.directory / "segments"
        self.next_seq = next_seq
        self.head = head
        self._segments: list[segs.SegmentFiles] = []
        self._log: BinaryIO | None = None
        self._log_first = -1
        self._log_offset = 0
        self._frame_first = -1
        self._frame_lines: list[bytes] = []
        self._tree: Tree | None = None  # built on the first root_at, then grown by read
        self.skipped: list[tuple[int, int]] = []  # (first, last) seqs passed over because they were pruned

    def root_at(self, size: int) -> bytes:
        """The RFC 6962 root of the first ``size`` entries (size <= next_seq): what a checkpoint
        of that size signs. The first call loads the tree from its tiles and the entries after them."""
        if self._tree is None:
            self._tree, _ = open_tree(self.directory, self.next_seq)
        return self._tree.root(size)

    def close(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def read(self, limit: int) -> list[tuple[Entry, bytes]]:
        """Up to ``limit`` committed entries available now, in order, each with its event's canonical JSON.

        ``entry.hash`` is the chain hash *after* the entry (what a checkpoint of size seq+1 signs).
        """
        lines = self._lines(limit) if limit > 0 else []
        sha256 = hashlib.sha256
        loads = orjson.loads
        out: list[tuple[Entry, bytes]] = []
        append = out.append
        head = self.head
        seq = self.next_seq
        for line in lines:
            value = loads(line)
            if value["seq"] != seq:
                raise TailError(f"expected seq {seq} in the journal, found {value['seq']!r}")
            head = sha256(head + line).digest()
            # A line is b'{"event":' + canonical(event) + b',"observed_at":...': its event bytes are a slice.
            append((Entry(seq, value["observed_at"], value["event"], head), line[9 : line.rindex(b',"observed_at":"')]))
            seq += 1
        if self._tree is not None and lines:
            self._tree.append([sha256(b"\x00" + line).digest() for line in lines])
        self.head, self.next_seq = head, seq
        return out

    # ----- lines ----------------------------------------------------------------------------
    def _lines(self, limit: int) -> list[bytes]:
        seg = self._segment_for(self.next_seq, refresh=False)
        if seg is not None and seg.pruned:
            first = self.next_seq
            while seg is not None and seg.pruned:
                self._skip_pruned(seg)
                seg = self._segment_for(self.next_seq, refresh=False)
            last = self.next_seq - 1
            self.skipped.append((first, last))
            log.warning(
                f"seqs {first}..{last} were pruned before they were read; following from seq {last + 1}",
                extra={"first_seq": first, "last_seq": last},
            )
        lines = self._lines_from(seg, limit) if seg is not None else []
        if not lines:  # a segment may have rolled or been sealed since the last listing
            seg = self._segment_for(self.next_seq, refresh=True)
            lines = self._lines_from(seg, limit) if seg is not None else []
        return lines

    def _skip_pruned(self, seg: segs.SegmentFiles) -> None:
        """Move past a pruned segment: its entries are gone, its index carries the chain on."""
        index = segs.read_index(seg)
        if self.next_seq == index["first_seq"] and bytes.fromhex(index["prev_hash"]) != self.head:
            raise TailError(f"the index of pruned segment {seg.first_seq} does not follow the chain at {self.next_seq}")
        self.head, self.next_seq = bytes.fromhex(index["last_hash"]), index["last_seq"] + 1
        self._tree = None  # rebuilt from the tiles and kept leaves when next asked for

    def _segment_for(self, seq: int, *, refresh: bool) -> segs.SegmentFiles | None:
        if refresh or not self._segments:
            self._segments = segs.list_segments(self.seg_dir)
        firsts = [seg.first_seq for seg in self._segments]
        at = bisect.bisect_right(firsts, seq) - 1
        if at < 0:
            if self._segments:
                raise TailError(f"seq {seq} is before the first segment ({firsts[0]}): entries were removed")
            return None
        return self._segments[at]

    def _lines_from(self, seg: segs.SegmentFiles, limit: int) -> list[bytes]:
        if self._log is not None and self._log_first == seg.first_seq:
            return self._from_log(seg, limit)  # keep reading an open file even after sealing
        if seg.sealed:
            return self._from_frames(seg, limit)
        return self._from_log(seg, limit)

    def _from_frames(self, seg: segs.SegmentFiles, limit: int) -> list[bytes]:
        seq = self.next_seq
        if not (self._frame_first <= seq < self._frame_first + len(self._frame_lines)):
            index = segs.read_index(seg)
            if seq > index["last_seq"]:
                return []
            lines = segs.frame_lines(seg, seq)
            self._frame_first = segs.entry_seq(lines[0])
            self._frame_lines = lines
        start = seq - self._frame_first
        return self._frame_lines[start : start + limit]

    def _from_log(self, seg: segs.SegmentFiles, limit: int) -> list[bytes]:
        if self._log is None or self._log_first != seg.first_seq:
            self.close()
            try:
                self._log = open(seg.path("log"), "rb")  # noqa: SIM115 - held open across reads
            except FileNotFoundError:
                return self._from_frames(seg, limit) if seg.sealed else []
            self._log_first, self._log_offset = seg.first_seq, 0
            self._skip_to(self.next_seq - seg.first_seq)
        try:
            committed = os.stat(seg.path("sums")).st_size // segs.SUM_BYTES
        except FileNotFoundError:
            committed = 0
        want = min(limit, committed - (self.next_seq - seg.first_seq))
        if want <= 0:
            return []
        size = max(65536, want * 512)
        while True:  # read on until enough whole lines arrived (or the file ends)
            self._log.seek(self._log_offset)
            data = self._log.read(size)
            lines = segs.split_lines(data)
            if len(lines) >= want or len(data) < size:
                break
            size *= 2
        lines = lines[:want]
        self._log_offset += sum(len(line) + 1 for line in lines)
        return lines

    def _skip_to(self, count: int) -> None:
        """Move past the first ``count`` lines of the open ``.log``."""
        assert self._log is not None
        skipped = 0
        while skipped < count:
            line = self._log.readline()
            if not line.endswith(b"\n"):
                raise TailError(f"segment {self._log_first} holds fewer than {count} whole entries")
            skipped += 1
        self._log_offset = self._log.tell()
