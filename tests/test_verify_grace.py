"""``keylife verify --config`` takes the unsigned-entry grace from the config's checkpoint interval.

Entries after the last checkpoint are a fault once they are older than the grace
(``checkpoint_interval_seconds`` + 2 s). A site that checkpoints every minute must not see its
normal, still unsigned tail reported as tampering; a site on the default (1 s) must.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

from tests.journal_helpers import fill, open_journal, signer, usage_event


def _verify(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "keylife.cli", "verify", *args], capture_output=True, text=True, check=False
    )


def test_verify_reads_the_grace_from_the_config(tmp_path: Path) -> None:
    sign = signer(tmp_path)
    journal = open_journal(tmp_path, sign)
    fill(journal, 5)
    journal.checkpoint()
    anchor = tmp_path / "anchor.checkpoint"
    shutil.copy(tmp_path / "journal" / "checkpoint", anchor)
    journal.append([usage_event(n) for n in range(5, 8)], observed_at=time.time() - 30)
    journal.commit()  # durable, not yet signed: 30 s old
    directory = str(tmp_path / "journal")
    anchored = ["--key", sign.verifier.encode(), "--checkpoint", str(anchor)]

    default = _verify(directory, *anchored)
    assert default.returncode == 1, default.stdout + default.stderr
    assert "unsigned_tail" in default.stdout and "seq 5" in default.stdout

    config = tmp_path / "keylife.yaml"
    config.write_text(
        yaml.safe_dump({"data_dir": str(tmp_path / "data"), "journal": {"checkpoint_interval_seconds": 60}})
    )
    slow_site = _verify(directory, *anchored, "--config", str(config))
    assert slow_site.returncode == 0, slow_site.stdout + slow_site.stderr
    assert "unsigned_tail" not in slow_site.stdout
    journal.close()
