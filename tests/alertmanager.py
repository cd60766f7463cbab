"""The real Alertmanager and amtool in tests: check configs, test routes, run a server.

Why real binaries: routing, inhibition and time-based muting are judged by what Alertmanager
itself does with ``alert_rules/alertmanager/*.yml``; a re-implementation in Python would only
agree with our own reading of its docs. The binaries come from Debian's ``prometheus-alertmanager``
package (``scripts/test.sh`` installs it as root; the package's service is never used). When one
is missing the test is skipped on a developer's machine but fails under CI (``tests/ci.py``).

Every server runs on 127.0.0.1 on a port picked at run time, with clustering off
(``--cluster.listen-address=``: no gossip port, no waiting for peers) and its own storage
directory under the test's directory: nothing is shared with a packaged service (``:9093``,
``/var/lib/prometheus/alertmanager``). ``WebhookReceiver`` stands in for PagerDuty & co.: it
records every notification Alertmanager POSTs to it.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx
import yaml

from tests.ci import require_binary, unavailable
from tests.server_process import ServerProcess

INSTALL_HINT = "apt-get install prometheus-alertmanager; scripts/test.sh does it as root"
# Debian installs the server as prometheus-alertmanager; upstream tarballs and images call it alertmanager.
SERVER_NAMES = ("prometheus-alertmanager", "alertmanager")


def find_alertmanager() -> str:
    """The Alertmanager server binary under either of its names; skip or, under CI, fail."""
    for name in SERVER_NAMES:
        path = shutil.which(name) or shutil.which(name, path="/usr/bin")
        if path:
            return path
    unavailable(f"none of {', '.join(SERVER_NAMES)} found ({INSTALL_HINT})")


def find_amtool() -> str:
    """amtool's path (same package as the server); skip or, under CI, fail."""
    return require_binary("amtool", INSTALL_HINT, "/usr/bin")


def amtool(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """Run ``amtool <args>`` and return the finished process (never raises on a non-zero exit:
    several tests assert that amtool refuses something). With ``--config.file`` amtool warns on
    stderr that it overrides ``--alertmanager.url``; that line is noise, not an error."""
    return subprocess.run(
        [find_amtool(), *args], capture_output=True, text=True, timeout=timeout, check=False, stdin=subprocess.DEVNULL
    )


def rfc3339(moment: datetime) -> str:
    """A UTC timestamp as Alertmanager's API wants it (RFC 3339 with a ``Z``)."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def make_alert(
    labels: Mapping[str, str],
    *,
    started_ago: timedelta = timedelta(0),
    lasts: timedelta = timedelta(minutes=10),
    annotations: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """One alert for ``POST /api/v2/alerts``, shaped as Prometheus sends it (with ``endsAt``).

    ``started_ago`` matters: Alertmanager flushes a new group at once, without waiting
    ``group_wait``, when the alert's ``startsAt`` is already more than ``group_wait`` in the past.
    Fresh alerts (the default) exercise the real ``group_wait``; old ones make a test fast."""
    now = datetime.now(UTC)
    return {
        "labels": dict(labels),
        "annotations": dict(annotations or {}),
        "startsAt": rfc3339(now - started_ago),
        "endsAt": rfc3339(now + lasts),
        "generatorURL": "http://127.0.0.1/keylife-test",
    }


@dataclass(frozen=True)
class Notification:
    """One webhook POST from Alertmanager: the request path and its JSON body (version 4 payload:
    ``receiver``, ``status``, ``groupLabels``, ``alerts`` …)."""

    path: str
    body: dict[str, Any]

    @property
    def alerts(self) -> list[dict[str, Any]]:
        return list(self.body.get("alerts", []))


class WebhookReceiver:
    """An HTTP server on 127.0.0.1 (free port, own thread) that records every POST and answers 200.

    Stands in for the on-call and ticket systems: point a ``webhook_configs`` URL at
    ``self.url + "/pager"`` and read what arrived from ``notifications``."""

    def __init__(self) -> None:
        self.notifications: list[Notification] = []
        self._changed = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                try:
                    body = json.loads(raw or b"{}")
                except ValueError:
                    body = {"unparsed": raw.decode(errors="replace")}
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()
                with receiver._changed:
                    receiver.notifications.append(Notification(self.path, body))
                    receiver._changed.notify_all()

            def log_message(self, format: str, *args: Any) -> None:  # quiet: pytest shows failures
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port: int = self._server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, name="webhook-receiver", daemon=True)

    def __enter__(self) -> WebhookReceiver:
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._server.shutdown()
        self._server.server_close()

    def received(self, path: str | None = None) -> list[Notification]:
        """A snapshot of the notifications so far, optionally only those POSTed to ``path``."""
        with self._changed:
            return [n for n in self.notifications if path is None or n.path == path]

    def wait_for(self, predicate: Callable[[list[Notification]], bool], timeout: float) -> list[Notification]:
        """Block until ``predicate(all notifications)`` holds; TimeoutError (with what did arrive)
        otherwise. Notifications arrive on Alertmanager's timers, so tests wait instead of sleeping."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while not predicate(list(self.notifications)):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"webhook condition not met within {timeout}s; got {self.notifications!r}")
                self._changed.wait(remaining)
            return list(self.notifications)


class AlertmanagerServer(ServerProcess):
    """A real Alertmanager subprocess for one test, used as a context manager.

    Give it a config as a mapping (written to ``alertmanager.yml`` in ``directory``) or the path of
    an existing file. It keeps its silences and notification log in ``directory/data`` and its
    output in ``alertmanager.log``; it is ready when ``/-/ready`` answers 200. On exit: SIGTERM,
    then SIGKILL after ``stop_timeout`` seconds.
    """

    name = "alertmanager"

    def __init__(
        self,
        directory: Path,
        config: Mapping[str, Any] | None = None,
        *,
        config_path: Path | None = None,
        extra_args: Sequence[str] = (),
        start_timeout: float = 30,
        stop_timeout: float = 10,
    ) -> None:
        if (config is None) == (config_path is None):
            raise ValueError("give exactly one of config and config_path")
        super().__init__(directory, start_timeout=start_timeout, stop_timeout=stop_timeout)
        self.config = dict(config) if config is not None else None
        self.config_path = Path(config_path) if config_path is not None else self.directory / "alertmanager.yml"
        self.data_dir = self.directory / "data"
        self.extra_args = list(extra_args)

    # -- lifecycle -------------------------------------------------------------------------

    def prepare(self) -> None:
        if self.config is not None:
            self.config_path.write_text(yaml.safe_dump(self.config, sort_keys=False))

    def command(self, port: int) -> list[str]:
        return [
            find_alertmanager(),
            f"--config.file={self.config_path}",
            f"--storage.path={self.data_dir}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=",  # empty: no clustering, no gossip port
            *self.extra_args,
        ]

    # -- HTTP API (v2) ---------------------------------------------------------------------

    @property
    def client(self) -> httpx.Client:
        if self._client is None:
            raise RuntimeError("alertmanager is not running")
        return self._client

    def post_alerts(self, alerts: Sequence[Mapping[str, Any]]) -> None:
        """``POST /api/v2/alerts`` (see ``make_alert``); raises with the server's reason on refusal."""
        response = self.client.post("/api/v2/alerts", json=list(alerts))
        if response.status_code != 200:
            raise RuntimeError(f"POST /api/v2/alerts: HTTP {response.status_code}: {response.text[:500]}")

    def alerts(self, **flags: bool) -> list[dict[str, Any]]:
        """``GET /api/v2/alerts``: each alert with ``labels``, ``fingerprint``, ``receivers`` and
        ``status`` (``state``, ``inhibitedBy``, ``silencedBy``). ``flags`` are the API's filters
        (``active``, ``silenced``, ``inhibited``, ``unprocessed``; all true by default)."""
        params = {name: str(value).lower() for name, value in flags.items()}
        response = self.client.get("/api/v2/alerts", params=params)
        response.raise_for_status()
        return list(response.json())

    def wait_for_alerts(
        self, predicate: Callable[[list[dict[str, Any]]], bool], timeout: float = 10, interval: float = 0.1
    ) -> list[dict[str, Any]]:
        """Poll ``alerts()`` until ``predicate`` holds. Posted alerts reach the inhibitor through an
        asynchronous subscription, so an inhibition shows a moment after the POST returns."""
        deadline = time.monotonic() + timeout
        while True:
            alerts = self.alerts()
            if predicate(alerts):
                return alerts
            if time.monotonic() >= deadline:
                raise TimeoutError(
                    f"alerts did not satisfy the predicate within {timeout}s: {alerts!r}\nlog:\n{self.log_tail()}"
                )
            time.sleep(interval)
