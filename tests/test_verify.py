"""``verify`` names each kind of tampering with its seq; random single edits are always caught."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keylife.common.canonical import canonical
from keylife.journal import segments as segs
from keylife.journal.note import parse, sign_checkpoint
from keylife.journal.signing import Signer
from keylife.journal.verify import Report, verify
from tests.journal_helpers import ORIGIN, fill, open_journal, signer

COUNT = 40


@pytest.fixture
def journal_dir(tmp_path: Path) -> tuple[Path, Signer]:
    sign = signer(tmp_path)
    journal = open_journal(tmp_path, sign, checkpoint_every=10)
    fill(journal, COUNT)
    journal.close()
    return tmp_path / "journal", sign


def log_path(directory: Path) -> Path:
    return directory / "segments" / segs.seg_name(0, "log")


def read_lines(directory: Path) -> list[bytes]:
    return log_path(directory).read_bytes().split(b"\n")[:-1]


def write_lines(directory: Path, lines: list[bytes]) -> None:
    log_path(directory).write_bytes(b"".join(line + b"\n" for line in lines))


def kinds(report: Report) -> set[tuple[str, int | None]]:
    return {(f.kind, f.seq) for f in report.faults}


def test_untouched_journal_verifies(journal_dir: tuple[Path, Signer]) -> None:
    directory, sign = journal_dir
    report = verify(directory, [sign.verifier])
    assert report.ok and report.entries == COUNT and report.checkpoints >= 4 and report.unsigned_tail == 0


def test_modified_entry_is_named(journal_dir: tuple[Path, Signer]) -> None:
    directory, sign = journal_dir
    lines = read_lines(directory)
    lines[13] = lines[13].replace(b'"encrypt":13', b'"encrypt":99')
    write_lines(directory, lines)
    report = verify(directory, [sign.verifier])
    assert ("modified", 13) in kinds(report)
    assert any("does not match" in f.detail for f in report.faults)  # the signed chain disagrees too


def test_deleted_entry_is_named(journal_dir: tuple[Path, Signer]) -> None:
    directory, sign = journal_dir
    lines = read_lines(directory)
    del lines[21]
    write_lines(directory, lines)
    assert ("deleted", 21) in kinds(verify(directory, [sign.verifier]))


def test_swapped_entries_are_reordered(journal_dir: tuple[Path, Signer]) -> None:
    directory, sign = journal_dir
    lines = read_lines(directory)
    lines[7], lines[8] = lines[8], lines[7]
    write_lines(directory, lines)
    found = kinds(verify(directory, [sign.verifier]))
    assert ("reordered", 7) in found
    assert not any(kind == "deleted" for kind, _ in found)


def test_inserted_entry_is_named(journal_dir: tuple[Path, Signer]) -> None:
    directory, sign = journal_dir
    lines = read_lines(directory)
    forged = orjson.loads(lines[30])
    forged["event"]["id"] = "forged"
    lines.insert(31, canonical(forged))
    write_lines(directory, lines)
    report = verify(directory, [sign.verifier])
    assert ("inserted", 30) in kinds(report)
    assert any("fabricated" in f.detail for f in report.faults)


def test_truncation_is_proven_by_a_checkpoint_saved_elsewhere(journal_dir: tuple[Path, Signer], tmp_path: Path) -> None:
    directory, sign = journal_dir
    saved = tmp_path / "published-checkpoint"
    shutil.copy(directory / "checkpoint", saved)
    # The attacker cuts the last 15 entries and rolls the local checkpoints back to match.
    write_lines(directory, read_lines(directory)[:25])
    (directory / "segments" / segs.seg_name(0, "sums")).write_bytes(
        b"".join(segs.entry_sum(line) for line in read_lines(directory))
    )
    history = [
        r
        for r in (directory / "checkpoints.log").read_bytes().splitlines()
        if parse(orjson.loads(r)["note"]).size <= 25
    ]
    (directory / "checkpoints.log").write_bytes(b"\n".join(history) + b"\n")
    (directory / "checkpoint").write_text(orjson.loads(history[-1])["note"])
    assert verify(directory, [sign.verifier]).ok  # locally consistent: only the outside copy can tell
    report = verify(directory, [sign.verifier], [parse(saved.read_text())])
    assert ("truncated", 25) in kinds(report)


def test_forged_checkpoints_are_refused(journal_dir: tuple[Path, Signer], tmp_path: Path) -> None:
    directory, sign = journal_dir
    note = (directory / "checkpoint").read_text()
    cp = parse(note)
    other = signer(tmp_path / "attacker")
    forged = sign_checkpoint(other, ORIGIN, cp.size, cp.hash).render()
    (directory / "checkpoint").write_text(forged)
    assert any(f.kind == "unknown_key" for f in verify(directory, [sign.verifier]).faults)
    lines = note.split("\n")
    lines[1] = str(cp.size + 1)
    (directory / "checkpoint").write_text("\n".join(lines))
    assert any(f.kind == "bad_signature" for f in verify(directory, [sign.verifier]).faults)


def test_corrupt_sealed_segment_is_named(tmp_path: Path) -> None:
    sign = signer(tmp_path)
    journal = open_journal(tmp_path, sign, segment_max_bytes=4096)
    fill(journal, 200)
    journal.close()
    seg = next(s for s in segs.list_segments(tmp_path / "journal/segments") if s.sealed)
    data = bytearray(seg.path("zst").read_bytes())
    data[len(data) // 2] ^= 0x55
    seg.path("zst").write_bytes(bytes(data))
    report = verify(tmp_path / "journal", [sign.verifier])
    assert any(f.kind == "modified" and f.seq == seg.first_seq for f in report.faults)


EDITS = st.sampled_from(["flip", "delete", "duplicate", "swap", "truncate_line"])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(edit=EDITS, where=st.integers(min_value=0, max_value=10**9), bit=st.integers(min_value=0, max_value=7))
def test_any_single_edit_is_caught(journal_dir: tuple[Path, Signer], edit: str, where: int, bit: int) -> None:
    directory, sign = journal_dir
    original = log_path(directory).read_bytes()
    try:
        lines = read_lines(directory)
        index = where % len(lines)
        if edit == "flip":
            data = bytearray(original)
            data[where % len(data)] ^= 1 << bit
            log_path(directory).write_bytes(bytes(data))
        else:
            if edit == "delete":
                del lines[index]
            elif edit == "duplicate":
                lines.insert(index, lines[index])
            elif edit == "swap":
                other = (index + 1 + where // len(lines) % (len(lines) - 1)) % len(lines)
                lines[index], lines[other] = lines[other], lines[index]
            else:
                lines[index] = lines[index][:-1]
            write_lines(directory, lines)
        assert not verify(directory, [sign.verifier]).ok
    finally:
        log_path(directory).write_bytes(original)


def test_cli_exits_non_zero_and_names_the_fault(journal_dir: tuple[Path, Signer], tmp_path: Path) -> None:
    directory, sign = journal_dir
    key = sign.verifier.encode()
    saved = tmp_path / "published.checkpoint"
    shutil.copy(directory / "checkpoint", saved)  # what a SIEM or a publication holds
    anchored = ["--key", key, "--checkpoint", str(saved)]
    ok = subprocess.run(
        [sys.executable, "-m", "keylife.cli", "verify", str(directory), *anchored],
        capture_output=True,
        text=True,
        check=False,
    )
    assert ok.returncode == 0 and "OK: 40 entries" in ok.stdout and "ANCHORED: entries 0..39" in ok.stdout
    lines = read_lines(directory)
    del lines[3]
    write_lines(directory, lines)
    bad = subprocess.run(
        [sys.executable, "-m", "keylife.cli", "verify", str(directory), *anchored, "--json"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert bad.returncode == 1
    report = orjson.loads(bad.stdout)
    assert {"kind": "deleted", "seq": 3, "detail": "entry is missing from the journal"} in report["faults"]
