"""Incidents over HTTP on a live server: the workflow and its refusals, roles, the automatic incident
of a compromise, the timeline, and the exported evidence checked offline."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.server import Live, live_server
from tests.waiting import wait_until


@pytest.fixture
def live(tmp_path: Path) -> Any:
    with live_server(tmp_path) as server:
        yield server


def _events(live: Live, *events: dict[str, Any]) -> None:
    body = "\n".join(json.dumps(e) for e in events)
    r = live.client("ingest").post("/v1/events", content=body, headers={"Content-Type": "application/x-ndjson"})
    assert r.status_code == 200, r.text


def _key(live: Live, key_id: str, node: str = "node-a") -> None:
    at = "2026-01-01T00:00:0{}Z"
    _events(
        live,
        {"id": f"{key_id}-g", "type": "generated", "key_id": key_id, "occurred_at": at.format(1),
         "algorithm": "ed25519"},
        {"id": f"{key_id}-a", "type": "activated", "key_id": key_id, "occurred_at": at.format(2)},
        {"id": f"{key_id}-p", "type": "propagated", "key_id": key_id, "occurred_at": at.format(3), "node": node,
         "state": "active"},
    )  # fmt: skip


def _open(live: Live, token: str = "operator", **body: Any) -> httpx.Response:
    return live.client(token).post("/v1/incidents", json={"title": "suspicious use", "severity": "high"} | body)


def test_status_workflow_and_its_refusals(live: Live) -> None:
    r = _open(live, keys=["k1"], nodes=["node-a"], assignee="alice")
    assert r.status_code == 201, r.text
    inc = r.json()["id"]
    assert inc.startswith("inc-") and len(inc) == 25
    ops = live.client("operator")
    assert ops.post(f"/v1/incidents/{inc}/status", json={"status": "mitigating"}).status_code == 200
    bad = ops.post(f"/v1/incidents/{inc}/status", json={"status": "open"})
    assert bad.status_code == 409
    assert bad.headers["content-type"] == "application/problem+json"
    problem = bad.json()
    assert problem["type"].endswith("/incident-status-conflict")
    assert problem["current_status"] == "mitigating" and problem["allowed"] == ["closed", "resolved"]
    assert "mitigating" in problem["detail"] and "not open" in problem["detail"]
    assert ops.post(f"/v1/incidents/{inc}/status", json={"status": "resolved", "reason": "key revoked"}).is_success
    assert ops.post(f"/v1/incidents/{inc}/status", json={"status": "closed"}).is_success
    closed = ops.post(f"/v1/incidents/{inc}/notes", json={"text": "late note"})
    assert closed.status_code == 409 and closed.json()["type"].endswith("/incident-closed")
    shown = live.client("viewer").get(f"/v1/incidents/{inc}").json()
    assert shown["status"] == "closed" and shown["assignee"] == "alice"
    assert shown["mitigated_at"] and shown["closed_at"] and shown["keys"] == ["k1"] and shown["nodes"] == ["node-a"]
    assert [t["summary"].split(":")[0] for t in shown["timeline"]] == [
        "opened (high, manual)",
        "status open -> mitigating",
        "status mitigating -> resolved",
        "status resolved -> closed",
    ]
    assert {t["actor"] for t in shown["timeline"]} == {"operator"}
    missing = ops.post("/v1/incidents/inc-20260101-000000000000/status", json={"status": "closed"})
    assert missing.status_code == 404 and missing.json()["type"].endswith("/incident-not-found")
    invalid = ops.post("/v1/incidents", json={"title": "x", "severity": "urgent"})
    assert invalid.status_code == 422 and "severity" in invalid.json()["detail"]


def test_roles(live: Live) -> None:
    inc = _open(live).json()["id"]
    ops = live.client("operator")
    assert ops.post(f"/v1/incidents/{inc}/notes", json={"text": "looking at node-a"}).is_success
    assert ops.post(f"/v1/incidents/{inc}/assign", json={"assignee": "bob"}).is_success
    for token, scope, role in (("viewer", "incident", "operator"), ("auditor", "incident", "operator")):
        refused = live.client(token).post(f"/v1/incidents/{inc}/notes", json={"text": "x"})
        assert refused.status_code == 403
        assert refused.json()["required_scope"] == scope and refused.json()["required_role"] == role
    assert _open(live, "viewer").json()["required_role"] == "operator"
    export = live.client("operator").get(f"/v1/incidents/{inc}/export")
    assert export.status_code == 403 and export.json()["required_role"] == "auditor"
    listed = live.client("viewer").get("/v1/incidents", params={"status": "open"}).json()["items"]
    assert [i["id"] for i in listed] == [inc] and listed[0]["assignee"] == "bob"
    assert live.client("viewer").get("/v1/incidents", params={"status": "closed"}).json()["items"] == []
    webhook = live.client("operator").post("/v1/alertmanager/webhook", json={})
    assert webhook.status_code == 403 and webhook.json()["required_scope"] == "alerts"


def test_compromise_opens_one_incident_with_the_keys_timeline(live: Live) -> None:
    _key(live, "k-comp", node="node-a")
    _key(live, "k-other", node="node-b")
    sec = live.client("secadmin")
    r = sec.post("/v1/keys/k-comp/commands", json={"command": "compromise", "reason": "leaked", "id": "c-1"})
    assert r.status_code == 200, r.text
    viewer = live.client("viewer")
    wait_until(lambda: viewer.get("/v1/incidents").json()["items"], what="an incident for the compromise")
    # the same command again (a retry) is a journal duplicate: still one incident
    assert (
        sec.post("/v1/keys/k-comp/commands", json={"command": "compromise", "reason": "leaked", "id": "c-1"}).json()[
            "status"
        ]
        == "duplicate"
    )
    live.runtime.incidents.on_compromise(_entry_of(live, "c-1"))  # a replay of the reaction
    (item,) = viewer.get("/v1/incidents").json()["items"]
    assert item["severity"] == "critical" and item["source"] == "compromise" and item["status"] == "open"
    inc = item["id"]
    # a lifecycle event of the key while the incident is open joins the timeline; another key's does not
    assert sec.post("/v1/keys/k-comp/commands", json={"command": "destroy", "reason": "gone"}).status_code in (200, 202)
    assert sec.post("/v1/keys/k-other/commands", json={"command": "suspend", "reason": "unrelated"}).is_success
    shown = viewer.get(f"/v1/incidents/{inc}").json()
    assert shown["keys"] == ["k-comp"] and shown["nodes"] == ["node-a"]
    types = [(t["type"], t["key_id"]) for t in shown["timeline"]]
    assert types[:2] == [("compromised", "k-comp"), ("incident", "k-comp")]
    assert ("suspended", "k-other") not in types
    assert all(key == "k-comp" for _, key in types)


def test_a_compromise_citing_an_open_incident_links_to_it(live: Live) -> None:
    _key(live, "k-linked")
    inc = _open(live).json()["id"]
    # an observation from a producer, correlated with the incident (REVOCATION's commands do the same)
    _events(live, {"id": "obs-1", "type": "compromised", "key_id": "k-linked", "occurred_at": "2026-01-02T00:00:00Z",
                   "correlation_id": inc, "node": "node-z"})  # fmt: skip
    viewer = live.client("viewer")
    wait_until(lambda: viewer.get(f"/v1/incidents/{inc}").json()["keys"] == ["k-linked"], what="the key linked")
    assert len(viewer.get("/v1/incidents").json()["items"]) == 1
    shown = viewer.get(f"/v1/incidents/{inc}").json()
    assert sorted(shown["nodes"]) == ["node-a", "node-z"]
    assert [t["type"] for t in shown["timeline"]] == ["incident", "compromised", "incident"]


def _entry_of(live: Live, event_id: str) -> Any:
    from keylife.journal.reader import get_entries

    seq, _ = live.runtime.registry.seen(event_id)
    (entry,) = get_entries(live.runtime.journal, [seq])
    return entry


def test_export_verifies_offline_and_a_changed_entry_fails(live: Live, tmp_path: Path) -> None:
    _key(live, "k-exp")
    inc = _open(live, keys=["k-exp"]).json()["id"]
    live.client("operator").post(f"/v1/incidents/{inc}/notes", json={"text": "rotating"})
    live.client("secadmin").post("/v1/keys/k-exp/commands", json={"command": "revoke", "reason": "precaution"})
    out = tmp_path / "report.json"
    env = {"KEYLIFE_TOKEN": live.tokens["auditor"], "PATH": "/usr/bin:/bin"}
    done = _cli(["incident", "export", inc, "-o", str(out), "--url", live.url], env)
    assert done.returncode == 0, done.stderr
    report = json.loads(out.read_text())
    assert report["format"] == "keylife-incident-report/1"
    assert [t["type"] for t in report["timeline"]] == ["incident", "incident", "revoked"]
    md = out.with_suffix(".md").read_text()
    assert f"# Incident {inc}: suspicious use" in md and "| revoked | secadmin | k-exp | revoked: precaution |" in md
    bundle = out.with_suffix(".proof.json")
    key = live.runtime.config.journal_dir / "verifier.key"
    ok = _cli(["journal", "check-proof", str(bundle), "--key", str(key)], env)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    data = json.loads(bundle.read_text())
    data["entries"][2]["entry"] = data["entries"][2]["entry"].replace("precaution", "routine")
    bundle.write_text(json.dumps(data))
    bad = _cli(["journal", "check-proof", str(bundle), "--key", str(key)], env)
    assert bad.returncode == 1 and f"entry seq {data['entries'][2]['seq']}" in bad.stdout + bad.stderr


def _cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "keylife.cli", *args], capture_output=True, text=True, env=env,
                          timeout=60, check=False)  # fmt: skip


def _scrape(live: Live) -> dict[str, float]:
    from prometheus_client.parser import text_string_to_metric_families

    text = live.client("read").get("/metrics").text
    values = {}
    for fam in text_string_to_metric_families(text):
        if fam.name.startswith("keylife_incident"):
            for s in fam.samples:
                values[s.name + "".join(f"|{k}={v}" for k, v in sorted(s.labels.items()))] = s.value
    return values


def test_metrics_scraped_and_the_same_after_a_restart(tmp_path: Path) -> None:
    with live_server(tmp_path) as live:
        ops = live.client("operator")
        crit = _open(live, severity="critical").json()["id"]
        _open(live, severity="low")
        ops.post(f"/v1/incidents/{crit}/status", json={"status": "mitigating"})
        ops.post(f"/v1/incidents/{crit}/status", json={"status": "closed"})
        first = _scrape(live)
    assert first["keylife_incidents_open|severity=low"] == 1
    assert first["keylife_incidents_open|severity=critical"] == 0
    assert first["keylife_incident_mitigate_seconds_count"] == 1
    assert first["keylife_incident_close_seconds_count"] == 1
    assert first["keylife_incident_close_seconds_bucket|le=3600"] == 1
    assert 0 < first["keylife_incident_close_seconds_sum"] < 60
    with live_server(tmp_path) as live:
        assert _scrape(live) == first


def test_cli_workflow(live: Live) -> None:
    ops = {"KEYLIFE_TOKEN": live.tokens["operator"], "PATH": "/usr/bin:/bin"}
    url = ["--url", live.url]
    opened = _cli(["incident", "open", "--title", "odd use", "--severity", "medium", "--key", "k9", *url], ops)
    assert opened.returncode == 0, opened.stderr
    inc = opened.stdout.strip()
    noted = _cli(["incident", "note", inc, "checked node-1", *url], ops)
    assert noted.returncode == 0 and noted.stdout.startswith(f"{inc}: note added (journal entry ")
    assert _cli(["incident", "resolve", inc, "--reason", "false alarm", *url], ops).returncode == 0
    again = _cli(["incident", "status", inc, "mitigating", *url], ops)
    assert again.returncode == 1
    assert "Status change not allowed: incident " in again.stderr and "can move to closed, open" in again.stderr
    shown = _cli(["incident", "show", inc, *url], ops)
    assert shown.returncode == 0
    lines = shown.stdout.splitlines()
    assert lines[0] == f"{inc}: odd use" and "status resolved, severity medium" in lines[1]
    assert lines[4].split() == ["time", "seq", "type", "actor", "key", "summary"]
    rows = [line.split(None, 5) for line in lines[5:]]
    assert [(r[2], r[3], r[4]) for r in rows] == [("incident", "operator", "-")] * 3
    assert [r[5] for r in rows] == ["opened (medium, manual): odd use", "note: checked node-1",
                                    "status open -> resolved: false alarm"]  # fmt: skip
    listed = _cli(["incident", "list", "--status", "resolved", *url], ops)
    assert listed.stdout.split()[:3] == [inc, "resolved", "medium"]
    viewer = {"KEYLIFE_TOKEN": live.tokens["viewer"], "PATH": "/usr/bin:/bin"}
    refused = _cli(["incident", "close", inc, *url], viewer)
    assert refused.returncode == 1 and "(needs role operator)" in refused.stderr
    no_token = _cli(["incident", "list", *url], {"PATH": "/usr/bin:/bin"})
    assert no_token.returncode == 2 and "KEYLIFE_TOKEN" in no_token.stderr and "Traceback" not in no_token.stderr
    down = _cli(["incident", "list", "--url", "http://127.0.0.1:9"], ops)
    assert down.returncode == 2 and "cannot reach" in down.stderr


def test_rebuild_from_the_journal_gives_the_same_incidents(tmp_path: Path) -> None:
    import sqlite3

    from keylife.journal.reader import iter_entries
    from keylife.registry.projection import rebuild

    with live_server(tmp_path) as live:
        _key(live, "k-rb")
        inc = _open(live, keys=["k-rb"]).json()["id"]
        live.client("secadmin").post("/v1/keys/k-rb/commands", json={"command": "compromise", "reason": "x"})
        wait_until(lambda: len(live.client("viewer").get("/v1/incidents").json()["items"]) == 2, what="auto incident")
        live.client("operator").post(f"/v1/incidents/{inc}/status", json={"status": "closed"})
        live.client("secadmin").post("/v1/keys/k-rb/commands", json={"command": "destroy", "reason": "after"})
        config = live.runtime.config

    def tables(path: Path) -> list[list[tuple[Any, ...]]]:
        db = sqlite3.connect(path)
        try:
            return [db.execute(f"SELECT * FROM {t} ORDER BY 1, 2").fetchall()
                    for t in ("incidents", "incident_keys", "incident_nodes", "incident_timeline")]  # fmt: skip
        finally:
            db.close()

    served = tables(config.registry_path)
    rebuilt = tmp_path / "rebuilt.sqlite"
    rebuild(iter_entries(config.journal_dir), rebuilt, origin=config.journal.origin)
    assert tables(rebuilt) == served
    timeline = [seq for incident, seq in served[3] if incident == inc]
    assert len(timeline) == 3  # opened, the compromise (a lifecycle event of its key), closed; not the destroy after


def test_a_compromise_left_without_its_incident_gets_one_at_start(tmp_path: Path) -> None:
    with live_server(tmp_path, incidents={"open_on_compromise": False}) as live:
        _key(live, "k-late")
        assert live.client("secadmin").post("/v1/keys/k-late/commands",
                                            json={"command": "compromise", "reason": "x"}).is_success  # fmt: skip
        assert live.client("viewer").get("/v1/incidents").json()["items"] == []
    with live_server(tmp_path) as live:
        viewer = live.client("viewer")
        wait_until(lambda: viewer.get("/v1/incidents").json()["items"], what="the incident caught up")
        (item,) = viewer.get("/v1/incidents").json()["items"]
        assert item["source"] == "compromise"
        assert viewer.get(f"/v1/incidents/{item['id']}").json()["keys"] == ["k-late"]
    with live_server(tmp_path) as live:  # the next start finds it handled
        assert live.runtime.incidents.catch_up(live.runtime.journal) == 0
        assert len(live.client("viewer").get("/v1/incidents").json()["items"]) == 1


def test_lockdown_and_bulk_records_naming_the_incident_join_its_timeline(live: Live) -> None:
    from keylife.domain.events import EventType

    inc = _open(live).json()["id"]
    ledger = live.runtime.ledger
    cited = ledger.system_event(EventType.LOCKDOWN, details={"phase": "applied", "lockdown": "ld-1", "incident": inc})
    other = ledger.system_event(EventType.BULK_OPERATION, details={"phase": "planned", "incident": "inc-x"})
    plan = ledger.system_event(EventType.BULK_OPERATION, details={"phase": "finished", "incident": inc},
                               reason="revoked 3 keys")  # fmt: skip
    assert [o.status for o in ledger.submit([cited, other, plan]).result(timeout=10)] == ["accepted"] * 3
    timeline = live.client("viewer").get(f"/v1/incidents/{inc}").json()["timeline"]
    assert [t["summary"] for t in timeline][1:] == ["lockdown applied", "bulk_operation finished: revoked 3 keys"]


def test_show_limits_the_timeline_and_says_how_much_it_left_out(live: Live) -> None:
    inc = _open(live).json()["id"]
    for n in range(3):
        live.client("operator").post(f"/v1/incidents/{inc}/notes", json={"text": f"note {n}"})
    shown = live.client("viewer").get(f"/v1/incidents/{inc}", params={"timeline_limit": 2}).json()
    assert shown["timeline_omitted"] == 2
    assert [t["summary"] for t in shown["timeline"]] == ["note: note 1", "note: note 2"]
