"""Dual control (issue 14, item 15): destroy and large bulk plans wait for a second person."""

from __future__ import annotations

from pathlib import Path

from tests.bulk_helpers import journal_events, make_keys, states
from tests.server import live_server
from tests.waiting import wait_until


def _destroy(c, key):  # type: ignore[no-untyped-def]
    return c.post(f"/v1/keys/{key}/commands", json={"command": "destroy", "reason": "retired"})


def test_destroy_waits_for_a_second_person_and_journals_both(tmp_path: Path) -> None:
    with live_server(tmp_path) as live, live.client() as admin:
        make_keys(admin, ["old"])
        assert admin.post("/v1/keys/old/commands", json={"command": "deactivate", "reason": "x"}).status_code == 200
        with live.client("secadmin") as first, live.client("secadmin2") as second, live.client("operator") as op:
            asked = _destroy(first, "old")
            assert asked.status_code == 202, asked.text
            approval = asked.json()["approval"]
            assert asked.json()["status"] == "approval_required"
            assert states(admin, ["old"]) == {"old": "deactivated"}  # nothing happens until approved
            pending = first.get("/v1/approvals", params={"phase": "requested"}).json()["items"]
            assert [p["approval"] for p in pending] == [approval]
            same = first.post(f"/v1/approvals/{approval}/approve")
            assert same.status_code == 403 and same.headers["content-type"] == "application/problem+json"
            assert same.json()["type"].endswith("/same-approver") and "secadmin requested" in same.json()["detail"]
            weak = op.post(f"/v1/approvals/{approval}/approve")
            assert weak.status_code == 403 and weak.json()["required_scope"] == "approve"
            assert states(admin, ["old"]) == {"old": "deactivated"}
            granted = second.post(f"/v1/approvals/{approval}/approve")
            assert granted.status_code == 200, granted.text
            assert granted.json()["result"]["state"] == "destroyed"
            twice = second.post(f"/v1/approvals/{approval}/approve")
            assert twice.status_code == 409 and twice.json()["type"].endswith("/approval-decided")
    (destroyed,) = journal_events(live, "destroyed")
    assert destroyed["actor"] == "secadmin" and destroyed["attributes"]["approved_by"] == "secadmin2"
    phases = [(r["details"]["phase"], r["details"].get("approved_by")) for r in journal_events(live, "approval")]
    assert phases == [("requested", None), ("granted", "secadmin2")]


def test_an_approval_not_granted_in_time_expires(tmp_path: Path) -> None:
    with live_server(tmp_path, bulk={"approval_ttl_seconds": 0.2}) as live, live.client() as admin:
        make_keys(admin, ["old"], active=False)
        with live.client("secadmin") as first, live.client("secadmin2") as second:
            approval = _destroy(first, "old").json()["approval"]
            wait_until(lambda: first.get("/v1/approvals", params={"phase": "expired"}).json()["items"], what="expired")
            late = second.post(f"/v1/approvals/{approval}/approve")
            assert late.status_code == 410 and late.json()["type"].endswith("/approval-expired")
            assert states(admin, ["old"]) == {"old": "pre_activation"}
    assert [r["details"]["phase"] for r in journal_events(live, "approval")] == ["requested", "expired"]


def test_a_bulk_plan_over_the_size_needs_a_second_approver(tmp_path: Path) -> None:
    with live_server(tmp_path, bulk={"dual_control_min_keys": 3}) as live, live.client() as admin:
        make_keys(admin, ["k1", "k2", "k3"])
        with live.client("secadmin") as first, live.client("secadmin2") as second:
            planned = first.post("/v1/keys/bulk", json={"selector": {"all": True}, "action": "revoke", "reason": "x"})
            assert planned.json()["dual_control"] is True
            plan = planned.json()["plan"]
            asked = first.post(f"/v1/bulk/{plan}/execute")
            assert asked.status_code == 202 and asked.json()["plan"] == plan
            again = first.post(f"/v1/bulk/{plan}/execute")  # asked twice: still the one approval
            assert again.status_code == 202 and again.json()["approval"] == asked.json()["approval"]
            assert first.get(f"/v1/bulk/{plan}").json()["state"] == "planned"
            assert states(admin, ["k1"]) == {"k1": "active"}
            granted = second.post(f"/v1/approvals/{asked.json()['approval']}/approve")
            assert granted.status_code == 200, granted.text
            wait_until(lambda: first.get(f"/v1/bulk/{plan}").json()["state"] == "finished", what="finished")
            done = first.get(f"/v1/bulk/{plan}").json()
            assert done["done"] == 3 and done["approver"] == "secadmin2" and done["actor"] == "secadmin"
    finished = journal_events(live, "bulk_operation")[-1]["details"]
    assert finished["phase"] == "finished" and finished["approver"] == "secadmin2"


def test_a_destroy_the_lifecycle_forbids_is_refused_at_once_without_an_approval(tmp_path: Path) -> None:
    with live_server(tmp_path) as live, live.client() as admin, live.client("secadmin") as first:
        make_keys(admin, ["live-key"])
        refused = _destroy(first, "live-key")
        assert refused.status_code == 409 and refused.json()["type"].endswith("/lifecycle-conflict")
        assert "key is active; 'destroyed' is not allowed" in refused.json()["detail"]
        assert first.get("/v1/approvals").json()["items"] == []
    assert journal_events(live, "approval") == []


def test_a_bulk_destroy_of_any_size_waits_for_a_second_person(tmp_path: Path) -> None:
    with live_server(tmp_path) as live, live.client() as admin:
        make_keys(admin, ["d1"], active=False)
        with live.client("secadmin") as first, live.client("secadmin2") as second:
            plan = first.post("/v1/keys/bulk", json={"selector": {"ids": ["d1"]}, "action": "destroy", "reason": "x"})
            assert plan.json()["dual_control"] is True and plan.json()["total"] == 1
            asked = first.post(f"/v1/bulk/{plan.json()['plan']}/execute")
            assert asked.status_code == 202
            assert states(admin, ["d1"]) == {"d1": "pre_activation"}
            assert second.post(f"/v1/approvals/{asked.json()['approval']}/approve").status_code == 200
            wait_until(lambda: states(admin, ["d1"]) == {"d1": "destroyed"}, what="destroyed after approval")
    (destroyed,) = journal_events(live, "destroyed")
    assert destroyed["actor"] == "secadmin" and destroyed["attributes"] == {"approved_by": "secadmin2"}
