"""deploy/: the Loki config agrees with the forwarder's Loki sink, and the Grafana provisioning
points at the datasource UIDs the dashboards use."""

from __future__ import annotations

from pathlib import Path

import yaml

from audit_forwarder.sinks.loki import LokiSinkConfig

DEPLOY = Path(__file__).parents[1] / "deploy"


def _size(text: str) -> int:
    units = {"KB": 1024, "MB": 1024**2}
    for unit, factor in units.items():
        if text.endswith(unit):
            return int(text[: -len(unit)]) * factor
    return int(text)


def _hours(text: str) -> float:
    assert text.endswith("h"), text
    return float(text[:-1])


def test_loki_limits_match_what_the_forwarder_checks_before_sending():
    limits = yaml.safe_load((DEPLOY / "loki" / "loki.yml").read_text())["limits_config"]
    sink = LokiSinkConfig(type="loki", name="loki", url="http://127.0.0.1:3100")
    assert limits["allow_structured_metadata"] is True  # key ids, seq and hashes travel as metadata
    assert _size(limits["max_line_size"]) == sink.max_line_bytes
    assert _hours(limits["reject_old_samples_max_age"]) * 3600 == sink.reject_old_samples_max_age_seconds
    assert sink.batch_max_bytes <= limits["ingestion_burst_size_mb"] * 1024**2


def test_grafana_provisioning_names_the_dashboards_datasources():
    provisioning = DEPLOY / "grafana" / "provisioning"
    sources = yaml.safe_load((provisioning / "datasources.yaml").read_text())["datasources"]
    assert {s["uid"]: s["type"] for s in sources} == {"prometheus": "prometheus", "loki": "loki"}
    providers = yaml.safe_load((provisioning / "dashboards.yaml").read_text())["providers"]
    assert providers and all(p["type"] == "file" for p in providers)
