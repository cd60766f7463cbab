"""The shipped alerting rules: valid for promtool, unit-tested alert by alert, and consistent with
the contract, the runbooks and the dashboards they link to."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml

from alert_rules.render import CONFIG, TARGET, load_config, render
from tests.prometheus import find_binary

ROOT = Path(__file__).parents[1]
RULES_DIR = ROOT / "alert_rules"
UNIT_TESTS = sorted((RULES_DIR / "tests").glob("*_test.yml"))
CONTRACT = RULES_DIR / "CONTRACT.md"
DASHBOARD_UIDS = {"keylife-fleet", "keylife-key", "keylife-propagation", "keylife-pipeline", "keylife-compliance"}


def _alerts() -> list[dict]:
    groups = yaml.safe_load(TARGET.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def _contract_alerts() -> set[str]:
    section = CONTRACT.read_text().split("## Alerts", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"^- (Keylife\w+):", section, re.M))


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([find_binary("promtool"), *args], capture_output=True, text=True, timeout=120)


def test_the_committed_rules_are_the_rendered_config():
    assert TARGET.read_text() == render(load_config(CONFIG)), "run: python -m alert_rules.render"


def test_a_changed_threshold_changes_the_rendered_rules():
    config = load_config(CONFIG)
    config["thresholds"]["expiring_warning_days"] = 3
    assert "< 259200 > 0" in render(config) and "< 259200 > 0" not in TARGET.read_text()


def test_promtool_check_rules_passes_and_catches_a_broken_rule(tmp_path):
    checked = _promtool("check", "rules", str(TARGET))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    broken = tmp_path / "broken.yml"
    broken.write_text(TARGET.read_text().replace("keylife_forward_up{", "keylife_forward_up{{", 1))
    assert _promtool("check", "rules", str(broken)).returncode != 0


def test_promtool_unit_tests_pass():
    result = _promtool("test", "rules", *map(str, UNIT_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr


def _linked_alerts() -> list[dict]:
    """The rules rendered with both link bases set, as an install would."""
    config = load_config(CONFIG) | {"runbook_base_url": BASES[0], "dashboard_base_url": BASES[1]}
    return [r for g in yaml.safe_load(render(config))["groups"] for r in g["rules"] if "alert" in r]


BASES = ("https://git.example.com/ops/keylife/blob/main/docs/runbooks", "https://grafana.example.com")


def test_link_bases_are_unset_by_default_and_the_annotations_left_out():
    config = load_config(CONFIG)
    assert config["runbook_base_url"] is None and config["dashboard_base_url"] is None
    for rule in _alerts():
        assert set(rule["annotations"]) == {"summary", "description"}, rule["alert"]
    assert "127.0.0.1" not in TARGET.read_text() and "github.com/datafold" not in TARGET.read_text()


def test_render_cli_sets_the_link_bases(tmp_path):
    from alert_rules.render import main

    out = tmp_path / "rules.yml"
    assert main(["--output", str(out), "--runbook-base-url", BASES[0] + "/", "--dashboard-base-url", BASES[1]]) == 0
    text = out.read_text()
    assert f"runbook_url: {BASES[0]}/KeylifeKeyExpiring.md" in text
    assert f"dashboard_url: {BASES[1]}/d/keylife-key?" in text


def test_every_alert_is_labelled_annotated_and_linked():
    for rule in _linked_alerts():
        name = rule["alert"]
        assert rule["labels"]["severity"] in {"critical", "warning", "info", "none"}, name
        notes = rule["annotations"]
        if name == "KeylifeWatchdog":  # a heartbeat: no dashboard to look at
            assert set(notes) == {"summary", "description", "runbook_url"}
            assert (ROOT / "docs" / "runbooks" / f"{name}.md").is_file()
            continue
        assert set(notes) == {"summary", "description", "runbook_url", "dashboard_url"}, name
        assert "{{" not in notes["summary"], f"{name}: the summary is static"
        assert "{{" in notes["description"] or "$value" in notes["description"], f"{name}: describe the numbers"
        assert notes["runbook_url"].endswith(f"/docs/runbooks/{name}.md")
        assert (ROOT / "docs" / "runbooks" / f"{name}.md").is_file(), f"{name}: no runbook"
        uid = re.search(r"/d/([\w-]+)", notes["dashboard_url"]).group(1)
        assert uid in DASHBOARD_UIDS, f"{name}: dashboard {uid} does not exist"


def test_the_rules_implement_exactly_the_contract():
    assert {rule["alert"] for rule in _alerts()} == _contract_alerts()


def test_escalation_pairs_share_a_name_and_differ_in_severity():
    severities: dict[str, list[str]] = {}
    for rule in _alerts():
        severities.setdefault(rule["alert"], []).append(rule["labels"]["severity"])
    pairs = {name: s for name, s in severities.items() if len(s) > 1}
    assert len(pairs) >= 6  # expiry and rotation lost their critical tier: tickets only (issue 13)
    for name, found in pairs.items():
        assert sorted(found) == ["critical", "warning"], name


def _unit_cases() -> list[dict]:
    cases = []
    for path in UNIT_TESTS:
        for test in yaml.safe_load(path.read_text())["tests"]:
            cases += test.get("alert_rule_test", [])
    return cases


def test_every_alert_and_severity_is_unit_tested_firing_and_quiet():
    cases = _unit_cases()
    fired = {(c["alertname"], a["exp_labels"]["severity"]) for c in cases for a in c.get("exp_alerts") or []}
    quiet = {c["alertname"] for c in cases if not c.get("exp_alerts")}
    for rule in _alerts():
        assert (rule["alert"], rule["labels"]["severity"]) in fired, f"{rule['alert']} {rule['labels']['severity']}"
        if rule["alert"] != "KeylifeWatchdog":  # the heartbeat is never quiet, by design
            assert rule["alert"] in quiet, f"{rule['alert']}: no test that it stays quiet"


def test_each_escalation_pair_is_tested_warning_first_then_both():
    cases = _unit_cases()
    pairs = {rule["alert"] for rule in _alerts() if rule["labels"]["severity"] == "critical"} & {
        rule["alert"] for rule in _alerts() if rule["labels"]["severity"] == "warning"
    }
    for name in pairs:
        seen = [
            {a["exp_labels"]["severity"] for a in c.get("exp_alerts") or []} for c in cases if c["alertname"] == name
        ]
        assert {"warning", "critical"} in seen, f"{name}: no evaluation where both fire"


@pytest.mark.parametrize("path", UNIT_TESTS, ids=lambda p: p.name)
def test_a_unit_test_file_fails_when_an_expectation_is_wrong(path, tmp_path):
    """Guard against unit tests that cannot fail: flip one expected severity (or, in a file of recording-rule
    tests only, one expected value) and promtool must object."""
    text = path.read_text()
    if "severity: warning" in text:
        wrong = text.replace("severity: warning", "severity: info", 1)
    elif "severity: critical" in text:
        wrong = text.replace("severity: critical", "severity: info", 1)
    else:
        assert "promql_expr_test" in text and "alert_rule_test" not in text
        wrong = re.sub(r"value: (\d)", r"value: 1\1", text, count=1)
    assert wrong != text
    copy = tmp_path / path.name
    copy.write_text(wrong.replace("../keylife.rules.yml", str(TARGET)))
    assert _promtool("test", "rules", str(copy)).returncode != 0


def test_the_shipped_prometheus_config_loads_the_rules_and_checks_clean():
    config = ROOT / "deploy" / "prometheus" / "prometheus.yml"
    result = _promtool("check", "config", str(config))
    assert result.returncode == 0, result.stdout + result.stderr
    count = sum(len(group["rules"]) for group in yaml.safe_load(TARGET.read_text())["groups"])
    assert f"{count} rules found" in result.stdout  # the relative rule_files path reaches the rendered rules
