"""RFC 6962 / RFC 9162 §2.1 Merkle primitives against published vectors, and a property test.

Vectors: the RFC 6962 reference test data used by transparency-dev/merkle — the eight leaf inputs,
node and root hashes of ``testonly/constants.go`` (LeafInputs, NodeHashes, RootHashes) and the
inclusion and consistency proofs of ``proof/verify_test.go`` (inclusionProofs, consistencyProofs,
whose leaf numbers are 1-based there). The same values are Certificate Transparency's test data.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keylife.journal import merkle

LEAVES = [bytes.fromhex(h) for h in ("", "00", "10", "2021", "3031", "40414243", "5051525354555657",
                                      "606162636465666768696a6b6c6d6e6f")]  # fmt: skip
ROOTS = [
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]
LEAF_HASHES = [
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
    "0298d122906dcfc10892cb53a73992fc5b9f493ea4c9badb27b791b4127a7fe7",
    "07506a85fd9dd2f120eb694f86011e5bb4662e5c415a62917033d4a9624487e7",
    "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
    "4271a26be0d8a84f0bd54c8c302e7cb3a3b5d1fa6780a40bcce2873477dab658",
    "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
    "46f6ffadd3d06a09ff3c5860d2755c8b9819db7df44251788c7d8e3180de8eb1",
]
# (leaf number 1-based, tree size, proof) from proof/verify_test.go inclusionProofs
INCLUSION = [
    (1, 1, []),
    (1, 8, ["96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"]),
    (6, 8, ["bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"]),
    (3, 3, ["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"]),
    (2, 5, ["6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"]),
]  # fmt: skip
# (size1, size2, proof) from proof/verify_test.go consistencyProofs
CONSISTENCY = [
    (1, 1, []),
    (1, 8, ["96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"]),
    (6, 8, ["0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"]),
    (2, 5, ["5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"]),
    (6, 7, ["0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"]),
]  # fmt: skip

HASHES = [merkle.leaf_hash(d) for d in LEAVES]


def test_leaf_and_root_hashes_match_the_rfc6962_vectors() -> None:
    assert [h.hex() for h in HASHES] == LEAF_HASHES
    assert merkle.EMPTY_ROOT.hex() == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    assert [merkle.root_of(HASHES[:n]).hex() for n in range(1, 9)] == ROOTS


@pytest.mark.parametrize(("leaf", "size", "proof"), INCLUSION)
def test_inclusion_proofs_match_the_vectors_byte_for_byte(leaf: int, size: int, proof: list[str]) -> None:
    got = merkle.inclusion_path(leaf - 1, size, merkle.subtree_of(HASHES[:size]))
    assert [h.hex() for h in got] == proof
    merkle.verify_inclusion(leaf - 1, size, HASHES[leaf - 1], got, bytes.fromhex(ROOTS[size - 1]))


@pytest.mark.parametrize(("old", "new", "proof"), CONSISTENCY)
def test_consistency_proofs_match_the_vectors_byte_for_byte(old: int, new: int, proof: list[str]) -> None:
    got = merkle.consistency_proof(old, new, merkle.subtree_of(HASHES[:new]))
    assert [h.hex() for h in got] == proof
    merkle.verify_consistency(old, new, bytes.fromhex(ROOTS[old - 1]), bytes.fromhex(ROOTS[new - 1]), got)


def test_verifiers_refuse_the_corruptions_of_the_reference_suite() -> None:
    root8, root6 = bytes.fromhex(ROOTS[7]), bytes.fromhex(ROOTS[5])
    proof = merkle.inclusion_path(5, 8, merkle.subtree_of(HASHES))
    for index, size, leaf, path, root in [
        (4, 8, HASHES[5], proof, root8),  # wrong index
        (5, 16, HASHES[5], proof, root8),  # wrong size
        (5, 8, HASHES[4], proof, root8),  # wrong leaf
        (5, 8, HASHES[5], proof, merkle.EMPTY_ROOT),  # wrong root
        (5, 8, HASHES[5], [*proof, root8], root8),  # trailing garbage
        (5, 8, HASHES[5], proof[:-1], root8),  # removed component
    ]:
        with pytest.raises(merkle.ProofError):
            merkle.verify_inclusion(index, size, leaf, path, root)
    cons = merkle.consistency_proof(6, 8, merkle.subtree_of(HASHES))
    for old, new, r1, r2, path in [
        (6, 8, root8, root6, cons),  # swapped roots
        (5, 8, root6, root8, cons),  # wrong size1
        (6, 8, root6, root8, []),  # empty proof
        (6, 8, root6, root8, [cons[0], *cons]),  # preceding proof[0]
        (6, 6, root6, root8, []),  # same size, different roots: a split view
    ]:
        with pytest.raises(merkle.ProofError):
            merkle.verify_consistency(old, new, r1, r2, path)


def _flip(data: bytes, at: int) -> bytes:
    at %= len(data)
    return data[:at] + bytes([data[at] ^ 1]) + data[at + 1 :]


@settings(max_examples=150, deadline=None)
@given(
    entries=st.lists(st.binary(max_size=12), min_size=1, max_size=70, unique=True),
    picks=st.tuples(st.integers(0, 10**6), st.integers(0, 10**6), st.integers(0, 10**6)),
    what=st.sampled_from(["proof", "leaf", "root", "index", "size"]),
)
def test_random_logs_every_proof_verifies_and_any_changed_byte_fails(
    entries: list[bytes], picks: tuple[int, int, int], what: str
) -> None:
    """Hypothesis: for random logs, inclusion and consistency proofs verify against roots computed
    by the RFC recursion, and one changed byte (proof, leaf, root) or size makes them fail."""
    hashes = [merkle.leaf_hash(e) for e in entries]
    sub = merkle.subtree_of(hashes)
    n = len(hashes)
    size = picks[0] % n + 1
    index = picks[1] % size
    old = picks[2] % size + 1
    root, old_root = merkle.root_of(hashes[:size]), merkle.root_of(hashes[:old])
    assert root == _rfc_mth(hashes[:size])
    path = merkle.inclusion_path(index, size, sub)
    merkle.verify_inclusion(index, size, hashes[index], path, root)
    cons = merkle.consistency_proof(old, size, sub)
    merkle.verify_consistency(old, size, old_root, root, cons)

    leaf, r, i, s, ipath, cpath = hashes[index], root, index, size, list(path), list(cons)
    if what == "proof" and path:
        ipath[picks[0] % len(ipath)] = _flip(ipath[picks[0] % len(ipath)], picks[1])
    elif what == "leaf":
        leaf = _flip(leaf, picks[1])
    elif what == "root":
        r = _flip(r, picks[1])
    elif what == "index" and size > 1:
        i = (index + 1 + picks[2] % (size - 1)) % size
        assume_different = hashes[i] != hashes[index]
        if not assume_different:
            return
    else:
        s = size * 2  # as the reference suite does: the checkpoint, not the proof, binds the size
    with pytest.raises(merkle.ProofError):
        merkle.verify_inclusion(i, s, leaf, ipath, r)
    if old < size and cons:
        if what == "proof":
            cpath[picks[1] % len(cpath)] = _flip(cpath[picks[1] % len(cpath)], picks[2])
            with pytest.raises(merkle.ProofError):
                merkle.verify_consistency(old, size, old_root, root, cpath)
        with pytest.raises(merkle.ProofError):
            merkle.verify_consistency(old, size, _flip(old_root, picks[0]), root, cons)
        with pytest.raises(merkle.ProofError):
            merkle.verify_consistency(old, size, old_root, _flip(root, picks[0]), cons)
        with pytest.raises(merkle.ProofError):
            merkle.verify_consistency(old, size * 2, old_root, root, cons)


def _rfc_mth(hashes: list[bytes]) -> bytes:
    """The §2.1.1 recursion itself, to check the bottom-up ``root_of``."""
    if len(hashes) == 1:
        return hashes[0]
    k = merkle.split_point(len(hashes))
    return merkle.node_hash(_rfc_mth(hashes[:k]), _rfc_mth(hashes[k:]))
