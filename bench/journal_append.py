"""Journal append + commit (fdatasync) without HTTP, then the same through the Ledger.

Why both: the journal figure is the ceiling of the durable write path (canonical JSON, chain
hash, one fdatasync per batch, checkpoints, segment rolls); the ledger figure adds what every
ingest pays on top (duplicate check, registry projection into SQLite, group commit), so the
gap between them and the HTTP figure says where time goes. One core, default journal
default settings (64 MiB segments sealed in the background, checkpoint every 1000).
"""

from __future__ import annotations

import time
from collections import deque
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from bench.common import ORIGIN, Metric, Stopwatch, demo_events, dir_bytes, log, payloads, pin, result, scratch
from keylife.journal import segments as segs
from keylife.journal.signing import Signer
from keylife.journal.writer import Journal, JournalSettings

NAME = "journal_append"
FULL = {"events": 600_000, "batch": 1000, "in_flight": 4, "max_seconds": 120.0, "journal_repeats": 3}
QUICK = {"events": 30_000, "batch": 1000, "in_flight": 4, "max_seconds": 10.0, "journal_repeats": 1}


def open_journal(directory: Path) -> Journal:
    signer, _ = Signer.load_or_create(directory / "signing.key", ORIGIN)
    return Journal(directory / "journal", signer, JournalSettings(origin=ORIGIN))


def journal_run(directory: Path, items: list[dict[str, Any]], batch: int, max_seconds: float) -> dict[str, Any]:
    """append + commit per batch; the clock stops when the last commit returns (sealing may go on).

    The time inside ``commit`` (write, fdatasync, checkpoints, rolls) is kept apart from
    ``append`` (canonical JSON, chain hash): the first is the disk's share, the second the CPU's.
    """
    journal = open_journal(directory)
    deadline = time.perf_counter() + max_seconds
    watch = Stopwatch()
    done, in_commit = 0, 0.0
    for start in range(0, len(items), batch):
        journal.append(items[start : start + batch])
        before = time.perf_counter()
        journal.commit()
        in_commit += time.perf_counter() - before
        done += len(items[start : start + batch])
        if before > deadline:
            break
    watch.stop()
    journal.wait_sealed()
    with_sealing = time.perf_counter() - watch.wall0
    journal.close()
    sealed = [s for s in segs.list_segments(journal.seg_dir) if s.sealed]
    return {
        "events": done,
        "seconds": watch.wall,
        "rate": done / watch.wall,
        "commit_seconds": in_commit,
        "rate_with_sealing": done / with_sealing,
        "segments_sealed": len(sealed),
        "checkpoints": (directory / "journal" / "checkpoints.log").read_bytes().count(b"\n"),
        "bytes": dir_bytes(directory / "journal"),
    }


def ledger_run(directory: Path, items: list[Any], batch: int, in_flight: int, max_seconds: float) -> dict[str, Any]:
    """Submit batches of validated Events with a few in flight (as concurrent requests would)."""
    from keylife.ingest.ledger import Ledger
    from keylife.registry.projection import Registry

    journal = open_journal(directory)
    ledger = Ledger(journal, Registry(directory / "registry.sqlite", origin=ORIGIN))
    ledger.start()
    deadline = time.perf_counter() + max_seconds
    pending: deque[tuple[Future[Any], int]] = deque()
    done = 0
    watch = Stopwatch()
    try:
        for start in range(0, len(items), batch):
            if time.perf_counter() > deadline:
                break
            chunk = items[start : start + batch]
            pending.append((ledger.submit(chunk), len(chunk)))
            while len(pending) >= in_flight:
                done += _settle(*pending.popleft())
        while pending:
            done += _settle(*pending.popleft())
        watch.stop()
        stats = dict(ledger.stats)
    finally:
        ledger.stop()
        ledger.registry.close()
    return {"events": done, "seconds": watch.wall, "rate": done / watch.wall, "stats": stats}


def _settle(future: Future[Any], expected: int) -> int:
    outcomes = future.result(timeout=120)
    accepted = sum(o.status == "accepted" for o in outcomes)
    if accepted != expected:
        raise RuntimeError(f"ledger accepted {accepted} of {expected}: {outcomes[0]}")
    return accepted


def run(quick: bool) -> dict[str, Any]:
    from keylife.domain.events import Event

    p = dict(QUICK if quick else FULL)
    core = pin(0)
    raw = demo_events(p["events"])
    items = payloads(raw)
    events = [Event.model_validate(e) for e in raw]
    del raw
    log(f"{NAME}: {len(items)} demo payloads on core {core}")
    with scratch(NAME) as tmp:
        runs = []
        for n in range(p["journal_repeats"]):  # fsync times wander on a VM: report the median run
            runs.append(journal_run(tmp / f"journal-only-{n}", items, p["batch"], p["max_seconds"]))
            log(f"{NAME}: journal {runs[-1]['events']} in {runs[-1]['seconds']:.1f} s = {runs[-1]['rate']:,.0f}/s")
        j = sorted(runs, key=lambda r: r["rate"])[len(runs) // 2]
        led = ledger_run(tmp / "ledger", events, p["batch"], p["in_flight"], p["max_seconds"])
        log(f"ledger: {led['events']} in {led['seconds']:.1f} s = {led['rate']:,.0f}/s")
    return result(
        [
            Metric("journal_append_events_per_s", j["rate"], "events/s", ">= 50000"),
            Metric("ledger_events_per_s", led["rate"], "events/s", None),
        ],
        p | {"core": core, "journal_settings": _defaults()},
        journal_median={k: round(v, 3) if isinstance(v, float) else v for k, v in j.items()},
        journal_rates=[round(r["rate"]) for r in runs],
        ledger={k: round(v, 3) if isinstance(v, float) else v for k, v in led.items()},
    )


def _defaults() -> dict[str, Any]:
    from dataclasses import asdict

    from keylife.journal.writer import JournalSettings

    return {k: v for k, v in asdict(JournalSettings(origin="bench")).items() if k != "origin"}
