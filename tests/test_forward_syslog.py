"""keylife serve shipping its journal to a real rsyslogd over TLS, as an operator runs it."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from keylife.common.canonical import canonical
from keylife.journal.reader import iter_entries
from keylife.journal.writer import genesis_hash
from tests.rsyslog import RsyslogServer
from tests.server import live_server
from tests.test_api import ev, ndjson
from tests.test_sink_syslog import BOM, parse_5424
from tests.tls_helpers import Pki, make_pki
from tests.waiting import wait_until as _wait

NDJSON = {"Content-Type": "application/x-ndjson"}


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def _sample(text: str, name: str, sink: str, reason: str | None = None) -> float:
    labels = f'reason="{reason}",sink="{sink}"' if reason else f'sink="{sink}"'
    for line in text.splitlines():
        if line.startswith(f"{name}{{{labels}}} "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name}{{{labels}}} not in /metrics")


def test_every_entry_arrives_in_order_as_rfc5424_with_seq_hash_and_checkpoints(tmp_path: Path, pki: Pki) -> None:
    with RsyslogServer(tmp_path / "rsyslog", tls="anon", pki=pki) as rsyslog:
        sink = {
            "type": "syslog",
            "name": "siem",
            "host": "127.0.0.1",
            "port": rsyslog.port,
            "tls": {"ca_file": str(pki.ca)},
        }
        with live_server(tmp_path, forwarder={"sinks": [sink]}) as live, live.client() as client:
            for start in range(0, 300, 100):
                body = ndjson(*[ev(n, reason=f'quote " bracket ] n={n}') for n in range(start, start + 100)])
                assert client.post("/v1/events", content=body, headers=NDJSON).status_code == 200
            journal = list(iter_entries(live.runtime.journal.directory))
            _wait(lambda: _sample(client.get("/metrics").text, "keylife_forward_lag_entries", "siem") == 0, 60)

            def arrived() -> bool:  # every entry (checkpoint lines are not entries) and a checkpoint
                kinds = [parse_5424(line).msgid == "checkpoint" for line in rsyslog.lines()]
                return kinds.count(False) >= len(journal) and True in kinds

            _wait(arrived, 60, "every journal entry and a checkpoint received by rsyslog")
            lines = rsyslog.lines()
    messages = [parse_5424(line) for line in lines]
    entries = [m for m in messages if m.msgid != "checkpoint"]
    assert [int(dict(m.sd)["keylife@32473"]["seq"]) for m in entries] == [e.seq for e in journal]
    head = genesis_hash("test.keylife/api")  # the chain recomputed here, from the journal's entries
    for message, entry in zip(entries, journal, strict=True):
        line = canonical({"event": entry.event, "observed_at": entry.observed_at, "seq": entry.seq})
        head = hashlib.sha256(head + line).digest()
        params = dict(message.sd)["keylife@32473"]
        assert params["hash"] == head.hex()
        assert message.msg.startswith(BOM) and json.loads(message.msg[3:]) == entry.event
    checkpoints = [m for m in messages if m.msgid == "checkpoint"]
    assert checkpoints, "signed checkpoints are published in the stream"
    note = json.loads(checkpoints[-1].msg[3:])["note"]
    assert "test.keylife/api" in note and "\u2014 " in note  # origin line and signature line


def test_mtls_without_a_client_certificate_delivers_nothing_and_says_so(tmp_path: Path, pki: Pki) -> None:
    with RsyslogServer(tmp_path / "rsyslog", tls="x509/certvalid", pki=pki) as rsyslog:
        sink = {
            "type": "syslog",
            "name": "strict",
            "host": "127.0.0.1",
            "port": rsyslog.port,
            "tls": {"ca_file": str(pki.ca)},
            "retry_initial_seconds": 0.05,
            "retry_max_seconds": 0.2,
        }
        with live_server(tmp_path, forwarder={"sinks": [sink]}) as live, live.client() as client:
            assert client.post("/v1/events", content=ndjson(ev(1), ev(2)), headers=NDJSON).status_code == 200

            def refused() -> float:
                return _sample(client.get("/metrics").text, "keylife_forward_failures_total", "strict", "tls")

            _wait(lambda: refused() >= 2)
            text = client.get("/metrics").text
            tried = _sample(text, "keylife_forward_failures_total", "strict", "tls")
            _wait(lambda: refused() > tried)  # nothing may arrive: look after one more refused attempt, not a guess
            received = rsyslog.lines()
    assert received == []
    assert _sample(text, "keylife_forward_up", "strict") == 0
    assert _sample(text, "keylife_forward_lag_entries", "strict") >= 2
    assert _sample(text, "keylife_forward_records_sent_total", "strict") == 0
