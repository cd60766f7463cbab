"""keylife serve reads DataFold sources from its config (datafold.files) into its own journal."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from keylife.journal.reader import iter_entries
from tests.datafold_samples import samples_dir
from tests.server import live_server


def test_serve_follows_a_configured_node_log(tmp_path: Path) -> None:
    log = tmp_path / "node.log"
    shutil.copy(samples_dir() / "node-log.log", log)
    datafold = {"files": [{"path": str(log), "node": "node-a"}], "usage_interval_seconds": 1}
    with live_server(tmp_path, datafold=datafold) as live:
        deadline = time.monotonic() + 20
        while True:
            ids = {e.event["id"] for e in iter_entries(live.runtime.journal.directory)}
            if any(i.startswith("df-") for i in ids) and any(
                e.event["type"] == "security_event" for e in iter_entries(live.runtime.journal.directory)
            ):
                break
            assert time.monotonic() < deadline, f"no DataFold events journaled: {sorted(ids)[:10]}"
            time.sleep(0.2)
        rejects = list((tmp_path / "data" / "datafold").glob("*rejects*"))
    assert rejects and rejects[0].read_text().count("\n") >= 1  # the malformed sample line, kept
