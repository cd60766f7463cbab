"""Proofs over the journal's Merkle tree: serving an inclusion proof, checking a 1,000-entry bundle.

Why: an auditor, a SIEM or a court checks one key's history against one signed checkpoint; the
API must answer an inclusion proof as cheaply as a registry read (<= 1 ms), and a bundle of a
key's 1,000 entries must check offline in milliseconds (<= 50 ms). The journal is built as
``verify`` builds it (half sealed); proofs are computed the way the route does
(``inclusion_answer`` on the open journal's tree, under its lock), over random seqs: "cold"
needs the seq's 256-entry block read back from a sealed frame, "warm" finds it cached.
"""

from __future__ import annotations

import random
import time
from typing import Any

import orjson

from bench.common import ORIGIN, Metric, log, percentile, pin, result, scratch
from bench.verify_speed import build
from keylife.journal.proofs import check_bundle, inclusion_answer, make_bundle
from keylife.journal.writer import Journal, JournalSettings

NAME = "proofs"
FULL = {"entries": 400_000, "sealed_share": 0.5, "segment_entries": 100_000, "append_batch": 1000, "proofs": 2000}
QUICK = {"entries": 40_000, "sealed_share": 0.5, "segment_entries": 10_000, "append_batch": 1000, "proofs": 300}
BUNDLE_ENTRIES = 1000


def run(quick: bool) -> dict[str, Any]:
    p = dict(QUICK if quick else FULL)
    core = pin(0)
    rng = random.Random(11)
    with scratch(NAME) as tmp:
        signer = build(tmp, p)
        started = time.perf_counter()
        journal = Journal(tmp / "journal", signer, JournalSettings(origin=ORIGIN, seal_in_background=False))
        open_seconds = time.perf_counter() - started
        size = journal.last_checkpoint.size if journal.last_checkpoint else 0
        cold, warm = [], []
        for _ in range(p["proofs"]):
            seq = rng.randrange(size)
            for times in (cold, warm):
                t0 = time.perf_counter()
                with journal.lock:
                    answer = inclusion_answer(journal.tree, seq, size)
                times.append((time.perf_counter() - t0) * 1000)
            journal.tree.forget()  # the next seq is cold again
        body = orjson.dumps(answer)
        note = (tmp / "journal" / "checkpoint").read_text()
        seqs = sorted(rng.sample(range(size), BUNDLE_ENTRIES))
        t0 = time.perf_counter()
        bundle = orjson.dumps(make_bundle(tmp / "journal", note, seqs=seqs))
        make_seconds = time.perf_counter() - t0
        checks = []
        for _ in range(5):
            t0 = time.perf_counter()
            checked = check_bundle(bundle, [signer.verifier])
            checks.append((time.perf_counter() - t0) * 1000)
        journal.close()
    if not checked.ok or checked.entries != BUNDLE_ENTRIES:
        raise RuntimeError(f"the bundle did not check: {checked.faults[:3]}")
    check_ms = sorted(checks)[len(checks) // 2]
    log(
        f"{NAME}: inclusion proof p50 {percentile(cold, 50):.3f} ms cold / {percentile(warm, 50):.3f} ms warm; "
        f"bundle of {BUNDLE_ENTRIES} checked in {check_ms:.1f} ms"
    )
    return result(
        [
            Metric("inclusion_proof_p50_ms_cold", percentile(cold, 50), "ms", "<= 1", 3),
            Metric("inclusion_proof_p99_ms_cold", percentile(cold, 99), "ms", None, 3),
            Metric("inclusion_proof_p50_ms_warm", percentile(warm, 50), "ms", None, 3),
            Metric("bundle_1000_check_ms", check_ms, "ms", "<= 50", 1),
        ],
        p | {"core": core, "tree_size": size},
        inclusion_p99_ms_warm=round(percentile(warm, 99), 3),
        proof_answer_bytes=len(body),
        bundle_bytes=len(bundle),
        bundle_make_seconds=round(make_seconds, 3),
        journal_open_seconds=round(open_seconds, 3),
    )
