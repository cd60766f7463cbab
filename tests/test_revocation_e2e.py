"""End to end on the demo network (issue 14, items 2-4 and 6): a demo key is compromised through the
API, the simulated nodes fetch the signed feed and confirm, the lagging node does not; ``keylife
incident revoke --wait`` names it and exits 1, and ``KeylifeRevocationUnconfirmed`` fires on a real
Prometheus with the key and the node as labels.

The rules are the shipped ones rendered with the revocation thresholds shortened (6 s instead of
5 min, ``for: 2s``) and scraped every second; nothing else changes.
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
    # the journal holding all of it verifies (no anchor from elsewhere in this test)
    assert main(["verify", "--allow-unanchored", "--data-dir", str(live.runtime.config.data_dir)]) == 0


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
