"""The signed revocation feed and per-node confirmation (issue 14, items 2 and 3).

What an enforcement point sees: ``GET /v1/revocations`` is a C2SP signed note that verifies with
the journal's verifier key (and fails on one changed byte), ``?since=`` gives exactly the new
entries, ETag / If-None-Match gives 304, and a bad ``since`` is a precise 400. Per key,
``GET /v1/revocations/{key}`` says which node confirmed, from a ``propagated`` or from a node's
key status answer, and when the last one did.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import orjson
import pytest

from keylife.journal.reader import iter_entries
from keylife.journal.signing import Verifier
from keylife.registry.projection import rebuild
from keylife.registry.queries import open_readonly, ts
from keylife.response import feed as rfeed
from tests.server import Live, live_server

T0 = "2026-12-01T10:00:00Z"


def _clock() -> Callable[[int], str]:
    """Node report times ``seconds`` after now (the revoke that follows has the server's clock)."""
    start = datetime.now(UTC)
    return lambda seconds: ts((start + timedelta(seconds=seconds)).isoformat())


@pytest.fixture
def live(tmp_path: Path) -> Iterator[Live]:
    with live_server(tmp_path) as server:
        yield server


def _ev(i: str, kind: str, key: str, at: str = T0, **fields: object) -> dict:
    return {"id": i, "type": kind, "key_id": key, "occurred_at": at} | fields


def _post(c: httpx.Client, *events: dict) -> None:
    body = b"\n".join(orjson.dumps(e) for e in events)
    answer = c.post("/v1/events", content=body, headers={"Content-Type": "application/x-ndjson"})
    assert answer.status_code == 200, answer.text
    assert all(r["status"] == "accepted" for r in answer.json()["results"]), answer.text


def _held(c: httpx.Client, key: str, *nodes: str) -> None:
    """A live key that ``nodes`` hold: node-a propagated it, the others used it."""
    _post(c, _ev(f"g-{key}", "generated", key), _ev(f"a-{key}", "activated", key))
    for n, node in enumerate(nodes):
        if n == 0:
            _post(c, _ev(f"p-{key}-{node}", "propagated", key, node=node, state="active"))
        else:
            _post(c, _ev(f"u-{key}-{node}", "usage_report", key, node=node, usage={"decrypt": 3}))


def _revoke(c: httpx.Client, key: str, command: str = "revoke", **extra: str) -> httpx.Response:
    return c.post(f"/v1/keys/{key}/commands", json={"command": command, "reason": "leaked"} | extra)


def _verifier(live: Live) -> Verifier:
    return live.runtime.journal.signer.verifier


def test_the_feed_is_a_signed_note_that_verifies_and_fails_on_a_changed_byte(live: Live) -> None:
    with live.client() as c:
        _held(c, "k1", "node-a")
        _held(c, "k2", "node-a")
        assert _revoke(c, "k1").status_code == 200
        assert _revoke(c, "k2", "compromise").status_code == 200
        answer = c.get("/v1/revocations")
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/plain")
    text = answer.text
    lines = text.split("\n")
    assert lines[0] == "test.keylife/api/revocations" and lines[1:3] == ["version 2", "since 0"]
    assert lines[3].startswith("1 revoked 2") and lines[3].endswith(" k1")
    assert lines[4].startswith("2 compromised 2") and lines[4].endswith(" k2")
    assert lines[6].startswith("\u2014 test.keylife/api ")  # signed by the journal's key, under its name
    got = rfeed.verify(text, [_verifier(live)], "test.keylife/api/revocations")
    assert [(e["version"], e["state"], e["key_id"]) for e in got.entries] == [(1, "revoked", "k1"),
                                                                              (2, "compromised", "k2")]  # fmt: skip
    tampered = text.replace(" k2\n", " k3\n")
    with pytest.raises(ValueError, match="does not verify: bad signature"):
        rfeed.verify(tampered, [_verifier(live)])
    # and the journal's checkpoint parser refuses it: a feed note never passes as a checkpoint
    from keylife.journal.note import NoteError, parse

    with pytest.raises(NoteError, match="not a decimal number"):
        parse(text)


def test_json_shape_embeds_the_note_and_deltas_are_exactly_the_new_entries(live: Live) -> None:
    with live.client() as c:
        for key in ("k1", "k2", "k3"):
            _held(c, key, "node-a")
        assert _revoke(c, "k1", correlation_id="inc-7").status_code == 200
        first = c.get("/v1/revocations", headers={"Accept": "application/json"})
        assert first.status_code == 200 and first.headers["content-type"] == "application/json"
        doc = first.json()
        assert doc["format"] == "keylife-revocations/v1" and doc["version"] == 1 and doc["since"] == 0
        assert doc["entries"][0] | {"at": "", "seq": 0} == {
            "version": 1, "key_id": "k1", "state": "revoked", "at": "", "seq": 0, "origin": "command",
            "actor": "all", "reason": "leaked", "correlation_id": "inc-7"}  # fmt: skip
        assert rfeed.verify(first.text, [_verifier(live)]).entries[0]["key_id"] == "k1"  # the JSON verifies too
        assert _revoke(c, "k2").status_code == 200
        assert _revoke(c, "k3", "compromise").status_code == 200
        delta = c.get("/v1/revocations", params={"since": 1}, headers={"Accept": "application/json"}).json()
    assert delta["version"] == 3 and delta["since"] == 1
    assert [(e["version"], e["key_id"]) for e in delta["entries"]] == [(2, "k2"), (3, "k3")]


def test_etag_and_if_none_match_answer_304_until_the_feed_moves(live: Live) -> None:
    with live.client() as c:
        _held(c, "k1", "node-a")
        _held(c, "k2", "node-a")
        assert _revoke(c, "k1").status_code == 200
        first = c.get("/v1/revocations", params={"since": 1})
        tag = first.headers["etag"]
        assert tag == '"rev-1-1"' and first.headers["x-keylife-feed-version"] == "1"
        again = c.get("/v1/revocations", params={"since": 1}, headers={"If-None-Match": tag})
        assert again.status_code == 304 and again.content == b""
        as_json = c.get("/v1/revocations", params={"since": 1}, headers={"Accept": "application/json"})
        assert as_json.headers["etag"] == '"rev-1-1-json"'  # another representation, another tag
        assert _revoke(c, "k2").status_code == 200
        moved = c.get("/v1/revocations", params={"since": 1}, headers={"If-None-Match": tag})
        assert moved.status_code == 200 and moved.headers["etag"] == '"rev-2-1"'
        assert moved.text.split("\n")[3].endswith(" k2")


@pytest.mark.parametrize(
    ("since", "kind", "says"),
    [
        ("-1", "invalid-since", "since='-1' is not a version"),
        ("abc", "invalid-since", "since='abc' is not a version"),
        ("1.5", "invalid-since", "not a version"),
        ("5", "since-ahead", "since=5 is beyond the feed's current version 1"),
    ],
)
def test_a_bad_since_is_a_precise_400(live: Live, since: str, kind: str, says: str) -> None:
    with live.client() as c:
        _held(c, "k1", "node-a")
        assert _revoke(c, "k1").status_code == 200
        answer = c.get("/v1/revocations", params={"since": since})
    assert answer.status_code == 400 and answer.headers["content-type"] == "application/problem+json"
    body = answer.json()
    assert body["type"].endswith(kind) and says in body["detail"] and body["version"] == 1


def test_the_feed_needs_the_read_scope(live: Live) -> None:
    with live.client(None) as c:
        assert c.get("/v1/revocations").status_code == 401
    with live.client("ingest") as c:
        answer = c.get("/v1/revocations")
        assert answer.status_code == 403 and answer.json()["required_scope"] == "read"
    with live.client("viewer") as c:
        assert c.get("/v1/revocations").status_code == 200


def test_each_node_confirms_by_propagation_or_by_its_key_status_answer(live: Live) -> None:
    _later = _clock()
    with live.client() as c:
        _held(c, "k1", "node-a", "node-b", "node-c")
        assert _revoke(c, "k1").status_code == 200
        start = c.get("/v1/revocations/k1").json()
        assert start["expected"] == 3 and start["confirmed"] == 0 and start["complete_at"] is None
        assert start["unconfirmed"] == ["node-a", "node-b", "node-c"]
        assert {n["node"]: n["joined"] for n in start["nodes"]} == dict.fromkeys(start["unconfirmed"], "at_revocation")
        _post(c, _ev("p2", "propagated", "k1", _later(5), node="node-a", state="revoked"))
        # node-b's key status answer says revoked: the DataFold adapter turns it into a revoked observation
        _post(c, _ev("df-status-r1-k1-c1", "revoked", "k1", _later(7), node="node-b"))
        _post(c, _ev("p3", "propagated", "k1", _later(8), node="node-c", state="active"))  # not sealed
        middle = c.get("/v1/revocations/k1").json()
        by_node = {n["node"]: n for n in middle["nodes"]}
        assert by_node["node-a"]["via"] == "propagated" and by_node["node-a"]["confirmed_state"] == "revoked"
        assert by_node["node-b"]["via"] == "observation"
        assert by_node["node-b"]["confirmed_at"] == _later(7)
        assert middle["unconfirmed"] == ["node-c"] and middle["complete_at"] is None
        # a node that shows up only afterwards, using the key, is expected too
        _post(c, _ev("u9", "usage_report", "k1", _later(9), node="node-d", usage={"decrypt": 1}))
        _post(c, _ev("p4", "propagated", "k1", _later(20), node="node-c", state="destroyed"))
        later = c.get("/v1/revocations/k1").json()
        assert later["unconfirmed"] == ["node-d"] and later["expected"] == 4
        assert {n["node"]: n["joined"] for n in later["nodes"]}["node-d"] == "later"
        _post(c, _ev("p5", "propagated", "k1", _later(30), node="node-d", state="revoked"))
        done = c.get("/v1/revocations/k1").json()
    assert done["unconfirmed"] == [] and done["confirmed"] == 4
    assert done["complete_at"] == _later(30) and 0 < done["complete_seconds"] <= 30
    assert [e["state"] for e in done["feed"]] == ["revoked"]


def test_a_key_revoked_by_observation_enters_the_feed_and_its_reporter_confirms(live: Live) -> None:
    with live.client() as c:
        _held(c, "k1", "node-a", "node-b")
        _post(c, _ev("obs", "revoked", "k1", "2026-12-01T10:01:00Z", node="node-b"))
        found = c.get("/v1/revocations/k1").json()
        listed = c.get("/v1/revocations").text
    assert found["feed"][0]["origin"] == "observation" and found["unconfirmed"] == ["node-a"]
    assert listed.split("\n")[3].endswith(" revoked 2026-12-01T10:01:00.000000Z k1")


def test_per_key_answers_404_with_the_reason(live: Live) -> None:
    with live.client() as c:
        _held(c, "k1", "node-a")
        never = c.get("/v1/revocations/k1")
        unknown = c.get("/v1/revocations/nobody")
    assert never.status_code == 404 and "was never revoked or compromised" in never.json()["detail"]
    assert unknown.status_code == 404 and "is not in the registry" in unknown.json()["detail"]


def test_the_projection_is_a_pure_function_of_the_journal(live: Live, tmp_path: Path) -> None:
    with live.client() as c:
        _held(c, "k1", "node-a", "node-b")
        assert _revoke(c, "k1").status_code == 200
        _post(c, _ev("p2", "propagated", "k1", "2026-12-01T10:00:05Z", node="node-a", state="revoked"))
        assert _revoke(c, "k1", "compromise").status_code == 200
        c.get("/readyz")
    live.runtime.ledger.sync_registry().result(10)

    def tables(path: Path) -> list:
        conn = open_readonly(path)
        try:
            return [conn.execute(f"SELECT * FROM {t} ORDER BY 1, 2").fetchall()
                    for t in ("revocation_feed", "revocations", "revocation_nodes")]  # fmt: skip
        finally:
            conn.close()

    copy = tmp_path / "rebuilt.sqlite"
    rebuild(iter_entries(live.runtime.config.journal_dir), copy, origin="test.keylife/api")
    assert tables(copy) == tables(live.runtime.config.registry_path)
    assert [r[2] for r in tables(copy)[0]] == ["revoked", "compromised"]


def test_a_nodes_key_status_answer_saying_revoked_confirms_through_the_datafold_adapter(live: Live) -> None:
    """The real adapter: two polls of node-b's key status endpoint (active, then revoked) become the
    events keylife ingests; the second one confirms node-b."""
    from keylife.datafold.shapes import KeyStatus
    from keylife.datafold.status import StatusTracker, key_id_of

    public = "ab" * 32
    key = key_id_of(public)
    registered = datetime.now(UTC) - timedelta(days=1)
    tracker = StatusTracker(None, clock=lambda: datetime.now(UTC) + timedelta(seconds=3))
    with live.client() as c:
        first = tracker.answer(KeyStatus("reg-1", "client-1", public, None, registered, "active", None), None, "node-b")
        _post(c, *first)  # generated + activated, as node-b's status answer showed them
        _post(c, _ev("ub", "usage_report", key, node="node-b", usage={"verify": 4}))  # node-b's client uses it
        _post(c, _ev("pa", "propagated", key, node="node-a", state="active"))
        assert _revoke(c, key).status_code == 200
        assert c.get(f"/v1/revocations/{key}").json()["unconfirmed"] == ["node-a", "node-b"]
        second = tracker.answer(
            KeyStatus("reg-1", "client-1", public, None, registered, "revoked", None), None, "node-b"
        )
        assert [e["type"] for e in second] == ["revoked"] and second[0]["node"] == "node-b"
        _post(c, *second)
        found = c.get(f"/v1/revocations/{key}").json()
    assert found["unconfirmed"] == ["node-a"]
    node_b = next(n for n in found["nodes"] if n["node"] == "node-b")
    assert node_b["via"] == "observation" and node_b["confirmed_state"] == "revoked"
