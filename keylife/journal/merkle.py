"""RFC 6962 / RFC 9162 Merkle tree primitives: hashes, proofs and their verification.

Everything here is pure (no files): proof *generation* runs over ``subtree(lo, hi)``, a function
giving MTH(D[lo:hi]) for the aligned ranges the RFC 9162 §2.1.3.1 / §2.1.4.1 recursions ask
for, so a caller can answer from stored tiles instead of holding every leaf. *Verification*
(RFC 9162 §2.1.3.2 and §2.1.4.2) needs only the proof, the sizes and the hashes, which is what
an auditor runs offline.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()  # MTH({}) = SHA-256() (RFC 9162 §2.1.1)

SubtreeHash = Callable[[int, int], bytes]


class ProofError(ValueError):
    """A proof that does not verify; the message says which check failed."""


def leaf_hash(data: bytes) -> bytes:
    """MTH({d}) = SHA-256(0x00 || d) (RFC 9162 §2.1.1)."""
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """SHA-256(0x01 || left || right): an interior node (RFC 9162 §2.1.1)."""
    return hashlib.sha256(b"\x01" + left + right).digest()


def split_point(n: int) -> int:
    """k, the largest power of two smaller than n (n > 1) (RFC 9162 §2.1.1)."""
    return 1 << ((n - 1).bit_length() - 1)


def root_of(leaves: Sequence[bytes]) -> bytes:
    """MTH of a list of leaf hashes, bottom-up (equal to the §2.1.1 recursion: an odd last node is
    carried up unchanged, which is what splitting at the largest power of two yields)."""
    if not leaves:
        return EMPTY_ROOT
    level = list(leaves)
    sha256 = hashlib.sha256
    while len(level) > 1:
        nxt = [sha256(b"\x01" + level[i] + level[i + 1]).digest() for i in range(0, len(level) - 1, 2)]
        if len(level) & 1:
            nxt.append(level[-1])
        level = nxt
    return level[0]


def fold_right(hashes: Sequence[bytes]) -> bytes:
    """Root of a tree given the hashes of its perfect subtrees from left to right (sizes
    decreasing, as the binary decomposition of its size): node(s0, node(s1, ... s_k))."""
    acc = hashes[-1]
    for h in reversed(hashes[:-1]):
        acc = node_hash(h, acc)
    return acc


def inclusion_path(index: int, size: int, subtree: SubtreeHash) -> list[bytes]:
    """PATH(m, D[size]) of RFC 9162 §2.1.3.1, leaf-side first."""
    if not 0 <= index < size:
        raise ValueError(f"leaf {index} is not in a tree of size {size}")
    path: list[bytes] = []
    lo, hi = 0, size
    while hi - lo > 1:
        k = split_point(hi - lo)
        if index < lo + k:
            path.append(subtree(lo + k, hi))
            hi = lo + k
        else:
            path.append(subtree(lo, lo + k))
            lo += k
    path.reverse()
    return path


def consistency_proof(old: int, new: int, subtree: SubtreeHash) -> list[bytes]:
    """PROOF(m, D[n]) of RFC 9162 §2.1.4.1 (SUBPROOF with b = true), empty when m is 0 or n."""
    if not 0 <= old <= new:
        raise ValueError(f"no consistency proof from size {old} to {new}")
    if old in (0, new):
        return []
    out: list[bytes] = []
    lo, hi, m, whole = 0, new, old, True  # SUBPROOF(m, D[lo:hi], whole)
    while True:
        n = hi - lo
        if m == n:
            if not whole:
                out.append(subtree(lo, hi))
            break
        k = split_point(n)
        if m <= k:
            out.append(subtree(lo + k, hi))
            hi = lo + k
        else:
            out.append(subtree(lo, lo + k))
            lo, m, whole = lo + k, m - k, False
    out.reverse()
    return out


def root_from_inclusion(index: int, size: int, leaf: bytes, proof: Sequence[bytes]) -> bytes:
    """The root a valid inclusion proof leads to: RFC 9162 §2.1.3.2 steps 1-5 (raises ProofError)."""
    if not 0 <= index < size:
        raise ProofError(f"leaf index {index} is outside a tree of size {size}")
    _check_lengths(proof, leaf)
    fn, sn = index, size - 1
    r = leaf
    for p in proof:
        if sn == 0:
            raise ProofError("the proof is longer than the path to the root")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while fn & 1 == 0 and fn:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("the proof is shorter than the path to the root")
    return r


def verify_inclusion(index: int, size: int, leaf: bytes, proof: Sequence[bytes], root: bytes) -> None:
    """Raise ProofError unless ``leaf`` is at ``index`` in the tree of ``size`` with ``root``."""
    if len(root) != HASH_SIZE:
        raise ProofError("the root is not a SHA-256 hash")
    if root_from_inclusion(index, size, leaf, proof) != root:
        raise ProofError(f"the inclusion proof of leaf {index} does not lead to the root of size {size}")


def verify_consistency(old: int, new: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]) -> None:
    """RFC 9162 §2.1.4.2: raise ProofError unless the tree (new, new_root) extends (old, old_root)."""
    _check_lengths(proof, old_root, new_root)
    if old > new:
        raise ProofError(f"size {old} is larger than {new}: a log never shrinks")
    if old == new:
        if proof:
            raise ProofError("equal sizes need an empty proof")
        if old_root != new_root:
            raise ProofError(f"two different roots for the same size {old}")
        return
    if old == 0:
        if proof:
            raise ProofError("a proof from the empty tree must be empty")
        return
    if not proof:
        raise ProofError("the consistency proof is empty")
    path = list(proof)
    if old & (old - 1) == 0:  # step 2: old is a power of two, its root is the first node
        path.insert(0, old_root)
    fn, sn = old - 1, new - 1
    while fn & 1:  # step 4
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise ProofError("the consistency proof is too long")
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while fn & 1 == 0 and fn:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("the consistency proof is too short")
    if fr != old_root:
        raise ProofError(f"the proof does not lead to the root of size {old}")
    if sr != new_root:
        raise ProofError(f"the proof does not lead to the root of size {new}")


def _check_lengths(proof: Sequence[bytes], *hashes: bytes) -> None:
    if any(len(h) != HASH_SIZE for h in (*proof, *hashes)):
        raise ProofError("a hash in the proof is not 32 bytes")


def subtree_of(leaves: Sequence[bytes]) -> SubtreeHash:
    """``subtree`` over an in-memory list of leaf hashes (tests, small bundles)."""
    return lambda lo, hi: root_of(leaves[lo:hi])
