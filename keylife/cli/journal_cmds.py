"""``keylife journal prove | check-proof | consistency``: proofs over the journal's Merkle tree.

* ``prove --key-id K`` / ``--seq N``: a self-contained bundle (keylife/journal/proofs.py) of the
  entries, their inclusion proofs and the latest signed checkpoint.
* ``check-proof BUNDLE --key VERIFIER``: checks a bundle offline (no journal), one line per fault.
* ``consistency OLD NEW``: proves with the local journal's tree that checkpoint NEW extends OLD
  (RFC 9162 §2.1.4), or prints ``SPLIT VIEW`` with both checkpoints.

Exit codes: 0 proven, 1 a fault (a proof that fails, a split view), 2 could not run.
"""

from __future__ import annotations

import argparse
import base64
import sys
from pathlib import Path
from typing import Any

import orjson

from keylife.journal import merkle
from keylife.journal.note import Checkpoint, NoteError, parse
from keylife.journal.rotation import local_schedule
from keylife.journal.signing import Verifier


def register(jsub: Any) -> None:
    """Add the proof commands to ``keylife journal`` (``jsub`` adds the common options)."""
    p = jsub.add_parser("prove", help="write a proof bundle of a key's entries (or of seqs) for offline checking")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--key-id", help="every journal entry naming this key")
    what.add_argument("--seq", type=int, action="append", help="one entry by seq; repeatable")
    p.add_argument("--journal", type=Path, help="journal directory (default: from the config)")
    p.add_argument("--out", type=Path, help="bundle file (default: stdout)")
    p.set_defaults(func=cmd_prove)

    p = jsub.add_parser("check-proof", help="check a proof bundle offline against a verifier key")
    p.add_argument("bundle", type=Path, help="the bundle file written by keylife journal prove")
    p.add_argument("--key", required=True, action="append", help="trusted verifier key or a file holding one")
    p.set_defaults(func=cmd_check_proof)

    p = jsub.add_parser("consistency", help="prove that checkpoint NEW extends checkpoint OLD, or show a split view")
    p.add_argument("old", type=Path, help="the earlier checkpoint (signed note file)")
    p.add_argument("new", type=Path, help="the later checkpoint")
    p.add_argument("--key", action="append", default=[], help="trusted verifier key (default: the journal's)")
    p.add_argument("--journal", type=Path, help="journal directory (default: from the config)")
    p.set_defaults(func=cmd_consistency)

    from keylife.cli.prune_cmd import register as register_prune

    register_prune(jsub)  # prune (retention)


def _journal_dir(args: argparse.Namespace) -> Path:
    if args.journal is not None:
        return Path(args.journal)
    from keylife.cli.main import _config

    return _config(args).journal_dir


def _verifiers(keys: list[str]) -> list[Verifier]:
    out = []
    for item in keys:
        path = Path(item)
        out.append(Verifier.parse(path.read_text() if path.exists() else item))
    return out


def cmd_prove(args: argparse.Namespace) -> int:
    from keylife.journal.proofs import make_bundle

    directory = _journal_dir(args)
    latest = directory / "checkpoint"
    if not latest.exists():
        print(f"keylife: no checkpoint at {latest}: nothing is signed yet", file=sys.stderr)
        return 2
    try:
        bundle = make_bundle(directory, latest.read_text(), key_id=args.key_id, seqs=args.seq)
    except (ValueError, NoteError) as exc:
        print(f"keylife: {exc}", file=sys.stderr)
        return 2
    data = orjson.dumps(bundle, option=orjson.OPT_INDENT_2) + b"\n"
    if args.out:
        args.out.write_bytes(data)
    else:
        sys.stdout.buffer.write(data)
    size = parse(bundle["checkpoint"]).size
    print(f"{len(bundle['entries'])} entries proven against the checkpoint of size {size}", file=sys.stderr)
    for first, last in bundle.get("pruned", []):
        print(f"entries {first}..{last} were pruned: their bodies are gone and not in the bundle", file=sys.stderr)
    return 0


def cmd_check_proof(args: argparse.Namespace) -> int:
    from keylife.journal.proofs import check_bundle

    try:
        trusted = _verifiers(args.key)
        data = args.bundle.read_bytes()
    except (ValueError, OSError) as exc:
        print(f"keylife: {exc}", file=sys.stderr)
        return 2
    result = check_bundle(data, trusted)
    for fault in result.faults:
        print(f"FAULT {fault}")
    cp = result.checkpoint
    where = f"{cp.origin} at size {cp.size}" if cp else "an unreadable checkpoint"
    if result.ok:
        print(f"OK: {result.entries} entries are in the journal of {where}, under a checkpoint signed by the key")
        return 0
    print(f"FAILED: {len(result.faults)} fault(s); {result.entries} entries proven against {where}")
    return 1


def cmd_consistency(args: argparse.Namespace) -> int:
    from keylife.journal.tree import open_tree

    directory = _journal_dir(args)
    try:
        old, new = parse(args.old.read_text()), parse(args.new.read_text())
        trusted = _verifiers(args.key) or _verifiers([str(directory / "verifier.key")])
    except (ValueError, OSError, NoteError) as exc:
        print(f"keylife: {exc}", file=sys.stderr)
        return 2
    schedule = local_schedule(directory, new.origin, trusted, [old, new])  # follows signing-key rotations
    for name, cp in (("OLD", old), ("NEW", new)):
        problem = schedule.check(cp)
        if problem:
            print(f"FAULT {name} (size {cp.size}): {problem}")
            return 1
    if old.origin != new.origin:
        print(f"FAULT the checkpoints are of two logs: {old.origin!r} and {new.origin!r}")
        return 1
    if old.size > new.size:
        print(f"FAULT OLD covers {old.size} entries and NEW only {new.size}: give the earlier checkpoint first")
        return 1
    if old.size == new.size:
        if old.hash == new.hash:
            print(f"CONSISTENT: OLD and NEW are the same tree (size {new.size})")
            return 0
        return _split_view(old, new, "the same size with two different roots")
    try:
        tree, _ = open_tree(directory, new.size)
    except (ValueError, OSError) as exc:
        print(f"keylife: the local journal cannot prove size {new.size}: {exc}", file=sys.stderr)
        return 2
    if _format1_matches(directory, old):
        if tree.root() == new.hash:
            print(f"CONSISTENT: NEW (size {new.size}) extends OLD (size {old.size}), by the local journal")
            print("(OLD is a format-1 checkpoint: it signs the chain head, which the local entries reproduce)")
            return 0
        return _split_view(old, new, "the local journal holds OLD (a format-1 checkpoint) but not NEW")
    proof = tree.consistency(old.size, new.size) if old.size else []
    try:
        merkle.verify_consistency(old.size, new.size, old.hash, new.hash, proof)
    except merkle.ProofError as exc:
        local = {"OLD": tree.root(old.size) == old.hash if old.size else True, "NEW": tree.root() == new.hash}
        agree = [name for name, same in local.items() if same]
        return _split_view(old, new, f"{exc}; the local journal matches {', '.join(agree) or 'neither'}")
    print(f"CONSISTENT: NEW (size {new.size}) extends OLD (size {old.size})")
    print("proof (RFC 9162 §2.1.4, base64):")
    for node in proof:
        print(f"  {base64.b64encode(node).decode()}")
    return 0


def _format1_matches(directory: Path, cp: Checkpoint) -> bool:
    """True when ``cp`` is a format-1 checkpoint (signing the chain head) the local entries reproduce."""
    from keylife.journal.tail import chain_head
    from keylife.journal.verify import legacy_checkpoint_limit

    meta = orjson.loads((directory / "journal.json").read_bytes())
    return 0 < cp.size <= legacy_checkpoint_limit(meta) and chain_head(directory, cp.size) == cp.hash


def _split_view(old: Checkpoint, new: Checkpoint, why: str) -> int:
    print(f"SPLIT VIEW: {why}")
    print("--- OLD ---")
    sys.stdout.write(old.render())
    print("--- NEW ---")
    sys.stdout.write(new.render())
    return 1
