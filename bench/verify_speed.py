"""Offline verification speed: ``verify`` over a journal of demo entries, half of them sealed.

Why it matters: an auditor re-checks years of journal (chain, seqs, digests, every signed
checkpoint) offline; at 7+ years of history the entries/s figure decides whether that takes
minutes or a day. The journal is built first (not timed) the way the writer builds it: sealed
segments of the default size's worth of entries, then the rest in the active ``.log``. Its
files are fresh in the page cache, so this is the CPU cost of verifying, not disk speed.
"""

from __future__ import annotations

import itertools
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.common import ORIGIN, START, Metric, Stopwatch, dir_bytes, log, pin, result, scratch
from keylife.journal.signing import Signer
from keylife.journal.verify import verify
from keylife.journal.writer import Journal, JournalSettings

NAME = "verify"
FULL = {"entries": 1_000_000, "sealed_share": 0.5, "segment_entries": 200_000, "append_batch": 1000, "repeats": 3}
QUICK = {"entries": 50_000, "sealed_share": 0.5, "segment_entries": 25_000, "append_batch": 1000, "repeats": 1}


def build(directory: Path, p: dict[str, Any]) -> Signer:
    """Write ``entries`` demo payloads; roll (and seal, synchronously) every ``segment_entries``
    and at ``sealed_share`` of them; the rest stays in the active segment (``append_batch``
    must divide both, as the defaults do)."""
    from datetime import timedelta

    from keylife.demo.network import SIZES, DemoConfig, DemoNetwork
    from keylife.domain.events import Event

    signer, _ = Signer.load_or_create(directory / "signing.key", ORIGIN)
    settings = JournalSettings(origin=ORIGIN, segment_max_bytes=1 << 40, seal_in_background=False)
    journal = Journal(directory / "journal", signer, settings)
    days = max(1, -(-p["entries"] // 550_000))  # the bench fleet makes ~590k events a day
    network = DemoNetwork(DemoConfig(**(SIZES["bench"] | {"history": timedelta(days=days)}), start=START))
    stream = itertools.islice(network.iter_history(), p["entries"])
    sealed_until = int(p["entries"] * p["sealed_share"])
    in_segment = 0
    while chunk := list(itertools.islice(stream, p["append_batch"])):
        journal.append([Event.model_validate(e).payload() for e in chunk])
        journal.commit()
        in_segment += len(chunk)
        full = in_segment >= p["segment_entries"] or journal.size == sealed_until
        if full and journal.size <= sealed_until:
            journal.roll()
            in_segment = 0
    if journal.size < p["entries"]:
        raise RuntimeError(f"the demo stream gave only {journal.size} of {p['entries']} entries")
    journal.close()
    return signer


def run(quick: bool) -> dict[str, Any]:
    p = dict(QUICK if quick else FULL)
    core = pin(0)
    with scratch(NAME) as tmp:
        built = Stopwatch()
        signer = build(tmp, p)
        built.stop()
        directory = tmp / "journal"
        segments = sorted((directory / "segments").iterdir())
        sealed = sum(1 for s in segments if s.suffix == ".zst")
        sealed_entries = _sealed_entries(directory)
        log(
            f"{NAME}: built {p['entries']} entries ({sealed_entries} sealed in {sealed} segments) "
            f"in {built.wall:.0f} s; verifying on core {core}"
        )
        runs = []
        for _ in range(p["repeats"]):  # the median of a few passes: one pass is a few seconds
            marks: list[tuple[int, float]] = []
            watch = Stopwatch()
            report = verify(
                directory, [signer.verifier], progress=lambda n, m=marks: m.append((n, time.perf_counter()))
            )
            runs.append((watch.stop(), marks))
        watch, marks = sorted(runs, key=lambda r: r[0].wall)[len(runs) // 2]
        size = dir_bytes(directory)
        cli_seconds = _cli_run(directory, signer)
    if not report.ok or report.entries != p["entries"]:
        raise RuntimeError(f"verify found {report.entries} entries and faults {[str(f) for f in report.faults[:3]]}")
    rate = report.entries / watch.wall
    log(f"{NAME}: {report.entries} entries in {watch.wall:.2f} s = {rate:,.0f}/s")
    return result(
        [
            Metric("verify_entries_per_s", rate, "entries/s", ">= 300000"),
            Metric("verify_cli_entries_per_s", report.entries / cli_seconds, "entries/s", ">= 300000"),
        ],
        p | {"core": core, "page_cache": "warm", "events_source": "bench fleet, history stretched to fit"},
        entries=report.entries,
        sealed_entries=sealed_entries,
        checkpoints_verified=report.checkpoints,
        seconds=round(watch.wall, 3),
        rates=[round(report.entries / r[0].wall) for r in runs],
        sealed_entries_per_s=_region_rate(marks, watch.wall0, 0, sealed_entries),
        active_log_entries_per_s=_region_rate(marks, watch.wall0, sealed_entries, report.entries),
        journal_bytes=size,
        build_seconds=round(built.wall, 1),
    )


def _cli_run(directory: Path, signer: Signer, repeats: int = 3) -> float:
    """Seconds for ``keylife verify`` end to end: a fresh interpreter, imports, the whole check;
    the median of ``repeats`` runs, like the in-process figure (one run varies by ~10%)."""
    command = [sys.executable, "-m", "keylife.cli", "verify", str(directory), "--json"]
    command += ["--key", signer.verifier.encode(), "--checkpoint", str(directory / "checkpoint")]
    walls = []
    for _ in range(repeats):
        watch = Stopwatch()
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        watch.stop()
        if done.returncode != 0:
            raise RuntimeError(f"keylife verify exited {done.returncode}: {done.stdout[-500:]} {done.stderr[-500:]}")
        walls.append(watch.wall)
    wall = sorted(walls)[len(walls) // 2]
    log(f"{NAME}: keylife verify end to end in {wall:.2f} s (median of {', '.join(f'{w:.2f}' for w in walls)})")
    return wall


def _sealed_entries(directory: Path) -> int:
    from keylife.journal import segments as segs

    return sum(segs.read_index(s)["count"] for s in segs.list_segments(directory / "segments") if s.sealed)


def _region_rate(marks: list[tuple[int, float]], t0: float, lo: int, hi: int) -> int | None:
    """Entries/s between the progress marks nearest ``lo`` and ``hi`` (marks every 65,536);
    None when the journal is too small for marks to separate the two regions."""
    points = [(0, t0), *marks]
    start = min(points, key=lambda m: abs(m[0] - lo))
    end = min(points, key=lambda m: abs(m[0] - hi))
    if end[0] - start[0] < 65_536 or end[1] <= start[1]:
        return None
    return round((end[0] - start[0]) / (end[1] - start[1]))
