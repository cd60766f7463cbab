"""Forwarder catch-up: how fast one sink ships a journal backlog of 1,000,000 entries.

Why it matters: after an outage, or when a new SIEM is connected, a sink starts from far
behind; its catch-up rate decides whether it is current again in a minute or in an hour.
The journal is built first (not timed): half sealed, half in the active segment, like the
verify benchmark. The forwarder runs in this process on one core (a ``SinkWorker``, exactly
what ``keylife forward`` runs); the receiver runs in its own process on the other core:

* ``loki_protobuf`` / ``loki_json``: ``bench/loki_receiver.py``, which decodes every push (snappy +
  protobuf, or JSON) and reads every entry's metadata before answering 204;
* ``syslog_tls`` / ``syslog_tcp``: a real rsyslogd (``tests/rsyslog.py``) writing every message
  to a file, with octet-counting framing, TLS verified against the test CA.

Timed from the worker's start to the cursor covering the whole journal (acknowledged).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from audit_forwarder.shipper.metrics import ForwardMetrics
from audit_forwarder.shipper.sink_types import SinkConfig, build_sink
from audit_forwarder.shipper.worker import SinkWorker
from bench.common import REPO, Metric, Stopwatch, cores, log, pin, result, scratch
from bench.verify_speed import build

NAME = "forward_catchup"
FULL = {"entries": 1_000_000, "sealed_share": 0.5, "segment_entries": 200_000, "append_batch": 1000, "timeout_s": 240}
QUICK = {"entries": 20_000, "sealed_share": 0.5, "segment_entries": 10_000, "append_batch": 1000, "timeout_s": 40}
TARGET = ">= 50000"


@contextmanager
def loki_receiver(tmp: Path, core: int, record_arrivals: bool = False) -> Iterator[str]:
    ready = tmp / "loki.ready"
    ready.unlink(missing_ok=True)
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.loki_receiver", "--ready-file", str(ready)]
        + (["--record-arrivals"] if record_arrivals else []),
        cwd=REPO,
        preexec_fn=lambda: os.sched_setaffinity(0, {core}),
    )
    try:
        deadline = time.monotonic() + 30
        while not ready.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the bench Loki receiver did not start")
            time.sleep(0.02)
        yield json.loads(ready.read_text())["url"]
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@contextmanager
def rsyslog_receiver(tmp: Path, core: int, tls: bool) -> Iterator[tuple[str, int, Path | None]]:
    from tests.rsyslog import RsyslogServer
    from tests.tls_helpers import make_pki

    pki = make_pki(tmp / f"pki-{tls}") if tls else None
    with RsyslogServer(tmp / f"rsyslog-{tls}", tls="anon" if tls else None, pki=pki) as server:
        assert server.process is not None
        os.sched_setaffinity(server.process.pid, {core})
        yield "127.0.0.1", server.port, pki.ca if pki else None


def _ship(journal_dir: Path, state: Path, config: SinkConfig, entries: int, timeout: float) -> dict[str, Any]:
    worker = SinkWorker(build_sink(config), config, journal_dir, state, ForwardMetrics(CollectorRegistry()))
    watch = Stopwatch()
    worker.start()
    deadline = time.monotonic() + timeout
    while worker.acknowledged < entries and time.monotonic() < deadline and not worker.failure:
        time.sleep(0.01)
    watch.stop()
    worker.stop()
    done = worker.acknowledged
    if worker.failure or done < entries:
        log(f"{NAME}: {config.name} stopped at {done} of {entries}: {worker.failure or worker.last_error}")
    return {
        "entries": done,
        "seconds": round(watch.wall, 2),
        "events_per_s": round(done / watch.wall) if watch.wall else 0,
        "cpu_us_per_event": round(watch.cpu / max(done, 1) * 1e6, 2),
        "complete": done >= entries,
    }


def _sinks(tmp: Path, receiver_core: int) -> dict[str, Callable[[], Any]]:
    return {
        "loki_protobuf": lambda: loki_receiver(tmp, receiver_core),
        "loki_json": lambda: loki_receiver(tmp, receiver_core),
        "syslog_tls": lambda: rsyslog_receiver(tmp, receiver_core, tls=True),
        "syslog_tcp": lambda: rsyslog_receiver(tmp, receiver_core, tls=False),
    }


def _config(kind: str, where: Any) -> SinkConfig:
    from pydantic import TypeAdapter

    common = {"name": kind.replace("_", "-"), "publish_checkpoints": True}
    if kind.startswith("loki"):
        raw = {"type": "loki", "url": where, "encoding": "json" if kind == "loki_json" else "protobuf"}
    else:
        host, port, ca = where
        raw = {"type": "syslog", "host": host, "port": port, "transport": "tls" if kind == "syslog_tls" else "tcp"}
        if ca is not None:
            raw["tls"] = {"ca_file": str(ca)}
    return TypeAdapter(SinkConfig).validate_python(common | raw)


def run(quick: bool) -> dict[str, Any]:
    import gc

    p = dict(QUICK if quick else FULL)
    forwarder_core, receiver_core = cores()
    pin(forwarder_core)
    figures: dict[str, Any] = {}
    with scratch(NAME) as tmp:
        built = Stopwatch()
        build(tmp, p)
        log(f"{NAME}: built {p['entries']} entries in {built.stop().wall:.0f} s")
        gc.collect()
        gc.freeze()  # as keylife forward does (keylife.process.tune_gc)
        gc.set_threshold(100_000, 50, 100)
        for kind, receiver in _sinks(tmp, receiver_core).items():
            with receiver() as where:
                figures[kind] = _ship(
                    tmp / "journal", tmp / f"state-{kind}", _config(kind, where), p["entries"], p["timeout_s"]
                )
            log(f"{NAME}: {kind}: {figures[kind]}")
    metrics = [
        Metric(
            f"forward_catchup_{kind}_events_per_s",
            f["events_per_s"],
            "events/s (1 core)",
            TARGET if kind in ("loki_protobuf", "syslog_tls") else None,
        )
        for kind, f in figures.items()
    ]
    return result(metrics, p, sinks=figures)
