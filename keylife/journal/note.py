"""Checkpoints in the C2SP tlog-checkpoint format, wrapped in a C2SP signed note.

    <origin>\\n<size>\\n<base64 chain hash>\\n\\n— <key name> <base64(keyid || signature)>\\n

The third line holds keylife's chain head ``h[size-1]`` where a Merkle log would hold its
tree root; everything else follows the specs, so standard note tooling can check signatures.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field

from keylife.journal.signing import Signer, Verifier

DASH = "\u2014"


@dataclass(frozen=True)
class Signature:
    name: str
    key_id: bytes
    signature: bytes


@dataclass(frozen=True)
class Checkpoint:
    origin: str
    size: int
    hash: bytes
    text: str  # the signed body, ending in a newline
    signatures: tuple[Signature, ...] = field(default=())

    def render(self) -> str:
        sig_lines = "".join(
            f"{DASH} {sig.name} {base64.b64encode(sig.key_id + sig.signature).decode()}\n" for sig in self.signatures
        )
        return self.text + "\n" + sig_lines


def body(origin: str, size: int, chain_hash: bytes) -> str:
    return f"{origin}\n{size}\n{base64.b64encode(chain_hash).decode()}\n"


def sign_checkpoint(signer: Signer, origin: str, size: int, chain_hash: bytes, *more: Signer) -> Checkpoint:
    """A checkpoint signed by ``signer`` and then each of ``more`` (one signature line each, in
    that order: C2SP signed-note lets a note carry several)."""
    text = body(origin, size, chain_hash)
    sigs = tuple(Signature(s.name, s.verifier.key_id, s.sign(text.encode())) for s in (signer, *more))
    return Checkpoint(origin, size, chain_hash, text, sigs)


class NoteError(ValueError):
    """A checkpoint note that is not well formed; the message says where."""


def parse(note: str) -> Checkpoint:
    if "\n\n" not in note:
        raise NoteError("no blank line between the checkpoint body and its signatures")
    text, signatures = split_note(note)
    lines = text.split("\n")[:-1]
    if len(lines) < 3:
        raise NoteError("checkpoint body needs origin, size and hash lines")
    origin, size_text, hash_text = lines[:3]
    if not size_text.isdigit() or (size_text.startswith("0") and size_text != "0"):
        raise NoteError(f"checkpoint size {size_text!r} is not a decimal number")
    try:
        chain_hash = base64.b64decode(hash_text, validate=True)
    except binascii.Error as exc:
        raise NoteError("checkpoint hash line is not base64") from exc
    return Checkpoint(origin, int(size_text), chain_hash, text, signatures)


def sign_text(text: str, *signers: Signer) -> str:
    """Any signed note (not only a checkpoint): ``text`` (ending in a newline), a blank line, one
    signature line per signer. The revocation feed uses it (keylife.response.feed)."""
    sigs = "".join(
        f"{DASH} {s.name} {base64.b64encode(s.verifier.key_id + s.sign(text.encode())).decode()}\n" for s in signers
    )
    return text + "\n" + sigs


def split_note(note: str) -> tuple[str, tuple[Signature, ...]]:
    """(text, signatures) of any signed note; NoteError names what is malformed."""
    text, sep, sigs = note.partition("\n\n")
    if not sep or not sigs:
        raise NoteError("no blank line followed by signature lines")
    signatures = []
    for line in sigs.rstrip("\n").split("\n"):
        parts = line.split(" ")
        if len(parts) != 3 or parts[0] != DASH:
            raise NoteError(f"malformed signature line {line[:200]!r}")
        try:
            blob = base64.b64decode(parts[2], validate=True)
        except binascii.Error as exc:
            raise NoteError("signature is not base64") from exc
        if len(blob) < 5:
            raise NoteError("signature too short")
        signatures.append(Signature(parts[1], blob[:4], blob[4:]))
    return text + "\n", tuple(signatures)


def check_signatures(checkpoint: Checkpoint, trusted: list[Verifier]) -> str | None:
    """None when a trusted key signed the note; otherwise 'bad signature' or 'unknown key'."""
    return check_text(checkpoint.text, checkpoint.signatures, trusted)


def check_text(text: str, signatures: tuple[Signature, ...], trusted: list[Verifier]) -> str | None:
    """``check_signatures`` for any signed note's text."""
    known = {(v.name, v.key_id): v for v in trusted}
    unknown = False
    for sig in signatures:
        verifier = known.get((sig.name, sig.key_id))
        if verifier is None:
            unknown = True
            continue
        if verifier.verify(sig.signature, text.encode()):
            return None
        return "bad signature"
    return "unknown signing key" if unknown or not signatures else "bad signature"
