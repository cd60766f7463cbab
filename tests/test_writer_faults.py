"""The journal writer under I/O faults: it acknowledges nothing that is not durable, says why it
is degraded (``/readyz``, a metric, one log line), and heals by itself once the cause is gone.

Each fault is as real as this machine allows: a full tmpfs under a real ``keylife serve``, a
real ``RLIMIT_NOFILE`` at the server's descriptor count, a real SIGKILL at every step of sealing.
EIO alone is injected in-process (see ``test_eio_on_fdatasync_...``).
"""

from __future__ import annotations

import errno
import logging
import os
import resource
import signal
import socket
import stat
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import orjson
import pytest
import yaml
from prometheus_client import CollectorRegistry, generate_latest

from keylife.api.auth import hash_token, new_token
from keylife.cli.writer_metrics import WriterCollector
from keylife.domain.events import Event
from keylife.ingest.ledger import Ledger, LedgerStopped
from keylife.journal import segments as segs
from keylife.journal.reader import iter_entries
from keylife.journal.verify import verify
from keylife.registry.projection import Registry
from tests.ci import require
from tests.journal_helpers import fill, open_journal, signer, usage_event
from tests.server import start_server
from tests.server_process import terminate
from tests.waiting import wait_until


def _need_root() -> None:
    require(os.geteuid() == 0, "mounting a tmpfs needs root")  # skips locally, fails under CI (tests/ci.py)


# ----- in-process: EIO on fdatasync --------------------------------------------------------------
class _DeadDevice:
    """fdatasync on the journal's log fails with EIO while ``active``, and the descriptor it failed
    on stays broken (write, ftruncate and fdatasync fail on it) until it is closed: the writer
    must reopen the file, and cannot count on cutting the failed bytes through the old fd."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, log_fd: Callable[[], int]) -> None:
        self.active = True
        self.broken: set[int] = set()
        self.log_fd = log_fd
        real = {name: getattr(os, name) for name in ("fdatasync", "write", "ftruncate", "close")}

        def eio() -> OSError:
            return OSError(errno.EIO, "Input/output error")

        def fdatasync(fd: int) -> None:
            if fd in self.broken or (self.active and fd == self.log_fd()):
                self.broken.add(fd)
                raise eio()
            if self.active:  # the whole device is gone: the probe fails too
                raise eio()
            real["fdatasync"](fd)

        def write(fd: int, data: bytes) -> int:
            if fd in self.broken:
                raise eio()
            return real["write"](fd, data)

        def ftruncate(fd: int, length: int) -> None:
            if fd in self.broken:
                raise eio()
            real["ftruncate"](fd, length)

        def close(fd: int) -> None:
            self.broken.discard(fd)
            real["close"](fd)

        for name, fn in (("fdatasync", fdatasync), ("write", write), ("ftruncate", ftruncate), ("close", close)):
            monkeypatch.setattr(os, name, fn)


def _ledger(tmp_path: Path) -> Ledger:
    ledger = Ledger(open_journal(tmp_path, signer(tmp_path)), Registry(tmp_path / "registry.sqlite"))
    ledger.start()
    return ledger


def _events(start: int, count: int) -> list[Event]:
    return [Event.model_validate(usage_event(n)) for n in range(start, start + count)]


def _scrape(ledger: Ledger) -> str:
    registry = CollectorRegistry()
    registry.register(WriterCollector(ledger.journal, ledger))
    return generate_latest(registry).decode()


def test_eio_on_fdatasync_cuts_the_tail_rereads_it_from_disk_and_recovers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """EIO cannot be produced on tmpfs (and a dm-error device needs more than CI has), so it is
    injected in-process: ``os.fdatasync`` fails with EIO on the journal's log descriptor, which
    then stays broken. The failed group's bytes stay in the file (the cut through the broken fd
    fails), as they would in a page cache that Linux no longer syncs. The writer must answer
    503, re-open the file, cut those bytes, re-check the rest against the chain, and serve again
    once fdatasync works, without a restart."""
    caplog.set_level(logging.INFO, logger="keylife")
    ledger = _ledger(tmp_path)
    assert ledger.submit(_events(0, 3)).result(5)[0].status == "accepted"
    wait_until(lambda: ledger.journal.last_checkpoint is not None, 5, "the first checkpoint")
    log_path = tmp_path / "journal/segments" / segs.seg_name(0, "log")
    durable = log_path.read_bytes()

    device = _DeadDevice(monkeypatch, lambda: ledger.journal._fd)
    with pytest.raises(LedgerStopped, match="Input/output error"):
        ledger.submit(_events(3, 5)).result(5)
    assert b'"ev-3"' in log_path.read_bytes()  # written, not durable, and the old fd cannot cut it
    assert not ledger.running and "journal writer degraded: EIO on fdatasync" in (ledger.problem or "")
    with pytest.raises(LedgerStopped, match="EIO"):
        ledger.submit(_events(8, 1)).result(5)
    scrape = _scrape(ledger)
    assert 'keylife_ingest_writer_degraded{cause="EIO"} 1.0' in scrape
    assert 'keylife_journal_io_failures_total{errno="EIO",operation="fdatasync"} 1.0' in scrape

    device.active = False  # the cause is gone
    wait_until(lambda: ledger.running, 10, "recovery without a restart")
    assert log_path.read_bytes() == durable  # the unacknowledged bytes are cut
    assert [o.seq for o in ledger.submit(_events(9, 2)).result(5)] == [3, 4]
    ledger.sync_registry().result(5)
    assert ledger.registry.seen("ev-3") is None  # never projected from the bytes that were not durable
    assert ledger.registry.seen("ev-9")[0] == 3
    assert 'keylife_ingest_writer_degraded{cause="none"} 0.0' in _scrape(ledger)
    ledger.stop()

    ids = [e.event["id"] for e in iter_entries(tmp_path / "journal")]
    assert ids == ["ev-0", "ev-1", "ev-2", "ev-9", "ev-10"]
    assert verify(tmp_path / "journal", [ledger.journal.signer.verifier]).ok
    messages = [r.getMessage() for r in caplog.records]
    assert sum("journal writer degraded: EIO on fdatasync" in m for m in messages) == 1, messages
    assert sum("journal writer recovered from EIO on fdatasync" in m for m in messages) == 1, messages


def test_a_durable_entry_that_reads_back_different_stops_the_writer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The re-read after a failed fdatasync is a real check: if what the disk holds for the
    durable entries no longer matches the chain, the writer stops (until an operator looks)
    instead of appending after it."""
    ledger = _ledger(tmp_path)
    ledger.submit(_events(0, 3)).result(5)
    wait_until(lambda: ledger.journal.last_checkpoint is not None, 5, "the first checkpoint")
    device = _DeadDevice(monkeypatch, lambda: ledger.journal._fd)
    with pytest.raises(LedgerStopped):
        ledger.submit(_events(3, 1)).result(5)
    log_path = tmp_path / "journal/segments" / segs.seg_name(0, "log")
    data = bytearray(log_path.read_bytes())
    data[data.index(b"ev-1") + 3] = ord("7")  # a durable entry changed on the disk
    with open(log_path, "r+b") as handle:
        handle.write(bytes(data))
    device.active = False
    wait_until(lambda: ledger.failure is not None, 10, "the writer to stop")
    assert "does not match" in ledger.failure and not ledger.running
    with pytest.raises(LedgerStopped, match="does not match"):
        ledger.submit(_events(5, 1)).result(5)
    ledger.stop()


# ----- SIGKILL at every step of sealing ----------------------------------------------------------
_SEAL_CALLS = ("open", "write", "fsync", "replace", "unlink")


def _child_seal_and_die(tmp_path: Path, kill_at: int, newer_segment: bool) -> None:
    """In a forked child: commit entries, roll, and SIGKILL ourselves at seal's ``kill_at``-th
    file system call. With ``newer_segment`` the seal runs in the background after a newer
    segment was started and committed. Exit 0 when sealing finished before ``kill_at``."""
    journal = open_journal(tmp_path, signer(tmp_path), seal_in_background=newer_segment)
    fill(journal, 30)
    main_done = threading.Event()
    main_thread = threading.get_ident()
    calls = [0]

    def wrap(name: str) -> None:
        real = getattr(os, name)

        def counted(*args: object, **kwargs: object) -> object:
            if newer_segment and threading.get_ident() == main_thread:
                return real(*args, **kwargs)
            main_done.wait()
            if calls[0] == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)
            calls[0] += 1
            return real(*args, **kwargs)

        setattr(os, name, counted)

    if not newer_segment:
        main_done.set()
    for name in _SEAL_CALLS:
        wrap(name)
    journal.roll()
    if newer_segment:
        fill(journal, 10, start=30)
        main_done.set()
    journal.wait_sealed()
    os._exit(0 if journal.unsealed == 0 else 3)


def _kill_points(tmp_root: Path, newer_segment: bool) -> Iterator[tuple[int, Path]]:
    """A fresh journal directory per kill point, each left as the SIGKILL at that point left it."""
    for kill_at in range(200):
        tmp_path = tmp_root / f"kill-{kill_at}"
        tmp_path.mkdir()
        pid = os.fork()
        if pid == 0:
            try:
                _child_seal_and_die(tmp_path, kill_at, newer_segment)
            finally:
                os._exit(2)
        _, status = os.waitpid(pid, 0)
        if os.WIFEXITED(status):
            assert os.WEXITSTATUS(status) == 0, f"child failed at kill point {kill_at}"
            assert kill_at > 5, "sealing made too few calls to be instrumented"
            return
        assert os.WTERMSIG(status) == signal.SIGKILL
        yield kill_at, tmp_path
    raise AssertionError("sealing never finished")


@pytest.mark.parametrize("newer_segment", [False, True], ids=["last-segment", "newer-segment-active"])
def test_sigkill_at_every_step_of_sealing_loses_nothing(tmp_path: Path, newer_segment: bool) -> None:
    acknowledged = [f"ev-{n}" for n in range(40 if newer_segment else 30)]
    points = 0
    for kill_at, journal_tmp in _kill_points(tmp_path, newer_segment):
        points += 1
        journal = open_journal(journal_tmp, signer(journal_tmp))
        seg_dir = journal_tmp / "journal/segments"
        assert not list(seg_dir.glob("*.tmp")), f"kill point {kill_at}: .tmp files left"
        for seg in segs.list_segments(seg_dir)[:-1]:
            assert seg.sealed and not seg.path("log").exists(), f"kill point {kill_at}: segment {seg} not sealed"
        fill(journal, 5, start=100)
        journal.roll()
        journal.close()
        ids = [e.event["id"] for e in iter_entries(journal_tmp / "journal")]
        assert ids == acknowledged + [f"ev-{n}" for n in range(100, 105)], f"kill point {kill_at}"
        report = verify(journal_tmp / "journal", [journal.signer.verifier])
        assert report.ok, (kill_at, [str(f) for f in report.faults])
    assert points >= 8


# ----- modes of sealed files ---------------------------------------------------------------------
def test_sealed_segment_files_are_0640(tmp_path: Path) -> None:
    old = os.umask(0o022)  # the usual umask: 0644 unless the code asks for less
    try:
        journal = open_journal(tmp_path)
        fill(journal, 20)
        journal.roll()
        fill(journal, 5, start=20)
        journal.close()
    finally:
        os.umask(old)
    seg_dir = tmp_path / "journal/segments"
    sealed = segs.list_segments(seg_dir)[0]
    assert sealed.sealed
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in seg_dir.iterdir()}
    modes |= {p.name: stat.S_IMODE(p.stat().st_mode) for p in (tmp_path / "journal").iterdir() if p.is_file()}
    assert {name for name in modes if name.endswith((".zst", ".idx"))} == {
        sealed.path("zst").name,
        sealed.path("idx").name,
    }
    assert all(mode == 0o640 for mode in modes.values()), {n: oct(m) for n, m in modes.items()}


def test_a_failed_seal_is_retried_and_the_entries_stay_readable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Sealing fails (here: ENOSPC writing the .zst, injected in-process) and is retried by
    ``tick``; meanwhile the closed ``.log`` is read as usual and the failure is counted."""
    journal = open_journal(tmp_path)
    fill(journal, 20)
    real_open = os.open

    def no_space(path: object, flags: int, mode: int = 0o777, **kwargs: object) -> int:
        if str(path).endswith(".zst.tmp"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_open(path, flags, mode, **kwargs)

    monkeypatch.setattr(os, "open", no_space)
    journal.roll()
    assert journal.unsealed == 1 and journal.seal_failure is not None
    assert journal.io_failures == {("seal", "ENOSPC"): 1}
    assert "sealing segment 0 failed with ENOSPC" in caplog.text
    fill(journal, 3, start=20)
    assert [e.event["id"] for e in iter_entries(tmp_path / "journal")][-4:] == ["ev-19", "ev-20", "ev-21", "ev-22"]
    monkeypatch.undo()
    journal.tick(now=journal._seal_retry_at + 0.001)
    assert journal.unsealed == 0 and journal.seal_failure is None
    assert segs.list_segments(tmp_path / "journal/segments")[0].sealed
    journal.close()
    assert verify(tmp_path / "journal", [journal.signer.verifier]).ok


# ----- a real keylife serve: a full file system, too few descriptors ---------------------------
def _write_config(tmp_path: Path, data_dir: Path, token: str, **journal: object) -> Path:
    config = tmp_path / "keylife.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "data_dir": str(data_dir),
                "listen": {"host": "127.0.0.1", "port": 0},
                "journal": {"origin": "test.keylife/faults", **journal},
                "api": {"tokens": [{"name": "p", "sha256": hash_token(token), "scopes": ["ingest", "read"]}]},
                "logging": {"level": "INFO", "format": "text"},
            }
        )
    )
    return config


def _batch(prefix: str, start: int, count: int) -> bytes:
    return b"\n".join(
        orjson.dumps(usage_event(n) | {"id": f"{prefix}-{n}", "key_id": f"k-{n % 40}"})
        for n in range(start, start + count)
    )


class _Producer:
    """Posts NDJSON batches with fresh ids and keeps what was answered 200 and what 503."""

    def __init__(self, client: httpx.Client, prefix: str) -> None:
        self.client, self.prefix, self.n = client, prefix, 0
        self.acked: set[str] = set()
        self.refused: set[str] = set()
        self.last: httpx.Response | None = None

    def post(self, count: int) -> httpx.Response:
        ids = {f"{self.prefix}-{n}" for n in range(self.n, self.n + count)}
        response = self.client.post(
            "/v1/events", content=_batch(self.prefix, self.n, count), headers={"Content-Type": "application/x-ndjson"}
        )
        self.n += count
        if response.status_code == 200:
            self.acked |= {r["id"] for r in response.json()["results"] if r["status"] in ("accepted", "duplicate")}
        else:
            assert response.status_code == 503, response.text
            self.refused |= ids
        self.last = response
        return response


def _scraped(client: httpx.Client, series: str) -> str:
    """A scrape showing ``series`` (scrapes may be answered from a cache a moment old)."""
    found: list[str] = []

    def scrape() -> bool:
        found[:] = [client.get("/metrics").text]
        return series in found[0]

    wait_until(scrape, 10, f"{series} in /metrics")
    return found[0]


def _log_count(log_path: Path, text: str) -> int:
    return sum(text in line for line in log_path.read_text(errors="replace").splitlines())


def _journal_ids(journal_dir: Path) -> set[str]:
    return {e.event["id"] for e in iter_entries(journal_dir)}


def _keylife_verify(journal_dir: Path) -> subprocess.CompletedProcess[str]:
    """Local consistency after the faults (no outside anchor exists in these tests)."""
    key = str(journal_dir / "verifier.key")
    return subprocess.run(
        [sys.executable, "-m", "keylife.cli", "verify", str(journal_dir), "--key", key, "--allow-unanchored"],
        capture_output=True,
        text=True,
        timeout=60,
    )


def _fill_up(path: Path) -> None:
    with open(path, "wb", buffering=0) as filler:  # unbuffered: no leftover for close() to fail on
        chunk = bytes(64 * 1024)
        try:
            while True:
                filler.write(chunk)
                filler.flush()
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
        try:  # the last bytes a smaller write still fits in
            while True:
                os.write(filler.fileno(), bytes(512))
        except OSError as exc:
            assert exc.errno == errno.ENOSPC


def test_a_full_file_system_degrades_ingest_and_it_heals_when_space_returns(tmp_path: Path) -> None:
    _need_root()
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    mount = ["mount", "-t", "tmpfs", "-o", "size=4m,mode=0700", "tmpfs", str(data_dir)]
    mounted = subprocess.run(mount, capture_output=True, text=True)
    require(mounted.returncode == 0, f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    proc = None
    try:
        token = new_token()
        ready = tmp_path / "ready.json"
        proc, url = start_server(_write_config(tmp_path, data_dir, token), ready)
        server_log = ready.with_suffix(".stderr")
        headers = {"Authorization": f"Bearer {token}"}
        with httpx.Client(base_url=url, headers=headers, timeout=10) as client:
            producer = _Producer(client, "p")
            assert producer.post(20).status_code == 200
            _fill_up(data_dir / "filler")
            for _ in range(200):
                if producer.post(50).status_code == 503:
                    break
            else:
                raise AssertionError("ingest never failed on a full file system")
            refused = producer.last
            assert refused is not None and refused.headers.get("retry-after")
            assert "ENOSPC" in refused.json()["detail"] and "nothing was written" in refused.json()["detail"]
            ready_answer = client.get("/readyz")
            assert ready_answer.status_code == 503
            assert "journal writer degraded: ENOSPC on" in ready_answer.json()["detail"]
            assert "retrying" in ready_answer.json()["detail"]
            assert producer.post(5).status_code == 503  # still full: nothing is taken
            metrics = _scraped(client, 'keylife_ingest_writer_degraded{cause="ENOSPC"} 1.0')
            assert 'errno="ENOSPC"' in metrics and "keylife_ingest_writer_up 0.0" in metrics

            (data_dir / "filler").unlink()  # the cause goes away; nobody restarts anything
            wait_until(lambda: client.get("/readyz").status_code == 200, 20, "/readyz 200 after space returned")
            assert producer.post(30).status_code == 200
            metrics = _scraped(client, 'keylife_ingest_writer_degraded{cause="none"} 0.0')
            assert "keylife_ingest_writer_up 1.0" in metrics
        assert _log_count(server_log, "journal writer degraded: ENOSPC") == 1, server_log.read_text()[-3000:]
        assert _log_count(server_log, "journal writer recovered from ENOSPC") == 1
        terminate(proc, 20)
        assert proc.returncode == 0, server_log.read_text()[-3000:]
        result = _keylife_verify(data_dir / "journal")
        assert result.returncode == 0, result.stdout + result.stderr
        stored = _journal_ids(data_dir / "journal")
        assert producer.acked <= stored, f"{len(producer.acked - stored)} acknowledged events lost"
        assert not producer.refused & stored, f"{len(producer.refused & stored)} refused events were stored"
        assert len(producer.acked) >= 50 and len(producer.refused) >= 55
    finally:
        terminate(proc, 10)
        subprocess.run(["umount", "-l", str(data_dir)], check=False)


def test_too_few_file_descriptors_degrade_the_writer_until_connections_close(tmp_path: Path) -> None:
    """A real RLIMIT_NOFILE, set on the running server (prlimit), and idle connections that take
    every descriptor left: the next checkpoint cannot open its file (EMFILE). When the
    connections close, the writer recovers by itself."""
    token = new_token()
    ready = tmp_path / "ready.json"
    proc, url = start_server(_write_config(tmp_path, tmp_path / "data", token), ready)
    server_log = ready.with_suffix(".stderr")
    sockets: list[socket.socket] = []
    try:
        headers = {"Authorization": f"Bearer {token}"}
        with httpx.Client(base_url=url, headers=headers, timeout=10) as client:  # one kept-alive connection
            producer = _Producer(client, "e")
            assert producer.post(10).status_code == 200
            wait_until(lambda: client.get("/readyz").json()["journal_size"] >= 10, 5, "the first entries")

            def open_fds() -> int:
                return len(os.listdir(f"/proc/{proc.pid}/fd"))

            limit = open_fds() + 16
            resource.prlimit(proc.pid, resource.RLIMIT_NOFILE, (limit, limit))
            host, port = url.removeprefix("http://").split(":")
            for _ in range(60):
                sockets.append(socket.create_connection((host, int(port))))
            wait_until(lambda: open_fds() >= limit - 1, 10, "the server to run out of descriptors")
            producer.post(5)  # its fd is open: this may still be written; its checkpoint cannot be
            wait_until(lambda: client.get("/readyz").status_code == 503, 10, "/readyz 503")
            detail = client.get("/readyz").json()["detail"]
            assert "journal writer degraded: EMFILE on checkpoint" in detail, detail
            assert producer.post(5).status_code == 503
            assert "EMFILE" in producer.last.json()["detail"]

            for sock in sockets:
                sock.close()
            sockets.clear()
            wait_until(lambda: client.get("/readyz").status_code == 200, 20, "recovery once the connections closed")
            assert producer.post(10).status_code == 200
            metrics = _scraped(client, 'keylife_ingest_writer_degraded{cause="none"} 0.0')
            assert 'keylife_journal_io_failures_total{errno="EMFILE",operation="checkpoint"}' in metrics
        assert _log_count(server_log, "journal writer degraded: EMFILE on checkpoint") == 1, server_log.read_text()[
            -3000:
        ]
        assert _log_count(server_log, "journal writer recovered from EMFILE on checkpoint") == 1
        terminate(proc, 20)
        result = _keylife_verify(tmp_path / "data/journal")
        assert result.returncode == 0, result.stdout + result.stderr
        stored = _journal_ids(tmp_path / "data/journal")
        assert producer.acked <= stored and not producer.refused & stored
    finally:
        for sock in sockets:
            sock.close()
        terminate(proc, 10)
