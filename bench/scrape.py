"""Scrape cost of the exporter at 10k, 100k and 1M keys, and the same scrape done the naive way.

Why: ops teams scrape every 15-60 s, so the scrape must stay cheap however large the fleet
grows (issue 3: at 1,000,000 keys over 100 nodes, with 1% needing attention, scrape p50
<= 100 ms, exposition <= 2 MB, RSS <= 1.5 GB). The naive design (a prometheus_client Gauge
with one series per key) is measured in the same run, so the ratio says what the fleet index
and the capped attention set buy.

Per size, three processes, each pinned to one core (so RSS and timings are per size and per
design, and nothing of one leaks into the next):

* ``build``: a registry of N keys written straight through ``Registry`` (as ``rebuild`` does: begin,
  apply_many, commit per 50,000 entries) from journal-shaped entries, the payloads
  ``Event(...).payload()`` gives (a sample is checked against it): ``generated``,
  ``activated``, a ``usage_report`` for about half the keys, ``propagated`` of the final state
  by the 5 nodes (of 100) holding each key, and for some keys ``suspended``, ``deactivated``,
  ``destroyed``. 1% of the keys need attention, one reason each, in equal shares: expiring
  within 7 days, compromised, a banned algorithm (3des) or an RSA key below 2048 bits,
  rotation overdue (activated over a year ago), a node still reporting the previous state.
  Times are relative to the wall clock at build, because the exporter judges them against
  ``time.time()``. Not timed as part of the measurement (reported as ``build_s``).
* ``ours``: ``Exporter.over`` as ``keylife serve`` builds it (the fleet index loaded from the
  committed tables: the start-up cost), then ``generate_latest`` (one scrape: a fresh
  snapshot, formatted): one untimed first scrape, ``scrapes`` under CPython's default GC
  thresholds (context: a full collection walks the whole index), then ``tune_gc`` as ``serve``
  does after start-up and the ``scrapes`` the figures come from. The snapshot alone is timed
  too, to split a scrape in two.
* ``naive``: every key's row read from the registry into ``keylife_key_state{key_id, state,
  algorithm, purpose} 1`` and ``keylife_key_expiry_timestamp_seconds{key_id}`` (prometheus_client
  Gauges; no fleet aggregates, so the naive figures are a lower bound), then the same
  ``generate_latest`` timed up to ``scrapes`` times within ``naive_max_seconds``.

RSS is VmHWM (the peak, start-up included: what a memory limit must allow) read after the
scrapes; VmRSS then is in ``extra``. ``--quick`` runs 1k and 10k keys only, and reports the
10k figures under the headline names (``*_1m_keys``), as every quick figure is a smoke figure.

    python -m bench.scrape STAGE JSON   # one stage in this process; what run() spawns
"""

from __future__ import annotations

import gc
import itertools
import json
import random
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from bench.common import ORIGIN, REPO, Metric, Stopwatch, log, percentile, pin, result, scratch

NAME = "scrape"
FULL = {
    "sizes": [10_000, 100_000, 1_000_000],
    "nodes": 100,
    "replicas": 5,
    "attention_share": 0.01,
    "attention_cap": 500,
    "scrapes": 20,
    "naive_scrapes": 20,
    "naive_max_seconds": 60.0,
    "snapshot_repeats": 5,
    "seed": 1,
    "chunk": 50_000,  # entries per registry transaction, as `keylife registry rebuild` commits
}
QUICK = FULL | {"sizes": [1_000, 10_000], "naive_max_seconds": 5.0}
STAGE_TIMEOUT = 600.0  # seconds; the whole full run takes about 6 minutes

DAY = 86_400
# The demo fleet's kinds of key (keylife.demo_scenario.PROFILES): prefix, algorithm, size,
# purpose, operations, share of the fleet, whether the key carries an expiry.
PROFILES = (
    ("df-client", "ed25519", 256, "authentication", ("verify",), 0.42, True),
    ("df-node", "ed25519", 256, "signing", ("sign", "verify"), 0.08, True),
    ("df-data", "aes-256-gcm", 256, "encryption", ("encrypt", "decrypt"), 0.40, True),
    ("df-wrap", "rsa", 3072, "key_wrap", ("encrypt", "decrypt"), 0.10, False),
)
LEGACY = (  # non-compliant keys: a banned algorithm, an RSA key below the 2048-bit floor
    ("df-legacy", "3des", 168, "encryption", ("encrypt", "decrypt"), 0.0, True),
    ("df-legacy", "rsa", 1024, "signing", ("sign", "verify"), 0.0, True),
)
# What the 99% of keys that need no attention end as, with their shares.
HEALTHY_STATES = (("active", 0.88), ("pre_activation", 0.03), ("suspended", 0.01), ("deactivated", 0.05),
                  ("destroyed", 0.03))  # fmt: skip
# The events after activation that lead to each final state.
STEPS = {"suspended": ("suspended",), "deactivated": ("deactivated",), "compromised": ("compromised",),
         "destroyed": ("deactivated", "destroyed")}  # fmt: skip
REASONS = ("expiring", "compromised", "non_compliant", "rotation_overdue", "propagation_pending")
OWNERS = ("svc-ingest", "svc-query", "app-billing", "app-analytics", "svc-replicator", "app-mobile")


# ----- the fleet -------------------------------------------------------------------------------
_DAYS: dict[int, str] = {}


def _iso(t: float) -> str:
    """RFC 3339 UTC to the second, as ``Event.payload()`` writes it (the date part cached: ~8M calls at 1M keys)."""
    day, second = divmod(int(t), DAY)
    date = _DAYS.get(day)
    if date is None:
        date = _DAYS[day] = time.strftime("%Y-%m-%dT", time.gmtime(day * DAY))
    hour, rest = divmod(second, 3600)
    return f"{date}{hour:02d}:{rest // 60:02d}:{rest % 60:02d}Z"


class Fleet:
    """Journal-shaped events for ``keys`` keys, key after key (each key's events in causal order)."""

    def __init__(self, keys: int, nodes: int, replicas: int, attention_share: float, seed: int, now: float) -> None:
        self.keys, self.replicas, self.now = keys, replicas, int(now)
        self.rng = random.Random(seed)
        self.nodes = [f"node-{i + 1}" for i in range(nodes)]
        flagged = self.rng.sample(range(keys), round(keys * attention_share))
        self.reason = {k: REASONS[n % len(REASONS)] for n, k in enumerate(sorted(flagged))}
        self.planned = {r: sum(1 for v in self.reason.values() if v == r) for r in REASONS}
        self._n = 0

    def _ev(self, kind: str, key_id: str, t: float, node: str, **extra: Any) -> dict[str, Any]:
        self._n += 1
        return {"id": f"bench-{self._n:010d}", "type": kind, "key_id": key_id, "occurred_at": _iso(t), "node": node,
                "actor": node, **extra}  # fmt: skip

    def events(self) -> Iterator[dict[str, Any]]:
        for k in range(self.keys):
            yield from self._key(k)

    def _key(self, k: int) -> list[dict[str, Any]]:
        rng, now = self.rng, self.now
        reason = self.reason.get(k)
        profile = PROFILES[_pick(rng.random(), [p[5] for p in PROFILES])]
        if reason == "non_compliant":
            profile = LEGACY[k % 2]
        prefix, algorithm, size, purpose, ops, _share, expires = profile
        # 16 hex digits, as DataFold names keys; rising with k, so the registry's B-trees grow at
        # their ends (with random ids every commit rewrites most of their pages: at 1M keys the
        # WAL passed 6 GB within 90 s and the build slowed; the exporter does not care about order).
        key_id = f"{prefix}-{(k << 32) | rng.getrandbits(32):016x}"
        home = (k * 7) % len(self.nodes)
        holders = [self.nodes[(home + j * 13) % len(self.nodes)] for j in range(self.replicas)]
        final = "active" if reason else HEALTHY_STATES[_pick(rng.random(), [s[1] for s in HEALTHY_STATES])][0]
        if reason == "compromised":
            final = "compromised"
        if final == "pre_activation":
            created = now - rng.uniform(0.1, 10) * DAY
        elif reason == "rotation_overdue":  # past the 1y rotation period, not the 2y max age
            created = now - rng.uniform(380, 700) * DAY
        else:
            created = now - rng.uniform(2, 330) * DAY
        t = created
        expiry = now + rng.uniform(45, 700) * DAY
        if reason == "expiring":
            expiry = now + rng.uniform(0.5, 6.5) * DAY
        meta = {"algorithm": algorithm, "key_size": size, "purpose": purpose, "owner": OWNERS[k % len(OWNERS)]}
        if expires or reason == "expiring":
            meta["expires_at"] = _iso(expiry)
        out = [self._ev("generated", key_id, t, holders[0], **meta)]
        if final != "pre_activation":
            t += rng.uniform(60, DAY)
            out.append(self._ev("activated", key_id, t, holders[0]))
            if rng.random() < 0.5:  # one usage report: an hour of operations from one node
                end = min(now - 60, t + rng.uniform(3600, 30 * DAY))
                usage = {op: rng.randrange(1, 50_000) for op in ops}
                out.append(self._ev("usage_report", key_id, end, holders[1], usage=usage,
                                    interval_start=_iso(end - 3600), interval_end=_iso(end)))  # fmt: skip
                t = max(t, end)
            for step in STEPS.get(final, ()):
                t = min(now - 30, t + rng.uniform(60, 5 * DAY))
                extra = {"reason": "key material found in a crash dump"} if step == "compromised" else {}
                out.append(self._ev(step, key_id, t, holders[0], **extra))
        for j, node in enumerate(holders):  # every holder confirms the final state, a little later
            state = final
            if reason == "propagation_pending" and j == self.replicas - 1:
                state = "pre_activation"  # the last holder never confirmed the activation
            out.append(self._ev("propagated", key_id, min(now - 1, t + rng.uniform(1, 120)), node, state=state))
        return out


def _pick(x: float, weights: list[float]) -> int:
    for i, w in enumerate(weights):
        x -= w
        if x < 0:
            return i
    return len(weights) - 1


# ----- stages (each in its own process) --------------------------------------------------------
def _status() -> dict[str, int]:
    """VmRSS and VmHWM of this process, in bytes."""
    found = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            found[name] = int(value.split()[0]) * 1024
    return found


def stage_build(p: dict[str, Any]) -> dict[str, Any]:
    from keylife.domain.events import Event
    from keylife.journal.writer import Entry
    from keylife.registry.projection import Registry

    fleet = Fleet(p["keys"], p["nodes"], p["replicas"], p["attention_share"], p["seed"], time.time())
    observed = _iso(time.time())
    counts: dict[str, int] = {}
    checked = 0

    def entries() -> Iterator[Entry]:
        nonlocal checked
        for seq, ev in enumerate(fleet.events()):
            kind = ev["type"]
            counts[kind] = counts.get(kind, 0) + 1
            if counts[kind] <= 200:  # the payloads the API would journal, field for field
                assert Event.model_validate(ev).payload() == ev, ev
                checked += 1
            yield Entry(seq, observed, ev, b"")

    watch = Stopwatch()
    registry = Registry(Path(p["registry"]), origin=ORIGIN)
    try:
        source = entries()
        while chunk := list(itertools.islice(source, p["chunk"])):
            registry.begin()
            registry.apply_many(chunk)
            registry.commit()
        keys = registry._db.execute("SELECT count(*) FROM keys").fetchone()[0]
        last_seq = registry.last_applied_seq()
    finally:
        registry.close()  # folds the WAL into the file
    watch.stop()
    if keys != p["keys"]:
        raise RuntimeError(f"built {keys} keys, not {p['keys']}")
    return {
        "entries": last_seq + 1,
        "events_by_type": counts,
        "payloads_checked": checked,
        "attention_planned": fleet.planned,
        "build_s": round(watch.wall, 2),
        "build_entries_per_s": round((last_seq + 1) / watch.wall),
        "registry_bytes": Path(p["registry"]).stat().st_size,
        "now": fleet.now,
    }


def stage_ours(p: dict[str, Any]) -> dict[str, Any]:
    from prometheus_client import CollectorRegistry, generate_latest

    from exporter.policy import load_policy
    from exporter.service import Exporter
    from keylife.common.process import tune_gc

    before = _status()
    watch = Stopwatch()
    metrics = CollectorRegistry()
    exporter = Exporter.over(
        Path(p["registry"]), load_policy(None), metrics, pipeline=lambda: {}, attention_cap=p["attention_cap"]
    )
    load = watch.stop()
    loaded = _status()
    first = Stopwatch()
    body = generate_latest(metrics)
    first.stop()
    with _GcPauses() as pauses:  # CPython's default collector thresholds, for context
        default_gc = _timed(lambda: generate_latest(metrics), p["scrapes"])
    tune_gc()  # as keylife serve does once start-up is done
    times = _timed(lambda: generate_latest(metrics), p["scrapes"])
    body = generate_latest(metrics)
    snap_times = []
    for _ in range(p["snapshot_repeats"]):
        watch = Stopwatch()
        exporter.index.snapshot(time.time(), p["attention_cap"])
        snap_times.append(watch.stop().wall)
    after = _status()
    samples = _samples(body)
    return {
        "load_s": round(load.wall, 3),
        "load_cpu_s": round(load.cpu, 3),
        "first_scrape_ms": round(first.wall * 1000, 2),
        "scrape_ms": [round(t * 1000, 3) for t in times],
        "scrape_p50_ms": round(percentile(times, 50) * 1000, 3),
        "scrape_p99_ms": round(percentile(times, 99) * 1000, 3),
        "snapshot_p50_ms": round(percentile(snap_times, 50) * 1000, 3),
        "default_gc": {
            "scrape_p50_ms": round(percentile(default_gc, 50) * 1000, 3),
            "scrape_max_ms": round(max(default_gc) * 1000, 3),
            "full_collections_ms": [round(d * 1000, 1) for gen, d in pauses if gen == 2],
            "young_collections": sum(1 for gen, _d in pauses if gen < 2),
        },
        "exposition_bytes": len(body),
        "series": sum(1 for line in body.split(b"\n") if line and not line.startswith(b"#")),
        "attention": samples["keylife_keys_attention"],
        "attention_omitted": samples["keylife_keys_attention_omitted"],
        "attention_series": sum(1 for line in body.split(b"\n") if line.startswith(b"keylife_key_attention{")),
        "compliance_ratio": samples["keylife_fleet_compliance_ratio"],
        "rss_before_load_bytes": before["VmRSS"],
        "rss_loaded_bytes": loaded["VmRSS"],
        "rss_bytes": after["VmRSS"],
        "rss_peak_bytes": after["VmHWM"],
        "snapshot_builds": exporter.snapshots.builds,
    }


def stage_naive(p: dict[str, Any]) -> dict[str, Any]:
    from datetime import datetime

    from prometheus_client import CollectorRegistry, Gauge, generate_latest

    from keylife.common.process import tune_gc

    before = _status()
    watch = Stopwatch()
    metrics = CollectorRegistry()
    state = Gauge("keylife_key_state", "1 for each key, labelled with its state, algorithm and purpose.",
                  ["key_id", "state", "algorithm", "purpose"], registry=metrics)  # fmt: skip
    expiry = Gauge("keylife_key_expiry_timestamp_seconds", "When each key expires.", ["key_id"], registry=metrics)
    db = sqlite3.connect(f"{Path(p['registry']).resolve().as_uri()}?mode=ro", uri=True)
    try:
        rows = db.execute("SELECT key_id, state, algorithm, purpose, expires_at FROM keys")
        for key_id, st, algorithm, purpose, expires_at in rows:
            state.labels(key_id, st or "unknown", algorithm or "unknown", purpose or "unknown").set(1)
            if expires_at is not None:
                expiry.labels(key_id).set(datetime.fromisoformat(expires_at).timestamp())
    finally:
        db.close()
    load = watch.stop()
    loaded = _status()
    tune_gc()
    first = Stopwatch()
    body = generate_latest(metrics)
    first.stop()
    times: list[float] = []
    deadline = time.perf_counter() + p["naive_max_seconds"]
    while len(times) < p["naive_scrapes"] and (len(times) < 3 or time.perf_counter() < deadline):
        watch = Stopwatch()
        body = generate_latest(metrics)
        times.append(watch.stop().wall)
    after = _status()
    return {
        "load_s": round(load.wall, 3),
        "first_scrape_ms": round(first.wall * 1000, 2),
        "scrapes": len(times),
        "scrape_ms": [round(t * 1000, 3) for t in times],
        "scrape_p50_ms": round(percentile(times, 50) * 1000, 3),
        "scrape_p99_ms": round(percentile(times, 99) * 1000, 3),
        "exposition_bytes": len(body),
        "series": sum(1 for line in body.split(b"\n") if line and not line.startswith(b"#")),
        "rss_before_load_bytes": before["VmRSS"],
        "rss_loaded_bytes": loaded["VmRSS"],
        "rss_bytes": after["VmRSS"],
        "rss_peak_bytes": after["VmHWM"],
    }


def _timed(scrape: Callable[[], object], n: int) -> list[float]:
    times = []
    for _ in range(n):
        watch = Stopwatch()
        scrape()
        times.append(watch.stop().wall)
    return times


class _GcPauses(list[tuple[int, float]]):
    """(generation, seconds) of each cyclic-GC run while in the ``with`` block."""

    def _callback(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.append((info["generation"], time.perf_counter() - self._started))

    def __enter__(self) -> _GcPauses:
        gc.callbacks.append(self._callback)
        return self

    def __exit__(self, *_exc: object) -> None:
        gc.callbacks.remove(self._callback)


def _samples(body: bytes) -> dict[str, float]:
    """Values of the unlabelled samples of an exposition."""
    out = {}
    for line in body.decode().splitlines():
        if line and not line.startswith("#") and "{" not in line:
            name, _, value = line.partition(" ")
            out[name] = float(value)
    return out


STAGES = {"build": stage_build, "ours": stage_ours, "naive": stage_naive}


def _spawn(stage: str, p: dict[str, Any]) -> dict[str, Any]:
    """One stage in a fresh interpreter (killed if this process is stopped); its JSON result."""
    out = subprocess.run(
        [sys.executable, "-m", "bench.scrape", stage, json.dumps(p)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        timeout=STAGE_TIMEOUT,
        check=True,
    )
    found: dict[str, Any] = json.loads(out.stdout.decode().strip().splitlines()[-1])
    return found


def _label(n: int) -> str:
    return f"{n // 1_000_000}m" if n % 1_000_000 == 0 else f"{n // 1000}k"


def run(quick: bool) -> dict[str, Any]:
    p = dict(QUICK if quick else FULL)
    sizes: dict[str, dict[str, Any]] = {}
    for n in p["sizes"]:
        with scratch(f"{NAME}-{_label(n)}") as tmp:
            q = {k: v for k, v in p.items() if k != "sizes"} | {"keys": n, "registry": str(tmp / "registry.sqlite")}
            built = _spawn("build", q)
            log(f"{NAME}: {n:,} keys: {built['entries']:,} entries in {built['build_s']:.1f} s; measuring")
            ours = _spawn("ours", q)
            naive = _spawn("naive", q)
        planned = sum(built["attention_planned"].values())
        if ours["attention"] != planned:
            raise RuntimeError(f"{n} keys: the exporter sees {ours['attention']} keys needing attention, not {planned}")
        sizes[_label(n)] = {
            "keys": n,
            "build": built,
            "ours": ours,
            "naive": naive,
            "naive_time_ratio": round(naive["scrape_p50_ms"] / ours["scrape_p50_ms"], 1),
            "naive_size_ratio": round(naive["exposition_bytes"] / ours["exposition_bytes"], 1),
        }
        log(
            f"{NAME}: {n:,} keys: scrape p50 {ours['scrape_p50_ms']:.1f} ms p99 {ours['scrape_p99_ms']:.1f} ms, "
            f"{ours['exposition_bytes']:,} B, RSS peak {ours['rss_peak_bytes'] / 2**20:,.0f} MiB, "
            f"index load {ours['load_s']:.1f} s; naive p50 {naive['scrape_p50_ms']:,.1f} ms, "
            f"{naive['exposition_bytes']:,} B, RSS peak {naive['rss_peak_bytes'] / 2**20:,.0f} MiB"
        )
    top = sizes[_label(p["sizes"][-1])]
    ours, naive = top["ours"], top["naive"]
    return result(
        [
            Metric("scrape_p50_ms_1m_keys", ours["scrape_p50_ms"], "ms", "<= 100", 2),
            Metric("scrape_p99_ms_1m_keys", ours["scrape_p99_ms"], "ms", None, 2),
            Metric("exposition_bytes_1m_keys", ours["exposition_bytes"], "B", "<= 2,000,000"),
            Metric("rss_bytes_1m_keys", ours["rss_peak_bytes"], "B (peak)", "<= 1,500,000,000"),
            Metric("fleet_index_load_s_1m_keys", ours["load_s"], "s", None, 2),
            Metric("naive_scrape_time_ratio_1m_keys", top["naive_time_ratio"], "× (naive/ours)", None, 1),
            Metric("naive_exposition_size_ratio_1m_keys", top["naive_size_ratio"], "× (naive/ours)", None, 1),
        ],
        p | {"core": "one per stage (lowest allowed)", "headline_keys": top["keys"], "gc": "keylife.process.tune_gc"},
        sizes=sizes,
    )


def main(argv: list[str]) -> int:
    stage, params = argv[0], json.loads(argv[1])
    pin(0)
    found = STAGES[stage](params)
    sys.stdout.write(json.dumps(found) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
