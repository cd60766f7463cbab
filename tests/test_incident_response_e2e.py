"""Issue 14 end to end, on the demo network: a compromise through ``keylife incident revoke`` opens an
incident; the simulated nodes fetch the signed feed and confirm, the lagging node does not;
``incident revoke --wait`` names it and exits 1, and ``KeylifeRevocationUnconfirmed`` fires on a real
Prometheus with the key and the node as labels. Then an operator locks a node down for the incident
and a security admin releases it: exactly the keys active before are active again, the incident's
timeline holds all of it, and ``keylife verify`` passes over the journal.

The rules are the shipped ones rendered with the revocation thresholds shortened (6 s instead of
5 min, ``for: 2s``) and scraped every second; nothing else changes. The demo stops before the
lockdown, so only the lockdown and the release change key states while it is checked.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from keylife.cli.main import main
from keylife.demo.network import DemoConfig, DemoNetwork, run_live
from tests.prometheus import PrometheusServer, ScrapeJob
from tests.server import Live, live_server
from tests.waiting import wait_until

CONFIG = DemoConfig(nodes=4, keys=12, seed=7, history=timedelta(hours=6), interval=timedelta(minutes=30))


def _rules(directory: Path) -> Path:
    from alert_rules.render import load_config, render

    config = load_config()
    config["thresholds"] |= {
        "revocation_unconfirmed_warning_minutes": 0.1,
        "revocation_unconfirmed_critical_minutes": 60,
        "revocation_unconfirmed_for": "2s",
    }
    path = directory / "keylife.rules.yml"
    path.write_text(render(config))
    return path


def _candidate(live: Live, lagging: str, notable: set[str]) -> str | None:
    """An active demo key that the lagging node and at least one other node reported holding."""
    with live.client() as c:
        for item in c.get("/v1/keys", params={"state": "active", "limit": 200}).json()["items"]:
            if item["key_id"] in notable:
                continue
            key = c.get(f"/v1/keys/{item['key_id']}", params={"history": 0}).json()
            holders = set(key["nodes"]) | set(key["used_on"])
            if lagging in holders and len(holders) >= 2:
                return item["key_id"]
    return None


def test_demo_nodes_confirm_from_the_feed_and_the_lagging_node_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    config = DemoConfig(**{**CONFIG.__dict__, "start": datetime.now(UTC) - CONFIG.history})
    scenario = DemoNetwork(config).scenario_keys()
    lagging = scenario["lagging_node"]
    stop = threading.Event()
    with live_server(tmp_path) as live:
        demo = threading.Thread(target=run_live, args=(live.url, live.tokens["all"], config),
                                kwargs={"stop": stop, "poll": 0.5}, daemon=True)  # fmt: skip
        demo.start()
        try:
            found: list[str] = []
            wait_until(lambda: found.append(k) or True if (k := _candidate(live, lagging, set(scenario.values())))
                       else False, timeout=60, what="a demo key the lagging node holds")  # fmt: skip
            key = found[0]
            job = ScrapeJob("keylife", [live.url.removeprefix("http://")])
            with PrometheusServer(tmp_path / "prom", [job], rule_files=[_rules(tmp_path)]) as prom:
                prom.wait_for('up{job="keylife"} == 1', timeout=60)
                monkeypatch.setenv("KEYLIFE_TOKEN", live.tokens["secadmin"])
                argv = [
                    "incident",
                    "revoke",
                    key,
                    "--reason",
                    "found in a paste",
                    "--compromise",
                    "--incident",
                    "inc-e2e",
                ]
                code = main([*argv, "--wait", "15s", "--interval", "250ms", "--url", live.url])
                out = capsys.readouterr().out
                assert code == 1, out
                assert f"  {lagging} (expected since" in out
                with live.client() as c:
                    state = c.get(f"/v1/revocations/{key}").json()
                assert state["unconfirmed"] == [lagging] and state["confirmed"] == state["expected"] - 1 >= 1
                assert {n["via"] for n in state["nodes"] if n["confirmed_at"]} == {"propagated"}
                firing = prom.wait_for(
                    f'ALERTS{{alertname="KeylifeRevocationUnconfirmed", alertstate="firing", key_id="{key}"}}',
                    timeout=60,
                )
                assert [(a["metric"]["node"], a["metric"]["severity"]) for a in firing] == [(lagging, "warning")]
        finally:
            stop.set()
            demo.join(timeout=20)
        incident = _incident_opened_for(live, key)
        _lockdown_and_release(live, state, lagging, incident, monkeypatch, capsys)
        with live.client("auditor") as c:
            shown = c.get(f"/v1/incidents/{incident}").json()
        kinds = [(t["type"], t["key_id"]) for t in shown["timeline"]]
        assert ("compromised", key) in kinds  # the cause, and the lockdown that cites the incident
        assert [t["summary"].split(":")[0] for t in shown["timeline"] if t["type"] == "lockdown"] == [
            "lockdown applied", "lockdown released"]  # fmt: skip
    # the journal holding all of it verifies (no anchor from elsewhere in this test)
    assert main(["verify", "--allow-unanchored", "--data-dir", str(live.runtime.config.data_dir)]) == 0


def _incident_opened_for(live: Live, key: str) -> str:
    """The compromise opened exactly one incident, critical, naming the key (its own thread: polled)."""
    found: list[dict] = []

    def opened() -> bool:
        with live.client("viewer") as c:
            shown = [c.get(f"/v1/incidents/{i['id']}").json() for i in c.get("/v1/incidents").json()["items"]]
        found[:] = [i for i in shown if key in i["keys"]]
        return bool(found)

    wait_until(opened, timeout=30, what=f"an incident opened for the compromise of {key}")
    (incident,) = found
    assert incident["severity"] == "critical" and incident["status"] == "open" and incident["source"] == "compromise"
    return incident["id"]


def _active_on(live: Live, node: str) -> list[str]:
    with live.client("viewer") as c:
        page = c.get("/v1/keys", params={"state": "active", "node": node, "limit": 1000}).json()
    assert page["next"] is None
    return [item["key_id"] for item in page["items"]]


def _lockdown_and_release(live, state, lagging, incident, monkeypatch, capsys) -> None:  # type: ignore[no-untyped-def]
    """An operator locks down a node that confirmed; a security admin releases it: the same keys are active."""
    node = next(n["node"] for n in state["nodes"] if n["confirmed_at"] and n["node"] != lagging)
    before = _active_on(live, node)
    assert before, f"no active key on {node} to lock down"
    monkeypatch.setenv("KEYLIFE_TOKEN", live.tokens["operator"])
    argv = ["incident", "lockdown", "--node", node, "--reason", "node breached", "--incident", incident]
    assert main([*argv, "--url", live.url]) == 0
    out = capsys.readouterr().out
    lockdown = out.split("release with: keylife incident release ")[1].split()[0]
    assert _active_on(live, node) == []
    monkeypatch.setenv("KEYLIFE_TOKEN", live.tokens["operator"])  # an operator may not undo it ...
    assert main(["incident", "release", lockdown, "--url", live.url]) == 2
    assert "the security-admin role has it" in capsys.readouterr().err
    monkeypatch.setenv("KEYLIFE_TOKEN", live.tokens["secadmin"])  # ... a security admin may
    assert main(["incident", "release", lockdown, "--reason", "node rebuilt", "--url", live.url]) == 0
    assert f"{len(before)} of {len(before)} keys reactivated" in capsys.readouterr().out
    assert _active_on(live, node) == before


def test_the_demo_enforcer_is_deterministic_and_skips_the_lagging_node() -> None:
    network = DemoNetwork(DemoConfig(**{**CONFIG.__dict__, "start": datetime(2026, 1, 1, tzinfo=UTC)}))
    one, two = network.enforcer(), network.enforcer()
    lagging = network.scenario_keys()["lagging_node"]
    key = network._world.key_id(3, 0)
    holders = one.holders(key)
    assert lagging in holders and len(holders) >= 2
    now = datetime(2026, 1, 2, tzinfo=UTC)
    one._schedule({"version": 5, "key_id": key, "state": "revoked"}, now)
    due = [e for _, _, e in sorted(one._due)]
    assert sorted(e["node"] for e in due) == sorted(h for h in holders if h != lagging)
    assert all(1.0 <= one.delay_for(e["node"], 5) <= 3.0 for e in due)
    assert [one.delay_for(n, 5) for n in holders] == [two.delay_for(n, 5) for n in holders]
