"""What a scrape may cost, and where /metrics is served (issue 10, items 10 and 18)."""

from __future__ import annotations

import asyncio
import json
import ssl
import time
from pathlib import Path

import httpx
import orjson
import pytest
from prometheus_client import generate_latest

from keylife.api.scrapes import ScrapeCache
from tests.server import live_server, start_server
from tests.server_process import terminate
from tests.test_http_guard import metric, write_config
from tests.tls_helpers import make_server_cert
from tests.waiting import wait_until

NOW = "2026-11-28T10:00:00Z"
STANDARD = ("process_start_time_seconds ", "process_resident_memory_bytes ", "python_info{")


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_concurrent_scrapes_share_one_render_and_a_fresh_body_is_reused() -> None:
    clock = Clock()
    renders: list[float] = []
    gate = asyncio.Event()

    async def render() -> bytes:
        renders.append(clock.now)
        await gate.wait()
        return f"render {len(renders)}".encode()

    async def scenario() -> None:
        cache = ScrapeCache(render, max_age=1.0, clock=clock)
        first = [asyncio.ensure_future(cache.get()) for _ in range(20)]
        await asyncio.sleep(0)
        gate.set()
        assert {await f for f in first} == {b"render 1"}  # twenty scrapes, one render
        clock.now += 0.9
        assert await cache.get() == b"render 1"  # younger than max_age: reused
        clock.now += 0.2
        assert await cache.get() == b"render 2"  # older: rendered again
        assert renders == pytest.approx([100.0, 101.1])

    asyncio.run(scenario())


def test_with_max_age_zero_every_scrape_gets_a_render_begun_after_it_arrived() -> None:
    clock = Clock()
    renders = 0
    release = asyncio.Event()

    async def render() -> bytes:
        nonlocal renders
        renders += 1
        number = renders
        clock.now += 1
        if number == 1:
            await release.wait()
        return f"render {number}".encode()

    async def scenario() -> None:
        cache = ScrapeCache(render, max_age=0.0, clock=clock)
        early = asyncio.ensure_future(cache.get())
        await asyncio.sleep(0)  # render 1 is under way
        late = [asyncio.ensure_future(cache.get()) for _ in range(5)]  # arrive during render 1
        await asyncio.sleep(0)
        release.set()
        assert await early == b"render 1"
        assert {await f for f in late} == {b"render 2"}  # not render 1 (begun before them): one more, shared
        assert renders == 2

    asyncio.run(scenario())


def test_a_failed_render_is_not_cached() -> None:
    calls = 0

    async def render() -> bytes:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("registry busy")
        return b"ok"

    async def scenario() -> None:
        cache = ScrapeCache(render, max_age=10.0)
        with pytest.raises(RuntimeError, match="registry busy"):
            await cache.get()
        assert await cache.get() == b"ok"

    asyncio.run(scenario())


def test_a_separate_metrics_listener_serves_plain_http_beside_a_tls_api(tmp_path: Path) -> None:
    """The API over TLS, /metrics on its own plain-HTTP port (and only there); scrapes within
    ``scrape_cache_seconds`` get the same body, and an event ingested meanwhile shows after it."""
    ca, cert, key = make_server_cert(tmp_path / "tls")
    token = "kl_" + "m" * 43
    config = write_config(
        tmp_path,
        token,
        listen={"tls_cert": str(cert), "tls_key": str(key)},
        exporter={"metrics_listen": {"host": "127.0.0.1", "port": 0}, "scrape_cache_seconds": 2.5},
    )
    trust = ssl.create_default_context(cafile=str(ca))
    proc, url = start_server(config, tmp_path / "ready.json", verify=trust)
    try:
        metrics_url = json.loads((tmp_path / "ready.json").read_text())["metrics_url"]
        assert url.startswith("https://") and metrics_url.startswith("http://127.0.0.1:")
        scraped = time.monotonic()
        first = httpx.get(metrics_url)
        assert first.status_code == 200 and "keylife_journal_entries " in first.text
        assert all(name in first.text for name in STANDARD)
        assert httpx.get(metrics_url.replace("/metrics", "/healthz")).json() == {"status": "ok"}
        assert httpx.get(metrics_url.replace("/metrics", "/v1/keys")).status_code == 404  # no API here
        with httpx.Client(base_url=url, verify=trust, headers={"Authorization": f"Bearer {token}"}) as api:
            assert api.get("/metrics").status_code == 404  # moved off the API listener
            posted = api.post(
                "/v1/events",
                content=orjson.dumps({"id": "g-1", "type": "generated", "key_id": "k-1", "occurred_at": NOW}),
                headers={"Content-Type": "application/json"},
            )
            assert posted.status_code == 200
        again = httpx.get(metrics_url)
        before = metric(first.text, "keylife_journal_entries")
        if time.monotonic() - scraped < 2.0:  # within the age (unless this machine is very slow)
            assert again.text == first.text  # the reused body: process CPU time and all
        wait_until(
            lambda: metric(httpx.get(metrics_url).text, "keylife_journal_entries") > before,
            10,
            "the ingested event in a scrape after the cache age",
        )
    finally:
        terminate(proc, 20)


def test_every_metrics_endpoint_has_the_process_and_platform_collectors(tmp_path: Path) -> None:
    from exporter.policy import load_policy
    from keylife.cli.standalone_exporter import StandaloneExporter

    with live_server(tmp_path) as live, live.client(None) as c:
        served = c.get("/metrics").text
        assert all(name in served for name in STANDARD), served[:2000]
        config = live.runtime.config
        standalone = StandaloneExporter(config.registry_path, config.journal_dir, load_policy(None), 500)
        exported = generate_latest(standalone.metrics).decode()
        assert all(name in exported for name in STANDARD)
