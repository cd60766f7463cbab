"""Offline verification of a journal directory: recompute everything, name every fault.

Needs only the journal files and the trusted verifier key(s). What it checks:

* every checkpoint's signature (``bad_signature``, ``unknown_key``) and that the RFC 6962 Merkle
  root recomputed from the entries at its size equals its hash (a checkpoint written by a
  format-1 journal, of at most ``chain_checkpoints_upto`` entries, signs the chain head
  instead); a checkpoint saved elsewhere that is larger than the journal proves ``truncated``;
* the seq of every entry, in file order: a gap is ``deleted``, a seq seen again is
  ``inserted``, a late seq is ``reordered``;
* each entry's digest against the ``.sums`` written with it, so a changed entry is named
  exactly (``modified``); an entry that is not JSON, or a corrupt compressed frame, too.

The signatures are what make tampering detectable; the digests only say where it happened.
"""

from __future__ import annotations

import bisect
import hashlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import orjson
import zstandard

from keylife.journal import segments as segs
from keylife.journal.note import Checkpoint, NoteError, check_signatures, parse
from keylife.journal.signing import Verifier
from keylife.journal.tree import RootBuilder
from keylife.journal.writer import genesis_hash

BATCH = 1024  # lines of an open segment checked together


@dataclass(frozen=True)
class Fault:
    kind: str  # modified | deleted | inserted | reordered | truncated | bad_signature | unknown_key
    seq: int | None
    detail: str

    def __str__(self) -> str:
        where = f"seq {self.seq}" if self.seq is not None else "journal"
        return f"{self.kind:<13} {where}: {self.detail}"


@dataclass
class Report:
    entries: int = 0
    checkpoints: int = 0
    unsigned_tail: int = 0
    head: bytes = b""
    root: bytes = b""
    faults: list[Fault] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.faults


@dataclass(frozen=True)
class _Claim:
    source: str
    checkpoint: Checkpoint


def load_checkpoints(directory: Path) -> tuple[list[_Claim], list[Fault]]:
    claims: list[_Claim] = []
    faults: list[Fault] = []
    history = directory / "checkpoints.log"
    if history.exists():
        for number, raw in enumerate(history.read_bytes().splitlines(), start=1):
            try:
                claims.append(_Claim(f"checkpoints.log line {number}", parse(orjson.loads(raw)["note"])))
            except (orjson.JSONDecodeError, KeyError, TypeError, NoteError) as exc:
                faults.append(Fault("modified", None, f"checkpoints.log line {number} is not a checkpoint: {exc}"))
    latest = directory / "checkpoint"
    if latest.exists():
        try:
            claims.append(_Claim("checkpoint (latest)", parse(latest.read_text())))
        except (NoteError, UnicodeDecodeError) as exc:
            faults.append(Fault("modified", None, f"latest checkpoint file is not a checkpoint: {exc}"))
    return claims, faults


def _batches(directory: Path, faults: list[Fault]) -> Iterator[tuple[segs.SegmentFiles, bytes, list[bytes]]]:
    """(segment, its sums, lines) per frame or open segment, in file order; corrupt frames become
    faults, not crashes."""
    for seg in segs.list_segments(directory / "segments"):
        sums = segs.read_sums(seg)
        if seg.sealed:
            try:
                for _first, data in segs.iter_frames(seg):
                    lines = segs.split_lines(data)
                    if lines:
                        yield seg, sums, lines
            except (zstandard.ZstdError, orjson.JSONDecodeError, KeyError, TypeError, ValueError, OSError) as exc:
                faults.append(Fault("modified", seg.first_seq, f"sealed segment {seg.first_seq} is corrupt: {exc}"))
        elif seg.path("log").exists():
            data = seg.path("log").read_bytes()
            lines = segs.split_lines(data)
            for at in range(0, len(lines), BATCH):
                yield seg, sums, lines[at : at + BATCH]
            if data and not data.endswith(b"\n"):
                faults.append(Fault("modified", None, f"segment {seg.first_seq} ends in a partial entry"))


def _cut(batch: list[bytes], count: int, sizes: list[int]) -> Iterator[list[bytes]]:
    """``batch`` (entries ``count ..``) in pieces that end at every checkpoint size inside it, so the
    root and chain are at hand exactly there."""
    at = bisect.bisect_right(sizes, count)
    start = 0
    while at < len(sizes) and sizes[at] < count + len(batch):
        end = sizes[at] - count
        if end > start:
            yield batch[start:end]
            start = end
        at += 1
    yield batch[start:]


def _in_order(lines: list[bytes], expected: int, first_seq: int, sums: bytes) -> bool:
    """True when ``lines`` are seqs ``expected ..`` in order and each matches its digest; else the
    per-line check runs and names what is wrong."""
    offset = (expected - first_seq) * segs.SUM_BYTES
    end = offset + len(lines) * segs.SUM_BYTES
    if offset < 0 or end > len(sums):
        return False
    sha256 = hashlib.sha256
    if b"".join([sha256(line).digest()[: segs.SUM_BYTES] for line in lines]) != sums[offset:end]:
        return False
    return all(line.endswith(b',"seq":%d}' % seq) for seq, line in enumerate(lines, start=expected))


class _IndexCheck:
    """Compares a sealed segment's index with what its entries really hold."""

    def __init__(self, seg: segs.SegmentFiles, prev: bytes, first_line: bytes) -> None:
        self.seg, self.prev = seg, prev
        self.count, self.first_line, self.last_line, self.last_hash = 0, first_line, first_line, prev

    def finish(self, faults: list[Fault]) -> None:
        try:
            index = segs.read_index(self.seg)
            first, last = orjson.loads(self.first_line), orjson.loads(self.last_line)
            claims = {
                "prev_hash": (index["prev_hash"], self.prev.hex()),
                "last_hash": (index["last_hash"], self.last_hash.hex()),
                "count": (index["count"], self.count),
                "first_seq": (index["first_seq"], first["seq"]),
                "last_seq": (index["last_seq"], last["seq"]),
                "first_observed_at": (index["first_observed_at"], first["observed_at"]),
                "last_observed_at": (index["last_observed_at"], last["observed_at"]),
            }
        except (orjson.JSONDecodeError, KeyError, TypeError, OSError) as exc:
            faults.append(Fault("modified", self.seg.first_seq, f"index of segment {self.seg.first_seq}: {exc}"))
            return
        wrong = [name for name, (said, real) in claims.items() if said != real]
        if wrong:
            faults.append(
                Fault(
                    "modified",
                    self.seg.first_seq,
                    f"index of segment {self.seg.first_seq} disagrees with its entries: {', '.join(wrong)}",
                )
            )


def verify(
    directory: Path,
    trusted: list[Verifier],
    external: Iterable[Checkpoint] = (),
    progress: Callable[[int], None] | None = None,
) -> Report:
    directory = Path(directory)
    report = Report()
    meta = orjson.loads((directory / "journal.json").read_bytes())
    origin = meta["origin"]
    legacy_upto = legacy_checkpoint_limit(meta)
    claims, faults = load_checkpoints(directory)
    claims += [_Claim("checkpoint given on the command line", cp) for cp in external]
    report.faults += faults
    by_size: dict[int, list[_Claim]] = {}
    for claim in claims:
        cp = claim.checkpoint
        problem = check_signatures(cp, trusted)
        if problem == "unknown signing key":
            report.faults.append(
                Fault("unknown_key", None, f"{claim.source} (size {cp.size}) is signed by a key not trusted here")
            )
            continue
        if problem:
            report.faults.append(
                Fault("bad_signature", None, f"{claim.source} (size {cp.size}): signature does not verify")
            )
            continue
        if cp.origin != origin:
            report.faults.append(
                Fault("unknown_key", None, f"{claim.source} is for origin {cp.origin!r}, not {origin!r}")
            )
            continue
        by_size.setdefault(cp.size, []).append(claim)
    report.checkpoints = sum(len(v) for v in by_size.values())

    chain = genesis_hash(origin)
    count = 0
    expected = 0
    missing: set[int] = set()
    short_sums: set[int] = set()
    mismatched: list[tuple[int, _Claim]] = []
    sha256 = hashlib.sha256
    entry_sum = segs.entry_sum
    check: _IndexCheck | None = None
    current: segs.SegmentFiles | None = None
    tree = RootBuilder()
    sizes = sorted(by_size)
    for seg, sums, batch in _batches(directory, report.faults):
        for part in _cut(batch, count, sizes):
            if seg is not current:
                current = seg
                if check is not None:
                    check.finish(report.faults)
                check = _IndexCheck(seg, chain, part[0]) if seg.sealed else None
            for line in part:
                chain = sha256(chain + line).digest()
            tree.extend([sha256(b"\x00" + line).digest() for line in part])
            first_position = count
            count += len(part)
            if check is not None:
                check.count += len(part)
                check.last_line, check.last_hash = part[-1], chain
            if count in by_size:
                root = tree.root()
                mismatched += [
                    (count, c)
                    for c in by_size[count]
                    if c.checkpoint.hash != root and (count > legacy_upto or c.checkpoint.hash != chain)
                ]
            if progress and count >> 16 != first_position >> 16:
                progress(count)
            if _in_order(part, expected, seg.first_seq, sums):  # the common case, checked in bulk
                expected += len(part)
                continue
            for position, line in enumerate(part, start=first_position):
                try:
                    seq = segs.entry_seq(line)
                except ValueError:
                    report.faults.append(
                        Fault("modified", expected, f"entry at position {position} is not a valid entry")
                    )
                    expected += 1
                    continue
                offset = (seq - seg.first_seq) * segs.SUM_BYTES
                if offset >= 0 and offset + segs.SUM_BYTES <= len(sums):
                    digest_ok = sums[offset : offset + segs.SUM_BYTES] == entry_sum(line)
                else:
                    digest_ok = True
                    if seg.first_seq not in short_sums:
                        short_sums.add(seg.first_seq)
                        report.faults.append(
                            Fault("modified", seq, f"digest file of segment {seg.first_seq} is missing or short")
                        )
                if seq == expected:
                    if not digest_ok:
                        report.faults.append(Fault("modified", seq, "entry differs from the digest written with it"))
                    expected += 1
                elif seq > expected:
                    if seq - expected <= 100_000:
                        missing.update(range(expected, seq))
                    else:
                        report.faults.append(Fault("deleted", expected, f"seq {expected}..{seq - 1} are missing"))
                    if not digest_ok:
                        report.faults.append(Fault("modified", seq, "entry differs from the digest written with it"))
                    expected = seq + 1
                elif seq in missing:
                    missing.discard(seq)
                    report.faults.append(Fault("reordered", seq, f"seq {seq} stands after seq {expected - 1}"))
                else:
                    what = "a fabricated entry" if not digest_ok else "a copy of an existing entry"
                    report.faults.append(
                        Fault("inserted", seq, f"seq {seq} appears again ({what}) after seq {expected - 1}")
                    )
    if check is not None:
        check.finish(report.faults)
    if progress:
        progress(count)
    for seq in sorted(missing):
        report.faults.append(Fault("deleted", seq, "entry is missing from the journal"))

    if mismatched:
        size, claim = mismatched[0]
        more = f" (and {len(mismatched) - 1} later checkpoints)" if len(mismatched) > 1 else ""
        report.faults.append(
            Fault("modified", size - 1, f"the Merkle root up to seq {size - 1} does not match {claim.source}{more}")
        )
    for size, claims_at in sorted(by_size.items()):
        if size > count:
            claim = claims_at[0]
            report.faults.append(
                Fault("truncated", count, f"journal ends at {count} entries; {claim.source} covers {size}")
            )
    report.entries = count
    report.head = chain
    report.root = tree.root()
    covered = max((s for s in by_size if s <= count), default=0)
    report.unsigned_tail = count - covered
    return report


def legacy_checkpoint_limit(meta: dict) -> float:
    """Checkpoints of at most this size may sign the chain head (written by a format-1 journal)."""
    if meta.get("format", 1) == 1:
        return float("inf")
    return meta.get("chain_checkpoints_upto", -1)
