"""Validation is total: what the event model accepts can always be journaled and projected, and
what it cannot is a 422 naming the line and the field (issue 10, items 5, 6 and 8).

A time whose offset takes it out of years 0001-9999 in UTC, a body whose lines only make events
when joined, a name with a trailing newline: each used to pass validation and fail later (in the
writer, for every producer in the same group) or be stored under a wrong line number.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from audit_forwarder.formats.syslog5424 import sd_id
from audit_forwarder.shipper.settings import SinkSettings
from audit_forwarder.sinks.loki import LokiSinkConfig
from exporter.fleet import FleetIndex
from exporter.policy import PolicyDocument, load_policy
from keylife.common.canonical import canonical, check_canonical_safe
from keylife.config import DataFoldFile, DataFoldPoll, DataFoldSse, Token
from keylife.domain.events import MAX_SAFE_INT, Event, EventType, event_digest
from keylife.domain.lifecycle import KeyState
from keylife.ingest import lines as ingest
from keylife.journal.reader import iter_entries
from keylife.journal.segments import list_segments
from keylife.registry.projection import ProjectionDelta, Registry
from tests.journal_helpers import open_journal
from tests.server import Live, live_server

NDJSON = {"Content-Type": "application/x-ndjson"}
NOW = "2026-11-28T10:00:00Z"
OVERFLOWING = [
    ("occurred_at", "9999-12-31T23:59:59-01:00"),
    ("occurred_at", "0001-01-01T00:00:00+01:00"),
    ("interval_end", "9999-12-31T23:59:59-23:59"),
    ("interval_start", "0001-01-01T12:00:00+23:59"),
    ("expires_at", "9999-12-31T23:00:00.5-01:00"),
]


def usage(n: int, **fields: Any) -> dict[str, Any]:
    return {
        "id": f"u-{n}",
        "type": "usage_report",
        "key_id": "k-1",
        "occurred_at": NOW,
        "node": "n-1",
        "usage": {"encrypt": 1},
    } | fields


@pytest.fixture
def live(tmp_path: Path) -> Iterator[Live]:
    with live_server(tmp_path) as server:
        yield server


# ----- item 5: times that leave the UTC range --------------------------------------------------
@pytest.mark.parametrize(("field", "value"), OVERFLOWING)
def test_a_time_outside_utc_range_is_422_naming_the_field(live: Live, field: str, value: str) -> None:
    event = usage(1, **{field: value})
    if field == "interval_start":
        event["interval_end"] = "9999-01-01T00:00:00Z"
    if field == "expires_at":
        event = {"id": "g-1", "type": "generated", "key_id": "k-1", "occurred_at": NOW, field: value}
    with live.client() as c:
        r = c.post("/v1/events", content=orjson.dumps(event) + b"\n", headers=NDJSON)
        assert r.status_code == 422, r.text
        (error,) = r.json()["errors"]
        assert error["line"] == 1 and error["field"] == field and error["id"] == event["id"]
        assert "outside 0001-01-01T00:00:00Z..9999-12-31T23:59:59.999999Z in UTC" in error["message"]
        assert c.get("/readyz").status_code == 200  # the writer never saw it
    assert list(iter_entries(live.runtime.journal.directory)) == []


def test_the_edges_of_the_utc_range_are_accepted_and_written_in_utc(live: Live) -> None:
    edges = {
        "occurred_at": "0001-01-01T00:59:59-01:00",  # 01:59:59Z on day one
        "interval_start": "0001-01-01T23:59:00+23:59",
        "interval_end": "9999-12-31T00:00:00-23:59",
    }
    with live.client() as c:
        r = c.post("/v1/events", json=usage(1, **edges))
        assert r.status_code == 200, r.text
    (entry,) = iter_entries(live.runtime.journal.directory)
    assert entry.event["occurred_at"] == "0001-01-01T01:59:59Z"
    assert entry.event["interval_start"] == "0001-01-01T00:00:00Z"
    assert entry.event["interval_end"] == "9999-12-31T23:59:00Z"


def test_one_producers_bad_event_never_fails_another_producers_request(live: Live) -> None:
    """Before: the bad event reached the writer, whose group then failed whole (503 for both)."""
    results: dict[str, list[int]] = {"good": [], "bad": []}

    def post(kind: str, n: int) -> None:
        when = NOW if kind == "good" else "9999-12-31T23:59:59-01:00"
        with live.client() as c:
            body = orjson.dumps(usage(n, id=f"{kind}-{n}", occurred_at=when))
            results[kind].append(c.post("/v1/events", content=body, headers=NDJSON).status_code)

    for n in range(15):
        threads = [threading.Thread(target=post, args=(kind, n)) for kind in ("good", "bad")]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert results == {"good": [200] * 15, "bad": [422] * 15}


# ----- item 5: anything the model accepts goes all the way --------------------------------------
_ID = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._:@/+=-]{0,20}", fullmatch=True)
_WORD = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,10}", fullmatch=True)
_OFFSET = st.integers(-(24 * 60 - 1), 24 * 60 - 1).map(lambda m: timezone(timedelta(minutes=m)))
_EDGE_DAY = st.sampled_from([datetime(1, 1, 1), datetime(1, 1, 1, 23, 59, 59), datetime(9999, 12, 31),
                             datetime(9999, 12, 31, 23, 59, 59, 999999)])  # fmt: skip
_NAIVE = st.one_of(_EDGE_DAY, st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31, 23, 59)))


@st.composite
def times(draw: st.DrawFn) -> str:
    """RFC 3339 text with any offset (some leave the UTC range: the model must refuse those)."""
    value = draw(_NAIVE).replace(tzinfo=draw(st.one_of(st.just(UTC), _OFFSET)))
    return value.isoformat().replace("+00:00", draw(st.sampled_from(["Z", "+00:00"])))


COUNTS = st.one_of(st.sampled_from([0, 1, MAX_SAFE_INT, MAX_SAFE_INT + 1, -1]), st.integers(0, MAX_SAFE_INT))
TEXT = st.text(max_size=40)  # any code point but surrogates (JSON cannot carry them either)
OPTIONAL = {
    "key_id": st.one_of(_ID, TEXT),
    "node": _ID,
    "actor": _ID,
    "reason": TEXT,
    "correlation_id": _ID,
    "origin": st.sampled_from(["observation", "command"]),
    "algorithm": _WORD,
    "key_size": st.one_of(st.sampled_from([0, 1, 65536, 65537]), st.integers(-(2**63), 2**64 - 1)),
    "curve": _WORD,
    "purpose": _WORD,
    "owner": _ID,
    "expires_at": times(),
    "predecessor": _ID,
    "successor": _ID,
    "data_instances": st.lists(_ID, max_size=3),
    "usage": st.dictionaries(st.from_regex(r"[a-z][a-z0-9_]{0,31}", fullmatch=True), COUNTS, max_size=4),
    "interval_start": times(),
    "interval_end": times(),
    "state": st.sampled_from([s.value for s in KeyState]),
    "violation": _WORD,
    "attributes": st.dictionaries(st.from_regex(r"[a-z][a-z0-9_.]{0,62}\n?", fullmatch=True), TEXT, max_size=3),
}


@st.composite
def event_documents(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(st.sampled_from([str(t) for t in EventType]))
    doc: dict[str, Any] = {"id": draw(_ID), "type": kind, "occurred_at": draw(times()), "key_id": draw(_ID)}
    needs = {"rotated": ["successor"], "usage_report": ["usage"], "propagated": ["node", "state"],
             "policy_violation": ["violation"]}.get(kind, [])  # fmt: skip
    for name in needs + draw(st.lists(st.sampled_from(sorted(OPTIONAL)), unique=True, max_size=8)):
        doc[name] = draw(OPTIONAL[name])
    return doc


def test_every_event_the_model_accepts_is_canonicalised_digested_journaled_and_projected(tmp_path: Path) -> None:
    journal = open_journal(tmp_path)
    registry = Registry(tmp_path / "registry.sqlite", origin="test.keylife/journal")
    index = FleetIndex(load_policy(), registry.path)  # the exporter follows every commit too
    failures: list[BaseException] = []

    def follow(delta: ProjectionDelta) -> None:
        try:
            index.apply(delta)
        except BaseException as exc:  # commit() would only log it: record it for the assertion
            failures.append(exc)
            raise

    registry.listeners.append(follow)
    accepted: list[int] = []
    seen: set[str] = set()

    @settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(doc=event_documents())
    def check(doc: dict[str, Any]) -> None:
        try:
            event = Event.model_validate_json(orjson.dumps(doc))
        except ValidationError:
            return
        if event.id in seen:
            return
        seen.add(event.id)
        payload = event.payload()
        check_canonical_safe(payload)
        body = canonical(payload)
        assert Event.model_validate_json(body).payload() == payload  # what is journaled reads back the same
        digest = event_digest(payload, body)
        entries = journal.append_encoded([payload], [body])
        journal.commit()
        registry.begin()
        registry.apply_many(entries, [digest])
        registry.commit()
        assert failures == []
        index.snapshot(time.time(), 100)  # a scrape over whatever the events held
        accepted.append(entries[0].seq)

    try:
        check()
        assert len(accepted) > 50, "the strategy must produce valid events, or the property says nothing"
        assert registry.last_applied_seq() == accepted[-1]
    finally:
        registry.close()
        journal.close()


# ----- item 6: each NDJSON line parsed on its own ----------------------------------------------
def _line(n: int) -> bytes:
    return orjson.dumps({"id": f"e{n}", "type": "generated", "key_id": f"k{n}", "occurred_at": NOW})


# A string left open on one line and closed on the next: joined with ',' the two are one object.
SPLIT_OPEN = b'{"id":"s1","type":"generated","key_id":"ks","reason":"}'
SPLIT_CLOSE = b'{","occurred_at":"' + NOW.encode() + b'"}'
TWO_ON_ONE_LINE = _line(90) + b"," + _line(91)


def test_a_split_object_is_refused_naming_both_lines(live: Live) -> None:
    with live.client() as c:
        r = c.post("/v1/events", content=b'{"a":1\n"b":2}\n', headers=NDJSON)
        assert r.status_code == 422
        assert sorted({e["line"] for e in r.json()["errors"]}) == [1, 2]
        # Joined with commas, these three lines parse as exactly three events: accepted before.
        body = b"\n".join([SPLIT_OPEN, SPLIT_CLOSE, TWO_ON_ONE_LINE])
        r = c.post("/v1/events", content=body, headers=NDJSON)
        assert r.status_code == 422, r.text
        errors = r.json()["errors"]
        assert sorted({e["line"] for e in errors}) == [1, 2, 3]
        assert all(e["message"].startswith("malformed JSON") for e in errors)
    assert list(iter_entries(live.runtime.journal.directory)) == []


@st.composite
def bodies(draw: st.DrawFn) -> list[bytes]:
    parts: list[bytes] = []
    for n in range(draw(st.integers(1, 8))):
        kind = draw(st.sampled_from(["good", "split", "two", "junk", "bad"]))
        if kind == "good":
            parts.append(_line(n))
        elif kind == "split":
            parts += [SPLIT_OPEN, SPLIT_CLOSE]
        elif kind == "two":
            parts.append(TWO_ON_ONE_LINE)
        elif kind == "bad":
            parts.append(orjson.dumps({"id": f"b{n}", "type": "generated", "occurred_at": NOW}))  # no key_id
        else:
            parts.append(draw(st.binary(max_size=30)).replace(b"\n", b" ") or b"{}")
    return parts


@settings(max_examples=200, deadline=None)
@given(lines=bodies())
def test_each_lines_result_is_what_that_line_alone_gives(lines: list[bytes]) -> None:
    numbered = ingest.split_body(b"\n".join(lines), ndjson=True)
    events, errors = ingest.parse_lines(numbered)
    alone = [ingest.parse_lines([(n, raw)]) for n, raw in numbered]
    assert [e.id for e in events] == [e.id for ok, _ in alone for e in ok]
    assert [(e.line, e.field, e.message) for e in errors] == [(e.line, e.field, e.message) for _, bad in alone
                                                               for e in bad]  # fmt: skip


# ----- item 8: a trailing newline is never part of a valid name ----------------------------------
EVENT_NAMES = {
    "id": "e-1",
    "key_id": "k-1",
    "node": "n-1",
    "actor": "a-1",
    "correlation_id": "c-1",
    "algorithm": "aes",
    "curve": "p-256",
    "purpose": "signing",
    "owner": "team",
    "predecessor": "k-0",
    "successor": "k-2",
    "violation": "rule",
}


@pytest.mark.parametrize("field", sorted(EVENT_NAMES))
def test_event_names_with_a_trailing_newline_are_refused(field: str) -> None:
    base = {"id": "e-1", "type": "rotated", "key_id": "k-1", "successor": "k-2", "occurred_at": NOW}
    Event.model_validate(base | {field: EVENT_NAMES[field]})  # the value itself is fine
    with pytest.raises(ValidationError) as info:
        Event.model_validate(base | {field: EVENT_NAMES[field] + "\n"})
    assert info.value.errors()[0]["loc"][0] == field


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("attributes", {"team\n": "x"}),
        ("usage", {"encrypt\n": 1}),
        ("data_instances", ["db-1\n"]),
    ],
)
def test_event_map_keys_and_list_items_with_a_trailing_newline_are_refused(live: Live, field: str, value: Any) -> None:
    event = usage(1, **{field: value})
    with live.client() as c:
        r = c.post("/v1/events", json=event)
    assert r.status_code == 422
    assert r.json()["errors"][0]["field"].split(".")[0] == field


CONFIG_NAMES = [
    (Token, {"name": "ops", "sha256": "0" * 64, "scopes": ["read"]}, "name"),
    (Token, {"name": "ops", "sha256": "0" * 64, "scopes": ["read"]}, "sha256"),
    (DataFoldFile, {"path": "/tmp/x.log", "node": "n-1"}, "node"),
    (DataFoldSse, {"url": "http://127.0.0.1:9/api/logs/stream", "node": "n-1"}, "node"),
    (DataFoldPoll, {"url": "http://127.0.0.1:9", "node": "n-1", "clients": ["c1"]}, "node"),
    (SinkSettings, {"name": "siem"}, "name"),
    (LokiSinkConfig, {"type": "loki", "name": "loki", "url": "http://127.0.0.1:3100", "tenant": "t1"}, "tenant"),
    (LokiSinkConfig, {"type": "loki", "name": "loki", "url": "http://x", "environment": "prod"}, "environment"),
    (LokiSinkConfig, {"type": "loki", "name": "loki", "url": "http://x", "service": "keylife"}, "service"),
]


@pytest.mark.parametrize(("model", "good", "field"), CONFIG_NAMES, ids=lambda v: getattr(v, "__name__", str(v)))
def test_config_names_with_a_trailing_newline_are_refused(model: Any, good: dict[str, Any], field: str) -> None:
    model.model_validate(good)
    with pytest.raises(ValidationError):
        model.model_validate(good | {field: good[field] + "\n"})


def test_policy_names_pen_and_segment_files_with_a_trailing_newline_are_refused(tmp_path: Path) -> None:
    PolicyDocument.model_validate({"purposes": {"signing": {}}, "algorithms": {"aes-256": {}}})
    with pytest.raises(ValidationError):
        PolicyDocument.model_validate({"purposes": {"signing\n": {}}})
    with pytest.raises(ValidationError):
        PolicyDocument.model_validate({"algorithms": {"aes-256\n": {}}})
    assert sd_id("32473").endswith("@32473")
    with pytest.raises(ValueError, match="private enterprise number"):
        sd_id("32473\n")
    (tmp_path / f"{0:020d}.log\n").write_bytes(b"")  # not a segment: a name with a newline
    assert list_segments(tmp_path) == []


def test_the_rust_regex_end_anchor_is_end_of_text() -> None:
    """pydantic's ``pattern=`` runs in Rust, where ``$`` is the end of the text (no newline)."""
    for value in ("k-1\n", "k-1\r\n", "k-1\n\n"):
        with pytest.raises(ValidationError):
            Event.model_validate({"id": "e", "type": "generated", "key_id": value, "occurred_at": NOW})
