"""Compliance report generation over 100,000 keys and a year of history, JSON and HTML.

Why this shape: it is what a compliance officer asks a running keylife for at the end of a year
(``GET /v1/reports/compliance?from=...&to=...``): a checkpoint signed for the report, one registry
snapshot, every figure, the charts. The fleet: 100,000 keys created across 2025 (owners, algorithms,
purposes mixed; a few banned or short), each activated, used once a quarter from its node, every fifth
rotated to a successor, some revoked or compromised; about 460,000 journal entries
ingested through the API (not timed). The figure is wall time per report from request to the last
byte, on the server's core, for the JSON and for the HTML; the report must validate against its
schema and name the fleet's size.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import jsonschema
import orjson

from bench.common import REPO, Metric, Stopwatch, cores, cpu_seconds, log, pin, result, scratch
from bench.server import running

NAME = "reports"
FULL = {"keys": 100_000, "ingest_batch": 5000}
QUICK = {"keys": 5_000, "ingest_batch": 5000}
YEAR = datetime(2025, 1, 1, tzinfo=UTC)
ALGORITHMS = (("aes-256-gcm", "encryption", None), ("ed25519", "signing", None), ("rsa", "authentication", 3072),
              ("aes-256-gcm", "key_wrap", None), ("hmac-sha256", "mac", 256), ("3des", "encryption", None),
              ("rsa", "signing", 1024))  # fmt: skip


def _t(when: datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def _events(i: int) -> list[dict[str, Any]]:
    key = f"rk-{i:06d}"
    algorithm, purpose, size = ALGORITHMS[0 if i % 50 == 1 else i % 5] if i % 1000 else ALGORITHMS[5 + i // 1000 % 2]
    born = YEAR + timedelta(days=i % 365, seconds=i % 86400)
    out: list[dict[str, Any]] = [
        {"id": f"g{i}", "type": "generated", "key_id": key, "occurred_at": _t(born), "owner": f"team-{i % 200}",
         "algorithm": algorithm, "purpose": purpose, **({"key_size": size} if size else {}),
         "expires_at": _t(born + timedelta(days=400))},
        {"id": f"a{i}", "type": "activated", "key_id": key, "occurred_at": _t(born + timedelta(hours=1))},
    ]  # fmt: skip
    for q in range(4):
        end = YEAR + timedelta(days=91 * (q + 1))
        if end > born:
            operation = "sign" if purpose == "signing" else "encrypt"
            out.append({"id": f"u{i}-{q}", "type": "usage_report", "key_id": key, "occurred_at": _t(end),
                        "node": f"node-{i % 20}", "usage": {operation: 100 + i % 50}})  # fmt: skip
    later = born + timedelta(days=200)
    if i % 5 == 0 and later < YEAR + timedelta(days=365):
        out.append(
            {"id": f"r{i}", "type": "rotated", "key_id": key, "occurred_at": _t(later), "successor": f"{key}-next"}
        )
    elif i % 97 == 0:
        out.append({"id": f"v{i}", "type": "revoked", "key_id": key, "occurred_at": _t(born + timedelta(days=30))})
    elif i % 499 == 0:
        out.append({"id": f"c{i}", "type": "compromised", "key_id": key, "occurred_at": _t(born + timedelta(days=20))})
    return out


def _ingest(client: httpx.Client, keys: int, batch: int) -> int:
    lines: list[bytes] = []
    sent = 0
    for i in range(keys):
        lines += [orjson.dumps(e) for e in _events(i)]
        if len(lines) >= batch or i == keys - 1:
            answer = client.post(
                "/v1/events", content=b"\n".join(lines), headers={"content-type": "application/x-ndjson"}
            )
            answer.raise_for_status()
            sent, lines = sent + len(lines), []
    return sent


def run(quick: bool) -> dict[str, Any]:
    p = dict(QUICK if quick else FULL)
    server_core, client_core = cores()
    pin(client_core)
    schema = jsonschema.Draft202012Validator(
        orjson.loads((REPO / "docs/schemas/compliance-report.schema.json").read_bytes())
    )
    with scratch(NAME) as tmp, running(tmp, server_core, scopes=["audit", "ingest", "read"]) as server:
        headers = {"Authorization": f"Bearer {server.token}"}
        with httpx.Client(base_url=server.url, headers=headers, timeout=600) as c:
            entries = _ingest(c, p["keys"], p["ingest_batch"])
            log(f"{NAME}: {p['keys']} keys, {entries} events ingested; server on core {server_core}")
            params = {"from": "2025-01-01", "to": "2026-01-01", "generated_at": "2026-01-01T00:00:00Z"}
            timings, sizes = {}, {}
            cpu0 = cpu_seconds(server.pid)
            for fmt in ("json", "html"):
                watch = Stopwatch()
                answer = c.get("/v1/reports/compliance", params={**params, "format": fmt})
                watch.stop()
                answer.raise_for_status()
                timings[fmt], sizes[fmt] = watch.wall, len(answer.content)
                if fmt == "json":
                    report = answer.json()
            server_cpu = cpu_seconds(server.pid) - cpu0
    schema.validate(report)
    keys = report["inventory"]["total"]
    if keys < p["keys"]:
        raise RuntimeError(f"the report counts {keys} keys, fewer than the {p['keys']} ingested")
    log(f"{NAME}: JSON in {timings['json']:.2f} s, HTML in {timings['html']:.2f} s")
    return result(
        [
            Metric("report_json_seconds_100k_keys_1y", timings["json"], "s", "<= 30", 2),
            Metric("report_html_seconds_100k_keys_1y", timings["html"], "s", "<= 30", 2),
        ],
        p | {"server_core": server_core, "client_core": client_core, "period": "2025"},
        journal_entries=report["checkpoint"]["size"], keys_in_report=keys, json_bytes=sizes["json"],
        html_bytes=sizes["html"], server_cpu_seconds=round(server_cpu, 3),
        rotations_done=report["rotations"]["done"], rules_broken={r["rule"]: r["breaking"] for r in report["rules"]},
    )  # fmt: skip
