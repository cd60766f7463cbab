"""Reading a journal for verification: entries in file order, batch by batch, with what each
batch needs checked (its ``.sums``, whether it may hold a signing-key rotation, what a pruned
segment kept), and the checks of one batch (``in_order``) and of a sealed index (``IndexCheck``).
Corrupt frames and files become faults, never crashes.
"""

from __future__ import annotations

import bisect
import hashlib
from collections.abc import Iterator
from pathlib import Path

import orjson
import zstandard

from keylife.journal import segments as segs
from keylife.journal.rotation import MARKER, Rotation, RotationError, parse_line
from keylife.journal.verify_claims import Fault

BATCH = 1024  # lines of an open segment checked together


def collect_rotations(part: list[bytes], rotations: list[Rotation], faults: list[Fault]) -> None:
    """Collect the rotation entries of ``part``; a malformed one is a fault naming its seq."""
    for line in part:
        if MARKER in line:
            try:
                found = parse_line(line)
            except RotationError as exc:
                faults.append(Fault("bad_rotation", exc.seq, exc.detail))
                continue
            if found is not None:
                rotations.append(found)


Batch = tuple[segs.SegmentFiles, bytes, list[bytes], bool, list[bytes] | None]


def batches(directory: Path, faults: list[Fault], announced: list[bytes]) -> Iterator[Batch]:
    """(segment, its sums, lines, whether they may hold a rotation entry, None) per frame or open
    segment, in file order; corrupt frames become faults, not crashes. A pruned segment gives
    (segment, b"", its kept leaf hashes, whether it keeps entries, the entries it keeps); a
    segment left with only its index gives zero hashes in their place (a ``deleted`` fault), so
    the seqs after it keep their place. Lines that announce a prune are added to ``announced``."""
    mark = segs.PRUNE_MARK
    for seg in segs.list_segments(directory / "segments"):
        if not seg.sealed and not seg.pruned and not seg.path("log").exists() and seg.path("idx").exists():
            try:
                index = segs.read_index(seg)
                first, count = index["first_seq"], index["count"]
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, OSError):
                continue  # nothing to place: the seqs after it are named as missing
            faults.append(
                Fault(
                    "deleted",
                    first,
                    f"entries {first}..{first + count - 1} are gone: segment {seg.first_seq} has only its index "
                    "(no entries, no leaf hashes)",
                )
            )
            yield seg, b"", [bytes(segs.LEAF_BYTES)] * count, False, []
            continue
        if seg.pruned:
            try:
                count = segs.read_index(seg)["count"]
                leaves = segs.read_leaves(seg, seg.first_seq, count)
                held = seg.path("leaves").stat().st_size
                kept = segs.read_kept(seg)
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, OSError) as exc:
                faults.append(Fault("modified", seg.first_seq, f"pruned segment {seg.first_seq}: {exc}"))
                continue
            if held != segs.LEAF_BYTES * count:
                name = seg.path("leaves").name
                what = f"{name} holds {held} bytes, not {count} leaf hashes of {segs.LEAF_BYTES}"
                faults.append(Fault("modified", seg.first_seq, f"pruned segment {seg.first_seq}: {what}"))
                leaves += [bytes(segs.LEAF_BYTES)] * (count - len(leaves))  # keep the seqs after it in place
            lines = [kept[s] for s in sorted(kept)]
            announced += [line for line in lines if mark in line]
            yield seg, b"", leaves, any(MARKER in line for line in lines), lines
            continue
        sums = segs.read_sums(seg)
        if seg.sealed:
            try:
                for _first, data in segs.iter_frames(seg):
                    lines = segs.split_lines(data)
                    if mark in data:
                        announced += [line for line in lines if mark in line]
                    if lines:
                        yield seg, sums, lines, MARKER in data, None
            except (zstandard.ZstdError, orjson.JSONDecodeError, KeyError, TypeError, ValueError, OSError) as exc:
                faults.append(Fault("modified", seg.first_seq, f"sealed segment {seg.first_seq} is corrupt: {exc}"))
        elif seg.path("log").exists():
            data = seg.path("log").read_bytes()
            lines = segs.split_lines(data)
            marked = MARKER in data
            if mark in data:
                announced += [line for line in lines if mark in line]
            for at in range(0, len(lines), BATCH):
                yield seg, sums, lines[at : at + BATCH], marked, None
            if data and not data.endswith(b"\n"):
                faults.append(Fault("modified", None, f"segment {seg.first_seq} ends in a partial entry"))


def cut_at(batch: list[bytes], count: int, sizes: list[int]) -> Iterator[list[bytes]]:
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


def in_order(lines: list[bytes], expected: int, first_seq: int, sums: bytes) -> bool:
    """True when ``lines`` are seqs ``expected ..`` in order and each matches its digest; else the
    per-line check runs and names what is wrong."""
    offset = (expected - first_seq) * segs.SUM_BYTES
    end = offset + len(lines) * segs.SUM_BYTES
    if offset < 0 or end > len(sums):
        return False
    sha256 = hashlib.sha256
    if b"".join([sha256(line).digest()[: segs.SUM_BYTES] for line in lines]) != sums[offset:end]:
        return False
    tails = [b',"seq":%d}' % seq for seq in range(expected, expected + len(lines))]
    return all(map(bytes.endswith, lines, tails))  # map over a C method: half the cost of a genexpr


class IndexCheck:
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
