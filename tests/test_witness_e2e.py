"""Issue 11 item 12 end to end: two real keylife processes on loopback, a log (``keylife serve``)
and a witness (``keylife witness serve``). The log's checkpoints get cosigned and ``keylife verify
--witness`` is anchored by them; then an insider rewrites history and re-signs it with the real
key: the witness refuses the forged checkpoints (409 at the same size, 422 when it grows) and
``verify`` on the forged journal reports that no witness-cosigned checkpoint matches it."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import httpx
import orjson
import pytest
import yaml

from keylife.api.auth import hash_token, new_token
from keylife.journal.note import parse
from keylife.journal.signing import Signer
from keylife.witness.protocol import render_request
from tests.journal_helpers import usage_event
from tests.server import start_server
from tests.server_process import ServerProcess
from tests.test_tamper import cli_verify, forged, lines_of, resign, rewrite
from tests.waiting import wait_until

pytestmark = pytest.mark.slow

ORIGIN = "e2e.keylife/log"
WITNESS = "witness.e2e/w1"


class WitnessProcess(ServerProcess):
    name = "witness"
    ready_path = "/metrics"

    def __init__(self, directory: Path, log_key: str) -> None:
        super().__init__(directory)
        self.log_key = log_key

    def command(self, port: int) -> list[str]:
        return [
            sys.executable, "-m", "keylife.cli", "witness", "serve", "--data-dir", str(self.directory / "state"),
            "--port", str(port), "--log", self.log_key,
        ]  # fmt: skip


def witness_pubkey(directory: Path) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "keylife.cli", "witness", "pubkey", "--data-dir", str(directory), "--name", WITNESS],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return done.stdout.strip()


def metric(text: str, name: str) -> float:
    values = [float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name)]
    return sum(values)


class Log:
    """``keylife serve`` as a subprocess, asked to have its checkpoints cosigned by one witness."""

    def __init__(self, tmp: Path, witness_url: str, witness_key: str) -> None:
        self.tmp = tmp
        self.token = new_token()
        self.config = tmp / "keylife.yaml"
        self.config.write_text(
            yaml.safe_dump(
                {
                    "data_dir": str(tmp / "data"),
                    "listen": {"host": "127.0.0.1", "port": 0},
                    "logging": {"level": "INFO", "format": "text"},
                    "api": {"tokens": [{"name": "t", "sha256": hash_token(self.token), "scopes": ["ingest", "read"]}]},
                    "journal": {
                        "origin": ORIGIN,
                        "witnesses": [{"name": "w1", "url": witness_url, "key": witness_key}],
                        "witness_interval_seconds": 0.2,
                    },
                }
            )
        )
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""

    @property
    def journal(self) -> Path:
        return self.tmp / "data" / "journal"

    def start(self) -> None:
        self.proc, self.url = start_server(self.config, self.tmp / "ready.json")

    def stop(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        assert self.proc.wait(timeout=30) == 0

    def ingest(self, first: int, count: int) -> None:
        body = b"".join(orjson.dumps(usage_event(n)) + b"\n" for n in range(first, first + count))
        answer = httpx.post(
            f"{self.url}/v1/events", content=body, timeout=10,
            headers={"Authorization": f"Bearer {self.token}", "Content-Type": "application/x-ndjson"},
        )  # fmt: skip
        assert answer.status_code == 200, answer.text

    def get(self, path: str) -> httpx.Response:
        return httpx.get(f"{self.url}{path}", headers={"Authorization": f"Bearer {self.token}"}, timeout=10)


def test_a_witness_anchors_verify_and_refuses_a_rewritten_history(tmp_path: Path) -> None:
    wkey = witness_pubkey(tmp_path / "witness" / "state")
    log_signer = Signer.load_or_create(tmp_path / "data" / "keys" / "journal-signing.key", ORIGIN)[0]
    with WitnessProcess(tmp_path / "witness", log_signer.verifier.encode()) as witness:
        log = Log(tmp_path, witness.url, wkey)
        log.start()
        try:
            log.ingest(0, 50)

            def cosigned_all() -> bool:
                latest = log.get("/v1/journal/checkpoint")
                cosigned = log.get("/v1/journal/checkpoint/cosigned")
                return (
                    latest.status_code == cosigned.status_code == 200
                    and parse(cosigned.text).size == parse(latest.text).size == 50
                )

            wait_until(cosigned_all, 30, "the witness cosigned the checkpoint of 50 entries")
            note = parse(log.get("/v1/journal/checkpoint/cosigned").text)
            assert [s.name for s in note.signatures] == [ORIGIN, WITNESS]
            assert 'keylife_witness_requests_total{result="cosigned",witness="w1"}' in log.get("/metrics").text
        finally:
            log.stop()

        journal = log.journal
        ok = cli_verify(journal, "--witness", wkey, "--witness-quorum", "1")
        assert ok.returncode == 0, ok.stdout + ok.stderr
        assert f"ANCHORED: entries 0..49 by the checkpoint cosigned by 1 of 1 witnesses ({WITNESS})" in ok.stdout

        # The insider: rewrite entry 7 and re-sign every checkpoint with the real signing key.
        sizes = [
            parse(orjson.loads(raw)["note"]).size for raw in (journal / "checkpoints.log").read_bytes().splitlines()
        ]
        lines = lines_of(journal)
        lines[7] = forged(lines[7])
        rewrite(journal, lines)
        resign(journal, log_signer, sizes, ORIGIN)
        forged_note = (journal / "checkpoint").read_text()

        held = httpx.get(f"{witness.url}/checkpoint/{ORIGIN}").text
        fork = httpx.post(f"{witness.url}/add-checkpoint", content=render_request(50, [], forged_note))
        assert fork.status_code == 409 and fork.text == "50\n"  # same size, another root: a fork

        log.start()  # consistent on the host: serve starts, signs on top, and asks the witness
        try:
            log.ingest(50, 10)
            wait_until(
                lambda: metric(log.get("/metrics").text, 'keylife_witness_requests_total{result="http_422"') >= 1,
                30, "the witness refused the grown forged history with 422",
            )  # fmt: skip
        finally:
            log.stop()
        assert httpx.get(f"{witness.url}/checkpoint/{ORIGIN}").text.partition("\n\n")[0] == held.partition("\n\n")[0]
        with sqlite3.connect(witness.directory / "state" / "state.sqlite") as db:
            kept = db.execute("SELECT status FROM evidence ORDER BY rowid").fetchall()
        assert {409, 422} <= {status for (status,) in kept}  # the forged checkpoints, kept by the witness as proof
        refusals = witness.log_path.read_text()
        assert f"refused checkpoint (422) from log '{ORIGIN}'" in refusals
        assert f"refused checkpoint (409) from log '{ORIGIN}'" in refusals

        bad = cli_verify(journal, "--witness", wkey, "--witness-quorum", "1")
        assert bad.returncode == 1, bad.stdout
        assert "FAULT split_view" in bad.stdout
        assert "does not match checkpoint cosigned by the witnesses" in bad.stdout
        assert "the checkpoint cosigned by the witnesses (size 50) does not match this journal" in bad.stdout

        # The insider deletes the cosignatures too: nothing anchors; the witness's own copy still convicts.
        (journal / "cosignatures.log").unlink()
        (journal / "checkpoint.cosigned").unlink()
        gone = cli_verify(journal, "--witness", wkey)
        assert gone.returncode == 1 and "no witness-cosigned checkpoint found" in gone.stdout
        fetched = tmp_path / "from-witness.checkpoint"
        fetched.write_text(httpx.get(f"{witness.url}/checkpoint/{ORIGIN}").text)
        again = cli_verify(journal, "--witness", wkey, "--checkpoint", str(fetched))
        assert again.returncode == 1 and "(size 50) does not match this journal" in again.stdout
