"""The Grafana dashboards: generated JSON equals the committed files, and follows the contract.

No Grafana runs here, so the checks are structural: the UIDs, variables and links alerts rely on
(alert_rules/CONTRACT.md), every panel explained and queried, every Prometheus selector scoped
to ``job="$job"`` and naming only metrics the exporter serves (docs/metrics.md) or the recording
rules, data links to the key detail dashboard, the provisioning files, and the PromQL parsed by
the real ``promtool``.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from dashboards import generate
from dashboards.common import DASHBOARDS
from dashboards.queries import Query, all_queries, selector_of, substitute, walk_panels
from tests.prometheus import find_binary

ROOT = Path(__file__).resolve().parent.parent
JSON_DIR = ROOT / "dashboards" / "json"
PROVISIONING = ROOT / "deploy" / "grafana" / "provisioning"
VALUES = {"job": "keylife", "key_id": "k-42", "node": "node-1|node-2", "sink": ".*"}
# A selector: a metric name of ours (keylife_… or a keylife:… recording rule), maybe with matchers.
SELECTOR = re.compile(r"(?<![\w:])(keylife[_:][\w:]*)(\{[^}]*\})?")
# LogQL stream selector and the key_id filter on structured metadata (never a label).
LOKI_KEY_FILTER = '| key_id="$key_id"'


def load(uid: str) -> dict[str, Any]:
    return json.loads((JSON_DIR / f"{uid}.json").read_text(encoding="utf-8"))


def panels(model: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel that is not a row (rows hold no queries)."""
    return [p for p in walk_panels(model["panels"]) if p["type"] != "row"]


def served_metrics() -> set[str]:
    """Metric names from docs/metrics.md (histograms as their series) and CONTRACT.md's recording rules."""
    names: set[str] = set()
    for name, kind in re.findall(r"^\| `(keylife_\w+)` \| (\w+) \|", (ROOT / "docs/metrics.md").read_text(), re.M):
        names.update({f"{name}_bucket", f"{name}_sum", f"{name}_count"} if kind == "histogram" else {name})
    names.update(re.findall(r"^- `(keylife:[\w:]+)` =", (ROOT / "alert_rules/CONTRACT.md").read_text(), re.M))
    return names


ALL = {uid: load(uid) for uid in DASHBOARDS}


def test_generator_output_equals_committed_json() -> None:
    rendered = generate.render_all()
    assert sorted(rendered) == sorted(p.name for p in JSON_DIR.glob("*.json"))
    for name, text in rendered.items():
        assert (JSON_DIR / name).read_text(encoding="utf-8") == text, (
            f"{name} differs from the generator's output: run python -m dashboards.generate"
        )
        assert text.endswith("}\n") and '\n  "' in text  # 2-space indent, trailing newline


def test_check_mode_fails_on_drift(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert generate.main(["--out", str(tmp_path)]) == 0
    assert generate.main(["--check", "--out", str(tmp_path)]) == 0
    edited = tmp_path / "keylife-fleet.json"
    edited.write_text(edited.read_text().replace("Usable keys", "Usable keyz"))
    assert generate.main(["--check", "--out", str(tmp_path)]) == 1
    assert "keylife-fleet.json: differs" in capsys.readouterr().err


@pytest.mark.parametrize("uid", DASHBOARDS)
def test_dashboard_settings_variables_and_links(uid: str) -> None:
    model = ALL[uid]
    assert model["uid"] == uid and model["title"] == DASHBOARDS[uid]
    assert model["time"] == {"from": "now-6h", "to": "now"} and model["refresh"] == "1m"
    assert "keylife" in model["tags"]
    variables = {v["name"]: v for v in model["templating"]["list"]}
    job = variables["job"]
    assert job["type"] == "query" and job["query"] == 'label_values(keylife_build_info{cluster=~"$cluster"}, job)'
    assert job["current"]["value"] == "keylife" and job["datasource"]["uid"] == "${datasource}"
    datasource = variables["datasource"]
    assert datasource["type"] == "datasource" and datasource["query"] == "prometheus"
    assert datasource["current"]["value"] == "${DS_PROMETHEUS}"
    cluster = variables["cluster"]
    assert cluster["query"] == "label_values(keylife_build_info, cluster)" and cluster["allValue"] == ".*"
    assert model["editable"] is True  # imported copies can be adapted; provisioning still forbids saving
    urls = {link["url"] for link in model["links"]}
    assert urls == {f"/d/{other}" for other in DASHBOARDS if other != uid}
    ids = [p["id"] for p in walk_panels(model["panels"])]
    assert len(ids) == len(set(ids)), "panel ids must be unique"


def test_dashboard_specific_variables() -> None:
    key_id = next(v for v in ALL["keylife-key"]["templating"]["list"] if v["name"] == "key_id")
    scope = 'cluster=~"$cluster", job="$job"'
    assert key_id["query"] == f"label_values(keylife_key_info{{{scope}}}, key_id)" and key_id["allowCustomValue"]
    node = next(v for v in ALL["keylife-propagation"]["templating"]["list"] if v["name"] == "node")
    assert node["query"] == f"label_values(keylife_node_last_report_timestamp_seconds{{{scope}}}, node)"
    assert node["multi"] and node["includeAll"]
    assert any(v["name"] == "sink" for v in ALL["keylife-pipeline"]["templating"]["list"])


@pytest.mark.parametrize("uid", DASHBOARDS)
def test_every_panel_has_title_description_and_targets(uid: str) -> None:
    for panel in panels(ALL[uid]):
        assert panel.get("title"), panel
        assert len(panel.get("description", "")) > 40, f"{panel['title']}: say what it means and what to do"
        assert panel.get("targets"), f"{panel['title']}: no target"
        ref_ids = [t["refId"] for t in panel["targets"]]
        assert all(ref_ids) and len(ref_ids) == len(set(ref_ids)), panel["title"]


def test_prometheus_targets_scope_every_selector_to_job_and_use_served_metrics() -> None:
    known = served_metrics()
    for query in all_queries():
        if query.datasource != "prometheus":
            continue
        where = f"{query.dashboard_uid} / {query.panel_title}: {query.expr}"
        selectors = SELECTOR.findall(query.expr)
        if not selectors:
            assert query.expr.startswith("count by (severity) (ALERTS{"), where
        for metric, matchers in selectors:
            assert metric in known, f"{where}: {metric} is neither served (docs/metrics.md) nor a recording rule"
            if query.kind == "target" or metric != "keylife_build_info":
                assert 'job="$job"' in matchers, f"{where}: {metric} not scoped to job"
                assert 'cluster=~"$cluster"' in matchers, f"{where}: {metric} not scoped to cluster"


DATASOURCE_UIDS = {"prometheus": "${datasource}", "loki": "${loki_datasource}"}


def test_datasources_are_the_variables() -> None:
    for model in ALL.values():
        for panel in panels(model):
            uids = {t["datasource"]["uid"] for t in panel["targets"]}
            assert uids <= set(DATASOURCE_UIDS.values()) and panel["datasource"]["uid"] in uids, panel["title"]
            for target in panel["targets"]:
                assert DATASOURCE_UIDS[target["datasource"]["type"]] == target["datasource"]["uid"], panel["title"]


_TEMPLATE = re.compile(r"\$\{(.+?)\}")


def grafana_import(model: Any, chosen: dict[str, str]) -> Any:
    """What Grafana's import does with ``__inputs`` (pkg/services/dashboardimport/utils,
    template evaluator): drop ``__inputs``, and in every string replace ``${NAME}`` of an input by
    the value picked in the dialog; any other ``${…}`` (dashboard variables) stays."""
    if isinstance(model, dict):
        return {k: grafana_import(v, chosen) for k, v in model.items() if k != "__inputs"}
    if isinstance(model, list):
        return [grafana_import(v, chosen) for v in model]
    if isinstance(model, str):
        return _TEMPLATE.sub(lambda m: chosen.get(m[1], m[0]), model)
    return model


def datasource_refs(model: Any) -> list[dict[str, Any]]:
    """Every ``{"type", "uid"}`` datasource reference anywhere in the dashboard."""
    if isinstance(model, list):
        return [ref for v in model for ref in datasource_refs(v)]
    if not isinstance(model, dict):
        return []
    refs = [model["datasource"]] if isinstance(model.get("datasource"), dict) else []
    return refs + [ref for v in model.values() for ref in datasource_refs(v)]


@pytest.mark.parametrize("uid", DASHBOARDS)
def test_import_through_inputs_leaves_no_fixed_datasource(uid: str) -> None:
    """Import as Grafana's UI does, into a Grafana whose datasources have uids of its own."""
    model = ALL[uid]
    inputs = {i["name"]: i for i in model["__inputs"]}
    assert all(i["type"] == "datasource" for i in inputs.values())
    assert {i["pluginId"] for i in inputs.values()} == {r["type"] for r in datasource_refs(model)}
    assert {r["id"] for r in model["__requires"]} == {i["pluginId"] for i in inputs.values()}
    chosen = {name: f"their-{i['pluginId']}-uid" for name, i in inputs.items()}
    imported = grafana_import(model, chosen)
    text = json.dumps(imported)
    assert "__inputs" not in imported and "${DS_" not in text, "an input was left unsubstituted"
    for ref in datasource_refs(imported):
        assert ref["uid"] == DATASOURCE_UIDS[ref["type"]], ref  # panels follow the variables
    variables = {v["name"]: v for v in imported["templating"]["list"] if v["type"] == "datasource"}
    assert {v["query"]: v["current"]["value"] for v in variables.values()} == {
        i["pluginId"]: chosen[name] for name, i in inputs.items()
    }
    assert not re.search(r'"uid": "(prometheus|loki)"', text), "a hard-coded datasource uid is left"


def test_key_detail_reads_the_audit_trail_from_loki() -> None:
    loki = [q for q in all_queries() if q.datasource == "loki"]
    assert {q.dashboard_uid for q in loki} == {"keylife-key"}
    exprs = {q.expr for q in loki}
    assert '{service="keylife"} | key_id="$key_id"' in exprs
    assert '{service="keylife", category="lifecycle"} | key_id="$key_id"' in exprs
    assert all(LOKI_KEY_FILTER in e for e in exprs), "key_id is structured metadata, filtered after the selector"


def test_data_links_to_key_detail() -> None:
    links = []
    for model in ALL.values():
        for panel in panels(model):
            config = panel.get("fieldConfig", {})
            for link in config.get("defaults", {}).get("links", []):
                links.append((model["uid"], panel["title"], link["url"]))
            for override in config.get("overrides", []):
                for prop in override.get("properties", []):
                    if prop.get("id") == "links":
                        links.extend((model["uid"], panel["title"], link["url"]) for link in prop["value"])
    for uid, title, url in links:
        if "keylife-key" in url:
            assert url.startswith("/d/keylife-key?"), (uid, title, url)
            assert "var-key_id=${__data.fields.key_id}" in url, (uid, title, url)
    linked = {(uid, title) for uid, title, url in links if url.startswith("/d/keylife-key")}
    assert {("keylife-fleet", "Expiring soon"), ("keylife-fleet", "Keys needing attention")} <= linked


def test_provisioning_files() -> None:
    sources = yaml.safe_load((PROVISIONING / "datasources.yaml").read_text())
    assert sources["apiVersion"] == 1
    by_uid = {s["uid"]: s for s in sources["datasources"]}
    assert by_uid["prometheus"]["type"] == "prometheus" and by_uid["prometheus"]["url"] == "http://127.0.0.1:9090"
    assert not any(s.get("isDefault") for s in sources["datasources"]), "a shipped default fights an existing one"
    assert by_uid["loki"]["type"] == "loki" and by_uid["loki"]["url"] == "http://127.0.0.1:3100"
    providers = yaml.safe_load((PROVISIONING / "dashboards.yaml").read_text())
    assert providers["apiVersion"] == 1
    (provider,) = providers["providers"]
    assert provider["type"] == "file" and provider["folder"] == "keylife"
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards/keylife"


def test_all_queries_returns_every_target_and_variable() -> None:
    queries = all_queries()
    targets = sum(len(p["targets"]) for model in ALL.values() for p in panels(model))
    variables = sum(1 for model in ALL.values() for v in model["templating"]["list"] if v["type"] == "query")
    assert sum(q.kind == "target" for q in queries) == targets
    assert sum(q.kind == "variable" for q in queries) == variables
    key_id = next(q for q in queries if q.variable == "key_id")
    assert key_id.selector == 'keylife_key_info{cluster=~"$cluster", job="$job"}' and key_id.datasource == "prometheus"


def test_substitute() -> None:
    expr = 'rate(x{job="$job", node=~"${node:regex}", sink=~"[[sink]]"}[$__rate_interval]) or vector($__range)'
    assert substitute(expr, VALUES | {"__range": "1h"}) == (
        'rate(x{job="keylife", node=~"node-1|node-2", sink=~".*"}[1m]) or vector(1h)'
    )
    assert substitute('label_replace(x, "a", "$1", "b", "(.*)")', {}) == 'label_replace(x, "a", "$1", "b", "(.*)")'
    with pytest.raises(KeyError, match="key_id"):
        substitute('x{key_id="$key_id"}', {})
    assert selector_of('label_values(up{a="1,2"}, job)') == 'up{a="1,2"}'
    assert selector_of("label_values(job)") is None


def test_every_query_substitutes_completely() -> None:
    for query in all_queries():
        text = substitute(query.expr, VALUES)
        assert "$" not in text.replace("$1", ""), (query, text)


def test_promql_parses_with_promtool(tmp_path: Path) -> None:
    """Each Prometheus expression, variables substituted, as a recording rule: promtool parses them all."""
    promtool = find_binary("promtool")
    exprs: list[tuple[Query, str]] = [
        (q, substitute(q.selector if q.kind == "variable" else q.expr, VALUES))
        for q in all_queries()
        if q.datasource == "prometheus" and (q.kind == "target" or q.selector)
    ]
    rules = [{"record": f"dashboard:query{i}", "expr": expr} for i, (_q, expr) in enumerate(exprs)]
    path = tmp_path / "queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboards", "rules": rules}]}))
    proc = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stdout + proc.stderr
