"""The shipped Alertmanager configuration, judged by the real amtool and Alertmanager 0.25.

Static checks (amtool check-config, the routing cases of routes_test.yaml and every alert of
CONTRACT.md through ``amtool config routes test``) take milliseconds each. Two tests start a
real Alertmanager with the shipped file — only the webhook port rewritten to a local receiver —
and prove what a config check cannot: that inhibition mutes what it should (and only that),
that a page reaches the pager after group_wait, that info goes nowhere, and that the
maintenance window mutes the node-not-reporting ticket.
"""

from __future__ import annotations

import json
import re
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.alertmanager import AlertmanagerServer, Notification, WebhookReceiver, amtool, make_alert

ROOT = Path(__file__).resolve().parent.parent
AM_DIR = ROOT / "alert_rules" / "alertmanager"
SHIPPED = AM_DIR / "alertmanager.yml"
EXAMPLE = AM_DIR / "receivers.example.yml"
ROUTES_TEST = AM_DIR / "routes_test.yaml"
CONTRACT = ROOT / "alert_rules" / "CONTRACT.md"
CONFIGS = [pytest.param(SHIPPED, id="alertmanager.yml"), pytest.param(EXAMPLE, id="receivers.example.yml")]
GROUP_LABELS = ["alertname", "job"]  # CONTRACT.md: one notification per alert name and job (issue 13)
EQUAL_LABELS = ["alertname", "job", "key_id", "node", "sink"]  # the escalation inhibit: the same object
KEYLIFE = ['alertname=~"Keylife.+"']  # keylife's sub-route: nobody else's alerts
SHIPPED_WEBHOOK = "http://127.0.0.1:9095/"
BY_SEVERITY = {"critical": ["pager"], "warning": ["tickets"], "info": ["null"], "none": ["heartbeat"]}


def load(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text())


def routes_cases() -> list[dict[str, Any]]:
    return load(ROUTES_TEST)


# -- amtool check-config ---------------------------------------------------------------------


@pytest.mark.parametrize("path", CONFIGS)
def test_amtool_check_config_accepts(path: Path) -> None:
    proc = amtool("check-config", str(path))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout


@pytest.mark.parametrize(
    ("old", "new", "complaint"),
    [
        ("receiver: tickets", "receiver: ticket-queue", 'undefined receiver "ticket-queue"'),
        ("[maintenance-window]", "[maintenance-windw]", 'undefined time interval "maintenance-windw"'),
        ("send_resolved: true", "send_resolve: true", "field send_resolve not found"),
        ("equal: [job]", 'equal: [job, "bad-label"]', "not a valid label name"),
    ],
)
def test_amtool_check_config_rejects_a_broken_copy(tmp_path: Path, old: str, new: str, complaint: str) -> None:
    """The check above can fail: the same amtool refuses a copy with one realistic mistake."""
    lines = SHIPPED.read_text().splitlines(keepends=True)
    at = [i for i, line in enumerate(lines) if old in line and not line.lstrip().startswith("#")]
    assert at, f"{old!r} is no longer in {SHIPPED.name}; update this test's breakage"
    lines[at[0]] = lines[at[0]].replace(old, new)  # the first use outside comments
    broken = tmp_path / "alertmanager.yml"
    broken.write_text("".join(lines))
    proc = amtool("check-config", str(broken))
    assert proc.returncode != 0, proc.stdout
    assert complaint in proc.stdout + proc.stderr


# -- the file's shape (what the contract and the e2e test rely on) ----------------------------


def test_shipped_routing_tree_and_receivers() -> None:
    config = load(SHIPPED)
    route = config["route"]
    assert route["receiver"] == "null"
    assert route["group_by"] == GROUP_LABELS
    [keylife] = route["routes"]
    assert keylife["matchers"] == KEYLIFE and keylife["group_by"] == GROUP_LABELS and keylife["receiver"] == "null"
    children = {tuple(child["matchers"]): child for child in keylife["routes"]}
    assert list(children) == [
        ('alertname="KeylifeWatchdog"',),
        ('severity="critical"',),
        ('severity="warning"',),
        ('severity="info"',),
    ]
    heartbeat, pager, tickets, info = children.values()
    assert (heartbeat["receiver"], heartbeat["repeat_interval"]) == ("heartbeat", "5m")
    assert (pager["receiver"], pager["group_wait"], pager["group_interval"], pager["repeat_interval"]) == (
        "pager", "10s", "1m", "1h")  # fmt: skip
    assert pager.get("continue", False) is False
    assert (tickets["receiver"], tickets["group_wait"], tickets["group_interval"], tickets["repeat_interval"]) == (
        "tickets", "1m", "5m", "12h")  # fmt: skip
    assert info["receiver"] == "null"
    [muted] = tickets["routes"]
    assert muted["matchers"] == ['alertname="KeylifeNodeNotReporting"']
    assert muted["mute_time_intervals"] == ["maintenance-window"]
    assert "receiver" not in muted  # inherits tickets

    receivers = {receiver["name"]: receiver for receiver in config["receivers"]}
    assert receivers["null"] == {"name": "null"}  # no *_configs: sends nothing
    assert receivers["pager"]["webhook_configs"] == [{"url": SHIPPED_WEBHOOK + "pager", "send_resolved": True}]
    assert receivers["tickets"]["webhook_configs"] == [{"url": SHIPPED_WEBHOOK + "tickets", "send_resolved": True}]
    assert receivers["heartbeat"]["webhook_configs"] == [{"url": SHIPPED_WEBHOOK + "heartbeat", "send_resolved": False}]

    [window] = config["time_intervals"]
    assert window["name"] == "maintenance-window"
    assert window["time_intervals"] == [
        {"weekdays": ["sunday"], "times": [{"start_time": "02:00", "end_time": "04:00"}], "location": "UTC"}
    ]


def test_inhibit_rules_are_scoped() -> None:
    """An inhibit rule without `equal` mutes every matching alert everywhere; each rule must say
    "the same thing". The KeylifeDown rule's target excludes KeylifeDown, so no alert matches both
    sides (Alertmanager's special case for that is then never needed)."""
    rules = load(SHIPPED)["inhibit_rules"]
    for rule in rules:
        assert rule.get("equal"), rule
        assert not {"source_match", "target_match", "source_match_re", "target_match_re"} & set(rule), rule
    escalation, down = rules
    assert escalation == {
        "source_matchers": [*KEYLIFE, 'severity="critical"'],
        "target_matchers": [*KEYLIFE, 'severity="warning"'],
        "equal": EQUAL_LABELS,
    }
    assert down["source_matchers"] == ['alertname="KeylifeDown"']
    assert 'alertname!="KeylifeDown"' in down["target_matchers"]
    assert down["equal"] == ["job"]


def test_example_shares_the_routing_and_keeps_secrets_in_files() -> None:
    shipped, example = load(SHIPPED), load(EXAMPLE)
    for section in ("route", "inhibit_rules", "time_intervals"):
        assert example[section] == shipped[section], f"{section} differs between the two files"
    receivers = {receiver["name"]: receiver for receiver in example["receivers"]}
    assert receivers["null"] == {"name": "null"}
    assert set(receivers["pager"]) == {"name", "pagerduty_configs", "slack_configs"}
    assert set(receivers["pager-opsgenie"]) == {"name", "opsgenie_configs"}
    assert set(receivers["tickets"]) == {"name", "email_configs", "slack_configs"}
    # Inline secrets are forbidden; every credential comes from a file under /etc/keylife/.
    inline = {"routing_key", "service_key", "api_key", "auth_password", "auth_secret", "smtp_auth_password",
              "smtp_auth_secret", "slack_api_url", "opsgenie_api_key", "password", "credentials"}  # fmt: skip
    files: list[str] = []

    def walk(node: Any, inside: str = "") -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                assert key not in inline, f"inline secret {key!r} in {inside or 'top level'}"
                assert not (inside == "slack_configs" and key == "api_url"), "slack api_url is a secret"
                if key.endswith("_file"):
                    files.append(value)
                walk(value, key if key.endswith("_configs") else inside)
        elif isinstance(node, list):
            for item in node:
                walk(item, inside)

    walk(example)
    assert files, "no *_file fields found"
    assert all(path.startswith("/etc/keylife/") for path in files), files


def template_strings(node: Any) -> list[str]:
    """Every string in ``node`` that holds a Go template (``{{``)."""
    if isinstance(node, dict):
        return [text for value in node.values() for text in template_strings(value)]
    if isinstance(node, list):
        return [text for item in node for text in template_strings(item)]
    return [node] if isinstance(node, str) and "{{" in node else []


def test_example_templates_render(tmp_path: Path) -> None:
    """check-config does not parse the receivers' templates (they are parsed at send time, where a
    typo fails every notification), so render each one with amtool on a realistic page."""
    labels = {"alertname": "KeylifeKeyExpiring", "severity": "critical", "job": "keylife", "key_id": "k-1"}
    annotations = {
        "summary": "Key expires soon",
        "description": "Key k-1 expires in 3 days",
        "runbook_url": "https://runbooks.example/KeylifeKeyExpiring.md",
        "dashboard_url": "https://grafana.example/d/keylife-key",
    }
    alert = {
        "status": "firing",
        "labels": labels,
        "annotations": annotations,
        "startsAt": "2024-01-01T00:00:00Z",
        "endsAt": "0001-01-01T00:00:00Z",
        "generatorURL": "http://prometheus.example",
        "fingerprint": "1",
    }
    data = {
        "receiver": "pager",
        "status": "firing",
        "alerts": [alert],
        "groupLabels": labels,
        "commonLabels": labels,
        "commonAnnotations": annotations,
        "externalURL": "http://am.example",
    }
    data_file = tmp_path / "data.json"
    data_file.write_text(json.dumps(data))
    templates = template_strings(load(EXAMPLE)["receivers"])
    assert len(templates) >= 8, templates
    for text in templates:
        proc = amtool("template", "render", "--template.glob=/dev/null", f"--template.data={data_file}",
                      f"--template.text={text}")  # fmt: skip
        assert proc.returncode == 0, f"{text!r}: {proc.stderr}"
        assert proc.stdout.strip() and "<no value>" not in proc.stdout, (text, proc.stdout)


# -- routing through amtool ------------------------------------------------------------------


def amtool_route(config: Path, labels: dict[str, str], expect: list[str]) -> tuple[list[str], list[str], str]:
    """``amtool config routes test --tree --verify.receivers``: the receivers amtool printed, the
    matcher path of the matched route below the root, and the whole output for messages."""
    args = [f'{name}="{value}"' for name, value in labels.items()]
    proc = amtool("config", "routes", "test", f"--config.file={config}", "--tree",
                  f"--verify.receivers={','.join(expect)}", *args)  # fmt: skip
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"amtool: exit {proc.returncode}\n{output}"
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    receivers = lines[-1].split(",")
    # Tree lines look like "    └── {severity="warning"}  receiver: tickets"; the root is "default-route".
    path = [
        re.sub(r"^[\s│├└─]+", "", line).split("  receiver:")[0]
        for line in lines
        if "──" in line and "default-route" not in line
    ]
    return receivers, path, output


@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize("case", routes_cases(), ids=lambda case: case["name"])
def test_routes_case(config: Path, case: dict[str, Any]) -> None:
    receivers, path, output = amtool_route(config, case["labels"], case["expect"])
    assert receivers == case["expect"], output
    if "route" in case:
        assert path == case["route"], output


def test_routes_cases_cover_the_brief() -> None:
    """Guards the case file itself: every routed receiver, every severity, the unlabelled alert,
    the muted child route and per-key/per-sink pages stay covered."""
    cases = routes_cases()
    for case in cases:
        assert set(case) <= {"name", "labels", "expect", "route"} and case["expect"], case
    expected = {receiver for case in cases for receiver in case["expect"]}
    assert expected == {"pager", "tickets", "null", "heartbeat"}
    severities = {case["labels"].get("severity") for case in cases}
    assert {"critical", "warning", "info", None} <= severities
    assert any(case["labels"] == {} for case in cases)
    assert any(len(case.get("route", [])) == 2 for case in cases)
    assert any("key_id" in case["labels"] and case["expect"] == ["pager"] for case in cases)
    assert any("sink" in case["labels"] and case["expect"] == ["pager"] for case in cases)


def contract_alerts() -> dict[str, list[str]]:
    """alertname -> severities for every alert line of CONTRACT.md, e.g.
    "- KeylifeX: warning (within 30 d), critical (within 7 d) — meaning" -> ["warning", "critical"]."""
    section = CONTRACT.read_text().split("## Alerts", 1)[1].split("\n## ", 1)[0]
    alerts: dict[str, list[str]] = {}
    for name, rest in re.findall(r"^- (Keylife\w+): (.*)$", section, re.MULTILINE):
        head = re.sub(r"\([^)]*\)", "", rest).split(" — ")[0]
        alerts[name] = re.findall(r"(?:^|, )(critical|warning|info|none)\b", head)
    return alerts


def test_every_contract_alert_routes_by_its_severity() -> None:
    alerts = contract_alerts()
    assert len(alerts) >= 20 and all(alerts.values()), alerts  # the parser still understands CONTRACT.md
    for name, severities in alerts.items():
        for severity in severities:
            labels = {"alertname": name, "severity": severity, "job": "keylife"}
            receivers, _, output = amtool_route(SHIPPED, labels, BY_SEVERITY[severity])
            assert receivers == BY_SEVERITY[severity], f"{name} {severity}: {output}"


# -- the real Alertmanager -------------------------------------------------------------------


def local_config(path: Path, hook: WebhookReceiver) -> dict[str, Any]:
    """The file at ``path`` with its webhook host:port (only that) pointed at ``hook``."""
    config = load(path)
    rewritten = 0
    for receiver in config["receivers"]:
        for webhook in receiver.get("webhook_configs", []):
            assert webhook["url"].startswith(SHIPPED_WEBHOOK), webhook
            webhook["url"] = hook.url + "/" + webhook["url"].removeprefix(SHIPPED_WEBHOOK)
            rewritten += 1
    assert rewritten == 3
    return config


def find(alerts: list[dict[str, Any]], labels: dict[str, str]) -> dict[str, Any]:
    [alert] = [alert for alert in alerts if alert["labels"] == labels]
    return alert


def sent(notifications: list[Notification], path: str) -> list[dict[str, str]]:
    """The label sets of the firing alerts POSTed to ``path``."""
    return [a["labels"] for n in notifications if n.path == path for a in n.alerts if a["status"] == "firing"]


def test_real_alertmanager_inhibits_pages_and_drops_info(tmp_path: Path) -> None:
    key = {"alertname": "KeylifeKeyExpiring", "job": "keylife", "key_id": "k-1"}
    critical, warning = key | {"severity": "critical"}, key | {"severity": "warning"}
    other_key = key | {"severity": "warning", "key_id": "k-2"}  # not inhibited: another key
    down = {"alertname": "KeylifeDown", "severity": "critical", "job": "keylife-dr"}
    writer = {"alertname": "KeylifeJournalWriterDown", "severity": "critical", "job": "keylife-dr"}
    sink = {"alertname": "KeylifeForwarderSinkDown", "severity": "warning", "job": "keylife-dr", "sink": "siem"}
    info = {"alertname": "KeylifeAttentionCapReached", "severity": "info", "job": "keylife"}
    unrouted = {"alertname": "KeylifeKeyCompromised", "job": "keylife", "key_id": "k-3"}  # no severity
    old = timedelta(minutes=5)  # startsAt older than group_wait: Alertmanager flushes such a group at once

    with WebhookReceiver() as hook, AlertmanagerServer(tmp_path / "am", local_config(SHIPPED, hook)) as am:
        posted = time.monotonic()
        am.post_alerts([make_alert(labels) for labels in (critical, warning, down, writer, sink)])
        alerts = am.wait_for_alerts(lambda alerts: sum(bool(a["status"]["inhibitedBy"]) for a in alerts) >= 3)
        fingerprint = {name: find(alerts, labels)["fingerprint"] for name, labels in
                       (("critical", critical), ("down", down))}  # fmt: skip
        for labels, inhibitor in ((warning, "critical"), (writer, "down"), (sink, "down")):
            status = find(alerts, labels)["status"]
            assert status["state"] == "suppressed" and status["inhibitedBy"] == [fingerprint[inhibitor]], labels
        for labels in (critical, down):
            assert find(alerts, labels)["status"] == {"state": "active", "inhibitedBy": [], "silencedBy": []}
        assert find(alerts, warning)["receivers"] == [{"name": "tickets"}]
        not_inhibited = [a["labels"] for a in am.alerts(inhibited=False)]
        assert critical in not_inhibited and down in not_inhibited
        assert warning not in not_inhibited and writer not in not_inhibited

        # Now the inhibitor surely knows the critical: re-post the warning as old, so its group
        # flushes now (and is muted), next to a warning for another key that must get through.
        am.post_alerts([make_alert(labels, started_ago=old) for labels in (warning, other_key, info, unrouted)])
        alerts = am.wait_for_alerts(lambda alerts: len(alerts) == 8)
        assert find(alerts, info)["receivers"] == [{"name": "null"}]
        assert find(alerts, unrouted)["receivers"] == [{"name": "null"}]

        hook.wait_for(lambda ns: critical in sent(ns, "/pager") and down in sent(ns, "/pager"), timeout=30)
        waited = time.monotonic() - posted
        assert waited >= 9.5, f"pages arrived after {waited:.1f}s: group_wait (10s) was not applied"
        hook.wait_for(lambda ns: other_key in sent(ns, "/tickets"), timeout=30)
        time.sleep(1)  # the muted groups flush with other_key's: a second for one to show up if it wrongly did
        notifications = hook.received()

    pages = sent(notifications, "/pager")
    assert len(pages) == 2 and critical in pages and down in pages, notifications
    assert sent(notifications, "/tickets") == [other_key], notifications
    assert {n.path for n in notifications} == {"/pager", "/tickets"}
    assert all(n.body["receiver"] == n.path.strip("/") for n in notifications)


def test_real_alertmanager_mutes_node_not_reporting_in_the_maintenance_window(tmp_path: Path) -> None:
    """The shipped mute with its window widened to the whole day, so "now" is inside it."""
    node_warning = {"alertname": "KeylifeNodeNotReporting", "severity": "warning", "job": "keylife", "node": "n-1"}
    node_critical = node_warning | {"severity": "critical", "node": "n-2"}
    other_warning = {"alertname": "KeylifeForwarderQuarantining", "severity": "warning", "job": "keylife", "sink": "s"}
    with WebhookReceiver() as hook:
        config = local_config(SHIPPED, hook)
        [window] = config["time_intervals"]
        window["time_intervals"] = [{"times": [{"start_time": "00:00", "end_time": "24:00"}]}]
        with AlertmanagerServer(tmp_path / "am", config) as am:
            old = timedelta(minutes=5)
            am.post_alerts([make_alert(labels, started_ago=old) for labels in (node_warning, node_critical,
                                                                                other_warning)])  # fmt: skip
            hook.wait_for(lambda ns: sent(ns, "/tickets") and sent(ns, "/pager"), timeout=10)
            time.sleep(1)
            notifications = hook.received()
            # 0.25 shows no time-based mute in the API (the alert stays "active"): only the webhook tells.
            assert find(am.alerts(), node_warning)["receivers"] == [{"name": "tickets"}]
    assert sent(notifications, "/tickets") == [other_warning], notifications
    assert sent(notifications, "/pager") == [node_critical], notifications


# -- keylife's part, merged into someone else's Alertmanager (issue 13) ------------------------

FRAGMENT = AM_DIR / "keylife-route.yml"
OPERATOR = AM_DIR / "alertmanagerconfig.yaml"
FOREIGN = {  # an existing Alertmanager that pages on every critical and files everything else
    "route": {
        "receiver": "team-default",
        "group_by": ["alertname", "cluster"],
        "routes": [{"matchers": ['severity="critical"'], "receiver": "team-oncall"}],
    },
    "receivers": [
        {"name": "team-default", "webhook_configs": [{"url": "http://127.0.0.1:9096/default"}]},
        {"name": "team-oncall", "webhook_configs": [{"url": "http://127.0.0.1:9096/oncall"}]},
    ],
}


def test_the_fragment_is_the_shipped_keylife_part() -> None:
    shipped, fragment = load(SHIPPED), load(FRAGMENT)
    assert fragment["route"] == shipped["route"]["routes"][0]
    for section in ("receivers", "inhibit_rules", "time_intervals"):
        assert fragment[section] == shipped[section], section


def merged(tmp_path: Path) -> Path:
    """FOREIGN with keylife's fragment merged the documented way: its route first, the rest appended."""
    config, fragment = json.loads(json.dumps(FOREIGN)), load(FRAGMENT)
    config["route"]["routes"].insert(0, fragment["route"])
    for section in ("receivers", "inhibit_rules", "time_intervals"):
        config[section] = config.get(section, []) + fragment[section]
    path = tmp_path / "merged.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    proc = amtool("check-config", str(path))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return path


@pytest.mark.parametrize(
    ("labels", "expect"),
    [
        ({"alertname": "NodeFilesystemFull", "severity": "critical", "job": "node"}, ["team-oncall"]),
        ({"alertname": "NodeFilesystemFull", "severity": "warning", "job": "node"}, ["team-default"]),
        ({"alertname": "KeylifeKeyUsedAfterRevocation", "severity": "critical", "key_id": "k1"}, ["pager"]),
        ({"alertname": "KeylifeKeyExpiring", "severity": "warning", "key_id": "k1"}, ["tickets"]),
        ({"alertname": "KeylifeAttentionCapReached", "severity": "info"}, ["null"]),
        ({"alertname": "KeylifeWatchdog", "severity": "none"}, ["heartbeat"]),
        ({"alertname": "KeylifeKeyCompromised", "job": "keylife"}, ["null"]),  # no severity: keylife's, sent nowhere
    ],
)
def test_amtool_routes_the_fragment_merged_into_a_foreign_root(
    tmp_path: Path, labels: dict[str, str], expect: list[str]
) -> None:
    receivers, _, output = amtool_route(merged(tmp_path), labels | {"job": labels.get("job", "keylife")}, expect)
    assert receivers == expect, output


def test_the_merged_inhibit_rules_leave_foreign_alerts_alone(tmp_path: Path) -> None:
    """keylife's escalation rule is scoped: a foreign critical does not mute a foreign warning."""
    for rule in load(merged(tmp_path))["inhibit_rules"]:
        assert any("Keylife" in m for m in rule["target_matchers"]), rule


def _from_operator(route: dict[str, Any]) -> dict[str, Any]:
    """An AlertmanagerConfig route (camelCase, structured matchers) in Alertmanager's own shape."""
    names = {"groupBy": "group_by", "groupWait": "group_wait", "groupInterval": "group_interval",
             "repeatInterval": "repeat_interval", "muteTimeIntervals": "mute_time_intervals"}  # fmt: skip
    out: dict[str, Any] = {}
    for key, value in route.items():
        if key == "matchers":
            out["matchers"] = [f'{m["name"]}{m["matchType"]}"{m["value"]}"' for m in value]
        elif key == "routes":
            out["routes"] = [_from_operator(child) for child in value]
        else:
            out[names.get(key, key)] = value
    return out


def test_the_alertmanagerconfig_resource_says_what_the_fragment_says() -> None:
    [resource] = list(yaml.safe_load_all(OPERATOR.read_text()))
    assert (resource["apiVersion"], resource["kind"]) == ("monitoring.coreos.com/v1alpha1", "AlertmanagerConfig")
    spec, fragment = resource["spec"], load(FRAGMENT)
    assert _from_operator(spec["route"]) == fragment["route"]
    receivers = [
        {"name": r["name"]}
        | ({"webhook_configs": [{"url": w["url"], "send_resolved": w["sendResolved"]} for w in r["webhookConfigs"]]}
           if "webhookConfigs" in r else {})
        for r in spec["receivers"]
    ]  # fmt: skip
    assert receivers == fragment["receivers"]
    inhibit = [
        {
            "source_matchers": _from_operator({"matchers": i["sourceMatch"]})["matchers"],
            "target_matchers": _from_operator({"matchers": i["targetMatch"]})["matchers"],
            "equal": i["equal"],
        }
        for i in spec["inhibitRules"]
    ]
    assert inhibit == fragment["inhibit_rules"]
    [window] = spec["muteTimeIntervals"]
    [shipped] = fragment["time_intervals"]
    assert window["name"] == shipped["name"]
    assert [(t["weekdays"], [(x["startTime"], x["endTime"]) for x in t["times"]]) for t in window["timeIntervals"]] == [
        (t["weekdays"], [(x["start_time"], x["end_time"]) for x in t["times"]]) for t in shipped["time_intervals"]
    ]
