"""What a checkpoint at size N must carry, and how far a journal is anchored.

One place answers "which hash must the checkpoint over the first N entries hold": the offline
verifier, start-up and the periodic check all go through ``accepts`` with the roots computed
here (``RootBuilder``, ``expected_root``, ``root_at``). The hash is the RFC 6962 Merkle tree hash
of the entries (RFC 9162 section 2.1.1; leaf ``SHA-256(0x00 || line)``); a checkpoint written
by a format-1 journal, of at most ``chain_checkpoints_upto`` entries (``legacy_checkpoint_limit``),
carries the chain head ``h[N-1]`` instead (docs/journal.md, *Formats*).

A *trusted anchor* is something the journal's host alone cannot forge: a checkpoint obtained
elsewhere (a SIEM's copy, a published file) that a pinned verifier key signed, or a checkpoint
that k of n given witnesses cosigned (C2SP tlog-cosignature, ``keylife.journal.cosignature``;
found by ``keylife verify --witness``, checked by ``verify(witnessed=...)``). Everything the
host holds (segments, ``.sums``, ``checkpoints.log``, ``verifier.key``, the cosignature files and
the signing key itself) can be rewritten together by someone with disk access.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import orjson

from keylife.journal import segments as segs
from keylife.journal.note import Checkpoint
from keylife.journal.prune import unannounced_at_start
from keylife.journal.tree import RootBuilder, root_from_entries
from keylife.journal.writer import genesis_hash

__all__ = [
    "Anchor",
    "RootBuilder",
    "RootUnavailable",
    "accepts",
    "checkpoint_matches",
    "expected_root",
    "leaf_hashes",
    "legacy_checkpoint_limit",
    "root_at",
    "unsigned_grace",
]

UNSIGNED_SLACK = 2.0  # seconds: a running writer signs every entry within checkpoint_interval + this


def unsigned_grace(checkpoint_interval: float) -> float:
    """How long an entry may stay uncovered by a checkpoint: the writer signs at least every
    ``checkpoint_interval`` seconds while entries flow (``Journal.tick`` runs about every 0.25 s),
    plus slack for a slow fsync. An entry older than this without a checkpoint is a fault."""
    return checkpoint_interval + UNSIGNED_SLACK


def legacy_checkpoint_limit(meta: dict) -> float:
    """Checkpoints of at most this size may sign the chain head (written by a format-1 journal)."""
    if meta.get("format", 1) == 1:
        return float("inf")
    return meta.get("chain_checkpoints_upto", -1)


def accepts(cp_hash: bytes, size: int, root: bytes, chain_head: bytes, legacy_upto: float) -> bool:
    """Whether a checkpoint at ``size`` carrying ``cp_hash`` matches entries whose Merkle root is
    ``root`` and whose chain head is ``chain_head``: the root, or (format 1) the chain head."""
    return cp_hash == root or (size <= legacy_upto and cp_hash == chain_head)


def leaf_hashes(lines: Iterable[bytes]) -> list[bytes]:
    """RFC 9162 section 2.1.1 leaf hashes ``SHA-256(0x00 || line)`` (the bulk path)."""
    sha256 = hashlib.sha256
    return [sha256(b"\x00" + line).digest() for line in lines]


def expected_root(lines: Iterable[bytes]) -> bytes:
    """The Merkle root a checkpoint over exactly ``lines`` (entries 0..N-1, canonical bytes) carries."""
    builder = RootBuilder()
    builder.extend(leaf_hashes(lines))
    return builder.root()


class RootUnavailable(ValueError):
    """The journal cannot produce the root at that size (too short, or its files disagree)."""


def root_at(directory: Path, size: int) -> bytes:
    """The Merkle root over the first ``size`` entries, for start-up: recomputed from the entries,
    trusting no tile (tiles left intact over rewritten entries would give the old root).

    Cost: every entry up to ``size`` is read (sealed frames decompressed) and leaf-hashed, about
    1.3 s per million entries (docs/journal.md, *Start-up check*). Pruned segments give their kept
    leaf hashes, and must lie in a range a prune entry within ``size`` announced (else they were
    deleted, not pruned).
    """
    announcements: list[bytes] = []
    try:
        root = root_from_entries(Path(directory), size, announcements)
    except ValueError as exc:
        raise RootUnavailable(str(exc)) from exc
    problem = unannounced_at_start(Path(directory), size, announcements)
    if problem:
        raise RootUnavailable(problem)
    return root


def chain_head_at(directory: Path, origin: str, size: int) -> bytes:
    """The chain head after ``size`` entries (a format-1 checkpoint's hash), for start-up.

    Sealed segments wholly below ``size`` are taken from their ``.idx`` (``last_hash``), after
    checking that each index follows the previous one (``first_seq``, ``prev_hash``); only the
    segment holding entry ``size - 1`` is read and re-hashed up to ``size``.
    """
    head, done = genesis_hash(origin), 0
    if size == 0:
        return head
    for seg in segs.list_segments(Path(directory) / "segments"):
        if seg.first_seq != done:
            raise RootUnavailable(f"segment {seg.first_seq} does not follow seq {done}")
        if seg.sealed or seg.pruned:
            index = segs.read_index(seg)
            if index["first_seq"] != done or bytes.fromhex(index["prev_hash"]) != head:
                raise RootUnavailable(f"the index of sealed segment {seg.first_seq} does not follow seq {done}")
            if index["last_seq"] + 1 <= size:
                head, done = bytes.fromhex(index["last_hash"]), index["last_seq"] + 1
                if done == size:
                    return head
                continue
        for line in segs.segment_lines(seg):
            head = hashlib.sha256(head + line).digest()
            done += 1
            if done == size:
                return head
    raise RootUnavailable(f"the journal holds {done} entries, fewer than {size}")


def checkpoint_matches(directory: Path, origin: str, cp: Checkpoint) -> bool:
    """Whether the journal at ``directory`` holds the history ``cp`` signed (start-up's check)."""
    meta = orjson.loads((Path(directory) / "journal.json").read_bytes())
    if cp.size <= legacy_checkpoint_limit(meta) and chain_head_at(directory, origin, cp.size) == cp.hash:
        return True
    return root_at(directory, cp.size) == cp.hash


@dataclass(frozen=True)
class Anchor:
    """A checkpoint the verifier trusts because it did not come from the journal's host.

    ``kind`` is ``checkpoint`` (given with ``--checkpoint`` and signed by a pinned ``--key``) or
    ``witness`` (cosigned by ``--witness-quorum`` of the ``--witness`` keys, C2SP
    tlog-cosignature; found beside the journal or given with ``--checkpoint``).
    """

    kind: str
    source: str
    checkpoint: Checkpoint
