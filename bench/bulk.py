"""A bulk revoke of 100,000 keys through the HTTP API: plan (dry run) and execute, on one core.

Why this shape: it is the path an incident responder takes (``keylife bulk plan`` then
``execute --wait``): the plan resolves the selector in one registry snapshot and stores the key
set; execution journals one revoke command per key in batches through the ledger. The server
is pinned to one core; the figure is wall time from the client's request to the plan's
``finished`` state. Afterwards the journal must verify and the registry must count every key
revoked.
"""

from __future__ import annotations

import time
from typing import Any

import httpx
import orjson

from bench.common import Metric, Stopwatch, cores, cpu_seconds, log, pin, result, scratch
from bench.server import running

NAME = "bulk"
FULL = {"keys": 100_000, "ingest_batch": 5000}
QUICK = {"keys": 5_000, "ingest_batch": 5000}
AT = "2026-01-01T00:00:00Z"


def _keys(client: httpx.Client, n: int, batch: int) -> None:
    """``n`` active keys, made through the ingest API (not timed)."""
    lines: list[bytes] = []
    for i in range(n):
        key = f"bulk-key-{i:06d}"
        lines.append(orjson.dumps({"id": f"g{i}", "type": "generated", "key_id": key, "occurred_at": AT,
                                   "owner": f"team-{i % 50}", "algorithm": "ed25519"}))  # fmt: skip
        lines.append(orjson.dumps({"id": f"a{i}", "type": "activated", "key_id": key, "occurred_at": AT}))
    for start in range(0, len(lines), batch):
        answer = client.post(
            "/v1/events", content=b"\n".join(lines[start : start + batch]),
            headers={"content-type": "application/x-ndjson"},
        )  # fmt: skip
        answer.raise_for_status()


def run(quick: bool) -> dict[str, Any]:
    p = dict(QUICK if quick else FULL)
    server_core, client_core = cores()
    pin(client_core)
    with scratch(NAME) as tmp:
        # One token: dual control (a second approver above bulk.dual_control_min_keys) is out of the figure.
        extra = {"bulk": {"dual_control_min_keys": 10 * p["keys"]}}
        with running(tmp, server_core, extra=extra, scopes=["admin", "ingest", "read"]) as server:
            headers = {"Authorization": f"Bearer {server.token}"}
            with httpx.Client(base_url=server.url, headers=headers, timeout=120) as c:
                _keys(c, p["keys"], p["ingest_batch"])
                log(f"{NAME}: {p['keys']} active keys ingested; server on core {server_core}")
                cpu0 = cpu_seconds(server.pid)
                planning = Stopwatch()
                body = {"selector": {"states": ["active"]}, "action": "revoke", "reason": "bench", "dry_run": True}
                planned = c.post("/v1/keys/bulk", json=body)
                planning.stop()
                planned.raise_for_status()
                plan = planned.json()
                if plan["total"] != p["keys"]:
                    raise RuntimeError(f"plan holds {plan['total']} keys, not {p['keys']}")
                executing = Stopwatch()
                started = c.post(f"/v1/bulk/{plan['plan']}/execute")
                if started.status_code != 200:
                    raise RuntimeError(f"execute answered {started.status_code}: {started.text[:300]}")
                while (progress := c.get(f"/v1/bulk/{plan['plan']}").json())["state"] != "finished":
                    time.sleep(0.05)
                executing.stop()
                server_cpu = cpu_seconds(server.pid) - cpu0
        if progress["done"] != p["keys"] or progress["refused"]:
            raise RuntimeError(f"plan finished with {progress}")
        revoked, verified = _check(tmp / "data")
    if revoked != p["keys"] or not verified:
        raise RuntimeError(f"after the plan: {revoked} revoked keys, journal verifies: {verified}")
    log(f"{NAME}: planned in {planning.wall:.2f} s, executed in {executing.wall:.2f} s")
    return result(
        [
            Metric("bulk_plan_seconds_100k_keys", planning.wall, "s", "<= 2", 2),
            Metric("bulk_execute_seconds_100k_keys", executing.wall, "s", "<= 30", 2),
            Metric("bulk_execute_keys_per_s", p["keys"] / executing.wall, "keys/s", None),
        ],
        p | {"server_core": server_core, "client_core": client_core, "action": "revoke"},
        plan_response_bytes=len(planned.content),
        server_cpu_seconds=round(server_cpu, 3),
        revoked_keys_counted=revoked,
        journal_verified=verified,
    )


def _check(data: Any) -> tuple[int, bool]:
    """The registry's count of revoked keys and the journal's verdict, read after the server stopped."""
    from keylife.journal.signing import Verifier
    from keylife.journal.verify import verify
    from keylife.registry.queries import RegistryReader

    reader = RegistryReader(data / "registry.sqlite")
    try:
        revoked = reader.counts()["keys_by_state"]["revoked"]
    finally:
        reader.close()
    verifier = Verifier.parse((data / "journal" / "verifier.key").read_text())
    return revoked, verify(data / "journal", [verifier]).ok
