"""The insider attacks of issue 11, each one a test, each one detected and named.

The attacker has disk access (and, in some tests, the signing key): they rewrite entries and
recompute the chain and ``.sums``, delete or cut checkpoint files, re-sign, swap
``verifier.key``. What still catches them: a checkpoint obtained elsewhere (the SIEM's copy),
the start-up check (serve goes read-only and signs nothing), the checkpoint a running writer
holds in memory, and the grace within which a running writer signs every entry.
Where a checkpoint's hash is computed, it goes through ``anchor.expected_root``.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest

from keylife.common.canonical import canonical
from keylife.journal import segments as segs
from keylife.journal.anchor import expected_root
from keylife.journal.note import parse, sign_checkpoint
from keylife.journal.signing import Signer
from keylife.journal.verify import Report, verify
from keylife.journal.verify_status import PeriodicVerify
from keylife.journal.writer import Journal, JournalReadOnly, JournalSettings
from tests.journal_helpers import ORIGIN, fill, open_journal, signer, usage_event
from tests.server import live_server

COUNT = 40
STEP = 10.0  # seconds between entries: the history spans minutes, as a real one does


def build(tmp: Path, sign: Signer, origin: str = ORIGIN, directory: Path | None = None) -> Path:
    """A closed journal of COUNT entries observed STEP s apart, an hour ago; a checkpoint every 10."""
    directory = directory or tmp / "journal"
    journal = Journal(directory, sign, JournalSettings(origin=origin, checkpoint_every=10, seal_in_background=False))
    start = time.time() - 3600
    for n in range(COUNT):
        journal.append([usage_event(n)], observed_at=start + n * STEP)
        journal.commit()
    journal.close()
    return directory


def siem_copy(directory: Path, tmp: Path) -> Path:
    """The latest checkpoint as a SIEM received it (copied off the host before the attack)."""
    saved = tmp / "siem.checkpoint"
    shutil.copy(directory / "checkpoint", saved)
    return saved


def log_path(directory: Path) -> Path:
    return directory / "segments" / segs.seg_name(0, "log")


def sums_path(directory: Path) -> Path:
    return directory / "segments" / segs.seg_name(0, "sums")


def lines_of(directory: Path) -> list[bytes]:
    return segs.split_lines(log_path(directory).read_bytes())


def rewrite(directory: Path, lines: list[bytes]) -> None:
    """Write entries and recompute ``.sums``, as an attacker who knows the format does."""
    log_path(directory).write_bytes(b"".join(line + b"\n" for line in lines))
    sums_path(directory).write_bytes(b"".join(segs.entry_sum(line) for line in lines))


def forged(line: bytes) -> bytes:
    entry = orjson.loads(line)
    entry["event"]["usage"]["encrypt"] = 999_999
    return canonical(entry)


def resign(directory: Path, sign: Signer, sizes: list[int], origin: str = ORIGIN) -> None:
    """Sign the forged history afresh (the attacker holds the key) and replace both checkpoint files."""
    lines = lines_of(directory)
    notes = [sign_checkpoint(sign, origin, size, expected_root(lines[:size])).render() for size in sizes]
    (directory / "checkpoints.log").write_bytes(b"".join(orjson.dumps({"note": n}) + b"\n" for n in notes))
    (directory / "checkpoint").write_text(notes[-1])


def keep_checkpoints(directory: Path, up_to: int) -> None:
    """Drop every checkpoint above ``up_to`` from both files (they still verify one by one)."""
    kept = [
        raw
        for raw in (directory / "checkpoints.log").read_bytes().splitlines()
        if parse(orjson.loads(raw)["note"]).size <= up_to
    ]
    (directory / "checkpoints.log").write_bytes(b"".join(raw + b"\n" for raw in kept))
    (directory / "checkpoint").write_text(orjson.loads(kept[-1])["note"])


def cli_verify(directory: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "keylife.cli", "verify", str(directory), *args],
        capture_output=True,
        text=True,
        check=False,
    )


def kinds(report: Report) -> set[str]:
    return {f.kind for f in report.faults}


def reopen(directory: Path, sign: Signer) -> Journal:
    return Journal(directory, sign, JournalSettings(origin=ORIGIN, checkpoint_every=10, seal_in_background=False))


def checkpoint_files(directory: Path) -> dict[str, bytes]:
    return {n: (directory / n).read_bytes() for n in ("checkpoint", "checkpoints.log") if (directory / n).exists()}


def assert_refuses_to_sign(directory: Path, sign: Signer, reason: str) -> None:
    """Start-up finds the fault, takes no entry, signs nothing, and leaves the checkpoint files as found."""
    before = {
        name: (directory / name).read_bytes()
        for name in ("checkpoint", "checkpoints.log")
        if (directory / name).exists()
    }
    journal = reopen(directory, sign)
    assert journal.integrity_fault is not None and reason in journal.integrity_fault
    journal.append([usage_event(1000)])
    with pytest.raises(JournalReadOnly):
        journal.commit()
    with pytest.raises(JournalReadOnly):
        journal.checkpoint()
    journal.tick(time.time() + 60)
    journal.close()
    after = {
        name: (directory / name).read_bytes()
        for name in ("checkpoint", "checkpoints.log")
        if (directory / name).exists()
    }
    assert after == before


# ----- attack 1: delete every checkpoint file, rewrite an entry with chain and .sums ---------
def test_deleting_all_checkpoints_then_rewriting_is_caught_and_not_signed(tmp_path: Path) -> None:
    sign = signer(tmp_path)
    directory = build(tmp_path, sign)
    saved = siem_copy(directory, tmp_path)
    key = sign.verifier.encode()
    (directory / "checkpoint").unlink()
    (directory / "checkpoints.log").unlink()
    lines = lines_of(directory)
    lines[13] = forged(lines[13])
    rewrite(directory, lines)

    report = verify(directory, [sign.verifier])
    assert "missing_checkpoint" in kinds(report) and report.checkpoints == 0
    unanchored = cli_verify(directory, "--key", key, "--allow-unanchored")
    assert unanchored.returncode == 1 and "FAULT missing_checkpoint" in unanchored.stdout
    anchored = cli_verify(directory, "--key", key, "--checkpoint", str(saved))
    assert anchored.returncode == 1 and "does not match checkpoint given on the command line" in anchored.stdout

    assert_refuses_to_sign(directory, sign, "no checkpoint files")
    assert not (directory / "checkpoint").exists() and not (directory / "checkpoints.log").exists()


def test_forged_history_re_signed_with_the_real_key_fails_against_the_siem_copy(tmp_path: Path) -> None:
    sign = signer(tmp_path)
    directory = build(tmp_path, sign)
    saved = siem_copy(directory, tmp_path)
    lines = lines_of(directory)
    lines[13] = forged(lines[13])
    rewrite(directory, lines)
    resign(directory, sign, [10, 20, 30, 40])  # what a restarted serve used to do

    assert reopen(directory, sign).integrity_fault is None  # consistent on the host: only an anchor can tell
    result = cli_verify(directory, "--key", sign.verifier.encode(), "--checkpoint", str(saved))
    assert result.returncode == 1
    assert "FAULT split_view" in result.stdout and "SPLIT VIEW at size 40" in result.stdout
    assert "does not match checkpoint given on the command line" in result.stdout
    pinned_only = cli_verify(directory, "--key", sign.verifier.encode())
    assert pinned_only.returncode == 1 and "NOT ANCHORED" in pinned_only.stdout


# ----- attack 2: rewrite the entries after the last checkpoint, drop the later checkpoints ----
def test_rewriting_after_a_checkpoint_and_dropping_later_ones_is_caught(tmp_path: Path) -> None:
    sign = signer(tmp_path)
    directory = build(tmp_path, sign)
    saved = siem_copy(directory, tmp_path)
    keep_checkpoints(directory, 20)
    lines = lines_of(directory)
    lines[25:] = [forged(line) for line in lines[25:]]
    rewrite(directory, lines)

    report = verify(directory, [sign.verifier])
    assert any(f.kind == "unsigned_tail" and f.seq == 20 for f in report.faults)
    result = cli_verify(directory, "--key", sign.verifier.encode(), "--checkpoint", str(saved))
    assert result.returncode == 1 and "the Merkle root up to seq 39 does not match" in result.stdout
    assert_refuses_to_sign(directory, sign, "later checkpoints were dropped")


# ----- attack 3: truncate the tail, drop the later checkpoints -------------------------------
def test_truncating_the_tail_and_dropping_later_checkpoints_is_caught(tmp_path: Path) -> None:
    sign = signer(tmp_path)
    directory = build(tmp_path, sign)
    saved = siem_copy(directory, tmp_path)
    keep_checkpoints(directory, 20)
    rewrite(directory, lines_of(directory)[:25])

    assert "unsigned_tail" in kinds(verify(directory, [sign.verifier]))
    result = cli_verify(directory, "--key", sign.verifier.encode(), "--checkpoint", str(saved), "--json")
    assert result.returncode == 1
    faults = orjson.loads(result.stdout)["faults"]
    assert any(f["kind"] == "truncated" and f["seq"] == 25 for f in faults)
    assert_refuses_to_sign(directory, sign, "later checkpoints were dropped")


def test_a_cut_exactly_at_a_checkpoint_needs_the_outside_copy(tmp_path: Path) -> None:
    """Cut at a checkpoint boundary, the host holds a consistent shorter history: the SIEM's copy tells."""
    sign = signer(tmp_path)
    directory = build(tmp_path, sign)
    saved = siem_copy(directory, tmp_path)
    keep_checkpoints(directory, 30)
    rewrite(directory, lines_of(directory)[:30])
    assert verify(directory, [sign.verifier]).ok
    result = cli_verify(directory, "--key", sign.verifier.encode(), "--checkpoint", str(saved))
    assert result.returncode == 1 and "FAULT truncated" in result.stdout


# ----- attack 4: serve on a broken chain -----------------------------------------------------
@pytest.mark.parametrize("sums", ["kept", "recomputed"])
def test_a_broken_chain_is_neither_extended_nor_signed(tmp_path: Path, sums: str) -> None:
    sign = signer(tmp_path)
    directory = build(tmp_path, sign)
    lines = lines_of(directory)
    lines[5] = forged(lines[5])
    if sums == "kept":
        log_path(directory).write_bytes(b"".join(line + b"\n" for line in lines))
        reason = "modified: seq 5"
    else:
        rewrite(directory, lines)
        reason = "do not match the latest signed checkpoint"
    assert_refuses_to_sign(directory, sign, reason)


def test_serve_stays_up_read_only_and_says_why(tmp_path: Path) -> None:
    """The checkpoints deleted and an entry rewritten: serve answers reads, refuses writes, signs
    nothing, /readyz says why, and the metrics keep the verification alert firing."""
    from tests.server import test_config

    config, _tokens = test_config(tmp_path)
    sign = Signer.load_or_create(config.signing_key_path, config.journal.origin)[0]
    directory = build(tmp_path, sign, config.journal.origin, config.journal_dir)
    (directory / "checkpoint").unlink()
    (directory / "checkpoints.log").unlink()
    lines = lines_of(directory)
    lines[13] = forged(lines[13])
    rewrite(directory, lines)

    with live_server(tmp_path) as live, live.client() as client:
        ready = client.get("/readyz")
        assert ready.status_code == 503
        assert "read-only" in ready.json()["detail"] and "no checkpoint files" in ready.json()["detail"]
        body = orjson.dumps(usage_event(5000)) + b"\n"
        refused = client.post("/v1/events", content=body, headers={"Content-Type": "application/x-ndjson"})
        assert refused.status_code == 503 and "read-only" in refused.text
        assert client.get("/v1/keys").status_code == 200  # reads still served
        deadline = time.time() + 10
        while True:
            metrics = client.get("/metrics").text
            if "keylife_journal_verify_faults" in metrics or time.time() > deadline:
                break
            time.sleep(0.1)
        assert "keylife_journal_integrity_ok 0.0" in metrics
        faults = [line for line in metrics.splitlines() if line.startswith("keylife_journal_verify_faults ")]
        assert faults and float(faults[0].split()[1]) > 0  # KeylifeJournalVerificationFailed keeps firing
        assert "keylife_ingest_writer_up 0.0" in metrics
    assert not (directory / "checkpoint").exists() and not (directory / "checkpoints.log").exists()
    assert lines_of(directory) == lines  # nothing appended, not even a recovery note


# ----- attack 5: start-up used to rewrite .sums from the tampered lines ----------------------
def test_after_a_restart_verify_still_names_the_modified_seq(tmp_path: Path) -> None:
    sign = signer(tmp_path)
    directory = build(tmp_path, sign)
    sums = sums_path(directory).read_bytes()
    lines = lines_of(directory)
    lines[13] = forged(lines[13])
    log_path(directory).write_bytes(b"".join(line + b"\n" for line in lines))
    reopen(directory, sign).close()
    assert sums_path(directory).read_bytes() == sums  # the evidence is kept
    report = verify(directory, [sign.verifier])
    assert any(f.kind == "modified" and f.seq == 13 and "digest" in f.detail for f in report.faults)


def test_a_torn_tail_is_cut_but_its_bytes_and_digests_are_kept(tmp_path: Path) -> None:
    sign = signer(tmp_path)
    journal = reopen(tmp_path / "journal", sign)
    fill(journal, 10)
    journal.close()
    directory = tmp_path / "journal"
    sums = sums_path(directory).read_bytes()
    with open(log_path(directory), "ab") as handle:
        handle.write(b'{"event":{"id":"torn"')
    with open(sums_path(directory), "ab") as handle:
        handle.write(b"\x01\x02\x03\x04")
    journal = reopen(directory, sign)
    assert journal.integrity_fault is None and journal.recovery.cut_bytes
    journal.close()
    kept = Path(journal.recovery.kept_as or "")
    assert kept.read_bytes() == b'{"event":{"id":"torn"'
    assert kept.with_suffix(".sums").read_bytes() == b"\x01\x02\x03\x04"
    assert sums_path(directory).read_bytes()[: len(sums)] == sums


# ----- attack 6: a history rewritten from scratch, re-signed, verifier.key swapped -----------
def test_a_history_re_signed_with_another_key_fails_without_an_anchor(tmp_path: Path) -> None:
    real = signer(tmp_path)
    directory = build(tmp_path, real)
    saved = siem_copy(directory, tmp_path)
    shutil.rmtree(directory)
    attacker = signer(tmp_path / "attacker")
    build(tmp_path, attacker)
    (directory / "verifier.key").write_text(attacker.verifier.encode() + "\n")

    plain = cli_verify(directory)
    assert plain.returncode == 1 and "NOT ANCHORED" in plain.stdout
    allowed = cli_verify(directory, "--allow-unanchored")
    assert allowed.returncode == 0 and "UNANCHORED: could not check" in allowed.stdout
    assert "verifier.key beside the journal was trusted" in allowed.stdout
    anchored = cli_verify(directory, "--key", real.verifier.encode(), "--checkpoint", str(saved))
    assert anchored.returncode == 1 and "FAULT unknown_key" in anchored.stdout


# ----- attack 7: two validly signed checkpoints of one size, different hashes ----------------
def test_two_signed_checkpoints_of_one_size_are_a_split_view(tmp_path: Path) -> None:
    sign = signer(tmp_path)
    directory = build(tmp_path, sign)
    other = sign_checkpoint(sign, ORIGIN, 20, expected_root([forged(line) for line in lines_of(directory)[:20]]))
    with open(directory / "checkpoints.log", "ab") as handle:
        handle.write(orjson.dumps({"note": other.render()}) + b"\n")
    report = verify(directory, [sign.verifier])
    split = [f for f in report.faults if f.kind == "split_view"]
    assert split and "SPLIT VIEW at size 20" in split[0].detail
    assert "rollback" in kinds(report)  # size 20 logged after size 40
    result = cli_verify(directory, "--key", sign.verifier.encode(), "--allow-unanchored")
    assert result.returncode == 1 and "FAULT split_view" in result.stdout
    assert_refuses_to_sign(directory, sign, "rollback")


# ----- the live check: a rewrite on a quiet journal, against the checkpoint held in memory ---
def test_a_live_rewrite_is_caught_against_the_checkpoint_in_memory(tmp_path: Path) -> None:
    sign = signer(tmp_path)
    directory = build(tmp_path, sign)
    journal = reopen(directory, sign)
    faults: list[str] = []

    def on_fault(reason: str) -> None:
        faults.append(reason)
        journal.mark_faulty(reason)

    periodic = PeriodicVerify(
        directory, [sign.verifier], 3600, held=lambda: journal.last_checkpoint,
        standing=lambda: journal.integrity_fault, on_fault=on_fault,
    )  # fmt: skip
    assert periodic.run_once().ok
    lines = lines_of(directory)
    lines[13] = forged(lines[13])
    rewrite(directory, lines)
    resign(directory, sign, [10, 20, 30, 40])  # with the real key: consistent on disk, not with memory
    report = periodic.run_once()
    assert {"missing_checkpoint", "modified"} <= kinds(report) and faults
    assert journal.integrity_fault is not None
    journal.append([usage_event(2000)])
    with pytest.raises(JournalReadOnly):
        journal.commit()
    assert "integrity" in kinds(periodic.run_once())  # the alert keeps firing
    journal.close()


def test_a_fresh_unsigned_tail_is_not_a_fault_but_an_old_one_is(tmp_path: Path) -> None:
    sign = signer(tmp_path)
    journal = reopen(tmp_path / "journal", sign)
    fill(journal, 5)  # committed, not checkpointed yet (checkpoint_every=10): a crash now
    directory = tmp_path / "journal"
    assert verify(directory, [sign.verifier]).ok
    report = verify(directory, [sign.verifier], now=time.time() + 60)
    assert "missing_checkpoint" in kinds(report)
    assert reopen(directory, sign).integrity_fault is None  # a crash in the first seconds is no attack


# ----- item 11: a SIEM's copy of a shipped checkpoint is the trusted anchor ------------------
def test_a_checkpoint_shipped_by_the_file_sink_anchors_verify(tmp_path: Path) -> None:
    from audit_forwarder.shipper.tail import checkpoint_record
    from audit_forwarder.sinks.file import FileSink, FileSinkConfig

    sign = signer(tmp_path)
    directory = build(tmp_path, sign)
    shipped = tmp_path / "siem" / "keylife.ndjson"
    sink = FileSink(FileSinkConfig(name="siem", type="file", path=shipped))
    checkpoint = parse((directory / "checkpoint").read_text())
    sink.send([sink.prepare(checkpoint_record(checkpoint, "2026-12-01T00:00:00Z"))])
    sink.close()
    # what docs/journal.md tells the auditor: jq -r 'select(.event.type=="checkpoint") | .event.note'
    records = [orjson.loads(line) for line in shipped.read_bytes().splitlines()]
    note = [r["event"]["note"] for r in records if r["event"].get("type") == "checkpoint"][-1]
    extracted = tmp_path / "from-siem.checkpoint"
    extracted.write_text(note)
    key = sign.verifier.encode()
    for given in (extracted, shipped):  # the note, or the shipped NDJSON as it is
        result = cli_verify(directory, "--key", key, "--checkpoint", str(given))
        assert result.returncode == 0 and f"ANCHORED: entries 0..{COUNT - 1}" in result.stdout, result.stdout
        assert "UNANCHORED" not in result.stdout, result.stdout  # anchored: nothing is listed as unchecked
    lines = lines_of(directory)
    lines[3] = forged(lines[3])
    rewrite(directory, lines)
    resign(directory, sign, [10, 20, 30, 40])
    result = cli_verify(directory, "--key", key, "--checkpoint", str(extracted))
    assert result.returncode == 1 and "SPLIT VIEW" in result.stdout


def test_serve_accepts_its_own_untouched_journal(tmp_path: Path) -> None:
    with live_server(tmp_path) as live, live.client() as client:
        assert client.get("/readyz").status_code == 200
        assert "keylife_journal_integrity_ok 1.0" in client.get("/metrics").text
    with live_server(tmp_path) as live, live.client() as client:  # restarted on what it wrote
        assert client.get("/readyz").status_code == 200


def test_the_live_check_stops_mid_segment_without_a_false_fault(tmp_path: Path) -> None:
    sign = signer(tmp_path)
    journal = reopen(tmp_path / "journal", sign)
    journal.settings.segment_max_bytes = 4096
    fill(journal, 200)
    journal.close()
    directory = tmp_path / "journal"
    sealed = [s for s in segs.list_segments(directory / "segments") if s.sealed]
    middle = segs.read_index(sealed[0])["count"] // 2
    assert verify(directory, [sign.verifier], upto=middle, grace=None).ok


@pytest.mark.parametrize("gone", ["checkpoint", "checkpoints.log"])
def test_deleting_one_checkpoint_file_is_a_fault(tmp_path: Path, gone: str) -> None:
    sign = signer(tmp_path)
    directory = build(tmp_path, sign)
    (directory / gone).unlink()
    faults = [f for f in verify(directory, [sign.verifier]).faults if f.kind == "missing_checkpoint"]
    assert faults and ("missing" in faults[0].detail)
    assert_refuses_to_sign(directory, sign, f"{gone} is missing")


def test_a_latest_checkpoint_missing_from_the_log_is_a_fault(tmp_path: Path) -> None:
    """The log cut back while `checkpoint` still names the newest one."""
    sign = signer(tmp_path)
    directory = build(tmp_path, sign)
    latest = (directory / "checkpoint").read_text()
    keep_checkpoints(directory, 30)
    (directory / "checkpoint").write_text(latest)
    report = verify(directory, [sign.verifier])
    assert any(f.kind == "missing_checkpoint" and "not in checkpoints.log" in f.detail for f in report.faults)
    assert_refuses_to_sign(directory, sign, "not among the newest lines of checkpoints.log")


def test_digests_a_crash_lost_are_completed_not_a_fault(tmp_path: Path) -> None:
    """``.sums`` is appended without fsync: after a power cut it may be short; start-up completes it."""
    sign = signer(tmp_path)
    directory = build(tmp_path, sign)
    sums = sums_path(directory).read_bytes()
    sums_path(directory).write_bytes(sums[: -3 * segs.SUM_BYTES - 1])  # three digests and a torn one lost
    journal = reopen(directory, sign)
    assert journal.integrity_fault is None
    journal.close()
    assert sums_path(directory).read_bytes() == sums


def test_json_says_how_far_the_journal_is_anchored_and_what_was_not_checked(tmp_path: Path) -> None:
    sign = signer(tmp_path)
    directory = build(tmp_path, sign)
    saved = siem_copy(directory, tmp_path)
    key = sign.verifier.encode()
    anchored = orjson.loads(cli_verify(directory, "--key", key, "--checkpoint", str(saved), "--json").stdout)
    assert anchored["ok"] and anchored["anchored"] == COUNT and anchored["not_checked"] == []
    loose = cli_verify(directory, "--key", key, "--allow-unanchored", "--json")
    report = orjson.loads(loose.stdout)
    assert loose.returncode == 0 and report["anchored"] is None
    assert any("no --checkpoint obtained elsewhere" in gap for gap in report["not_checked"])


def test_tiles_rewritten_under_intact_entries_make_start_up_read_only(tmp_path: Path) -> None:
    """The next checkpoint's root comes from the stored tiles: tiles that disagree with the
    entries (which start-up re-hashes, trusting no tile) must not be signed over."""
    sign = signer(tmp_path)
    journal = open_journal(tmp_path, sign, checkpoint_every=100_000)
    fill(journal, 65_536 + 10, per_commit=1_000)
    journal.close()
    tile = tmp_path / "journal" / "tree" / "tile" / "1" / "000"
    data = bytearray(tile.read_bytes())
    data[0] ^= 1
    tile.write_bytes(bytes(data))

    journal = open_journal(tmp_path, sign)
    assert journal.integrity_fault is not None and "stored tiles" in journal.integrity_fault
    journal.append([usage_event(1)])
    with pytest.raises(JournalReadOnly):
        journal.commit()
    journal.close()
