"""Every key answer shape DataFold's three branches produce, built as their serde output is, and
what keylife makes of each (issue 12, item 7). Each builder cites the handler and the struct.

Asserted field by field; every event is validated with keylife's own ``Event`` model, and no answer
that carries a key fact is rejected (``rejected.*`` stays empty).
"""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from keylife.datafold.contract import Line
from keylife.datafold.mapping import Adapter
from tests.fakes.datafold_node import api_error, chrono, public_key_info
from tests.test_datafold_mapping import valid

NOW = datetime(2026, 1, 1, tzinfo=UTC)
NODE = "node-a"
PUB_OLD = bytes(range(32))
PUB_NEW = bytes(range(100, 132))
OLD, NEW = PUB_OLD[:8].hex(), PUB_NEW[:8].hex()  # docs/datafold.md "Names of keys": hex of the first 8 bytes
CORR = "0813e30b-9cdc-415d-b3cd-0645ea508097"


@pytest.fixture
def adapter(tmp_path: Path) -> Adapter:
    return Adapter(tmp_path / "rejects.ndjson", tmp_path / "key-status.json", clock=lambda: NOW, validate=True)


def no_rejects(adapter: Adapter) -> None:
    assert not [k for k in adapter.counts if k.startswith("rejected")], adapter.counts


# ----- mainline: GET /api/security/system-key ---------------------------------------------------------
def system_key(**fields: Any) -> dict[str, Any]:
    """mainline security_routes.rs:57-60: json!({"success": true, "key": key_info}), PublicKeyInfo
    (security/types.rs:47-64) as register_system_public_key stores it (utils.rs:62-98)."""
    return {"success": True, "key": public_key_info(PUB_NEW) | fields}


def test_mainline_system_key_is_generated_activated_then_suspended_expired_and_removed(adapter: Adapter) -> None:
    events = valid(adapter.status(system_key(), "SYSTEM_WIDE_PUBLIC_KEY", NODE, 200))
    stem = f"df-status-SYSTEM_WIDE_PUBLIC_KEY-{NEW}"
    attrs = {"client_id": "SYSTEM_WIDE_PUBLIC_KEY", "registration_id": "SYSTEM_WIDE_PUBLIC_KEY",
             "public_key": PUB_NEW.hex(), "owner_id": "admin", "permissions": "read,write",
             "datafold.key_id": "SYSTEM_WIDE_PUBLIC_KEY"}  # fmt: skip
    at = datetime.fromtimestamp(1_764_000_000, UTC).isoformat().replace("+00:00", "Z")
    assert events == [
        {"id": f"{stem}-0", "type": "generated", "key_id": NEW, "occurred_at": at, "node": NODE,
         "actor": "SYSTEM_WIDE_PUBLIC_KEY", "attributes": attrs, "algorithm": "ed25519", "purpose": "signing"},
        {"id": f"{stem}-1", "type": "activated", "key_id": NEW, "occurred_at": at, "node": NODE,
         "actor": "SYSTEM_WIDE_PUBLIC_KEY", "attributes": attrs},
    ]  # fmt: skip
    assert adapter.status(system_key(), "SYSTEM_WIDE_PUBLIC_KEY", NODE, 200) == []  # unchanged
    [suspended] = valid(adapter.status(system_key(is_active=False), "SYSTEM_WIDE_PUBLIC_KEY", NODE, 200))
    assert (suspended["type"], suspended["key_id"], suspended["id"]) == ("suspended", NEW, f"{stem}-c1")
    assert suspended["occurred_at"] == "2026-01-01T00:00:00Z"  # the poll's time: the answer has none
    [expired] = valid(adapter.status(system_key(expires_at=1_700_000_000), "SYSTEM_WIDE_PUBLIC_KEY", NODE, 200))
    assert (expired["type"], expired["key_id"]) == ("expired", NEW)
    # security_routes.rs:61-64: 404 {"success": false, "error": "System key not found"} -- "no such key"
    [removed] = valid(adapter.status({"success": False, "error": "System key not found"},
                                     "SYSTEM_WIDE_PUBLIC_KEY", NODE, 404))  # fmt: skip
    assert (removed["type"], removed["key_id"], removed["attributes"]["error_code"]) == ("revoked", NEW, "NOT_FOUND")
    assert removed["reason"] == "key status of client SYSTEM_WIDE_PUBLIC_KEY: System key not found"
    no_rejects(adapter)


def test_a_404_with_a_plain_string_error_is_no_such_key_and_a_500_one_a_failed_poll(adapter: Adapter) -> None:
    valid(adapter.status(system_key(), "SYSTEM_WIDE_PUBLIC_KEY", NODE, 200))
    # security_routes.rs:65-68: 500 json!({"success": false, "error": e.to_string()})
    lock = {"success": False, "error": "Key not found: Failed to acquire read lock"}
    assert adapter.status(lock, "SYSTEM_WIDE_PUBLIC_KEY", NODE, 500) == []
    assert adapter.status({"success": False, "error": "anything"}, "SYSTEM_WIDE_PUBLIC_KEY", NODE, 404) != []
    no_rejects(adapter)


def test_mainline_answers_read_from_lines_are_parsed_not_rejected(adapter: Adapter) -> None:
    def fed(obj: dict[str, Any]) -> list[dict[str, Any]]:
        return valid(adapter.feed(Line(orjson.dumps(obj).decode(), "file:/tmp/answers.ndjson", 0, NODE)))

    assert [e["type"] for e in fed(system_key())] == ["generated", "activated"]
    # types.rs:157-164 KeyRegistrationResponse (utils.rs:93-97) and security_routes.rs:41-44 (DELETE)
    assert fed({"success": True, "public_key_id": "SYSTEM_WIDE_PUBLIC_KEY", "error": None}) == []
    assert fed({"success": True, "message": "System key removed successfully"}) == []
    assert [e["type"] for e in fed({"success": False, "error": "System key not found"})] == ["revoked"]
    assert adapter.counts["answers.acknowledged"] == 2 and adapter.counts["parsed.key_status"] == 4
    no_rejects(adapter)


def test_the_system_key_has_one_name_in_log_lines_and_status_answers(adapter: Adapter) -> None:
    """mainline's "Registered/Removed system public key" lines (security/signing.rs:156, :179) name no
    key bytes; the status answer does. Once polled, the lines name the key the answer named, so one
    key is never described under two names."""

    def line(message: str) -> list[dict[str, Any]]:
        return valid(adapter.feed(Line(f"INFO - {message}", "sse:/api/logs/stream", 0, NODE)))

    assert {e["key_id"] for e in line("Registered system public key")} == {f"datafold-system:{NODE}"}
    valid(adapter.status(system_key(), "SYSTEM_WIDE_PUBLIC_KEY", NODE, 200))
    [removed] = line("Removed system public key")
    assert (removed["type"], removed["key_id"]) == ("revoked", NEW)


# ----- security / security2: key status and registration --------------------------------------------
def key_status(status: str = "active", **fields: Any) -> dict[str, Any]:
    """crypto_routes.rs:755-770 (security) / :770-785 (security2): ApiResponse::success(PublicKeyStatusResponse)."""
    data = {"registration_id": "6f0c2a5e-3b9d-4f21-9a77-1c2d3e4f5a6b", "client_id": "client-7f3a",
            "public_key": PUB_NEW.hex(), "key_name": None, "registered_at": chrono(datetime(2025, 6, 1, 9, tzinfo=UTC)),
            "status": status, "last_used": None}  # fmt: skip
    return {"success": True, "data": data | fields}


def test_security_status_error_shapes(adapter: Adapter) -> None:
    valid(adapter.status(key_status(), "client-7f3a", NODE, 200))
    # crypto_routes.rs:782-789: DATABASE_ERROR / INTERNAL_ERROR are 500 ApiErrors: a failed poll
    assert adapter.status(api_error("DATABASE_ERROR", "Failed to lookup client: io"), "client-7f3a", NODE, 500) == []
    # REGISTRATION_NOT_FOUND is a 404 like CLIENT_NOT_FOUND (:784-786): the node lost the key
    gone = api_error("REGISTRATION_NOT_FOUND", "Registration record not found")
    [revoked] = valid(adapter.status(gone, "client-7f3a", NODE, 404))
    assert (revoked["type"], revoked["key_id"], revoked["attributes"]["error_code"]) == (
        "revoked", NEW, "REGISTRATION_NOT_FOUND")  # fmt: skip
    no_rejects(adapter)


def test_the_registration_answer_is_a_key_status_without_last_used(adapter: Adapter) -> None:
    """crypto_routes.rs:687-690: 201 ApiResponse::success(PublicKeyRegistrationResponse), :170-177."""
    answer = key_status()
    del answer["data"]["last_used"]
    assert [e["type"] for e in valid(adapter.status(answer, "client-7f3a", NODE, 201))] == ["generated", "activated"]
    conflict = api_error("CLIENT_ALREADY_REGISTERED", "Client already has a registered public key. Use update "
                         "endpoint to change keys.")  # fmt: skip
    assert adapter.status(conflict, "client-7f3a", NODE, 409) == []
    no_rejects(adapter)


# ----- security: rotation status and history; security2: 501 ----------------------------------------
def rotation(status: str = "Completed", **fields: Any) -> dict[str, Any]:
    """key_rotation_routes.rs:346-356: KeyRotationStatusResponse (:62-81) from a KeyRotationRecord."""
    return {"correlation_id": CORR, "status": status, "old_public_key": PUB_OLD.hex(), "new_public_key": PUB_NEW.hex(),
            "reason": "Scheduled", "started_at": chrono(datetime(2025, 6, 2, 8, tzinfo=UTC)),
            "completed_at": chrono(datetime(2025, 6, 2, 8, 0, 3, tzinfo=UTC)), "associations_updated": 4,
            "error_details": None} | fields  # fmt: skip


def test_a_completed_rotation_names_both_keys(adapter: Adapter) -> None:
    [rotated] = valid(adapter.status({"success": True, "data": rotation()}, "client-7f3a", NODE, 200))
    assert rotated == {
        "id": f"df-rotation-{CORR}", "type": "rotated", "key_id": OLD, "successor": NEW,
        "occurred_at": "2025-06-02T08:00:03Z", "node": NODE, "correlation_id": CORR,
        "algorithm": "ed25519", "purpose": "signing",  # the successor is a client's Ed25519 key
        "reason": f"key rotation {CORR} completed (Scheduled)",
        "attributes": {"datafold.shape": "rotation_status", "rotation_status": "Completed",
                       "rotation_reason": "Scheduled", "old_public_key": PUB_OLD.hex(),
                       "new_public_key": PUB_NEW.hex(), "started_at": "2025-06-02T08:00:00+00:00",
                       "associations_updated": "4"},
    }  # fmt: skip
    no_rejects(adapter)


def test_failed_and_rolled_back_rotations_are_security_events_and_running_ones_nothing(adapter: Adapter) -> None:
    failed = rotation("Failed", completed_at=None, error_details="association update failed")
    [event] = valid(adapter.status({"success": True, "data": failed}, "client-7f3a", NODE, 200))
    assert (event["type"], event["key_id"], event["id"]) == ("security_event", OLD, f"df-rotation-{CORR}-failed")
    assert event["occurred_at"] == "2025-06-02T08:00:00Z" and event["attributes"]["successor"] == NEW
    assert event["reason"] == f"key rotation {CORR} Failed (Scheduled): association update failed"
    [back] = valid(adapter.status({"success": True, "data": rotation("RolledBack")}, "c", NODE, 200))
    assert back["id"] == f"df-rotation-{CORR}-rolledback" and back["type"] == "security_event"
    for running in ("Requested", "Validating", "InProgress"):
        assert adapter.status({"success": True, "data": rotation(running)}, "c", NODE, 200) == []
    # :362-365, :377-381: 404 ROTATION_NOT_FOUND; security2 key_rotation_routes.rs:103-110: 501 not_implemented
    assert adapter.status(api_error("ROTATION_NOT_FOUND", "No rotation record found for the given correlation ID"),
                          "c", NODE, 404) == []  # fmt: skip
    assert adapter.status(api_error("not_implemented", "Key rotation status query is not yet implemented"),
                          "c", NODE, 501) == []  # fmt: skip
    no_rejects(adapter)


def test_history_names_the_rotation_and_the_status_change_is_not_told_twice(adapter: Adapter) -> None:
    old_status = key_status(public_key=PUB_OLD.hex())
    assert len(valid(adapter.status(old_status, "client-7f3a", NODE, 200))) == 2
    # key_rotation_routes.rs:431-447: KeyRotationHistoryResponse with KeyRotationHistoryEntry (:104-123)
    entry = {k: v for k, v in rotation().items() if k not in ("associations_updated", "error_details")}
    history = {"success": True, "data": {"public_key": PUB_NEW.hex(), "rotations": [entry | {"actor": "ops"}],
                                         "total_count": 1}}  # fmt: skip
    [rotated] = valid(adapter.status(history, "client-7f3a", NODE, 200))
    assert (rotated["type"], rotated["key_id"], rotated["successor"], rotated["actor"]) == ("rotated", OLD, NEW, "ops")
    assert rotated["id"] == f"df-rotation-{CORR}"  # the same id as from the status answer: one event
    assert valid(adapter.status(key_status(), "client-7f3a", NODE, 200)) == []  # the change is the rotation's
    no_rejects(adapter)


def test_answers_of_no_known_form_are_still_rejected(adapter: Adapter) -> None:
    assert adapter.status({"success": True, "data": {"something": 1}}, "c", NODE, 200) == []
    assert adapter.counts["rejected.key_status"] == 1
    bad_key = {"success": True, "key": public_key_info(PUB_NEW) | {"public_key": "not base64!"}}
    assert adapter.status(bad_key, "c", NODE, 200) == []
    assert adapter.counts["rejected.key_status"] == 2
    assert base64.b64encode(PUB_NEW).decode() == public_key_info(PUB_NEW)["public_key"]


def test_rotate_stats_and_validate_answers_are_known_not_rejected(adapter: Adapter) -> None:
    # security key_rotation_routes.rs:266-274: KeyRotationApiResponse (:36-51); new_key_id is
    # hex(new_public_key_hex.as_bytes()[..8]) (key_rotation_operations.rs:300): not a key name
    rotate = {"success": True, "new_key_id": PUB_NEW.hex()[:8].encode().hex(), "old_key_invalidated": True,
              "correlation_id": CORR, "timestamp": chrono(NOW), "warnings": [], "associations_updated": 0}  # fmt: skip
    # security2 key_rotation_routes.rs:78-90 / :143-151: KeyRotationResponse stubs, 202
    stub = {"correlation_id": "stub-correlation-id", "status": "queued", "new_public_key": None,
            "timestamp": chrono(NOW), "details": "Rotation request accepted"}  # fmt: skip
    # security :475-510 statistics (a HashMap, db_operations/key_rotation_operations.rs:508-560); :535-543 validation
    stats = {"total_rotations": 3, "successful_rotations": 2, "failed_rotations": 1, "success_rate": 66.66666666666666,
             "reason_breakdown": {"Scheduled": 3}}  # fmt: skip
    valid_answer = {"valid": True, "errors": [], "warnings": [], "request_id": "unknown"}
    for data in (rotate, stub, stats, valid_answer):
        assert adapter.status({"success": True, "data": data}, "c", NODE, 200) == []
    assert adapter.counts["answers.acknowledged"] == 4
    no_rejects(adapter)


def test_mainlines_other_security_answers_are_known_and_the_demo_secret_never_stored(
    adapter: Adapter, tmp_path: Path
) -> None:
    # mainline security_routes.rs:80-89, :104-111, :125-133, :213-216, :241-246
    answers = [
        {"success": True, "verification_result": {"is_valid": True, "timestamp_valid": True, "owner_id": "admin",
                                                  "permissions": ["read"], "error": None}},
        {"success": True, "warning": "This is for development/testing only. Never expose secret keys in production!",
         "keypair": {"public_key": base64.b64encode(PUB_NEW).decode(), "secret_key": "c2VjcmV0"}},
        {"success": True, "status": {"signatures_required": True, "tls_required": False, "encryption_enabled": False,
                                     "system_key_present": True}},
        {"success": True, "examples": {"javascript": "..."}},
        {"success": True, "message": "Access granted", "authenticated_user": "admin", "data": "This is protected data"},
    ]  # fmt: skip
    for answer in answers:
        line = Line(orjson.dumps(answer).decode(), "file:/tmp/answers.ndjson", 0, NODE)
        assert adapter.feed(line) == []
    assert adapter.counts["answers.acknowledged"] == 5
    no_rejects(adapter)
    assert not (tmp_path / "rejects.ndjson").exists()
