"""The benchmark runner still runs: a quick pass of every benchmark yields the documented JSON.

Speed is not asserted here (bench/ measures it); only that each benchmark produces its figures.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson

ROOT = Path(__file__).parents[1]
EXPECTED = {
    "ingest_http": "ingest_http_events_per_s",
    "journal_append": "journal_append_events_per_s",
    "ack_latency": "ack_latency_p99_ms",
    "verify": "verify_entries_per_s",
    "bytes_sealed": "bytes_per_event_sealed",
    "scrape": "scrape_p50_ms_1m_keys",
}


def test_quick_bench_produces_every_figure(tmp_path: Path) -> None:
    out = tmp_path / "quick.json"
    readme_before = (ROOT / "README.md").read_text()
    result = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--no-readme", "--output", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    report = orjson.loads(out.read_bytes())
    assert report["quick"] is True and report["machine"]["nproc"] >= 1
    for name, measurement in EXPECTED.items():
        metrics = {m["measurement"]: m for m in report["benchmarks"][name]["metrics"]}
        assert metrics[measurement]["figure"] > 0, (name, metrics)
    assert (ROOT / "README.md").read_text() == readme_before
