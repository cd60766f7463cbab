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


def key_id(name: str, public: bytes, key_type: bytes = ED25519_TYPE) -> bytes:
    """signed-note key id: first 4 bytes of SHA-256(name || '\\n' || type || public key); the type
    is 0x01 for an Ed25519 note signer, 0x04 for a tlog-cosignature/v1 witness."""
    return hashlib.sha256(name.encode() + b"\n" + key_type + public).digest()[:4]


def encode_key(name: str, public: bytes, key_type: bytes) -> str:
    """The signed-note verifier key string ``name+hex(keyid)+base64(type || public key)``."""
    return f"{name}+{key_id(name, public, key_type).hex()}+{base64.b64encode(key_type + public).decode()}"


def parse_key(text: str, key_type: bytes, what: str, kind: str) -> tuple[str, bytes]:
    """(name, public key) of a verifier key string of ``key_type``; ValueError says which part is
    wrong (``what``: "verifier key", "witness key"; ``kind``: the key type in words)."""
    parts = text.strip().split("+", 2)  # the base64 key may itself hold '+'
    if len(parts) != 3 or not parts[0]:
        raise ValueError(f"{what} must look like name+hexkeyid+base64key")
    name, hex_id, blob = parts
    try:
        raw = base64.b64decode(blob, validate=True)
    except ValueError as exc:
        raise ValueError(f"{what}: the key part is not valid base64") from exc
    if len(raw) != 33 or raw[:1] != key_type:
        raise ValueError(f"{what}: only {kind} keys (type 0x{key_type.hex()}, 32 bytes) are supported")
    if key_id(name, raw[1:], key_type).hex() != hex_id.lower():
        raise ValueError(f"{what}: key id does not match the name and key")
    return name, raw[1:]


@dataclass(frozen=True)
class Verifier:
    name: str
    public: bytes

    @property
    def key_id(self) -> bytes:
        return key_id(self.name, self.public)

    def encode(self) -> str:
        return encode_key(self.name, self.public, ED25519_TYPE)

    def verify(self, signature: bytes, message: bytes) -> bool:
        try:
            Ed25519PublicKey.from_public_bytes(self.public).verify(signature, message)
        except InvalidSignature:
            return False
        return True

    @classmethod
    def parse(cls, text: str) -> Verifier:
        """Parse a verifier key string; raises ValueError saying which part is wrong."""
        return cls(*parse_key(text, ED25519_TYPE, "verifier key", "Ed25519"))


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
        private, created = load_or_create_ed25519(path, "signing key")
        return cls(name, private), created


def new_ed25519() -> tuple[Ed25519PrivateKey, bytes]:
    """A fresh Ed25519 key and its unencrypted PKCS#8 PEM (to be written with ``create_secret_file``)."""
    private = Ed25519PrivateKey.generate()
    pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return private, pem


class NotEd25519(ValueError):
    """A key file that holds another kind of key."""


def read_ed25519(path: Path, what: str) -> Ed25519PrivateKey:
    """The Ed25519 key in the PEM file ``path``, under the one rule for secret files (owner-only);
    ``NotEd25519`` when it is another kind of key. ``what`` names it in errors."""
    private = serialization.load_pem_private_key(read_secret_file(path, what), password=None)
    if not isinstance(private, Ed25519PrivateKey):
        raise NotEd25519(f"{what} {path} is not an Ed25519 key")
    return private


def load_or_create_ed25519(path: Path, what: str) -> tuple[Ed25519PrivateKey, bool]:
    """Load the Ed25519 PEM key at ``path``, or create it 0600. Returns (key, created)."""
    created = False
    if not path.exists():
        create_secret_file(path, new_ed25519()[1])
        created = True
    return read_ed25519(path, what), created
