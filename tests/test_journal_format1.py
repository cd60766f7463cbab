"""Journals written by the previous release (format 1: checkpoints sign the chain head) still verify.

The fixture writes a journal the way the old writer did: the same segments and digests, a
``journal.json`` of format 1, and checkpoints whose third line is the chain head ``h[size-1]``.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

import orjson

from keylife.journal.note import sign_checkpoint
from keylife.journal.signing import Signer
from keylife.journal.writer import genesis_hash
from tests.journal_helpers import ORIGIN, fill, open_journal, signer


def write_format1(tmp: Path, count: int = 30, every: int = 10) -> tuple[Path, Signer]:
    """A journal as release 1 wrote it: chain-head checkpoints every ``every`` entries, no tree."""
    sign = signer(tmp)
    journal = open_journal(tmp, sign, checkpoint_every=10**9, checkpoint_interval=10**9)
    fill(journal, count)
    journal.close()
    directory = tmp / "journal"
    lines = next((directory / "segments").glob("*.log")).read_bytes().split(b"\n")[:-1]
    chain, notes = genesis_hash(ORIGIN), []
    for size, line in enumerate(lines, start=1):
        chain = hashlib.sha256(chain + line).digest()
        if size % every == 0 or size == len(lines):
            notes.append(sign_checkpoint(sign, ORIGIN, size, chain).render())
    (directory / "checkpoints.log").write_bytes(b"".join(orjson.dumps({"note": n}) + b"\n" for n in notes))
    (directory / "checkpoint").write_text(notes[-1])
    (directory / "journal.json").write_bytes(orjson.dumps({"format": 1, "origin": ORIGIN}))
    shutil.rmtree(directory / "tree", ignore_errors=True)
    return directory, sign


def keylife_verify(directory: Path, sign: Signer) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "keylife.cli",
            "verify",
            str(directory),
            "--key",
            sign.verifier.encode(),
            "--allow-unanchored",
        ],
        capture_output=True,
        text=True,
        check=False,
    )


def test_a_format1_journal_verifies_and_a_modified_entry_is_caught(tmp_path: Path) -> None:
    directory, sign = write_format1(tmp_path)
    done = keylife_verify(directory, sign)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "OK: 30 entries, 4 signed checkpoints checked" in done.stdout
    log = next((directory / "segments").glob("*.log"))
    log.write_bytes(log.read_bytes().replace(b'"encrypt":13', b'"encrypt":99', 1))
    done = keylife_verify(directory, sign)
    assert done.returncode == 1
    assert "FAULT modified      seq 13: entry differs from the digest written with it" in done.stdout
    assert "seq 19: the Merkle root up to seq 19 does not match checkpoints.log line 2" in done.stdout


def test_the_new_writer_continues_a_format1_journal_with_merkle_checkpoints(tmp_path: Path) -> None:
    directory, sign = write_format1(tmp_path)
    journal = open_journal(tmp_path, sign, checkpoint_every=10)
    fill(journal, 20, start=30)
    journal.close()
    meta = orjson.loads((directory / "journal.json").read_bytes())
    assert meta == {"format": 2, "origin": ORIGIN, "chain_checkpoints_upto": 30}
    done = keylife_verify(directory, sign)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "OK: 50 entries, 6 signed checkpoints checked" in done.stdout


def test_after_the_upgrade_a_chain_checkpoint_is_no_longer_accepted(tmp_path: Path) -> None:
    """A host that signs the chain head past the upgrade point is not trusted: only the Merkle root counts."""
    directory, sign = write_format1(tmp_path)
    journal = open_journal(tmp_path, sign, checkpoint_every=10)
    fill(journal, 20, start=30)
    journal.close()
    chain = genesis_hash(ORIGIN)
    for line in next((directory / "segments").glob("*.log")).read_bytes().split(b"\n")[:40]:
        chain = hashlib.sha256(chain + line).digest()
    with open(directory / "checkpoints.log", "ab") as handle:
        handle.write(orjson.dumps({"note": sign_checkpoint(sign, ORIGIN, 40, chain).render()}) + b"\n")
    done = keylife_verify(directory, sign)
    assert done.returncode == 1
    assert "the Merkle root up to seq 39 does not match checkpoints.log line" in done.stdout


def test_consistency_from_a_format1_checkpoint_is_checked_by_the_local_journal(tmp_path: Path) -> None:
    directory, sign = write_format1(tmp_path)
    old = tmp_path / "old.cp"
    old.write_text((directory / "checkpoint").read_text())
    journal = open_journal(tmp_path, sign, checkpoint_every=10)
    fill(journal, 20, start=30)
    journal.close()
    new = tmp_path / "new.cp"
    new.write_text((directory / "checkpoint").read_text())
    key = sign.verifier.encode()
    done = subprocess.run(
        [sys.executable, "-m", "keylife.cli", "journal", "consistency", str(old), str(new), "--journal", str(directory),
         "--key", key],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.startswith("CONSISTENT: NEW (size 50) extends OLD (size 30), by the local journal")
