"""A quiet, healthy keylife on a real Prometheus: the dashboards' count and ratio panels read 0, never
"No data", where 0 is the answer (no ingest errors, no auth failures, no compromised or expired keys).

"No data" and 0 look alike at a glance but mean different things (broken scrape versus healthy), so
the counters behind these panels export their label values at 0 from the start
(keylife/ingest/telemetry.py) and the exporter exports every state and band.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson

from dashboards.queries import Query, all_queries, substitute
from tests.prometheus import PrometheusServer, ScrapeJob, sample_value
from tests.server import live_server

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "alert_rules" / "keylife.rules.yml"
NDJSON = {"Content-Type": "application/x-ndjson"}
VARIABLES = {"job": "keylife", "key_id": "quiet-1", "node": ".*", "sink": ".*", "__rate_interval": "10s"}
# (dashboard uid, panel title): panels whose every query must answer, with 0, on a quiet keylife.
ZERO_PANELS = {
    ("keylife-pipeline", "Ingest error ratio"),
    ("keylife-pipeline", "Auth failures"),
    ("keylife-fleet", "Compromised keys"),
    ("keylife-fleet", "Expired, still usable"),
    ("keylife-fleet", "Expiring within 7 d"),
}


def _events(now: datetime) -> list[dict[str, object]]:
    stamp = (now - timedelta(hours=1)).isoformat().replace("+00:00", "Z")
    expires = (now + timedelta(days=365)).isoformat().replace("+00:00", "Z")
    out: list[dict[str, object]] = []
    for i in range(3):
        out += [
            {"id": f"g{i}", "type": "generated", "key_id": f"quiet-{i}", "occurred_at": stamp,
             "algorithm": "ed25519", "purpose": "signing", "expires_at": expires},
            {"id": f"a{i}", "type": "activated", "key_id": f"quiet-{i}", "occurred_at": stamp},
        ]  # fmt: skip
    return out


def _wanted() -> list[Query]:
    queries = [q for q in all_queries() if q.kind == "target" and (q.dashboard_uid, q.panel_title) in ZERO_PANELS]
    assert {(q.dashboard_uid, q.panel_title) for q in queries} == ZERO_PANELS, "a panel was renamed"
    return queries


def test_quiet_keylife_reads_zero_not_no_data(tmp_path: Path) -> None:
    wanted = _wanted()
    with live_server(tmp_path) as live:
        with live.client() as client:
            body = b"\n".join(orjson.dumps(e) for e in _events(datetime.now(UTC)))
            assert client.post("/v1/events", content=body, headers=NDJSON).status_code == 200
        live.runtime.ledger.sync_registry().result(10)
        job = ScrapeJob("keylife", [live.url.removeprefix("http://")])
        with PrometheusServer(tmp_path / "prom", [job], rule_files=[RULES]) as prom:
            prom.wait_for('up{job="keylife"} == 1', timeout=30)
            deadline = time.monotonic() + 60  # rates and recording rules need a few scrapes
            pending = wanted
            while pending and time.monotonic() < deadline:
                pending = [q for q in pending if not prom.query(substitute(q.expr, VARIABLES))]
                time.sleep(1)
            assert not pending, "No data where the answer is 0:\n" + "\n".join(
                f"{q.dashboard_uid} / {q.panel_title}: {q.expr}" for q in pending
            )
            for q in wanted:
                values = {sample_value(s) for s in prom.query(substitute(q.expr, VARIABLES))}
                assert values == {0.0}, (q.panel_title, q.expr, values)
