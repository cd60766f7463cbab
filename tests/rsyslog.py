"""A real rsyslogd in tests: a receiver for the syslog sink over TCP, TLS or mutual TLS.

Why the real daemon: the sink's framing, TLS and refusal handling are judged by what a
production receiver does with them (rsyslog is the reference syslog implementation and a
common SIEM relay), not by our own reading of RFC 5425. ``scripts/test.sh`` installs
``rsyslog`` and ``rsyslog-gnutls`` as root; when rsyslogd is missing the test is skipped on a
developer's machine but fails under CI (``tests/ci.py``).

Each server runs with its own config, work directory, pid file and output file under the
test's directory, listens on 127.0.0.1 on a port picked at run time, and loads ``imtcp`` only:
no ``imuxsock`` (``/dev/log``), no ``/etc/rsyslog.d``, nothing shared with a system rsyslog.
Received messages go through their own ruleset (rsyslogd's internal messages stay out) to
``received.log``, one line each: the raw message byte for byte (``rawmsg``; control
characters are not escaped on receive), then LF. Our messages never hold a raw LF, so each line
is one message.
"""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType
from typing import Literal

from tests.ci import require_binary, unavailable
from tests.prometheus import free_port
from tests.server_process import terminate
from tests.tls_helpers import Pki

AuthMode = Literal["anon", "x509/certvalid"]
INSTALL_HINT = "apt-get install rsyslog rsyslog-gnutls; scripts/test.sh does it as root"
_BIND_FAILED = "Could not create tcp listener"


def find_rsyslogd() -> str:
    """rsyslogd's path (it lives in /usr/sbin, often not on a user's PATH); skip or, under CI, fail."""
    return require_binary("rsyslogd", INSTALL_HINT, "/usr/sbin")


def _quote(value: object) -> str:
    text = str(value)
    if '"' in text or "\\" in text:
        raise ValueError(f"{text!r} cannot go into an rsyslog config string")
    return f'"{text}"'


class RsyslogServer:
    """A real ``rsyslogd -n`` for one test, used as a context manager.

    ``tls=None`` is plain TCP; otherwise ``gtls`` with ``pki``'s server certificate and the
    given auth mode: ``anon`` (clients are not asked for a certificate) or ``x509/certvalid``
    (clients must present one signed by ``pki.ca``). ``restart()`` stops and starts it again on
    the same port, appending to the same ``received.log``.
    """

    def __init__(
        self,
        directory: Path,
        *,
        tls: AuthMode | None = None,
        pki: Pki | None = None,
        max_message_size: int = 8192,
        start_timeout: float = 10,
        stop_timeout: float = 10,
    ) -> None:
        if tls is not None and pki is None:
            raise ValueError("a TLS server needs a pki (tests.tls_helpers.make_pki)")
        self.directory = Path(directory)
        self.tls = tls
        self.pki = pki
        self.max_message_size = max_message_size
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self.config_path = self.directory / "rsyslog.conf"
        self.work_dir = self.directory / "work"
        self.pid_path = self.directory / "rsyslogd.pid"
        self.output = self.directory / "received.log"
        self.log_path = self.directory / "rsyslogd.log"  # rsyslogd's own stdout and stderr
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None
        self._log_offset = 0

    def config(self) -> str:
        """The rsyslog.conf (RainerScript). ``global()`` comes first: maxMessageSize must be set
        before an input module loads."""
        settings = [
            f"workDirectory={_quote(self.work_dir)}",
            f'maxMessageSize="{self.max_message_size}"',
            'parser.escapeControlCharactersOnReceive="off"',
            'net.enableDNS="off"',
        ]
        module = 'module(load="imtcp")'
        if self.tls is not None:
            assert self.pki is not None
            settings += [
                f"defaultNetstreamDriverCAFile={_quote(self.pki.ca)}",
                f"defaultNetstreamDriverCertFile={_quote(self.pki.server_cert)}",
                f"defaultNetstreamDriverKeyFile={_quote(self.pki.server_key)}",
            ]
            module = (
                'module(load="imtcp" streamDriver.name="gtls" streamDriver.mode="1" '
                f"streamDriver.authMode={_quote(self.tls)})"
            )
        return "\n".join(
            [
                "global(" + " ".join(settings) + ")",
                module,
                'template(name="keylife_raw" type="list") { property(name="rawmsg") constant(value="\\n") }',
                'ruleset(name="keylife") {',
                f'  action(type="omfile" file={_quote(self.output)} template="keylife_raw" flushOnTXEnd="on")',
                "}",
                f'input(type="imtcp" address="127.0.0.1" port="{self.port}" ruleset="keylife")',
                "",
            ]
        )

    def start(self) -> RsyslogServer:
        """Start and wait until the port accepts connections; a new port unless restarting."""
        binary = find_rsyslogd()
        self.work_dir.mkdir(parents=True, exist_ok=True)
        fixed = self.port != 0
        for _attempt in range(1 if fixed else 3):
            if not fixed:
                self.port = free_port()
            self.config_path.write_text(self.config())
            self.pid_path.unlink(missing_ok=True)
            with self.log_path.open("ab") as log:
                self._log_offset = log.tell()
                self.process = subprocess.Popen(
                    [binary, "-n", "-f", str(self.config_path), "-i", str(self.pid_path)],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    cwd=self.directory,
                    start_new_session=True,  # a Ctrl-C in pytest reaches us, not the daemon
                )
            if self._wait_ready():
                return self
            self.stop()
            if _BIND_FAILED not in self.new_output():
                break
        tail = self.log_tail()
        if "lmnsd_gtls" in tail:
            unavailable(f"rsyslog's TLS driver is missing ({INSTALL_HINT}):\n{tail}")
        raise RuntimeError(f"rsyslogd did not listen on 127.0.0.1:{self.port}; its output:\n{tail}")

    def _wait_ready(self) -> bool:
        """Poll a TCP connect; False as soon as rsyslogd exits (bad config) or says it could not
        bind (it keeps running without the listener then), or on timeout.

        A bare connect to a TLS input makes rsyslogd log one aborted session; harmless."""
        assert self.process is not None
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None or _BIND_FAILED in self.new_output():
                return False
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return True
            except OSError:
                time.sleep(0.02)
        return False

    def stop(self) -> None:
        """SIGTERM (rsyslogd drains its queue and closes files), SIGKILL after ``stop_timeout``."""
        process, self.process = self.process, None
        terminate(process, self.stop_timeout)

    def restart(self) -> RsyslogServer:
        """Stop, then start again on the same port (a receiver restart as senders see it)."""
        self.stop()
        return self.start()

    def __enter__(self) -> RsyslogServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def lines(self) -> list[bytes]:
        """Every complete line received so far (without the LF)."""
        try:
            data = self.output.read_bytes()
        except FileNotFoundError:
            return []
        return data.split(b"\n")[:-1]

    def wait_for_lines(self, count: int, timeout: float = 10) -> list[bytes]:
        """Poll ``received.log`` until it holds at least ``count`` lines; on timeout fail with
        what arrived and rsyslogd's output."""
        deadline = time.monotonic() + timeout
        while True:
            lines = self.lines()
            if len(lines) >= count or time.monotonic() >= deadline:
                break
            time.sleep(0.02)
        if len(lines) < count:
            raise TimeoutError(
                f"{len(lines)} of {count} messages arrived within {timeout}s; last: {lines[-1:]!r}\n"
                f"rsyslogd output:\n{self.log_tail()}"
            )
        return lines

    def new_output(self) -> str:
        """What rsyslogd wrote since the last start."""
        try:
            with self.log_path.open("rb") as log:
                log.seek(self._log_offset)
                return log.read().decode(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no output)"
