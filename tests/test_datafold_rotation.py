"""A key rotation as DataFold nodes report it, through the adapter into a real keylife.

The samples' rotation 0813e30b: the crypto audit logs its start, validation and completion on
node-a; the event bus reports propagation to five nodes, four ``NodeUpdated`` and a
``PropagationFailed`` (partial failure: node-e never confirmed). keylife must end with the old key
deactivated (rotated), the new one active, and node-e flagged as not having applied the change.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
from prometheus_client.parser import text_string_to_metric_families

from keylife.datafold.mapping import Adapter
from tests.server import Live, live_server
from tests.test_datafold_mapping import NEW, NOW, OLD, ROTATION, file_lines, status_answers, valid

NDJSON = {"Content-Type": "application/x-ndjson"}
NODES = ("node-a", "node-b", "node-c", "node-d", "node-e")


def post(live: Live, events: list[dict[str, Any]]) -> dict[str, Any]:
    with live.client() as c:
        r = c.post("/v1/events", content=b"\n".join(orjson.dumps(e) for e in events), headers=NDJSON)
    assert r.status_code == 200, r.text
    return r.json()


def get_key(live: Live, key_id: str) -> dict[str, Any]:
    with live.client() as c:
        r = c.get(f"/v1/keys/{key_id}")
    assert r.status_code == 200, r.text
    return r.json()


def unconfirmed(live: Live) -> dict[str, float]:
    with live.client(None) as c:
        text = c.get("/metrics").text
    return {
        s.labels["node"]: s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
        if s.name == "keylife_node_unconfirmed_keys"
    }


def rotation_events(tmp_path: Path) -> list[dict[str, Any]]:
    """The scenario's lines through one adapter, in the order a node writes them."""
    adapter = Adapter(tmp_path / "rejects.ndjson", tmp_path / "key-status.json", clock=lambda: NOW)
    # Before the rotation the old key was live: the node's key status answer for its client said so.
    before = status_answers()[1]
    before = {**before, "data": {**before["data"], "status": "active"}}
    events = valid(adapter.status(before, "client-0c1d", "node-a"))
    log = file_lines("node-log.log")
    bus = file_lines("event-bus.jsonl")
    for line in [*log[:3], *bus[:6]]:  # start, validated, complete; PropagationStarted, 4 x NodeUpdated, failed
        assert ROTATION in line.text
        events += valid(adapter.feed(line))
    events += valid(adapter.flush())
    assert not (tmp_path / "rejects.ndjson").exists()
    return events


def test_rotation_with_partial_propagation_ends_in_the_right_registry_state(tmp_path: Path) -> None:
    events = rotation_events(tmp_path)
    assert [e["type"] for e in events] == [
        "generated", "activated", "security_event", "security_event", "rotated", *["propagated"] * 13,
        "security_event",
    ]  # fmt: skip
    with live_server(tmp_path / "server") as live:
        answer = post(live, events)
        assert answer["accepted"] == len(events) and answer["duplicate"] == 0

        old = get_key(live, OLD)
        assert (old["state"], old["successor"], old["algorithm"]) == ("deactivated", NEW, "ed25519")
        assert [(t["event_type"], t["from_state"], t["to_state"]) for t in old["transitions"]] == [
            ("generated", None, "pre_activation"), ("activated", "pre_activation", "active"),
            ("rotated", "active", "deactivated"),
        ]  # fmt: skip
        assert old["violations"] == []  # rotated is exactly what the lifecycle allows, nothing more
        # Four nodes applied the rotation; node-e still holds the old key as it was, active.
        assert {n: v["applied_state"] for n, v in old["nodes"].items()} == {
            "node-a": "deactivated", "node-b": "deactivated", "node-c": "deactivated", "node-d": "deactivated",
            "node-e": "active",
        }  # fmt: skip

        new = get_key(live, NEW)
        assert (new["state"], new["predecessor"], new["algorithm"], new["purpose"]) == (
            "active", OLD, "ed25519", "signing")  # fmt: skip
        assert {n: v["applied_state"] for n, v in new["nodes"].items()} == dict.fromkeys(NODES[:4], "active")
        assert new["violations"] == []

        # The partial failure is on the old key's record, with the nodes it concerned.
        failure = [h["event"] for h in old["history"] if h["event"]["type"] == "security_event"]
        assert [(f["attributes"]["rotation_type"], f["attributes"]["propagation_status"]) for f in failure] == [
            ("PropagationFailed", "PartialFailure")]  # fmt: skip

        assert unconfirmed(live) == {"node-a": 0, "node-b": 0, "node-c": 0, "node-d": 0, "node-e": 1}

        # The same lines read again (a restart): the same ids, all duplicates, nothing changes.
        again = post(live, rotation_events(tmp_path / "again"))
        assert again["accepted"] == 0 and again["duplicate"] == len(events)
        assert get_key(live, OLD)["state"] == "deactivated" and unconfirmed(live)["node-e"] == 1
