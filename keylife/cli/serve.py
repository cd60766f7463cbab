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
from typing import Any

import uvicorn

from keylife.api.app import create_app
from keylife.api.http_guard import Guard, listener_limits, protocol_class, set_nodelay
from keylife.api.metrics_app import metrics_app
from keylife.cli.config import Config
from keylife.cli.runtime import Runtime
from keylife.common import logs
from keylife.common.process import tune_gc
from keylife.ingest.telemetry import Telemetry

log = logging.getLogger("keylife.serve")


def bind(host: str, port: int) -> socket.socket:
    """Bind before uvicorn starts, so port 0 works and the real port can be printed.

    The socket is made with IPPROTO_TCP (not 0): asyncio sets TCP_NODELAY only on accepted sockets
    whose protocol says TCP, and Linux copies the listener's TCP_NODELAY to them as well (the
    protocol sets it once more per connection: ``keylife.http_guard.set_nodelay``).
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    set_nodelay(sock)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def serve(config: Config, *, demo: bool, ready_file: Path | None = None) -> int:
    logs.setup(config.logging.level, config.logging.format)
    try:  # bind first: a serve that cannot listen creates no signing key, token or journal
        sock = bind(config.listen.host, config.listen.port)
    except OSError as exc:  # port in use, a host that does not resolve or is not ours: one line, no traceback
        where = f"{config.listen.host}:{config.listen.port}"
        raise OSError(exc.errno, f"cannot listen on {where}: {exc.strerror or exc}") from None
    metrics_sock = _bind_metrics(config, sock)
    try:
        rt = Runtime.start(config)
    except BaseException:
        sock.close()
        if metrics_sock is not None:
            metrics_sock.close()
        raise
    tune_gc()
    for note in rt.notes:
        log.info(note)
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
    logs.RATE_LIMIT.counted = lambda name: rt.telemetry.log_lines_suppressed.labels(name).inc()
    server = _Server(uvicorn_config(app, config, rt.telemetry), before_shutdown=stop.set)
    metrics_url = f"{base}/metrics"
    if metrics_sock is not None:
        metrics_config = uvicorn_config(metrics_app(rt), config, rt.telemetry, tls=False)
        server.metrics = (uvicorn.Server(metrics_config), metrics_sock)
        metrics_host, metrics_port = metrics_sock.getsockname()[:2]
        metrics_url = f"http://{f'[{metrics_host}]' if ':' in metrics_host else metrics_host}:{metrics_port}/metrics"
    demo_thread = None
    if demo or config.demo.enabled:
        demo_thread = _start_demo(rt, base, stop)
    _banner(rt, base, metrics_url, demo_thread is not None)
    if ready_file:
        tmp = ready_file.with_name(ready_file.name + ".tmp")
        tmp.write_text(json.dumps({"url": base, "metrics_url": metrics_url, "pid": os.getpid()}))
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


def uvicorn_config(app: Any, config: Config, telemetry: Telemetry, tls: bool = True) -> uvicorn.Config:
    """uvicorn as keylife runs it: guarded h11 protocol (connection cap, idle/header/body timeouts,
    TCP_NODELAY) and proxy headers believed only from ``listen.trusted_proxies``."""
    listen = config.listen
    cap, backlog = listener_limits(listen.max_connections)
    guard = Guard(
        max_connections=cap,
        idle_timeout=listen.idle_timeout_seconds,
        header_timeout=listen.header_timeout_seconds,
        body_timeout=listen.body_timeout_seconds,
        closed=lambda reason: telemetry.connections_closed.labels(reason).inc(),
    )
    return uvicorn.Config(
        app,
        http=protocol_class(guard),
        log_config=logs.uvicorn_log_config(),
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=5,
        backlog=backlog,
        # the guard closes idle connections itself (and counts them); uvicorn's timer is a backstop
        timeout_keep_alive=int(listen.idle_timeout_seconds) + 2,
        proxy_headers=bool(listen.trusted_proxies),
        forwarded_allow_ips=list(listen.trusted_proxies) or None,
        ssl_certfile=listen.tls_cert if tls else None,
        ssl_keyfile=listen.tls_key if tls else None,
    )


def _bind_metrics(config: Config, api: socket.socket) -> socket.socket | None:
    where = config.exporter.metrics_listen
    if where is None:
        return None
    try:
        return bind(where.host, where.port)
    except OSError as exc:
        api.close()
        message = f"cannot listen on {where.host}:{where.port} (exporter.metrics_listen): {exc.strerror or exc}"
        raise OSError(exc.errno, message) from None


class _Server(uvicorn.Server):
    """uvicorn, but the demo feeder is told to stop before the listener closes, and the metrics
    listener (a second uvicorn server: plain HTTP, its own app) runs in the same event loop, so
    its scrapes share the runtime's loop-bound state."""

    def __init__(self, config: uvicorn.Config, before_shutdown: Callable[[], None]) -> None:
        super().__init__(config)
        self.before_shutdown = before_shutdown
        self.metrics: tuple[uvicorn.Server, socket.socket] | None = None

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.metrics is not None:
            server, sock = self.metrics
            server.config.load()
            server.lifespan = server.config.lifespan_class(server.config)
            await server.startup(sockets=[sock])

    async def on_tick(self, counter: int) -> bool:
        if self.metrics is not None:
            await self.metrics[0].on_tick(counter)  # its Date header
        return await super().on_tick(counter)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        self.before_shutdown()
        if self.metrics is not None:
            server, sock = self.metrics
            await server.shutdown(sockets=[sock])
        await super().shutdown(sockets)


def _pinned(cert: Path) -> ssl.SSLContext:
    """For the in-process demo talking to its own server over loopback: trust exactly the
    server's certificate (pinned, whatever issued it and whatever names it carries)."""
    context = ssl.create_default_context(cafile=str(cert))
    context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    context.check_hostname = False  # the pin replaces the name check; verification stays on
    return context


def _start_demo(rt: Runtime, base: str, stop: threading.Event) -> threading.Thread:
    from keylife.demo.network import DemoConfig, run_live

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


def _banner(rt: Runtime, base: str, metrics_url: str, demo: bool) -> None:
    lines = [
        f"keylife serving on {base}",
        f"  ingest        POST {base}/v1/events   (NDJSON or JSON, bearer token, scope 'ingest')",
        f"  keys          GET  {base}/v1/keys",
        f"  API docs           {base}/docs   (OpenAPI: {base}/openapi.json)",
        f"  health             {base}/healthz   {base}/readyz",
        f"  metrics            {metrics_url}",
        f"  journal            {rt.config.journal_dir}   (verifier key: {rt.config.journal_dir / 'verifier.key'})",
    ]
    if rt.local_token is not None:
        lines.append(f"  admin token        in {rt.config.token_file} (0600)")
    if demo:
        lines.append("  demo network       feeding simulated DataFold nodes into the API")
    print("\n".join(lines), file=sys.stdout, flush=True)
