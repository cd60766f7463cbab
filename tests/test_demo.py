"""The simulated DataFold network: deterministic, valid, realistic, and a well-behaved live feeder."""

from __future__ import annotations

import json
import socket
import statistics
import threading
import time
from collections import Counter, defaultdict
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from keylife.demo.network import SIZES, DemoConfig, DemoNetwork, run_live
from keylife.domain.events import SYSTEM_TYPES, Event
from keylife.domain.lifecycle import TARGET_STATE, KeyState, observed_state, use_conflicts
from tests.waiting import wait_until

START = datetime(2025, 6, 2, tzinfo=UTC)  # a Monday: two weekdays of history
CONFIG = DemoConfig(nodes=4, keys=24, seed=7, start=START, history=timedelta(days=2))


def at(value: str) -> datetime:
    return datetime.fromisoformat(value)


@pytest.fixture(scope="module")
def net() -> DemoNetwork:
    return DemoNetwork(CONFIG)


@pytest.fixture(scope="module")
def events(net: DemoNetwork) -> list[dict[str, Any]]:
    return net.history()


@pytest.fixture(scope="module")
def scenario(net: DemoNetwork) -> dict[str, str]:
    return net.scenario_keys()


def of_type(events: list[dict[str, Any]], kind: str, key_id: str | None = None) -> list[dict[str, Any]]:
    return [e for e in events if e["type"] == kind and (key_id is None or e["key_id"] == key_id)]


# ----- determinism ------------------------------------------------------------------------------
def test_same_seed_same_events(events: list[dict[str, Any]]) -> None:
    assert DemoNetwork(CONFIG).history() == events


def test_different_seed_different_events(events: list[dict[str, Any]]) -> None:
    other = DemoNetwork(replace(CONFIG, seed=8)).history()
    assert other != events
    assert not {e["id"] for e in other} & {e["id"] for e in events}
    assert not {e["key_id"] for e in other} & {e["key_id"] for e in events}


def test_slicing_does_not_change_the_stream() -> None:
    until = START + CONFIG.history + timedelta(hours=2)
    whole = DemoNetwork(CONFIG).advance(until)
    sliced: list[dict[str, Any]] = []
    net, t = DemoNetwork(CONFIG), START - timedelta(minutes=1)
    while t < until:
        t = min(until, t + timedelta(seconds=7919))
        sliced += net.advance(t)
    assert sliced == whole
    assert net.advance(until) == []  # nothing is returned twice


# ----- validity and order ------------------------------------------------------------------------
def test_every_event_validates(events: list[dict[str, Any]]) -> None:
    for raw in events:
        event = Event.model_validate(raw)
        assert event.type not in SYSTEM_TYPES
        assert event.node and event.actor


def test_time_order_and_bounds(net: DemoNetwork, events: list[dict[str, Any]]) -> None:
    times = [at(e["occurred_at"]) for e in events]
    assert times == sorted(times)
    assert times[0] >= START and times[-1] <= net.now == START + CONFIG.history


def test_ids_unique(net: DemoNetwork, events: list[dict[str, Any]]) -> None:
    more = DemoNetwork(CONFIG).advance(net.now + timedelta(hours=3))
    ids = [e["id"] for e in more]
    assert len(ids) == len(set(ids)) and len(more) > len(events)


def test_key_attributes(events: list[dict[str, Any]], scenario: dict[str, str]) -> None:
    generated = {e["key_id"]: e for e in of_type(events, "generated")}
    algorithms = Counter((e["algorithm"], e["key_size"], e["purpose"]) for e in generated.values())
    assert ("ed25519", 256, "authentication") in algorithms
    assert ("aes-256-gcm", 256, "encryption") in algorithms
    assert any(a == "rsa" and p == "key_wrap" and s in (2048, 3072) for a, s, p in algorithms)
    assert generated[scenario["legacy_rsa_1024"]]["key_size"] == 1024
    assert generated[scenario["legacy_3des"]]["algorithm"] == "3des"
    for e in generated.values():
        assert e["owner"] and at(e["expires_at"]) > at(e["occurred_at"])
        assert e["data_instances"] if e["purpose"] == "encryption" else True


# ----- the scenario -------------------------------------------------------------------------------
def test_replay_is_clean_except_the_compromised_key(events: list[dict[str, Any]], scenario: dict[str, str]) -> None:
    """Replayed through the lifecycle table: no skipped transition, no use of an unknown key,
    and the only conflicting use is the compromised key on the rogue node."""
    state: dict[str, KeyState] = {}
    conflicts: Counter[tuple[str, str]] = Counter()
    for e in events:
        key = e["key_id"]
        if e["type"] in TARGET_STATE:
            new, problem = observed_state(state.get(key), e["type"])
            assert problem is None, e
            assert new is not None
            state[key] = new
            if e["type"] == "rotated":
                assert state[e["successor"]] == KeyState.PRE_ACTIVATION
                state[e["successor"]] = KeyState.ACTIVE
        elif e["type"] in ("usage_report", "propagated", "security_event"):
            assert key in state, e
            if e["type"] == "usage_report" and use_conflicts(state[key], e["usage"]):
                conflicts[(key, e["node"])] += 1
    assert set(conflicts) == {(scenario["compromised"], scenario["rogue_node"])}
    assert state[scenario["suspended"]] == KeyState.SUSPENDED
    assert state[scenario["reactivated"]] == KeyState.ACTIVE
    assert state[scenario["revoked"]] == KeyState.REVOKED
    assert state[scenario["compromised"]] == KeyState.COMPROMISED
    assert state[scenario["destroyed"]] == KeyState.DESTROYED
    assert state[scenario["expired"]] in (KeyState.DEACTIVATED, KeyState.DESTROYED)
    assert state[scenario["compromise_replacement"]] == KeyState.ACTIVE


def test_compromised_key_keeps_being_used(events: list[dict[str, Any]], scenario: dict[str, str]) -> None:
    key = scenario["compromised"]
    (compromise,) = of_type(events, "compromised", key)
    when = at(compromise["occurred_at"])
    after = [e for e in of_type(events, "usage_report", key) if at(e["interval_end"]) > when]
    assert len(after) > 10
    assert {e["node"] for e in after} == {scenario["rogue_node"]}
    assert of_type(events, "security_event", key)
    replacement = of_type(events, "generated", scenario["compromise_replacement"])
    assert replacement[0]["predecessor"] == key


def test_suspended_key_goes_quiet(events: list[dict[str, Any]], scenario: dict[str, str]) -> None:
    key = scenario["suspended"]
    (suspension,) = of_type(events, "suspended", key)
    assert suspension["reason"]
    used = of_type(events, "usage_report", key)
    assert used and all(at(e["interval_end"]) <= at(suspension["occurred_at"]) for e in used)
    assert of_type(events, "reactivated", scenario["reactivated"])


def test_rotation_with_generated_successor(events: list[dict[str, Any]], scenario: dict[str, str]) -> None:
    old, new = scenario["rotated"], scenario["rotated_successor"]
    (rotation,) = of_type(events, "rotated", old)
    (birth,) = of_type(events, "generated", new)
    assert rotation["successor"] == new and birth["predecessor"] == old
    assert at(birth["occurred_at"]) < at(rotation["occurred_at"])
    assert of_type(events, "destroyed", old)
    assert of_type(events, "usage_report", new)  # the successor takes over the traffic


def test_every_state_change_propagates(events: list[dict[str, Any]]) -> None:
    by_cause: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for e in of_type(events, "propagated"):
        by_cause[e["correlation_id"]].append(e)
    changes = [e for e in events if e["type"] in TARGET_STATE]
    late = 0
    for change in changes:
        props = by_cause.get(change["id"], [])
        late += not props  # the lagging node may not have reported yet at the end of history
        for p in props:
            expected = {TARGET_STATE[change["type"]].value}
            if change["type"] == "rotated":
                expected.add(KeyState.ACTIVE.value if p["key_id"] == change["successor"] else "")
            assert p["state"] in expected and at(p["occurred_at"]) > at(change["occurred_at"])
    assert late <= 2


def test_lagging_node(events: list[dict[str, Any]], scenario: dict[str, str]) -> None:
    causes = {e["id"]: at(e["occurred_at"]) for e in events if e["type"] in TARGET_STATE}
    delays: dict[str, list[float]] = defaultdict(list)
    for e in of_type(events, "propagated"):
        delays[e["node"]].append((at(e["occurred_at"]) - causes[e["correlation_id"]]).total_seconds())
    lagging = scenario["lagging_node"]
    assert statistics.median(delays[lagging]) > 300
    assert max(delays[lagging]) > 1800
    assert all(statistics.median(v) < 60 for n, v in delays.items() if n != lagging)
    (compromise,) = of_type(events, "compromised", scenario["compromised"])
    heard = {e["node"] for e in of_type(events, "propagated") if e["correlation_id"] == compromise["id"]}
    assert heard and lagging not in heard  # it missed the news: that is why it keeps using the key


def test_daily_rhythm(events: list[dict[str, Any]]) -> None:
    per_hour: Counter[int] = Counter()
    for e in of_type(events, "usage_report"):
        per_hour[at(e["interval_start"]).hour] += sum(e["usage"].values())
    assert per_hour[14] > 2 * per_hour[2]
    assert max(per_hour, key=lambda h: per_hour[h]) in range(12, 17)
    operations = {op for e in of_type(events, "usage_report") for op in e["usage"]}
    assert {"encrypt", "decrypt", "verify", "sign"} <= operations


# ----- live pacing and size --------------------------------------------------------------------
def test_live_stream_is_fresh_and_never_ahead() -> None:
    net = DemoNetwork(replace(CONFIG, speed=1440.0))  # a lifecycle day per wall minute
    net.history()
    counts, lifecycle = [], Counter()
    for step in range(1, 61):
        until = net.now + timedelta(minutes=step)
        batch = net.advance(until)
        assert all(at(e["occurred_at"]) <= until for e in batch)
        counts.append(len(batch))
        lifecycle.update(e["type"] for e in batch if e["type"] in TARGET_STATE)
    assert min(counts) > 0  # something every minute
    assert lifecycle["rotated"] >= 3 and lifecycle["generated"] >= 3


def test_large_fleet_is_quick() -> None:
    config = DemoConfig(**{**SIZES["bench"], "keys": 2000}, start=START)
    began = time.perf_counter()
    count = sum(1 for _ in DemoNetwork(config).iter_history())
    assert count > 50_000 and time.perf_counter() - began < 10


# ----- run_live against a tiny server -------------------------------------------------------------
class _Recorder:
    def __init__(self, statuses: list[int]) -> None:
        self.statuses = statuses  # answers to the first requests; then 200
        self.requests: list[tuple[dict[str, str], bytes, int]] = []
        self.lock = threading.Lock()

    def handler(self) -> type[BaseHTTPRequestHandler]:
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with recorder.lock:
                    status = recorder.statuses.pop(0) if recorder.statuses else 200
                    recorder.requests.append((dict(self.headers), body, status))
                lines = body.splitlines()
                reply = {
                    "accepted": len(lines),
                    "duplicate": 0,
                    "results": [{"line": i + 1, "status": "accepted"} for i in range(len(lines))],
                }
                payload = json.dumps(reply if status == 200 else {"detail": "busy"}).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                if status == 503:
                    self.send_header("Retry-After", "0")
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: Any) -> None:
                pass

        return Handler


@pytest.fixture
def server() -> Any:
    def start(statuses: list[int]) -> tuple[str, _Recorder]:
        recorder = _Recorder(statuses)
        httpd = ThreadingHTTPServer(("127.0.0.1", 0), recorder.handler())
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        started.append(httpd)
        return f"http://127.0.0.1:{httpd.server_address[1]}", recorder

    started: list[ThreadingHTTPServer] = []
    yield start
    for httpd in started:
        httpd.shutdown()
        httpd.server_close()


def test_run_live_posts_history_with_auth_and_retries(server: Any) -> None:
    base, recorder = server([503])
    now = datetime(2025, 6, 4, 12, tzinfo=UTC)
    config = DemoConfig(nodes=2, keys=10, seed=3, history=timedelta(hours=2))
    expected = DemoNetwork(replace(config, start=now - config.history)).history()
    stop, errors = threading.Event(), []
    thread = threading.Thread(
        target=run_live,
        args=(base + "/", "s3cret", config),
        daemon=True,
        kwargs={"stop": stop, "batch": 100, "on_error": errors.append, "poll": 0.05, "clock": lambda: now},
    )
    thread.start()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and sum(s == 200 for *_, s in recorder.requests) * 100 < len(expected):
        time.sleep(0.05)
    stop.set()
    thread.join(10)
    assert not thread.is_alive()
    first, second = recorder.requests[0], recorder.requests[1]
    assert first[2] == 503 and first[1] == second[1]  # the refused batch was sent again
    assert len(errors) == 1 and isinstance(errors[0], httpx.HTTPStatusError)
    for headers, _, _ in recorder.requests:
        assert headers["Authorization"] == "Bearer s3cret"
        assert headers["Content-Type"] == "application/x-ndjson"
    posted = [json.loads(line) for _, body, status in recorder.requests if status == 200 for line in body.splitlines()]
    assert posted == expected


def test_run_live_survives_a_missing_server() -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    stop, errors = threading.Event(), []
    config = DemoConfig(nodes=2, keys=10, history=timedelta(hours=1))
    thread = threading.Thread(
        target=run_live,
        args=(f"http://127.0.0.1:{port}", "t", config),
        daemon=True,
        kwargs={"stop": stop, "on_error": errors.append},
    )
    thread.start()
    wait_until(lambda: errors, 30, "run_live reporting the refused connection")
    stop.set()
    thread.join(10)
    assert not thread.is_alive() and errors and isinstance(errors[0], httpx.TransportError)


def test_run_live_stops_on_a_refused_token(server: Any) -> None:
    base, recorder = server([401])
    config = DemoConfig(keys=10, history=timedelta(hours=1))
    thread = threading.Thread(
        target=run_live,
        args=(base, "wrong", config),
        daemon=True,
        kwargs={"stop": threading.Event(), "on_error": lambda exc: None},
    )
    thread.start()
    thread.join(10)
    assert not thread.is_alive() and len(recorder.requests) == 1
