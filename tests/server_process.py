"""A real server binary run by a test: free loopback port, readiness probe, log file, clean stop.

Prometheus and Alertmanager share this lifecycle (``tests/prometheus.py``, ``tests/alertmanager.py``):
both answer ``/-/ready``, both stop cleanly on SIGTERM, and a port taken between picking and
binding is retried on another.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType
from typing import Self

import httpx


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago. Another process may take it before we
    bind it again, so callers that start a server retry on "address already in use"."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def terminate(process: subprocess.Popen[bytes] | None, timeout: float) -> None:
    """SIGTERM (the servers flush their state and exit), SIGKILL if still running after ``timeout``."""
    if process is None or process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=timeout)


class ServerProcess:
    """Subclasses set ``name`` and ``log_path`` and build their ``command(port)``."""

    name = "server"
    ready_path = "/-/ready"

    def __init__(self, directory: Path, *, start_timeout: float = 30, stop_timeout: float = 10) -> None:
        self.directory = Path(directory)
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self.log_path = self.directory / f"{self.name}.log"
        self.port = 0
        self.url = ""
        self.process: subprocess.Popen[bytes] | None = None
        self._client: httpx.Client | None = None

    def command(self, port: int) -> list[str]:
        raise NotImplementedError

    def prepare(self) -> None:
        """Write config files before the first start (subclasses)."""

    def start(self) -> Self:
        """Start and wait until ready. A port taken between picking and binding is retried."""
        self.directory.mkdir(parents=True, exist_ok=True)
        self.prepare()
        for _attempt in range(3):
            self.port = free_port()
            self.url = f"http://127.0.0.1:{self.port}"
            with self.log_path.open("ab") as log:
                self.process = subprocess.Popen(
                    self.command(self.port),
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    cwd=self.directory,
                    start_new_session=True,  # a Ctrl-C in pytest reaches us, not the server directly
                )
            if self._wait_ready():
                self._client = httpx.Client(base_url=self.url, timeout=10)
                return self
            if "address already in use" not in self.log_tail():
                break
        raise RuntimeError(f"{self.name} did not become ready on {self.url}; log tail:\n{self.log_tail()}")

    def _wait_ready(self) -> bool:
        """Poll the readiness path; False as soon as the process exits (bad config, port taken) or on timeout."""
        assert self.process is not None
        deadline = time.monotonic() + self.start_timeout
        with httpx.Client(timeout=2) as client:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    return False
                try:
                    if client.get(f"{self.url}{self.ready_path}").status_code == 200:
                        return True
                except httpx.TransportError:
                    pass
                time.sleep(0.05)
        self.stop()
        return False

    def stop(self) -> None:
        """SIGTERM (both flush their state and exit), SIGKILL after ``stop_timeout``."""
        if self._client is not None:
            self._client.close()
            self._client = None
        process, self.process = self.process, None
        terminate(process, self.stop_timeout)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def log_tail(self, lines: int = 40) -> str:
        """The end of the server's log, for failure messages."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"
