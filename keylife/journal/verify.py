"""Offline verification of a journal directory: recompute everything, name every fault.

Needs only the journal files and the trusted verifier key(s). What it checks:

* every checkpoint's signature (``bad_signature``, ``unknown_key``) and that the RFC 6962 Merkle
  root recomputed from the entries at its size equals its hash (a checkpoint written by a
  format-1 journal, of at most ``chain_checkpoints_upto`` entries, signs the chain head
  instead); a checkpoint saved elsewhere that is larger than the journal proves ``truncated``;
* the seq of every entry, in file order: a gap is ``deleted``, a seq seen again is
  ``inserted``, a late seq is ``reordered``;
* each entry's digest against the ``.sums`` written with it, so a changed entry is named
  exactly (``modified``); an entry that is not JSON, or a corrupt compressed frame, too;
* that the checkpoints are all there: deleted checkpoint files, a latest checkpoint missing
  from ``checkpoints.log`` or a checkpoint held in memory missing from it are
  ``missing_checkpoint``; a later checkpoint smaller than an earlier one is ``rollback``; two
  validly signed checkpoints of one size with different hashes are ``split_view``; entries
  older than the grace (``anchor.unsigned_grace``) that no checkpoint covers are ``unsigned_tail``;
* pruned segments (keylife/journal/prune.py): their kept leaf hashes stand in for the entries in
  every root, and their range must be announced by a ``journal_pruned`` entry that a valid
  checkpoint covers (else ``deleted``) whose recorded root the kept leaves give (else ``modified``).

Which hash a checkpoint must carry is ``anchor.RootBuilder``'s answer (one place).

The signatures are what make tampering detectable; the digests only say where it happened.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import orjson

from keylife.journal import prune
from keylife.journal import segments as segs
from keylife.journal.anchor import RootBuilder, accepts, leaf_hashes, legacy_checkpoint_limit
from keylife.journal.note import Checkpoint
from keylife.journal.rotation import KeySchedule, Rotation
from keylife.journal.signing import Verifier
from keylife.journal.verify_claims import (
    EXTERNAL,
    HELD,
    WITNESSED,
    Claim,
    Fault,
    load_checkpoints,
    rollbacks,
    signed,
    split_views,
)
from keylife.journal.verify_entries import IndexCheck, batches, collect_rotations, cut_at, in_order
from keylife.journal.writer import genesis_hash

__all__ = ["Fault", "Report", "legacy_checkpoint_limit", "load_checkpoints", "verify"]

DEFAULT_GRACE = 3.0  # anchor.unsigned_grace(1.0): the default checkpoint interval + slack


@dataclass
class Report:
    entries: int = 0
    checkpoints: int = 0
    unsigned_tail: int = 0
    head: bytes = b""
    root: bytes = b""
    faults: list[Fault] = field(default_factory=list)
    covered: int = 0  # entries covered by the largest valid checkpoint within the journal
    anchored: int | None = None  # entries covered by a matching checkpoint given from outside
    anchored_by: str = ""
    rotations: list[Rotation] = field(default_factory=list)  # signing-key rotations followed
    witness_anchored: int | None = None  # entries covered by the matching witness-cosigned checkpoint
    pruned: list[prune.PrunedRange] = field(default_factory=list)  # bodies removed by a signed prune
    notes: list[str] = field(default_factory=list)  # not faults: what an auditor should know

    @property
    def ok(self) -> bool:
        return not self.faults


def verify(
    directory: Path,
    trusted: list[Verifier],
    external: Iterable[Checkpoint] = (),
    progress: Callable[[int], None] | None = None,
    *,
    held: Checkpoint | None = None,
    upto: int | None = None,
    grace: float | None = DEFAULT_GRACE,
    now: float | None = None,
    witnessed: Checkpoint | None = None,
) -> Report:
    """Verify a journal; every fault is named in the report.

    ``external`` are checkpoints obtained elsewhere (anchors when signed by a pinned key);
    ``held`` is the checkpoint a running writer signed last (it must be in ``checkpoints.log``);
    ``upto`` stops after that many entries (a live journal: the tail past the held checkpoint
    is still being written); ``grace`` seconds is how long an entry may stay uncovered by a
    checkpoint (``None``: not checked), measured against ``now`` and within the uncovered tail.
    ``witnessed`` is a checkpoint a quorum of witnesses cosigned (``keylife.witness.cosigned``): it
    must match the journal like any other, and anchors it when it does (``witness_anchored``).
    """
    directory = Path(directory)
    report = Report()
    meta = orjson.loads((directory / "journal.json").read_bytes())
    origin = meta["origin"]
    legacy_upto = legacy_checkpoint_limit(meta)
    claims, faults = load_checkpoints(directory)
    if held is not None:
        claims.append(Claim(HELD, held))
        logged = [c for c in claims if c.source.startswith("checkpoints.log")]
        if not any(c.checkpoint.render() == held.render() for c in logged):
            faults.append(
                Fault(
                    "missing_checkpoint",
                    None,
                    f"the checkpoint this writer signed at size {held.size} is not in checkpoints.log",
                )
            )
    claims += [Claim(EXTERNAL, cp) for cp in external]
    if witnessed is not None:
        claims.append(Claim(WITNESSED, witnessed))
    report.faults += faults
    # Which key may sign which size depends on the rotations in the entries, so signatures are
    # checked after the pass; the pass stops at every claimed size and keeps the root there.
    claimed: dict[int, list[Claim]] = {}
    for claim in claims:
        claimed.setdefault(claim.checkpoint.size, []).append(claim)
    roots: dict[int, tuple[bytes, bytes]] = {}  # size -> (Merkle root, chain head) there
    line_at: dict[int, bytes] = {}  # size -> the first entry a checkpoint of that size leaves out
    rotations: list[Rotation] = []
    before, report.faults = report.faults, []

    sha256 = hashlib.sha256
    chain = genesis_hash(origin)  # the chain head: the sealed .idx check and the shipper's per-entry hash
    last_line = b""
    count = 0
    expected = 0
    missing: set[int] = set()
    short_sums: set[int] = set()
    entry_sum = segs.entry_sum
    check: IndexCheck | None = None
    current: segs.SegmentFiles | None = None
    tree = RootBuilder()  # the RFC 6962 root checkpoints carry (anchor.py: the one place)
    sizes = sorted({*claimed, *([upto] if upto is not None else [])})
    stopped = False
    announced: list[bytes] = []
    pruned: list[tuple[int, int]] = []
    inside_pruned: set[int] = set()  # claimed sizes that end inside a pruned segment (no chain head there)
    for seg, sums, batch, marked, kept in batches(directory, report.faults, announced):
        if stopped:  # past ``upto``: only the rotations, which checkpoints logged meanwhile may follow
            if marked:
                collect_rotations(kept if kept is not None else batch, rotations, report.faults)
            continue
        if kept is not None:  # batch: the kept leaf hashes; the index carries the chain across
            if upto is not None and count >= upto:
                stopped = True
                continue
            if check is not None:
                check.finish(report.faults)
                check = None
            current = seg
            index = segs.read_index(seg)
            if index["first_seq"] != count or index["prev_hash"] != chain.hex():
                report.faults.append(
                    Fault("modified", count, f"index of pruned segment {seg.first_seq} does not follow seq {count}")
                )
            end_chain = bytes.fromhex(index["last_hash"])
            if marked:
                collect_rotations(kept, rotations, report.faults)
            for part in cut_at(batch, count, sizes):
                tree.extend(part)
                count += len(part)
                if count in claimed:
                    at_end = count == index["last_seq"] + 1
                    roots[count] = (tree.root(), end_chain if at_end else b"")
                    if not at_end:
                        inside_pruned.add(count)
            if seg.pruned:
                pruned.append((seg.first_seq, count - 1))
            expected, chain = count, end_chain
            continue
        batch_first = count
        for part in cut_at(batch, count, sizes):
            if upto is not None and count >= upto:
                if seg is current:
                    check = None  # this segment's index is checked once a later run reads it whole
                stopped = True
                if marked:
                    collect_rotations(batch[count - batch_first :], rotations, report.faults)
                break
            if seg is not current:
                current = seg
                if check is not None:
                    check.finish(report.faults)
                check = IndexCheck(seg, chain, part[0]) if seg.sealed else None
            for line in part:
                chain = sha256(chain + line).digest()
            tree.extend(leaf_hashes(part))
            if count in claimed or not count:
                line_at[count] = part[0]
            if marked:
                collect_rotations(part, rotations, report.faults)
            last_line = part[-1]
            first_position = count
            count += len(part)
            if check is not None:
                check.count += len(part)
                check.last_line, check.last_hash = part[-1], chain
            if count in claimed:
                roots[count] = (tree.root(), chain)
            if progress and count >> 16 != first_position >> 16:
                progress(count)
            if in_order(part, expected, seg.first_seq, sums):  # the common case, checked in bulk
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

    schedule, refused = KeySchedule.build(
        trusted, rotations, origin, [c.checkpoint for c in claims if c.checkpoint.origin == origin]
    )
    report.rotations = schedule.followed
    by_size, valid, signing = signed(claims, schedule, origin)
    signing += [Fault("bad_rotation", seq, f"signing-key rotation not followed: {why}") for seq, why in refused]
    report.faults = before + signing + rollbacks(valid) + split_views(by_size) + report.faults
    report.checkpoints = sum(len(v) for v in by_size.values())
    largest = max(by_size, default=0)
    first_uncovered = line_at.get(largest)
    mismatched = [
        (size, c)
        for size in sorted(by_size)
        if size in roots
        for c in by_size[size]
        if not accepts(c.checkpoint.hash, size, roots[size][0], roots[size][1], legacy_upto)
    ]
    unchecked = sorted({size for size, _c in mismatched if size in inside_pruned and size <= legacy_upto})
    mismatched = [(size, c) for size, c in mismatched if size not in unchecked]  # a format-1 chain head: gone
    if mismatched:
        size, claim = mismatched[0]
        more = f" (and {len(mismatched) - 1} later checkpoints)" if len(mismatched) > 1 else ""
        report.faults.append(
            Fault("modified", size - 1, f"the Merkle root up to seq {size - 1} does not match {claim.source}{more}")
        )
    for size, claims_at in sorted(by_size.items()):
        if upto is not None and count >= upto:
            break  # stopped on purpose: a checkpoint past ``upto`` is checked on a later run
        if size > count:
            claim = claims_at[0]
            report.faults.append(
                Fault("truncated", count, f"journal ends at {count} entries; {claim.source} covers {size}")
            )
    report.entries = count
    report.head = chain
    report.root = tree.root()
    covered = max((s for s in by_size if s <= count), default=0)
    report.covered = covered
    report.unsigned_tail = count - covered
    matched = {size for size, c in mismatched} | set(unchecked)
    if unchecked:
        report.notes.append(
            f"{len(unchecked)} format-1 checkpoints (sizes {unchecked[0]}..{unchecked[-1]}) sign a chain head inside "
            "a pruned segment, whose entries are gone: not checked (the Merkle checkpoints over the range are)"
        )
    for size, claims_at in by_size.items():
        for claim in claims_at:
            fits = claim.source == EXTERNAL and size <= count and size not in matched
            if fits and (report.anchored is None or size > report.anchored):
                report.anchored, report.anchored_by = size, claim.source
            if claim.source == WITNESSED and size <= count and size not in matched:
                report.witness_anchored = size
    if pruned or announced:
        _check_pruned(directory, report, pruned, announced)
    if grace is not None and report.unsigned_tail and first_uncovered is not None:
        report.faults += _unsigned_tail(report, first_uncovered, last_line, grace, time.time() if now is None else now)
    return report


def _observed(line: bytes) -> float | None:
    try:
        stamp = orjson.loads(line)["observed_at"]
        return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError):
        return None


def _unsigned_tail(report: Report, first: bytes, last: bytes, grace: float, now: float) -> list[Fault]:
    """Entries past the last checkpoint that a running writer would have signed by now.

    The writer signs at least every checkpoint interval while entries flow, so the uncovered
    tail never spans more than ``grace`` and is never older than ``grace`` while it runs. Older
    means deleted checkpoints, or a writer that stopped without its final checkpoint (a crash:
    the next start signs the tail; until then it is not covered, and this says so).
    """
    start, end = _observed(first), _observed(last)
    if start is None or end is None:
        return []
    age, span = now - start, end - start
    if age <= grace and span <= grace:
        return []
    none_at_all = report.covered == 0 and report.checkpoints == 0
    what = "no checkpoint file at all" if none_at_all else "no checkpoint"
    return [
        Fault(
            "missing_checkpoint" if none_at_all else "unsigned_tail",
            report.covered,
            f"{report.unsigned_tail} entries from seq {report.covered} are covered by {what}; the first was "
            f"observed {age:.0f} s ago and the tail spans {span:.1f} s, more than the {grace:.0f} s within which "
            "a running writer signs (deleted checkpoints, or a writer that stopped without signing)",
        )
    ]


def _check_pruned(directory: Path, report: Report, pruned: list[tuple[int, int]], announced: list[bytes]) -> None:
    """Pruned ranges are ``pruned`` when a signed announcement names them and their kept leaves give
    its recorded root; otherwise ``deleted`` (no announcement) or ``modified`` (other leaves)."""
    found = [a for a in (prune.Announcement.from_line(line) for line in announced) if a is not None]
    result = prune.check(directory / "segments", pruned, found, report.covered)
    report.pruned = result.pruned
    for first, last in result.unannounced:
        report.faults.append(
            Fault(
                "deleted",
                first,
                f"entries {first}..{last} were removed: only their index and leaf hashes are left, and no "
                "journal_pruned entry covered by a signed checkpoint announces them",
            )
        )
    for by, why in result.bad_leaves:
        report.faults.append(
            Fault("modified", by.first, f"entries {by.first}..{by.last} pruned at seq {by.seq}: {why}")
        )
    for by in result.unfinished:
        report.notes.append(
            f"the prune at seq {by.seq} (entries {by.first}..{by.last}) is not finished: some bodies are still "
            "there (interrupted; run keylife journal prune again to finish it)"
        )
