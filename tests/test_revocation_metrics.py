"""Revocation metrics as Prometheus scrapes them from /metrics (issue 14, item 4).

The confirmation histogram, the uncapped per-node gauge of unconfirmed (key, node) pairs, and the
capped per-pair series the alert names key and node from, with the cap reported.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx

from tests.server import Live, live_server
from tests.test_exporter import post, scrape, value


def at(seconds: float) -> str:
    """``seconds`` from now: a node's report after the revoke (which has the server's clock)."""
    return (datetime.now(UTC) + timedelta(seconds=seconds)).isoformat().replace("+00:00", "Z")


def _held(live: Live, key: str, *nodes: str) -> None:
    post(live, {"id": f"g-{key}", "type": "generated", "key_id": key, "occurred_at": at(-60)},
         {"id": f"a-{key}", "type": "activated", "key_id": key, "occurred_at": at(-60)},
         *[{"id": f"p-{key}-{n}", "type": "propagated", "key_id": key, "node": n, "state": "active",
            "occurred_at": at(-60)} for n in nodes])  # fmt: skip


def _revoke(live: Live, key: str) -> None:
    with live.client() as c:
        answer = c.post(f"/v1/keys/{key}/commands", json={"command": "revoke", "reason": "leaked"})
        assert answer.status_code == 200, answer.text


def _confirm(live: Live, key: str, node: str, seconds: float) -> None:
    post(live, {"id": f"c-{key}-{node}", "type": "propagated", "key_id": key, "node": node, "state": "revoked",
                "occurred_at": at(seconds)})  # fmt: skip


def test_confirmation_histogram_and_unconfirmed_pairs(tmp_path: Path) -> None:
    with live_server(tmp_path) as live:
        _held(live, "k1", "node-a", "node-b")
        _held(live, "k2", "node-a", "node-c")
        before = scrape(live)
        assert value(before, "keylife_revocation_feed_version") == 0
        assert value(before, "keylife_revocation_confirmation_seconds_count") == 0
        assert value(before, "keylife_revocation_unconfirmed_pairs", node="node-a") == 0  # every known node
        _revoke(live, "k1")
        _revoke(live, "k2")
        started = scrape(live)
        assert value(started, "keylife_revocation_feed_version") == 2
        assert value(started, "keylife_revocation_unconfirmed_pairs", node="node-a") == 2
        assert value(started, "keylife_revocation_unconfirmed_pairs", node="node-c") == 1
        since = value(started, "keylife_revocation_unconfirmed_since_timestamp_seconds", key_id="k1", node="node-b")
        assert abs(since - datetime.now(UTC).timestamp()) < 60  # the revocation's time (the server's clock)
        _confirm(live, "k1", "node-a", 40)
        _confirm(live, "k1", "node-b", 90)  # k1 complete: about 90 s after its revocation
        _confirm(live, "k2", "node-a", 10)
        after = scrape(live)
    assert value(after, "keylife_revocation_confirmation_seconds_count") == 1
    assert 90 <= value(after, "keylife_revocation_confirmation_seconds_sum") < 120
    assert value(after, "keylife_revocation_confirmation_seconds_bucket", le="60.0") == 0
    assert value(after, "keylife_revocation_confirmation_seconds_bucket", le="120.0") == 1
    assert value(after, "keylife_revocation_unconfirmed_pairs", node="node-a") == 0
    assert value(after, "keylife_revocation_unconfirmed_pairs", node="node-c") == 1
    per_pair = {k[1] for k in after if k[0] == "keylife_revocation_unconfirmed_since_timestamp_seconds"}
    assert per_pair == {(("key_id", "k2"), ("node", "node-c"))}
    assert value(after, "keylife_revocation_unconfirmed_pairs_omitted") == 0


def test_the_per_pair_series_are_capped_oldest_first_and_the_rest_counted(tmp_path: Path) -> None:
    with live_server(tmp_path, exporter={"attention_cap": 2, "scrape_cache_seconds": 0}) as live:
        for n in range(4):
            _held(live, f"k{n}", "node-a")
            _revoke(live, f"k{n}")
        samples = scrape(live)
    pairs = sorted(
        dict(k[1])["key_id"] for k in samples if k[0] == "keylife_revocation_unconfirmed_since_timestamp_seconds"
    )
    assert pairs == ["k0", "k1"]  # revoked first: waiting longest
    assert value(samples, "keylife_revocation_unconfirmed_pairs_omitted") == 2
    assert value(samples, "keylife_revocation_unconfirmed_pairs", node="node-a") == 4  # the gauge is uncapped


def test_the_metrics_need_no_token_where_metrics_need_none(tmp_path: Path) -> None:
    with live_server(tmp_path) as live, httpx.Client(base_url=live.url) as c:
        assert "keylife_revocation_feed_version 0.0" in c.get("/metrics").text
