"""C2SP tlog-cosignature v1 byte for byte, against a real witness's cosignature and the spec's rules."""

from __future__ import annotations

import base64
import hashlib

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from keylife.journal.cosignature import Cosigner, CosignerKey, message, valid_cosigners
from keylife.journal.note import parse

# A CT log checkpoint as cosigned by real witnesses (the public remora.n621.de witness among them),
# as recorded in a public test suite; the witness key is also a vector of transparency-dev/formats
# note/note_cosigv1_test.go (TestCoSigV1NewVerifier, "native algEd25519CosignatureV1 verifier").
REMORA = "remora.n621.de+da77ade7+BOvN63jn/bLvkieywe8R6UYAtVtNbZpXh34x7onlmtw2"
CT_CHECKPOINT = (
    "arche2025h1.staging.ct.transparency.dev\n1432088532\nU7WM79jrzyhGZ5/GUBTpM7NzwdyfFx61t3RovgcC4Ro=\n\n"
    "— arche2025h1.staging.ct.transparency.dev ui8GwCF1+kWqZrxGdhj4aX3gcw7XUlXQQabg/27lefwhUkzbC3NygNI75MdhL1bf"
    "TW9g8Ei59RA23oHP7Ry1k3ZFWwQ=\n"
    "— witness1.smartit.nu/witness1 pIyCDwAAAABqEiEghIp82KWebrw7/oHQwlTAm3g2RKS4+eebl8eO0WH+/iEcxZ75W3u5hNI7TOQtmJb"
    "qmNWVuE0tgh0XwzdZsDsUAQ==\n"
    "— remora.n621.de 2net5wAAAABqEiEgPlfF3V06o0Y+fHM+J5J9s27wgxxcOVSpZ/2g/KSiXCg9DEZI+aVCIobWX9sXTynk5XeU/zZ0WBxtqB0D"
    "rAWfBw==\n"
)


def test_a_real_witness_cosignature_verifies() -> None:
    key = CosignerKey.parse(REMORA)
    assert key.key_id.hex() == "da77ade7"  # SHA-256(name || 0x0A || 0x04 || key)[:4]
    assert key.encode() == REMORA
    cp = parse(CT_CHECKPOINT)
    ((found, stamp),) = valid_cosigners(cp, [key])
    assert found == key and stamp == 1779573024


def test_a_changed_body_or_timestamp_fails() -> None:
    key = CosignerKey.parse(REMORA)
    assert valid_cosigners(parse(CT_CHECKPOINT.replace("1432088532", "1432088533")), [key]) == []
    blob = bytearray(
        base64.b64decode(
            "2net5wAAAABqEiEgPlfF3V06o0Y+fHM+J5J9s27wgxxcOVSpZ/2g/KSiXCg9DEZI+aVCIobWX9sXTynk5XeU/zZ0WBxtqB0DrAWfBw=="
        )
    )
    blob[11] ^= 1  # the last timestamp byte
    tampered = CT_CHECKPOINT.replace(
        CT_CHECKPOINT.split("remora.n621.de ")[1].split("\n")[0], base64.b64encode(bytes(blob)).decode()
    )
    assert valid_cosigners(parse(tampered), [key]) == []


def test_our_cosignature_line_has_the_spec_layout(tmp_path) -> None:
    cosigner, _ = Cosigner.load_or_create(tmp_path / "w.key", "witness.example/w1")
    body = "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
    line = cosigner.line(body, timestamp=1679315147)
    dash, name, b64 = line.rstrip("\n").split(" ")
    assert dash == "\u2014" and name == "witness.example/w1"
    blob = base64.b64decode(b64)
    public = cosigner.key.public
    assert blob[:4] == hashlib.sha256(b"witness.example/w1\n\x04" + public).digest()[:4]
    assert blob[4:12] == (1679315147).to_bytes(8, "big")
    signed = b"cosignature/v1\ntime 1679315147\n" + body.encode()  # the spec's example message
    assert message(body, 1679315147) == signed
    Ed25519PublicKey.from_public_bytes(public).verify(blob[12:], signed)
    assert len(blob) == 4 + 8 + 64
    vkey = cosigner.key.encode().split("+", 2)
    assert vkey[:2] == ["witness.example/w1", blob[:4].hex()]
    assert base64.b64decode(vkey[2]) == b"\x04" + public  # signed-note vkey, type 0x04
    assert valid_cosigners(parse(body + "\n" + line), [cosigner.key])[0][1] == 1679315147
    assert "PRIVATE" not in repr(cosigner)


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("remora.n621.de+da77ade7", "must look like name"),
        ("remora.n621.de+da77ade7+AOvN63jn/bLvkieywe8R6UYAtVtNbZpXh34x7onlmtw2", "type 0x04"),
        ("remora.n621.de+00000000+BOvN63jn/bLvkieywe8R6UYAtVtNbZpXh34x7onlmtw2", "key id does not match"),
        ("remora.n621.de+da77ade7+not base64!", "not valid base64"),
    ],
)
def test_a_bad_witness_key_says_why(text: str, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        CosignerKey.parse(text)
