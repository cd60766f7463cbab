"""The journal writer: append, group-commit fsync, checkpoints, segment rolling, crash recovery.

Guarantees (the caller acknowledges an event only after ``commit`` returns):

* ``append`` stages entries in memory and extends the chain; ``commit`` writes them with one
  ``write`` + ``fdatasync``. If the write fails the file is cut back and the staged entries are
  forgotten, so nothing is half-written and the chain in memory matches the disk.
* A checkpoint is signed and made durable every ``checkpoint_every`` entries and at least
  every ``checkpoint_interval`` seconds while entries flow (``tick``), and on ``close``.
* On open, a torn tail (a crash mid-write) is cut back to the last whole valid entry; the cut
  bytes are kept under ``recovered/`` and the report says so, for the caller to journal.

One thread drives a Journal (the ingest pipeline's writer thread); sealing runs on its own.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from audit_forwarder.journal import segments as segs
from audit_forwarder.journal.canonical import canonical
from audit_forwarder.journal.note import Checkpoint, parse, sign_checkpoint
from audit_forwarder.journal.signing import Signer

FORMAT = 1


class JournalCorrupt(RuntimeError):
    """The journal is damaged beyond a torn tail; start-up stops and says where."""


def genesis_hash(origin: str) -> bytes:
    return hashlib.sha256(b"keylife-journal-genesis\n" + origin.encode()).digest()


def format_observed(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


@dataclass(slots=True)  # not frozen: a frozen dataclass costs 3x to build, and readers build millions
class Entry:
    """One committed journal entry; treat it as immutable. ``hash`` is the chain hash after it."""

    seq: int
    observed_at: str
    event: dict[str, Any]
    hash: bytes


@dataclass
class Recovery:
    """What start-up found and did; ``cut_bytes`` > 0 means a torn tail was removed."""

    size: int = 0
    cut_bytes: int = 0
    cut_at_seq: int | None = None
    kept_as: str | None = None
    sealed_on_start: list[int] = field(default_factory=list)


@dataclass
class JournalSettings:
    origin: str
    segment_max_bytes: int = 64 * 1024 * 1024
    segment_max_age: float = 24 * 3600.0
    checkpoint_every: int = 1000
    checkpoint_interval: float = 1.0
    compress_level: int = 3
    seal_in_background: bool = True


class Journal:
    def __init__(self, directory: Path, signer: Signer, settings: JournalSettings) -> None:
        self.directory = Path(directory)
        self.seg_dir = self.directory / "segments"
        self.signer = signer
        self.settings = settings
        self.origin = settings.origin
        self.size = 0
        self.head = genesis_hash(self.origin)
        self.last_checkpoint: Checkpoint | None = None
        self.last_checkpoint_time = 0.0
        self._pending: list[bytes] = []
        self._pending_sums: list[bytes] = []
        self._committed = (0, self.head)
        self._active: segs.SegmentFiles | None = None
        self._fd = -1
        self._sums_fd = -1
        self._active_bytes = 0
        self._active_opened = 0.0
        self._active_offsets: list[int] = []
        self._active_prev = b""
        self._recovered_offsets: list[int] = []
        self._recovered_bytes = 0
        self._sealing: list[threading.Thread] = []
        self.lock = threading.RLock()  # readers of the active segment take it briefly
        self.recovery = self._open()

    # ----- start-up -------------------------------------------------------------------------
    def _open(self) -> Recovery:
        self.seg_dir.mkdir(parents=True, exist_ok=True)
        (self.directory / "recovered").mkdir(exist_ok=True)
        meta_path = self.directory / "journal.json"
        if meta_path.exists():
            meta = orjson.loads(meta_path.read_bytes())
            if meta["origin"] != self.origin:
                raise JournalCorrupt(
                    f"journal at {self.directory} belongs to origin {meta['origin']!r}, "
                    f"not the configured {self.origin!r}; a chain keeps one origin"
                )
        else:
            _atomic_write(meta_path, orjson.dumps({"format": FORMAT, "origin": self.origin}))
        for stale in self.seg_dir.glob("*.tmp"):
            stale.unlink()
        report = Recovery()
        seg_list = segs.list_segments(self.seg_dir)
        for seg in seg_list:
            if seg.sealed and seg.path("log").exists():
                seg.path("log").unlink()  # sealing finished; only the removal was interrupted
        for position, seg in enumerate(seg_list):
            is_last = position == len(seg_list) - 1
            if seg.sealed:
                index = segs.read_index(seg)
                if index["first_seq"] != self.size or bytes.fromhex(index["prev_hash"]) != self.head:
                    raise JournalCorrupt(f"sealed segment {seg.first_seq} does not follow seq {self.size}")
                self.size = index["last_seq"] + 1
                self.head = bytes.fromhex(index["last_hash"])
                continue
            prev = self.head
            self._recover_log(seg, report)
            if not is_last:
                segs.seal(seg, prev, self.settings.compress_level)
                report.sealed_on_start.append(seg.first_seq)
            else:
                self._reopen_active(seg, prev)
        self._committed = (self.size, self.head)
        self._load_last_checkpoint()
        if self.last_checkpoint and self.last_checkpoint.size > self.size:
            raise JournalCorrupt(
                f"the last checkpoint covers {self.last_checkpoint.size} entries but the journal holds "
                f"{self.size}: entries are missing (run keylife verify)"
            )
        report.size = self.size
        return report

    def _recover_log(self, seg: segs.SegmentFiles, report: Recovery) -> None:
        if seg.first_seq != self.size:
            raise JournalCorrupt(f"segment {seg.first_seq} does not follow seq {self.size}")
        data = seg.path("log").read_bytes()
        good_end = 0
        sums = bytearray()
        offsets: list[int] = []
        pos = 0
        bad_at: int | None = None
        while pos < len(data):
            nl = data.find(b"\n", pos)
            if nl < 0:
                bad_at = pos
                break
            line = data[pos:nl]
            if not self._valid_line(line, self.size):
                bad_at = pos
                break
            offsets.append(pos)
            self.head = hashlib.sha256(self.head + line).digest()
            self.size += 1
            sums += segs.entry_sum(line)
            pos = nl + 1
            good_end = pos
        if bad_at is not None:
            tail = data[bad_at:]
            for later in tail.split(b"\n")[1:]:
                if later and self._parses(later):
                    raise JournalCorrupt(
                        f"segment {seg.first_seq}: a damaged entry at byte {bad_at} is followed by whole "
                        "entries; this is not a torn write. Run keylife verify"
                    )
            kept = self.directory / "recovered" / f"torn-{seg.first_seq:020d}-{bad_at}-{int(time.time())}.bin"
            _atomic_write(kept, tail)
            with open(seg.path("log"), "r+b") as handle:
                handle.truncate(good_end)
                handle.flush()
                os.fsync(handle.fileno())
            report.cut_bytes += len(tail)
            report.cut_at_seq = self.size
            report.kept_as = str(kept)
        _atomic_write(seg.path("sums"), bytes(sums))
        self._recovered_offsets = offsets
        self._recovered_bytes = good_end

    @staticmethod
    def _parses(line: bytes) -> bool:
        try:
            value = orjson.loads(line)
        except orjson.JSONDecodeError:
            return False
        return isinstance(value, dict) and isinstance(value.get("seq"), int)

    @staticmethod
    def _valid_line(line: bytes, expected_seq: int) -> bool:
        try:
            value = orjson.loads(line)
        except orjson.JSONDecodeError:
            return False
        return (
            isinstance(value, dict)
            and value.get("seq") == expected_seq
            and isinstance(value.get("event"), dict)
            and canonical(value) == line
        )

    def _reopen_active(self, seg: segs.SegmentFiles, prev: bytes) -> None:
        self._active = seg
        self._active_prev = prev
        self._fd = os.open(seg.path("log"), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        self._sums_fd = os.open(seg.path("sums"), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        self._active_bytes = self._recovered_bytes
        self._active_offsets = self._recovered_offsets
        self._active_opened = time.time()

    def _load_last_checkpoint(self) -> None:
        latest = self.directory / "checkpoint"
        if latest.exists():
            self.last_checkpoint = parse(latest.read_text())
            self.last_checkpoint_time = latest.stat().st_mtime

    # ----- writing --------------------------------------------------------------------------
    def append(self, events: list[dict[str, Any]], observed_at: float | None = None) -> list[Entry]:
        """Stage entries (not yet durable) and extend the chain; ``commit`` makes them durable."""
        return self.append_encoded(events, [canonical(event) for event in events], observed_at)

    def append_encoded(
        self, events: list[dict[str, Any]], encoded: list[bytes], observed_at: float | None = None
    ) -> list[Entry]:
        """``append`` for callers that already hold ``canonical(event)`` of each event.

        The entry's keys sort as event < observed_at < seq, so its canonical form is the
        event's canonical bytes spliced into a fixed frame (tests hold it equal to
        ``canonical(entry)``): each event is serialised once on the ingest path, not twice.
        """
        stamp = format_observed(time.time() if observed_at is None else observed_at)
        middle = b',"observed_at":"' + stamp.encode() + b'","seq":'
        out = []
        head = self.head
        seq = self.size
        sha256 = hashlib.sha256
        for event, body in zip(events, encoded, strict=True):
            line = b'{"event":' + body + middle + str(seq).encode() + b"}"
            head = sha256(head + line).digest()
            self._pending.append(line)
            self._pending_sums.append(sha256(line).digest()[: segs.SUM_BYTES])
            out.append(Entry(seq, stamp, event, head))
            seq += 1
        self.head = head
        self.size = seq
        return out

    @property
    def committed_size(self) -> int:
        """Entries durable on disk (``size`` also counts staged ones)."""
        return self._committed[0]

    def rollback(self) -> None:
        """Forget staged entries (the caller could not use them)."""
        self._pending.clear()
        self._pending_sums.clear()
        self.size, self.head = self._committed

    def commit(self) -> None:
        """Write staged entries and fdatasync; on failure cut the file back and re-raise."""
        if not self._pending:
            return
        with self.lock:
            if self._active is None:
                self._start_segment(self._committed[0])
            data = b"".join(line + b"\n" for line in self._pending)
            start = self._active_bytes
            try:
                _write_all(self._fd, data)
                os.fdatasync(self._fd)
            except OSError:
                try:
                    os.ftruncate(self._fd, start)
                finally:
                    self.rollback()
                raise
            _write_all(self._sums_fd, b"".join(self._pending_sums))
            offset = start
            for line in self._pending:
                self._active_offsets.append(offset)
                offset += len(line) + 1
            self._active_bytes = offset
            self._pending.clear()
            self._pending_sums.clear()
            self._committed = (self.size, self.head)
        if self.size - (self.last_checkpoint.size if self.last_checkpoint else 0) >= self.settings.checkpoint_every:
            self.checkpoint()
        if self._active_bytes >= self.settings.segment_max_bytes:
            self.roll()

    def tick(self, now: float | None = None) -> None:
        """Called about every second by the writer thread: time-based checkpoints and rolls."""
        now = time.time() if now is None else now
        covered = self.last_checkpoint.size if self.last_checkpoint else 0
        if self._committed[0] > covered and now - self.last_checkpoint_time >= self.settings.checkpoint_interval:
            self.checkpoint()
        if self._active and self._active_bytes and now - self._active_opened >= self.settings.segment_max_age:
            self.roll()

    def checkpoint(self) -> Checkpoint:
        size, head = self._committed
        cp = sign_checkpoint(self.signer, self.origin, size, head)
        note = cp.render()
        record = orjson.dumps({"note": note}) + b"\n"  # everything in it is signed
        fd = os.open(self.directory / "checkpoints.log", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        try:
            _write_all(fd, record)
            os.fdatasync(fd)
        finally:
            os.close(fd)
        _atomic_write(self.directory / "checkpoint", note.encode())
        self.last_checkpoint = cp
        self.last_checkpoint_time = time.time()
        return cp

    def _start_segment(self, first_seq: int) -> None:
        seg = segs.SegmentFiles(first_seq, self.seg_dir)
        self._recovered_offsets, self._recovered_bytes = [], 0
        self._reopen_active(seg, self._committed[1])
        segs.fsync_dir(self.seg_dir)

    def roll(self) -> None:
        """Close the active segment and seal it (in the background unless configured not to)."""
        with self.lock:
            if self._active is None or not self._active_bytes:
                return
            seg, prev = self._active, self._active_prev
            os.close(self._fd)
            os.close(self._sums_fd)
            self._active, self._fd, self._sums_fd = None, -1, -1
            self._active_bytes = 0
            self._active_offsets = []
        if self.settings.seal_in_background:
            thread = threading.Thread(target=segs.seal, args=(seg, prev, self.settings.compress_level), daemon=True)
            thread.start()
            self._sealing = [t for t in self._sealing if t.is_alive()] + [thread]
        else:
            segs.seal(seg, prev, self.settings.compress_level)

    def close(self) -> None:
        """Checkpoint what is committed, close files and wait for sealing to finish."""
        if self._committed[0] and (not self.last_checkpoint or self.last_checkpoint.size < self._committed[0]):
            self.checkpoint()
        if self._fd >= 0:
            os.close(self._fd)
            os.close(self._sums_fd)
            self._fd = self._sums_fd = -1
        for thread in self._sealing:
            thread.join()

    def wait_sealed(self) -> None:
        for thread in self._sealing:
            thread.join()

    # ----- reading (the active segment is read under the lock, up to committed bytes) ------
    def active_lines(self, seqs: list[int]) -> dict[int, bytes]:
        with self.lock:
            if self._active is None:
                return {}
            first = self._active.first_seq
            wanted = [s for s in seqs if 0 <= s - first < len(self._active_offsets)]
            if not wanted:
                return {}
            out = {}
            with open(self._active.path("log"), "rb") as handle:
                for seq in wanted:
                    handle.seek(self._active_offsets[seq - first])
                    out[seq] = handle.readline().rstrip(b"\n")
            return out


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _atomic_write(path: Path, data: bytes, mode: int = 0o640) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        _write_all(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    segs.fsync_dir(path.parent)
