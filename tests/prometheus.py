"""The real Prometheus and promtool in tests: lint an exposition, run a server that scrapes ours.

Why real binaries: the exporter is judged by Prometheus's own standards, and alert rules by what
Prometheus actually evaluates; a fake would only agree with our own reading of the spec. The
binaries come from the distribution (``scripts/test.sh`` installs them as root). When one is
missing the test is skipped on a developer's machine, but fails under CI, so CI can never pass
by skipping (the one rule of ``tests/ci.py``).

Every server runs on 127.0.0.1, on a port picked at run time, with its own config and TSDB in the
test's directory: nothing is shared with a packaged ``prometheus`` service (``:9090``,
``/var/lib/prometheus``) that may be running on the machine.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tests.ci import in_ci, require_binary
from tests.server_process import ServerProcess, free_port

__all__ = ["PrometheusServer", "ScrapeJob", "find_binary", "free_port", "in_ci", "promtool_check_metrics"]

Result = list[dict[str, Any]]


def find_binary(name: str) -> str:
    """The path of ``name`` on PATH; skips the calling test when it is missing, or fails it under CI."""
    return require_binary(name, "Debian: apt-get install prometheus; scripts/test.sh does it as root")


def promtool_check_metrics(text: str, timeout: float = 30) -> list[str]:
    """``promtool check metrics`` on an exposition (text format): its complaints, one per line,
    empty when clean. Parse errors and lint problems both count; promtool prints them on stderr."""
    proc = subprocess.run(
        [find_binary("promtool"), "check", "metrics"],
        input=text.encode(),
        capture_output=True,
        timeout=timeout,
        check=False,
    )
    lines = [line.strip() for line in (proc.stdout + proc.stderr).decode(errors="replace").splitlines()]
    complaints = [line for line in lines if line]
    if proc.returncode != 0 and not complaints:
        complaints = [f"promtool check metrics exited {proc.returncode} without a message"]
    return complaints


def sample_value(sample: Mapping[str, Any]) -> float:
    """The number in one instant-query sample (``{"metric": …, "value": [ts, "42"]}``)."""
    return float(sample["value"][1])


class PrometheusError(RuntimeError):
    """The Prometheus HTTP API answered with an error (bad PromQL, timeout, …); the message is its own."""


@dataclass(frozen=True)
class ScrapeJob:
    """One ``scrape_configs`` entry: ``targets`` are ``host:port``; the rest is optional."""

    name: str
    targets: Sequence[str]
    scheme: str = "http"
    metrics_path: str = "/metrics"
    bearer_token: str | None = None
    ca_file: Path | None = None  # for scheme="https" against a test CA (tests/tls_helpers.py)

    def to_config(self) -> dict[str, Any]:
        """The YAML-ready mapping; Prometheus rejects unknown fields, so only set ones appear."""
        job: dict[str, Any] = {
            "job_name": self.name,
            "scheme": self.scheme,
            "metrics_path": self.metrics_path,
            "static_configs": [{"targets": list(self.targets)}],
        }
        if self.bearer_token is not None:
            job["authorization"] = {"type": "Bearer", "credentials": self.bearer_token}
        if self.ca_file is not None:
            job["tls_config"] = {"ca_file": str(Path(self.ca_file).resolve())}
        return job


def prometheus_config(
    jobs: Sequence[ScrapeJob],
    *,
    scrape_interval: str = "1s",
    evaluation_interval: str | None = None,
    rule_files: Sequence[str | Path] = (),
    alerting: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A prometheus.yml as data. Rules are evaluated as often as targets are scraped unless told
    otherwise, so a test waiting on an alert does not wait on the 1 m default; rule file paths are
    made absolute because Prometheus resolves relative ones against the config file's directory."""
    config: dict[str, Any] = {
        "global": {"scrape_interval": scrape_interval, "evaluation_interval": evaluation_interval or scrape_interval},
        "scrape_configs": [job.to_config() for job in jobs],
    }
    if rule_files:
        config["rule_files"] = [str(Path(path).resolve()) for path in rule_files]
    if alerting is not None:
        config["alerting"] = dict(alerting)
    return config


class PrometheusServer(ServerProcess):
    """A real ``prometheus`` subprocess for one test, used as a context manager.

    Give it scrape jobs (and optionally rule files and an ``alerting`` section), or a whole
    ``config`` mapping (e.g. ``deploy/``'s prometheus.yml with ports and paths filled in). It writes
    ``prometheus.yml``, ``data/`` (TSDB) and ``prometheus.log`` under ``directory``, listens on
    127.0.0.1 on a free port, and is ready when ``/-/ready`` says so. On exit: SIGTERM, then
    SIGKILL after ``stop_timeout`` seconds.

    Timing: Prometheus 2.42 hands new targets to the scrape manager on a fixed 5 s tick, so the
    first sample lands about 5 s after ready, whatever the scrape interval; later ones follow
    ``scrape_interval``. Give ``wait_for`` timeouts of 10 s or more for a first scrape.
    """

    def __init__(
        self,
        directory: Path,
        jobs: Sequence[ScrapeJob] = (),
        *,
        scrape_interval: str = "1s",
        evaluation_interval: str | None = None,
        rule_files: Sequence[str | Path] = (),
        alerting: Mapping[str, Any] | None = None,
        config: Mapping[str, Any] | None = None,
        extra_args: Sequence[str] = (),
        start_timeout: float = 30,
        stop_timeout: float = 10,
    ) -> None:
        if config is not None and (jobs or rule_files or alerting is not None):
            raise ValueError("give either config or jobs/rule_files/alerting, not both")
        super().__init__(directory, start_timeout=start_timeout, stop_timeout=stop_timeout)
        self.config: dict[str, Any] = (
            dict(config)
            if config is not None
            else prometheus_config(
                jobs,
                scrape_interval=scrape_interval,
                evaluation_interval=evaluation_interval,
                rule_files=rule_files,
                alerting=alerting,
            )
        )
        self.config_path = self.directory / "prometheus.yml"
        self.data_dir = self.directory / "data"
        self.extra_args = list(extra_args)  # e.g. ["--rules.alert.resend-delay=1s"]

    # -- lifecycle -------------------------------------------------------------------------

    name = "prometheus"

    def write_config(self) -> Path:
        """Write ``prometheus.yml`` (also usable alone, e.g. for ``promtool check config``)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(yaml.safe_dump(self.config, sort_keys=False))
        return self.config_path

    def prepare(self) -> None:
        self.write_config()

    def command(self, port: int) -> list[str]:
        return [
            find_binary("prometheus"),
            f"--config.file={self.config_path}",
            f"--storage.tsdb.path={self.data_dir}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--web.enable-lifecycle",
            *self.extra_args,
        ]

    # -- HTTP API --------------------------------------------------------------------------

    def api(self, path: str, params: Mapping[str, str] | None = None) -> Any:
        """GET ``/api/v1/<path>`` and return its ``data``; raises PrometheusError with the
        server's ``errorType: error`` text when it refuses."""
        if self._client is None:
            raise RuntimeError("prometheus is not running")
        response = self._client.get(f"/api/v1/{path}", params=params)
        try:
            body = response.json()
        except ValueError:
            raise PrometheusError(f"/api/v1/{path}: HTTP {response.status_code}: {response.text[:500]}") from None
        if body.get("status") != "success":
            raise PrometheusError(f"/api/v1/{path} {dict(params or {})}: {body.get('errorType')}: {body.get('error')}")
        return body["data"]

    def query(self, expr: str, at: float | None = None) -> Result:
        """Instant query: the samples, each ``{"metric": {labels}, "value": [ts, "v"]}``. A scalar
        or string result comes back as one sample with no labels, so callers handle one shape."""
        params = {"query": expr} | ({"time": str(at)} if at is not None else {})
        data = self.api("query", params)
        if data["resultType"] in ("scalar", "string"):
            return [{"metric": {}, "value": data["result"]}]
        return data["result"]

    def wait_for(
        self,
        expr: str,
        predicate: Callable[[Result], bool] = bool,
        timeout: float = 30,
        interval: float = 0.25,
    ) -> Result:
        """Query until ``predicate(result)`` holds (default: any sample at all) and return that
        result. Scrapes and rule evaluations are periodic, so tests wait rather than sleep; on
        timeout the error carries the last result and the server's log tail. A query the server
        refuses (bad PromQL) raises at once instead of waiting out the timeout."""
        deadline = time.monotonic() + timeout
        while True:
            result = self.query(expr)
            if predicate(result):
                return result
            if time.monotonic() >= deadline:
                raise TimeoutError(
                    f"{expr!r} did not satisfy the predicate within {timeout}s; last result: {result!r}\n"
                    f"targets: {[(t['scrapeUrl'], t['health'], t['lastError']) for t in self.targets()]}\n"
                    f"prometheus log tail:\n{self.log_tail()}"
                )
            time.sleep(interval)

    def targets(self) -> Result:
        """The active scrape targets (``/api/v1/targets``): labels, ``health``, ``lastError``, …"""
        return self.api("targets", {"state": "active"})["activeTargets"]

    def rules(self) -> Result:
        """Rule groups as loaded and evaluated (``/api/v1/rules``)."""
        return self.api("rules")["groups"]

    def alerts(self) -> Result:
        """Pending and firing alerts (``/api/v1/alerts``)."""
        return self.api("alerts")["alerts"]

    def reload(self) -> None:
        """Re-read ``prometheus.yml`` and the rule files (``/-/reload``, needs --web.enable-lifecycle)."""
        if self._client is None:
            raise RuntimeError("prometheus is not running")
        self.write_config()
        self._client.post("/-/reload").raise_for_status()
