"""Lockdown and release (issue 14, item 8) and automatic lockdown (item 9)."""

from __future__ import annotations

from pathlib import Path

from tests.bulk_helpers import journal_events, make_keys, states
from tests.server import live_server
from tests.waiting import wait_until


def _lockdown(c, **body):  # type: ignore[no-untyped-def]
    return c.post("/v1/lockdowns", json={"reason": "node-3 breached"} | body)


def test_release_restores_exactly_the_keys_the_lockdown_suspended(tmp_path: Path) -> None:
    with live_server(tmp_path) as live, live.client() as admin, live.client("operator") as op:
        make_keys(admin, ["n1", "n2", "n3", "n4", "n5"], node="node-3")
        make_keys(admin, ["other"], node="node-9")
        make_keys(admin, ["pre"], node="node-3", active=False)
        assert admin.post("/v1/keys/n5/commands", json={"command": "suspend", "reason": "earlier"}).status_code == 200
        applied = _lockdown(op, node="node-3")
        assert applied.status_code == 200, applied.text
        body = applied.json()
        lockdown = body["lockdown"]
        assert (body["matched"], body["suspended"], body["refused"]) == (4, 4, 0)
        assert states(admin, ["n1", "n5", "pre", "other"]) == {"n1": "suspended", "n5": "suspended",
                                                              "pre": "pre_activation", "other": "active"}  # fmt: skip
        # meanwhile: n2 reactivated by hand, n3 revoked, n4 reactivated then suspended again by someone else
        for key, command in (("n2", "reactivate"), ("n3", "revoke"), ("n4", "reactivate"), ("n4", "suspend")):
            assert admin.post(f"/v1/keys/{key}/commands", json={"command": command, "reason": "x"}).status_code == 200
        with live.client("operator") as weak:
            refused = weak.post(f"/v1/lockdowns/{lockdown}/release", json={})
            assert refused.status_code == 403 and refused.json()["required_role"] == "security-admin"
        with live.client("secadmin") as sec:
            released = sec.post(f"/v1/lockdowns/{lockdown}/release", json={"reason": "contained"})
            assert released.status_code == 200, released.text
            out = released.json()
            assert (out["suspended"], out["released"], out["left_alone"]) == (4, 1, 3)
            assert sorted(out["left_alone_keys"]) == ["n2", "n3", "n4"]
            assert states(admin, ["n1", "n2", "n3", "n4", "n5"]) == {
                "n1": "active", "n2": "active", "n3": "revoked", "n4": "suspended", "n5": "suspended",
            }  # fmt: skip
            again = sec.post(f"/v1/lockdowns/{lockdown}/release", json={})
            assert again.status_code == 409 and again.json()["type"].endswith("/lockdown-released")
            shown = sec.get(f"/v1/lockdowns/{lockdown}").json()
            assert shown["phase"] == "released" and shown["keys_suspended"] == 4
        records = journal_events(live, "lockdown")
        assert [r["details"]["phase"] for r in records] == ["applied", "released"]
        assert records[0]["actor"] == "operator" and records[1]["actor"] == "secadmin"
        suspensions = [e for e in journal_events(live, "suspended") if e.get("correlation_id") == lockdown]
        assert sorted(e["key_id"] for e in suspensions) == ["n1", "n2", "n3", "n4"]


def test_a_lockdown_without_a_target_is_a_422(tmp_path: Path) -> None:
    with live_server(tmp_path) as live, live.client("operator") as op:
        answer = _lockdown(op)
        assert answer.status_code == 422 and "node, owner or a selector" in answer.json()["detail"]
        missing = op.post("/v1/lockdowns/lock-0000000000000000/release", json={})
        assert missing.status_code == 403  # the operator may not release at all
    with live_server(tmp_path / "b") as live, live.client("secadmin") as sec:
        assert sec.post("/v1/lockdowns/lock-0000000000000000/release", json={}).status_code == 404


def test_a_compromise_locks_down_the_same_owner_on_the_same_node_journaled_with_its_rule(tmp_path: Path) -> None:
    rules = {
        "auto_lockdown": [{"name": "same-owner-same-node", "when": "compromised", "scope": "same_owner_same_node"}]
    }
    with live_server(tmp_path, bulk=rules) as live, live.client() as admin:
        make_keys(admin, ["bad", "sib1", "sib2"], owner="team-a", node="node-3")
        make_keys(admin, ["far"], owner="team-a", node="node-8")  # same owner, other node
        make_keys(admin, ["neighbour"], owner="team-b", node="node-3")  # same node, other owner
        assert admin.post("/v1/keys/bad/commands", json={"command": "compromise", "reason": "leak"}).status_code == 200
        wait_until(lambda: journal_events(live, "lockdown"), what="automatic lockdown journaled")
        (record,) = journal_events(live, "lockdown")
        assert record["details"]["rule"] == "same-owner-same-node" and record["details"]["trigger_key"] == "bad"
        assert record["details"]["suspended"] == 2 and record["actor"] == "keylife"
        assert record["details"]["selector"] == (
            '{"nodes":["node-3"],"owner":"team-a","scope":"same_owner_same_node","states":["active"]}'
        )
        assert states(admin, ["bad", "sib1", "sib2", "far", "neighbour"]) == {
            "bad": "compromised", "sib1": "suspended", "sib2": "suspended", "far": "active", "neighbour": "active",
        }  # fmt: skip
        metrics = admin.get("/metrics").text  # what KeylifeAutomaticLockdown pages on, naming the rule
        assert 'keylife_automatic_lockdowns_total{rule="same-owner-same-node"} 1.0' in metrics
        assert "keylife_lockdowns_applied 1.0" in metrics


def test_a_compromise_a_stop_left_unlocked_is_locked_down_at_the_next_start_once(tmp_path: Path) -> None:
    """The rule is on at the next start (or the process stopped between the compromise's commit and its
    lockdown): the start hands the day's compromises to the rule, which acts once per key."""
    rules = {"auto_lockdown": [{"name": "same-owner", "when": "compromised", "scope": "same_owner"}]}
    with live_server(tmp_path) as live, live.client() as admin:  # the rule is not configured yet
        make_keys(admin, ["bad", "sib1"], owner="team-a", node="node-3")
        assert admin.post("/v1/keys/bad/commands", json={"command": "compromise", "reason": "leak"}).status_code == 200
    with live_server(tmp_path, bulk=rules) as live, live.client() as admin:
        wait_until(lambda: journal_events(live, "lockdown"), what="the missed automatic lockdown applied at start")
        (record,) = journal_events(live, "lockdown")
        assert record["details"]["rule"] == "same-owner" and record["details"]["trigger_key"] == "bad"
        assert states(admin, ["sib1"]) == {"sib1": "suspended"}
        with live.client("secadmin") as sec:  # a security admin judges it contained and releases it
            released = sec.post(f"/v1/lockdowns/{record['details']['lockdown']}/release", json={})
            assert released.status_code == 200 and released.json()["released"] == 1
    with live_server(tmp_path, bulk=rules) as live:  # a restart does not lock the released keys down again
        wait_until(lambda: live.runtime.bulk._triggers.empty(), what="the start's triggers handled")
        live.runtime.bulk.stop()  # drain: the worker has judged every trigger
        assert [r["details"]["phase"] for r in journal_events(live, "lockdown")] == ["applied", "released"]
        with live.client() as admin:
            assert states(admin, ["sib1"]) == {"sib1": "active"}


def test_automatic_lockdown_is_off_by_default(tmp_path: Path) -> None:
    with live_server(tmp_path) as live, live.client() as admin:
        make_keys(admin, ["bad", "sib1"], owner="team-a", node="node-3")
        assert admin.post("/v1/keys/bad/commands", json={"command": "compromise", "reason": "leak"}).status_code == 200
        live.runtime.ledger.sync_registry().result()
        assert live.runtime.bulk._worker is None
        assert states(admin, ["sib1"]) == {"sib1": "active"} and journal_events(live, "lockdown") == []
        assert "keylife_automatic_lockdowns_total{" not in admin.get("/metrics").text  # no rule, no series


def test_the_lockdown_tables_are_a_pure_function_of_the_journal(tmp_path: Path) -> None:
    """``keylife registry rebuild`` gives the same plans, lockdowns and approvals as the live projection."""
    import sqlite3

    from keylife.journal.reader import iter_entries
    from keylife.registry.projection import rebuild

    with live_server(tmp_path) as live, live.client() as admin, live.client("secadmin") as sec:
        make_keys(admin, ["n1", "n2", "n3"], node="node-3")
        lockdown = _lockdown(sec, node="node-3").json()["lockdown"]
        assert admin.post("/v1/keys/n3/commands", json={"command": "revoke", "reason": "x"}).status_code == 200
        assert sec.post(f"/v1/lockdowns/{lockdown}/release", json={}).status_code == 200
        plan = sec.post("/v1/keys/bulk", json={"selector": {"ids": ["n1"]}, "action": "suspend", "reason": "r"})
        sec.post(f"/v1/bulk/{plan.json()['plan']}/execute")
        wait_until(lambda: sec.get(f"/v1/bulk/{plan.json()['plan']}").json()["state"] == "finished")
        assert sec.post("/v1/keys/n3/commands", json={"command": "destroy", "reason": "r"}).status_code == 202
        live.runtime.ledger.sync_registry().result()
        config = live.runtime.config
    rebuilt = tmp_path / "rebuilt.sqlite"
    rebuild(iter_entries(config.journal_dir), rebuilt, origin=config.journal.origin)
    for table in ("bulk_plans", "lockdowns", "lockdown_keys", "approvals"):
        rows = [
            sorted(sqlite3.connect(path).execute(f"SELECT * FROM {table}")) for path in (config.registry_path, rebuilt)
        ]
        assert rows[0] == rows[1] and rows[0], table
