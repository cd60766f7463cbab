"""``keylife incident revoke --wait`` and ``keylife revocations export|verify`` (issue 14, items 2 and 3).

What the on-call person sees: the lines and the JSON line on stdout, and the exit code (0 every
node confirmed or none holds the key, 1 some did not by the deadline: named, 2 could not run).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest

from keylife.cli.main import main
from tests.server import Live, live_server
from tests.waiting import wait_until

T0 = "2026-12-01T10:00:00Z"


@pytest.fixture
def live(tmp_path: Path) -> Iterator[Live]:
    with live_server(tmp_path) as server:
        yield server


def _post(c: httpx.Client, *events: dict) -> None:
    body = b"\n".join(orjson.dumps(e) for e in events)
    answer = c.post("/v1/events", content=body, headers={"Content-Type": "application/x-ndjson"})
    assert answer.status_code == 200 and answer.json()["accepted"] == len(events), answer.text


def _held(c: httpx.Client, key: str, *nodes: str) -> None:
    _post(c, {"id": f"g-{key}", "type": "generated", "key_id": key, "occurred_at": T0},
          {"id": f"a-{key}", "type": "activated", "key_id": key, "occurred_at": T0})  # fmt: skip
    for node in nodes:
        _post(c, {"id": f"p-{key}-{node}", "type": "propagated", "key_id": key, "occurred_at": T0, "node": node,
                  "state": "active"})  # fmt: skip


def _confirm(c: httpx.Client, key: str, node: str, state: str = "revoked") -> None:
    _post(c, {"id": f"c-{key}-{node}", "type": "propagated", "key_id": key, "node": node, "state": state,
              "occurred_at": "2026-12-01T10:00:01Z"})  # fmt: skip


def _run(live: Live, monkeypatch: pytest.MonkeyPatch, token: str, *argv: str) -> int:
    monkeypatch.setenv("KEYLIFE_TOKEN", live.tokens[token])
    return main([*argv, "--url", live.url])


def _last_json(out: str) -> dict:
    return orjson.loads(out.strip().splitlines()[-1])


def test_waits_until_every_node_confirms_then_exits_0(live: Live, monkeypatch, capsys) -> None:
    with live.client() as c:
        _held(c, "k1", "node-a", "node-b")

    def nodes_confirm() -> None:  # the enforcement points: they see the feed, then report
        with live.client() as c:
            wait_until(lambda: " k1\n" in c.get("/v1/revocations").text, what="k1 in the feed")
            _confirm(c, "k1", "node-a")
            _confirm(c, "k1", "node-b", "compromised")

    helper = threading.Thread(target=nodes_confirm)
    helper.start()
    code = _run(live, monkeypatch, "secadmin", "incident", "revoke", "k1", "--reason", "leaked", "--compromise",
                "--incident", "inc-42", "--wait", "20s", "--interval", "50ms")  # fmt: skip
    helper.join()
    out = capsys.readouterr().out
    assert code == 0, out
    assert out.startswith("compromise k1: accepted") and "all 2 nodes confirmed k1 compromised" in out
    line = _last_json(out)
    assert line["complete"] is True and line["unconfirmed"] == [] and line["expected"] == line["confirmed"] == 2
    with live.client() as c:
        key = c.get("/v1/keys/k1?history=10").json()
    command = next(h["event"] for h in key["history"] if h["event"].get("origin") == "command")
    assert command["correlation_id"] == "inc-42" and command["actor"] == "secadmin"


def test_a_node_that_never_confirms_is_named_and_exits_1(live: Live, monkeypatch, capsys) -> None:
    with live.client() as c:
        _held(c, "k1", "node-a", "node-lagging")
        _confirm(c, "k1", "node-a")  # already refuses it: confirmed at revocation
    code = _run(live, monkeypatch, "secadmin", "incident", "revoke", "k1", "--reason", "r", "--wait", "0.3s",
                "--interval", "50ms")  # fmt: skip
    out = capsys.readouterr().out
    assert code == 1, out
    assert "1 of 2 nodes did not confirm k1 within 0.3s:" in out and "  node-lagging (expected since" in out
    line = _last_json(out)
    assert line["unconfirmed"] == ["node-lagging"] and line["complete"] is False and line["confirmed"] == 1


def test_no_node_holds_the_key_says_so_and_exits_0(live: Live, monkeypatch, capsys) -> None:
    with live.client() as c:
        _held(c, "lonely")
    code = _run(live, monkeypatch, "secadmin", "incident", "revoke", "lonely", "--reason", "r", "--wait", "5s")
    out = capsys.readouterr().out
    assert code == 0 and "no node is known to hold lonely: nothing to confirm" in out
    assert _last_json(out)["expected"] == 0


def test_an_already_revoked_key_is_waited_on(live: Live, monkeypatch, capsys) -> None:
    with live.client() as c:
        _held(c, "k1", "node-a")
        assert c.post("/v1/keys/k1/commands", json={"command": "revoke", "reason": "x"}).status_code == 200
        _confirm(c, "k1", "node-a")
    code = _run(live, monkeypatch, "secadmin", "incident", "revoke", "k1", "--reason", "again", "--wait", "5s")
    out = capsys.readouterr().out
    assert code == 0 and "k1 is already revoked" in out and "all 1 nodes confirmed" in out


@pytest.mark.parametrize(
    ("token", "key", "says"),
    [
        ("operator", "k1", "HTTP 403"),  # an operator may suspend, not revoke
        ("secadmin", "ghost", "HTTP 409 key does not exist"),
    ],
)
def test_cannot_run_exits_2_with_one_line(live: Live, monkeypatch, capsys, token: str, key: str, says: str) -> None:
    with live.client() as c:
        _held(c, "k1", "node-a")
    code = _run(live, monkeypatch, token, "incident", "revoke", key, "--reason", "r", "--wait", "1s")
    err = capsys.readouterr().err
    assert code == 2 and says in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_an_unreachable_server_exits_2(monkeypatch, capsys) -> None:
    monkeypatch.setenv("KEYLIFE_TOKEN", "x")
    code = main(["incident", "revoke", "k1", "--reason", "r", "--url", "http://127.0.0.1:9"])
    assert code == 2 and "cannot reach" in capsys.readouterr().err


def _config_file(live: Live, tmp_path: Path) -> Path:
    path = tmp_path / "offline.yaml"
    data_dir = live.runtime.config.data_dir
    path.write_text(f"data_dir: {data_dir}\njournal:\n  origin: {live.runtime.config.journal.origin}\n")
    return path


def test_offline_export_is_the_servers_feed_and_verify_checks_it(live: Live, tmp_path: Path, monkeypatch,
                                                                 capsys) -> None:  # fmt: skip
    with live.client() as c:
        for key in ("k1", "k2"):
            _held(c, key, "node-a")
            assert c.post(f"/v1/keys/{key}/commands", json={"command": "revoke", "reason": "x"}).status_code == 200
        served = c.get("/v1/revocations", params={"since": 1}).text
        verifier = c.get("/v1/journal/verifier-key").text.strip()
    config = _config_file(live, tmp_path)
    out_file = tmp_path / "feed.note"
    assert main(["revocations", "export", "--offline", "--since", "1", "--config", str(config), "-o",
                 str(out_file)]) == 0  # fmt: skip
    exported = out_file.read_text()
    assert exported.split("\n\n")[0] == served.split("\n\n")[0]  # the same signed text (Ed25519 is deterministic)
    assert exported == served
    capsys.readouterr()
    assert main(["revocations", "verify", str(out_file), "--key", verifier, "--origin",
                 "test.keylife/api/revocations"]) == 0  # fmt: skip
    checked = orjson.loads(capsys.readouterr().out)
    assert checked["verified"] and [e["key_id"] for e in checked["entries"]] == ["k2"] and checked["version"] == 2
    out_file.write_text(exported.replace(" k2\n", " k9\n"))
    assert main(["revocations", "verify", str(out_file), "--key", verifier]) == 1
    assert "NOT VERIFIED: the feed note's signature does not verify: bad signature" in capsys.readouterr().err
    json_file = tmp_path / "feed.json"
    assert main(["revocations", "export", "--offline", "--json", "--config", str(config), "-o", str(json_file)]) == 0
    doc = orjson.loads(json_file.read_bytes())
    assert doc["version"] == 2 and [e["key_id"] for e in doc["entries"]] == ["k1", "k2"]
    assert main(["revocations", "verify", str(json_file), "--key", verifier]) == 0


def test_export_refuses_a_since_beyond_the_feed(live: Live, tmp_path: Path, capsys) -> None:
    config = _config_file(live, tmp_path)
    assert main(["revocations", "export", "--offline", "--since", "3", "--config", str(config)]) == 2
    assert "--since 3 is beyond the feed's current version 0" in capsys.readouterr().err
