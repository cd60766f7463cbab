"""A security event on a key keylife never saw generated is findable (issue 12, item 6).

DataFold's signals often name keys keylife learns of no other way: a SECURITY_EVENT for a client
key, a signature check on a node. Before, the registry projected such an event into the key's
history but made no key row, so ``GET /v1/keys/{id}`` and ``keylife keys show`` answered "no such
key" while the journal held the event.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from keylife.cli.main import main
from tests.server import Live, live_server

NOW = "2026-11-28T10:00:00Z"


@pytest.fixture
def live(tmp_path: Path) -> Iterator[Live]:
    with live_server(tmp_path) as server:
        yield server


def _security(n: int, key_id: str, **fields: object) -> dict:
    return {"id": f"sec-{n}", "type": "security_event", "key_id": key_id, "occurred_at": NOW,
            "node": "node-1", "reason": "NonceValidationFailed: Nonce replay detected"} | fields  # fmt: skip


def test_a_security_event_on_an_unseen_key_is_findable_with_its_events(live: Live) -> None:
    with live.client() as c:
        first = _security(1, "client-7f3a", attributes={"datafold.shape": "security_event"})
        second = _security(2, "client-7f3a", occurred_at="2026-11-28T10:05:00Z")
        assert c.post("/v1/events", json=first).status_code == 200
        assert c.post("/v1/events", json=second).status_code == 200
        answer = c.get("/v1/keys/client-7f3a")
        assert answer.status_code == 200, answer.text
        key = answer.json()
        assert key["key_id"] == "client-7f3a"
        assert key["state"] is None  # seen, never generated: keylife invents no lifecycle for it
        assert key["transitions"] == [] and key["violations"] == [] and key["violation_count"] == 0
        assert key["created_at"].startswith("2026-11-28T10:00:00")
        assert [h["event"]["id"] for h in key["history"]] == ["sec-1", "sec-2"]
        assert key["history"][0]["event"]["reason"] == "NonceValidationFailed: Nonce replay detected"
        listed = c.get("/v1/keys").json()
        assert "client-7f3a" in [k["key_id"] for k in listed["items"]]


def test_the_key_then_follows_its_lifecycle_as_usual(live: Live) -> None:
    with live.client() as c:
        assert c.post("/v1/events", json=_security(1, "k-late")).status_code == 200
        generated = {"id": "g-1", "type": "generated", "key_id": "k-late", "occurred_at": "2026-11-28T10:01:00Z"}
        assert c.post("/v1/events", json=generated).status_code == 200
        key = c.get("/v1/keys/k-late").json()
        assert key["state"] == "pre_activation" and key["violations"] == []  # no unknown_key: it was generated
        assert [h["event"]["id"] for h in key["history"]] == ["sec-1", "g-1"]


def test_a_refused_command_still_invents_no_key(live: Live) -> None:
    with live.client() as c:
        refused = c.post("/v1/keys/nobody/commands", json={"command": "revoke", "reason": "x"})
        assert refused.status_code >= 400
        assert c.get("/v1/keys/nobody").status_code == 404


def test_keys_show_prints_the_unseen_key(live: Live, capsys: pytest.CaptureFixture[str], monkeypatch) -> None:
    with live.client() as c:
        assert c.post("/v1/events", json=_security(1, "client-9")).status_code == 200
    monkeypatch.setenv("KEYLIFE_TOKEN", live.tokens["read"])
    assert main(["keys", "show", "client-9", "--url", live.url]) == 0
    shown = orjson.loads(capsys.readouterr().out)
    assert shown["key_id"] == "client-9" and shown["state"] is None
    assert [h["event"]["type"] for h in shown["history"]] == ["security_event"]


# ----- issue 14 item 1: a seen, untracked key can be withdrawn, and only withdrawn --------------------
_SIGHTINGS = {
    "usage": {"type": "usage_report", "node": "node-1", "usage": {"decrypt": 2}},
    "propagation": {"type": "propagated", "node": "node-1", "state": "active"},
    "security_event": {"type": "security_event", "node": "node-1", "reason": "signature check failed"},
}


def _sighting(live: Live, how: str, key_id: str) -> None:
    event = {"id": f"seen-{key_id}", "key_id": key_id, "occurred_at": NOW} | _SIGHTINGS[how]
    with live.client() as c:
        assert c.post("/v1/events", json=event).status_code == 200


@pytest.mark.parametrize("how", sorted(_SIGHTINGS))
@pytest.mark.parametrize("command", ["revoke", "compromise"])
def test_a_key_seen_only_in_the_field_can_be_withdrawn(live: Live, how: str, command: str) -> None:
    key_id = f"client-{how}-{command}"
    _sighting(live, how, key_id)
    before = None
    with live.client("secadmin") as c:
        before = c.get(f"/v1/keys/{key_id}").json()
        answer = c.post(f"/v1/keys/{key_id}/commands", json={"command": command, "reason": "leaked on a laptop"})
        assert answer.status_code == 200, answer.text
        assert answer.json()["status"] == "accepted"
        state = "revoked" if command == "revoke" else "compromised"
        assert answer.json()["state"] == state
        key = c.get(f"/v1/keys/{key_id}").json()
    assert key["state"] == state and key["transitions"][-1]["to_state"] == state
    # the command is no violation of its own (a usage or a propagation of an unknown key was one already)
    assert len(key["violations"]) == len(before["violations"])
    assert all(v["seq"] != answer.json()["seq"] for v in key["violations"])


@pytest.mark.parametrize("how", sorted(_SIGHTINGS))
@pytest.mark.parametrize("command", ["activate", "suspend"])
def test_other_commands_on_an_untracked_key_are_refused_saying_why(live: Live, how: str, command: str) -> None:
    key_id = f"client-{how}-{command}"
    _sighting(live, how, key_id)
    with live.client("secadmin") as c:
        answer = c.post(f"/v1/keys/{key_id}/commands", json={"command": command, "reason": "try"})
        assert answer.status_code == 409, answer.text
        problem = answer.json()
        assert problem["type"].endswith("/lifecycle-conflict") and problem["key_id"] == key_id
        assert "seen (in use or in an event) but never reported generated" in problem["detail"]
        assert "allowed here: compromised, revoked" in problem["detail"]
        assert c.get(f"/v1/keys/{key_id}").json()["state"] is None


def test_a_never_seen_key_is_still_refused_as_missing(live: Live) -> None:
    with live.client("secadmin") as c:
        answer = c.post("/v1/keys/ghost/commands", json={"command": "revoke", "reason": "x"})
    assert answer.status_code == 409 and "key does not exist" in answer.json()["detail"]
