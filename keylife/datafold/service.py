"""Run the configured DataFold sources inside ``keylife serve``: one thread per source.

All sources share one adapter (behind a lock), because the adapter dedupes a node's crypto
audit events read through two ways (its log file and its HTTP log stream) and aggregates usage
per node and key across them. Events go straight to this process's ledger (``LedgerEventSink``),
validated as the HTTP ingest validates them.

Stop the service before the ledger: a runner whose sink fails keeps its position and retries,
so stopping the ledger first only costs a few warnings, but stopping in order costs none.
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from keylife.config import Config, DataFoldConfig
from keylife.datafold.contract import Line
from keylife.datafold.runner import Adapter, Counters, PollRunner, Runner, file_runner, sse_runner, state_file
from keylife.datafold.sinks import LedgerEventSink
from keylife.ingest.ledger import Ledger

log = logging.getLogger("keylife.datafold.service")


class LockedAdapter:
    """One adapter for several runner threads: each call holds the lock (calls are short)."""

    def __init__(self, adapter: Adapter) -> None:
        self.adapter = adapter
        self._lock = threading.Lock()

    def feed(self, line: Line) -> list[dict[str, Any]]:
        with self._lock:
            return self.adapter.feed(line)

    def flush(self, upto: Any = None) -> list[dict[str, Any]]:
        with self._lock:
            return self.adapter.flush(upto)

    def safe_position(self, source: str) -> int | None:
        with self._lock:
            return self.adapter.safe_position(source)

    def status(
        self, answer: dict[str, Any], client_id: str, node: str | None, http_status: int | None = None
    ) -> list[dict[str, Any]]:
        with self._lock:
            return self.adapter.status(answer, client_id, node, http_status)

    def close(self) -> None:
        closer = getattr(self.adapter, "close", None)
        if closer is not None:
            with self._lock:
                closer()


def default_adapter(config: DataFoldConfig, state_dir: Path | None) -> Adapter:
    """The real mapping; with a state directory, rejected lines and the key status memory are
    kept there (beside the read positions), else only counted and logged / held in memory."""
    from keylife.datafold.mapping import Adapter as MappingAdapter

    if state_dir is not None:
        state_dir.mkdir(parents=True, exist_ok=True)
    return MappingAdapter(
        None if state_dir is None else state_dir / "rejects.ndjson",
        None if state_dir is None else state_dir / "key-status.json",
        usage_interval_seconds=config.usage_interval_seconds,
    )


@dataclass
class DataFoldService:
    """The running sources; ``counters()`` for metrics and logs, ``stop()`` to end them."""

    stop_event: threading.Event
    runners: dict[str, Runner | PollRunner] = field(default_factory=dict)
    threads: list[threading.Thread] = field(default_factory=list)
    adapter: LockedAdapter | None = None

    def counters(self) -> dict[str, Counters]:
        return {name: runner.counters for name, runner in self.runners.items()}

    def stop(self, timeout: float = 10.0) -> None:
        self.stop_event.set()
        for runner in list(self.runners.values()):
            if isinstance(runner, Runner):
                closer = getattr(runner.source, "client", None)
                if closer is not None:
                    closer.close()  # wake an SSE read blocked on a quiet stream
        for thread in self.threads:
            thread.join(timeout)
            if thread.is_alive():
                log.warning("datafold source did not stop in time", extra={"thread": thread.name})
        if self.adapter is not None:
            self.adapter.close()


def start_datafold(
    config: Config,
    ledger: Ledger,
    *,
    adapter_factory: Callable[[DataFoldConfig, Path | None], Adapter] | None = None,
    runner_options: dict[str, Any] | None = None,
    restart_seconds: float = 30.0,
) -> DataFoldService:
    """Start a thread per configured source (none configured: an idle handle)."""
    df = config.datafold
    stop = threading.Event()
    service = DataFoldService(stop)
    if not (df.files or df.sse or df.poll):
        return service
    state_dir = config.datafold_state_dir
    adapter = LockedAdapter((adapter_factory or default_adapter)(df, state_dir))
    service.adapter = adapter
    sink = LedgerEventSink(ledger)
    options = {"flush_seconds": df.usage_interval_seconds, **(runner_options or {})}
    factories: dict[str, Callable[[], Runner | PollRunner]] = {}
    for f in df.files:
        state = state_file(state_dir, f"file:{f.path}")
        factories[f"file:{f.path}"] = partial(
            file_runner, f.path, adapter, sink, state, True, stop, node=f.node, **options
        )
    for e in df.sse:
        state = state_file(state_dir, f"sse:{e.url}")
        auth = node_auth(state_dir, e.sign, e.client_id)
        factories[f"sse:{e.url}"] = partial(
            sse_runner, e.url, adapter, sink, state, stop, node=e.node, sse_options={"auth": auth}, **options
        )
    for p in df.poll:
        factories[f"poll:{p.url}"] = partial(
            PollRunner, p.url, p.clients, adapter, sink, node=p.node, interval=p.interval_seconds, stop=stop,
            auth=node_auth(state_dir, p.sign, p.client_id), system_key=p.system_key, rotations=p.rotations,
        )  # fmt: skip
    for name, factory in factories.items():
        thread = threading.Thread(
            target=_run, args=(service, name, factory, restart_seconds), name=f"datafold {name}", daemon=True
        )
        thread.start()
        service.threads.append(thread)
    log.info("datafold sources started", extra={"sources": sorted(factories)})
    return service


def node_auth(state_dir: Path | None, sign: str, client_id: str) -> Any:
    """A source's signer (``signing.NodeAuth``): keylife's client key is one 0600 file per client
    id in the state directory, shared by the sources that use that id; made only when needed."""
    from keylife.datafold.signing import NodeAuth

    directory = Path(state_dir) if state_dir is not None else Path("data") / "datafold"
    return NodeAuth(directory / "client-keys" / f"{client_id}.pem", client_id, sign)  # type: ignore[arg-type]


def _run(service: DataFoldService, name: str, factory: Callable[[], Runner | PollRunner], pause: float) -> None:
    """Run one source until the service stops. A source that fails (an unreadable file, a bug)
    is logged loudly and started afresh from its saved position after ``pause``; the rest of
    keylife keeps serving either way."""
    counters = None
    while not service.stop_event.is_set():
        runner = factory()
        if counters is not None:
            runner.counters = counters  # one running tally per source across restarts
        counters = runner.counters
        service.runners[name] = runner
        try:
            runner.run()
        except Exception:
            log.exception("datafold source failed; restarting it", extra={"source": name, "pause": pause})
            service.stop_event.wait(pause)


def run_once_from_cli(
    *,
    url: str,
    token: str,
    file: Path | None = None,
    follow: bool = False,
    sse: str | None = None,
    poll: str | None = None,
    clients: list[str] | None = None,
    node: str | None = None,
    state_dir: Path | None = None,
    interval: float = 60.0,
    sign: str = "auto",
    client_id: str = "keylife",
    system_key: bool = False,
    rotations: bool = False,
    adapter_factory: Callable[[DataFoldConfig, Path | None], Adapter] | None = None,
) -> int:
    """``keylife ingest datafold``: one source, sent to a keylife server over HTTP. A file read
    without ``follow`` ends at its end; everything else runs until SIGINT or SIGTERM. Prints the
    counters as JSON; exits 1 when keylife could not take the events (the position stays)."""
    import signal

    import orjson

    from keylife.common import logs
    from keylife.datafold.sinks import HttpEventSink, SinkRejected, SinkUnavailable

    logs.setup("INFO", "json")  # retries, rotations and rejected lines, with their details, on stderr
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    sink = HttpEventSink(url, token, stop=stop)
    adapter = (adapter_factory or default_adapter)(DataFoldConfig(), state_dir)
    runner: Runner | PollRunner
    if file is not None:
        path = file.absolute()
        state = state_file(state_dir, f"file:{path}") if state_dir else None
        runner = file_runner(path, adapter, sink, state, follow, stop, node=node)
    elif sse is not None:
        state = state_file(state_dir, f"sse:{sse}") if state_dir else None
        options = {"auth": node_auth(state_dir, sign, client_id)}
        runner = sse_runner(sse, adapter, sink, state, stop, node=node, sse_options=options)
    else:
        assert poll is not None
        runner = PollRunner(poll, clients or [], adapter, sink, node=node, interval=interval, stop=stop,
                            auth=node_auth(state_dir, sign, client_id), system_key=system_key,
                            rotations=rotations)  # fmt: skip
    code = 0
    try:
        runner.run()
    except (SinkRejected, SinkUnavailable, OSError) as exc:
        print(f"keylife ingest datafold: {exc}", file=sys.stderr)
        code = 1
    finally:
        sink.close()
        closer = getattr(adapter, "close", None)
        if closer is not None:
            closer()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    counts = getattr(adapter, "counts", None)  # the mapping's tally: lines by shape, noise, rejected lines
    summary = runner.counters.snapshot() | sink.stats | ({"adapter": dict(counts)} if counts is not None else {})
    print(orjson.dumps(summary).decode())
    return code
