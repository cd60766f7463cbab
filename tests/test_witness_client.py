"""The log side of tlog-witness: ``WitnessClient`` asking a real witness (HTTP, in a thread) to
cosign a real journal's checkpoints, storing what it gets, and coping with 409s and refusals."""

from __future__ import annotations

import logging
from pathlib import Path

import orjson
from prometheus_client import CollectorRegistry

from keylife.journal.note import parse
from keylife.journal.writer import Journal
from keylife.witness.client import WitnessClient, WitnessTarget
from keylife.witness.cosigned import LATEST_NAME, LOG_NAME, CosignatureStore, best_cosigned, read_notes
from tests.journal_helpers import ORIGIN, fill, open_journal
from tests.witness_helpers import RunningWitness, running_witness


def client(journal: Journal, witnesses: list[RunningWitness], quorum: int | None = None) -> WitnessClient:
    targets = [WitnessTarget(w.cosigner.key.name, w.url, w.cosigner.key) for w in witnesses]

    def prove(old: int, new: int) -> list[bytes]:
        with journal.lock:
            return journal.tree.consistency(old, new)

    return WitnessClient(
        CosignatureStore(journal.directory), targets, lambda: journal.last_checkpoint, prove, CollectorRegistry(),
        quorum=quorum or len(targets), interval=0.1, timeout=5,
    )  # fmt: skip


def requests(c: WitnessClient, witness: str, result: str) -> float:
    return c.metrics.requests.labels(witness, result)._value.get()


def test_checkpoints_are_cosigned_and_stored_beside_the_journal(tmp_path: Path) -> None:
    journal = open_journal(tmp_path)
    fill(journal, 30)
    journal.checkpoint()
    with (
        running_witness(tmp_path, {ORIGIN: [journal.signer.verifier]}, "w1.test/w") as w1,
        running_witness(tmp_path, {ORIGIN: [journal.signer.verifier]}, "w2.test/w") as w2,
    ):
        c = client(journal, [w1, w2])
        c.round()
        fill(journal, 300, start=30)  # crosses a 256-entry block: the proof comes from the persisted tree
        journal.checkpoint()
        c.round()
        assert w1.witness.state.latest(ORIGIN).size == 330 and w2.witness.state.latest(ORIGIN).size == 330
        latest = parse((journal.directory / LATEST_NAME).read_text())
        assert latest.size == 330 and len(latest.signatures) == 3  # the log's line, then one per witness
        lines = (journal.directory / LOG_NAME).read_bytes().splitlines()
        assert sorted(orjson.loads(x)["witness"] for x in lines) == ["w1.test/w"] * 2 + ["w2.test/w"] * 2
        best, _ = best_cosigned(read_notes(journal.directory)[0], [w1.cosigner.key, w2.cosigner.key], 2)
        assert best is not None and best.checkpoint.size == 330
        assert c.metrics.quorum._value.get() == 330
        assert requests(c, "w1.test/w", "cosigned") == 2
        c.stop()
    journal.close()


def test_a_409_gives_the_witness_size_and_one_retry_succeeds(tmp_path: Path) -> None:
    journal = open_journal(tmp_path)
    fill(journal, 20)
    journal.checkpoint()
    with running_witness(tmp_path, {ORIGIN: [journal.signer.verifier]}) as w:
        first = client(journal, [w])
        first.round()
        first.stop()
        fill(journal, 20, start=20)
        journal.checkpoint()
        (journal.directory / LATEST_NAME).unlink()  # the log forgot what the witness cosigned: it sends old 0
        again = client(journal, [w])
        assert again.known == {}
        again.round()
        assert w.witness.state.latest(ORIGIN).size == 40
        assert requests(again, w.cosigner.key.name, "cosigned") == 1
        again.stop()
    journal.close()


def test_a_restarted_log_resumes_from_the_stored_cosigned_checkpoint(tmp_path: Path) -> None:
    journal = open_journal(tmp_path)
    fill(journal, 20)
    journal.checkpoint()
    with running_witness(tmp_path, {ORIGIN: [journal.signer.verifier]}) as w:
        client(journal, [w]).round()
        again = client(journal, [w])
        assert again.known == {w.cosigner.key.name: 20}
    journal.close()


def test_a_refusal_is_counted_and_logged_once_per_state_change(tmp_path: Path, caplog) -> None:
    journal = open_journal(tmp_path)
    fill(journal, 20)
    journal.checkpoint()
    with running_witness(tmp_path, {"some.other/log": [journal.signer.verifier]}) as w:
        c = client(journal, [w])
        with caplog.at_level(logging.WARNING, logger="keylife.witness.client"):
            for n in range(3):
                fill(journal, 1, start=20 + n)
                journal.checkpoint()
                c.round()
        assert requests(c, w.cosigner.key.name, "http_404") == 3
        mine = [r for r in caplog.records if r.name == "keylife.witness.client"]
        assert len(mine) == 1 and "http_404" in mine[0].getMessage() and w.cosigner.key.name in mine[0].getMessage()
        assert not (journal.directory / LATEST_NAME).exists()
        c.stop()
    journal.close()


def test_an_unreachable_witness_does_not_stop_the_others(tmp_path: Path) -> None:
    journal = open_journal(tmp_path)
    fill(journal, 20)
    journal.checkpoint()
    with running_witness(tmp_path, {ORIGIN: [journal.signer.verifier]}) as w:
        gone = WitnessTarget("gone.test/w", "http://127.0.0.1:9", w.cosigner.key)
        c = client(journal, [w])
        c.targets.append(gone)
        c.round()
        assert requests(c, "gone.test/w", "unreachable") == 1
        assert w.witness.state.latest(ORIGIN).size == 20
        c.round()  # a quiet journal: the failed witness is asked again, the one that cosigned is not
        assert requests(c, "gone.test/w", "unreachable") == 2
        assert requests(c, w.cosigner.key.name, "cosigned") == 1
        c.stop()
    journal.close()


def test_a_cosignature_that_cannot_be_stored_does_not_count(tmp_path: Path) -> None:
    journal = open_journal(tmp_path)
    fill(journal, 20)
    journal.checkpoint()
    (journal.directory / LOG_NAME).mkdir()  # the append fails (EISDIR), as a full disk would
    with running_witness(tmp_path, {ORIGIN: [journal.signer.verifier]}) as w:
        c = client(journal, [w])
        assert c.submit(c.targets[0], journal.last_checkpoint) == "store_failed"
        assert not (journal.directory / LATEST_NAME).exists() and c.known.get(w.cosigner.key.name, 0) == 0
        c.stop()
    journal.close()


def test_a_hanging_witness_never_delays_an_acknowledgement(tmp_path: Path) -> None:
    """A witness that accepts the connection and never answers: ingest and checkpoints go on as before,
    and stopping serve does not wait for it."""
    import socket
    import time

    from keylife.journal.cosignature import Cosigner
    from tests.server import live_server

    hang = socket.socket()
    hang.bind(("127.0.0.1", 0))
    hang.listen(16)  # never accepted: the request sits in the backlog until the client's timeout
    key = Cosigner.load_or_create(tmp_path / "h.key", "hang.test/w")[0].key.encode()
    witnesses = [{"name": "hang", "url": f"http://127.0.0.1:{hang.getsockname()[1]}", "key": key}]
    settings = {"witnesses": witnesses, "witness_interval_seconds": 0.1, "witness_timeout_seconds": 30}
    try:
        with live_server(tmp_path, journal=settings) as live, live.client() as api:
            slowest = 0.0
            for n in range(10):
                body = orjson.dumps(
                    {"id": f"h-{n}", "type": "usage_report", "key_id": "k", "occurred_at": "2026-11-28T12:00:00Z",
                     "node": "n", "usage": {"encrypt": 1}}
                ) + b"\n"  # fmt: skip
                started = time.monotonic()
                answer = api.post("/v1/events", content=body, headers={"Content-Type": "application/x-ndjson"})
                slowest = max(slowest, time.monotonic() - started)
                assert answer.status_code == 200, answer.text
                time.sleep(0.15)  # checkpoints are signed meanwhile, and the client tries to have them cosigned
            assert slowest < 1.0
            assert live.runtime.journal.last_checkpoint is not None
            assert live.runtime.witnessing is not None and live.runtime.witnessing.state == {}  # still waiting
            closing = time.monotonic()
        assert time.monotonic() - closing < 5  # shutdown does not wait for the hanging request (30 s timeout)
    finally:
        hang.close()
