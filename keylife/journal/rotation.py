"""Signing-key rotations journaled in the log, and which key may sign a checkpoint of which size.

A rotation is a journal entry of type ``signing_key_rotated`` (docs/journal.md, *Rotating the
signing key*) whose ``attributes`` hold the retiring verifier key, its successor and the retiring
key's Ed25519 signature over ``rotation_message``. The retiring key vouches for its successor
inside the history it signed, so an auditor who pinned the first key follows every rotation
without being handed a new key out of band.

Keys have terms. With rotations at seqs r1 < r2 < ... of keys K0 -> K1 -> K2, a checkpoint of
size N may be signed by K0 when N <= r1 + 1, by K1 when r1 + 1 <= N <= r2 + 1, and so on: the
checkpoint of size r + 1 (the one ending with the rotation entry) carries both signatures
(C2SP signed-note allows several). A checkpoint past a key's term signed only by that key is
``retired_key``: a stolen old key cannot extend the history.
"""

from __future__ import annotations

import base64
import binascii
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from keylife.journal import segments as segs
from keylife.journal.note import Checkpoint
from keylife.journal.signing import Signer, Verifier
from keylife.journal.tree import read_lines

EVENT_TYPE = "signing_key_rotated"
MARKER = segs.ROTATION_MARK  # in an entry's canonical bytes; a cheap first filter
DOMAIN = b"keylife journal key rotation v1\n"
OLD_KEY, NEW_KEY, SIGNATURE = "old_verifier_key", "new_verifier_key", "rotation_signature"
RETIRED = "retired key"  # prefix of KeySchedule.check's answer for a key past its term
HINTS = "key-rotations.json"  # beside the journal: where start-up finds the rotations (a hint only)


class RotationError(ValueError):
    """A rotation entry that is not well formed; ``seq`` names it."""

    def __init__(self, seq: int, detail: str) -> None:
        super().__init__(f"seq {seq}: {detail}")
        self.seq, self.detail = seq, detail


def rotation_message(origin: str, seq: int, old: Verifier, new: Verifier) -> bytes:
    """The exact bytes the retiring key signs (UTF-8, each line ending in a newline):

        keylife journal key rotation v1
        <origin>
        <seq of the rotation entry, decimal>
        <old verifier key>
        <new verifier key>

    The first line separates this signature from checkpoint signatures by the same key (a
    checkpoint body starts with the origin); the seq makes each signature usable at one
    position of one log only.
    """
    return DOMAIN + f"{origin}\n{seq}\n{old.encode()}\n{new.encode()}\n".encode()


def short(key: Verifier) -> str:
    """How messages name a key: ``name+keyid`` (public, and enough to tell keys apart)."""
    return f"{key.name}+{key.key_id.hex()}"


@dataclass(frozen=True)
class Rotation:
    seq: int
    old: Verifier
    new: Verifier
    signature: bytes

    def signed(self, origin: str) -> bool:
        return self.old.verify(self.signature, rotation_message(origin, self.seq, self.old, self.new))

    def describe(self) -> str:
        return f"seq {self.seq}: {short(self.old)} -> {short(self.new)}"


def rotation_event(origin: str, seq: int, old: Signer, new: Verifier, now: float | None = None) -> dict[str, Any]:
    """The event of the rotation entry at ``seq``: a valid keylife ``Event`` (a keyless system
    type producers may not send), so the registry, the sinks and their formats take it as is."""
    at = datetime.now(UTC) if now is None else datetime.fromtimestamp(now, UTC)
    signature = old.sign(rotation_message(origin, seq, old.verifier, new))
    return {
        "id": f"keylife-{uuid.uuid4().hex}",
        "type": EVENT_TYPE,
        "occurred_at": at.isoformat().replace("+00:00", "Z"),
        "actor": "keylife",
        "reason": "journal signing key rotated",
        "attributes": {
            OLD_KEY: old.verifier.encode(),
            NEW_KEY: new.encode(),
            SIGNATURE: base64.b64encode(signature).decode(),
        },
    }


def parse_line(line: bytes) -> Rotation | None:
    """The rotation an entry line holds, None if it holds none; RotationError if it is malformed."""
    if MARKER not in line:
        return None
    try:
        entry = orjson.loads(line)
        event, seq = entry["event"], entry["seq"]
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return None  # not an entry: the verifier names it as such
    if not isinstance(event, dict) or event.get("type") != EVENT_TYPE or not isinstance(seq, int):
        return None
    return from_event(seq, event)


def from_event(seq: int, event: dict[str, Any]) -> Rotation:
    attrs = event.get("attributes")
    if not isinstance(attrs, dict) or not all(isinstance(attrs.get(k), str) for k in (OLD_KEY, NEW_KEY, SIGNATURE)):
        raise RotationError(seq, f"a {EVENT_TYPE} entry needs attributes {OLD_KEY}, {NEW_KEY} and {SIGNATURE}")
    try:
        old, new = Verifier.parse(attrs[OLD_KEY]), Verifier.parse(attrs[NEW_KEY])
        signature = base64.b64decode(attrs[SIGNATURE], validate=True)
    except (ValueError, binascii.Error) as exc:
        raise RotationError(seq, f"rotation entry: {exc}") from None
    return Rotation(seq, old, new, signature)


@dataclass(frozen=True)
class Term:
    """A key and the checkpoint sizes it may sign: ``first <= size <= last``."""

    key: Verifier
    first: int
    last: float
    retired_by: Rotation | None

    def covers(self, size: int) -> bool:
        return self.first <= size <= self.last


class KeySchedule:
    """Which keys may sign a checkpoint of a given size: the terms of the rotated keys, plus the
    trusted keys no rotation names (trusted at every size, as without rotations)."""

    def __init__(self, trusted: list[Verifier], terms: list[Term] = (), followed: list[Rotation] = ()) -> None:
        self.terms = list(terms)
        named = {term.key for term in self.terms}
        self.free = [key for key in trusted if key not in named]
        self.followed = list(followed)  # the rotations whose successor this schedule trusts

    @classmethod
    def build(
        cls, trusted: list[Verifier], rotations: list[Rotation], origin: str, checkpoints: list[Checkpoint] = ()
    ) -> tuple[KeySchedule, list[tuple[int, str]]]:
        """The schedule the ``trusted`` (pinned) keys lead to, and the rotations refused (seq, why).

        A rotation is followed when its signature verifies under the key it retires and that key
        is the journal's key at that point (the previous rotation's successor). The chain is
        trusted from the first pinned key in it onwards; the terms before that key only when it
        signed one of ``checkpoints`` (a checkpoint it signs covers the rotation that named it,
        so it vouches for its predecessors and their terms).
        """
        chain: list[Rotation] = []
        refused: list[tuple[int, str]] = []
        for rot in rotations:
            if not rot.signed(origin):
                refused.append((rot.seq, f"the rotation's signature does not verify under {short(rot.old)}"))
            elif chain and rot.old != chain[-1].new:
                refused.append(
                    (rot.seq, f"rotates away from {short(rot.old)}, but the journal's key is {short(chain[-1].new)}")
                )
            elif rot.new == rot.old or any(rot.new in (r.old, r.new) for r in chain):
                refused.append((rot.seq, f"rotates to {short(rot.new)}, a key this journal used before"))
            else:
                chain.append(rot)
        if not chain:
            return cls(trusted), refused
        keys = [chain[0].old, *(rot.new for rot in chain)]
        bounds = [0, *(rot.seq + 1 for rot in chain)]
        terms = [
            Term(
                key, bounds[i], bounds[i + 1] if i < len(chain) else float("inf"), chain[i] if i < len(chain) else None
            )
            for i, key in enumerate(keys)
        ]
        anchor = next((i for i, key in enumerate(keys) if key in trusted), None)
        if anchor is None:
            refused.append((chain[0].seq, f"the rotation is signed by {short(chain[0].old)}, a key not trusted here"))
            return cls(trusted), refused
        if anchor and any(_signed_by(cp, terms[anchor]) for cp in checkpoints):
            anchor = 0
        return cls(trusted, terms[anchor:], chain[anchor:]), refused

    @property
    def current(self) -> Verifier | None:
        """The key the journal signs with after the last followed rotation."""
        return self.terms[-1].key if self.terms else None

    def check(self, cp: Checkpoint) -> str | None:
        """None when a key may sign ``cp`` at its size and did; else why not, in the words of
        ``note.check_signatures`` ('unknown signing key', 'bad signature') or starting with RETIRED.

        As in C2SP signed-note, a signature by a known key that does not verify rejects the note.
        """
        text = cp.text.encode()
        allowed = {(k.name, k.key_id): k for k in self.free}
        allowed |= {(t.key.name, t.key.key_id): t.key for t in self.terms if t.covers(cp.size)}
        others = {(t.key.name, t.key.key_id): t for t in self.terms if not t.covers(cp.size)}
        ok, outside = False, None
        for sig in cp.signatures:
            slot = (sig.name, sig.key_id)
            if slot in allowed:
                if not allowed[slot].verify(sig.signature, text):
                    return "bad signature"
                ok = True
            elif slot in others:
                if not others[slot].key.verify(sig.signature, text):
                    return "bad signature"
                outside = others[slot]
        if ok:
            return None
        if outside is not None and outside.retired_by is not None and cp.size > outside.last:
            rot = outside.retired_by
            return (
                f"{RETIRED}: signed only by {short(outside.key)}, retired by the rotation at seq {rot.seq}; "
                f"checkpoints past size {rot.seq + 1} must be signed by {short(rot.new)}"
            )
        if outside is not None:
            return f"unknown signing key: {short(outside.key)} signs only from size {outside.first}"
        return "unknown signing key"


def _signed_by(cp: Checkpoint, term: Term) -> bool:
    key = term.key
    return term.covers(cp.size) and any(
        sig.name == key.name and sig.key_id == key.key_id and key.verify(sig.signature, cp.text.encode())
        for sig in cp.signatures
    )


# ----- the hints start-up reads (key-rotations.json): never trusted without the entry itself ----
def read_hints(directory: Path) -> list[int]:
    """Seqs of the rotation entries, as the rotation recorded them (cheap: start-up reads these
    entries instead of scanning the journal). A missing file is no rotation."""
    path = Path(directory) / HINTS
    if not path.exists():
        return []
    data = orjson.loads(path.read_bytes())
    return [int(item["seq"]) for item in data]


def hint_record(rotations: list[Rotation]) -> bytes:
    return orjson.dumps(
        [{"seq": r.seq, OLD_KEY: r.old.encode(), NEW_KEY: r.new.encode()} for r in rotations],
        option=orjson.OPT_INDENT_2,
    )


def hinted_rotations(directory: Path) -> list[Rotation]:
    """The rotations ``key-rotations.json`` names, each read back from its entry (never taken from
    the hint itself); ValueError (or OSError) when a named seq holds no rotation."""
    rotations = []
    for seq in read_hints(directory):
        lines = read_lines(Path(directory) / "segments", seq, 1) or kept_line(Path(directory) / "segments", seq)
        found = parse_line(lines[0]) if lines else None
        if found is None or found.seq != seq:
            raise ValueError(f"{HINTS} names seq {seq}, which is not a rotation entry")
        rotations.append(found)
    return rotations


def local_schedule(
    directory: Path, origin: str, trusted: list[Verifier], checkpoints: list[Checkpoint] = ()
) -> KeySchedule:
    """The schedule ``trusted`` leads to over the rotations of the journal at ``directory`` (for
    tools beside the journal, such as ``keylife journal consistency``); the plain keys when the
    rotations cannot be read or do not verify."""
    try:
        schedule, refused = KeySchedule.build(trusted, hinted_rotations(directory), origin, checkpoints)
    except (OSError, ValueError, KeyError, TypeError):
        return KeySchedule(trusted)
    return KeySchedule(trusted) if refused else schedule


def start_schedule(
    directory: Path, origin: str, signer: Verifier, trusted: list[Verifier]
) -> tuple[KeySchedule, str | None]:
    """The schedule for the start-up check: the rotations named in ``key-rotations.json``, each
    read back from its entry and checked, anchored at the journal's own signing key.

    The key may also be the one the last rotation retired: the rotation is then unfinished
    (a crash before the key file was switched) and ``key_rotation.finish`` completes it next.
    """
    try:
        rotations = hinted_rotations(directory)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return KeySchedule([signer, *trusted]), f"{HINTS} cannot be used: {exc}"
    # The writer trusts its own history: the hinted rotations, read back from the entries, are
    # followed from the first key on (each must verify under the key it retires); then the
    # signing key must be the last successor, or the key it retired when the switch is unfinished.
    anchors = [signer, *trusted, *([rotations[0].old] if rotations else [])]
    schedule, refused = KeySchedule.build(anchors, rotations, origin)
    if refused:
        seq, why = refused[0]
        return schedule, f"the rotation at seq {seq} does not verify: {why}"
    if rotations and signer not in (rotations[-1].new, rotations[-1].old):
        return schedule, (
            f"the signing key {short(signer)} is not the journal's current key {short(rotations[-1].new)} "
            f"(rotation at seq {rotations[-1].seq}): a retired or foreign key must not sign"
        )
    return schedule, None


def kept_line(seg_dir: Path, seq: int) -> list[bytes]:
    """Entry ``seq`` from the ``.kept`` file of a pruned segment (keylife/journal/prune.py keeps
    rotation entries when it removes the bodies around them), checked against its leaf hash."""
    for lo, hi, seg in segs.pruned_ranges(seg_dir):
        if lo <= seq < hi:
            line = segs.read_kept(seg).get(seq)
            return [line] if line is not None else []
    return []
