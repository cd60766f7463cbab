"""A real keylife HTTP server on a loopback port picked by the OS, in a thread of the test."""

from __future__ import annotations

import json
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import uvicorn

from keylife.api.app import create_app
from keylife.api.auth import hash_token, new_token
from keylife.cli.config import Config, load
from keylife.cli.runtime import Runtime
from keylife.cli.serve import bind, uvicorn_config


@dataclass
class Live:
    url: str
    runtime: Runtime
    tokens: dict[str, str]  # name -> token
    server: uvicorn.Server | None = None  # its connections: server.server_state.connections

    def client(self, token: str | None = "all") -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.tokens[token]}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30)


def test_config(tmp: Path, **sections: dict) -> tuple[Config, dict[str, str]]:
    tokens = {
        "all": new_token(),
        "ingest": new_token(),
        "read": new_token(),
        "admin": new_token(),
        "forward": new_token(),
        # roles (keylife.common.scopes.ROLES); two security admins for dual control
        "viewer": new_token(),
        "auditor": new_token(),
        "operator": new_token(),
        "secadmin": new_token(),
        "secadmin2": new_token(),
        "alerts": new_token(),
    }
    roles = {"viewer": "viewer", "auditor": "auditor", "operator": "operator", "secadmin": "security-admin",
             "secadmin2": "security-admin"}  # fmt: skip
    scopes = {
        "all": ["ingest", "read", "admin", "forward"],
        "ingest": ["ingest"],
        "read": ["read"],
        "admin": ["admin", "read"],
        "forward": ["forward"],
        "alerts": ["alerts"],
    }
    config = load(None, env={})
    data = config.model_dump() | {
        "data_dir": tmp / "data",
        "listen": {"host": "127.0.0.1", "port": 0},
        "api": config.api.model_dump()
        | {
            "tokens": [
                {"name": n, "sha256": hash_token(t), "scopes": scopes.get(n, []), "role": roles.get(n)}
                for n, t in tokens.items()
            ]
        },
        "journal": config.journal.model_dump() | {"origin": "test.keylife/api"},
        "logging": {"level": "WARNING", "format": "text"},
        # read-your-writes on every scrape: tests ingest then scrape at once (the cache has its own tests)
        "exporter": config.exporter.model_dump() | {"scrape_cache_seconds": 0},
    }
    for name, values in sections.items():
        data[name] = data[name] | values
    return Config.model_validate(data), tokens


@contextmanager
def live_server(tmp: Path, **sections: dict) -> Iterator[Live]:
    config, tokens = test_config(tmp, **sections)
    runtime = Runtime.start(config)
    sock = bind("127.0.0.1", 0)
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn_config(create_app(runtime), config, runtime.telemetry))  # as serve runs it
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.time() + 10
    while not server.started and time.time() < deadline:
        time.sleep(0.01)
    try:
        yield Live(f"http://127.0.0.1:{port}", runtime, tokens, server)
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        runtime.close()


def start_server(
    config: Path, ready: Path, verify: ssl.SSLContext | bool = True
) -> tuple[subprocess.Popen[bytes], str]:
    """A `keylife serve` subprocess (for tests that signal or kill it); its stderr goes to a
    file beside ``ready`` so a chatty server can never block on a full pipe."""
    ready.unlink(missing_ok=True)
    log_path = ready.with_suffix(".stderr")
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "keylife.cli", "serve", "--config", str(config), "--ready-file", str(ready)],
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
    deadline = time.time() + 30
    while not ready.exists():
        if proc.poll() is not None or time.time() > deadline:
            raise AssertionError(f"server did not start: {log_path.read_text()[-3000:]}")
        time.sleep(0.02)
    url = json.loads(ready.read_text())["url"]
    while True:  # the ready file is written just before uvicorn accepts
        try:
            if httpx.get(f"{url}/readyz", timeout=1, verify=verify).status_code == 200:
                return proc, url
        except httpx.TransportError:
            if time.time() > deadline:
                raise
            time.sleep(0.02)
