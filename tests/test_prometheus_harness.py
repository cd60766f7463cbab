"""The Prometheus harness itself, against the real binaries: promtool's lint, a real server
scraping a tiny in-test exporter, the config it writes, and the skip/fail rule for missing binaries."""

from __future__ import annotations

import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests import prometheus as prom
from tests.prometheus import PrometheusError, PrometheusServer, ScrapeJob, promtool_check_metrics, sample_value

TOKEN = "harness-test-token"

GOOD = """\
# HELP harness_widgets_total Widgets made since start.
# TYPE harness_widgets_total counter
harness_widgets_total{colour="blue"} 7
# HELP harness_temperature_celsius The temperature of the fixture.
# TYPE harness_temperature_celsius gauge
harness_temperature_celsius 42.5
"""


class _Exposition(BaseHTTPRequestHandler):
    """Serves GOOD at /metrics to a caller with the bearer token; 401 without it, 404 elsewhere."""

    def do_GET(self) -> None:
        if self.path != "/metrics":
            self.send_error(404)
        elif self.headers.get("Authorization") != f"Bearer {TOKEN}":
            self.send_error(401)
        else:
            body = GOOD.encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # quiet: one line per scrape otherwise
        pass


@pytest.fixture
def exporter() -> Iterator[str]:
    """``host:port`` of the tiny exporter, in a thread of this test."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Exposition)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_promtool_check_metrics_clean_for_good_text() -> None:
    assert promtool_check_metrics(GOOD) == []


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("# HELP harness_requests Requests.\n# TYPE harness_requests counter\nharness_requests 3\n", '"_total" suffix'),
        ("# HELP harness_latency_ms Latency.\n# TYPE harness_latency_ms gauge\nharness_latency_ms 3\n", "abbreviated"),
        ("harness_no_help 1\n", "no help text"),
        ("# HELP bad-name Bad.\n# TYPE bad-name gauge\nbad-name 1\n", "invalid metric name"),
    ],
    ids=["counter-without-total", "abbreviated-unit", "no-help", "bad-characters"],
)
def test_promtool_check_metrics_reports_problems(text: str, complaint: str) -> None:
    complaints = promtool_check_metrics(text)
    assert any(complaint in line for line in complaints), complaints


def test_prometheus_scrapes_and_answers_queries(tmp_path: Path, exporter: str) -> None:
    job = ScrapeJob("harness", [exporter], bearer_token=TOKEN)
    with PrometheusServer(tmp_path, [job], scrape_interval="1s") as server:
        assert server.url.startswith("http://127.0.0.1:")
        result = server.wait_for(
            'harness_temperature_celsius{job="harness"}', lambda r: bool(r) and sample_value(r[0]) == 42.5, timeout=10
        )
        assert result[0]["metric"]["instance"] == exporter
        [up] = server.query('up{job="harness"}')
        assert sample_value(up) == 1
        [target] = server.targets()
        assert (target["health"], target["labels"]["job"], target["lastError"]) == ("up", "harness", "")
        assert sample_value(server.query("1 + 1")[0]) == 2  # a scalar comes back as one sample
        with pytest.raises(PrometheusError, match="bad_data"):
            server.query("sum(")
        process = server.process
    assert process is not None and process.returncode is not None  # stopped on exit


def test_written_config_passes_promtool_check_config(tmp_path: Path) -> None:
    """The rule_files and alerting sections issue 5 passes in come out as Prometheus reads them."""
    rules = tmp_path / "rules.yml"
    rules.write_text(
        "groups:\n- name: harness\n  rules:\n  - alert: HarnessDown\n    expr: up == 0\n    for: 1m\n"
        "    labels: {severity: critical}\n"
    )
    server = PrometheusServer(
        tmp_path / "prom",
        [ScrapeJob("harness", ["127.0.0.1:1"], scheme="https", metrics_path="/m", bearer_token=TOKEN)],
        rule_files=[rules],
        alerting={"alertmanagers": [{"static_configs": [{"targets": ["127.0.0.1:2"]}]}]},
    )
    config = server.write_config()
    check = subprocess.run(
        [prom.find_binary("promtool"), "check", "config", str(config)], capture_output=True, text=True, check=False
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert "1 rules found" in check.stdout + check.stderr


def test_missing_binary_skips_locally_but_fails_in_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("tests.ci.shutil.which", lambda name, path=None: None)
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="promtool not found"):
        prom.find_binary("promtool")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI must not skip"):
        prom.find_binary("promtool")
