"""Start and stop a real ``keylife serve`` for a benchmark, on a loopback port the OS picks.

Why a subprocess and not a thread: the HTTP figures must be the server's own (its CPU time
from /proc, pinned to one core), not shared with the load generator's interpreter and GIL.
The server gets a temp config (``listen.port: 0``, tokens in the config) and a ready file,
exactly as tests/test_crash.py starts it; it is pinned in ``preexec_fn`` and dies with its
parent (PR_SET_PDEATHSIG), so a benchmark killed on a timeout leaves no server behind.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml

from bench.common import ORIGIN, REPO

PR_SET_PDEATHSIG = 1


@dataclass
class Server:
    url: str
    token: str
    pid: int
    data_dir: Path
    proc: subprocess.Popen[bytes]


def _preexec(core: int | None) -> Callable[[], None]:
    def setup() -> None:
        if core is not None:
            os.sched_setaffinity(0, {core})
        with contextlib.suppress(OSError):  # not glibc: the finally in ``running`` still stops it
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)

    return setup


def write_config(
    tmp: Path,
    token: str,
    journal: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
    scopes: list[str] | None = None,
) -> Path:
    """A config for a fresh data dir: port 0, one token (ingest+read unless ``scopes``), quiet logs."""
    from keylife.api.auth import hash_token

    config = tmp / "keylife.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "data_dir": str(tmp / "data"),
                "listen": {"host": "127.0.0.1", "port": 0},
                "journal": {"origin": ORIGIN, **(journal or {})},
                "api": {
                    "tokens": [{"name": "bench", "sha256": hash_token(token), "scopes": scopes or ["ingest", "read"]}]
                },
                "logging": {"level": "WARNING"},
            }
            | (extra or {})
        )
    )
    return config


@contextmanager
def running(
    tmp: Path,
    core: int | None,
    journal: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
    scopes: list[str] | None = None,
) -> Iterator[Server]:
    """A started server (ready: /readyz answers 200); stopped with SIGTERM on exit."""
    from keylife.api.auth import new_token

    token = new_token()
    config = write_config(tmp, token, journal, extra, scopes)
    ready = tmp / "ready.json"
    stderr = open(tmp / "server.stderr", "wb")  # noqa: SIM115 - closed in finally
    proc = subprocess.Popen(
        [sys.executable, "-m", "keylife.cli", "serve", "--config", str(config), "--ready-file", str(ready)],
        stdout=subprocess.DEVNULL,
        stderr=stderr,
        cwd=REPO,
        preexec_fn=_preexec(core),
    )
    try:
        url = _wait_ready(proc, ready, tmp / "server.stderr")
        yield Server(url, token, proc.pid, tmp / "data", proc)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        stderr.close()


def _wait_ready(proc: subprocess.Popen[bytes], ready: Path, stderr: Path, timeout: float = 30.0) -> str:
    deadline = time.monotonic() + timeout
    while not ready.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"keylife serve did not start: {stderr.read_text()[-2000:]}")
        time.sleep(0.02)
    url: str = json.loads(ready.read_text())["url"]
    while time.monotonic() < deadline:  # the ready file is written just before uvicorn accepts
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                return url
        except httpx.TransportError:
            time.sleep(0.02)
    raise RuntimeError(f"keylife serve at {url} never became ready")
