"""``keylife forward``: the shipper alone over a journal directory, with its own metrics endpoint.

It reads the journal files only (it never writes the journal: a serving keylife owns that),
so it runs beside ``keylife serve`` on the same host or over a replicated copy of the journal.
It holds the forwarder's state directory (``forwarder.lock``, ``keylife.common.datalock``): a second
forwarder on the same directory, ``keylife serve`` with sinks included, would ship everything twice.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import ssl
import sys
import threading
import time
from pathlib import Path

from prometheus_client import CollectorRegistry, start_http_server

from keylife.cli.config import Config
from keylife.cli.forwarding import ApiReporter, build_forwarder
from keylife.common import logs
from keylife.common.secret_files import read_secret_text
from keylife.ingest.telemetry import add_standard_collectors
from keylife.journal.reader import journal_size

log = logging.getLogger("keylife.forwarder")


def _reporter(config: Config) -> ApiReporter | None:
    fwd = config.forwarder
    token_file = fwd.report_token_file or config.token_file
    if not token_file.exists():
        log.warning(
            "no token to journal quarantine notices; they stay pending",
            extra={"token_file": str(token_file)},
        )
        return None
    scheme = "https" if config.listen.tls_cert else "http"
    url = fwd.report_url or f"{scheme}://{config.listen.host}:{config.listen.port}"
    verify = ssl.create_default_context(cafile=str(fwd.report_ca_file)) if fwd.report_ca_file else True
    return ApiReporter(url, read_secret_text(token_file, "token file"), verify)  # owner-only, or refused


def run_forward(config: Config, *, ready_file: Path | None, until_caught_up: bool) -> int:
    logs.setup(config.logging.level, config.logging.format)
    if not (config.journal_dir / "journal.json").exists():
        print(f"keylife forward: no journal at {config.journal_dir}", file=sys.stderr)
        return 1
    registry = add_standard_collectors(CollectorRegistry(auto_describe=True))  # process_*, python_info
    reporter = _reporter(config)
    # Refused (DataDirBusy: one line naming the holder, exit 2) while another forwarder holds the state directory.
    forwarder = build_forwarder(config, registry, reporter, purpose="forward")
    if forwarder is None:
        print("keylife forward: no enabled sink in forwarder.sinks; nothing to do", file=sys.stderr)
        return 2
    try:
        server, _thread = start_http_server(config.forwarder.metrics_port, config.forwarder.metrics_host, registry)
    except BaseException:
        forwarder.stop()  # releases the state directory's lock
        raise
    port = server.server_address[1]
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    forwarder.start()
    metrics_url = f"http://{config.forwarder.metrics_host}:{port}/metrics"
    if ready_file:
        tmp = ready_file.with_name(ready_file.name + ".tmp")
        tmp.write_text(json.dumps({"metrics": metrics_url, "pid": os.getpid()}))
        tmp.replace(ready_file)
    print(f"keylife forward: shipping {config.journal_dir} to {', '.join(w.name for w in forwarder.workers)}; "
          f"metrics at {metrics_url}", file=sys.stderr)  # fmt: skip
    code = 0
    try:
        while not stop.wait(0.05):
            failed = [w for w in forwarder.workers if w.failure]
            if failed:
                for worker in failed:
                    print(f"keylife forward: sink {worker.name} stopped: {worker.failure}", file=sys.stderr)
                code = 1
                break
            if until_caught_up:
                size = journal_size(config.journal_dir)
                # Notices wait for keylife's API; without a reporter they can only stay pending.
                if all(
                    w.acknowledged >= size and (reporter is None or w.quarantine.unjournaled == 0)
                    for w in forwarder.workers
                ):
                    break
    finally:
        forwarder.stop()
        server.shutdown()
    return code


def wait_ready(path: Path, timeout: float = 30.0) -> dict:
    """For tests and scripts: the ready file's content once it exists."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            return json.loads(path.read_text())
        time.sleep(0.05)
    raise TimeoutError(f"{path} did not appear in {timeout} s")
