"""No drift between what keylife emits and what its rules and dashboards query.

Every metric name in every rule expression and every dashboard query (parsed as PromQL with
promql-parser, not matched by regex) must be one the exporter serves, a recording rule of
ours, or one Prometheus makes itself (``up``, ``ALERTS``). The served names come from the same
definitions the collectors use, so a renamed metric fails here before a dashboard goes blank.
"""

from __future__ import annotations

from pathlib import Path

import promql_parser
import pytest
import yaml
from prometheus_client import CollectorRegistry
from prometheus_client.metrics import MetricWrapperBase

from audit_forwarder.shipper.metrics import GAUGES, ForwardMetrics
from exporter.metrics_spec import ANOMALIES, FLEET, INCIDENTS, PIPELINE, POSTURE, REVOCATION
from keylife.ingest.telemetry import Telemetry

ROOT = Path(__file__).parents[1]
RULES = ROOT / "alert_rules" / "keylife.rules.yml"
PROMETHEUS_OWN = {"up", "ALERTS", "ALERTS_FOR_STATE", "scrape_duration_seconds", "scrape_samples_scraped"}
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "info": ("_info",), "gauge": ("",)}


def _served(name: str, kind: str) -> set[str]:
    return {name + suffix for suffix in SUFFIXES.get(kind, ("",))}


def emitted() -> set[str]:
    names: set[str] = set()
    for spec in (*FLEET, *PIPELINE, *INCIDENTS, *REVOCATION, *POSTURE, *ANOMALIES):
        names |= _served(spec.name, spec.kind)
    for holder in (Telemetry(), ForwardMetrics(CollectorRegistry())):
        for metric in vars(holder).values():
            if isinstance(metric, MetricWrapperBase):
                names |= _served(metric._name, metric._type)
    names |= {name for name, _help in GAUGES}
    return names


def _groups() -> list[dict]:
    return yaml.safe_load(RULES.read_text())["groups"]


def recorded() -> set[str]:
    return {rule["record"] for group in _groups() for rule in group["rules"] if "record" in rule}


def metric_names(expr: str) -> set[str]:
    names: set[str] = set()

    def visit(node: object) -> bool:
        if isinstance(node, promql_parser.VectorSelector) and node.name:
            names.add(node.name)
        return True

    promql_parser.walk(promql_parser.parse(expr), visit)
    return names


def _rule_exprs() -> list[tuple[str, str]]:
    return [(rule.get("alert") or rule["record"], rule["expr"]) for group in _groups() for rule in group["rules"]]


def test_the_parser_finds_names_inside_functions_matrices_and_joins():
    expr = 'sum by (job) (rate(a_total{job="k"}[5m])) / on(job) group_left(x) b:c{job="k"} > 0 or absent(up)'
    assert metric_names(expr) == {"a_total", "b:c", "up"}


def test_the_emitted_set_is_the_exporter_s_own():
    names = emitted()
    assert {"keylife_keys", "keylife_key_usage_operations_total", "keylife_propagation_lag_seconds_bucket"} <= names
    assert {"keylife_forward_up", "keylife_ingest_requests_total", "keylife_build_info"} <= names
    assert "keylife_keys_total" not in names  # a gauge gets no _total


@pytest.mark.parametrize(("rule", "expr"), _rule_exprs(), ids=[name for name, _ in _rule_exprs()])
def test_every_rule_queries_only_what_exists(rule, expr):
    known = emitted() | recorded() | PROMETHEUS_OWN
    unknown = metric_names(expr) - known
    assert not unknown, f"{rule} queries {sorted(unknown)}, which keylife does not emit"


def _dashboard_exprs() -> list[tuple[str, str]]:
    from dashboards.queries import all_queries, substitute

    variables = {"job": "keylife", "key_id": "k", "node": "n", "sink": "s"}
    out = []
    for query in all_queries():
        if query.datasource != "prometheus":
            continue
        source = query.selector if query.kind == "variable" and query.selector else query.expr
        out.append((f"{query.dashboard_uid}/{query.panel_title}", substitute(source, variables)))
    return out


def test_every_dashboard_query_parses_and_queries_only_what_exists():
    known = emitted() | recorded() | PROMETHEUS_OWN
    exprs = _dashboard_exprs()
    assert len(exprs) >= 40
    problems = []
    for where, expr in exprs:
        try:
            unknown = metric_names(expr) - known
        except Exception as exc:  # any parse failure: report it with its panel, then go on
            problems.append(f"{where}: does not parse: {exc}")
            continue
        if unknown:
            problems.append(f"{where}: {sorted(unknown)}")
    assert not problems, "\n".join(problems)
