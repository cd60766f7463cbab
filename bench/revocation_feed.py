"""The revocation feed: what a bulk revoke costs the registry, and what a poll of the feed costs.

Why: a bulk revoke of 100,000 keys must execute in <= 30 s (issue 14), and the revocation extension
(feed row, expected nodes, confirmations: ``keylife/registry/revocations.py``) projects inside the
same registry transactions, so its share is measured against the same revokes without it. Thousands
of enforcement points poll the feed: a poll of an unchanged version is a cached answer (the API
answers it 304 from the same cache), and the first poll after a change renders and signs once.
In-process on one core: keys held by 3 of 100 nodes, revoked 1,000 per transaction.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from bench.common import Metric, log, pin, result, scratch
from keylife.journal.signing import Signer, new_ed25519
from keylife.journal.writer import Entry
from keylife.response.feed import Feed

NAME = "revocation_feed"
FULL = {"keys": 100_000, "nodes": 100, "holders": 3, "group": 1000, "polls": 20_000}
QUICK = {"keys": 5_000, "nodes": 100, "holders": 3, "group": 1000, "polls": 2_000}
AT = "2026-01-01T00:00:00Z"


def _registry(path: Path, p: dict[str, Any], extensions: bool) -> tuple[Any, float]:
    """A registry of ``keys`` held keys; returns it and the seconds its revokes took to project."""
    import keylife.registry.projection as projection

    saved = projection.EXTENSIONS
    if not extensions:
        projection.EXTENSIONS = ()
    try:
        registry = projection.Registry(path, origin="bench.keylife/feed", background_checkpoint=False)
    finally:
        projection.EXTENSIONS = saved
    seq = -1

    def entries(events: list[dict[str, Any]]) -> list[Entry]:
        nonlocal seq
        out = []
        for event in events:
            seq += 1
            out.append(Entry(seq, AT, event, b""))
        return out

    setup: list[dict[str, Any]] = []
    for i in range(p["keys"]):
        setup += [{"id": f"g{i}", "type": "generated", "key_id": f"k{i}", "occurred_at": AT},
                  {"id": f"a{i}", "type": "activated", "key_id": f"k{i}", "occurred_at": AT}]  # fmt: skip
        setup += [{"id": f"p{i}-{j}", "type": "propagated", "key_id": f"k{i}", "node": f"n{(i + 7 * j) % p['nodes']}",
                   "state": "active", "occurred_at": AT} for j in range(p["holders"])]  # fmt: skip
    registry.begin()
    registry.apply_many(entries(setup))
    registry.commit()
    revokes = entries([{"id": f"r{i}", "type": "revoked", "key_id": f"k{i}", "occurred_at": AT, "origin": "command",
                        "actor": "bench", "reason": "bulk"} for i in range(p["keys"])])  # fmt: skip
    started = time.perf_counter()
    for start in range(0, len(revokes), p["group"]):
        registry.begin()
        registry.apply_many(revokes[start : start + p["group"]])
        registry.commit()
    return registry, time.perf_counter() - started


def run(quick: bool) -> dict[str, Any]:
    p = dict(QUICK if quick else FULL)
    core = pin(0)
    with scratch(NAME) as tmp:
        bare, without = _registry(tmp / "bare.sqlite", p, extensions=False)
        bare.close()
        registry, with_ext = _registry(tmp / "feed.sqlite", p, extensions=True)
        signer = Signer("bench.keylife/feed", new_ed25519()[0])
        feed = Feed(registry, "bench.keylife/feed")
        t0 = time.perf_counter()
        full = feed.answer(signer, "0", False)
        render_ms = (time.perf_counter() - t0) * 1000
        t0 = time.perf_counter()
        full_json = feed.answer(signer, "0", True)
        render_json_ms = (time.perf_counter() - t0) * 1000
        version = str(full.version)
        feed.answer(signer, version, False)  # the pollers' question: anything after my version?
        t0 = time.perf_counter()
        for _ in range(p["polls"]):
            feed.answer(signer, version, False)
        poll_us = (time.perf_counter() - t0) / p["polls"] * 1e6
        registry.close()
    if full.version != p["keys"]:
        raise RuntimeError(f"the feed has version {full.version}, not {p['keys']}")
    extension_us = (with_ext - without) / p["keys"] * 1e6
    log(f"{NAME}: {p['keys']} revokes projected in {with_ext:.2f} s ({without:.2f} s without the extension); "
        f"full feed rendered in {render_ms:.0f} ms; a poll of an unchanged feed {poll_us:.1f} us")  # fmt: skip
    return result(
        [
            Metric("revoke_projection_seconds_100k", with_ext * 100_000 / p["keys"], "s", "<= 30", 2),
            Metric("revocation_extension_us_per_key", extension_us, "us", None, 1),
            Metric("feed_full_render_ms", render_ms, "ms", None, 0),
            Metric("feed_poll_unchanged_us", poll_us, "us", "<= 100", 1),
        ],
        p | {"core": core},
        revoke_projection_seconds_without_extension=round(without, 3),
        feed_note_bytes=len(full.body),
        feed_json_bytes=len(full_json.body),
        feed_full_render_json_ms=round(render_json_ms, 1),
    )
