"""Keys for the bulk, lockdown and dual-control tests: made through the ingest API like a producer's."""

from __future__ import annotations

import httpx
import orjson

NOW = "2026-11-28T10:00:00Z"


def make_keys(c: httpx.Client, keys: list[str], *, owner: str = "team-a", node: str | None = None,
              active: bool = True, algorithm: str = "ed25519", purpose: str = "signing") -> None:  # fmt: skip
    """Generate (and activate) ``keys``; with ``node``, the node reports using each (so it holds them)."""
    lines = []
    for key in keys:
        lines.append({"id": f"g-{key}", "type": "generated", "key_id": key, "occurred_at": NOW, "owner": owner,
                      "algorithm": algorithm, "purpose": purpose})  # fmt: skip
        if active:
            lines.append({"id": f"a-{key}", "type": "activated", "key_id": key, "occurred_at": NOW})
        if node:
            lines.append({"id": f"u-{key}-{node}", "type": "usage_report", "key_id": key, "occurred_at": NOW,
                          "node": node, "usage": {"sign": 1}})  # fmt: skip
    for start in range(0, len(lines), 5000):
        body = b"\n".join(orjson.dumps(line) for line in lines[start : start + 5000])
        answer = c.post("/v1/events", content=body, headers={"content-type": "application/x-ndjson"})
        assert answer.status_code == 200, answer.text


def states(c: httpx.Client, keys: list[str]) -> dict[str, str | None]:
    return {key: c.get(f"/v1/keys/{key}").json()["state"] for key in keys}


def journal_events(live: object, kind: str) -> list[dict]:
    from keylife.journal.reader import iter_entries

    directory = live.runtime.config.journal_dir  # type: ignore[attr-defined]
    return [e.event for e in iter_entries(directory) if e.event["type"] == kind]
