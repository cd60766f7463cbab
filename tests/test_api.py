"""The HTTP API against a real server on loopback: ingest, errors, auth, commands, queries."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from keylife.journal.reader import iter_entries
from tests.server import Live, live_server

NOW = "2026-11-28T10:00:00Z"
NDJSON = {"Content-Type": "application/x-ndjson"}


@pytest.fixture
def live(tmp_path: Path) -> Iterator[Live]:
    with live_server(tmp_path) as server:
        yield server


def ev(n: int, **fields: object) -> dict:
    return {
        "id": f"e-{n}",
        "type": "usage_report",
        "key_id": "k-1",
        "occurred_at": NOW,
        "node": "node-1",
        "usage": {"encrypt": n},
    } | fields


def ndjson(*events: dict) -> bytes:
    return b"\n".join(orjson.dumps(e) for e in events) + b"\n"


def entries(live: Live) -> list[dict]:
    return [e.event for e in iter_entries(live.runtime.journal.directory)]


def test_health_ready_and_openapi(live: Live) -> None:
    with live.client(None) as c:
        assert c.get("/healthz").json() == {"status": "ok"}
        ready = c.get("/readyz").json()
        assert ready["status"] == "ready"
        paths = c.get("/openapi.json").json()["paths"]
        assert {"/v1/events", "/v1/keys", "/v1/keys/{key_id}", "/v1/keys/{key_id}/commands"} <= set(paths)


def test_single_event_is_durable_before_the_answer(live: Live) -> None:
    with live.client() as c:
        r = c.post(
            "/v1/events",
            json={
                "id": "g-1",
                "type": "generated",
                "key_id": "k-9",
                "occurred_at": NOW,
                "algorithm": "aes-256-gcm",
                "key_size": 256,
                "purpose": "encryption",
            },
        )
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["accepted"] == 1 and body["results"][0] == {"line": 1, "id": "g-1", "status": "accepted", "seq": 0}
        assert entries(live)[0]["id"] == "g-1"  # on disk when the answer arrived
        key = c.get("/v1/keys/k-9").json()
        assert key["state"] == "pre_activation" and key["algorithm"] == "aes-256-gcm"
        assert [h["event"]["id"] for h in key["history"]] == ["g-1"]


def test_batch_answers_per_line_and_ingest_is_idempotent(live: Live) -> None:
    body = ndjson(ev(1), ev(2), ev(3))
    with live.client() as c:
        first = c.post("/v1/events", content=body, headers=NDJSON).json()
        assert [r["status"] for r in first["results"]] == ["accepted"] * 3
        again = c.post("/v1/events", content=body, headers=NDJSON).json()
        assert [r["status"] for r in again["results"]] == ["duplicate"] * 3
        assert [r["seq"] for r in again["results"]] == [r["seq"] for r in first["results"]]
        mixed = c.post("/v1/events", content=ndjson(ev(3), ev(4), ev(4)), headers=NDJSON).json()
        assert [r["status"] for r in mixed["results"]] == ["duplicate", "accepted", "duplicate"]
    assert [e["id"] for e in entries(live)] == ["e-1", "e-2", "e-3", "e-4"]


def test_reused_id_with_other_content_is_a_conflict_and_nothing_is_written(live: Live) -> None:
    with live.client() as c:
        c.post("/v1/events", content=ndjson(ev(1)), headers=NDJSON)
        r = c.post("/v1/events", content=ndjson(ev(5), ev(1, usage={"encrypt": 999})), headers=NDJSON)
        assert r.status_code == 409
        assert r.headers["content-type"] == "application/problem+json"
        results = r.json()["results"]
        assert results[1]["status"] == "conflict" and results[1]["line"] == 2
        assert results[0]["status"] == "refused"
    assert [e["id"] for e in entries(live)] == ["e-1"]


def test_bad_lines_are_each_reported_and_nothing_is_written(live: Live) -> None:
    body = b"\n".join(
        [
            orjson.dumps(ev(1)),
            b'{"id": "e-2", "type": "usage_report", ',
            orjson.dumps(ev(3, key_id=None)),
            orjson.dumps(ev(4, type="exploded")),
            orjson.dumps(ev(5, usage={"encrypt": "many"})),
            orjson.dumps(ev(6, colour="red")),
            b"[1, 2]",
            orjson.dumps({"id": "e-8", "type": "auth_failure", "occurred_at": NOW}),
            orjson.dumps(ev(9, occurred_at="2099-01-01T00:00:00Z")),
        ]
    )
    with live.client() as c:
        r = c.post("/v1/events", content=body, headers=NDJSON)
        assert r.status_code == 422
        problem = r.json()
        assert problem["type"].endswith("/invalid-events") and "8 of 9 lines" in problem["detail"]
        by_line = {e["line"]: e for e in problem["errors"]}
        assert set(by_line) == {2, 3, 4, 5, 6, 7, 8, 9}
        assert by_line[2]["message"].startswith("malformed JSON")
        assert "key_id is required" in by_line[3]["message"]
        assert by_line[4]["field"] == "type" and "unknown event type 'exploded'" in by_line[4]["message"]
        assert by_line[5]["field"] == "usage.encrypt" and by_line[5]["id"] == "e-5"
        assert by_line[6] == {"line": 6, "message": "unknown field", "field": "colour", "id": "e-6"}
        assert "JSON object" in by_line[7]["message"]
        assert "written by keylife itself" in by_line[8]["message"]
        assert by_line[9]["field"] == "occurred_at" and "ahead of the server clock" in by_line[9]["message"]
        assert c.get("/readyz").status_code == 200  # still serving
    assert entries(live) == []


def test_size_limits_and_content_types_are_clear_4xx(tmp_path: Path) -> None:
    with live_server(tmp_path, api={"max_body_bytes": 4096, "max_lines": 5}) as live, live.client() as c:
        big = c.post("/v1/events", content=b"x" * 5000, headers=NDJSON)
        assert big.status_code == 413 and "limit is 4096" in big.json()["detail"]
        many = c.post("/v1/events", content=ndjson(*[ev(n) for n in range(6)]), headers=NDJSON)
        assert many.status_code == 413 and "limit is 5" in many.json()["detail"]
        wrong = c.post("/v1/events", content=b"a,b", headers={"Content-Type": "text/csv"})
        assert wrong.status_code == 415 and "text/csv" in wrong.json()["detail"]
        empty = c.post("/v1/events", content=b"\n\n", headers=NDJSON)
        assert empty.status_code == 400
        assert c.get("/readyz").status_code == 200


def test_an_oversized_event_is_refused_by_line(live: Live) -> None:
    huge = orjson.dumps(
        ev(2, reason="x" * 1000, attributes={f"a{n}": "y" * 256 for n in range(32)} | {"z": "w" * 9000})
    )
    with live.client() as c:
        r = c.post("/v1/events", content=ndjson(ev(1)) + huge, headers=NDJSON)
        assert r.status_code == 422
        (error,) = r.json()["errors"]
        assert error["line"] == 2 and "at most 16384" in error["message"]


def test_auth_401_403_are_journaled_and_never_leak_the_token(live: Live) -> None:
    with live.client(None) as anon:
        r = anon.post("/v1/events", content=ndjson(ev(1)), headers=NDJSON)
        assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")
        bad = anon.post("/v1/events", content=ndjson(ev(1)), headers=NDJSON | {"Authorization": "Bearer kl_nope"})
        assert bad.status_code == 401 and bad.json()["detail"] == "unknown or revoked token"
    with live.client("read") as reader:
        r = reader.post("/v1/events", content=ndjson(ev(1)), headers=NDJSON)
        assert r.status_code == 403 and "lacks the 'ingest' scope" in r.json()["detail"]
        assert reader.get("/v1/keys").status_code == 200
    with live.client("ingest") as ingester:
        assert ingester.get("/v1/keys").status_code == 403
        assert ingester.post("/v1/keys/k-1/commands", json={"command": "revoke", "reason": "x"}).status_code == 403
    _wait_for(lambda: sum(e["type"] == "auth_failure" for e in entries(live)) == 5)
    failures = [e for e in entries(live) if e["type"] == "auth_failure"]
    assert [f["attributes"]["code"] for f in failures] == ["401", "401", "403", "403", "403"]
    disk = b"".join(p.read_bytes() for p in live.runtime.journal.directory.rglob("*") if p.is_file())
    assert all(token.encode() not in disk for token in live.tokens.values())


def _scraped(live: Live, sample: str) -> float | None:
    """One sample's value as ``GET /metrics`` shows it (None while absent)."""
    with live.client(None) as anon:
        text = anon.get("/metrics").text
    for line in text.splitlines():
        if line.startswith(sample + " "):
            return float(line.split()[-1])
    return None


def _auth_failures(live: Live) -> list[dict]:
    return [e for e in entries(live) if e["type"] == "auth_failure"]


def test_an_auth_flood_cannot_fill_the_disk_but_is_counted(tmp_path: Path) -> None:
    """No assumption on how fast the flood runs: the bound comes from the time it took."""
    import math
    import time

    rate, burst = 0.5, 5
    with live_server(tmp_path, api={"auth_failures_burst": burst, "auth_failures_journaled_per_second": rate}) as live:
        with live.client(None) as anon:
            started = time.monotonic()
            for _ in range(60):
                assert anon.get("/v1/keys").status_code == 401
            took = time.monotonic() - started
        _wait_for(lambda: _scraped(live, 'keylife_auth_failures_total{code="401"}') == 60, timeout=30)
        unjournaled = _scraped(live, "keylife_auth_failures_unjournaled_total")
        assert unjournaled is not None
        journaled = 60 - int(unjournaled)  # each failure is either journaled or counted as held back
        _wait_for(lambda: len(_auth_failures(live)) == journaled, timeout=30)
        # the bucket: full at the start, refilled at ``rate`` while the flood lasted, never more
        assert burst <= journaled <= burst + math.floor(took * rate) + 1, (journaled, took)


def test_failures_held_back_are_summarised_in_the_next_journaled_one(tmp_path: Path) -> None:
    """Issue 10, item 21: each journaled auth_failure says how many the limiter held back before it
    (``unjournaled_before``); the counts add up to keylife_auth_failures_unjournaled_total. Which
    requests were held back is read from that metric after each one, not guessed from timing."""
    import time

    with live_server(tmp_path, api={"auth_failures_burst": 3, "auth_failures_journaled_per_second": 2.0}) as live:

        def held_total() -> float | None:  # the server's own counter: read right after each answer
            return live.runtime.telemetry.registry.get_sample_value("keylife_auth_failures_unjournaled_total")

        expected: list[int] = []  # per journaled failure, in order: how many were held back before it
        held = 0
        with live.client(None) as anon:

            def fail_once() -> bool:
                """One bad-token request; True if it was journaled (the held-back count did not move)."""
                nonlocal held
                before = held_total()
                bad = anon.get("/v1/keys", headers={"Authorization": "Bearer kl_wrong"})
                assert bad.status_code == 401
                if held_total() == before + 1:
                    held += 1
                    return False
                expected.append(held)
                held = 0
                return True

            sent = 0
            while sent < 40 or held == 0:  # more than the burst of 3, back to back, ending on held-back ones
                fail_once()
                sent += 1
                assert sent < 1000, "the limiter never held a failure back"
            held_back_in_flood = held
            deadline = time.monotonic() + 30
            while not fail_once():  # once the bucket refills, the next failure is journaled
                assert time.monotonic() < deadline, "the limiter never allowed a failure again"
                time.sleep(0.1)
        assert expected[-1] >= held_back_in_flood > 0
        total = held_total()
        assert total == sum(expected)
        _wait_for(lambda: len(_auth_failures(live)) == len(expected), timeout=30)
        failures = _auth_failures(live)
        assert [int(f["attributes"].get("unjournaled_before", 0)) for f in failures] == expected
        assert failures[-1]["attributes"]["unjournaled_before"] == str(expected[-1])
        _wait_for(lambda: _scraped(live, "keylife_auth_failures_unjournaled_total") == total, timeout=30)


def test_commands_follow_the_lifecycle_and_refusals_are_journaled(live: Live) -> None:
    with live.client() as c:
        c.post(
            "/v1/events",
            content=ndjson(
                {"id": "g", "type": "generated", "key_id": "k-2", "occurred_at": NOW},
                {"id": "a", "type": "activated", "key_id": "k-2", "occurred_at": NOW},
            ),
            headers=NDJSON,
        )
        ok = c.post("/v1/keys/k-2/commands", json={"command": "revoke", "reason": "left the company", "id": "c-1"})
        assert ok.status_code == 200 and ok.json()["state"] == "revoked"
        again = c.post("/v1/keys/k-2/commands", json={"command": "revoke", "reason": "left the company", "id": "c-1"})
        assert again.json()["status"] == "duplicate"
        refused = c.post("/v1/keys/k-2/commands", json={"command": "reactivate", "reason": "oops"})
        assert refused.status_code == 409
        problem = refused.json()
        assert problem["type"].endswith("/lifecycle-conflict")
        assert "key is revoked; 'reactivated' is not allowed" in problem["detail"]
        assert c.get("/v1/keys/k-2").json()["state"] == "revoked"
        unknown = c.post("/v1/keys/nope/commands", json={"command": "revoke", "reason": "x"})
        assert unknown.status_code == 409 and "does not exist" in unknown.json()["detail"]
        bad = c.post("/v1/keys/k-2/commands", json={"command": "explode", "reason": "x"})
        assert bad.status_code == 422 and bad.headers["content-type"] == "application/problem+json"
    refusals = [e for e in entries(live) if e["type"] == "command_refused"]
    assert [r["key_id"] for r in refusals] == ["k-2", "nope"]
    assert refusals[0]["actor"] == "all" and "reactivated refused" in refusals[0]["reason"]


def test_list_keys_filters_and_paginates(live: Live) -> None:
    events = [
        {
            "id": f"g{n}",
            "type": "generated",
            "key_id": f"key-{n:02d}",
            "occurred_at": NOW,
            "algorithm": "ed25519" if n % 2 else "aes-256-gcm",
            "purpose": "signing",
        }
        for n in range(7)
    ]
    with live.client() as c:
        c.post("/v1/events", content=ndjson(*events), headers=NDJSON)
        page = c.get("/v1/keys", params={"algorithm": "ed25519", "limit": 2}).json()
        assert [k["key_id"] for k in page["items"]] == ["key-01", "key-03"]
        rest = c.get("/v1/keys", params={"algorithm": "ed25519", "limit": 2, "after": page["next"]}).json()
        assert [k["key_id"] for k in rest["items"]] == ["key-05"] and rest["next"] is None
        bad = c.get("/v1/keys", params={"state": "melted"})
        assert bad.status_code == 422 and "state" in bad.json()["detail"]
        missing = c.get("/v1/keys/absent")
        assert missing.status_code == 404 and missing.json()["title"] == "No such key"


def _wait_for(condition, timeout: float = 5.0) -> None:
    import time

    deadline = time.time() + timeout
    while time.time() < deadline:
        if condition():
            return
        time.sleep(0.02)
    raise AssertionError("condition not met in time")


def test_lines_that_only_make_sense_joined_are_still_refused_by_line(live: Live) -> None:
    first = orjson.dumps(ev(1))[:-1] + b',"data_instances":[{"a":1}'
    second = b'{"b":2}]}'
    pair = orjson.dumps(ev(3)) + b"," + orjson.dumps(ev(4))
    with live.client() as c:
        r = c.post("/v1/events", content=b"\n".join([first, second, pair]), headers=NDJSON)
        assert r.status_code == 422
        assert {e["line"] for e in r.json()["errors"]} == {1, 2, 3}
    assert entries(live) == []
