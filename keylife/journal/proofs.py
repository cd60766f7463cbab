"""Proofs over a journal's Merkle tree, for the API and the CLI, and the offline bundle check.

A proof bundle (``keylife journal prove``) is JSON, ``"format": "keylife-proof-bundle/1"``:

    {"format", "origin", "checkpoint": "<signed note>", "key_id": K | null,
     "entries": [{"seq": n, "entry": "<the entry's canonical JSON line>", "proof": ["<base64>", ...]}]}

Each ``proof`` is the RFC 9162 §2.1.3.1 inclusion path of leaf ``seq`` in the tree of the
checkpoint's size; ``check_bundle`` needs nothing but the bundle and the verifier key. On a pruned
journal the bundle also says ``"pruned": [[first, last], ...]``: entries there have no body to prove.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from keylife.journal import merkle
from keylife.journal import segments as segs
from keylife.journal.note import Checkpoint, NoteError, check_signatures, parse
from keylife.journal.prune import merge
from keylife.journal.signing import Verifier
from keylife.journal.tree import Tree, open_tree

BUNDLE_FORMAT = "keylife-proof-bundle/1"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def inclusion_answer(tree: Tree, seq: int, size: int) -> dict[str, Any]:
    """What the API answers for an inclusion proof of ``seq`` in the tree of ``size``."""
    proof = tree.inclusion(seq, size)
    leaf = tree.subtree(seq, seq + 1)
    return {"seq": seq, "size": size, "leaf_hash": b64(leaf), "root": b64(tree.root(size)), "proof": _b64s(proof)}


def consistency_answer(tree: Tree, old: int, new: int) -> dict[str, Any]:
    proof = tree.consistency(old, new)
    return {"from": old, "to": new, "proof": _b64s(proof)}


def _b64s(hashes: list[bytes]) -> list[str]:
    return [b64(h) for h in hashes]


def key_lines(directory: Path, key_id: str, below: int) -> Iterator[tuple[int, bytes]]:
    """(seq, line) of the entries with seq < ``below`` whose event names ``key_id``."""
    needle = b'"key_id":' + orjson.dumps(key_id)
    for seg in segs.list_segments(Path(directory) / "segments"):
        if seg.first_seq >= below:
            break
        for line in segs.segment_lines(seg):
            if needle in line:
                seq = segs.entry_seq(line)
                if seq < below and orjson.loads(line)["event"].get("key_id") == key_id:
                    yield seq, line


def make_bundle(
    directory: Path, checkpoint_note: str, *, key_id: str | None = None, seqs: list[int] | None = None
) -> dict[str, Any]:
    """A self-contained bundle of entries (those of ``key_id``, or ``seqs``) with inclusion proofs
    against the signed checkpoint ``checkpoint_note`` (its size bounds what can be proven)."""
    cp = parse(checkpoint_note)
    tree, _ = open_tree(directory, cp.size)
    if tree.root() != cp.hash:
        raise ValueError(
            f"the journal's Merkle root at size {cp.size} does not match the checkpoint: run keylife verify"
        )
    if key_id is not None:
        found = list(key_lines(directory, key_id, cp.size))
    else:
        wanted = sorted(set(seqs or []))
        if wanted and wanted[-1] >= cp.size:
            raise ValueError(f"seq {wanted[-1]} is not covered by the checkpoint (size {cp.size})")
        gone = next((why for why in map(tree.body_gone, wanted) if why), None)
        if gone:
            raise ValueError(gone)
        spans: dict[int, tuple[int, int]] = {}  # one read per 256-entry block touched, of the seqs wanted
        for s in wanted:
            lo, hi = spans.get(s >> 8, (s, s))
            spans[s >> 8] = (min(lo, s), max(hi, s))
        lines = {lo: tree.lines(lo, hi - lo + 1) for lo, hi in spans.values()}
        found = [(s, lines[spans[s >> 8][0]][s - spans[s >> 8][0]]) for s in wanted]
    entries = [{"seq": s, "entry": line.decode(), "proof": _b64s(tree.inclusion(s, cp.size))} for s, line in found]
    bundle = {
        "format": BUNDLE_FORMAT,
        "origin": cp.origin,
        "checkpoint": checkpoint_note,
        "key_id": key_id,
        "entries": entries,
    }
    if tree.pruned:  # a key's entries in a pruned range have no body left to put in the bundle
        bundle["pruned"] = [list(r) for r in merge([(lo, hi - 1) for lo, hi, _seg in tree.pruned])]
    return bundle


@dataclass
class BundleCheck:
    checkpoint: Checkpoint | None = None
    entries: int = 0
    faults: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.faults


def check_bundle(data: bytes, trusted: list[Verifier]) -> BundleCheck:
    """Check a bundle offline: the checkpoint's signature, then every entry's inclusion proof."""
    out = BundleCheck()
    try:
        bundle = orjson.loads(data)
        if bundle.get("format") != BUNDLE_FORMAT:
            raise ValueError(f"format is {bundle.get('format')!r}, not {BUNDLE_FORMAT!r}")
        cp = parse(bundle["checkpoint"])
    except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError, ValueError, NoteError) as exc:
        out.faults.append(f"bundle: not a keylife proof bundle ({exc})")
        return out
    out.checkpoint = cp
    problem = check_signatures(cp, trusted)
    if problem:
        out.faults.append(f"checkpoint (size {cp.size}): {problem} under the given key")
    if cp.origin != bundle.get("origin"):
        out.faults.append(f"checkpoint: origin {cp.origin!r} differs from the bundle's {bundle.get('origin')!r}")
    key_id = bundle.get("key_id")
    for position, item in enumerate(bundle.get("entries") or []):
        where = f"entry {position}"
        try:
            seq, line = int(item["seq"]), item["entry"].encode()
            where = f"entry seq {seq}"
            proof = [base64.b64decode(p, validate=True) for p in item["proof"]]
            value = orjson.loads(line)
            if value.get("seq") != seq:
                raise ValueError(f"the entry says seq {value.get('seq')!r}")
            if key_id is not None and value["event"].get("key_id") != key_id:
                raise ValueError(f"the entry names key {value['event'].get('key_id')!r}, not {key_id!r}")
            merkle.verify_inclusion(seq, cp.size, merkle.leaf_hash(line), proof, cp.hash)
        except (KeyError, TypeError, ValueError, AttributeError, binascii.Error, orjson.JSONDecodeError) as exc:
            out.faults.append(f"{where}: {exc}")
            continue
        out.entries += 1
    return out
