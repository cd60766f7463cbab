"""The DataFold adapter against every sample line the node emits (``../shared/datafold/samples``).

Each sample line is fed as a source would hand it over, and the keylife events that come out are
compared whole (every field: type, key, successor, node, state, usage, interval, actor,
attributes, time, id) and validated with keylife's own ``Event`` model, which is what
``POST /v1/events`` applies.
"""

from __future__ import annotations

import hashlib
import stat
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from keylife.datafold.build import content_stem
from keylife.datafold.contract import Line
from keylife.datafold.mapping import Adapter
from keylife.domain.events import Event, check_not_future
from tests.datafold_samples import samples_dir

NOW = datetime(2026, 1, 1, tzinfo=UTC)  # the adapter's clock: stamps key status changes
NODE = "node-a"
ROTATION = "0813e30b-9cdc-415d-b3cd-0645ea508097"
OLD, NEW = "378892e9ecc387ab", "edd38fc7ef24f8e0"
MASTER = f"datafold-master:{NODE}"
NODE_ID = f"datafold-node:{NODE}"  # the node's identity
SSE = "sse:http://node-a:9001/api/logs/stream"


def file_lines(name: str, node: str | None = NODE) -> list[Line]:
    """A sample file as the file follower reads it: one Line per line, position = byte offset."""
    out, pos = [], 0
    for raw in (samples_dir() / name).read_bytes().split(b"\n"):
        if raw:
            out.append(Line(raw.decode(), f"file:/var/log/datafold/{name}", pos, node))
        pos += len(raw) + 1
    return out


def web_lines() -> list[Line]:
    """web-logs.json (the /api/logs answer) as the SSE source hands its lines over."""
    texts = orjson.loads((samples_dir() / "web-logs.json").read_bytes())
    return [Line(text, SSE, n, NODE) for n, text in enumerate(texts)]


def status_answers() -> list[dict[str, Any]]:
    return orjson.loads((samples_dir() / "key-status.json").read_bytes())


def new_adapter(tmp_path: Path, **options: Any) -> Adapter:
    return Adapter(tmp_path / "rejects.ndjson", tmp_path / "key-status.json", clock=lambda: NOW, **options)


def valid(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every event is one keylife ingests: its model, and not too far in the future."""
    for event in events:
        assert check_not_future(Event.model_validate(event), datetime.now(UTC)) is None
        assert event["type"] not in {"admin_action", "command_refused", "auth_failure"}
    return events


def feed_all(adapter: Adapter, lines: Iterable[Line]) -> list[list[dict[str, Any]]]:
    return [valid(adapter.feed(line)) for line in lines]


def usage_id(node: str, key: str, start: str, source_ids: list[str]) -> str:
    """The documented usage report id: interval start + digest of node, key, start, sorted source ids."""
    ts = int(datetime.fromisoformat(start).timestamp())
    digest = hashlib.sha256("\0".join([node, key, str(ts), *sorted(source_ids)]).encode()).hexdigest()[:32]
    return f"df-usage-{start.replace('-', '').replace(':', '')}-{digest}"


def text_id(stamp: str, message: str, nth: int = 0, node: str = NODE) -> str:
    """The documented id stem of a SECURITY_AUDIT text line (it has no id of its own)."""
    return "df-t" + hashlib.sha256(f"{node}\0{stamp}\0{message}\0{nth}".encode()).hexdigest()[:32]


def usage(key: str, start: str, end: str, counts: dict[str, int], ids: list[str], master: bool = False) -> dict:
    meta = {"algorithm": "aes-256-gcm", "key_size": 256, "purpose": "encryption"} if master else {
        "algorithm": "ed25519", "purpose": "signing"}  # fmt: skip
    return {"id": usage_id(NODE, key, start, ids), "type": "usage_report", "key_id": key, "occurred_at": end,
            "node": NODE, "usage": counts, "interval_start": start, "interval_end": end, **meta}  # fmt: skip


def crypto(et: str, op: str, component: str, severity: str, result: str, **extra: str) -> dict[str, str]:
    return {"datafold.shape": "crypto_audit", "datafold.event_type": et, "datafold.operation": op,
            "datafold.component": component, "severity": severity, "result": result, **extra}  # fmt: skip


def bus(op: str, severity: str = "info", variant: str = "KeyRotation", **extra: str) -> dict[str, str]:
    return {"datafold.shape": "event_bus", "datafold.variant": variant, "datafold.operation": op,
            "datafold.component": "key_propagation", "severity": severity, "result": "Success", **extra}  # fmt: skip


ENC, DEC = "41bc68c3-1b3a-486b-88fb-f7140d00bafd", "38e98ed3-71e2-47ec-a0fd-9ae06b3013b9"
AUTH_OK = "eeeeb726-529e-43e1-b848-a6e1f58f24e6"
REQUEST = {"source_ip": "198.51.100.23", "user_agent": "datafold-python-sdk/0.4", "http.method": "POST",
           "http.path": "/api/mutation"}  # fmt: skip


# ----- shape 1 and 2: the node log ------------------------------------------------------------------
def test_node_log_every_line(tmp_path: Path) -> None:
    adapter = new_adapter(tmp_path)
    lines = file_lines("node-log.log")
    out = feed_all(adapter, lines)
    rotation = {"node": NODE, "actor": "client-7f3a", "correlation_id": ROTATION}
    # A rotation record names no key: a signal on the node's identity, never on the actor (issue 12 item 6).
    assert out[0] == [{
        "id": "df-6deda758-ef02-498f-a4a6-535b3f4fb043-0", "type": "security_event", "key_id": NODE_ID,
        "occurred_at": "2025-06-16T12:30:49.355921Z", "reason": f"rotation started (operation {ROTATION})",
        **rotation, "attributes": crypto("KeyOperation", "key_rotation_start", "crypto_key_ops", "info", "InProgress",
                                         rotation_reason="Scheduled", key_type="key_rotation",
                                         **{"datafold.signal": "rotation_started"})}]  # fmt: skip
    assert out[1] == [{
        "id": "df-21411b96-1a6e-4640-8ea1-69e64343c162-0", "type": "security_event", "key_id": NODE_ID,
        "occurred_at": "2025-06-16T12:12:03.725869Z", "reason": "Security key_rotation_validated", **rotation,
        "attributes": crypto("Security", "key_rotation_validated", "crypto_security", "warning", "Success",
                             rotation_reason="Scheduled")}]  # fmt: skip
    # One `rotated`: keylife deactivates the old key and activates (creating) the successor itself.
    assert out[2] == [{
        "id": "df-728768dc-7cad-4f4f-823b-2db33628cbac-0", "type": "rotated", "key_id": OLD, "successor": NEW,
        "occurred_at": "2025-06-16T12:08:34.940511Z", **rotation, "algorithm": "ed25519", "purpose": "signing",
        "attributes": {"datafold.shape": "crypto_audit", "datafold.operation": "key_rotation_complete"}}]  # fmt: skip
    assert out[3] == [] and out[4] == []  # encryption, decryption: held as usage
    assert adapter.safe_position(lines[3].source) == lines[3].position
    assert out[5] == [{
        "id": "df-e880ec07-ab06-4683-8465-55202584f058-0", "type": "security_event", "key_id": OLD,
        "occurred_at": "2025-06-16T12:14:41.901889Z", "node": NODE,
        "reason": "signature does not verify with old key",
        "attributes": crypto("Security", "invalid_key_rotation", "crypto_security", "critical", "Failure",
                             error_type="ValidationError", error_code="INVALID_SIGNATURE",
                             error_message="signature does not verify with old key", threat_level="medium",
                             source_ip="203.0.113.9", rotation_reason="Compromise",
                             errors="signature does not verify with old key",
                             public_key=OLD + "8b4585023a0286cce33b53f68e6f9833288305d32df5ce9f")}]  # fmt: skip
    assert out[6] == [{
        "id": "df-0bd99f98-b405-4370-8eaa-b8b0d2c3fcbb-0", "type": "security_event", "key_id": NODE_ID,
        "occurred_at": "2025-06-16T12:36:26.491141Z", "reason": "2 of 5 nodes did not confirm", "node": NODE,
        "actor": "client-7f3a", "correlation_id": "a8236113-986f-4c11-aedf-504bfea2fad4",
        "attributes": crypto("KeyOperation", "key_rotation_rollback", "crypto_key_ops", "error", "Failure",
                             error_type="PropagationError", error_code="ROLLBACK_EXECUTED",
                             error_message="2 of 5 nodes did not confirm", key_type="key_rotation",
                             **{"datafold.signal": "rotation_rolled_back"})}]  # fmt: skip
    # AuthenticationSuccess (12:46:25) is a verify; its interval opening closes the 12:05 interval
    # (ended more than the 60 s lateness before): that report comes out with this line.
    assert out[7] == [usage(MASTER, "2025-06-16T12:05:00Z", "2025-06-16T12:06:00Z", {"decrypt": 1}, [DEC], True)]
    assert out[8] == [{
        "id": "df-6d249dde-118f-44ec-9de5-616beba94dad-0", "type": "security_event", "key_id": "client-7f3a",
        "occurred_at": "2025-06-16T12:03:30Z", "node": NODE, "actor": "client-7f3a",
        "correlation_id": "dfdd10fe-1d7d-41e0-bb05-49a8d6f23f41", "reason": "AuthenticationFailure: rejected",
        "attributes": {"datafold.shape": "security_event", "datafold.event_type": "AuthenticationFailure",
                       "severity": "warning", **REQUEST, "error_code": "SIGNATURE_INVALID",
                       "error_message": "rejected", "processing_time_ms": "3"}}]  # fmt: skip
    assert out[9] == [{
        "id": "df-0b7c6124-4e20-4583-ad3f-b7cacb34ed43-0", "type": "security_event", "key_id": "client-7f3a",
        "occurred_at": "2025-06-16T12:40:12Z", "node": NODE, "actor": "client-7f3a",
        "correlation_id": "e2e35562-610f-4238-bbea-f339229b4f33", "reason": "ReplayAttempt: rejected",
        "attributes": {"datafold.shape": "security_event", "datafold.event_type": "ReplayAttempt",
                       "severity": "critical", **REQUEST, "error_code": "NONCE_REUSED", "error_message": "rejected",
                       "processing_time_ms": "3"}}]  # fmt: skip
    assert out[10] == [] and out[11] == []  # noise; the malformed crypto_audit line (rejected)
    assert valid(adapter.flush()) == [
        usage(MASTER, "2025-06-16T12:45:00Z", "2025-06-16T12:46:00Z", {"encrypt": 1}, [ENC], True),
        usage("client-7f3a", "2025-06-16T12:46:00Z", "2025-06-16T12:47:00Z", {"verify": 1}, [AUTH_OK]),
    ]
    assert adapter.safe_position(lines[3].source) is None
    assert dict(adapter.counts) == {
        "parsed.crypto_audit": 7, "events.crypto_audit": 5, "parsed.security_event": 3,
        "events.security_event": 2, "events.usage_report": 3, "noise": 1, "rejected.crypto_audit": 1,
    }  # fmt: skip


def test_malformed_line_lands_in_rejects_with_its_reason(tmp_path: Path) -> None:
    adapter = new_adapter(tmp_path)
    lines = file_lines("node-log.log")
    feed_all(adapter, lines)
    path = tmp_path / "rejects.ndjson"
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    (record,) = [orjson.loads(raw) for raw in path.read_bytes().splitlines()]
    assert record == {
        "source": "file:/var/log/datafold/node-log.log", "position": lines[11].position, "shape": "crypto_audit",
        "reason": "crypto audit message is not valid JSON: unexpected character, expected a string key: "
                  "line 1 column 2 (char 1)",
        "line": "[2025-06-16T12:30:01Z INFO  crypto_audit] {not json at all",
    }  # fmt: skip
    assert lines[10].text.endswith("connected to peer 12D3KooWQnode2") and adapter.counts["noise"] == 1


def test_web_logs_http_buffer_form(tmp_path: Path) -> None:
    adapter = new_adapter(tmp_path)
    lines = web_lines()
    out = feed_all(adapter, lines)
    assert out[0] == [] and adapter.safe_position(SSE) == 0  # the encryption, held
    assert out[1] == [] and adapter.counts["noise"] == 1  # "Starting DataFold node"
    assert out[2] == [{
        "id": "df-b46ba850-13a8-4cfb-8f72-bf6dc398ae69-0", "type": "security_event", "key_id": "client-7f3a",
        "occurred_at": "2025-06-16T12:01:40Z", "node": NODE, "actor": "client-7f3a",
        "correlation_id": "ef3f3833-d222-4dae-8b99-d805d2911e91", "reason": "RateLimitExceeded",
        "attributes": {"datafold.shape": "security_event", "datafold.event_type": "RateLimitExceeded",
                       "severity": "warning", "source_ip": "198.51.100.23", "http.method": "GET",
                       "http.path": "/api/schemas", "processing_time_ms": "0"}}]  # fmt: skip
    assert valid(adapter.flush()) == [
        usage(MASTER, "2025-06-16T12:45:00Z", "2025-06-16T12:46:00Z", {"encrypt": 1}, [ENC], True)
    ]


# ----- shape 3: the event bus -------------------------------------------------------------------------
def test_event_bus_every_line(tmp_path: Path) -> None:
    adapter = new_adapter(tmp_path)
    lines = file_lines("event-bus.jsonl")
    out = feed_all(adapter, lines)
    base = {"actor": "client-7f3a", "correlation_id": ROTATION}
    # ids: base.event_id plus a digest of the event's content (the propagation events share base.event_id)
    stems = [f"{eid}-{content_stem(orjson.loads(line.text)['event'])}" for eid, line in zip(
        ["dd4cd79c-c8c5-4f25-b7fd-0fe1731c5694", "ae5fff1f-4829-477b-bf88-3ff4457d391d",
         "01fb999f-fd24-453e-b992-79ca3c473620", "5882ee1e-4b1a-4631-b206-aa0f61ed0a9c",
         "c4c118f0-ce74-41f3-910b-79f9f4d747eb", "a5655225-e693-4eb4-8689-91d4715f9a62",
         "c36d9da3-ae3b-4803-8006-b1eb6c295ee1"], lines, strict=True)]  # fmt: skip
    # PropagationStarted: every target node holds the old key, active, until it is updated.
    assert out[0] == [
        {"id": f"df-{stems[0]}-{n}", "type": "propagated", "key_id": OLD,
         "occurred_at": "2025-06-16T13:31:45.553804Z", "node": node, "state": "active", **base,
         "attributes": bus("PropagationStarted")}
        for n, node in enumerate(["node-a", "node-b", "node-c", "node-d", "node-e"])
    ]  # fmt: skip
    # NodeUpdated: the node applied the rotation: the new key active, the old one deactivated.
    updated = [("ae5fff1f-4829-477b-bf88-3ff4457d391d", "node-a", "2025-06-16T13:37:41.532768Z"),
               ("01fb999f-fd24-453e-b992-79ca3c473620", "node-b", "2025-06-16T13:59:22.944734Z"),
               ("5882ee1e-4b1a-4631-b206-aa0f61ed0a9c", "node-c", "2025-06-16T13:46:59.349657Z"),
               ("c4c118f0-ce74-41f3-910b-79f9f4d747eb", "node-d", "2025-06-16T13:45:19.226761Z")]  # fmt: skip
    for got, stem, (_, node, at) in zip(out[1:5], stems[1:5], updated, strict=True):
        assert got == [
            {"id": f"df-{stem}-0", "type": "propagated", "key_id": NEW, "occurred_at": at, "node": node,
             "state": "active", **base, "attributes": bus("NodeUpdated")},
            {"id": f"df-{stem}-1", "type": "propagated", "key_id": OLD, "occurred_at": at, "node": node,
             "state": "deactivated", **base, "attributes": bus("NodeUpdated")},
        ]  # fmt: skip
    assert out[5] == [{
        "id": f"df-{stems[5]}-0", "type": "security_event", "key_id": OLD,
        "occurred_at": "2025-06-16T13:04:28.356415Z", "node": NODE,
        "reason": "key rotation PropagationFailed (PartialFailure)", **base,
        "attributes": bus("PropagationFailed", "warning", rotation_type="PropagationFailed",
                          propagation_status="PartialFailure", target_nodes="node-a,node-b,node-c,node-d,node-e",
                          operation_id=ROTATION, rotation_reason="Scheduled", user_id="user-19", old_key=OLD,
                          new_key=NEW, affected_associations="3")}]  # fmt: skip
    # Any variant but KeyRotation: a security event on the key it names, the raw variant kept.
    assert out[6] == [{
        "id": f"df-{stems[6]}-0", "type": "security_event", "key_id": "client-0000",
        "occurred_at": "2025-06-16T13:26:12.820085Z", "node": NODE, **base,
        "reason": "Authentication verify_request_signature",
        "attributes": bus("verify_request_signature", "warning", "Authentication", result="Failure",
                          error_type="AuthError", error_message="unknown keyid", source_ip="192.0.2.4",
                          **{"bus.auth_type": "rfc9421", "bus.method": "ed25519",
                             "bus.user_agent": "curl/8"})}]  # fmt: skip
    assert adapter.flush() == []


# ----- shape 4: security audit entries, JSON and text ---------------------------------------------------
def test_security_audit_entries_every_line(tmp_path: Path) -> None:
    adapter = new_adapter(tmp_path)
    out = feed_all(adapter, file_lines("security-audit.jsonl"))
    who = {"node": NODE, "actor": "client-7f3a"}
    assert out[0] == [
        {"id": "df-a28a1432-8e3d-4d39-9cf9-e6acda7ca2fc-0", "type": "generated", "key_id": "f7c37768272e1069",
         "occurred_at": "2025-06-16T13:26:00Z", "owner": "owner-3", **who, "algorithm": "ed25519",
         "purpose": "signing", "attributes": {"client_id": "client-7f3a", "permissions": "read,write"}},
        {"id": "df-a28a1432-8e3d-4d39-9cf9-e6acda7ca2fc-1", "type": "activated", "key_id": "f7c37768272e1069",
         "occurred_at": "2025-06-16T13:26:00Z", **who},
    ]  # fmt: skip
    assert out[1] == []  # a successful signature verification: usage
    assert out[2] == [{
        "id": "df-4e28ed7c-0a47-4994-83e4-edcd1c42556b-0", "type": "security_event", "key_id": "f7c37768272e1069",
        "occurred_at": "2025-06-16T13:24:38Z", "reason": "SignatureVerification failed: timestamp outside window",
        **who, "attributes": {"datafold.shape": "audit_entry", "datafold.event_type": "SignatureVerification",
                              "client_id": "client-7f3a", "error": "timestamp outside window",
                              "audit.timestamp_valid": "false"}}]  # fmt: skip
    assert out[3] == []  # EncryptionOperation: usage of the master key
    assert out[4] == [{
        "id": "df-bd25383b-d975-4195-831d-bb521d441d8b-0", "type": "revoked", "key_id": "f7c37768272e1069",
        "occurred_at": "2025-06-16T13:23:51Z", "reason": "key removed from the node", **who}]  # fmt: skip
    assert out[5] == [{
        "id": "df-98294d4b-4803-4bc4-a34d-994ceeb4970f-0", "type": "security_event",
        "key_id": "datafold-node:node-a", "occurred_at": "2025-06-16T13:27:32Z", "reason": "ConfigurationChange",
        "node": NODE, "actor": "admin-1",
        "attributes": {"datafold.shape": "audit_entry", "datafold.event_type": "ConfigurationChange",
                       "client_id": "client-7f3a", "audit.setting": "signatures_required",
                       "audit.old_value": "false", "audit.new_value": "true",
                       "audit.admin_id": "admin-1"}}]  # fmt: skip
    assert valid(adapter.flush()) == [
        usage(MASTER, "2025-06-16T13:23:00Z", "2025-06-16T13:24:00Z", {"encrypt": 1},
              ["df-cec00bd0-32de-41f7-8cef-8fb62bfe0c0e"], True),
        usage("f7c37768272e1069", "2025-06-16T13:27:00Z", "2025-06-16T13:28:00Z", {"verify": 1},
              ["df-ffbfac3c-859b-4f03-916d-89d055d7526e"]),
    ]  # fmt: skip


def test_security_audit_text_every_line(tmp_path: Path) -> None:
    adapter = new_adapter(tmp_path)
    lines = file_lines("security-audit-text.log")
    out = feed_all(adapter, lines)
    messages = [line.text.split("SECURITY_AUDIT: ", 1)[1] for line in lines]
    stem = text_id("2025-06-16T14:00:00Z", messages[0])
    who = {"node": NODE, "actor": "client-7f3a"}
    assert out[0] == [
        {"id": f"{stem}-0", "type": "generated", "key_id": "f7c37768272e1069", "occurred_at": "2025-06-16T14:00:00Z",
         "owner": "owner-3", **who, "algorithm": "ed25519", "purpose": "signing",
         "attributes": {"client_id": "client-7f3a"}},
        {"id": f"{stem}-1", "type": "activated", "key_id": "f7c37768272e1069", "occurred_at": "2025-06-16T14:00:00Z",
         **who},
    ]  # fmt: skip
    assert out[1] == [{
        "id": text_id("2025-06-16T14:00:05Z", messages[1]) + "-0", "type": "security_event",
        "key_id": "f7c37768272e1069", "occurred_at": "2025-06-16T14:00:05Z", "reason": "SignatureVerification failed",
        "node": NODE, "attributes": {"datafold.shape": "audit_text",
                                     "datafold.event_type": "SignatureVerification"}}]  # fmt: skip
    # "Event logged - type=key_removal" names no key and is logged whatever the outcome: kept as a
    # security event on the node's identity (a client name is not a key), not a revocation.
    assert out[2] == [{
        "id": text_id("2025-06-16T14:01:00Z", messages[2]) + "-0", "type": "security_event", "key_id": NODE_ID,
        "occurred_at": "2025-06-16T14:01:00Z", **who, "reason": f"SECURITY_AUDIT: {messages[2]}",
        "attributes": {"datafold.shape": "audit_text", "datafold.event": "key_removal",
                       "client_id": "client-7f3a"}}]  # fmt: skip


# ----- ids and re-reading -----------------------------------------------------------------------------
def all_sample_lines() -> list[Line]:
    names = ["node-log.log", "event-bus.jsonl", "security-audit.jsonl", "security-audit-text.log"]
    return [line for name in names for line in file_lines(name)] + web_lines()


def test_refeeding_the_same_lines_yields_identical_ids(tmp_path: Path) -> None:
    def run(adapter: Adapter) -> list[dict[str, Any]]:
        events = [e for batch in feed_all(adapter, all_sample_lines()) for e in batch]
        return events + valid(adapter.flush())

    first = run(new_adapter(tmp_path / "a"))
    assert run(new_adapter(tmp_path / "b")) == first  # a restart reading the files again
    again = new_adapter(tmp_path / "c")
    run(again)
    # The same adapter again (a source restarted from its saved position): the same ids and bodies;
    # a report may come out at another line, and the encryption in both node-log.log and
    # web-logs.json, reported twice in the first run under one id and body, now counts once.
    canonical = {orjson.dumps(e, option=orjson.OPT_SORT_KEYS) for e in first}
    assert {orjson.dumps(e, option=orjson.OPT_SORT_KEYS) for e in run(again)} == canonical
    assert len(first) == 38 and len(canonical) == len({e["id"] for e in first}) == 37


# ----- shape 5: key status ----------------------------------------------------------------------------
def test_key_status_emits_only_on_change_and_remembers_across_a_restart(tmp_path: Path) -> None:
    active, revoked, missing = status_answers()
    reg = active["data"]["registration_id"]
    attrs = {"client_id": "client-7f3a", "registration_id": reg, "public_key": active["data"]["public_key"],
             "key_name": "laptop"}  # fmt: skip
    who = {"node": NODE, "actor": "client-7f3a"}
    adapter = new_adapter(tmp_path)
    assert valid(adapter.status(active, "client-7f3a", NODE)) == [
        {"id": f"df-status-{reg}-{NEW}-0", "type": "generated", "key_id": NEW, "occurred_at": "2025-06-01T09:00:00Z",
         **who, "algorithm": "ed25519", "purpose": "signing", "attributes": attrs},
        {"id": f"df-status-{reg}-{NEW}-1", "type": "activated", "key_id": NEW, "occurred_at": "2025-06-01T09:00:00Z",
         **who, "attributes": attrs},
    ]  # fmt: skip
    reg_b = revoked["data"]["registration_id"]
    assert valid(adapter.status(revoked, "client-0c1d", NODE)) == [{
        "id": f"df-status-{reg_b}-{OLD}-c1", "type": "revoked", "key_id": OLD, "occurred_at": "2026-01-01T00:00:00Z",
        "reason": "key status of client client-0c1d on the node: revoked", "node": NODE, "actor": "client-0c1d",
        "attributes": {"client_id": "client-0c1d", "registration_id": reg_b,
                       "public_key": revoked["data"]["public_key"]}}]  # fmt: skip
    assert adapter.status(missing, "client-9e2b", NODE) == []  # never seen: nothing to change
    for answer, client in ((active, "client-7f3a"), (revoked, "client-0c1d"), (missing, "client-9e2b")):
        assert adapter.status(answer, client, NODE) == []  # unchanged
    state = tmp_path / "key-status.json"
    assert stat.S_IMODE(state.stat().st_mode) == 0o640

    restarted = new_adapter(tmp_path)  # same state file
    assert restarted.status(active, "client-7f3a", NODE) == []
    assert restarted.status(revoked, "client-0c1d", NODE) == []

    def answer(status: str, **data: Any) -> dict[str, Any]:
        return {"success": True, "data": {**active["data"], "status": status, **data}}

    changes = [(answer("suspended"), "suspended", NEW), (answer("suspended"), None, None),
               (answer("active"), "reactivated", NEW), (missing, "revoked", NEW), (missing, None, None)]  # fmt: skip
    seq = 0  # the client's change counter: it numbers the ids of changes stamped with the poll time
    for body, kind, key in changes:
        got = [
            (e["type"], e["key_id"], e["id"], e["occurred_at"])
            for e in valid(restarted.status(body, "client-7f3a", NODE))
        ]
        seq += kind is not None
        assert got == ([(kind, key, f"df-status-{reg}-{key}-c{seq}", "2026-01-01T00:00:00Z")] if kind else [])
