"""Plain-text node lines that name a key or a rotation (issue 12 items 2 and 8).

DataFold prints these with ``info!``/``warn!``/``error!`` and no structure; each pattern below is
the ``format!`` string of one call site (branch and file:line beside it; docs/datafold.md lists
them with the lines deliberately ignored). ``recognise`` is called for every framed message that
is not JSON or ``SECURITY_*``, so it first asks one C-level ``startswith`` over all prefixes and
only then runs the one regex of the matching prefix.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# (kind, literal prefix, regex of the whole message). Rust's ``{}`` of a String prints it as is;
# a client id or node id is one token in practice, the free-text tails (errors) are ``.*``.
_PATTERNS: tuple[tuple[str, str, str], ...] = (
    # security crypto/audit_logger.rs:729-735 (target crypto_audit_alert): {:?} of Severity, component, operation
    ("crypto_audit_alert", "CRYPTO AUDIT ALERT: ", r"CRYPTO AUDIT ALERT: (\w+) - (.*?) - (.*)"),
    # security datafold_node/crypto_routes.rs:681, security2 datafold_node/crypto/crypto_routes.rs:695
    ("client_key_registered", "Public key registered successfully for client: ",
     r"Public key registered successfully for client: (.+)"),
    # security crypto_routes.rs:703, security2 crypto/crypto_routes.rs:717 (the client is not named)
    ("client_key_registration_failed", "Public key registration failed: ", r"Public key registration failed: (.*)"),
    # security datafold_node/crypto_init.rs:115 (method) / security2 datafold_node/crypto/crypto_init.rs:132 ({:?})
    ("master_key_generated", "Master key pair generated using ",
     r"Master key pair generated using (method|algorithm): (.*)"),
    # mainline security/signing.rs:156 and :179 (the one SYSTEM_WIDE_PUBLIC_KEY, constants.rs:9)
    ("system_key_registered", "Registered system public key", r"Registered system public key\Z"),
    ("system_key_removed", "Removed system public key", r"Removed system public key\Z"),
    # mainline datafold_node/security_routes.rs:29
    ("system_key_registration_failed", "Failed to register public key: ", r"Failed to register public key: (.*)"),
    # mainline datafold_node/query_routes.rs:120 (public_key_id of the signed message) and :113
    ("signature_invalid_for_key", "Invalid signature for public key: ", r"Invalid signature for public key: (.+)"),
    # security datafold_node/signature_auth.rs:3311, security2 datafold_node/auth/auth_middleware.rs:705: the
    # middleware's per-request success (RFC 9421 keyid = client id; the signature itself is never checked)
    ("request_verified", "Successfully verified signature for client ",
     r"Successfully verified signature for client (.+?) on path (.*)"),
    # security crypto_routes.rs:965, security2 crypto/crypto_routes.rs:973 (POST /api/crypto/signatures/verify);
    # security signature_auth.rs:3402 (dead code) prints the same text
    ("signature_verified", "Signature verification successful for client: ",
     r"Signature verification successful for client: (.+)"),
    # security crypto_routes.rs:934, security2 crypto/crypto_routes.rs:942
    ("signature_failed", "Signature verification failed for client: ",
     r"Signature verification failed for client: (.+)"),
    # security signature_auth.rs:1773, security2 auth/signature_verification.rs:291 and :301 (key_id then error)
    ("signature_failed", "Signature verification failed for key_id: ",
     r"Signature verification failed for key_id: (.+?): (.*)"),
    # security signature_auth.rs:3409 (dead code), security2 auth/signature_verification.rs:735
    ("signature_failed", "Signature verification failed for client ",
     r"Signature verification failed for client (.+?): (.*)"),
    # security/security2 events/key_rotation_handlers.rs:204 and :212-215
    ("rotation_propagated", "Successfully propagated key rotation to node: ",
     r"Successfully propagated key rotation to node: (.+)"),
    ("rotation_propagation_failed", "Failed to propagate key rotation to node ",
     r"Failed to propagate key rotation to node (.+?): (.*)"),
    # security network/key_propagation.rs:423 and :427-431 (the key propagation manager)
    ("rotation_propagated", "Successfully propagated to node: ", r"Successfully propagated to node: (.+)"),
    ("rotation_propagation_failed", "Failed to propagate to node ", r"Failed to propagate to node (.+?): (.*)"),
    # security crypto/security_monitor.rs:829-836 (target crypto_security_alert)
    ("threat_detected", "SECURITY THREAT DETECTED: ",
     r"SECURITY THREAT DETECTED: (\w+) - (\d+) - (.*) \(Confidence: ([0-9.]+)\)"),
)  # fmt: skip
PREFIXES = tuple(prefix for _, prefix, _ in _PATTERNS)
_BY_PREFIX: dict[str, list[tuple[str, str, re.Pattern[str]]]] = {}
for _kind, _prefix, _regex in _PATTERNS:
    _BY_PREFIX.setdefault(_prefix, []).append((_kind, _prefix, re.compile(_regex, re.S)))

# security2 unified_crypto/audit.rs:1169-1177 (ConsoleAuditOutput, println!): "[secs.millis] SEVERITY
# component - operation (STATUS): audit-<hex>". It names no key: recognised to be counted, not mapped.
UNIFIED_AUDIT = re.compile(
    r"\[\d+\.\d{3}\] (DEBUG|INFO|WARN|ERROR|CRITICAL) (\S+) - (.*) \((IN_PROGRESS|SUCCESS|FAILURE)\): audit-[0-9a-f]+\Z"
)


@dataclass(frozen=True, slots=True)
class Plain:
    """One recognised plain line: ``kind`` and the values its format string filled in."""

    kind: str
    groups: tuple[str, ...]
    message: str


def recognise(message: str) -> Plain | None:
    """The plain line ``message`` is, or None (noise)."""
    if not message.startswith(PREFIXES):
        return None
    for prefix, candidates in _BY_PREFIX.items():
        if message.startswith(prefix):
            for kind, _, regex in candidates:
                found = regex.fullmatch(message)
                if found is not None:
                    return Plain(kind, tuple(g or "" for g in found.groups()), message)
    return None


def unified_audit(text: str) -> Plain | None:
    found = UNIFIED_AUDIT.match(text)
    return None if found is None else Plain("unified_crypto_audit", found.groups(), text)
