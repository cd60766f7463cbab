"""A real Prometheus scrapes a live keylife fed by the demo network plus a scripted scenario."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson

from keylife.demo.network import DemoConfig, DemoNetwork
from tests.prometheus import PrometheusServer, ScrapeJob, sample_value
from tests.server import Live, live_server

NDJSON = {"Content-Type": "application/x-ndjson"}


def post_all(live: Live, events: list[dict]) -> None:
    with live.client() as c:
        for start in range(0, len(events), 2000):
            body = b"\n".join(orjson.dumps(e) for e in events[start : start + 2000])
            r = c.post("/v1/events", content=body, headers=NDJSON)
            assert r.status_code == 200, r.text[:500]


def one(prom: PrometheusServer, expr: str) -> float:
    result = prom.wait_for(expr, timeout=30)
    assert len(result) == 1, result
    return sample_value(result[0])


def test_prometheus_sees_aggregates_attention_and_node_lag(tmp_path: Path) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    stamp = lambda delta: (now - delta).isoformat().replace("+00:00", "Z")  # noqa: E731
    network = DemoNetwork(DemoConfig(nodes=5, keys=30, seed=3, history=timedelta(days=1),
                                     interval=timedelta(minutes=30)))  # fmt: skip
    scenario = network.scenario_keys()
    scripted = [
        {"id": "s1", "type": "generated", "key_id": "e2e-k", "occurred_at": stamp(timedelta(hours=3)),
         "algorithm": "ed25519", "purpose": "signing"},
        {"id": "s2", "type": "activated", "key_id": "e2e-k", "occurred_at": stamp(timedelta(hours=3))},
        {"id": "s3", "type": "propagated", "key_id": "e2e-k", "node": "e2e-lag", "state": "active",
         "occurred_at": stamp(timedelta(hours=2))},
        {"id": "s4", "type": "compromised", "key_id": "e2e-k", "occurred_at": stamp(timedelta(hours=1))},
        {"id": "s5", "type": "propagated", "key_id": "e2e-k", "node": "e2e-fast", "state": "compromised",
         "occurred_at": stamp(timedelta(minutes=50))},
        {"id": "s6", "type": "usage_report", "key_id": "e2e-k", "node": "e2e-lag", "usage": {"sign": 4},
         "occurred_at": stamp(timedelta(minutes=10))},
    ]  # fmt: skip
    with live_server(tmp_path) as live:
        post_all(live, network.history() + scripted)
        live.runtime.ledger.sync_registry().result(10)
        counts = live.runtime.registry.counts()
        target = live.url.removeprefix("http://")
        with PrometheusServer(tmp_path / "prom", [ScrapeJob("keylife", [target])]) as prom:
            assert one(prom, 'up{job="keylife"}') == 1
            assert one(prom, "sum(keylife_keys)") == counts["keys_total"]
            assert one(prom, 'sum(keylife_keys{state="compromised"})') == counts["keys_by_state"]["compromised"]
            assert one(prom, 'keylife_key_attention{key_id="e2e-k", reason="compromised"}') == 1
            assert one(prom, 'keylife_key_attention{key_id="e2e-k", reason="conflicting_use"}') == 1
            demo_bad = scenario["compromised"]
            assert one(prom, f'keylife_key_attention{{key_id="{demo_bad}", reason="compromised"}}') == 1
            assert one(prom, 'keylife_node_unconfirmed_keys{node="e2e-lag"}') == 1
            assert one(prom, 'keylife_node_unconfirmed_keys{node="e2e-fast"}') == 0
            lag_le_15m = 'keylife_propagation_lag_seconds_bucket{le="900"}'
            lag_le_5m = 'keylife_propagation_lag_seconds_bucket{le="300"}'
            assert one(prom, f"sum({lag_le_15m}) - sum({lag_le_5m})") >= 1  # e2e-fast confirmed after 10 min
            seen = (now - timedelta(minutes=10)).timestamp()
            assert one(prom, 'keylife_node_last_report_timestamp_seconds{node="e2e-lag"}') == seen
            assert one(prom, "keylife_registry_lag_entries") == 0
            assert one(prom, "keylife_journal_entries") == live.runtime.journal.size
