"""Bulk plans (issue 14, items 5-6): dry run, digest, execution by plan id, stale plans, per-key
refusals, progress, roles."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.bulk_helpers import journal_events, make_keys, states
from tests.server import Live, live_server
from tests.waiting import wait_until


@pytest.fixture
def live(tmp_path: Path) -> Iterator[Live]:
    with live_server(tmp_path, bulk={"dual_control_min_keys": 1000}) as server:
        yield server


def _plan(c, selector, action="revoke", **extra):  # type: ignore[no-untyped-def]
    return c.post("/v1/keys/bulk", json={"selector": selector, "action": action, "reason": "incident 7"} | extra)


def _finished(c, plan_id):  # type: ignore[no-untyped-def]
    wait_until(lambda: c.get(f"/v1/bulk/{plan_id}").json()["state"] == "finished", what="plan finished")
    return c.get(f"/v1/bulk/{plan_id}").json()


def test_a_dry_run_lists_the_exact_set_and_executing_it_revokes_exactly_those(live: Live) -> None:
    with live.client() as admin, live.client("secadmin") as c:
        make_keys(admin, ["a1", "a2", "a3"], owner="team-a")
        make_keys(admin, ["b1"], owner="team-b")
        planned = _plan(c, {"owner": "team-a"})
        assert planned.status_code == 200, planned.text
        body = planned.json()
        assert body["keys"] == ["a1", "a2", "a3"] and body["total"] == 3 and body["state"] == "planned"
        assert len(body["digest"]) == 64 and body["plan"].startswith("plan-")
        assert states(admin, ["a1", "b1"]) == {"a1": "active", "b1": "active"}  # a dry run changes nothing
        started = c.post(f"/v1/bulk/{body['plan']}/execute")
        assert started.status_code == 200, started.text
        done = _finished(c, body["plan"])
        assert (done["done"], done["refused"], done["remaining"]) == (3, 0, 0)
        assert states(admin, ["a1", "a2", "a3", "b1"]) == {"a1": "revoked", "a2": "revoked", "a3": "revoked",
                                                          "b1": "active"}  # fmt: skip
    revoked = journal_events(live, "revoked")
    assert sorted(e["id"] for e in revoked) == [f"bulk-{body['plan']}-{i}" for i in range(3)]
    assert {e["correlation_id"] for e in revoked} == {body["plan"]}
    assert {e["actor"] for e in revoked} == {"secadmin"}
    records = journal_events(live, "bulk_operation")
    assert [r["details"]["phase"] for r in records] == ["planned", "started", "finished"]
    assert records[-1]["details"]["done"] == 3 and records[-1]["details"]["actor"] == "secadmin"
    assert records[0]["details"]["selector"] == '{"owner":"team-a"}'


def test_a_plan_whose_set_changed_is_refused_409_with_the_difference(live: Live) -> None:
    with live.client() as admin, live.client("secadmin") as c:
        make_keys(admin, ["a1", "a2"], owner="team-a")
        plan = _plan(c, {"owner": "team-a", "states": ["active"]}).json()["plan"]
        make_keys(admin, ["a3"], owner="team-a")  # added since the dry run
        assert admin.post("/v1/keys/a1/commands", json={"command": "suspend", "reason": "x"}).status_code == 200
        refused = c.post(f"/v1/bulk/{plan}/execute")
        assert refused.status_code == 409
        assert refused.headers["content-type"] == "application/problem+json"
        problem = refused.json()
        assert problem["type"].endswith("/stale-plan")
        assert (problem["added"], problem["removed"]) == (["a3"], ["a1"])
        assert (problem["added_count"], problem["removed_count"]) == (1, 1)
        assert "1 keys added, 1 removed" in problem["detail"]
        assert states(admin, ["a2", "a3"]) == {"a2": "active", "a3": "active"}


def test_a_lifecycle_refusal_is_per_key_and_the_rest_is_done(live: Live) -> None:
    with live.client() as admin, live.client("secadmin") as c:
        make_keys(admin, ["k1", "k2", "k3"])
        assert admin.post("/v1/keys/k2/commands", json={"command": "suspend", "reason": "x"}).status_code == 200
        plan = _plan(c, {"ids": ["k1", "k2", "k3"]}, action="suspend").json()["plan"]
        assert c.post(f"/v1/bulk/{plan}/execute").status_code == 200
        done = _finished(c, plan)
        assert (done["done"], done["refused"]) == (2, 1)
        assert done["refusals"][0]["key_id"] == "k2" and "key is suspended" in done["refusals"][0]["reason"]
        assert states(admin, ["k1", "k2", "k3"]) == {"k1": "suspended", "k2": "suspended", "k3": "suspended"}
    refused = journal_events(live, "command_refused")
    assert [(e["key_id"], e["correlation_id"]) for e in refused] == [("k2", f"bulk-{plan}-1")]


def test_executing_twice_does_each_key_once(live: Live) -> None:
    with live.client() as admin, live.client("secadmin") as c:
        make_keys(admin, ["k1", "k2"])
        plan = _plan(c, {"all": True}, action="deactivate").json()["plan"]
        c.post(f"/v1/bulk/{plan}/execute")
        _finished(c, plan)
        again = c.post(f"/v1/bulk/{plan}/execute")
        assert again.status_code == 200 and again.json()["state"] == "finished" and again.json()["done"] == 2
    assert len(journal_events(live, "deactivated")) == 2


@pytest.mark.parametrize(
    ("selector", "field"),
    [
        ({}, "selector"),
        ({"states": ["lost"]}, "selector.states.0"),
        ({"owner": "x", "colour": "red"}, "selector.colour"),
        ({"expiring_before": "tomorrow"}, "selector.expiring_before"),
        ({"all": True, "owner": "x"}, "selector.all"),
    ],
)
def test_a_bad_selector_is_a_422_naming_the_field(live: Live, selector: dict, field: str) -> None:
    with live.client("secadmin") as c:
        answer = _plan(c, selector)
        assert answer.status_code == 422
        assert answer.json()["type"].endswith("/invalid-selector")
        assert field in [e["field"] for e in answer.json()["errors"]], answer.json()


def test_wrong_role_is_a_403_naming_the_role(live: Live) -> None:
    with live.client("operator") as c:
        answer = _plan(c, {"all": True})
        assert answer.status_code == 403
        assert answer.headers["content-type"] == "application/problem+json"
        assert answer.json()["required_scope"] == "bulk" and answer.json()["required_role"] == "security-admin"


def test_an_unknown_plan_is_a_404(live: Live) -> None:
    with live.client("secadmin") as c:
        answer = c.post("/v1/bulk/plan-0123456789abcdef/execute")
        assert answer.status_code == 404 and answer.json()["type"].endswith("/plan-not-found")
        assert c.get("/v1/bulk/nope").status_code == 404


def test_a_key_named_like_a_plan_path_stays_readable(live: Live) -> None:
    """Plans live under /v1/bulk/: key ids may hold '/', so /v1/keys/bulk/<x> is always the key bulk/<x>."""
    with live.client() as c:
        event = {"id": "g-bulk", "type": "generated", "key_id": "bulk/plan-0123456789abcdef",
                 "occurred_at": "2026-11-28T10:00:00Z"}  # fmt: skip
        assert c.post("/v1/events", json=event).status_code == 200
        answer = c.get("/v1/keys/bulk/plan-0123456789abcdef")
        assert answer.status_code == 200 and answer.json()["key_id"] == "bulk/plan-0123456789abcdef"
