"""ECS documents (audit_forwarder.formats.ecs): field placement, categorisation, and properties on any event."""

from __future__ import annotations

import hashlib
from datetime import UTC

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from audit_forwarder.formats import parse_time
from audit_forwarder.formats.ecs import DATASET, ECS_VERSION, ecs_document, format_document
from keylife.journal.writer import Entry

HASH = hashlib.sha256(b"x").digest()
OBSERVED = "2026-11-28T10:00:00.000000Z"
EVENT = {"id": "e1", "type": "usage_report", "key_id": "k1", "occurred_at": "2026-11-28T09:59:58+01:00"}
EVENT |= {"actor": "node-a", "node": "n1"}


def entry(event: dict, seq: int = 7, observed: str = OBSERVED) -> Entry:
    return Entry(seq, observed, event, HASH)


def test_a_usage_report_maps_to_ecs_fields() -> None:
    doc = orjson.loads(format_document(entry(EVENT), checkpoint=1000, hostname="fwd-1"))
    assert doc["@timestamp"] == OBSERVED
    assert doc["ecs"] == {"version": ECS_VERSION}
    assert doc["event"] == {
        "kind": "event",
        "category": ["iam"],
        "type": ["admin", "info"],
        "action": "usage_report",
        "sequence": 7,
        "created": OBSERVED,
        "severity": 2,
        "dataset": DATASET,
        "module": "keylife",
        "id": "e1",
    }
    assert doc["log"] == {"level": "informational"}
    assert doc["user"] == {"name": "node-a"}
    assert doc["host"] == {"name": "n1"}
    assert doc["related"] == {"user": ["node-a"], "hosts": ["n1"]}
    assert doc["observer"]["vendor"] == "DataFold" and doc["observer"]["product"] == "keylife"
    assert doc["observer"]["hostname"] == "fwd-1"
    assert doc["keylife"] == {
        "seq": 7,
        "hash": HASH.hex(),
        "checkpoint": 1000,
        "key_id": "k1",
        "occurred_at": "2026-11-28T08:59:58.000000Z",
        "event": EVENT,
    }
    assert doc["message"] == "keylife usage_report key k1 by node-a on n1 (seq 7)"


@pytest.mark.parametrize(
    ("kind", "kind_field", "category", "types", "outcome", "severity", "level"),
    [
        ("compromised", "alert", ["iam"], ["admin", "change"], None, 10, "critical"),
        ("security_event", "alert", ["intrusion_detection"], ["info"], None, 8, "error"),
        ("auth_failure", "event", ["authentication"], ["start"], "failure", 6, "warning"),
        ("command_refused", "event", ["iam"], ["admin", "change"], "failure", 6, "warning"),
        ("generated", "event", ["iam"], ["admin", "creation"], "success", 2, "informational"),
        ("destroyed", "event", ["iam"], ["admin", "deletion"], "success", 4, "notice"),
        ("revoked", "event", ["iam"], ["admin", "change"], "success", 4, "notice"),
        ("incident", "event", ["intrusion_detection"], ["info"], None, 6, "warning"),
        ("lockdown", "event", ["iam"], ["admin", "change"], "success", 6, "warning"),
        ("bulk_operation", "event", ["iam"], ["admin", "change"], "success", 4, "notice"),
        ("approval", "event", ["iam"], ["admin", "change"], "success", 4, "notice"),
        ("anomaly", "event", ["intrusion_detection"], ["info"], None, 6, "warning"),
        ("report", "event", ["configuration"], ["info"], None, 4, "notice"),
        ("something_new", "event", ["iam"], ["admin", "info"], None, 4, "notice"),
    ],
)
def test_categorisation_by_type(
    kind: str, kind_field: str, category: list, types: list, outcome: str | None, severity: int, level: str
) -> None:
    doc = ecs_document(entry({"type": kind, "reason": "line one\nline two"}))
    assert doc["event"]["kind"] == kind_field
    assert doc["event"]["category"] == category and doc["event"]["type"] == types
    assert doc["event"].get("outcome") == outcome
    assert doc["event"]["severity"] == severity and doc["log"]["level"] == level
    assert doc["event"]["reason"] == "line one\nline two"
    assert "\n" not in doc["message"] and doc["message"].endswith(": line one line two")


def test_a_checkpoint_record_renders_without_special_cases() -> None:
    event = {"type": "checkpoint", "origin": "keylife.example/j", "size": 1000, "root_hash": "ab" * 32}
    event["note"] = "keylife.example/j\n1000\nq83vNw==\n\n— keylife.example/j sig\n"
    doc = ecs_document(entry(event, seq=999), checkpoint=1000)
    assert doc["event"]["category"] == ["configuration"] and doc["event"]["type"] == ["info"]
    assert "id" not in doc["event"] and "user" not in doc and "host" not in doc and "related" not in doc
    assert doc["keylife"]["checkpoint"] == 1000 and doc["keylife"]["event"] is event
    assert doc["message"] == f"keylife checkpoint: keylife.example/j size 1000 root {'ab' * 32}"


def test_non_text_identifiers_become_canonical_json_and_a_bad_occurred_at_is_left_in_the_event() -> None:
    doc = ecs_document(entry({"type": "rotated", "actor": {"b": 1, "a": [2]}, "occurred_at": "yesterday"}))
    assert doc["user"]["name"] == '{"a":[2],"b":1}'
    assert "occurred_at" not in doc["keylife"] and doc["keylife"]["event"]["occurred_at"] == "yesterday"
    assert "checkpoint" not in doc["keylife"]


# ----- properties ------------------------------------------------------------------------------------
SAFE_INT = st.integers(min_value=-(2**53) + 1, max_value=2**53 - 1)
SCALARS = st.none() | st.booleans() | SAFE_INT | st.text(max_size=40)
JSON = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=20,
)
KNOWN = st.sampled_from(["id", "type", "key_id", "actor", "node", "reason", "occurred_at", "root_hash", "size"])
EVENTS = st.dictionaries(KNOWN | st.text(max_size=12), JSON, max_size=10)
OBSERVED_TIMES = st.datetimes(timezones=st.just(UTC)).map(
    lambda t: t.isoformat(timespec="microseconds").replace("+00:00", "Z")
)


@settings(max_examples=300, deadline=None)
@given(event=EVENTS, seq=st.integers(0, 2**53 - 1), observed=OBSERVED_TIMES, checkpoint=st.none() | SAFE_INT)
def test_any_event_round_trips_on_one_line(event: dict, seq: int, observed: str, checkpoint: int | None) -> None:
    data = format_document(entry(event, seq, observed), checkpoint=checkpoint)
    assert b"\n" not in data and b"\r" not in data
    doc = orjson.loads(data)
    assert doc["keylife"]["event"] == event
    assert doc["keylife"]["seq"] == seq and doc["event"]["sequence"] == seq
    assert parse_time(doc["@timestamp"]) == parse_time(observed)
    assert "\n" not in doc["message"] and "\r" not in doc["message"]
    assert isinstance(doc["event"]["severity"], int) and 0 <= doc["event"]["severity"] <= 10
    for name in ("id", "reason"):
        assert name not in doc["event"] or isinstance(doc["event"][name], str)
