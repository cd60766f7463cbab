"""The add-checkpoint request and response bodies of C2SP tlog-witness (*HTTP Interface*, *add-checkpoint*).

Request body::

    old <size>\\n              decimal, no leading zeroes ("0" for zero)
    <base64 hash>\\n           0..63 consistency proof lines (RFC 6962 §2.1.2)
    \\n
    <checkpoint note>         C2SP tlog-checkpoint in a signed note

Response: 200 with one or more note signature lines (cosignatures); 409 with ``text/x.tlog.size``
carrying the witness's latest size. ``parse_request`` names where a malformed body goes wrong
(400), so a log operator can fix the client.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass

from keylife.journal.merkle import HASH_SIZE
from keylife.journal.note import Checkpoint, NoteError, parse

MAX_PROOF_LINES = 63
MAX_BODY = 64 * 1024  # a checkpoint, 63 hashes and a few signatures fit many times over
SIZE_CONTENT_TYPE = "text/x.tlog.size"
_DECIMAL = re.compile(r"(0|[1-9][0-9]*)\Z")


class BadRequest(ValueError):
    """A body that is not an add-checkpoint request; the message says where (-> 400)."""


@dataclass(frozen=True)
class AddCheckpoint:
    old: int
    proof: list[bytes]
    checkpoint: Checkpoint


def render_request(old: int, proof: list[bytes], note: str) -> bytes:
    """The request body a log sends (the inverse of ``parse_request``)."""
    lines = [f"old {old}\n", *(base64.b64encode(h).decode() + "\n" for h in proof), "\n"]
    return ("".join(lines) + note).encode()


def parse_request(body: bytes) -> AddCheckpoint:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadRequest(f"body is not UTF-8 (byte {exc.start})") from None
    head, sep, note = text.partition("\n\n")
    if not sep:
        raise BadRequest("no empty line between the old size and proof lines and the checkpoint")
    lines = head.split("\n")
    first = lines[0]
    if not first.startswith("old "):
        raise BadRequest(f"line 1: expected 'old <size>', got {first[:40]!r}")
    if not _DECIMAL.match(first[4:]):
        raise BadRequest(f"line 1: old size {first[4:][:40]!r} is not a decimal number without leading zeroes")
    old = int(first[4:])
    proof_lines = lines[1:]
    if len(proof_lines) > MAX_PROOF_LINES:
        raise BadRequest(f"{len(proof_lines)} consistency proof lines; at most {MAX_PROOF_LINES} are allowed")
    proof = []
    for number, line in enumerate(proof_lines, start=2):
        try:
            node = base64.b64decode(line, validate=True)
        except binascii.Error:
            raise BadRequest(f"line {number}: proof line is not base64") from None
        if len(node) != HASH_SIZE:
            raise BadRequest(f"line {number}: proof hash is {len(node)} bytes, not {HASH_SIZE}")
        proof.append(node)
    if not note.endswith("\n"):
        raise BadRequest("checkpoint: the note does not end with a newline")
    where = len(lines) + 2
    try:
        cp = parse(note)
    except NoteError as exc:
        raise BadRequest(f"checkpoint (line {where}): {exc}") from None
    if not cp.origin:
        raise BadRequest(f"checkpoint (line {where}): empty origin line")
    if len(cp.hash) != HASH_SIZE:
        raise BadRequest(f"checkpoint (line {where + 2}): root hash is {len(cp.hash)} bytes, not {HASH_SIZE}")
    if not cp.signatures:
        raise BadRequest("checkpoint: no signature lines")
    return AddCheckpoint(old, proof, cp)


def check_sizes(request: AddCheckpoint) -> None:
    """The old size must not exceed the checkpoint's (400); checked after the origin and signature."""
    if request.old > request.checkpoint.size:
        raise BadRequest(f"line 1: old size {request.old} is larger than the checkpoint size {request.checkpoint.size}")


def parse_size(body: bytes) -> int:
    """The body of a 409 answer: the witness's latest size and a newline."""
    text = body.decode("ascii", errors="replace")
    if not text.endswith("\n") or not _DECIMAL.match(text[:-1]):
        raise ValueError(f"409 body {text[:40]!r} is not a tree size")
    return int(text[:-1])
