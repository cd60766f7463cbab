"""What a checkpoint at size N must carry, and how far a journal is anchored.

One place answers "which hash must the checkpoint over the first N entries hold": the offline
verifier, start-up and the periodic check all go through ``RootBuilder`` / ``expected_root`` /
``root_at``. Today that hash is the chain head ``h[N-1]`` (the genesis hash for N = 0, see
docs/journal.md); a switch to an RFC 6962 Merkle tree hash (RFC 6962 section 2.1, RFC 9162
section 2.1.1) changes only this module.

A *trusted anchor* is something the journal's host alone cannot forge: a checkpoint obtained
elsewhere (a SIEM's copy, a published file) that a pinned verifier key signed, or witness
cosignatures (C2SP tlog-witness; ``Anchor.kind == "witness"`` is the extension point, not built
yet). Everything the host holds (segments, ``.sums``, ``checkpoints.log``, ``verifier.key`` and
the signing key itself) can be rewritten together by someone with disk access.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from keylife.journal import segments as segs
from keylife.journal.note import Checkpoint
from keylife.journal.writer import genesis_hash

UNSIGNED_SLACK = 2.0  # seconds: a running writer signs every entry within checkpoint_interval + this


def unsigned_grace(checkpoint_interval: float) -> float:
    """How long an entry may stay uncovered by a checkpoint: the writer signs at least every
    ``checkpoint_interval`` seconds while entries flow (``Journal.tick`` runs about every 0.25 s),
    plus slack for a slow fsync. An entry older than this without a checkpoint is a fault."""
    return checkpoint_interval + UNSIGNED_SLACK


class RootBuilder:
    """The expected checkpoint hash, entry by entry (one pass, constant memory)."""

    __slots__ = ("head", "size")

    def __init__(self, origin: str, head: bytes | None = None, size: int = 0) -> None:
        self.head = genesis_hash(origin) if head is None else head
        self.size = size

    def add(self, line: bytes) -> None:
        self.head = hashlib.sha256(self.head + line).digest()
        self.size += 1

    def root(self) -> bytes:
        """The hash a checkpoint over the entries added so far must carry."""
        return self.head


def expected_root(origin: str, lines: Iterable[bytes]) -> bytes:
    """The hash the checkpoint over exactly ``lines`` (entries 0..N-1, canonical bytes) must carry."""
    builder = RootBuilder(origin)
    for line in lines:
        builder.add(line)
    return builder.root()


class RootUnavailable(ValueError):
    """The journal cannot produce the root at that size (too short, or its files disagree)."""


def root_at(directory: Path, origin: str, size: int) -> bytes:
    """The hash a checkpoint at ``size`` must carry, for start-up: cheap, not a full verification.

    Sealed segments wholly below ``size`` are taken from their ``.idx`` (``last_hash``), after
    checking that each index follows the previous one (``first_seq``, ``prev_hash``); only the
    segment holding entry ``size - 1`` is read and re-hashed up to ``size``. Cost: one small JSON
    read per sealed segment, plus at most one segment read and hashed (usually the open one).
    A sealed segment rewritten together with its ``.idx`` is not seen here; the full
    verification (``keylife verify``, the periodic check) recomputes everything.
    """
    builder = RootBuilder(origin)
    if size == 0:
        return builder.root()
    for seg in segs.list_segments(Path(directory) / "segments"):
        if seg.first_seq != builder.size:
            raise RootUnavailable(f"segment {seg.first_seq} does not follow seq {builder.size}")
        if seg.sealed:
            index = segs.read_index(seg)
            if index["first_seq"] != builder.size or bytes.fromhex(index["prev_hash"]) != builder.head:
                raise RootUnavailable(f"the index of sealed segment {seg.first_seq} does not follow seq {builder.size}")
            if index["last_seq"] + 1 <= size:
                builder = RootBuilder(origin, bytes.fromhex(index["last_hash"]), index["last_seq"] + 1)
                if builder.size == size:
                    return builder.root()
                continue
        for line in segs.segment_lines(seg):
            builder.add(line)
            if builder.size == size:
                return builder.root()
    raise RootUnavailable(f"the journal holds {builder.size} entries, fewer than {size}")


@dataclass(frozen=True)
class Anchor:
    """A checkpoint the verifier trusts because it did not come from the journal's host.

    ``kind`` is ``checkpoint`` (given with ``--checkpoint`` and signed by a pinned ``--key``);
    ``witness`` is reserved for k-of-n witness cosignatures (C2SP tlog-cosignature), which
    anchor a checkpoint found beside the journal.
    """

    kind: str
    source: str
    checkpoint: Checkpoint
