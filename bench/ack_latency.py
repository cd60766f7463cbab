"""POST-to-durable-ack latency at a steady offered load (open loop).

Why open loop: a closed-loop client waits for each answer before sending the next, so a slow
server quietly lowers the load and hides its own stalls (coordinated omission). Here request
``i`` is due at ``t0 + i / rate`` whatever happened before; latency counts from when it was
due, so time spent waiting for a free connection is the server's fault and is counted. The
"service" latency (from the moment the request was really sent) is reported beside it.
"""

from __future__ import annotations

import http.client
import queue
import threading
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import orjson

from bench.common import Metric, cores, cpu_seconds, demo_events, log, percentile, pin, result, scratch
from bench.ingest_http import post
from bench.server import running

NAME = "ack_latency"
FULL = {"requests_per_s": 100, "events_per_request": 10, "seconds": 20.0, "connections": 16, "warmup_requests": 50}
QUICK = {"requests_per_s": 100, "events_per_request": 10, "seconds": 3.0, "connections": 16, "warmup_requests": 20}


def worker(
    host: str,
    port: int,
    headers: dict[str, str],
    jobs: queue.Queue[tuple[float, bytes, int] | None],
    samples: list[tuple[float, float]],
    errors: list[str],
) -> None:
    """Send what is due; record (latency from due time, latency from send time) per answer."""
    conn = http.client.HTTPConnection(host, port, timeout=30)
    try:
        while (job := jobs.get()) is not None:
            due, body, lines = job
            sent = time.perf_counter()
            error = post(conn, headers, body, lines)
            done = time.perf_counter()
            if error:
                errors.append(error)
            else:
                samples.append((done - due, done - sent))
    except (OSError, http.client.HTTPException) as exc:
        errors.append(f"{type(exc).__name__}: {exc}")
    finally:
        conn.close()


def httpx_worker(
    url: str,
    headers: dict[str, str],
    jobs: queue.Queue[tuple[float, bytes, int] | None],
    samples: list[tuple[float, float]],
    errors: list[str],
) -> None:
    """``worker``, but through one kept-alive ``httpx.Client``: the client ``keylife ingest`` and the
    demo poster use (headers and body written separately, so Nagle and delayed ACKs show here)."""
    import httpx

    with httpx.Client(base_url=url, headers=headers, timeout=30) as client:
        try:
            while (job := jobs.get()) is not None:
                due, body, lines = job
                sent = time.perf_counter()
                response = client.post("/v1/events", content=body)
                done = time.perf_counter()
                if response.status_code != 200:
                    errors.append(f"HTTP {response.status_code}: {response.text[:300]}")
                elif (accepted := response.json()["accepted"]) != lines:
                    errors.append(f"{accepted} of {lines} accepted")
                else:
                    samples.append((done - due, done - sent))
        except httpx.HTTPError as exc:
            errors.append(f"{type(exc).__name__}: {exc}")


@dataclass
class Load:
    """What an open-loop run measured: per request (latency from due, from sent), and the schedule."""

    samples: list[tuple[float, float]]
    errors: list[str]
    t0: float  # perf_counter time request 0 was due
    late: float  # the most the scheduler itself fell behind (s)
    wall: float


def request_bodies(p: dict[str, Any]) -> tuple[list[tuple[bytes, list[str]]], list[tuple[bytes, list[str]]]]:
    """(warm-up, timed) NDJSON bodies of ``events_per_request`` demo events, with their event ids."""
    per = p["events_per_request"]
    count = int(p["requests_per_s"] * p["seconds"])
    events = demo_events((count + p["warmup_requests"]) * per, size="default")
    bodies = [
        (b"".join(orjson.dumps(e) + b"\n" for e in events[i : i + per]), [e["id"] for e in events[i : i + per]])
        for i in range(0, len(events), per)
    ]
    return bodies[: p["warmup_requests"]], bodies[p["warmup_requests"] :]


def open_loop(url: str, token: str, p: dict[str, Any], warmup: list, timed: list, client: str = "http.client") -> Load:
    """Warm up on one connection, then send request ``i`` when it is due (``t0 + i / rate``) over
    ``connections`` connections, whatever the answers do. ``client``: ``http.client`` (one
    ``send`` per request) or ``httpx`` (what keylife's own producers use)."""
    split = urlsplit(url)
    host, port = split.hostname or "127.0.0.1", split.port or 80
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/x-ndjson"}
    conn = http.client.HTTPConnection(host, port, timeout=30)
    for body, ids in warmup:
        if error := post(conn, headers, body, len(ids)):
            raise RuntimeError(f"warm-up request refused: {error}")
    conn.close()
    samples: list[tuple[float, float]] = []
    errors: list[str] = []
    jobs: queue.Queue[tuple[float, bytes, int] | None] = queue.Queue()
    if client == "httpx":
        target, args = httpx_worker, (url, headers, jobs, samples, errors)
    else:
        target, args = worker, (host, port, headers, jobs, samples, errors)  # type: ignore[assignment]
    threads = [threading.Thread(target=target, args=args, daemon=True) for _ in range(p["connections"])]
    for t in threads:
        t.start()
    t0 = time.perf_counter() + 0.05
    late = 0.0
    for i, (body, ids) in enumerate(timed):
        due = t0 + i / p["requests_per_s"]
        wait = due - time.perf_counter()
        if wait > 0:
            time.sleep(wait)
        else:
            late = max(late, -wait)
        jobs.put((due, body, len(ids)))
    for _ in threads:
        jobs.put(None)
    for t in threads:
        t.join(timeout=60)
    return Load(samples, errors, t0, late, time.perf_counter() - t0)


def measure(name: str, p: dict[str, Any], target: str, client: str, context: dict[str, Any]) -> dict[str, Any]:
    """Run the open loop against a fresh ``keylife serve`` and report ``{name}_p99_ms`` / ``_p50_ms``."""
    server_core, client_core = cores()
    pin(client_core)
    per = p["events_per_request"]
    warmup, timed = request_bodies(p)
    offered = p["requests_per_s"] * per
    log(f"{name}: {len(timed)} requests of {per} events at {p['requests_per_s']}/s ({offered} events/s), {client}")
    with scratch(name) as tmp, running(tmp, server_core) as server:
        cpu0 = cpu_seconds(server.pid)
        load = open_loop(server.url, server.token, p, warmup, timed, client=client)
        server_cpu = cpu_seconds(server.pid) - cpu0
    if load.errors:
        raise RuntimeError(f"{len(load.errors)} requests failed, e.g. {load.errors[0]}")
    due_ms = [s[0] * 1000 for s in load.samples]
    sent_ms = [s[1] * 1000 for s in load.samples]
    p99, p50 = percentile(due_ms, 99), percentile(due_ms, 50)
    log(f"{name}: p50 {p50:.2f} ms, p99 {p99:.2f} ms over {len(due_ms)} requests")
    return result(
        [
            Metric(f"{name}_p99_ms", p99, "ms", target, 2),
            Metric(f"{name}_p50_ms", p50, "ms", None, 2),
        ],
        p
        | {"offered_events_per_s": offered, "server_core": server_core, "client_core": client_core}
        | context
        | {"latency_from": "scheduled send time (open loop)"},
        requests=len(due_ms),
        p90_ms=round(percentile(due_ms, 90), 2),
        p999_ms=round(percentile(due_ms, 99.9), 2),
        max_ms=round(max(due_ms), 2),
        service_p50_ms=round(percentile(sent_ms, 50), 2),
        service_p99_ms=round(percentile(sent_ms, 99), 2),
        scheduler_max_late_ms=round(load.late * 1000, 2),
        server_core_utilisation=round(server_cpu / load.wall, 3),
    )


def run(quick: bool) -> dict[str, Any]:
    return measure(NAME, dict(QUICK if quick else FULL), "<= 20", "http.client", {"events_source": "default"})
