"""Issue 12 items 1, 2, 3, 10: framings and crypto audit records exactly as DataFold's code prints them
(builders in tests/datafold_real.py cite the structs and ``format!`` strings)."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from keylife.datafold.build import source_id
from keylife.datafold.contract import Line
from tests import datafold_real as real
from tests.test_datafold_mapping import NOW, new_adapter, valid

NODE = real.NODE
NODE_ID = f"datafold-node:{NODE}"
OP = "0813e30b-9cdc-415d-b3cd-0645ea508097"
OLD_PK = "378892e9ecc387ab8b4585023a0286cce33b53f68e6f9833288305d32df5ce9f"
SRC = "file:/var/log/datafold/node.log"


def feed(adapter, texts: list[str]) -> list[list[dict]]:
    return [valid(adapter.feed(Line(text, SRC, n * 1000, NODE))) for n, text in enumerate(texts)]


def no_rejects(adapter, tmp_path: Path) -> None:
    assert not (tmp_path / "rejects.ndjson").exists()
    assert not [k for k in adapter.counts if k.startswith("rejected.")]


# ----- item 1: framings -------------------------------------------------------------------------------
@pytest.mark.parametrize("framing", ["web", "env", "env-colour"])
def test_every_framing_of_a_crypto_audit_record_maps_the_same(tmp_path: Path, framing: str) -> None:
    record = real.key_operation("key_rotation_start", "InProgress", OP, event_id="6deda758-ef02-498f-a4a6-535b3f4fb043")
    message = real.compact(record)
    text = {
        "web": real.web("INFO", message),  # mainline/security web_logger.rs:31
        "env": real.env("2025-06-16T12:30:49Z", "INFO", "crypto_audit", message),  # security2 env_logger
        "env-colour": real.env("2025-06-16T12:30:49Z", "INFO", "crypto_audit", message, colour=True),
    }[framing]
    adapter = new_adapter(tmp_path)
    (events,) = feed(adapter, [text])
    assert events == [
        {
            "id": "df-6deda758-ef02-498f-a4a6-535b3f4fb043-0",
            "type": "security_event",
            "key_id": NODE_ID,
            "occurred_at": "2025-06-16T12:30:49.355921Z",
            "node": NODE,
            "correlation_id": OP,
            "reason": f"rotation started (operation {OP})",
            "attributes": {
                "datafold.shape": "crypto_audit",
                "datafold.event_type": "KeyOperation",
                "datafold.operation": "key_rotation_start",
                "datafold.component": "crypto_key_ops",
                "datafold.signal": "rotation_started",
                "severity": "error",
                "result": "InProgress",
                "session_id": real.SESSION,
                "key_type": "key_rotation",
            },
        }
    ]
    no_rejects(adapter, tmp_path)


def test_security_audit_text_under_the_web_logger_takes_the_time_of_reading(tmp_path: Path) -> None:
    # mainline security/audit.rs:180-183: info!("SECURITY_AUDIT: Key registered - key_id={}, owner_id={}, client={:?}")
    text = real.web(
        "INFO",
        'SECURITY_AUDIT: Key registered - key_id=f7c37768272e1069, owner_id=owner-1, client=Some("admin-console")',
    )
    adapter = new_adapter(tmp_path)
    (events,) = feed(adapter, [text])
    assert [(e["type"], e["key_id"], e["occurred_at"], e["attributes"]["time_source"]) for e in events] == [
        ("generated", "f7c37768272e1069", "2026-01-01T00:00:00Z", "read"),
        ("activated", "f7c37768272e1069", "2026-01-01T00:00:00Z", "read"),
    ]
    assert events[0]["id"].startswith("df-r") and events[0]["actor"] == "admin-console"
    # the same file position read again: the same id (the time differs: keylife keeps the first)
    again = new_adapter(tmp_path / "again").feed(Line(text, SRC, 0, NODE))
    assert [e["id"] for e in again] == [e["id"] for e in events]
    no_rejects(adapter, tmp_path)


def test_security2_unified_crypto_console_lines_are_counted_not_rejected(tmp_path: Path) -> None:
    # security2 unified_crypto/audit.rs:1169-1177 println!("[{}] {} {} - {} ({}): {}"), format_timestamp :1241
    adapter = new_adapter(tmp_path)
    line = "[1750075410.123] INFO key_manager - key_generation (SUCCESS): audit-18f4c2a9b1d3e5f7"
    assert feed(adapter, [line]) == [[]]
    assert adapter.counts["noise.unified_crypto_audit"] == 1 and adapter.counts["parsed.plain"] == 1
    no_rejects(adapter, tmp_path)


# ----- item 2: CRYPTO AUDIT ALERT ----------------------------------------------------------------------
@pytest.mark.parametrize("framing", ["web", "env"])
def test_alerts_duplicate_their_record_and_are_never_rejected(tmp_path: Path, framing: str) -> None:
    record = real.security_audit(
        "invalid_key_rotation",
        "invalid_key_rotation_attempt",
        "medium",
        "203.0.113.9",
        OLD_PK,
        {"errors": "Invalid signature; Timestamp too old", "reason": "Compromise"},
        real.failure("ValidationError", "Invalid signature; Timestamp too old", "INVALID_ROTATION_REQUEST"),
        None,
    )
    adapter = new_adapter(tmp_path)
    out = feed(
        adapter, [real.crypto_line(record, framing), real.alert_line(record, framing), real.alert_line(record, framing)]
    )
    assert [len(e) for e in out] == [1, 0, 0]
    assert adapter.counts["crypto_audit_alert.duplicate"] == 1
    assert adapter.counts["crypto_audit_alert.uncorrelated"] == 1  # a second alert with no record before it
    no_rejects(adapter, tmp_path)


# ----- item 3: rotation records name no key ------------------------------------------------------------
ROTATION_RECORDS = [
    # db_operations/key_rotation_operations.rs:115-125
    (real.key_operation("key_rotation_start", "InProgress", OP, millis=0), "rotation_started", "InProgress"),
    # :160-169, Success and Failure
    (real.key_operation("key_rotation_complete", "Success", OP, millis=12), "rotation_completed", "Success"),
    (
        real.key_operation(
            "key_rotation_complete",
            real.failure("KEY_NOT_FOUND", "Old public key has no associations", "KEY_NOT_FOUND"),
            OP,
        ),
        "rotation_failed",
        "Failure",
    ),
    # :247-261
    (
        real.key_operation(
            "key_rotation_rollback",
            real.failure(
                "TRANSACTION_ROLLBACK", "Key rotation rolled back due to storage failure", "ROLLBACK_EXECUTED"
            ),
            OP,
        ),
        "rotation_rolled_back",
        "Failure",
    ),
    # db_operations/key_rotation_rollback.rs:262-270
    (
        real.key_operation("rollback_started", "InProgress", OP, key_type="key_rotation_rollback"),
        "rotation_rollback_started",
        "InProgress",
    ),
    # crypto/key_rotation_audit.rs:275-283 then :455-463: the description is the operation
    (real.key_operation("Key rotation operation initiated", "InProgress", OP), "rotation_event", "InProgress"),
    # crypto/key_rotation.rs:350-358 (no correlation id)
    (
        real.key_operation(
            "validate_rotation_request",
            real.failure("ValidationError", "Invalid signature", "ROTATION_VALIDATION_FAILED"),
            None,
        ),
        "rotation_request_rejected",
        "Failure",
    ),
]


@pytest.mark.parametrize(("record", "signal", "result"), ROTATION_RECORDS)
def test_rotation_records_are_signals_on_the_node_identity(
    tmp_path: Path, record: dict, signal: str, result: str
) -> None:
    adapter = new_adapter(tmp_path)
    (events,) = feed(adapter, [real.crypto_line(record)])
    (event,) = events
    assert event["type"] == "security_event" and event["key_id"] == NODE_ID  # never the AES master key
    assert event.get("correlation_id") == record["correlation_id"] and "actor" not in event
    assert event["attributes"]["datafold.signal"] == signal and event["attributes"]["result"] == result
    assert event["id"] == f"df-{record['event_id']}-0" and event["node"] == NODE
    if isinstance(record["result"], dict):
        assert event["reason"] == record["result"]["Failure"]["error_message"]
    no_rejects(adapter, tmp_path)


def test_rotation_validation_records_land_on_the_old_key_and_anonymous_is_no_actor(tmp_path: Path) -> None:
    corr = str(uuid.uuid4())
    # datafold_node/key_rotation_routes.rs:220-250: target = hex of the old public key, actor "anonymous"
    validated = real.security_audit(
        "key_rotation_validated",
        "key_rotation_validated",
        "info",
        "203.0.113.9",
        OLD_PK,
        {"correlation_id": corr, "reason": "Scheduled", "actor": "anonymous"},
        "Success",
        corr,
    )
    # :166-196: errors joined with "; " (a string, item 10)
    invalid = real.security_audit(
        "invalid_key_rotation",
        "invalid_key_rotation_attempt",
        "medium",
        "203.0.113.9",
        OLD_PK,
        {"errors": "Invalid signature; Timestamp too old", "reason": "Policy"},
        real.failure("ValidationError", "Invalid signature; Timestamp too old", "INVALID_ROTATION_REQUEST"),
        None,
    )
    adapter = new_adapter(tmp_path)
    ((ok,), (bad,)) = feed(adapter, [real.crypto_line(validated), real.crypto_line(invalid)])
    assert (ok["key_id"], ok["correlation_id"], "actor" in ok) == ("378892e9ecc387ab", corr, False)
    assert ok["attributes"]["datafold.actor"] == "anonymous" and ok["attributes"]["public_key"] == OLD_PK
    assert ok["attributes"]["rotation_reason"] == "Scheduled" and ok["attributes"]["severity"] == "warning"
    assert bad["key_id"] == "378892e9ecc387ab" and bad["attributes"]["errors"] == "Invalid signature; Timestamp too old"
    assert (
        bad["attributes"]["error_code"] == "INVALID_ROTATION_REQUEST" and bad["attributes"]["threat_level"] == "medium"
    )
    assert bad["attributes"]["source_ip"] == "203.0.113.9" and bad["attributes"]["severity"] == "critical"
    no_rejects(adapter, tmp_path)


def test_other_crypto_records_never_land_on_the_master_key_unless_they_are_encryption(tmp_path: Path) -> None:
    # audit_logger.rs:347-396 backup/restore and 487-532 log_error_event: node-level facts
    backup = real.audit_event(
        "BackupRestore",
        "Info",
        "crypto_backup",
        "backup_create",
        "Success",
        {"backup_path": "/b/1", "items_processed": 3, "total_size": 9},
        None,
    )
    enc_failed = real.audit_event(
        "Encryption",
        "Error",
        "crypto_encryption",
        "encrypt_atom",
        real.failure("EncryptionError", "bad nonce", None),
        {"context": "atom", "data_size": 12},
        None,
    )
    adapter = new_adapter(tmp_path)
    ((b,), (e,)) = feed(adapter, [real.crypto_line(backup), real.crypto_line(enc_failed)])
    assert b["key_id"] == NODE_ID and e["key_id"] == f"datafold-master:{NODE}"
    no_rejects(adapter, tmp_path)


# ----- the rotation status answer: the record that names both keys ---------------------------------------
def status_answer(status: str) -> dict:
    """key_rotation_routes.rs:336-346 ``KeyRotationStatusResponse`` in ``ApiResponse::success``
    (crypto_routes.rs:22-38)."""
    return {
        "success": True,
        "data": {
            "correlation_id": OP,
            "status": status,
            "old_public_key": OLD_PK,
            "new_public_key": "edd38fc7ef24f8e0" + "11" * 24,
            "reason": "Scheduled",
            "started_at": "2025-06-16T12:08:30.100000Z",
            "completed_at": "2025-06-16T12:08:34.940511Z",
            "associations_updated": 3,
            "error_details": None if status == "Completed" else "storage failure",
        },
    }


def test_rotation_status_answer_is_the_rotation_with_both_keys(tmp_path: Path) -> None:
    adapter = new_adapter(tmp_path)
    (rotated,) = valid(adapter.rotation_status(status_answer("Completed"), NODE))
    assert {
        k: rotated[k]
        for k in (
            "id",
            "type",
            "key_id",
            "successor",
            "occurred_at",
            "correlation_id",
            "node",
            "algorithm",
            "purpose",
            "reason",
        )
    } == {
        "id": f"df-rotation-{source_id(OP)}",
        "type": "rotated",
        "key_id": "378892e9ecc387ab",
        "successor": "edd38fc7ef24f8e0",
        "occurred_at": "2025-06-16T12:08:34.940511Z",
        "correlation_id": OP,
        "node": NODE,
        "algorithm": "ed25519",
        "purpose": "signing",
        "reason": f"key rotation {OP} completed (Scheduled)",
    }
    assert adapter.rotation_status(status_answer("Completed"), NODE) == [rotated]  # polled again: same event
    (failed,) = valid(adapter.rotation_status(status_answer("RolledBack"), NODE))
    assert (failed["type"], failed["key_id"], failed["reason"]) == (
        "security_event",
        "378892e9ecc387ab",
        f"key rotation {OP} RolledBack (Scheduled): storage failure",
    )
    assert adapter.rotation_status(status_answer("InProgress"), NODE) == []
    import orjson  # the same answer as a whole line (a poller that writes its answers to a file)

    (line_event,) = adapter.feed(Line(orjson.dumps(status_answer("Completed")).decode(), "file:answers", 0, NODE))
    assert line_event == rotated
    assert NOW  # the answer carries its own times: the clock is not used
