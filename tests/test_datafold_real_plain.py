"""Issue 12 item 8: plain lines that name a key, as the ``info!``/``warn!``/``error!`` calls print them,
under both framings (web logger: no time, the time of reading; env_logger: the frame's time)."""

from __future__ import annotations

from pathlib import Path

import pytest

from keylife.datafold.contract import Line
from tests import datafold_real as real
from tests.test_datafold_mapping import new_adapter, valid

NODE = real.NODE
NODE_ID, MASTER, SYSTEM = f"datafold-node:{NODE}", f"datafold-master:{NODE}", f"datafold-system:{NODE}"
READ, STAMP = "2026-01-01T00:00:00Z", "2025-06-16T12:30:49Z"
ED = {"algorithm": "ed25519", "purpose": "signing"}
AES = {"algorithm": "aes-256-gcm", "key_size": 256, "purpose": "encryption"}

# (level, message as format! prints it, [(type, key_id, extra fields)], attributes besides shape/line/time_source)
CASES = [
    # security datafold_node/crypto_routes.rs:681-684, security2 datafold_node/crypto/crypto_routes.rs:695
    (
        "INFO",
        "Public key registered successfully for client: client-7f3a",
        "client_key_registered",
        [
            ("generated", "client-7f3a", {"actor": "client-7f3a", **ED}),
            ("activated", "client-7f3a", {"actor": "client-7f3a"}),
        ],
        {"client_id": "client-7f3a"},
    ),
    # security datafold_node/crypto_init.rs:115-118 (derivation_method Display)
    (
        "INFO",
        "Master key pair generated using method: Random",
        "master_key_generated",
        [
            (
                "generated",
                MASTER,
                {**AES, "reason": "master key pair generated (method Random); the at-rest keys derive from it"},
            ),
            ("activated", MASTER, {}),
        ],
        {"derivation_method": "Random"},
    ),
    # security2 datafold_node/crypto/crypto_init.rs:132 ({:?} of the algorithm)
    (
        "INFO",
        "Master key pair generated using algorithm: Ed25519",
        "master_key_generated",
        [
            (
                "generated",
                MASTER,
                {**AES, "reason": "master key pair generated (algorithm Ed25519); the at-rest keys derive from it"},
            ),
            ("activated", MASTER, {}),
        ],
        {"derivation_algorithm": "Ed25519"},
    ),
    # mainline security/signing.rs:156 and :179
    (
        "INFO",
        "Registered system public key",
        "system_key_registered",
        [("generated", SYSTEM, ED), ("activated", SYSTEM, {})],
        {},
    ),
    (
        "INFO",
        "Removed system public key",
        "system_key_removed",
        [("revoked", SYSTEM, {"reason": "system public key removed from the node"})],
        {},
    ),
    # mainline datafold_node/security_routes.rs:29
    (
        "ERROR",
        "Failed to register public key: Invalid public key format",
        "system_key_registration_failed",
        [("security_event", SYSTEM, {"reason": "Failed to register public key: Invalid public key format"})],
        {"error": "Invalid public key format"},
    ),
    # mainline datafold_node/query_routes.rs:120-123
    (
        "WARN",
        "Invalid signature for public key: SYSTEM_WIDE_PUBLIC_KEY",
        "signature_invalid_for_key",
        [("security_event", SYSTEM, {"reason": "Invalid signature for public key: SYSTEM_WIDE_PUBLIC_KEY"})],
        {},
    ),
    (
        "WARN",
        "Invalid signature for public key: someone-else",
        "signature_invalid_for_key",
        [("security_event", NODE_ID, {"reason": "Invalid signature for public key: someone-else"})],
        {"claimed_key_id": "someone-else"},
    ),
    # security crypto_routes.rs:934-937, security2 crypto/crypto_routes.rs:942
    (
        "WARN",
        "Signature verification failed for client: client-7f3a",
        "signature_failed",
        [
            (
                "security_event",
                "client-7f3a",
                {"actor": "client-7f3a", "reason": "Signature verification failed for client: client-7f3a"},
            )
        ],
        {},
    ),
    # security2 datafold_node/auth/signature_verification.rs:291
    (
        "WARN",
        "Signature verification failed for key_id: client-7f3a: signature invalid",
        "signature_failed",
        [
            (
                "security_event",
                "client-7f3a",
                {
                    "actor": "client-7f3a",
                    "reason": "Signature verification failed for key_id: client-7f3a: signature invalid",
                },
            )
        ],
        {"error": "signature invalid"},
    ),
    # security crypto_routes.rs:703, security2 crypto/crypto_routes.rs:717
    (
        "ERROR",
        "Public key registration failed: Client already has a registered public key",
        "client_key_registration_failed",
        [
            (
                "security_event",
                NODE_ID,
                {"reason": "Public key registration failed: Client already has a registered public key"},
            )
        ],
        {"error": "Client already has a registered public key"},
    ),
    # security/security2 events/key_rotation_handlers.rs:204 and :212-216
    (
        "INFO",
        "Successfully propagated key rotation to node: node-b",
        "rotation_propagated",
        [
            (
                "security_event",
                "datafold-node:node-b",
                {"reason": "Successfully propagated key rotation to node: node-b"},
            )
        ],
        {"target_node": "node-b"},
    ),
    (
        "WARN",
        "Failed to propagate key rotation to node node-c: Timeout during propagation",
        "rotation_propagation_failed",
        [
            (
                "security_event",
                "datafold-node:node-c",
                {"reason": "Failed to propagate key rotation to node node-c: Timeout during propagation"},
            )
        ],
        {"target_node": "node-c", "error": "Timeout during propagation"},
    ),
    # security network/key_propagation.rs:427-431
    (
        "WARN",
        "Failed to propagate to node node-e: connection refused",
        "rotation_propagation_failed",
        [
            (
                "security_event",
                "datafold-node:node-e",
                {"reason": "Failed to propagate to node node-e: connection refused"},
            )
        ],
        {"target_node": "node-e", "error": "connection refused"},
    ),
    # security crypto/security_monitor.rs:829-836 (target crypto_security_alert)
    (
        "WARN",
        "SECURITY THREAT DETECTED: High - 3 - Repeated decryption failures (Confidence: 0.85)",
        "threat_detected",
        [
            (
                "security_event",
                NODE_ID,
                {"reason": "SECURITY THREAT DETECTED: High - 3 - Repeated decryption failures (Confidence: 0.85)"},
            )
        ],
        {"threat_level": "high", "threat_pattern": "3", "confidence": "0.85"},
    ),
]


@pytest.mark.parametrize("framing", ["web", "env"])
@pytest.mark.parametrize(("level", "message", "kind", "expected", "attrs"), CASES)
def test_plain_lines_that_name_a_key_are_mapped(tmp_path: Path, framing: str, level: str, message: str, kind: str,
                                                expected: list, attrs: dict) -> None:  # fmt: skip
    text = real.web(level, message) if framing == "web" else real.env(STAMP, level, "datafold::datafold_node", message)
    adapter = new_adapter(tmp_path)
    events = valid(adapter.feed(Line(text, "file:/var/log/datafold/node.log", 4096, NODE)))
    at, source = (READ, {"time_source": "read"}) if framing == "web" else (STAMP, {})
    assert [{k: v for k, v in e.items() if k != "id"} for e in events] == [
        {"type": t, "key_id": key, "occurred_at": at, "node": NODE, **fields,
         "attributes": {"datafold.shape": "plain", "datafold.line": kind, **source, **attrs}}
        for t, key, fields in expected]  # fmt: skip
    assert [e["id"][-2:] for e in events] == [f"-{n}" for n in range(len(events))]
    assert events[0]["id"].startswith("df-r" if framing == "web" else "df-t")
    assert not (tmp_path / "rejects.ndjson").exists() and adapter.counts["parsed.plain"] == 1


@pytest.mark.parametrize("message", [
    "Signature verification successful for client: client-7f3a",  # security crypto_routes.rs:965
    "Successfully verified signature for client client-7f3a on path /api/schemas",  # signature_auth.rs:3311
])  # fmt: skip
def test_successful_verification_lines_are_uses_of_the_client_key(tmp_path: Path, message: str) -> None:
    adapter = new_adapter(tmp_path)
    assert adapter.feed(Line(real.web("INFO", message), "file:x", 0, NODE)) == []
    (report,) = valid(adapter.flush())
    assert (report["type"], report["key_id"], report["usage"], report["interval_start"], report["purpose"]) == (
        "usage_report",
        "client-7f3a",
        {"verify": 1},
        READ,
        "signing",
    )


@pytest.mark.parametrize("message", [
    "Authentication failed for /api/schemas: Authentication failed",  # signature_auth.rs:3330: SECURITY_EVENT has it
    "Key rotation completed successfully: 0813e30b-9cdc-415d-b3cd-0645ea508097",  # key_rotation_routes.rs:261
    "Loaded system public key from database",  # mainline signing.rs:106: a state, not a change
    "Starting public key cache warmup...",
])  # fmt: skip
def test_ignored_lines_are_noise(tmp_path: Path, message: str) -> None:
    adapter = new_adapter(tmp_path)
    assert adapter.feed(Line(real.web("INFO", message), "file:x", 0, NODE)) == []
    assert adapter.counts["noise"] == 1
