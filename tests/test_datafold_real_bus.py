"""Issue 12 item 5: the event bus as its code writes it (security/security2 events/), and the ids of
events that share ``base.event_id``."""

from __future__ import annotations

import copy
import uuid
from pathlib import Path

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from keylife.datafold.build import content_stem
from keylife.datafold.contract import Line
from tests import datafold_real as real
from tests.test_datafold_mapping import new_adapter, valid

NODE = real.NODE
OLD, NEW = "378892e9ecc387ab", "edd38fc7ef24f8e0"
OP = "0813e30b-9cdc-415d-b3cd-0645ea508097"
EID = "dd4cd79c-c8c5-4f25-b7fd-0fe1731c5694"
TARGETS = ["node-b", "node-c"]


def rotation_family() -> list[dict]:
    """What key_rotation_handlers.rs:116-256 publishes for one RotationCompleted: clones of it with
    rotation_type / propagation_status / target_nodes changed (:373-401), base and event_id kept."""
    original = real.key_rotation(real.verification_event(EID, "Success", OP), "RotationCompleted", OLD, NEW, OP, [],
                                 "Pending")  # fmt: skip

    def clone(kind: str, status: str | None, targets: list[str]) -> dict:
        event = copy.deepcopy(original)
        body = event["KeyRotation"]
        body["rotation_type"], body["target_nodes"] = kind, targets
        if status is not None:
            body["propagation_status"] = status
        return event

    return [original, clone("PropagationStarted", "InProgress", TARGETS),
            clone("NodeUpdated", None, ["node-b"]), clone("NodeUpdated", None, ["node-c"]),
            clone("PropagationCompleted", "Completed", TARGETS)]  # fmt: skip


def test_the_bare_form_parses_and_clones_sharing_an_event_id_get_distinct_ids(tmp_path: Path) -> None:
    adapter = new_adapter(tmp_path)
    # AuditLogHandler (events/handlers.rs:104-110): serde_json::to_string(&event) + "\n", the bare SecurityEvent
    lines = [
        Line(real.compact(ev), "file:/var/log/datafold/audit.log", n, NODE) for n, ev in enumerate(rotation_family())
    ]
    out = [valid(adapter.feed(line)) for line in lines]
    stems = [f"df-{EID}-{content_stem(ev)}" for ev in rotation_family()]
    assert out[0] == [{"id": f"{stems[0]}-0", "type": "rotated", "key_id": OLD, "successor": NEW,
                       "occurred_at": "2025-06-16T13:31:45.553804Z", "node": NODE, "correlation_id": OP,
                       "reason": "Scheduled", "algorithm": "ed25519", "purpose": "signing",
                       "attributes": {"datafold.shape": "event_bus", "datafold.variant": "KeyRotation",
                                      "datafold.operation": "network_propagation",
                                      "datafold.component": "key_rotation_network", "severity": "info",
                                      "result": "Success"}}]  # fmt: skip
    assert [(e["id"], e["key_id"], e["node"], e["state"]) for e in out[1]] == [
        (f"{stems[1]}-0", OLD, "node-b", "active"),
        (f"{stems[1]}-1", OLD, "node-c", "active"),
    ]
    # NodeUpdated names its node only in target_nodes (handlers.rs:395-398)
    assert [(e["key_id"], e["node"], e["state"]) for e in out[2]] == [(NEW, "node-b", "active"),
                                                                      (OLD, "node-b", "deactivated")]  # fmt: skip
    assert [(e["key_id"], e["node"]) for e in out[3]] == [(NEW, "node-c"), (OLD, "node-c")]
    assert len(out[4]) == 4
    ids = [e["id"] for events in out for e in events]
    assert len(ids) == len(set(ids))  # no 409: every event kept
    assert not (tmp_path / "rejects.ndjson").exists()


def test_the_envelope_form_has_no_node_in_source_and_an_object_or_null_target(tmp_path: Path) -> None:
    event = rotation_family()[2]
    wrapped = real.envelope(event)
    wrapped_target = {**real.envelope(event), "target": {**wrapped["source"], "platform_type": "rust-cli"}}
    adapter = new_adapter(tmp_path)
    bare = valid(adapter.feed(Line(real.compact(event), "file:a", 0, NODE)))
    for n, obj in enumerate([wrapped, wrapped_target]):
        assert valid(adapter.feed(Line(real.compact(obj), "file:b", n, NODE))) == bare  # same ids: read twice
    assert not (tmp_path / "rejects.ndjson").exists()


def test_a_propagation_cloned_from_rotation_started_still_says_what_was_applied(tmp_path: Path) -> None:
    # handlers.rs:436-443 runs on RotationStarted too; its clones keep result InProgress
    started = real.key_rotation(real.verification_event(str(uuid.uuid4()), "InProgress", OP, "Warning"),
                                "NodeUpdated", OLD, NEW, OP, ["node-d"], "Pending")  # fmt: skip
    events = valid(new_adapter(tmp_path).feed(Line(real.compact(started), "file:a", 0, NODE)))
    assert [(e["type"], e["key_id"], e["node"], e["state"]) for e in events] == [
        ("propagated", NEW, "node-d", "active"),
        ("propagated", OLD, "node-d", "deactivated"),
    ]
    failed = rotation_family()[4]
    failed["KeyRotation"]["rotation_type"], failed["KeyRotation"]["propagation_status"] = "PropagationFailed", "Failed"
    (event,) = valid(new_adapter(tmp_path / "f").feed(Line(real.compact(failed), "file:a", 0, NODE)))
    assert (event["type"], event["key_id"], event["reason"]) == (
        "security_event",
        OLD,
        "key rotation PropagationFailed (Failed)",
    )


# ----- property: distinct source events never share an id; the same one always does -------------------
KINDS = [
    "RotationStarted",
    "RotationCompleted",
    "RotationFailed",
    "PropagationStarted",
    "NodeUpdated",
    "PropagationCompleted",
    "PropagationFailed",
    "CacheInvalidated",
    "RollbackStarted",
    "RollbackCompleted",
]
STATUSES = ["Pending", "InProgress", "Completed", "PartialFailure", "Failed", "RolledBack"]
RESULTS = ["Success", "InProgress", "Cancelled", "Timeout",
           {"Failure": {"error_type": "RotationError", "error_message": "Key rotation failed",
                        "error_code": "KEY_ROTATION_FAILED"}}]  # fmt: skip
nodes = st.lists(st.sampled_from(["node-a", "node-b", "node-c", "node-d"]), max_size=3, unique=True)
bus_event = st.builds(
    lambda kind, status, result, targets, old, eid: real.key_rotation(
        real.verification_event(eid, result, OP), kind, old, NEW, OP, targets, status
    ),
    st.sampled_from(KINDS),
    st.sampled_from(STATUSES),
    st.sampled_from(RESULTS),
    nodes,
    st.sampled_from([OLD, "aaaaaaaaaaaaaaaa"]),
    st.sampled_from([EID, "c36d9da3-ae3b-4803-8006-b1eb6c295ee1"]),
)


@settings(max_examples=200, deadline=None)
@given(bus_event, bus_event)
def test_two_distinct_bus_events_never_share_an_id_and_one_event_always_keeps_its_id(a: dict, b: dict) -> None:
    from keylife.datafold.mapping import Adapter

    adapter = Adapter(None, None, node=NODE)

    def ids(ev: dict, n: int) -> set[str]:
        return {e["id"] for e in adapter.feed(Line(real.compact(ev), "file:x", n, NODE))}

    first, again = ids(a, 0), ids(orjson.loads(orjson.dumps(a)), 1)
    assert first == again  # idempotent
    other = ids(b, 2)
    if a != b:
        assert not first & other
    else:
        assert first == other


def test_other_variants_land_on_their_key_id_else_the_node_never_the_actor(tmp_path: Path) -> None:
    base = {**real.verification_event(str(uuid.uuid4()), "Success", OP), "actor": "admin-console",
            "category": "Authentication", "component": "signature_auth", "operation": "verify_request"}  # fmt: skip
    # event_types.rs:132-146 AuthenticationEvent (key_id Option), and Generic(VerificationEvent): no "base" (:373-374)
    auth = {"Authentication": {"base": base, "auth_type": "rfc9421", "method": "ed25519", "key_id": None,
                               "source_ip": "198.51.100.23", "user_agent": "curl/8"}}  # fmt: skip
    generic = {"Generic": {**base, "event_id": str(uuid.uuid4())}}
    adapter = new_adapter(tmp_path)
    out = [valid(adapter.feed(Line(real.compact(ev), "file:a", n, NODE))) for n, ev in enumerate([auth, generic])]
    assert [(e["key_id"], e["actor"], e["attributes"]["datafold.variant"]) for (e,) in out] == [
        (f"datafold-node:{NODE}", "admin-console", "Authentication"),
        (f"datafold-node:{NODE}", "admin-console", "Generic"),
    ]
    with_key = {"Authentication": {**auth["Authentication"], "key_id": "client-7f3a"}}
    (event,) = valid(adapter.feed(Line(real.compact(with_key), "file:a", 9, NODE)))
    assert event["key_id"] == "client-7f3a" and event["attributes"]["source_ip"] == "198.51.100.23"
    assert not (tmp_path / "rejects.ndjson").exists()
