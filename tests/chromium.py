"""Headless Chromium driven over the DevTools protocol on ``--remote-debugging-pipe`` (fds 3 and 4,
NUL-separated JSON): no driver library, no port. For the HTML report's browser test."""

from __future__ import annotations

import base64
import contextlib
import fcntl
import os
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import orjson

from keylife.cli.report_pdf import chromium
from tests.ci import require

INSTALL_HINT = "apt-get install chromium (scripts/test.sh does it as root)"


def _high(*fds: int) -> tuple[int, ...]:
    """The descriptors moved above 9, so the child's dup2 onto 3 and 4 never meets one of them."""
    out = tuple(fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10) for fd in fds)
    for fd in fds:
        os.close(fd)
    return out


class Browser:
    """One page: load a URL, collect console errors and exceptions, evaluate, screenshot."""

    def __init__(self) -> None:
        binary = require(chromium(), f"chromium not found; {INSTALL_HINT}")
        self._tmp = tempfile.TemporaryDirectory()
        to_chrome, self._w = _high(*os.pipe())
        self._r, from_chrome = _high(*os.pipe())

        def fds() -> None:  # the protocol's fixed descriptors: chromium reads 3, writes 4
            os.dup2(to_chrome, 3)
            os.dup2(from_chrome, 4)

        self.proc = subprocess.Popen(
            [binary, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-extensions",
             "--disable-dev-shm-usage", "--remote-debugging-pipe", f"--user-data-dir={self._tmp.name}",
             "--window-size=1280,2000", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            preexec_fn=fds, close_fds=False,
        )  # fmt: skip
        os.close(to_chrome)
        os.close(from_chrome)
        self._buf = b""
        self._id = 0
        self.events: list[dict[str, Any]] = []
        targets = self.call("Target.getTargets")["targetInfos"]
        page = next(t["targetId"] for t in targets if t["type"] == "page")
        self.session = self.call("Target.attachToTarget", targetId=page, flatten=True)["sessionId"]
        for domain in ("Page", "Runtime", "Log"):
            self.call(f"{domain}.enable", session=True)

    def _read(self) -> dict[str, Any]:
        while b"\0" not in self._buf:
            chunk = os.read(self._r, 1 << 20)
            if not chunk:
                raise RuntimeError("chromium closed the DevTools pipe")
            self._buf += chunk
        message, self._buf = self._buf.split(b"\0", 1)
        return orjson.loads(message)

    def call(self, method: str, session: bool = False, **params: Any) -> dict[str, Any]:
        self._id += 1
        request: dict[str, Any] = {"id": self._id, "method": method, "params": params}
        if session:
            request["sessionId"] = self.session
        os.write(self._w, orjson.dumps(request) + b"\0")
        while True:
            message = self._read()
            if message.get("id") == self._id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message["result"]
            self.events.append(message)

    def load(self, url: str) -> None:
        """Navigate and wait for the load event (read as it arrives, not slept for)."""
        self.call("Page.navigate", session=True, url=url)
        while not any(e.get("method") == "Page.loadEventFired" for e in self.events):
            self.events.append(self._read())

    def errors(self) -> list[str]:
        out = []
        for e in self.events:
            method, params = e.get("method"), e.get("params", {})
            if method == "Runtime.exceptionThrown":
                out.append(str(params["exceptionDetails"].get("text")))
            elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
                out.append(str(params.get("args")))
            elif method == "Log.entryAdded" and params["entry"].get("level") == "error":
                out.append(str(params["entry"].get("text")))
        return out

    def evaluate(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", session=True, expression=expression, returnByValue=True)
        return result["result"].get("value")

    def screenshot(self, path: Path) -> None:
        data = self.call("Page.captureScreenshot", session=True, format="png", captureBeyondViewport=True)["data"]
        path.write_bytes(base64.b64decode(data))

    def close(self) -> None:
        with contextlib.suppress(RuntimeError, OSError):  # already gone: nothing to close
            self.call("Browser.close")
        self.proc.wait(timeout=20)
        os.close(self._w)
        os.close(self._r)
        self._tmp.cleanup()
