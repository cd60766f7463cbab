"""The DataFold adapter's rules beyond the sample lines: one event through two sources, text
line ids, key status lines, usage aggregation edges (interval, flush, safe positions),
strictness (a line with a shape's marks but not its form is rejected, naming the field), and
unknown variants (kept as generic security events, never dropped).

Lines are the samples' own, changed one field at a time, so each test shows one rule.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from keylife.datafold.contract import Line
from tests import test_datafold_mapping as m
from tests.test_datafold_mapping import AUTH_OK, DEC, ENC, MASTER, NODE, OLD, SSE, feed_all, file_lines, valid


# ----- the same event through two sources, text line ids, key status lines --------------------------
def test_one_event_read_through_the_log_file_and_the_http_buffer_counts_once(tmp_path: Path) -> None:
    adapter = m.new_adapter(tmp_path)
    from_file, from_sse = file_lines("node-log.log")[3], m.web_lines()[0]
    assert adapter.feed(from_file) == [] and adapter.feed(from_sse) == []
    assert adapter.counts["usage.duplicate"] == 1
    assert adapter.safe_position(from_file.source) == from_file.position and adapter.safe_position(SSE) is None
    assert valid(adapter.flush()) == [
        m.usage(MASTER, "2025-06-16T12:45:00Z", "2025-06-16T12:46:00Z", {"encrypt": 1}, [ENC], True)
    ]


def test_identical_text_lines_in_one_second_stay_apart_and_web_logger_text_takes_the_read_time(tmp_path: Path) -> None:
    adapter = m.new_adapter(tmp_path)
    line = file_lines("security-audit-text.log")[1]
    first, second = adapter.feed(line), adapter.feed(Line(line.text, line.source, line.position + 200, NODE))
    message = line.text.split("SECURITY_AUDIT: ", 1)[1]
    assert first[0]["id"] == m.text_id("2025-06-16T14:00:05Z", message, 0) + "-0"
    assert second[0]["id"] == m.text_id("2025-06-16T14:00:05Z", message, 1) + "-0"
    # The web logger (mainline/security src/web_logger.rs:31) prints no time: the time of reading, said so.
    (event,) = valid(adapter.feed(Line(f"WARN - SECURITY_AUDIT: {message}", SSE, 7, NODE)))
    assert event["occurred_at"] == "2026-01-01T00:00:00Z" and event["attributes"]["time_source"] == "read"
    assert not (tmp_path / "rejects.ndjson").exists()


def test_key_status_lines_fed_like_any_other_line(tmp_path: Path) -> None:
    adapter = m.new_adapter(tmp_path)
    source = "poll:http://node-a:9001/api/crypto/keys/status/client-0c1d"
    revoked = m.status_answers()[1]
    (event,) = valid(adapter.feed(Line(orjson.dumps(revoked).decode(), source, 0, NODE)))
    assert (event["type"], event["key_id"], event["actor"]) == ("revoked", OLD, "client-0c1d")
    assert adapter.feed(Line(orjson.dumps(revoked).decode(), source, 1, NODE)) == []
    assert adapter.counts["parsed.key_status"] == 2 and adapter.counts["events.key_status"] == 1


def test_key_status_a_replaced_key_is_a_rotation_and_a_new_one_after_removal_is_generated(tmp_path: Path) -> None:
    adapter = m.new_adapter(tmp_path)
    active, _, missing = m.status_answers()

    def answer(public_key: str) -> dict[str, Any]:
        return {"success": True, "data": {**active["data"], "public_key": public_key}}

    assert [e["type"] for e in valid(adapter.status(answer("ab" * 32), "client-7f3a", NODE))] == [
        "generated", "activated"]  # fmt: skip
    (event,) = valid(adapter.status(answer("cd" * 32), "client-7f3a", NODE))  # the active key replaced
    assert (event["type"], event["key_id"], event["successor"]) == ("rotated", "ab" * 8, "cd" * 8)
    (event,) = valid(adapter.status(missing, "client-7f3a", NODE))  # removed from the node
    assert (event["type"], event["key_id"]) == ("revoked", "cd" * 8)
    assert [(e["type"], e["key_id"]) for e in valid(adapter.status(answer("ef" * 32), "client-7f3a", NODE))] == [
        ("generated", "ef" * 8), ("activated", "ef" * 8)]  # fmt: skip


# ----- usage aggregation ------------------------------------------------------------------------------
def test_usage_interval_is_configurable(tmp_path: Path) -> None:
    adapter = m.new_adapter(tmp_path, usage_interval_seconds=3600)
    assert [
        e for batch in feed_all(adapter, file_lines("node-log.log")) for e in batch if e["type"] == "usage_report"
    ] == []
    hour = ("2025-06-16T12:00:00Z", "2025-06-16T13:00:00Z")
    assert valid(adapter.flush()) == [
        m.usage("client-7f3a", *hour, {"verify": 1}, [AUTH_OK]),
        m.usage(MASTER, *hour, {"decrypt": 1, "encrypt": 1}, [DEC, ENC], True),
    ]


def test_flush_upto_closes_ended_intervals_only_once_the_node_has_moved_on_or_gone_quiet(tmp_path: Path) -> None:
    lines = file_lines("node-log.log")[:8]
    busy = m.new_adapter(tmp_path / "busy")
    feed_all(busy, lines)
    upto = datetime(2025, 6, 16, 12, 47, tzinfo=UTC)
    assert busy.flush(upto) == []  # a replay in progress: the node's uses are still within the lateness
    quiet = m.new_adapter(tmp_path / "quiet", usage_idle_seconds=0)
    feed_all(quiet, lines)
    assert [(e["key_id"], e["interval_start"]) for e in quiet.flush(upto)] == [
        (MASTER, "2025-06-16T12:45:00Z"), ("client-7f3a", "2025-06-16T12:46:00Z")]  # fmt: skip
    assert quiet.safe_position(lines[0].source) is None


def test_safe_position_holds_back_to_an_emitted_aggregate_that_overlaps_an_open_one(tmp_path: Path) -> None:
    adapter = m.new_adapter(tmp_path)
    enc, dec = file_lines("node-log.log")[3:5]
    src = enc.source

    def use(line: Line, position: int, stamp: str, eid: str) -> list[dict[str, Any]]:
        text = line.text.replace(line.text.split('"timestamp":"')[1].split('"')[0], stamp)
        return adapter.feed(Line(text.replace(ENC, eid).replace(DEC, eid), src, position, NODE))

    assert use(enc, 100, "2025-06-16T12:00:10Z", "00000000-0000-0000-0000-000000000001") == []
    assert use(dec, 200, "2025-06-16T12:01:10Z", "00000000-0000-0000-0000-000000000002") == []
    assert use(enc, 300, "2025-06-16T12:00:50Z", "00000000-0000-0000-0000-000000000003") == []  # late, in time
    closed = use(dec, 400, "2025-06-16T12:02:30Z", "00000000-0000-0000-0000-000000000004")
    assert [(e["interval_start"], e["usage"]) for e in closed] == [("2025-06-16T12:00:00Z", {"encrypt": 2})]
    # 12:00 is emitted (lines 100 and 300), 12:01 still open from line 200: a restart at 200 would
    # re-read line 300 alone and report it again under another id, so the source holds at 100.
    assert adapter.safe_position(src) == 100
    adapter.flush()
    assert adapter.safe_position(src) is None


# ----- strictness and unknown variants ------------------------------------------------------------------
def _mutated(name: str, index: int, change: Callable[[dict[str, Any]], None]) -> str:
    line = file_lines(name)[index].text
    if line.startswith("{"):
        obj = orjson.loads(line)
        change(obj)
        return orjson.dumps(obj).decode()
    prefix, _, body = line.partition("] ")
    marker = "SECURITY_EVENT: " if body.startswith("SECURITY_EVENT: ") else ""
    obj = orjson.loads(body[len(marker) :])
    change(obj)
    return f"{prefix}] {marker}{orjson.dumps(obj).decode()}"


def _kr(obj: dict[str, Any]) -> dict[str, Any]:
    return obj["event"]["KeyRotation"]


REJECTS = [
    ("node-log.log", 3, lambda o: o.pop("result"), "crypto_audit", "result is missing"),
    ("node-log.log", 3, lambda o: o.update(event_id="41bc68c3"), "crypto_audit", "event_id is not a hyphenated UUID"),
    ("node-log.log", 3, lambda o: o.update(timestamp="yesterday"), "crypto_audit", "timestamp is not an RFC 3339"),
    ("node-log.log", 3, lambda o: o.update(duration=7), "crypto_audit", "duration must be a Duration"),
    ("node-log.log", 6, lambda o: o["result"]["Failure"].pop("error_code"), "crypto_audit",
     "result.Failure.error_code is missing"),
    ("node-log.log", 6, lambda o: o.update(result={"Broken": {}}), "crypto_audit", "result must be"),
    ("node-log.log", 8, lambda o: o.update(timestamp="1750075410"), "security_event",
     "timestamp must be an integer, not a string"),
    ("node-log.log", 8, lambda o: o["client_info"].pop("ip_address"), "security_event",
     "client_info.ip_address is missing"),
    ("event-bus.jsonl", 1, lambda o: o["event"].update(Generic={"base": {}}), "event_bus",
     "event must hold exactly one variant"),
    ("event-bus.jsonl", 1, lambda o: _kr(o).pop("operation_id"), "event_bus",
     "event.KeyRotation.operation_id is missing"),
    ("security-audit.jsonl", 0, lambda o: o["event"].update(success="yes"), "audit_entry",
     "event.success must be a boolean, not a string"),
    ("security-audit.jsonl", 3, lambda o: o["event"].update(operation="Hash"), "audit_entry",
     'event.operation must be "Encrypt" or "Decrypt"'),
    ("security-audit.jsonl", 0, lambda o: o.update(timestamp=-5), "audit_entry", "timestamp -5 is not a Unix time"),
]  # fmt: skip


@pytest.mark.parametrize(("name", "index", "change", "shape", "reason"), REJECTS)
def test_a_line_that_has_a_shapes_marks_but_not_its_form_is_rejected_naming_the_field(
    tmp_path: Path, name: str, index: int, change: Callable[[dict[str, Any]], None], shape: str, reason: str
) -> None:
    adapter = m.new_adapter(tmp_path)
    assert adapter.feed(Line(_mutated(name, index, change), "file:x", 3, NODE)) == []
    record = orjson.loads((tmp_path / "rejects.ndjson").read_bytes())
    assert record["shape"] == shape and reason in record["reason"], record["reason"]
    assert adapter.counts[f"rejected.{shape}"] == 1


@pytest.mark.parametrize(
    ("text", "shape", "reason"),
    [
        ('{"hello": 1}', None, "JSON line matches no DataFold shape"),
        ('{"success": true, "data": {"client_id": "c"}}', "key_status", "data.public_key is missing"),
        ('[2025-06-16T14:00:00Z INFO  datafold::security::audit] SECURITY_AUDIT: Key registered - key_id=K, '
         "client=None", "audit_text", "owner_id is missing"),
        ("[2099-06-16T14:00:00Z INFO  x] SECURITY_AUDIT: Signature verification failed - key_id=K, client=None",
         "audit_text", "more than 24h ahead"),
        ("WARN - {not json", None, "message looks like JSON but is not valid JSON"),
    ],
)  # fmt: skip
def test_other_rejects(tmp_path: Path, text: str, shape: str | None, reason: str) -> None:
    adapter = m.new_adapter(tmp_path)
    assert adapter.feed(Line(text, "file:x", 0, NODE)) == []
    record = orjson.loads((tmp_path / "rejects.ndjson").read_bytes())
    assert record["shape"] == shape and reason in record["reason"], record


def test_unknown_variants_become_generic_security_events_never_dropped(tmp_path: Path) -> None:
    adapter = m.new_adapter(tmp_path)
    generic = _mutated("event-bus.jsonl", 6, lambda o: o.update(event={"Generic": {
        "base": o["event"]["Authentication"]["base"], "name": "cache_warmed"}}))  # fmt: skip
    config = _mutated("security-audit.jsonl", 5, lambda o: o["event"].update(event_type="QuotaChange"))
    backup = _mutated("node-log.log", 3, lambda o: o.update(event_type="BackupRestore", operation="restore_master"))
    events = [e for text in (generic, config, backup) for e in valid(adapter.feed(Line(text, "file:x", 0, NODE)))]
    assert [(e["type"], e["key_id"], e["attributes"].get("datafold.variant") or e["attributes"]["datafold.event_type"])
            for e in events] == [
        ("security_event", f"datafold-node:{NODE}", "Generic"),  # an actor is not a key: the node's identity
        ("security_event", f"datafold-node:{NODE}", "QuotaChange"),
        ("security_event", f"datafold-node:{NODE}", "BackupRestore"),
    ]  # fmt: skip
    assert events[0]["attributes"]["bus.name"] == "cache_warmed"
    assert events[1]["attributes"]["audit.setting"] == "signatures_required"
