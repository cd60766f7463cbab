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
