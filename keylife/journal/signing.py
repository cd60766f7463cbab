"""The journal's Ed25519 signing key, in C2SP signed-note terms (name, key id, verifier key).

The private key lives in a 0600 PEM file created on first start; it never appears in a log,
metric or error. The verifier key string (``name+hex(keyid)+base64(0x01||pub)``) is what an
auditor needs to check checkpoints offline.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from keylife.common.secret_files import create_secret_file, read_secret_file

ED25519_TYPE = b"\x01"


def key_id(name: str, public: bytes) -> bytes:
    """signed-note key id: first 4 bytes of SHA-256(name || '\\n' || 0x01 || public key)."""
    return hashlib.sha256(name.encode() + b"\n" + ED25519_TYPE + public).digest()[:4]


@dataclass(frozen=True)
class Verifier:
    name: str
    public: bytes

    @property
    def key_id(self) -> bytes:
        return key_id(self.name, self.public)

    def encode(self) -> str:
        blob = base64.b64encode(ED25519_TYPE + self.public).decode()
        return f"{self.name}+{self.key_id.hex()}+{blob}"

    def verify(self, signature: bytes, message: bytes) -> bool:
        try:
            Ed25519PublicKey.from_public_bytes(self.public).verify(signature, message)
        except InvalidSignature:
            return False
        return True

    @classmethod
    def parse(cls, text: str) -> Verifier:
        """Parse a verifier key string; raises ValueError saying which part is wrong."""
        parts = text.strip().split("+", 2)  # the base64 key may itself hold '+'
        if len(parts) != 3:
            raise ValueError("verifier key must look like name+hexkeyid+base64key")
        name, hex_id, blob = parts
        try:
            raw = base64.b64decode(blob, validate=True)
        except ValueError as exc:
            raise ValueError("verifier key: the key part is not valid base64") from exc
        if len(raw) != 33 or raw[:1] != ED25519_TYPE:
            raise ValueError("verifier key: only Ed25519 keys (type 0x01, 32 bytes) are supported")
        verifier = cls(name, raw[1:])
        if verifier.key_id.hex() != hex_id.lower():
            raise ValueError("verifier key: key id does not match the name and key")
        return verifier


class Signer:
    """Signs checkpoint notes. Holds the private key; repr shows only the public side."""

    def __init__(self, name: str, private: Ed25519PrivateKey) -> None:
        self.name = name
        self._private = private
        public = private.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        self.verifier = Verifier(name, public)

    def __repr__(self) -> str:
        return f"Signer({self.verifier.encode()!r})"

    def sign(self, message: bytes) -> bytes:
        return self._private.sign(message)

    @classmethod
    def load_or_create(cls, path: Path, name: str) -> tuple[Signer, bool]:
        """Load the PEM key at ``path``, or create it 0600. Returns (signer, created)."""
        created = False
        if not path.exists():
            pem = Ed25519PrivateKey.generate().private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
            create_secret_file(path, pem)
            created = True
        pem = read_secret_file(path, "signing key")  # the one rule for secret files: owner-only
        private = serialization.load_pem_private_key(pem, password=None)
        if not isinstance(private, Ed25519PrivateKey):
            raise ValueError(f"signing key {path} is not an Ed25519 key")
        return cls(name, private), created
