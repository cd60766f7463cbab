"""``keylife journal prove / check-proof / consistency`` as an auditor runs them (exit codes, lines)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import orjson

from keylife.journal.note import parse, sign_checkpoint
from tests.journal_helpers import fill, open_journal, signer


def keylife(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "keylife.cli", *args], capture_output=True, text=True, check=False)


def _journal(tmp: Path, count: int = 1200):
    sign = signer(tmp)
    journal = open_journal(tmp, sign, checkpoint_every=500, segment_max_bytes=60_000)
    fill(journal, count, per_commit=50)
    journal.close()
    return tmp / "journal", sign


def test_a_key_bundle_checks_offline_and_any_change_is_named(tmp_path: Path) -> None:
    directory, sign = _journal(tmp_path)
    bundle = tmp_path / "key-3.json"
    done = keylife("journal", "prove", "--journal", str(directory), "--key-id", "key-3", "--out", str(bundle))
    assert done.returncode == 0, done.stderr
    data = orjson.loads(bundle.read_bytes())
    assert [e["seq"] for e in data["entries"]] == [n for n in range(1200) if n % 17 == 3]
    key = sign.verifier.encode()
    moved = tmp_path / "elsewhere.json"  # no journal next to it: the check needs only the bundle and the key
    moved.write_bytes(bundle.read_bytes())
    started = time.perf_counter()
    done = keylife("journal", "check-proof", str(moved), "--key", key)
    assert done.returncode == 0, done.stdout + done.stderr
    assert (
        done.stdout.startswith(f"OK: {len(data['entries'])} entries are in the journal of")
        and time.perf_counter() - started < 10
    )

    forged = dict(data)
    forged["entries"] = [dict(e) for e in data["entries"]]
    forged["entries"][2]["entry"] = forged["entries"][2]["entry"].replace('"encrypt":', '"encrypt":1', 1)
    moved.write_bytes(orjson.dumps(forged))
    done = keylife("journal", "check-proof", str(moved), "--key", key)
    assert done.returncode == 1
    seq = data["entries"][2]["seq"]
    assert f"FAULT entry seq {seq}: the inclusion proof of leaf {seq} does not lead to the root" in done.stdout
    assert "FAILED: 1 fault(s)" in done.stdout

    other = signer(tmp_path / "other")
    moved.write_bytes(bundle.read_bytes())
    done = keylife("journal", "check-proof", str(moved), "--key", other.verifier.encode())
    assert done.returncode == 1 and "FAULT checkpoint (size 1200): unknown signing key" in done.stdout


def test_prove_by_seq(tmp_path: Path) -> None:
    directory, _sign = _journal(tmp_path, 300)
    done = keylife("journal", "prove", "--journal", str(directory), "--seq", "5", "--seq", "299")
    assert done.returncode == 0, done.stderr
    assert [e["seq"] for e in orjson.loads(done.stdout)["entries"]] == [5, 299]


def test_consistency_proves_an_extension_and_reports_a_split_view(tmp_path: Path) -> None:
    directory, sign = _journal(tmp_path)
    notes = [orjson.loads(line)["note"] for line in (directory / "checkpoints.log").read_bytes().splitlines()]
    old, new = tmp_path / "old.cp", tmp_path / "new.cp"
    old.write_text(notes[0])
    new.write_text(notes[-1])
    key = sign.verifier.encode()
    done = keylife("journal", "consistency", str(old), str(new), "--journal", str(directory), "--key", key)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.startswith("CONSISTENT: NEW (size 1200) extends OLD (size 500)")

    cp = parse(notes[-1])  # a second history of the same size, validly signed: shown to another auditor
    fork = tmp_path / "fork.cp"
    fork.write_text(sign_checkpoint(sign, cp.origin, cp.size, bytes(32)).render())
    done = keylife("journal", "consistency", str(new), str(fork), "--journal", str(directory), "--key", key)
    assert done.returncode == 1
    assert done.stdout.startswith("SPLIT VIEW: the same size with two different roots")
    assert notes[-1] in done.stdout and fork.read_text() in done.stdout

    bigger = sign_checkpoint(sign, cp.origin, 1100, bytes(32)).render()
    fork.write_text(bigger)
    done = keylife("journal", "consistency", str(old), str(fork), "--journal", str(directory), "--key", key)
    assert done.returncode == 1 and done.stdout.startswith(
        "SPLIT VIEW: the proof does not lead to the root of size 1100"
    )
    assert "the local journal matches OLD" in done.stdout
