"""``keylife journal prune``: bodies go, hashes stay; every checkpoint and proof still verifies,
verify reports the range as pruned, and a prune that was not journaled is a deletion."""

from __future__ import annotations

import base64
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest

from keylife.common.datalock import DataLock
from keylife.journal import merkle, prune
from keylife.journal import segments as segs
from keylife.journal.note import parse
from keylife.journal.reader import EntryTail, genesis_hash
from keylife.journal.signing import Signer
from keylife.journal.tree import open_tree
from keylife.journal.writer import Journal, JournalSettings
from tests.journal_helpers import usage_event

ORIGIN = "test.keylife/prune"
DAYS, PER_DAY = 10, 60
TOTAL = DAYS * PER_DAY
T0 = datetime(2019, 1, 1, tzinfo=UTC).timestamp()


def keylife(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "keylife.cli", *args], capture_output=True, text=True, check=False)


def settings(**more: object) -> JournalSettings:
    options = {"segment_max_bytes": 4096, "seal_in_background": False, "checkpoint_every": 50, **more}
    return JournalSettings(origin=ORIGIN, **options)  # type: ignore[arg-type]


class Site:
    """A stopped keylife data directory: config, signing key, a journal over ten days of 2019."""

    def __init__(self, root: Path) -> None:
        self.data = root / "data"
        self.journal = self.data / "journal"
        self.config = root / "keylife.yaml"
        self.config.write_text(f"data_dir: {self.data}\njournal:\n  origin: {ORIGIN}\n  segment_max_bytes: 4096\n")
        self.signer = Signer.load_or_create(self.data / "keys" / "journal-signing.key", ORIGIN)[0]
        self.key = root / "verifier.key"
        self.key.write_text(self.signer.verifier.encode() + "\n")
        self.before = root / "before.checkpoint"

    def open(self) -> Journal:
        return Journal(self.journal, self.signer, settings())

    def build(self) -> None:
        journal = self.open()
        n = 0
        for day in range(DAYS):
            for step in range(PER_DAY // 10):
                journal.append([usage_event(n + i) for i in range(10)], observed_at=T0 + day * 86400 + step)
                journal.commit()
                n += 10
        journal.close()
        self.before.write_bytes((self.journal / "checkpoint").read_bytes())

    def prune(self, before: str = "2019-01-05", *more: str) -> subprocess.CompletedProcess[str]:
        return keylife("journal", "prune", "--config", str(self.config), "--before", before, *more)

    def verify(self, checkpoint: Path) -> subprocess.CompletedProcess[str]:
        return keylife("verify", str(self.journal), "--key", str(self.key), "--checkpoint", str(checkpoint))

    def checkpoints(self) -> list[str]:
        lines = (self.journal / "checkpoints.log").read_bytes().splitlines()
        return [orjson.loads(line)["note"] for line in lines]


@pytest.fixture
def site(tmp_path: Path) -> Site:
    s = Site(tmp_path)
    s.build()
    return s


def pruned_first_segments(site: Site) -> list[segs.SegmentFiles]:
    return [seg for seg in segs.list_segments(site.journal / "segments") if seg.pruned]


def test_prune_keeps_hashes_and_verify_reports_the_range_as_pruned(site: Site, tmp_path: Path) -> None:
    done = site.prune()
    assert done.returncode == 0, done.stderr
    first_line = done.stdout.splitlines()[0]
    assert first_line.startswith("pruned entries 0..") and "observed before 2019-01-05T00:00:00Z" in first_line
    last = int(first_line.split("..")[1].split(" ")[0])
    assert f"announced at seq {TOTAL}" in first_line
    assert f"kept from seq {last + 1}: segment {last + 1}" in done.stdout  # rounded down to whole segments
    kept = pruned_first_segments(site)
    assert kept and all(not seg.path("zst").exists() and not seg.path("sums").exists() for seg in kept)
    # every entry pruned was observed before the date; the next one was not
    lines = list(segs.segment_lines(segs.list_segments(site.journal / "segments")[len(kept)]))
    assert orjson.loads(lines[-1])["observed_at"] >= "2019-01-05"

    pruned_line = (
        f"PRUNED: entries 0..{last} (bodies of entries observed before 2019-01-05T00:00:00Z removed on "
        f"{datetime.now(UTC):%Y-%m-%d} by the prune at seq {TOTAL}; leaf hashes kept)"
    )
    for checkpoint in (site.before, site.journal / "checkpoint"):  # anchored before and after the prune
        done = site.verify(checkpoint)
        assert done.returncode == 0, done.stdout
        assert done.stdout.startswith(f"OK: {TOTAL + 1} entries") and pruned_line in done.stdout
        assert "FAULT" not in done.stdout


def test_bytes_kept_per_pruned_entry(site: Site) -> None:
    assert site.prune().returncode == 0
    kept = pruned_first_segments(site)
    count = sum(segs.read_index(seg)["count"] for seg in kept)
    leaves = sum(seg.path("leaves").stat().st_size for seg in kept)
    index = sum(seg.path("idx").stat().st_size for seg in kept)
    assert leaves == 32 * count
    # ~20 entries a segment here: the .idx (~560 B) weighs; at 64 MiB segments it is < 0.01 B/entry
    print(f"pruned: {leaves / count:.1f} B/entry leaves + {index / count:.1f} B/entry index ({count} entries)")


def test_proofs_over_the_pruned_range_still_verify(site: Site, tmp_path: Path) -> None:
    assert site.prune().returncode == 0
    notes = site.checkpoints()
    old = parse(notes[0])  # size 50: wholly inside the pruned range
    new = parse((site.journal / "checkpoint").read_text())
    tree, _ = open_tree(site.journal, new.size)
    assert tree.root(old.size) == old.hash and tree.root() == new.hash
    merkle.verify_consistency(old.size, new.size, old.hash, new.hash, tree.consistency(old.size, new.size))
    leaf = tree.subtree(7, 8)  # a pruned entry: its leaf hash is kept and its inclusion proven
    merkle.verify_inclusion(7, old.size, leaf, tree.inclusion(7, old.size), old.hash)
    merkle.verify_inclusion(7, new.size, leaf, tree.inclusion(7, new.size), new.hash)

    (tmp_path / "old").write_text(notes[0])
    done = keylife(
        "journal", "consistency", str(tmp_path / "old"), str(site.journal / "checkpoint"),
        "--journal", str(site.journal), "--key", str(site.key),
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr

    done = keylife("journal", "prove", "--journal", str(site.journal), "--seq", "7")
    assert done.returncode == 2
    assert "seq 7 was pruned" in done.stderr and "its leaf hash is kept" in done.stderr
    end = segs.read_index(pruned_first_segments(site)[-1])["last_seq"]
    bundle = tmp_path / "bundle.json"
    first_kept = str(end + 1)  # in the same 256-entry block as pruned entries
    done = keylife(
        "journal", "prove", "--journal", str(site.journal), "--seq", first_kept, "--seq", "590", "--out", str(bundle)
    )
    assert done.returncode == 0, done.stderr
    assert f"entries 0..{end} were pruned: their bodies are gone and not in the bundle" in done.stderr
    done = keylife("journal", "check-proof", str(bundle), "--key", str(site.key))
    assert done.returncode == 0, done.stdout
    done = keylife("journal", "prove", "--journal", str(site.journal), "--key-id", "key-3", "--out", str(bundle))
    assert done.returncode == 0, done.stderr
    seqs = [item["seq"] for item in orjson.loads(bundle.read_bytes())["entries"]]
    assert seqs and min(seqs) > end and orjson.loads(bundle.read_bytes())["pruned"] == [[0, end]]
    assert keylife("journal", "check-proof", str(bundle), "--key", str(site.key)).returncode == 0


def test_a_journal_opens_on_a_pruned_start_and_keeps_appending(site: Site) -> None:
    assert site.prune().returncode == 0
    journal = site.open()
    assert journal.integrity_fault is None and journal.size == TOTAL + 1
    journal.append([usage_event(10_000)])
    journal.commit()
    journal.close()
    done = site.verify(site.journal / "checkpoint")
    assert done.returncode == 0 and f"OK: {TOTAL + 2} entries" in done.stdout


def test_serve_starts_on_a_pruned_journal_and_ingests(site: Site, tmp_path: Path) -> None:
    from tests.server import live_server

    done = keylife("registry", "rebuild", "--config", str(site.config))  # the registry serve kept before
    assert done.returncode == 0, done.stderr
    assert site.prune().returncode == 0
    event = usage_event(20_000) | {"id": "after-prune"}
    journal = {"origin": ORIGIN}
    with live_server(tmp_path, journal=journal) as live:
        assert live.runtime.journal.integrity_fault is None
        with live.client() as client:
            response = client.post("/v1/events", json=event)
            assert response.status_code in (200, 201, 202), response.text
            proof = client.get("/v1/journal/proof/inclusion", params={"seq": 3, "size": 50})
            assert proof.status_code == 200, proof.text  # a pruned entry: its leaf hash and path
            answer = proof.json()
            old = parse(site.checkpoints()[0])
            path = [base64.b64decode(h) for h in answer["proof"]]
            merkle.verify_inclusion(3, 50, base64.b64decode(answer["leaf_hash"]), path, old.hash)
            tile = client.get("/v1/journal/tile/0/000")  # C2SP level-0 tile: leaf hashes, pruned or not
            assert tile.status_code == 200
            kept = b"".join(seg.path("leaves").read_bytes() for seg in pruned_first_segments(site))
            assert tile.content[: len(kept)] == kept and len(tile.content) == 256 * 32
            key = client.get("/v1/keys/key-3", params={"history": 1000})  # its pruned entries have no body
            assert key.status_code == 200
            seqs = [item["seq"] for item in key.json()["history"]]
            end = segs.read_index(pruned_first_segments(site)[-1])["last_seq"]
            assert seqs and all(seq > end for seq in seqs)
            forged = {"id": "forged-prune", "type": "journal_pruned", "occurred_at": "2026-12-01T00:00:00Z"}
            refused = client.post("/v1/events", json=forged)  # producers cannot announce a prune
            assert refused.status_code == 422 and "written by keylife itself" in refused.text
    done = keylife(
        "verify", str(tmp_path / "data" / "journal"), "--key", str(site.key), "--checkpoint", str(site.before)
    )
    assert done.returncode == 0, done.stdout
    assert f"OK: {TOTAL + 2} entries" in done.stdout and "PRUNED: entries 0.." in done.stdout


def test_segments_removed_without_a_prune_entry_are_deleted(site: Site) -> None:
    """An insider removes old segments and leaves correct leaf hashes so that every root matches."""
    chosen = prune.plan(site.journal, prune.parse_time("2019-01-05"), TOTAL)
    prune.carry_out(chosen)
    done = site.verify(site.before)
    assert done.returncode == 1
    assert f"FAULT deleted       seq 0: entries 0..{chosen.last} were removed" in done.stdout
    assert "no journal_pruned entry covered by a signed checkpoint announces them" in done.stdout
    journal = site.open()
    assert journal.integrity_fault is not None and "were removed without a journaled, signed prune" in (
        journal.integrity_fault
    )


def test_changed_leaf_hashes_are_detected(site: Site) -> None:
    assert site.prune().returncode == 0
    leaves = pruned_first_segments(site)[1].path("leaves")
    data = bytearray(leaves.read_bytes())
    data[40] ^= 1
    leaves.write_bytes(bytes(data))
    done = site.verify(site.before)
    assert done.returncode == 1
    assert "does not match" in done.stdout  # the roots over the changed leaves
    assert "their leaf hashes differ from those the prune recorded" in done.stdout
    assert site.open().integrity_fault is not None


def test_prune_refuses_what_it_cannot_do_safely(site: Site) -> None:
    done = site.prune("2999-01-01")
    assert done.returncode == 1
    assert "in the future" in done.stderr and "not covered by a signed checkpoint" in done.stderr
    done = site.prune("yesterday")
    assert done.returncode == 2 and "is not a date or an RFC 3339 time" in done.stderr
    done = site.prune("2019-01-01")
    assert done.returncode == 0
    assert done.stdout.startswith("nothing to prune before 2019-01-01T00:00:00Z: segment 0 (entries 0..")
    lock = DataLock(site.data).acquire("serve")
    try:
        done = site.prune()
        assert done.returncode == 2 and "is in use by keylife serve" in done.stderr
        assert "Traceback" not in done.stderr
    finally:
        lock.release()
    assert not pruned_first_segments(site)


def test_dry_run_changes_nothing(site: Site) -> None:
    before = sorted(p.name for p in (site.journal / "segments").iterdir())
    done = site.prune("2019-01-05", "--dry-run")
    assert done.returncode == 0 and done.stdout.startswith("would prune entries 0..")
    assert sorted(p.name for p in (site.journal / "segments").iterdir()) == before


def test_a_crash_at_any_step_leaves_a_journal_that_verifies(site: Site) -> None:
    """The announcement is durable and signed first; a crash after it, or between files, leaves
    every segment whole or pruned with its leaves, and a second run finishes the job."""
    journal = site.open()
    chosen = prune.plan(site.journal, prune.parse_time("2019-01-05"), TOTAL)
    event = {
        "id": "prune-1", "type": "journal_pruned", "occurred_at": "2026-12-01T00:00:00Z", "actor": "keylife",
        "attributes": prune.attributes(site.journal, chosen),
    }  # fmt: skip
    journal.append([event])
    journal.commit(maintain=False)
    journal.checkpoint()
    journal.close()  # "crash": nothing removed yet
    done = site.verify(site.before)
    assert done.returncode == 0, done.stdout
    assert "NOTE: the prune at seq 600" in done.stdout and "is not finished" in done.stdout

    first, second = chosen.segments[0], chosen.segments[1]
    leaves = b"".join(merkle.leaf_hash(line) for line in segs.segment_lines(first))
    segs.write_private(first.path("leaves"), leaves)
    first.path("zst").unlink()  # first segment: pruned, its .sums left behind
    segs.write_private(second.path("leaves"), b"".join(merkle.leaf_hash(x) for x in segs.segment_lines(second)))
    done = site.verify(site.before)  # second segment: leaves written, body still there
    assert done.returncode == 0, done.stdout
    assert f"PRUNED: entries 0..{segs.read_index(first)['last_seq']} (" in done.stdout
    assert site.open().integrity_fault is None

    done = site.prune()
    assert done.returncode == 0, done.stderr
    assert not first.path("sums").exists() and not second.path("zst").exists()
    done = site.verify(site.before)
    assert done.returncode == 0 and "NOTE" not in done.stdout and "PRUNED: entries 0.." in done.stdout


def test_a_follower_moves_past_pruned_entries_with_the_chain_intact(site: Site) -> None:
    assert site.prune().returncode == 0
    kept = pruned_first_segments(site)
    end = segs.read_index(kept[-1])["last_seq"]
    tail = EntryTail(site.journal, 0, genesis_hash(ORIGIN))
    got = tail.read(5)
    assert [entry.seq for entry, _ in got] == list(range(end + 1, end + 6))
    assert tail.skipped == [(0, end)]
    whole = EntryTail(site.journal, end + 1, bytes.fromhex(segs.read_index(kept[-1])["last_hash"]))
    assert [entry.hash for entry, _ in whole.read(5)] == [entry.hash for entry, _ in got]


def test_registry_rebuild_refuses_a_pruned_journal(site: Site) -> None:
    assert site.prune().returncode == 0
    done = keylife("registry", "rebuild", "--config", str(site.config))
    assert done.returncode == 2
    assert "refused: entries 0.." in done.stderr and "would lack their keys' history" in done.stderr


def test_the_forwarder_ships_on_past_a_pruned_start(site: Site, tmp_path: Path) -> None:
    """A forwarder that starts (or resumes) inside the pruned range does not wait for entries that
    are gone: it follows from the first kept entry with the chain carried by the indexes."""
    assert site.prune().returncode == 0
    end = segs.read_index(pruned_first_segments(site)[-1])["last_seq"]
    archive = tmp_path / "shipped.ndjson"
    sink = f"[{{type: file, name: archive, path: '{archive}'}}]"
    config = tmp_path / "forward.yaml"
    config.write_text(f"data_dir: {site.data}\nforwarder:\n  metrics_port: 0\n  sinks: {sink}\n")
    done = subprocess.run(
        [sys.executable, "-m", "keylife.cli", "forward", "--config", str(config), "--until-caught-up"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"seqs 0..{end} were pruned before they were read; following from seq {end + 1}" in done.stderr
    records = [orjson.loads(line) for line in archive.read_bytes().splitlines()]
    events = [r["event"] for r in records if r["event"]["type"] != "checkpoint"]
    assert len(events) == TOTAL - end and events[-1]["type"] == "journal_pruned"
    assert any(r["event"]["type"] == "checkpoint" and r["event"]["size"] == TOTAL + 1 for r in records)


def test_stored_tiles_and_a_pruned_range_give_one_tree(tmp_path: Path) -> None:
    """Past 65,536 entries the writer keeps level-1 tiles; a journal pruned beyond them still opens
    (start-up recomputes the root from kept leaves and entries, the tiles must agree), appends and verifies."""
    site = Site(tmp_path)
    journal = Journal(site.journal, site.signer, settings(segment_max_bytes=256 * 1024, checkpoint_every=20_000))
    total = 70_000
    for base in range(0, total, 1000):
        day = 0 if base < 66_000 else 10
        journal.append([usage_event(n) for n in range(base, base + 1000)], observed_at=T0 + day * 86400)
        journal.commit()
    journal.close()
    assert (site.journal / "tree" / "tile" / "1" / "000").exists()
    done = site.prune("2019-01-05")
    assert done.returncode == 0, done.stderr
    last = int(done.stdout.split("..")[1].split(" ")[0])
    assert 65_536 < last < 66_000
    journal = site.open()
    assert journal.integrity_fault is None
    journal.append([usage_event(n) for n in range(total, total + 10)])
    journal.commit()
    journal.close()
    done = site.verify(site.journal / "checkpoint")
    assert done.returncode == 0, done.stdout
    assert f"OK: {total + 11} entries" in done.stdout and f"PRUNED: entries 0..{last} (" in done.stdout


def test_retention_days_in_the_config_sets_the_cut_off(site: Site) -> None:
    done = keylife("journal", "prune", "--config", str(site.config))
    assert done.returncode == 2 and "give --before DATE, or set journal.retention_days" in done.stderr
    site.config.write_text(site.config.read_text() + "  retention_days: 1\n")
    done = keylife("journal", "prune", "--config", str(site.config))
    assert done.returncode == 0, done.stderr
    open_first = segs.list_segments(site.journal / "segments")[-1].first_seq
    assert done.stdout.startswith(f"pruned entries 0..{open_first - 1} (")
    assert f"kept from seq {open_first}: segment {open_first} is not sealed (the open segment is never pruned)" in (
        done.stdout
    )


def test_serve_refuses_in_one_line_when_its_registry_is_behind_a_pruned_range(site: Site) -> None:
    assert site.prune().returncode == 0  # no registry: it would have to replay pruned entries
    site.config.write_text(site.config.read_text() + "listen:\n  port: 0\n")
    done = subprocess.run(
        [sys.executable, "-m", "keylife.cli", "serve", "--config", str(site.config)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr[-2000:]
    assert "the registry stops before seq 0, but entries 0.." in done.stderr and "Traceback" not in done.stderr


def test_a_second_prune_extends_the_first(site: Site) -> None:
    assert site.prune("2019-01-05").returncode == 0
    first_end = segs.read_index(pruned_first_segments(site)[-1])["last_seq"]
    done = site.prune("2019-01-08")
    assert done.returncode == 0, done.stderr
    assert (
        done.stdout.startswith(f"pruned entries {first_end + 1}..") and f"announced at seq {TOTAL + 1}" in done.stdout
    )
    second_end = segs.read_index(pruned_first_segments(site)[-1])["last_seq"]
    done = site.verify(site.before)
    assert done.returncode == 0, done.stdout
    assert f"PRUNED: entries 0..{first_end} (bodies of entries observed before 2019-01-05" in done.stdout
    assert f"PRUNED: entries {first_end + 1}..{second_end} (bodies of entries observed before 2019-01-08" in done.stdout


def test_a_cut_leaves_file_is_named(site: Site) -> None:
    assert site.prune().returncode == 0
    seg = pruned_first_segments(site)[2]
    leaves = seg.path("leaves")
    leaves.write_bytes(leaves.read_bytes()[:-32])
    done = site.verify(site.before)
    assert done.returncode == 1
    assert f"FAULT modified      seq {seg.first_seq}: pruned segment {seg.first_seq}: " in done.stdout
    assert f"{seg.first_seq:020d}.leaves holds {32 * (segs.read_index(seg)['count'] - 1)} bytes, not " in done.stdout
    assert "does not match" in done.stdout  # the roots over it
    assert "index of pruned segment" not in done.stdout and "entry is missing" not in done.stdout  # no cascade


def test_a_journal_from_the_format_1_release_can_be_pruned(site: Site) -> None:
    """Its old checkpoints sign chain heads: one at a pruned segment's end is checked against the
    index, one inside a pruned segment cannot be (its entries are gone) and verify says so."""
    import hashlib

    from keylife.journal.note import sign_checkpoint

    chain, notes = genesis_hash(ORIGIN), []
    for seg in segs.list_segments(site.journal / "segments"):
        for line in segs.segment_lines(seg):
            chain = hashlib.sha256(chain + line).digest()
            size = segs.entry_seq(line) + 1
            if size % 50 == 0:
                notes.append(sign_checkpoint(site.signer, ORIGIN, size, chain).render())
    (site.journal / "checkpoints.log").write_bytes(b"".join(orjson.dumps({"note": n}) + b"\n" for n in notes))
    (site.journal / "checkpoint").write_text(notes[-1])
    (site.journal / "journal.json").write_bytes(orjson.dumps({"format": 1, "origin": ORIGIN}))
    site.before.write_text(notes[-1])
    done = site.prune()
    assert done.returncode == 0, done.stderr
    done = site.verify(site.before)
    assert done.returncode == 0, done.stdout
    assert "PRUNED: entries 0.." in done.stdout
    assert "format-1 checkpoints (sizes 100..200) sign a chain head inside a pruned segment" in done.stdout


def test_a_segment_left_with_only_its_index_is_refused_in_one_line(site: Site) -> None:
    assert site.prune().returncode == 0
    pruned_first_segments(site)[1].path("leaves").unlink()
    done = site.prune("2019-01-08")
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "refused: the journal cannot be opened: segment 30 has neither entries nor kept leaf hashes" in done.stderr
    done = site.verify(site.before)
    assert (
        done.returncode == 1
        and "FAULT deleted       seq 30: entries 30..49 are gone: segment 30 has only its index" in done.stdout
    )
    assert "does not follow" not in done.stdout


def test_a_later_prune_removes_an_earlier_announcement_and_a_key_rotation(site: Site, capsys) -> None:
    """Years later the entries keylife itself wrote are old too: a prune announcement and a
    signing-key rotation inside a pruned segment are kept whole (``.kept``), so verify still
    accepts the earlier pruned range and follows the rotation from the first pinned key."""
    from keylife.cli.prune_cmd import run
    from keylife.journal.key_rotation import load_signer, rotate

    assert site.prune().returncode == 0  # the first announcement: seq 600
    key_path = site.data / "keys" / "journal-signing.key"
    journal = site.open()
    rotation = rotate(journal, key_path)
    for n in range(0, 200, 10):  # seal the segments that hold both
        journal.append([usage_event(5000 + n + i) for i in range(10)])
        journal.commit()
    journal.close()
    journal = Journal(site.journal, load_signer(key_path, ORIGIN), settings())
    assert journal.integrity_fault is None
    now = datetime.now(UTC)
    assert run(journal, now + timedelta(days=1), now) == 0  # in-process: the CLI refuses a future date
    journal.close()
    assert "pruned entries 230.." in capsys.readouterr().out
    kept = [seg for seg in pruned_first_segments(site) if seg.path("kept").exists()]
    assert {seq for seg in kept for seq in segs.read_kept(seg)} >= {TOTAL, rotation.seq}

    done = site.verify(site.before)  # pinned: the first key, a checkpoint from before both prunes
    assert done.returncode == 0, done.stdout
    assert f"ROTATED: followed the signing-key rotation at seq {rotation.seq}" in done.stdout
    assert "PRUNED: entries 0..229 (bodies of entries observed before 2019-01-05T00:00:00Z" in done.stdout
    assert "PRUNED: entries 230.." in done.stdout
    assert Journal(site.journal, load_signer(key_path, ORIGIN), settings()).integrity_fault is None

    seg = next(seg for seg in kept if rotation.seq in segs.read_kept(seg))  # a forged kept line counts for nothing
    line = segs.read_kept(seg)[rotation.seq]
    seg.path("kept").write_bytes(line.replace(b'"actor":"keylife"', b'"actor":"mallory"') + b"\n")
    done = site.verify(site.before)
    assert done.returncode == 1 and "ROTATED" not in done.stdout
