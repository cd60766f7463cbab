"""Alertmanager's webhook into incidents: the real Alertmanager delivers to a live keylife with a
bearer token (webhook_config http_config authorization); a firing alert opens an incident, a
resolved one adds to its timeline, redeliveries change nothing; bad payloads get precise 4xx."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.alertmanager import AlertmanagerServer, make_alert, rfc3339
from tests.server import Live, live_server
from tests.waiting import wait_until


@pytest.fixture
def live(tmp_path: Path) -> Any:
    with live_server(tmp_path) as server:
        yield server


def _am_config(live: Live) -> dict[str, Any]:
    return {
        "route": {"receiver": "keylife", "group_by": ["alertname", "key_id"], "group_wait": "0s",
                  "group_interval": "1s", "repeat_interval": "1h"},
        "receivers": [{"name": "keylife", "webhook_configs": [{
            "url": live.url + "/v1/alertmanager/webhook", "send_resolved": True,
            "http_config": {"authorization": {"type": "Bearer", "credentials": live.tokens["alerts"]}},
        }]}],
    }  # fmt: skip


LABELS = {"alertname": "KeylifeKeyCompromised", "severity": "critical", "key_id": "k-am", "node": "node-7"}


def test_real_alertmanager_opens_then_resolves(live: Live, tmp_path: Path) -> None:
    viewer = live.client("viewer")
    with AlertmanagerServer(tmp_path / "am", _am_config(live)) as am:
        firing = make_alert(LABELS, started_ago=timedelta(minutes=5), annotations={"summary": "key k-am compromised"})
        noise = make_alert({"alertname": "KeylifeJournalCheckpointStale", "severity": "warning"},
                           started_ago=timedelta(minutes=5))  # fmt: skip
        am.post_alerts([firing, noise])
        wait_until(lambda: viewer.get("/v1/incidents").json()["items"], timeout=30, what="an incident from the alert")
        am.post_alerts([firing])  # Prometheus re-sends a firing alert every evaluation
        resolved = dict(firing, endsAt=rfc3339(datetime.now(UTC) - timedelta(seconds=1)))
        am.post_alerts([resolved])

        def timeline() -> list[dict[str, Any]]:
            (item,) = viewer.get("/v1/incidents").json()["items"]
            return viewer.get(f"/v1/incidents/{item['id']}").json()["timeline"]

        wait_until(lambda: len(timeline()) >= 2, timeout=30, what="the resolved alert in the timeline")
    (item,) = viewer.get("/v1/incidents").json()["items"]
    assert item["source"] == "alert" and item["severity"] == "critical" and item["opened_by"] == "alerts"
    assert item["title"] == "KeylifeKeyCompromised: key k-am compromised"
    shown = viewer.get(f"/v1/incidents/{item['id']}").json()
    assert shown["keys"] == ["k-am"] and shown["nodes"] == ["node-7"]
    assert [t["summary"] for t in shown["timeline"]] == [
        "opened (critical, alert): KeylifeKeyCompromised: key k-am compromised: KeylifeKeyCompromised firing",
        "alert KeylifeKeyCompromised resolved: KeylifeKeyCompromised resolved",
    ]


def _payload(**changes: Any) -> dict[str, Any]:
    alert = {"status": "firing", "labels": LABELS, "annotations": {}, "startsAt": "2026-12-01T10:00:00Z",
             "endsAt": "0001-01-01T00:00:00Z", "generatorURL": "http://prom/graph",
             "fingerprint": "a1b2c3d4e5f60718"}  # fmt: skip
    body = {"version": "4", "groupKey": '{}:{alertname="KeylifeKeyCompromised"}', "truncatedAlerts": 0,
            "status": "firing", "receiver": "keylife", "groupLabels": {}, "commonLabels": LABELS,
            "commonAnnotations": {}, "externalURL": "http://am:9093", "alerts": [alert]}  # fmt: skip
    return body | changes


def test_redelivery_is_idempotent_and_bad_payloads_are_named(live: Live) -> None:
    hook = live.client("alerts")
    first = hook.post("/v1/alertmanager/webhook", json=_payload())
    assert first.status_code == 200, first.text
    assert first.json()["results"][0]["action"] == "opened"
    again = hook.post("/v1/alertmanager/webhook", json=_payload())
    assert again.json()["results"][0]["action"] == "duplicate"
    assert len(live.client("viewer").get("/v1/incidents").json()["items"]) == 1
    old = hook.post("/v1/alertmanager/webhook", json=_payload(version="3"))
    assert old.status_code == 422 and old.json()["type"].endswith("/unsupported-webhook-version")
    assert 'version "4"' in old.json()["detail"]
    broken = _payload()
    del broken["alerts"][0]["fingerprint"]
    missing = hook.post("/v1/alertmanager/webhook", json=broken)
    assert missing.status_code == 422 and "alerts.0.fingerprint" in missing.json()["detail"]
    wrong = hook.post("/v1/alertmanager/webhook", content=b"x", headers={"Content-Type": "text/plain"})
    assert wrong.status_code == 415
    notjson = hook.post("/v1/alertmanager/webhook", content=b"[1", headers={"Content-Type": "application/json"})
    assert notjson.status_code == 400
    assert live.client(None).post("/v1/alertmanager/webhook", json=_payload()).status_code == 401
