"""The journal writer: append, group-commit fsync, checkpoints, segment rolling, crash recovery.

Guarantees (the caller acknowledges an event only after ``commit`` returns):

* ``append`` stages entries in memory and extends the chain; ``commit`` writes them with one
  ``write`` + ``fdatasync``. If the write fails the file is cut back and the staged entries are
  forgotten, so nothing is half-written and the chain in memory matches the disk.
* A checkpoint is signed and made durable every ``checkpoint_every`` entries and at least
  every ``checkpoint_interval`` seconds while entries flow (``tick``), and on ``close``. It
  covers only committed (durable) entries. ``tick(wait=False)`` signs and writes it on a
  background thread, so the writer's next group is not held behind its fsyncs; checkpoints
  are serialised (``_checkpoint_lock``), so their sizes never shrink in ``checkpoints.log``,
  and a failed one is raised by the next ``tick`` (then retried).
* On open, a torn tail (a crash mid-write) is cut back to the last whole valid entry; the cut
  bytes (and any ``.sums`` bytes cut with them) are kept under ``recovered/`` before anything
  is changed, and the report says so, for the caller to journal. ``.sums`` is never rebuilt
  from the entries at start-up: it is only cut or completed for a torn tail, so it still names
  an entry that was modified.
* On open, ``integrity.check_at_start`` compares the history with the latest signed checkpoint
  (its hash, not only its size). On a fault the journal is read-only (``integrity_fault`` says
  why): it appends nothing, signs nothing and seals nothing, so the evidence stays as found.
* An I/O failure (ENOSPC, EMFILE, EIO, ...) raises ``JournalIOError`` naming the step. After a
  failed write or fdatasync the journal takes no more entries until ``recover`` has re-read the
  active segment from a fresh descriptor (not the page cache), checked it against the chain,
  cut everything past the last durable byte and proved with a probe that writes reach the disk
  again. Checkpoints are retried by ``tick``; a failed seal is retried in the background.

One thread drives a Journal (the ingest pipeline's writer thread); sealing runs on its own.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from keylife.common.canonical import canonical
from keylife.common.files import replace_durably
from keylife.journal import segments as segs
from keylife.journal.background import BackgroundJob
from keylife.journal.note import Checkpoint, parse, sign_checkpoint
from keylife.journal.rotation import start_schedule
from keylife.journal.signing import Signer, Verifier
from keylife.journal.tree import open_tree, read_lines

FORMAT = 2  # 1: checkpoints sign the chain head; 2: they sign the RFC 6962 Merkle root (docs/journal.md)
SEAL_RETRY_FIRST = 1.0  # seconds before a failed seal is tried again; doubles up to SEAL_RETRY_MAX
SEAL_RETRY_MAX = 60.0
PROBE_BYTES = 65536  # at least; after a failed write, at least that write's size (no flapping)

log = logging.getLogger("keylife.journal")


class JournalCorrupt(RuntimeError):
    """The journal is damaged beyond a torn tail; start-up stops and says where."""


class JournalReadOnly(JournalCorrupt):
    """The journal failed its integrity check: it takes no entries and signs no checkpoint."""


class JournalIOError(OSError):
    """An I/O step of the journal failed; ``operation`` says which (open, write, fdatasync,
    sums, checkpoint, revalidate, probe, seal) and ``errno`` what the system answered."""

    operation: str = "io"


def cause_name(exc: BaseException) -> str:
    """The errno name of an OSError (``ENOSPC``), else the exception's type name."""
    code = getattr(exc, "errno", None)
    if isinstance(code, int):
        return errno.errorcode.get(code, f"errno{code}")
    return type(exc).__name__


def _io_error(operation: str, exc: OSError) -> JournalIOError:
    if isinstance(exc, JournalIOError):
        return exc
    err = JournalIOError(exc.errno, f"{operation}: {exc.strerror or exc}")
    err.operation = operation
    return err


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
    trusted: list[Verifier] = field(default_factory=list)  # more keys the checkpoints may be signed with


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
        self._pending_leaves: list[bytes] = []
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
        self._tail_suspect = False  # a write or fdatasync failed: recover() before writing again
        self._sums_stale = False  # the .sums append failed after a durable commit: recover() rebuilds it
        self.io_failures: dict[tuple[str, str], int] = {}  # (operation, errno name) -> count
        self.last_io_error: JournalIOError | None = None
        self._probe_bytes = PROBE_BYTES
        self._seal_lock = threading.Lock()
        self._unsealed: list[tuple[segs.SegmentFiles, bytes]] = []  # closed, waiting to be sealed
        self._seal_thread: threading.Thread | None = None
        self._seal_retry_at = 0.0
        self._seal_backoff = SEAL_RETRY_FIRST
        self.seal_failure: tuple[str, float] | None = None  # (cause, since) while sealing fails
        self.lock = threading.RLock()  # readers of the active segment take it briefly
        self._checkpoint_lock = threading.Lock()  # one checkpoint at a time, in size order
        self._checkpointing = BackgroundJob("keylife-checkpoint")
        self.integrity_fault: str | None = None  # set: read-only until restart (see mark_faulty)
        self._sums_mismatch: list[int] = []  # seqs of the open segment that differ from their digest
        self.recovery = self._open()

    # ----- start-up -------------------------------------------------------------------------
    def _open(self) -> Recovery:
        self.seg_dir.mkdir(parents=True, exist_ok=True)
        (self.directory / "recovered").mkdir(exist_ok=True)
        meta_path = self.directory / "journal.json"
        meta: dict[str, Any] | None = None
        if meta_path.exists():
            meta = orjson.loads(meta_path.read_bytes())
            if meta["origin"] != self.origin:
                raise JournalCorrupt(
                    f"journal at {self.directory} belongs to origin {meta['origin']!r}, "
                    f"not the configured {self.origin!r}; a chain keeps one origin"
                )
        else:
            _atomic_write(meta_path, orjson.dumps({"format": FORMAT, "origin": self.origin}))
        for stale in (*self.seg_dir.glob("*.tmp"), *self.directory.glob("*.tmp")):
            stale.unlink()
        (self.directory / ".probe").unlink(missing_ok=True)
        report = Recovery()
        to_seal: list[tuple[segs.SegmentFiles, bytes]] = []
        seg_list = segs.list_segments(self.seg_dir)
        for seg in seg_list:
            if seg.sealed and seg.path("log").exists():
                seg.path("log").unlink()  # sealing finished; only the removal was interrupted
            elif segs.clear_interrupted_seal(seg):
                segs.fsync_dir(self.seg_dir)
        for position, seg in enumerate(seg_list):
            is_last = position == len(seg_list) - 1
            if seg.sealed or seg.pruned:  # pruned: the index keeps the chain across the removed bodies
                index = segs.read_index(seg)
                if index["first_seq"] != self.size or bytes.fromhex(index["prev_hash"]) != self.head:
                    raise JournalCorrupt(f"sealed segment {seg.first_seq} does not follow seq {self.size}")
                self.size = index["last_seq"] + 1
                self.head = bytes.fromhex(index["last_hash"])
                continue
            if not seg.path("log").exists():
                raise JournalCorrupt(
                    f"segment {seg.first_seq} has neither entries nor kept leaf hashes (only "
                    f"{', '.join(p.name for p in sorted(self.seg_dir.glob(segs.seg_name(seg.first_seq, '*'))))}); "
                    "run keylife verify"
                )
            prev = self.head
            self._recover_log(seg, report)
            if not is_last:
                to_seal.append((seg, prev))
            else:
                self._reopen_active(seg, prev)
        self._committed = (self.size, self.head)
        self._repair_checkpoint_log()
        self.integrity_fault = self._check_integrity()
        if self.integrity_fault is None:
            for seg, prev in to_seal:
                try:
                    segs.seal(seg, prev, self.settings.compress_level)
                    report.sealed_on_start.append(seg.first_seq)
                except OSError as exc:  # the entries are safe in the .log; sealing is retried
                    self._note_failure("seal", exc)
                    self._unsealed.append((seg, prev))
        if self.integrity_fault is None and meta is not None and meta.get("format", 1) == 1:
            upgrade_meta(meta_path, meta, self.size)  # after the check, which reads the old format
        self.tree, self._tiles = open_tree(self.directory, self.size, self._block_lines)
        with contextlib.suppress(OSError, ValueError):  # a damaged file is named by the check above
            self._load_last_checkpoint()
        if self.integrity_fault is None:
            self.integrity_fault = self._check_tiles()
        if self.integrity_fault is None:  # read-only: nothing is written, not even derived tiles
            self._flush_tiles()
        report.size = self.size
        return report

    def _check_integrity(self) -> str | None:
        """Why this history must not be extended or signed (read-only), or None; see integrity.py."""
        from keylife.journal import integrity  # it imports anchor, which imports this module
        from keylife.journal.anchor import unsigned_grace

        if self._sums_mismatch:
            seqs = self._sums_mismatch
            more = f" and {len(seqs) - 1} more" if len(seqs) > 1 else ""
            return f"modified: seq {seqs[0]}{more} differ from the digests written with them"
        schedule, problem = start_schedule(self.directory, self.origin, self.signer.verifier, self.settings.trusted)
        if problem:
            return problem
        grace = unsigned_grace(self.settings.checkpoint_interval)
        return integrity.check_at_start(self.directory, self.origin, self.size, schedule, grace)

    def _check_tiles(self) -> str | None:
        """The start-up check recomputed the latest checkpoint's root from the entries; the tree
        that signs the next checkpoints is built on the stored tiles, so it must give that root
        too, or the writer would sign a root the entries do not have."""
        from keylife.journal.anchor import legacy_checkpoint_limit

        cp = self.last_checkpoint
        meta = orjson.loads((self.directory / "journal.json").read_bytes())
        if cp is None or cp.size <= legacy_checkpoint_limit(meta) or cp.size > self.tree.size:
            return None
        if self.tree.root(cp.size) != cp.hash:
            return f"the stored tiles (tree/) disagree with the entries at the latest checkpoint (size {cp.size})"
        return None

    def mark_faulty(self, reason: str) -> None:
        """Make the journal read-only (a failed verification): no entry is appended, nothing signed."""
        if self.integrity_fault is None:
            self.integrity_fault = reason

    def _refuse_if_faulty(self) -> None:
        if self.integrity_fault is not None:
            raise JournalReadOnly(f"the journal is read-only: {self.integrity_fault}")

    def _recover_log(self, seg: segs.SegmentFiles, report: Recovery) -> None:
        if seg.first_seq != self.size:
            raise JournalCorrupt(f"segment {seg.first_seq} does not follow seq {self.size}")
        data = seg.path("log").read_bytes()
        old_sums = segs.read_sums(seg)
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
            stamp = int(time.time())
            kept = self.directory / "recovered" / f"torn-{seg.first_seq:020d}-{bad_at}-{stamp}.bin"
            _atomic_write(kept, tail)
            if len(old_sums) > len(sums):  # digests of the cut bytes: kept beside them, never just dropped
                _atomic_write(kept.with_suffix(".sums"), old_sums[len(sums) :])
            with open(seg.path("log"), "r+b") as handle:
                handle.truncate(good_end)
                handle.flush()
                os.fsync(handle.fileno())
            report.cut_bytes += len(tail)
            report.cut_at_seq = self.size
            report.kept_as = str(kept)
        self._fit_sums(seg, old_sums, bytes(sums))
        self._recovered_offsets = offsets
        self._recovered_bytes = good_end

    def _fit_sums(self, seg: segs.SegmentFiles, old: bytes, computed: bytes) -> None:
        """Make ``.sums`` cover exactly the whole entries without rewriting a digest it holds.

        A digest that differs from its entry is evidence (``keylife verify`` names the seq from
        it): it is kept and the journal turns read-only. Digests past the entries (a torn tail,
        already kept under ``recovered/``) are cut; missing ones (a crash before the unsynced
        ``.sums`` append) are appended.
        """
        width = segs.SUM_BYTES
        whole = len(old) - len(old) % width
        for at in range(0, min(whole, len(computed)), width):
            if old[at : at + width] != computed[at : at + width]:
                self._sums_mismatch.append(seg.first_seq + at // width)
        if len(old) == len(computed):
            return
        path = seg.path("sums")
        keep = min(whole, len(computed))
        with open(path, "r+b" if path.exists() else "w+b") as handle:
            handle.truncate(keep)
            handle.seek(keep)
            handle.write(computed[keep:])
            handle.flush()
            os.fsync(handle.fileno())

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
        self._open_fds(seg)
        self._active = seg
        self._active_prev = prev
        self._active_bytes = self._recovered_bytes
        self._active_offsets = self._recovered_offsets
        self._active_opened = time.time()

    def _open_fds(self, seg: segs.SegmentFiles) -> None:
        """Open the segment's log and sums for appending: both or neither (no fd leaks on EMFILE)."""
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT
        fd = os.open(seg.path("log"), flags, segs.FILE_MODE)
        try:
            sums_fd = os.open(seg.path("sums"), flags, segs.FILE_MODE)
        except OSError:
            os.close(fd)
            raise
        self._fd, self._sums_fd = fd, sums_fd

    def _close_fds(self) -> None:
        """Close the active descriptors; a close error (EIO) changes nothing: what is durable was
        fsynced, and what is not is cut by ``recover``."""
        for fd in (self._fd, self._sums_fd):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._fd = self._sums_fd = -1

    def _load_last_checkpoint(self) -> None:
        latest = self.directory / "checkpoint"
        if latest.exists():
            self.last_checkpoint = parse(latest.read_text())
            self.last_checkpoint_time = latest.stat().st_mtime

    def _repair_checkpoint_log(self) -> None:
        """Cut a torn last line of ``checkpoints.log`` (a crash or a full disk mid-append): it is an
        unsigned fragment, and the next checkpoint must start on a line of its own."""
        path = self.directory / "checkpoints.log"
        if path.exists():
            fd = os.open(path, os.O_RDWR)
            try:
                _cut_partial_line(fd)
            finally:
                os.close(fd)

    # ----- failures and recovery ------------------------------------------------------------
    def _note_failure(self, operation: str, exc: OSError) -> JournalIOError:
        """Count an I/O failure by step and errno (for the metric) and name the step."""
        err = _io_error(operation, exc)
        key = (err.operation, cause_name(err))
        self.io_failures[key] = self.io_failures.get(key, 0) + 1
        self.last_io_error = err
        return err

    @property
    def needs_recovery(self) -> bool:
        """True after a failed write or fdatasync (or .sums append): ``recover`` must succeed first."""
        return self._tail_suspect or self._sums_stale

    def recover(self) -> None:
        """Make the journal writable again after an I/O failure, or raise (``JournalIOError`` while the
        cause lasts, ``JournalCorrupt`` if durable entries are gone).

        After a failed fdatasync the page cache may hold bytes the disk does not (Linux marks the
        pages clean), so the active segment is reopened, cut back to the last durable byte,
        synced, dropped from the cache and read back from the disk: it must hold exactly the
        durable entries, chained to the durable head. ``.sums`` is cut or completed to match
        them, never rewritten. Then a
        probe file is written and fdatasynced, so a full disk or a dead device is found here
        and not by the next producer.
        """
        with self.lock:
            if self.needs_recovery:
                try:
                    self._revalidate_active()
                except OSError as exc:
                    raise self._note_failure("revalidate", exc) from exc
            try:
                self._probe()
            except OSError as exc:
                raise self._note_failure("probe", exc) from exc
            self._probe_bytes = PROBE_BYTES

    def _revalidate_active(self) -> None:
        seg = self._active
        self._close_fds()
        if seg is None:
            self._tail_suspect = self._sums_stale = False
            return
        durable = self._active_bytes
        fd = os.open(seg.path("log"), os.O_RDWR)
        try:
            if os.fstat(fd).st_size > durable:
                os.ftruncate(fd, durable)  # never acknowledged: the failed group's bytes
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)  # read back from the disk, not the cache
            data = os.pread(fd, durable, 0) if durable else b""
            while len(data) < durable:
                more = os.pread(fd, durable - len(data), len(data))
                if not more:
                    break
                data += more
        finally:
            os.close(fd)
        lines = segs.split_lines(data)
        head = self._active_prev
        for line in lines:
            head = hashlib.sha256(head + line).digest()
        if len(data) != durable or len(lines) != len(self._active_offsets) or head != self._committed[1]:
            raise JournalCorrupt(
                f"segment {seg.first_seq}: after an I/O failure the disk holds {len(data)} bytes "
                f"({len(lines)} entries) that do not match the {durable} durable bytes "
                f"({len(self._active_offsets)} entries) of the chain; run keylife verify"
            )
        self._fit_sums(seg, segs.read_sums(seg), b"".join(segs.entry_sum(line) for line in lines))
        if self._sums_mismatch:
            self.mark_faulty(f"modified: seq {self._sums_mismatch[0]} differs from the digest written with it")
        self._open_fds(seg)
        self._tail_suspect = self._sums_stale = False

    def _probe(self) -> None:
        path = self.directory / ".probe"
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                _write_all(fd, bytes(self._probe_bytes))
                os.fdatasync(fd)
            finally:
                os.close(fd)
        finally:
            with contextlib.suppress(OSError):
                path.unlink(missing_ok=True)

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
            self._pending_leaves.append(sha256(b"\x00" + line).digest())
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
        self._pending_leaves.clear()
        self.size, self.head = self._committed

    def commit(self, *, maintain: bool = True) -> None:
        """Write staged entries and fdatasync; on failure cut the file back and raise ``JournalIOError``.

        After a failure it first runs ``recover`` (and raises if that fails). When it returns, the
        entries are durable (an error after the fdatasync, in the ``.sums``
        hint, only sets ``needs_recovery``). ``maintain=False`` leaves checkpoints and rolls to
        ``tick``, so a caller can acknowledge first and a checkpoint failure never fails durable
        entries.
        """
        if not self._pending:
            return
        if self.integrity_fault is not None:
            self.rollback()
            self._refuse_if_faulty()
        if self.needs_recovery:
            try:
                self.recover()  # never append after a failure before the tail is re-checked
            except BaseException:
                self.rollback()
                raise
        with self.lock:
            if self._active is None:
                try:
                    self._start_segment(self._committed[0])
                except OSError as exc:
                    self.rollback()
                    raise self._note_failure("open", exc) from exc
            data = b"".join(line + b"\n" for line in self._pending)
            start = self._active_bytes
            step = "write"
            try:
                _write_all(self._fd, data)
                step = "fdatasync"
                os.fdatasync(self._fd)
            except OSError as exc:
                self._tail_suspect = True
                self._probe_bytes = max(PROBE_BYTES, len(data))
                with contextlib.suppress(OSError):  # recover() cuts it from a fresh descriptor
                    os.ftruncate(self._fd, start)
                self.rollback()
                raise self._note_failure(step, exc) from exc
            offset = start
            for line in self._pending:
                self._active_offsets.append(offset)
                offset += len(line) + 1
            self._active_bytes = offset
            sums = b"".join(self._pending_sums)
            self._pending.clear()
            self._pending_sums.clear()
            self.tree.append(self._pending_leaves)
            self._pending_leaves = []
            self._committed = (self.size, self.head)
            try:
                _write_all(self._sums_fd, sums)
            except OSError as exc:
                self._sums_stale = True
                self._note_failure("sums", exc)
        if maintain:
            self._maintain(time.time(), by_time=False)

    def tick(self, now: float | None = None, *, wait: bool = True) -> None:
        """Checkpoints and rolls that are due (by count, time, age or size); retries a failed seal.

        Called after each group and about every second by the writer thread. Raises
        ``JournalIOError`` when a checkpoint or roll fails; calling it again retries.
        ``wait=False`` starts a due checkpoint in the background (unless one is running) and
        raises its failure at a later tick; ``wait=True`` signs it before returning.
        """
        self._maintain(time.time() if now is None else now, by_time=True, wait=wait)

    def _maintain(self, now: float, *, by_time: bool, wait: bool = True) -> None:
        if self.integrity_fault is not None:
            return  # read-only: nothing signed, rolled or sealed
        if wait:
            self._checkpointing.wait()
        self._checkpointing.raise_failure()
        self._retry_seal(now)
        if self.tree.size >> 16 > self._tiles.written.get(1, 0):
            self._flush_tiles()
        if self.needs_recovery:
            return
        covered = self.last_checkpoint.size if self.last_checkpoint else 0
        due = self._committed[0] - covered >= self.settings.checkpoint_every
        if by_time:
            due = due or now - self.last_checkpoint_time >= self.settings.checkpoint_interval
        if self._committed[0] > covered and due:
            if wait:
                self.checkpoint()
            elif not self._checkpointing.busy:
                self._checkpointing.start(self._checkpoint_if_behind)
        if not self._active or not self._active_bytes:
            return
        if self._active_bytes >= self.settings.segment_max_bytes or (
            by_time and now - self._active_opened >= self.settings.segment_max_age
        ):
            self.roll()

    def checkpoint(self, cosigners: tuple[Signer, ...] = ()) -> Checkpoint:
        """Sign and log a checkpoint of the committed entries (any thread); ``cosigners`` add their
        signatures (a signing-key rotation: the old and the new key both sign the entry naming the
        new one)."""
        with self._checkpoint_lock:
            return self._checkpoint(cosigners)

    def _checkpoint_if_behind(self) -> None:
        """The background job: a checkpoint signed meanwhile (a rotation's, on the writer thread)
        may already cover everything committed; then there is nothing to sign."""
        with self._checkpoint_lock:
            held = self.last_checkpoint
            if held is None or held.size < self._committed[0]:
                self._checkpoint(())

    def _checkpoint(self, cosigners: tuple[Signer, ...]) -> Checkpoint:
        self._refuse_if_faulty()
        with self.lock:  # API threads read the tree (and its block cache) under the same lock
            size = self._committed[0]
            root = self.tree.root(size)
        cp = sign_checkpoint(self.signer, self.origin, size, root, *cosigners)
        note = cp.render()
        record = orjson.dumps({"note": note}) + b"\n"  # everything in it is signed
        try:
            fd = os.open(self.directory / "checkpoints.log", os.O_RDWR | os.O_APPEND | os.O_CREAT, segs.FILE_MODE)
            try:
                start = _cut_partial_line(fd)
                try:
                    _write_all(fd, record)
                    os.fdatasync(fd)
                except OSError:
                    with contextlib.suppress(OSError):  # else _cut_partial_line cuts it next time
                        os.ftruncate(fd, start)
                    raise
            finally:
                os.close(fd)
            _atomic_write(self.directory / "checkpoint", note.encode())
        except OSError as exc:
            raise self._note_failure("checkpoint", exc) from exc
        self.last_checkpoint = cp
        self.last_checkpoint_time = time.time()
        return cp

    def _start_segment(self, first_seq: int) -> None:
        seg = segs.SegmentFiles(first_seq, self.seg_dir)
        self._recovered_offsets, self._recovered_bytes = [], 0
        self._reopen_active(seg, self._committed[1])
        try:
            segs.fsync_dir(self.seg_dir)  # the new file's name must be durable before entries in it are
        except OSError:
            self._close_fds()
            self._active = None
            raise

    def roll(self) -> None:
        """Close the active segment and seal it (in the background unless configured not to)."""
        with self.lock:
            if self._active is None or not self._active_bytes or self.needs_recovery:
                return
            seg, prev = self._active, self._active_prev
            self._close_fds()
            self._active = None
            self._active_bytes = 0
            self._active_offsets = []
        with self._seal_lock:
            self._unsealed.append((seg, prev))
            self._seal_retry_at = 0.0
        self._retry_seal(time.time())

    # ----- sealing (retried until it succeeds; the .log stays readable meanwhile) ----------
    @property
    def unsealed(self) -> int:
        """Closed segments not sealed yet (sealing, or waiting for a retry after a failure)."""
        return len(self._unsealed)

    def _retry_seal(self, now: float) -> None:
        if not self._unsealed or now < self._seal_retry_at:
            return
        if self._seal_thread is not None and self._seal_thread.is_alive():
            return
        if self.settings.seal_in_background:
            self._seal_thread = threading.Thread(target=self._seal_pending, name="keylife-seal", daemon=True)
            self._seal_thread.start()
        else:
            self._seal_pending()

    def _seal_pending(self) -> None:
        while True:
            with self._seal_lock:
                if not self._unsealed:
                    break
                seg, prev = self._unsealed[0]
            try:
                segs.seal(seg, prev, self.settings.compress_level)
            except OSError as exc:
                err = self._note_failure("seal", exc)
                with self._seal_lock:
                    self._seal_retry_at = time.time() + self._seal_backoff
                    self._seal_backoff = min(self._seal_backoff * 2, SEAL_RETRY_MAX)
                if self.seal_failure is None:
                    self.seal_failure = (cause_name(err), time.time())
                    log.warning(
                        f"sealing segment {seg.first_seq} failed with {cause_name(err)}; its entries stay "
                        "in the .log and sealing is retried",
                        extra={"cause": cause_name(err), "segment": seg.first_seq, "reason": str(err)},
                    )
                return
            with self._seal_lock:
                self._unsealed.pop(0)
                self._seal_backoff = SEAL_RETRY_FIRST
            if self.seal_failure is not None:
                log.warning(f"sealing works again after {self.seal_failure[0]}", extra={"cause": self.seal_failure[0]})
                self.seal_failure = None

    def close(self) -> None:
        """Checkpoint what is committed, close files and wait for sealing to finish.

        A checkpoint that fails here is logged, not raised: everything acknowledged is durable
        in the segment, and the next start checkpoints it.
        """
        self._checkpointing.wait()
        with contextlib.suppress(OSError, JournalCorrupt):  # counted; the final checkpoint retries it
            self._checkpointing.raise_failure()
        if self.needs_recovery:
            try:
                self.recover()
            except (OSError, JournalCorrupt) as exc:
                log.warning("journal closed without recovering from an I/O failure", extra={"reason": str(exc)})
        if (
            self.integrity_fault is None
            and self._committed[0]
            and (not self.last_checkpoint or self.last_checkpoint.size < self._committed[0])
        ):
            try:
                self.checkpoint()
            except OSError as exc:
                log.warning("final checkpoint failed; the next start writes it", extra={"reason": str(exc)})
        self._close_fds()
        self.wait_sealed()

    def wait_sealed(self) -> None:
        """Wait until every closed segment is sealed, or sealing failed (then it is retried later)."""
        while True:
            thread = self._seal_thread
            if thread is not None:
                thread.join()
            with self._seal_lock:
                if not self._unsealed or self.seal_failure is not None:
                    return
                self._seal_retry_at = 0.0  # rolled while the last seal was finishing: seal it now
            self._retry_seal(time.time())

    # ----- the Merkle tree -----------------------------------------------------------------
    def _flush_tiles(self) -> None:
        """Write the full tiles the tree has and the disk lacks. A failure is counted and retried
        by the next ``tick``: tiles are derived from durable entries and rebuilt at start-up."""
        try:
            self._tiles.flush(self.tree)
        except OSError as exc:
            self._note_failure("tree", exc)

    def _block_lines(self, first: int, count: int) -> list[bytes]:
        """Committed lines ``first ..`` for the tree's leaf blocks: the active segment through its
        offsets, the rest from sealed or closed segments."""
        with self.lock:
            active_first = self._active.first_seq if self._active is not None else None
            if active_first is None or first + count <= active_first:
                return read_lines(self.seg_dir, first, count)
            before = read_lines(self.seg_dir, first, active_first - first) if first < active_first else []
            lo = max(first, active_first) - active_first
            hi = min(first + count - active_first, len(self._active_offsets))
            if lo >= hi:
                return before
            end = self._active_offsets[hi] if hi < len(self._active_offsets) else self._active_bytes
            with open(self._active.path("log"), "rb") as handle:
                handle.seek(self._active_offsets[lo])
                data = handle.read(end - self._active_offsets[lo])
            return before + segs.split_lines(data)

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


def upgrade_meta(path: Path, meta: dict[str, Any], size: int) -> None:
    """Move a format-1 journal (checkpoints sign the chain head) to format 2: checkpoints from
    now on sign the Merkle root; ``chain_checkpoints_upto`` tells ``verify`` that checkpoints of
    at most that size were written by the old code and sign the chain head."""
    _atomic_write(path, orjson.dumps(meta | {"format": FORMAT, "chain_checkpoints_upto": size}))


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _cut_partial_line(fd: int) -> int:
    """Truncate ``fd``'s file after its last newline if it ends mid-line; returns the new size."""
    size = os.fstat(fd).st_size
    if not size or os.pread(fd, 1, size - 1) == b"\n":
        return size
    block = 65536
    end = size
    while end > 0:
        begin = max(0, end - block)
        chunk = os.pread(fd, end - begin, begin)
        at = chunk.rfind(b"\n")
        if at >= 0:
            keep = begin + at + 1
            break
        end = begin
    else:
        keep = 0
    os.ftruncate(fd, keep)
    os.fsync(fd)
    return keep


def _atomic_write(path: Path, data: bytes, mode: int = segs.FILE_MODE) -> None:
    replace_durably(path, data, mode)  # the journal's files are 0640
