"""Retention: remove the bodies of old entries, keep the hashes that every checkpoint and proof needs.

``keylife journal prune --before DATE`` (keylife/cli/prune_cmd.py) works on whole sealed
segments whose entries were all observed before DATE, from the oldest unpruned one on, and
only on segments the latest signed checkpoint covers (never the open segment). It rounds down
to what is safe and says exactly which seqs it pruned. What stays of a pruned segment:

* ``<first>.idx``: seq and time range, the chain hashes before, at the first and after the last
  entry (the shipper's per-entry chain continues across the gap);
* ``<first>.leaves``: the RFC 9162 §2.1.1 leaf hash ``SHA-256(0x00 || line)`` of each entry, 32
  bytes each in seq order. RFC 6962 roots, inclusion and consistency proofs and C2SP tlog-tiles
  level-0 tiles over the range are computed from them exactly as from the entries;
* ``<first>.kept``: the whole entries verification still follows, prune announcements (a later
  prune may remove the segment of an earlier one) and signing-key rotations (the chain of keys);
  each counts only if its leaf hash is the kept one at its seq.

The prune is journaled first: an entry of type ``journal_pruned`` (a system type producers
cannot send) whose attributes name the cut-off, the seq range, the entry count, the RFC 6962
root of the range's leaf hashes (``prune.leaves_root``, MTH of leaves first..last) and the
SHA-256 over the SHA-256 of each removed ``.zst`` (``prune.bodies_sha256``). It is made durable
and covered by a signed checkpoint before any file is touched. Then, per segment: write
``.leaves`` (fsync), delete ``.zst``, delete ``.sums`` (fsync the directory). A crash anywhere
leaves each segment whole (not yet pruned) or pruned with its leaves; running the prune again
finishes it. ``verify`` accepts a pruned range only when a checkpoint-covered announcement names
it and its kept leaves give the announced root; otherwise it is ``deleted``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import orjson

from keylife.journal import merkle
from keylife.journal import segments as segs
from keylife.journal.tree import RootBuilder, read_lines

EVENT_TYPE = "journal_pruned"


def parse_time(text: str) -> datetime:
    """An RFC 3339 time, or a date (midnight UTC); a time without an offset is refused."""
    value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if len(text) == 10:
        return value.replace(tzinfo=UTC)
    if value.tzinfo is None:
        raise ValueError(f"{text!r} has no UTC offset (write it as 2019-01-01 or 2019-01-01T00:00:00Z)")
    return value.astimezone(UTC)


def format_time(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


@dataclass(frozen=True)
class Announcement:
    """A journaled ``journal_pruned`` entry: what was (to be) pruned, and when."""

    seq: int
    observed_at: str
    before: str
    first: int
    last: int
    leaves_root: bytes

    @classmethod
    def from_line(cls, line: bytes) -> Announcement | None:
        try:
            value = orjson.loads(line)
            event, attrs = value["event"], value["event"]["attributes"]
            if event.get("type") != EVENT_TYPE:
                return None
            return cls(
                seq=value["seq"],
                observed_at=value["observed_at"],
                before=attrs["prune.before"],
                first=int(attrs["prune.first_seq"]),
                last=int(attrs["prune.last_seq"]),
                leaves_root=bytes.fromhex(attrs["prune.leaves_root"]),
            )
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            return None


def range_leaves(seg_dir: Path, first: int, last: int) -> Iterator[list[bytes]]:
    """Leaf hashes of entries ``first..last``: kept ones of pruned segments, else hashed from the entries."""
    at = first
    pruned = segs.pruned_ranges(seg_dir)
    while at <= last:
        hit = next(((lo, hi, seg) for lo, hi, seg in pruned if lo <= at < hi), None)
        if hit is not None:
            stop = min(hit[1], last + 1)
            leaves = segs.read_leaves(hit[2], at, stop - at)
        else:
            following = min((lo for lo, _hi, _seg in pruned if lo > at), default=last + 1)
            stop = min(following, last + 1, at + 65536)
            leaves = [merkle.leaf_hash(line) for line in read_lines(seg_dir, at, stop - at)]
        if len(leaves) != stop - at:
            raise ValueError(f"entries {at}..{stop - 1} are neither in the journal nor kept as leaf hashes")
        yield leaves
        at = stop


def leaves_root(seg_dir: Path, first: int, last: int) -> bytes:
    """RFC 6962 MTH over the leaf hashes of entries ``first..last`` (what an announcement records)."""
    builder = RootBuilder()
    for leaves in range_leaves(seg_dir, first, last):
        builder.extend(leaves)
    return builder.root()


@dataclass
class Plan:
    """What a prune at ``before`` removes: whole sealed segments, and why it stops where it does."""

    before: str
    segments: list[segs.SegmentFiles] = field(default_factory=list)
    first: int = 0
    last: int = -1
    stopped: str = ""  # why the next segment is kept
    leftovers: list[segs.SegmentFiles] = field(default_factory=list)  # pruned, a .sums or .leaves to finish

    @property
    def count(self) -> int:
        return self.last - self.first + 1


def plan(directory: Path, before: datetime, covered: int) -> Plan:
    """The sealed segments, oldest first, whose entries were all observed before ``before`` and that
    the latest checkpoint (``covered`` entries) covers; the first that fails a test ends the plan."""
    seg_dir = Path(directory) / "segments"
    out = Plan(format_time(before))
    for seg in segs.list_segments(seg_dir):
        if seg.pruned:
            if seg.path("sums").exists():
                out.leftovers.append(seg)
            continue
        if not seg.sealed:
            out.stopped = f"segment {seg.first_seq} is not sealed (the open segment is never pruned)"
            break
        index = segs.read_index(seg)
        span = f"entries {index['first_seq']}..{index['last_seq']}"
        if parse_time(index["last_observed_at"]) >= before:
            last = index["last_observed_at"]
            out.stopped = f"segment {seg.first_seq} ({span}) ends with an entry observed at {last}"
            out.stopped += f", not before {out.before}"
            break
        if index["last_seq"] >= covered:
            out.stopped = f"{span} are not all covered by the latest signed checkpoint (size {covered})"
            break
        if not out.segments:
            out.first = index["first_seq"]
        out.segments.append(seg)
        out.last = index["last_seq"]
    return out


def attributes(directory: Path, chosen: Plan) -> dict[str, str]:
    """The announcement's attributes (strings, as the event model keeps them)."""
    bodies = hashlib.sha256()
    for seg in chosen.segments:
        bodies.update(hashlib.sha256(seg.path("zst").read_bytes()).digest())
    root = leaves_root(Path(directory) / "segments", chosen.first, chosen.last)
    return {
        "prune.before": chosen.before,
        "prune.first_seq": str(chosen.first),
        "prune.last_seq": str(chosen.last),
        "prune.count": str(chosen.count),
        "prune.segments": str(len(chosen.segments)),
        "prune.leaves_root": root.hex(),
        "prune.bodies_sha256": bodies.hexdigest(),
    }


def carry_out(chosen: Plan) -> None:
    """Remove the bodies, segment by segment, in the crash-safe order (the announcement is durable
    and signed before this runs): ``.leaves`` written and synced, then ``.zst``, then ``.sums``."""
    for seg in chosen.segments:
        index = segs.read_index(seg)
        lines = list(segs.segment_lines(seg))
        if len(lines) != index["count"]:
            raise ValueError(f"segment {seg.first_seq} holds {len(lines)} entries, its index says {index['count']}")
        segs.write_private(seg.path("leaves"), b"".join(merkle.leaf_hash(line) for line in lines))
        kept = [line for line in lines if any(mark in line for mark in segs.KEEP_MARKS)]
        if kept:  # prune announcements and key rotations: verification follows them after the prune
            segs.write_private(seg.path("kept"), b"".join(line + b"\n" for line in kept))
        segs.fsync_dir(seg.directory)
        seg.path("zst").unlink()
        seg.path("sums").unlink(missing_ok=True)
        segs.fsync_dir(seg.directory)
    for seg in chosen.leftovers:
        seg.path("sums").unlink(missing_ok=True)
        segs.fsync_dir(seg.directory)


@dataclass(frozen=True)
class PrunedRange:
    """Entries ``first..last`` whose bodies are gone, and the announcement that removed them."""

    first: int
    last: int
    by: Announcement | None

    def __str__(self) -> str:
        if self.by is None:
            return f"entries {self.first}..{self.last}"
        return (
            f"entries {self.first}..{self.last} (bodies of entries observed before {self.by.before} removed "
            f"on {self.by.observed_at[:10]} by the prune at seq {self.by.seq}; leaf hashes kept)"
        )


def merge(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Contiguous (first, last) ranges joined."""
    out: list[tuple[int, int]] = []
    for first, last in sorted(ranges):
        if out and first == out[-1][1] + 1:
            out[-1] = (out[-1][0], last)
        else:
            out.append((first, last))
    return out


@dataclass
class PruneCheck:
    pruned: list[PrunedRange] = field(default_factory=list)
    unannounced: list[tuple[int, int]] = field(default_factory=list)  # removed without a signed prune
    bad_leaves: list[tuple[Announcement, str]] = field(default_factory=list)
    unfinished: list[Announcement] = field(default_factory=list)  # announced; some bodies still there


def check(seg_dir: Path, pruned: list[tuple[int, int]], found: list[Announcement], covered: int) -> PruneCheck:
    """Match the pruned ranges with the announcements a signed checkpoint covers (seq < ``covered``),
    and the kept leaves of each announced range with the root it recorded."""
    out = PruneCheck()
    signed = [a for a in found if a.seq < covered and a.first <= a.last < a.seq]
    for first, last in merge(pruned):
        at = first
        while at <= last:
            by = next((a for a in signed if a.first <= at <= a.last), None)
            if by is None:
                nxt = min((a.first for a in signed if at < a.first <= last), default=last + 1)
                out.unannounced.append((at, nxt - 1))
                at = nxt
                continue
            stop = min(by.last, last)
            out.pruned.append(PrunedRange(at, stop, by))
            at = stop + 1
    pruned_seqs = merge(pruned)
    for a in signed:
        try:
            root = leaves_root(seg_dir, a.first, a.last)
        except (OSError, ValueError) as exc:
            out.bad_leaves.append((a, str(exc)))
            continue
        if root != a.leaves_root:
            out.bad_leaves.append((a, "their leaf hashes differ from those the prune recorded"))
        if not any(lo <= a.first and a.last <= hi for lo, hi in pruned_seqs):
            out.unfinished.append(a)
    return out


def unannounced_at_start(directory: Path, size: int, lines: list[bytes]) -> str | None:
    """Start-up's cheap form of ``check``: every pruned segment below ``size`` lies in a range
    announced by one of ``lines`` (the announcements up to the latest checkpoint)."""
    found = [a for a in (Announcement.from_line(line) for line in lines) if a is not None]
    for lo, hi, _seg in segs.pruned_ranges(Path(directory) / "segments"):
        if lo >= size:
            continue
        at = lo
        while at < hi:
            by = next((a for a in found if a.first <= at <= a.last and a.seq < size), None)
            if by is None:
                return f"entries {at}..{hi - 1} were removed without a journaled, signed prune (deleted)"
            at = by.last + 1
    return None
