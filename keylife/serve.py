"""``keylife serve``: the whole pipeline in one process on embedded defaults."""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import signal
import socket
import ssl
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import uvicorn

from keylife import logs
from keylife.api.app import create_app
from keylife.config import Config
from keylife.process import tune_gc
from keylife.runtime import Runtime

log = logging.getLogger("keylife.serve")


def bind(host: str, port: int) -> socket.socket:
    """Bind before uvicorn starts, so port 0 works and the real port can be printed."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def serve(config: Config, *, demo: bool, ready_file: Path | None = None) -> int:
    logs.setup(config.logging.level, config.logging.format)
    rt = Runtime.start(config)
    tune_gc()
    for note in rt.notes:
        log.info(note)
    sock = bind(config.listen.host, config.listen.port)
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    tls = config.listen.tls_cert is not None
    base = f"{'https' if tls else 'http'}://{shown}:{port}"
    if not tls and not ipaddress.ip_address(host).is_loopback:
        log.warning(
            "serving plain HTTP beyond loopback: bearer tokens cross the network in clear; "
            "set listen.tls_cert and listen.tls_key"
        )
    app = create_app(rt)
    stop = threading.Event()
    server = _Server(
        uvicorn.Config(
            app,
            log_config=logs.uvicorn_log_config(),
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=5,
            ssl_certfile=config.listen.tls_cert,
            ssl_keyfile=config.listen.tls_key,
        ),
        before_shutdown=stop.set,
    )
    demo_thread = None
    if demo or config.demo.enabled:
        demo_thread = _start_demo(rt, base, stop)
    _banner(rt, base, demo_thread is not None)
    if ready_file:
        tmp = ready_file.with_name(ready_file.name + ".tmp")
        tmp.write_text(json.dumps({"url": base, "pid": os.getpid()}))
        tmp.replace(ready_file)  # whole or absent: a watcher never reads half of it
    # uvicorn re-raises the signal that stopped it once it has shut down; with these no-op
    # handlers that re-raise returns here, so the journal is checkpointed and closed below.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: None)
    try:
        server.run(sockets=[sock])
    finally:
        stop.set()
        if demo_thread:
            demo_thread.join(timeout=10)
        rt.close()
        log.info("stopped; journal checkpointed and closed", extra={"journal_size": rt.journal.size})
    return 0


class _Server(uvicorn.Server):
    """uvicorn, but the demo feeder is told to stop before the listener closes."""

    def __init__(self, config: uvicorn.Config, before_shutdown: Callable[[], None]) -> None:
        super().__init__(config)
        self.before_shutdown = before_shutdown

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        self.before_shutdown()
        await super().shutdown(sockets)


def _pinned(cert: Path) -> ssl.SSLContext:
    """For the in-process demo talking to its own server over loopback: trust exactly the
    server's certificate (pinned, whatever issued it and whatever names it carries)."""
    context = ssl.create_default_context(cafile=str(cert))
    context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    context.check_hostname = False  # the pin replaces the name check; verification stays on
    return context


def _start_demo(rt: Runtime, base: str, stop: threading.Event) -> threading.Thread:
    from keylife.demo import DemoConfig, run_live

    if rt.local_token is None:
        raise SystemExit("--demo needs the local admin token; configured tokens are not readable to keylife")
    d = rt.config.demo
    config = DemoConfig(nodes=d.nodes, keys=d.keys, seed=d.seed)
    cert = rt.config.listen.tls_cert
    verify: ssl.SSLContext | bool = _pinned(cert) if cert else True
    thread = threading.Thread(
        target=run_live,
        args=(base, rt.local_token, config),
        kwargs={"stop": stop, "verify": verify},
        name="keylife-demo",
        daemon=True,
    )
    thread.start()
    return thread


def _banner(rt: Runtime, base: str, demo: bool) -> None:
    lines = [
        f"keylife serving on {base}",
        f"  ingest        POST {base}/v1/events   (NDJSON or JSON, bearer token, scope 'ingest')",
        f"  keys          GET  {base}/v1/keys",
        f"  API docs           {base}/docs   (OpenAPI: {base}/openapi.json)",
        f"  health             {base}/healthz   {base}/readyz",
        f"  metrics            {base}/metrics",
        f"  journal            {rt.config.journal_dir}   (verifier key: {rt.config.journal_dir / 'verifier.key'})",
    ]
    if rt.local_token is not None:
        lines.append(f"  admin token        in {rt.config.token_file} (0600)")
    if demo:
        lines.append("  demo network       feeding simulated DataFold nodes into the API")
    print("\n".join(lines), file=sys.stdout, flush=True)
