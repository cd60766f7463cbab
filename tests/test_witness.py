"""``keylife witness serve``'s add-checkpoint (C2SP tlog-witness) over real HTTP: every status the
spec defines, the state it keeps, and that no refusal changes it."""

from __future__ import annotations

import ssl
import threading
from pathlib import Path

import httpx
import pytest

from keylife.journal.cosignature import Cosigner
from keylife.journal.note import parse
from keylife.journal.signing import Signer
from keylife.witness.protocol import render_request
from keylife.witness.state import Latest, WitnessState
from tests.witness_helpers import ORIGIN, FakeLog, RunningWitness, running_witness


@pytest.fixture
def log(tmp_path: Path) -> FakeLog:
    fake = FakeLog(Signer.load_or_create(tmp_path / "log.key", ORIGIN)[0])
    fake.grow(10)
    return fake


@pytest.fixture
def witness(tmp_path: Path, log: FakeLog):
    with running_witness(tmp_path, {ORIGIN: [log.signer.verifier]}) as w:
        yield w


def post(w: RunningWitness, body: bytes) -> httpx.Response:
    return httpx.post(f"{w.url}/add-checkpoint", content=body, timeout=10)


def stored(w: RunningWitness) -> Latest:
    return w.witness.state.latest(ORIGIN)


def test_first_checkpoint_is_cosigned_and_kept(witness: RunningWitness, log: FakeLog) -> None:
    answer = post(witness, log.request(0))
    assert answer.status_code == 200
    assert answer.text.startswith("\u2014 witness.test/w1 ") and answer.text.endswith("\n")
    cosigned = parse(log.checkpoint().render() + answer.text)
    assert witness.cosigner.key.timestamp_of(cosigned.signatures[-1], cosigned.text) is not None
    assert stored(witness).size == 10
    latest = httpx.get(f"{witness.url}/checkpoint/{ORIGIN}")
    assert latest.status_code == 200 and parse(latest.text).size == 10
    fetched = parse(latest.text)  # the log's signature and a fresh cosignature by the witness
    assert witness.cosigner.key.timestamp_of(fetched.signatures[-1], fetched.text) is not None
    assert httpx.get(f"{witness.url}/checkpoint/elsewhere.example").status_code == 404


def test_a_consistent_extension_is_cosigned(witness: RunningWitness, log: FakeLog) -> None:
    assert post(witness, log.request(0)).status_code == 200
    log.grow(7)
    assert post(witness, log.request(10)).status_code == 200
    assert stored(witness).size == 17
    assert post(witness, log.request(17)).status_code == 200  # the same checkpoint again: still cosigned


def test_a_wrong_old_size_is_409_with_the_witness_size(witness: RunningWitness, log: FakeLog) -> None:
    assert post(witness, log.request(0)).status_code == 200
    log.grow(5)
    for old in (0, 3):
        answer = post(witness, log.request(old))
        assert answer.status_code == 409
        assert answer.headers["content-type"] == "text/x.tlog.size"
        assert answer.text == "10\n"
    assert stored(witness).size == 10


def test_a_rollback_is_refused(witness: RunningWitness, log: FakeLog) -> None:
    log.grow(10)
    assert post(witness, log.request(0)).status_code == 200  # size 20
    answer = post(witness, log.request(5, size=10))  # an older checkpoint, honestly proven from 5
    assert answer.status_code == 409 and answer.text == "20\n"
    assert stored(witness).size == 20


def test_a_fork_at_the_same_size_is_409(witness: RunningWitness, log: FakeLog, tmp_path: Path) -> None:
    assert post(witness, log.request(0)).status_code == 200
    other = FakeLog(log.signer)
    other.grow(10, tag="forged")
    answer = post(witness, other.request(10))
    assert answer.status_code == 409 and answer.text == "10\n"
    assert stored(witness).hash == log.checkpoint().hash
    ((status, reason, note),) = witness.witness.state.evidence(ORIGIN)  # the forged checkpoint, kept as proof
    assert status == 409 and reason == "fork" and parse(note).hash == other.checkpoint().hash


def test_a_rewritten_history_fails_the_consistency_proof(witness: RunningWitness, log: FakeLog) -> None:
    assert post(witness, log.request(0)).status_code == 200
    forged = FakeLog(log.signer, list(log.leaves))
    forged.leaves[3] = b"\x00" * 32  # entry 3 rewritten, every checkpoint re-signed with the real key
    forged.grow(6)
    answer = post(witness, forged.request(10))
    assert answer.status_code == 422 and "consistency from size 10 to 16" in answer.text
    assert stored(witness).size == 10 and stored(witness).hash == log.checkpoint().hash
    ((status, _reason, note),) = witness.witness.state.evidence(ORIGIN)
    assert status == 422 and parse(note).size == 16


def test_a_bad_log_signature_is_403(witness: RunningWitness, log: FakeLog, tmp_path: Path) -> None:
    impostor = FakeLog(Signer.load_or_create(tmp_path / "impostor.key", ORIGIN)[0], list(log.leaves))
    answer = post(witness, impostor.request(0))
    assert answer.status_code == 403
    assert stored(witness).size == 0
    assert witness.witness.state.evidence(ORIGIN) == []  # nothing kept that the log did not sign


def test_an_unknown_origin_is_404(witness: RunningWitness, tmp_path: Path) -> None:
    stranger = FakeLog(Signer.load_or_create(tmp_path / "s.key", "elsewhere.example/log")[0])
    stranger.grow(3)
    assert post(witness, stranger.request(0)).status_code == 404


def test_a_non_empty_proof_from_zero_is_422(witness: RunningWitness, log: FakeLog) -> None:
    body = render_request(0, [b"\x01" * 32], log.checkpoint().render())
    assert post(witness, body).status_code == 422


@pytest.mark.parametrize(
    ("mutate", "where"),
    [
        (lambda b: b.replace(b"old 0\n", b"old 00\n"), "line 1: old size '00'"),
        (lambda b: b.replace(b"old 0\n", b"new 0\n"), "line 1: expected 'old <size>'"),
        (lambda b: b.replace(b"old 0\n", b"old 11\n"), "line 1: old size 11 is larger than the checkpoint size 10"),
        (lambda b: b.replace(b"old 0\n", b"old 0\nnot-base64!\n"), "line 2: proof line is not base64"),
        (lambda b: b.replace(b"old 0\n", b"old 0\nAAAA\n"), "line 2: proof hash is 3 bytes, not 32"),
        (lambda b: b"old 0\n", "no empty line"),
        (
            lambda b: (
                b"old 0\n" + b"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n" * 64 + b"\n" + b.split(b"\n\n", 1)[1]
            ),
            "64 consistency",
        ),
        (lambda b: b[:-1], "does not end with a newline"),
        (lambda b: b.replace(b"\n10\n", b"\nten\n"), "checkpoint (line 3): checkpoint size 'ten'"),
        (lambda b: b"\xff" + b, "not UTF-8"),
    ],
)
def test_a_malformed_body_is_400_and_says_where(witness: RunningWitness, log: FakeLog, mutate, where: str) -> None:
    answer = post(witness, mutate(log.request(0)))
    assert answer.status_code == 400
    assert where in answer.text
    assert stored(witness).size == 0


def test_state_survives_a_restart(tmp_path: Path, log: FakeLog) -> None:
    with running_witness(tmp_path, {ORIGIN: [log.signer.verifier]}) as first:
        assert post(first, log.request(0)).status_code == 200
    with running_witness(tmp_path, {ORIGIN: [log.signer.verifier]}) as again:
        assert stored(again).size == 10
        assert post(again, log.request(0)).text == "10\n"


def test_the_compare_and_swap_never_rolls_back(tmp_path: Path) -> None:
    """Two requests checked against the same record: only the first write wins (tlog-witness's race)."""
    state = WitnessState(tmp_path / "s.sqlite")
    before = state.latest(ORIGIN)
    assert state.advance(ORIGIN, before, 20, b"b" * 32, "n20", 1.0) is None
    lost = state.advance(ORIGIN, before, 10, b"a" * 32, "n10", 2.0)  # checked against size 0 too: too late
    assert lost is not None and lost.size == 20
    assert state.latest(ORIGIN).size == 20
    state.close()


def test_concurrent_requests_leave_the_largest_consistent_state(witness: RunningWitness, log: FakeLog) -> None:
    assert post(witness, log.request(0)).status_code == 200
    log.grow(40)
    bodies = [log.request(10, size) for size in range(11, 51)]
    answers: list[int] = []
    threads = [threading.Thread(target=lambda b=b: answers.append(post(witness, b).status_code)) for b in bodies]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert answers.count(200) == 1 and answers.count(409) == 39  # all claimed old 10: one wins
    assert stored(witness).size in range(11, 51)


def test_metrics_count_refusals_by_reason(witness: RunningWitness, log: FakeLog) -> None:
    post(witness, log.request(0))
    post(witness, log.request(3))
    text = httpx.get(f"{witness.url}/metrics").text
    assert f'keylife_witness_add_checkpoint_total{{origin="{ORIGIN}",result="cosigned"}} 1.0' in text
    assert f'keylife_witness_add_checkpoint_total{{origin="{ORIGIN}",result="conflict"}} 1.0' in text
    assert f'keylife_witness_log_size{{origin="{ORIGIN}"}} 10.0' in text


def test_each_refusal_is_one_log_line_naming_the_log(witness: RunningWitness, log: FakeLog, caplog) -> None:
    post(witness, log.request(0))
    with caplog.at_level("WARNING", logger="keylife.witness"):
        post(witness, log.request(4))
    (record,) = caplog.records
    assert ORIGIN in record.getMessage() and "409" in record.getMessage() and "old size 4" in record.getMessage()


def test_the_witness_speaks_tls(tmp_path: Path, log: FakeLog) -> None:
    """``--tls-cert/--tls-key``: the handshake runs in the connection's thread; a plain-HTTP client gets nothing."""
    from keylife.witness.server import WitnessHTTPServer, tls_context
    from keylife.witness.service import Witness, WitnessMetrics
    from tests.tls_helpers import make_server_cert

    ca, cert, key = make_server_cert(tmp_path)
    cosigner = Cosigner.load_or_create(tmp_path / "w.key", "witness.test/tls")[0]
    state = WitnessState(tmp_path / "tls.sqlite")
    witness = Witness(cosigner, {ORIGIN: [log.signer.verifier]}, state, WitnessMetrics())
    server = WitnessHTTPServer(("127.0.0.1", 0), witness, tls=tls_context(cert, key))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        port = server.server_address[1]
        with pytest.raises(httpx.TransportError):
            httpx.post(f"http://127.0.0.1:{port}/add-checkpoint", content=log.request(0), timeout=5)
        answer = httpx.post(
            f"https://127.0.0.1:{port}/add-checkpoint",
            content=log.request(0),
            verify=ssl.create_default_context(cafile=str(ca)),
            timeout=5,
        )
        assert answer.status_code == 200 and answer.text.startswith("\u2014 witness.test/tls ")
    finally:
        server.shutdown()
        server.server_close()
        state.close()
