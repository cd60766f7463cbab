"""Rotating the journal signing key inside the log: the entry, verification that follows it, crash safety."""

from __future__ import annotations

import base64
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import orjson
import pytest
import yaml

from keylife.api.auth import hash_token, new_token
from keylife.domain.events import SYSTEM_TYPES, Event
from keylife.journal import key_rotation, rotation
from keylife.journal.note import parse, sign_checkpoint
from keylife.journal.reader import iter_entries
from keylife.journal.signing import Signer, Verifier
from keylife.journal.verify import verify
from keylife.journal.writer import Journal, JournalSettings
from tests.journal_helpers import ORIGIN, fill, signer
from tests.server import start_server

KEY = "journal-signing.key"


def keylife(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "keylife.cli", *args], capture_output=True, text=True, check=False)


def open_at(tmp: Path) -> Journal:
    """The journal as serve opens it: with the key in the key file."""
    sign = key_rotation.load_signer(tmp / KEY, ORIGIN)
    settings = JournalSettings(origin=ORIGIN, checkpoint_every=25, seal_in_background=False, segment_max_bytes=8000)
    return Journal(tmp / "journal", sign, settings)


def make(tmp: Path, count: int = 60) -> Verifier:
    """A journal of ``count`` entries, closed (so checkpointed); returns the first key's verifier."""
    Signer.load_or_create(tmp / KEY, ORIGIN)
    journal = open_at(tmp)
    fill(journal, count)
    journal.close()
    return journal.signer.verifier


def rotate(tmp: Path, then: int = 0, start: int = 1000) -> rotation.Rotation:
    journal = open_at(tmp)
    assert key_rotation.finish(journal, tmp / KEY) is None
    done = key_rotation.rotate(journal, tmp / KEY)
    fill(journal, then, start=start)
    journal.close()
    return done


def checkpoints(tmp: Path) -> list:
    return [parse(orjson.loads(raw)["note"]) for raw in (tmp / "journal/checkpoints.log").read_bytes().splitlines()]


def kinds(report) -> set[str]:
    return {f.kind for f in report.faults}


def test_the_rotation_entry_holds_both_keys_and_the_old_keys_signature_over_the_documented_bytes(
    tmp_path: Path,
) -> None:
    old = make(tmp_path, 60)
    old_pem = (tmp_path / KEY).read_bytes()
    done = rotate(tmp_path)
    entries = list(iter_entries(tmp_path / "journal"))
    assert done.seq == 60 and len(entries) == 61
    event = entries[60].event
    Event.model_validate(event)  # a valid keylife event: the registry and the sinks take it as is
    assert event["type"] == "signing_key_rotated" and "signing_key_rotated" in SYSTEM_TYPES  # never via ingest
    attrs = event["attributes"]
    new = Verifier.parse(attrs["new_verifier_key"])
    assert attrs["old_verifier_key"] == old.encode()
    signed = f"keylife journal key rotation v1\n{ORIGIN}\n60\n{old.encode()}\n{new.encode()}\n".encode()
    assert old.verify(base64.b64decode(attrs["rotation_signature"]), signed)
    # the checkpoint ending with the rotation entry carries both signatures
    dual = checkpoints(tmp_path)[-1]
    assert dual.size == 61 and [s.key_id for s in dual.signatures] == [old.key_id, new.key_id]
    # the key file now holds the new key, 0600; the old private key is gone, nothing left beside it
    assert (tmp_path / KEY).read_bytes() != old_pem
    assert key_rotation.load_signer(tmp_path / KEY, ORIGIN).verifier == new
    assert os.stat(tmp_path / KEY).st_mode & 0o777 == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["journal", KEY]
    hints = orjson.loads((tmp_path / "journal/key-rotations.json").read_bytes())
    assert hints == [{"seq": 60, "old_verifier_key": old.encode(), "new_verifier_key": new.encode()}]


def test_verify_pinned_to_the_old_key_follows_the_rotation_and_checks_every_old_checkpoint(tmp_path: Path) -> None:
    old = make(tmp_path, 60)
    done = rotate(tmp_path, then=80)
    logged = checkpoints(tmp_path)
    assert any(cp.size < 61 for cp in logged) and any(cp.size > 61 for cp in logged)
    report = verify(tmp_path / "journal", [old])
    assert report.ok, [str(f) for f in report.faults]
    assert report.entries == 141 and report.checkpoints == len(logged) + 1  # every line, and the latest file
    assert [r.seq for r in report.rotations] == [60]
    # each old checkpoint, alone, still verifies with the old key: nothing was re-signed
    before = [cp for cp in logged if cp.size <= 61]
    assert before and all(rotation.KeySchedule([old]).check(cp) is None for cp in before)
    # the new key alone: it vouches for its predecessor through the checkpoints it signed
    report = verify(tmp_path / "journal", [done.new])
    assert report.ok, [str(f) for f in report.faults]
    # the CLI says it followed the rotation
    shown = keylife("verify", str(tmp_path / "journal"), "--key", old.encode(), "--allow-unanchored")
    assert shown.returncode == 0, shown.stdout + shown.stderr
    assert f"ROTATED: followed the signing-key rotation at seq 60: {rotation.short(old)} -> " in shown.stdout


def test_several_rotations_in_a_row(tmp_path: Path) -> None:
    k1 = make(tmp_path, 30)
    r2 = rotate(tmp_path, then=30, start=100)
    r3 = rotate(tmp_path, then=30, start=200)
    assert r3.old == r2.new and r2.old == k1
    for pinned in (k1, r2.new, r3.new):
        report = verify(tmp_path / "journal", [pinned])
        assert report.ok, (pinned, [str(f) for f in report.faults])
    assert [r.seq for r in verify(tmp_path / "journal", [k1]).rotations] == [30, 61]
    journal = open_at(tmp_path)  # start-up accepts it (checkpoints by all three keys in the log's tail)
    assert journal.integrity_fault is None and journal.signer.verifier == r3.new
    journal.close()


def test_a_checkpoint_past_the_rotation_signed_by_the_retired_key_is_a_fault(tmp_path: Path) -> None:
    make(tmp_path, 60)
    stolen = key_rotation.load_signer(tmp_path / KEY, ORIGIN)  # a copy taken before the rotation
    rotate(tmp_path, then=40)
    journal = open_at(tmp_path)
    fill(journal, 5, start=5000)
    forged = sign_checkpoint(stolen, ORIGIN, journal.committed_size, journal.tree.root(journal.committed_size))
    journal.close()
    with open(tmp_path / "journal/checkpoints.log", "ab") as log:
        log.write(orjson.dumps({"note": forged.render()}) + b"\n")
    (tmp_path / "journal/checkpoint").write_text(forged.render())
    report = verify(tmp_path / "journal", [stolen.verifier])
    assert "retired_key" in kinds(report)
    fault = next(f for f in report.faults if f.kind == "retired_key")
    assert "retired by the rotation at seq 60" in fault.detail
    journal = open_at(tmp_path)  # start-up refuses to extend it
    assert journal.integrity_fault is not None and "retired key" in journal.integrity_fault
    journal.close()


@pytest.mark.parametrize("forgery", ["bad signature", "untrusted key"])
def test_a_forged_rotation_entry_is_a_fault_naming_its_seq(tmp_path: Path, forgery: str) -> None:
    old = make(tmp_path, 40)
    journal = open_at(tmp_path)
    evil = signer(tmp_path, "evil")
    evil_named = Signer(ORIGIN, evil._private)  # same name, another key
    seq = journal.committed_size
    if forgery == "bad signature":  # claims to be signed by the journal's key
        event = rotation.rotation_event(ORIGIN, seq, evil_named, evil_named.verifier)
        event["attributes"]["old_verifier_key"] = old.encode()
    else:  # a rotation from a key nobody trusts
        event = rotation.rotation_event(ORIGIN, seq, evil_named, signer(tmp_path, "evil2").verifier)
    journal.append([event])
    journal.commit()
    fill(journal, 10, start=500)
    journal.close()  # the real key keeps signing: the forged entry did not switch anything
    report = verify(tmp_path / "journal", [old])
    faults = [f for f in report.faults if f.kind == "bad_rotation"]
    assert faults and faults[0].seq == seq, [str(f) for f in report.faults]
    assert report.rotations == []
    shown = keylife("verify", str(tmp_path / "journal"), "--key", old.encode(), "--allow-unanchored")
    assert shown.returncode == 1 and f"bad_rotation  seq {seq}" in shown.stdout


@pytest.mark.parametrize("crash", ["after the new key", "after the entry", "after the dual checkpoint"])
def test_a_crash_at_any_step_leaves_a_journal_that_verifies_and_starts(
    tmp_path: Path, crash: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = make(tmp_path, 40)

    class Crash(Exception):
        pass

    def boom(*_args: object, **_kwargs: object) -> None:
        raise Crash

    target = {
        "after the new key": (rotation, "rotation_event"),
        "after the entry": (Journal, "checkpoint"),
        "after the dual checkpoint": (key_rotation, "_switch"),
    }[crash]
    journal = open_at(tmp_path)
    with monkeypatch.context() as patch:
        patch.setattr(*target, boom)
        with pytest.raises(Crash):
            key_rotation.rotate(journal, tmp_path / KEY)
    journal._close_fds()  # the process died here: no close, no final checkpoint
    assert (tmp_path / (KEY + ".next")).exists()
    assert verify(tmp_path / "journal", [old], grace=None).ok

    journal = open_at(tmp_path)  # what serve does at start
    assert journal.integrity_fault is None
    note = key_rotation.finish(journal, tmp_path / KEY)
    assert not (tmp_path / (KEY + ".next")).exists()
    if crash == "after the new key":
        assert note is not None and "removed" in note and journal.signer.verifier == old
    else:
        assert note is not None and "finished" in note and journal.signer.verifier != old
    fill(journal, 30, start=900)
    journal.close()
    report = verify(tmp_path / "journal", [old])
    assert report.ok, [str(f) for f in report.faults]
    assert len(report.rotations) == (0 if crash == "after the new key" else 1)
    journal = open_at(tmp_path)
    assert journal.integrity_fault is None
    journal.close()


def test_a_restored_retired_key_does_not_sign(tmp_path: Path) -> None:
    make(tmp_path, 20)
    backup = (tmp_path / KEY).read_bytes()
    rotate(tmp_path, then=10)
    (tmp_path / KEY).unlink()
    (tmp_path / KEY).write_bytes(backup)
    os.chmod(tmp_path / KEY, 0o600)
    journal = open_at(tmp_path)
    with pytest.raises(key_rotation.RotationRefused, match="retired"):
        key_rotation.finish(journal, tmp_path / KEY)
    journal.close()


def test_proof_bundles_check_with_the_key_of_their_checkpoint(tmp_path: Path) -> None:
    old = make(tmp_path, 60)
    directory = tmp_path / "journal"
    before = tmp_path / "before.json"
    assert keylife("journal", "prove", "--journal", str(directory), "--seq", "3", "--out", str(before)).returncode == 0
    done = rotate(tmp_path, then=30)
    after = tmp_path / "after.json"
    made = keylife("journal", "prove", "--journal", str(directory), "--seq", "3", "--seq", "80", "--out", str(after))
    assert made.returncode == 0, made.stderr
    for bundle, key in ((before, old), (after, done.new)):
        checked = keylife("journal", "check-proof", str(bundle), "--key", key.encode())
        assert checked.returncode == 0, checked.stdout + checked.stderr
    # a checkpoint signed by the new key does not check against the old key alone: the bundle
    # does not carry the rotation (docs/journal.md, Rotating the signing key)
    assert keylife("journal", "check-proof", str(after), "--key", old.encode()).returncode == 1


def test_consistency_across_the_rotation_with_either_key(tmp_path: Path) -> None:
    old = make(tmp_path, 60)
    first = tmp_path / "first.note"
    first.write_text(checkpoints(tmp_path)[0].render())  # signed by the old key only
    done = rotate(tmp_path, then=30)
    (tmp_path / "journal/verifier.key").write_text(done.new.encode() + "\n")
    directory = str(tmp_path / "journal")
    for key in ([], ["--key", old.encode()], ["--key", done.new.encode()]):
        shown = keylife("journal", "consistency", str(first), directory + "/checkpoint", "--journal", directory, *key)
        assert shown.returncode == 0 and shown.stdout.startswith("CONSISTENT"), (key, shown.stdout + shown.stderr)


# ----- end to end: a real `keylife serve`, stopped for the rotation, restarted -------------------
def _events(prefix: str, count: int) -> bytes:
    return b"\n".join(
        orjson.dumps(
            {
                "id": f"{prefix}-{n}",
                "type": "usage_report",
                "key_id": f"k-{n % 5}",
                "occurred_at": "2026-11-28T10:00:00Z",
                "usage": {"encrypt": 1},
            }
        )
        for n in range(count)
    )


def _ingest(url: str, token: str, body: bytes) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/x-ndjson"}
    return httpx.post(f"{url}/v1/events", content=body, headers=headers, timeout=10)


def test_rotate_between_two_runs_of_a_real_serve(tmp_path: Path) -> None:
    token = new_token()
    config = tmp_path / "keylife.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "data_dir": str(tmp_path / "data"),
                "listen": {"host": "127.0.0.1", "port": 0},
                "journal": {"origin": "test.keylife/rotate", "verify_interval_seconds": 0.5},
                "api": {"tokens": [{"name": "p", "sha256": hash_token(token), "scopes": ["ingest", "read"]}]},
                "logging": {"level": "WARNING"},
            }
        )
    )
    journal = tmp_path / "data/journal"
    key_file = tmp_path / "data/keys/journal-signing.key"
    proc, url = start_server(config, tmp_path / "ready.json")
    try:
        assert _ingest(url, token, _events("before", 30)).status_code == 200
        forged = {
            "id": "x",
            "type": "signing_key_rotated",
            "occurred_at": "2026-11-28T10:00:00Z",
            "attributes": {"new_verifier_key": "attacker"},
        }
        refused = _ingest(url, token, orjson.dumps(forged))
        assert refused.status_code == 422 and "written by keylife itself" in refused.text  # producers cannot rotate
        busy = keylife("journal", "rotate-signing-key", "--config", str(config))
        assert busy.returncode == 2 and busy.stderr.startswith("keylife: serve is running")
        assert len(busy.stderr.strip().splitlines()) == 1
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)
    old = Verifier.parse((journal / "verifier.key").read_text())
    old_pem = key_file.read_bytes()

    done = keylife("journal", "rotate-signing-key", "--config", str(config))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "PRIVATE" not in done.stdout + done.stderr and old_pem.decode() not in done.stdout
    new = Verifier.parse((journal / "verifier.key").read_text())
    assert new != old and f"current  {new.encode()}" in done.stdout and f"retired  {old.encode()}" in done.stdout
    pubkey = keylife("journal", "pubkey", "--config", str(config))
    assert pubkey.stdout.strip() == new.encode()
    assert key_file.read_bytes() != old_pem and sorted(p.name for p in key_file.parent.iterdir()) == [key_file.name]

    proc, url = start_server(config, tmp_path / "ready.json")  # start-up check passes; signs with the new key
    try:
        assert _ingest(url, token, _events("after", 30)).status_code == 200
        for _ in range(100):  # the periodic verification (pinned to the new key) runs every 0.5 s
            status = orjson.loads((journal / "verify-status.json").read_bytes())
            if status["entries"] >= 61:  # it covered checkpoints signed after the rotation
                break
            time.sleep(0.1)
        assert status["ok"] and status["entries"] >= 61, status
        metrics = httpx.get(f"{url}/metrics", timeout=5).text
        assert "keylife_journal_verify_ok 1.0" in metrics and "keylife_journal_integrity_ok 1.0" in metrics
        keys = httpx.get(f"{url}/v1/keys", headers={"Authorization": f"Bearer {token}"}, timeout=5)
        assert keys.status_code == 200  # the registry caught up over the rotation entry
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)
    latest = parse((journal / "checkpoint").read_text())
    assert [s.key_id for s in latest.signatures] == [new.key_id]
    anchor = tmp_path / "siem-copy.note"
    anchor.write_text(latest.render())
    shown = keylife("verify", str(journal), "--key", old.encode(), "--checkpoint", str(anchor))
    assert shown.returncode == 0, shown.stdout + shown.stderr
    assert "ROTATED: followed the signing-key rotation at seq" in shown.stdout and "ANCHORED" in shown.stdout
    assert "PRIVATE" not in (tmp_path / "ready.stderr").read_text()


def test_rotate_without_a_journal_says_so_in_one_line(tmp_path: Path) -> None:
    done = keylife("journal", "rotate-signing-key", "--data-dir", str(tmp_path / "data"))
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.strip().splitlines() == [
        f"keylife: {tmp_path / 'data/journal'} is not a keylife journal (no journal.json): start keylife serve once"
    ]


def test_rotate_a_running_serve_over_the_api_while_producers_post(tmp_path: Path) -> None:
    admin, producer = new_token(), new_token()
    config = tmp_path / "keylife.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "data_dir": str(tmp_path / "data"),
                "listen": {"host": "127.0.0.1", "port": 0},
                "journal": {"origin": "test.keylife/rotate-live", "checkpoint_every": 50},
                "api": {
                    "tokens": [
                        {"name": "admin", "sha256": hash_token(admin), "scopes": ["admin", "read"]},
                        {"name": "p", "sha256": hash_token(producer), "scopes": ["ingest", "read"]},
                    ]
                },
                "logging": {"level": "WARNING"},
            }
        )
    )
    (tmp_path / "admin.token").write_text(admin)
    (tmp_path / "producer.token").write_text(producer)
    os.chmod(tmp_path / "admin.token", 0o600)
    os.chmod(tmp_path / "producer.token", 0o600)
    journal = tmp_path / "data/journal"
    proc, url = start_server(config, tmp_path / "ready.json")
    acked: list[int] = []
    stop = threading.Event()

    def produce() -> None:
        n = 0
        while not stop.is_set():
            response = _ingest(url, producer, _events(f"live{n}", 20))
            assert response.status_code == 200, response.text
            acked.append(20)
            n += 1

    try:
        old = Verifier.parse(httpx.get(f"{url}/v1/journal/verifier-key", timeout=5).text)
        thread = threading.Thread(target=produce)
        thread.start()
        time.sleep(0.5)
        refused = keylife(
            "journal", "rotate-signing-key", "--url", url, "--token-file", str(tmp_path / "producer.token")
        )
        assert refused.returncode == 2 and "HTTP 403" in refused.stderr and len(refused.stderr.splitlines()) == 1
        done = keylife("journal", "rotate-signing-key", "--url", url, "--token-file", str(tmp_path / "admin.token"))
        time.sleep(0.5)
        stop.set()
        thread.join()
        assert done.returncode == 0, done.stdout + done.stderr
        new = Verifier.parse(httpx.get(f"{url}/v1/journal/verifier-key", timeout=5).text)
        assert new != old and f"current  {new.encode()}" in done.stdout and "PRIVATE" not in done.stdout
        assert keylife("journal", "pubkey", "--config", str(config)).stdout.strip() == new.encode()
        assert sum(acked) > 100
    finally:
        stop.set()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)
    seq = int(done.stdout.split("at seq ")[1].split()[0])
    logged = checkpoints(tmp_path / "data")
    dual = next(cp for cp in logged if cp.size == seq + 1)  # nothing slipped in between
    assert [s.key_id for s in dual.signatures] == [old.key_id, new.key_id]
    assert any(cp.size > seq + 1 and [s.key_id for s in cp.signatures] == [new.key_id] for cp in logged)
    ids = {e.event["id"] for e in iter_entries(journal)}
    assert sum(1 for i in ids if i.startswith("live")) == sum(acked)
    anchor = tmp_path / "siem-copy.note"
    anchor.write_text((journal / "checkpoint").read_text())
    shown = keylife("verify", str(journal), "--key", old.encode(), "--checkpoint", str(anchor))
    assert shown.returncode == 0, shown.stdout + shown.stderr
    assert f"ROTATED: followed the signing-key rotation at seq {seq}" in shown.stdout
    proc, url = start_server(config, tmp_path / "ready.json")  # and it starts again on the new key
    try:
        assert _ingest(url, producer, _events("restart", 5)).status_code == 200
        assert Verifier.parse(httpx.get(f"{url}/v1/journal/verifier-key", timeout=5).text) == new
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)
    log = (tmp_path / "ready.stderr").read_text()
    assert "Traceback" not in log and "ERROR" not in log and "PRIVATE" not in log, log[-3000:]


def test_a_key_switch_that_fails_on_a_running_writer_is_finished_at_the_next_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = make(tmp_path, 40)

    def full_disk(*_args: object) -> None:
        raise OSError(28, "No space left on device")

    journal = open_at(tmp_path)
    with monkeypatch.context() as patch:
        patch.setattr(key_rotation, "_switch", full_disk)
        with pytest.raises(OSError):
            key_rotation.rotate(journal, tmp_path / KEY)
    new = journal.signer.verifier
    assert new != old  # the rotation is journaled: the writer goes on with the new key
    fill(journal, 60, start=700)  # later checkpoints, signed by the new key alone
    journal.close()
    assert key_rotation.load_signer(tmp_path / KEY, ORIGIN).verifier == old  # the file was not switched

    journal = open_at(tmp_path)  # the next start: the old key file, the new key beside it
    assert journal.integrity_fault is None
    assert "finished" in (key_rotation.finish(journal, tmp_path / KEY) or "")
    assert journal.signer.verifier == new == key_rotation.load_signer(tmp_path / KEY, ORIGIN).verifier
    fill(journal, 10, start=900)
    journal.close()
    report = verify(tmp_path / "journal", [old])
    assert report.ok and [r.seq for r in report.rotations] == [40], [str(f) for f in report.faults]


def test_the_periodic_check_follows_a_rotation_past_the_checkpoint_it_holds(tmp_path: Path) -> None:
    """serve's check reads up to the checkpoint it holds; a live rotation and checkpoints by the
    new key logged meanwhile must not look like an unknown key (that would make serve read-only)."""
    old = make(tmp_path, 40)
    held = parse((tmp_path / "journal/checkpoint").read_text())
    rotate(tmp_path, then=60)
    assert any(cp.size > 41 for cp in checkpoints(tmp_path))
    report = verify(tmp_path / "journal", [old], held=held, upto=held.size, grace=None)
    assert report.ok, [str(f) for f in report.faults]
