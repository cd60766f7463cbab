"""Witness cosignatures: C2SP tlog-cosignature v1 (Ed25519, signature type 0x04).

A cosignature is a signed-note signature line ``— <witness name> base64(key id || timestamp ||
signature)`` where (tlog-cosignature, *Format*):

* key id = ``SHA-256(<name> || "\\n" || 0x04 || 32-byte public key)[:4]``;
* timestamp = 8-byte big-endian POSIX seconds (at most 2^63 - 1);
* signature = Ed25519 over ``"cosignature/v1\\ntime <timestamp>\\n" || <checkpoint body>``
  (*Ed25519 signed message*: the body with its final newline, no signature lines).

The verifier key string is the signed-note ``vkey`` with type 0x04: ``name+hex(keyid)+base64(0x04 || pub)``.
Checked byte for byte against a real witness (tests/test_cosignature.py: the remora.n621.de
cosignature on an arche2025h1 CT checkpoint, and the keys in transparency-dev/formats
``note/note_cosigv1_test.go``).
"""

from __future__ import annotations

import base64
import time
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from keylife.journal.note import DASH, Checkpoint, Signature
from keylife.journal.signing import encode_key, key_id, load_or_create_ed25519, parse_key

COSIGNATURE_TYPE = b"\x04"
MAX_TIMESTAMP = (1 << 63) - 1


def message(body: str, timestamp: int) -> bytes:
    """The signed message of tlog-cosignature *Ed25519 signed message*."""
    return f"cosignature/v1\ntime {timestamp}\n{body}".encode()


def cosigner_key_id(name: str, public: bytes) -> bytes:
    return key_id(name, public, COSIGNATURE_TYPE)


@dataclass(frozen=True)
class CosignerKey:
    """A witness's public key as verifiers are configured with it (name, Ed25519 public key)."""

    name: str
    public: bytes

    @property
    def key_id(self) -> bytes:
        return cosigner_key_id(self.name, self.public)

    def encode(self) -> str:
        return encode_key(self.name, self.public, COSIGNATURE_TYPE)

    @classmethod
    def parse(cls, text: str) -> CosignerKey:
        """Parse ``name+hexid+base64(0x04||key)``; ValueError says which part is wrong."""
        return cls(*parse_key(text, COSIGNATURE_TYPE, "witness key", "cosignature/v1 Ed25519"))

    def timestamp_of(self, sig: Signature, body: str) -> int | None:
        """The cosignature's timestamp when ``sig`` is this witness's valid cosignature over ``body``."""
        if sig.name != self.name or sig.key_id != self.key_id or len(sig.signature) != 8 + 64:
            return None
        timestamp = int.from_bytes(sig.signature[:8], "big")
        if timestamp > MAX_TIMESTAMP:
            return None
        try:
            Ed25519PublicKey.from_public_bytes(self.public).verify(sig.signature[8:], message(body, timestamp))
        except InvalidSignature:
            return None
        return timestamp


def valid_cosigners(cp: Checkpoint, keys: list[CosignerKey]) -> list[tuple[CosignerKey, int]]:
    """The given witnesses with a valid cosignature on ``cp`` (each counted once), with its timestamp.
    Unknown signature lines are ignored, as tlog-witness tells clients to."""
    out: list[tuple[CosignerKey, int]] = []
    for key in keys:
        for sig in cp.signatures:
            stamp = key.timestamp_of(sig, cp.text)
            if stamp is not None:
                out.append((key, stamp))
                break
    return out


class Cosigner:
    """A witness's signing side. Holds the private key; repr shows only the public key."""

    def __init__(self, name: str, private: Ed25519PrivateKey) -> None:
        self._private = private
        public = private.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        self.key = CosignerKey(name, public)

    def __repr__(self) -> str:
        return f"Cosigner({self.key.encode()!r})"

    def cosign(self, body: str, timestamp: int | None = None) -> Signature:
        stamp = int(time.time()) if timestamp is None else timestamp
        signed = self._private.sign(message(body, stamp))
        return Signature(self.key.name, self.key.key_id, stamp.to_bytes(8, "big") + signed)

    def line(self, body: str, timestamp: int | None = None) -> str:
        """The cosignature as a note signature line (with its newline)."""
        sig = self.cosign(body, timestamp)
        return f"{DASH} {sig.name} {base64.b64encode(sig.key_id + sig.signature).decode()}\n"

    @classmethod
    def load_or_create(cls, path: Path, name: str) -> tuple[Cosigner, bool]:
        """Load the PEM key at ``path``, or create it 0600. Returns (cosigner, created)."""
        private, created = load_or_create_ed25519(path, "witness key")
        return cls(name, private), created
