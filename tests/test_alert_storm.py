"""Issue 13's storm scenario: the demo fleet plus 500 keys expiring within 7 days, through the shipped
rules, prometheus.yml and alertmanager.yml on a real Prometheus and Alertmanager. Over 10 minutes the
pager gets at most 3 notifications, all about the demo's scripted compromise; the expiring keys arrive
as a handful of tickets that list them, not one notification per key.

Time is scaled by ``SCALE`` so 10 minutes run in 100 s: every timer of the shipped files (scrape and
evaluation intervals, each rule's ``for``, every route's group_wait, group_interval and repeat_interval)
is divided by it, and nothing else changes. Notification counts depend only on the ratios of those
timers to the window, so the scaled run counts what the shipped files send in 10 real minutes.
"""

from __future__ import annotations

import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

from alert_rules.render import load_config
from alert_rules.rules import render_rules
from keylife.demo.network import DemoConfig, DemoNetwork
from tests.alertmanager import AlertmanagerServer, Notification, WebhookReceiver
from tests.prometheus import PrometheusServer
from tests.server import live_server
from tests.test_alerting_e2e import ALERTMANAGER_YML, PROMETHEUS_YML, _post, _seconds, _stamp

SCALE = 6
WINDOW = 600 / SCALE  # the 10 minutes, scaled
EXPIRING = 500
PAGE_LIMIT = 3
TIMERS = ("group_wait", "group_interval", "repeat_interval")


def _scaled(duration: str) -> str:
    return f"{round(_seconds(duration) * 1000 / SCALE)}ms"


def _scale_route(route: dict[str, Any]) -> None:
    for timer in TIMERS:
        if timer in route:
            route[timer] = _scaled(route[timer])
    for child in route.get("routes", []):
        _scale_route(child)


def _alertmanager_config(hook: WebhookReceiver) -> dict[str, Any]:
    text = ALERTMANAGER_YML.read_text().replace("http://127.0.0.1:9095", hook.url)
    config = yaml.safe_load(text)
    _scale_route(config["route"])
    return config


def _rules(path: Path) -> Path:
    """The shipped rules (as rendered from config.yaml) with every ``for`` scaled."""
    rules = render_rules(load_config())
    for group in rules["groups"]:
        for rule in group["rules"]:
            if "for" in rule:
                rule["for"] = _scaled(rule["for"])
    path.write_text(yaml.safe_dump(rules, sort_keys=False))
    return path


def _prometheus_config(keylife: str, alertmanager: str, rules: Path) -> dict[str, Any]:
    text = PROMETHEUS_YML.read_text()
    text = text.replace("127.0.0.1:8787", keylife).replace("127.0.0.1:9093", alertmanager)
    config = yaml.safe_load(text)
    # No standalone `keylife forward` runs here: without its job, nothing reports it down.
    config["scrape_configs"] = [job for job in config["scrape_configs"] if job["job_name"] != "keylife-forward"]
    config["rule_files"] = [str(rules)]
    for interval in ("scrape_interval", "evaluation_interval"):
        config["global"][interval] = _scaled(config["global"][interval])
    return config


def _expiring_keys(now: datetime) -> list[dict[str, Any]]:
    """500 active keys expiring between 1 and 7 days from now: ordinary churn in a big fleet."""
    events = []
    for i in range(EXPIRING):
        key = f"storm-{i:03d}"
        expires = now + timedelta(days=1 + 6 * i / EXPIRING)
        born = _stamp(now - timedelta(days=360))
        events += [
            {"id": f"{key}-g", "type": "generated", "key_id": key, "occurred_at": born, "algorithm": "aes-256-gcm",
             "key_size": 256, "purpose": "encryption", "expires_at": _stamp(expires)},
            {"id": f"{key}-a", "type": "activated", "key_id": key, "occurred_at": born},
        ]  # fmt: skip
    return events


def _by_receiver(notifications: list[Notification]) -> Counter[str]:
    return Counter(n.body.get("receiver", n.path) for n in notifications)


def test_500_expiring_keys_page_nobody_and_tickets_list_them(tmp_path: Path) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    network = DemoNetwork(DemoConfig(history=timedelta(days=1), interval=timedelta(minutes=30)))
    compromised = network.scenario_keys()["compromised"]
    with WebhookReceiver() as hook, live_server(tmp_path) as live:
        _post(live, network.history() + _expiring_keys(now))
        am_yml = tmp_path / "alertmanager.yml"
        am_yml.write_text(yaml.safe_dump(_alertmanager_config(hook), sort_keys=False))
        with AlertmanagerServer(tmp_path / "am", config_path=am_yml) as am:
            config = _prometheus_config(
                live.url.removeprefix("http://"), am.url.removeprefix("http://"), _rules(tmp_path / "rules.yml")
            )
            with PrometheusServer(tmp_path / "prom", config=config):
                started = time.monotonic()
                time.sleep(WINDOW)
                received = hook.received()
        elapsed = time.monotonic() - started
    counts = _by_receiver(received)
    print(f"{elapsed:.0f} s (= {elapsed * SCALE / 60:.1f} shipped minutes): {dict(counts)}")  # pytest -s
    pages = [n for n in received if n.path == "/pager"]
    print("pages:", [(a["labels"]["alertname"], a["labels"].get("key_id")) for n in pages for a in n.alerts])
    print("tickets:", Counter(n.body["groupLabels"].get("alertname") for n in received if n.path == "/tickets"))
    assert len(pages) <= PAGE_LIMIT, [n.body.get("groupLabels") for n in pages]
    for page in pages:  # only the scripted compromise pages
        for alert in page.alerts:
            assert alert["labels"].get("key_id") == compromised, alert["labels"]
    tickets = [n for n in received if n.path == "/tickets"]
    expiring = [n for n in tickets if n.body["groupLabels"].get("alertname") == "KeylifeKeyExpiring"]
    assert expiring, f"no KeylifeKeyExpiring ticket: {dict(counts)}"
    keys = {a["labels"]["key_id"] for a in expiring[-1].alerts if a["status"] == "firing"}
    assert len(keys) >= 100, f"the expiring-keys ticket lists only {len(keys)} keys"  # one notification, many keys
    assert len(expiring) <= 3, f"{len(expiring)} KeylifeKeyExpiring tickets in 10 minutes"
    assert len(tickets) <= 20, f"{len(tickets)} tickets in 10 minutes: {dict(counts)}"
    assert any(n.path == "/heartbeat" for n in received), "the Watchdog heartbeat never arrived"
