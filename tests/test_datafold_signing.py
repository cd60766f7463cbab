"""keylife as a signed DataFold client (issue 12, item 9), against ``tests/fakes/datafold_node.py``,
which refuses requests as the ``security`` / ``security2`` signature middleware does (its docstring
cites the lines) and, stricter than the node, also verifies each RFC 9421 signature.
"""

from __future__ import annotations

import logging
import re
import stat
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from keylife.datafold.poll import KeyStatusPoller
from keylife.datafold.runner import Counters, sse_runner
from keylife.datafold.signing import COVERED, NodeAuth, public_hex
from keylife.datafold.sse import SseClient
from tests.fakes.datafold_node import FakeNode, fake_node
from tests.test_datafold_follow import FakeAdapter, FakeSink, wait_for

UUID4 = "[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}"


def auth(tmp_path: Path, mode: str = "always", client_id: str = "keylife-test") -> NodeAuth:
    return NodeAuth(tmp_path / "client-keys" / f"{client_id}.pem", client_id, mode)  # type: ignore[arg-type]


def poller(node: FakeNode, signer: NodeAuth | None, got: list | None = None, **options: Any) -> KeyStatusPoller:
    sink = got if got is not None else []
    return KeyStatusPoller(node.url, ["keylife-test"], lambda a, c, s: sink.append((c, s, a)), auth=signer, **options)


def test_an_unsigned_request_gets_the_nodes_400_missing_headers() -> None:
    with fake_node("security") as node:
        answer = httpx.get(f"{node.url}/api/crypto/keys/status/keylife-test")
    assert answer.status_code == 400
    body = answer.json()
    correlation = body["correlation_id"]
    # signature_auth.rs:3228-3232 with user_friendly_message("production"), :202-221 (note the "..")
    assert body == {
        "error": True, "error_code": "MISSING_HEADERS", "correlation_id": correlation,
        "message": "Missing required authentication headers. Please include Signature-Input and Signature headers.. "
                   f"For assistance, reference error ID: {correlation} or visit: "
                   "https://docs.datafold.dev/signature-auth/setup",
    }  # fmt: skip
    assert node.refusals == [{"error_code": "MISSING_HEADERS", "reason": "Signature-Input"}]


def test_the_signed_poller_registers_its_key_and_is_answered(tmp_path: Path) -> None:
    signer = auth(tmp_path)
    got: list = []
    with fake_node("security") as node:
        p = poller(node, signer, got)
        assert p.poll_once() == 1 and p.poll_once() == 1
        p.close()
    key_file = tmp_path / "client-keys" / "keylife-test.pem"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    reg = node.registrations["keylife-test"]
    assert reg["public_key"] == public_hex(signer.key) and reg["key_name"] == "keylife"
    assert [(c, s, a["data"]["public_key"]) for c, s, a in got] == [("keylife-test", 200, reg["public_key"])] * 2
    assert node.refusals == [] and [a[2] for a in node.accepted] == ["keylife-test"] * 2  # keyid = the client id
    headers = node.requests[-1][2]
    assert headers["signature-input"].startswith('sig1=("@method" "@target-uri" "content-type" "content-digest")')

    assert re.fullmatch(rf'sig1=\({" ".join(f"{chr(34)}{c}{chr(34)}" for c in COVERED)}\);created=\d+;'
                        rf'keyid="keylife-test";alg="ed25519";nonce="{UUID4}"', headers["signature-input"])  # fmt: skip
    assert headers["content-digest"] == "sha-256=:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=:"  # RFC 9530, empty
    assert re.fullmatch(r"sig1=:[A-Za-z0-9+/]{86}==:", headers["signature"])  # RFC 9421 4.2: a byte sequence
    assert signer.stats["registrations"] == 1 and signer.refusal is None
    assert "signature" not in node.requests[0][2]  # the register request: exempt, sent unsigned


def test_auto_signs_after_the_first_missing_headers_answer(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    signer = auth(tmp_path, "auto")
    got: list = []
    with fake_node("security2") as node, caplog.at_level(logging.INFO, "keylife.datafold"):
        p = poller(node, signer, got)
        assert p.poll_once() == 1 and p.poll_once() == 1
        p.close()
    assert [r["error_code"] for r in node.refusals] == ["MISSING_HEADERS"]  # once, then signed
    assert [(m, path.split("/")[-1]) for m, path, _ in node.requests] == [
        ("GET", "keylife-test"), ("POST", "register"), ("GET", "keylife-test"), ("GET", "keylife-test")]  # fmt: skip
    assert [s for _, s, _ in got] == [200, 200] and p.problem is None
    assert sum("requires signed requests" in r.getMessage() for r in caplog.records) == 1


def test_auto_never_signs_for_a_node_that_does_not_ask(tmp_path: Path) -> None:
    signer = auth(tmp_path, "auto")
    with fake_node("mainline") as node:
        node.system_key = None
        p = KeyStatusPoller(node.url, [], lambda *a: None, auth=signer, system_key=True)
        assert p.poll_once() == 1  # the 404 "System key not found" answer
        p.close()
    assert all("signature" not in h for _, _, h in node.requests) and not (tmp_path / "client-keys").exists()


def test_a_replayed_nonce_and_a_stale_timestamp_are_refused_as_the_node_would(tmp_path: Path) -> None:
    signer = auth(tmp_path)
    with fake_node("security") as node:
        with httpx.Client(auth=signer) as client:
            first = client.get(f"{node.url}/api/crypto/keys/status/keylife-test")
        assert first.status_code == 200  # registered, signed, accepted
        _method, path, headers = node.requests[-1]
        replay = {k: v for k, v in headers.items() if k not in ("host", "content-length")}
        again = httpx.get(f"{node.url}{path}", headers=replay)
        assert again.status_code == 401 and again.json()["error_code"] == "NONCE_VALIDATION_FAILED"
        assert node.refusals[-1] == {"error_code": "NONCE_VALIDATION_FAILED", "reason": "Nonce replay detected"}
        assert "Please use a unique nonce for each request.. For assistance" in again.json()["message"]
        node.clock_offset = 400  # the node's clock runs ahead: keylife's created is 400 s old (> 300 + 30)
        with httpx.Client(auth=signer) as client:
            stale = client.get(f"{node.url}/api/crypto/keys/status/keylife-test")
        assert stale.status_code == 401 and stale.json()["error_code"] == "TIMESTAMP_VALIDATION_FAILED"
        assert node.refusals[-1]["reason"].startswith("Timestamp outside allowed window: 40")
        assert node.refusals[-1]["reason"].endswith(" seconds (max: 330)")
        node.clock_offset = -90  # keylife's created is 90 s ahead (> 60)
        with httpx.Client(auth=signer) as client:
            ahead = client.get(f"{node.url}/api/crypto/keys/status/keylife-test")
        assert ahead.json()["error_code"] == "TIMESTAMP_VALIDATION_FAILED"
        assert node.refusals[-1]["reason"].startswith("Timestamp too far in future: ")
    assert signer.refusal == "TIMESTAMP_VALIDATION_FAILED" and signer.stats["refusals"] == 2


def test_the_fake_refuses_what_the_node_refuses() -> None:
    """Nonce format, uncovered components and the algorithm, as signature_auth.rs checks them."""
    created = int(time.time())

    def ask(node: FakeNode, components: str, nonce: str, alg: str = "ed25519") -> dict[str, Any]:
        value = f'sig1=({components});created={created};keyid="x";alg="{alg}";nonce="{nonce}"'
        r = httpx.get(f"{node.url}/api/logs", headers={"Signature-Input": value, "Signature": "sig1=:AA==:"})
        body = r.json()
        return {"status": r.status_code, **(body if isinstance(body, dict) else {"lines": body})}

    with fake_node("security", verify_signatures=False) as node:
        assert ask(node, '"@method"', "not-a-uuid")["error_code"] == "NONCE_VALIDATION_FAILED"
        assert ask(node, '"@method" "@target-uri"', str(uuid.uuid4()))["error_code"] == "INVALID_SIGNATURE_FORMAT"
        assert node.refusals[-1]["reason"] == "Required component 'content-type' not covered by signature"
        assert ask(node, '"@method"', str(uuid.uuid4()), "rsa")["error_code"] == "INVALID_SIGNATURE_FORMAT"
        assert node.refusals[-1]["reason"] == "Permission error: Unsupported algorithm: rsa"
        covered = '"@method" "@target-uri" "content-type" "content-digest"'
        assert ask(node, covered, str(uuid.uuid4()))["status"] == 200  # the node never checks the signature


def test_the_rate_limit_counts_every_request_per_ip_as_the_node_does(tmp_path: Path) -> None:
    with fake_node("security") as node:
        node.max_requests_per_window = 2  # the node's default is 100 per 60 s (signature_auth.rs:745-753)
        answers = [httpx.get(f"{node.url}/api/logs") for _ in range(3)]
        p = poller(node, None)
        assert p.poll_once() == 0
        p.close()
    assert [a.status_code for a in answers] == [400, 400, 429]
    assert answers[2].json()["error_code"] == "RATE_LIMIT_EXCEEDED"
    assert answers[2].json()["message"].startswith("Rate limit exceeded. Please reduce request frequency")
    assert p.problem == "refused by the node's signature check: RATE_LIMIT_EXCEEDED"  # detected without a signer


def test_a_persistent_refusal_is_one_log_line_and_a_problem_not_a_silent_loop(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    signer = auth(tmp_path, "never")
    with fake_node("security") as node, caplog.at_level(logging.INFO, "keylife.datafold"):
        p = poller(node, signer)
        for _ in range(4):
            assert p.poll_once() == 0
        p.close()
    assert p.stats["refusals"] == 4 and p.stats["errors"] == 4
    assert p.problem == "refused by the node's signature check: MISSING_HEADERS"
    lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert lines == [
        "the DataFold node refuses keylife's requests: MISSING_HEADERS (signing is off for this source: set sign to "
        "auto or always)",
        "key status poll failed: refused by the node's signature check: MISSING_HEADERS",
    ]  # fmt: skip


def test_the_signed_sse_client_reads_the_stream(tmp_path: Path) -> None:
    lines = ["INFO - Public key registered successfully for client: keylife-test", "WARN - x"]
    with fake_node("security", lines=lines) as node:
        client = SseClient(f"{node.url}/api/logs/stream", auth=auth(tmp_path, "auto"), retry_seconds=0.05)
        got = []
        for event in client.events():
            got.append(event.data)
            if len(got) == 2:
                break
        client.close()
        client.close_client()
    assert got == lines
    assert [r["error_code"] for r in node.refusals] == ["MISSING_HEADERS"]  # the first, unsigned try
    assert node.accepted and node.accepted[-1][1] == "/api/logs/stream"


def test_security2_has_no_log_stream_and_keylife_says_so(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with fake_node("security2") as node, caplog.at_level(logging.INFO, "keylife.datafold"):
        stop = threading.Event()
        runner = sse_runner(f"{node.url}/api/logs/stream", FakeAdapter(), FakeSink(), None, stop,
                            sse_options={"auth": auth(tmp_path, "auto"), "retry_seconds": 0.01,
                                         "max_retry_seconds": 0.05})  # fmt: skip
        thread = threading.Thread(target=runner.run, daemon=True)
        thread.start()
        try:
            wait_for(lambda: runner.source.client.stats["failures"] >= 3)
            wait_for(lambda: runner.counters.problem is not None)
        finally:
            stop.set()
            runner.source.close()
            thread.join(5)
    counters: Counters = runner.counters
    assert counters.problem is not None and "no log stream" in counters.problem and counters.lines == 0
    assert "'Log streaming not available'" in counters.problem
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and errors[0].startswith("log stream unusable: the node has no log stream")
    assert [r["error_code"] for r in node.refusals] == ["MISSING_HEADERS"]  # signed after the first


def test_rotation_history_is_asked_on_security_and_given_up_on_security2(tmp_path: Path) -> None:
    from tests.test_datafold_answers import PUB_OLD, rotation

    got: list = []
    with fake_node("security") as node:
        p = poller(node, auth(tmp_path), got, rotations=True)
        p.poll_once()
        public = node.registrations["keylife-test"]["public_key"]
        node.rotations.append(rotation(old_public_key=PUB_OLD.hex(), new_public_key=public) | {"actor": None})
        p.poll_once()
        p.close()
    history = [a for _, _, a in got if "rotations" in a.get("data", {})]
    assert [len(a["data"]["rotations"]) for a in history] == [0, 1] and p.rotations
    assert history[1]["data"]["rotations"][0]["new_public_key"] == public
    got.clear()
    with fake_node("security2") as node:
        p = poller(node, auth(tmp_path / "2"), got, rotations=True)
        p.poll_once()
        p.poll_once()
        p.close()
    assert not p.rotations and p.problem is None
    assert sum(path.endswith("/history") for _, path, _ in node.requests) == 1  # 501: asked once


def test_serve_polls_a_signing_node_into_the_ledger(tmp_path: Path) -> None:
    """``keylife serve`` with a poll source (sign: auto, rotations) and an SSE source on a security
    node: both sign after the first refusal, share one 0600 key, and their events are journaled."""
    from keylife.cli.config import Config
    from keylife.datafold.service import start_datafold
    from keylife.journal.reader import iter_entries
    from tests.server import live_server

    line = "INFO - Public key registered successfully for client: keylife"
    with live_server(tmp_path) as live, fake_node("security", lines=[line]) as node:
        data = live.runtime.config.model_dump() | {
            "datafold": {
                "poll": [{"url": node.url, "node": "node-b", "clients": ["keylife"], "interval_seconds": 0.2,
                          "rotations": True}],
                "sse": [{"url": f"{node.url}/api/logs/stream", "node": "node-b"}],
                "state_dir": str(tmp_path / "df"),
            }
        }  # fmt: skip
        service = start_datafold(Config.model_validate(data), live.runtime.ledger,
                                 runner_options={"batch_seconds": 0.01})  # fmt: skip
        try:
            journal = live.runtime.journal.directory

            def events() -> list[dict[str, Any]]:
                return [e.event for e in iter_entries(journal) if e.event["id"].startswith("df-")]

            wait_for(lambda: len(events()) >= 2)
            wait_for(lambda: service.counters()[f"sse:{node.url}/api/logs/stream"].lines >= 1)
        finally:
            service.stop()
    registered = node.registrations["keylife"]
    key = registered["public_key"][:16]
    assert [(e["type"], e["key_id"], e["node"]) for e in events()][:2] == [
        ("generated", key, "node-b"), ("activated", key, "node-b")]  # fmt: skip
    assert stat.S_IMODE((tmp_path / "df" / "client-keys" / "keylife.pem").stat().st_mode) == 0o600
    assert {r["error_code"] for r in node.refusals} == {"MISSING_HEADERS"} and len(node.refusals) <= 2
    assert any(path == "/api/crypto/keys/rotate/history" for _, path, _ in node.requests)
    counters = service.counters()[f"poll:{node.url}"]
    assert counters.problem is None and counters.refusals == 0


def test_metrics_name_the_stuck_source_and_its_cause(tmp_path: Path) -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    from keylife.cli.config import Config
    from keylife.cli.datafold_metrics import DataFoldCollector, cause
    from keylife.datafold.service import start_datafold
    from tests.server import live_server

    with live_server(tmp_path) as live, fake_node("security") as node:
        data = live.runtime.config.model_dump() | {"datafold": {
            "poll": [{"url": node.url, "clients": ["keylife"], "interval_seconds": 0.2, "sign": "never"}],
            "state_dir": str(tmp_path / "df")}}  # fmt: skip
        service = start_datafold(Config.model_validate(data), live.runtime.ledger)
        try:
            wait_for(lambda: getattr(service.counters().get(f"poll:{node.url}"), "refusals", 0) >= 2)
            registry = CollectorRegistry()
            registry.register(DataFoldCollector(service))
            text = generate_latest(registry).decode()
        finally:
            service.stop()
    source = f"poll:{node.url}"
    assert f'keylife_datafold_source_problem{{cause="MISSING_HEADERS",source="{source}"}} 1.0' in text
    assert re.search(rf'keylife_datafold_refusals_total{{source="{re.escape(source)}"}} [2-9]', text)
    assert cause(None) == "none" and cause("the node has no log stream: ...") == "no_log_stream"
    assert cause("ConnectError: [Errno 111] Connection refused") == "unavailable"


def test_a_restart_does_not_register_again(tmp_path: Path) -> None:
    with fake_node("security") as node:
        for _ in range(2):  # two processes, one key file
            p = poller(node, auth(tmp_path))
            assert p.poll_once() == 1
            p.close()
    assert sum(path == "/api/crypto/keys/register" for _, path, _ in node.requests) == 1
    marker = tmp_path / "client-keys" / "keylife-test.pem.registered.json"
    assert list(orjson.loads(marker.read_bytes())) == [node.url]
