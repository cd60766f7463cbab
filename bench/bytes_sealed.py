"""Bytes on disk per event once sealed (.zst + .idx + .sums + the Merkle tree's tiles), and before
sealing for context.

Why: the journal is kept 7+ years, so its size per event is what retention costs. The default
demo stream (what ``keylife serve --demo`` produces: mostly usage reports) is journaled the way
the server does it (batches of 1000, default settings: zstd level 3 in frames of 4096
entries), then the segment is sealed and its files are measured. Then it is pruned
(``keylife journal prune``: the body goes, the ``.idx`` and 32 B of leaf hash per entry stay)
and measured again: what an entry costs after its retention.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from bench.common import ORIGIN, Metric, Stopwatch, demo_events, dir_bytes, log, payloads, pin, result, scratch
from keylife.journal import prune
from keylife.journal import segments as segs
from keylife.journal.signing import Signer
from keylife.journal.writer import Journal, JournalSettings

NAME = "bytes_sealed"
FULL = {"events": None, "size": "default", "batch": 1000}  # the whole default stream: ~174k events
QUICK = {"events": 50_000, "size": "default", "batch": 1000}


def sizes(seg_dir: Any, suffixes: tuple[str, ...]) -> int:
    return sum(p.stat().st_size for p in seg_dir.iterdir() if p.suffix in suffixes)


def run(quick: bool) -> dict[str, Any]:
    p = dict(QUICK if quick else FULL)
    core = pin(0)
    items = payloads(demo_events(p["events"], size=p["size"]))
    count = len(items)
    log(f"{NAME}: {count} events of the '{p['size']}' demo stream")
    with scratch(NAME) as tmp:
        signer, _ = Signer.load_or_create(tmp / "signing.key", ORIGIN)
        settings = JournalSettings(origin=ORIGIN, segment_max_bytes=1 << 40, seal_in_background=False)
        journal = Journal(tmp / "journal", signer, settings)
        for start in range(0, count, p["batch"]):
            journal.append(items[start : start + p["batch"]])
            journal.commit()
        seg_dir = journal.seg_dir
        raw_log, raw_sums = sizes(seg_dir, (".log",)), sizes(seg_dir, (".sums",))
        watch = Stopwatch()
        journal.roll()
        watch.stop()
        journal.close()
        (seg,) = segs.list_segments(seg_dir)
        if not seg.sealed:
            raise RuntimeError("the segment did not seal")
        zst, idx, sums = sizes(seg_dir, (".zst",)), sizes(seg_dir, (".idx",)), sizes(seg_dir, (".sums",))
        checkpoints = (tmp / "journal" / "checkpoints.log").stat().st_size
        tree = dir_bytes(tmp / "journal" / "tree") if (tmp / "journal" / "tree").exists() else 0
        chosen = prune.plan(tmp / "journal", datetime.now(UTC) + timedelta(days=1), count)
        prune.carry_out(chosen)
        if chosen.count != count or not seg.pruned:
            raise RuntimeError("the segment was not pruned")
        pruned = (sizes(seg_dir, (".idx",)) + sizes(seg_dir, (".leaves",)) + tree) / count
    sealed = (zst + idx + sums + tree) / count
    log(f"{NAME}: {sealed:.1f} B/event sealed, {(raw_log + raw_sums) / count:.1f} B/event raw, {pruned:.1f} pruned")
    return result(
        [
            Metric("bytes_per_event_sealed", sealed, "B/event", "<= 30", 1),
            Metric("bytes_per_event_raw", (raw_log + raw_sums) / count, "B/event", None, 1),
            Metric("bytes_per_event_pruned", pruned, "B/event", None, 1),
        ],
        p | {"core": core, "compress_level": settings.compress_level, "frame_entries": segs.FRAME_ENTRIES},
        events=count,
        zst_bytes=zst,
        idx_bytes=idx,
        sums_bytes=sums,
        tree_bytes=tree,
        raw_log_bytes=raw_log,
        compression_ratio=round(raw_log / zst, 2),
        checkpoints_log_bytes_per_event=round(checkpoints / count, 2),
        seal_seconds=round(watch.wall, 3),
        seal_events_per_s=round(count / watch.wall),
    )
