"""Certificates made at test time (never committed): a CA, a server certificate for loopback and,
for mutual TLS, a client certificate signed by the same CA."""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass(frozen=True)
class Pki:
    """Paths of one test PKI; every ``*.key`` file is 0600."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _make_ca() -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    now = _now()
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder().subject_name(_name("keylife test CA")).issuer_name(_name("keylife test CA"))
        .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=True, content_commitment=False, key_encipherment=False, data_encipherment=False,
            key_agreement=False, key_cert_sign=True, crl_sign=True, encipher_only=False, decipher_only=False,
        ), critical=True)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    return ca_key, ca


def _issue(
    ca_key: ec.EllipticCurvePrivateKey, ca: x509.Certificate, common: str, extensions: list[x509.ExtensionType]
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    now = _now()
    key = ec.generate_private_key(ec.SECP256R1())
    builder = (
        x509.CertificateBuilder().subject_name(_name(common)).issuer_name(ca.subject)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
    )  # fmt: skip
    for extension in extensions:
        builder = builder.add_extension(extension, critical=False)
    return key, builder.sign(ca_key, hashes.SHA256())


def _write_cert(path: Path, cert: x509.Certificate) -> Path:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> Path:
    path.touch(mode=0o600)
    path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return path


def _server(ca_key: ec.EllipticCurvePrivateKey, ca: x509.Certificate, directory: Path) -> tuple[Path, Path]:
    san = x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
    key, cert = _issue(ca_key, ca, "localhost", [san])
    return _write_cert(directory / "server.pem", cert), _write_key(directory / "server.key", key)


def make_server_cert(directory: Path) -> tuple[Path, Path, Path]:
    """(ca.pem, server.pem, server.key) for 127.0.0.1 and localhost; the key file is 0600."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_key, ca = _make_ca()
    server_cert, server_key = _server(ca_key, ca, directory)
    return _write_cert(directory / "ca.pem", ca), server_cert, server_key


def make_pki(directory: Path, client_name: str = "keylife-forwarder") -> Pki:
    """A CA with a server certificate (as ``make_server_cert``) and a client certificate for mutual
    TLS (``clientAuth`` extended key usage, common name ``client_name``), all signed by that CA."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_key, ca = _make_ca()
    server_cert, server_key = _server(ca_key, ca, directory)
    usage = x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH])
    key, cert = _issue(ca_key, ca, client_name, [usage, x509.SubjectAlternativeName([x509.DNSName(client_name)])])
    client_cert, client_key = _write_cert(directory / "client.pem", cert), _write_key(directory / "client.key", key)
    return Pki(_write_cert(directory / "ca.pem", ca), server_cert, server_key, client_cert, client_key)
