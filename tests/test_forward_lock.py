"""One forwarder per state directory: `keylife serve` with sinks and `keylife forward` on the same
config must never both ship (every entry would arrive twice). Real processes, a real file sink."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import orjson
import yaml

from keylife.cli.forward_cli import wait_ready
from keylife.common.datalock import DataLock
from tests.server import start_server
from tests.server_process import terminate
from tests.test_api import ev, ndjson
from tests.waiting import wait_until

NDJSON = {"Content-Type": "application/x-ndjson"}
FORWARD = [sys.executable, "-m", "keylife.cli", "forward", "--config"]


def _config(tmp: Path) -> tuple[Path, Path, Path]:
    """One config for both processes: serve on a free port, a file sink, forward's metrics on port 0."""
    archive = tmp / "archive.ndjson"
    config = tmp / "keylife.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "data_dir": str(tmp / "data"),
                "listen": {"host": "127.0.0.1", "port": 0},
                "logging": {"level": "WARNING", "format": "text"},
                "forwarder": {
                    "sinks": [{"type": "file", "name": "archive", "path": str(archive), "batch_wait_seconds": 0}],
                    "metrics_port": 0,
                },
            }
        )
    )
    return config, archive, tmp / "data" / "forwarder"


def _shipped_ids(archive: Path) -> list[str]:
    lines = [orjson.loads(line) for line in archive.read_bytes().splitlines()] if archive.exists() else []
    return [line["event"]["id"] for line in lines if line["event"]["type"] != "checkpoint"]


def _ingest(url: str, token_file: Path, events: list[dict]) -> None:
    headers = NDJSON | {"Authorization": f"Bearer {token_file.read_text().strip()}"}
    assert httpx.post(f"{url}/v1/events", content=ndjson(*events), headers=headers, timeout=30).status_code == 200


def test_forward_beside_serve_with_sinks_is_refused_and_each_entry_is_shipped_once(tmp_path):
    config, archive, state = _config(tmp_path)
    serve, url = start_server(config, tmp_path / "serve.ready")
    try:
        refused = subprocess.run([*FORWARD, str(config)], capture_output=True, timeout=30)
        assert refused.returncode == 2
        error = refused.stderr.decode()
        assert error.count("\n") == 1, error  # one line, no traceback
        assert error == (
            f"keylife: the forwarder state directory {state} is in use by keylife serve (pid {serve.pid}); "
            "stop it first\n"
        )
        _ingest(url, tmp_path / "data" / "tokens" / "admin.token", [ev(n) for n in range(40)])
        wait_until(lambda: len(_shipped_ids(archive)) >= 40, what="40 entries shipped")
    finally:
        terminate(serve, 20)
    assert serve.returncode == 0
    assert _shipped_ids(archive) == [f"e-{n}" for n in range(40)]  # each once, in order
    DataLock(state, "forwarder.lock").acquire("test").release()  # released on exit


def test_serve_beside_a_running_forward_does_not_forward_and_the_lock_survives_no_sigkill(tmp_path):
    config, archive, state = _config(tmp_path)
    token = tmp_path / "data" / "tokens" / "admin.token"
    first, url = start_server(config, tmp_path / "first.ready")  # creates the journal; ships nothing yet
    terminate(first, 20)

    ready = tmp_path / "forward.ready"
    forward = subprocess.Popen([*FORWARD, str(config), "--ready-file", str(ready)], stderr=subprocess.DEVNULL)
    try:
        wait_ready(ready)
        serve, url = start_server(config, tmp_path / "serve.ready")  # the same config, sinks and all
        try:
            _ingest(url, token, [ev(n) for n in range(60)])
            wait_until(lambda: len(_shipped_ids(archive)) >= 60, what="60 entries shipped by keylife forward")
            log = (tmp_path / "serve.stderr").read_text()
            expected = (
                f"forwarder not started: the forwarder state directory {state} is in use by keylife forward "
                f"(pid {forward.pid}); stop it first"
            )
            assert expected in log, log
            cursor = state / "archive" / "cursor.json"
            wait_until(lambda: cursor.exists() and orjson.loads(cursor.read_bytes())["next_seq"] == 60)
            os.kill(forward.pid, signal.SIGKILL)  # no chance to release anything itself
            forward.wait(10)

            # The kernel dropped the flock with the process: a new forwarder starts at once and
            # ships what came since, from the cursor (nothing twice).
            _ingest(url, token, [ev(n) for n in range(60, 70)])
            again = subprocess.run([*FORWARD, str(config), "--until-caught-up"], capture_output=True, timeout=60)
            assert again.returncode == 0, again.stderr.decode()[-2000:]
        finally:
            terminate(serve, 20)
    finally:
        if forward.poll() is None:
            terminate(forward, 20)
    assert _shipped_ids(archive) == [f"e-{n}" for n in range(70)]  # each once, in order
    assert re.fullmatch(r"keylife forward \(pid \d+\)\n", (state / "forwarder.lock").read_text())
