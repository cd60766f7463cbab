"""A valid journal is always projectable (issue 10, item 2).

Usage counts are each at most 2^53, but a key's sum of them can pass 2^63: the registry then
failed at commit (OverflowError), ingest was refused, and every later start and rebuild failed
on a journal that verifies. Counters now saturate at 2^63 - 1 (docs/lifecycle.md); fleet-wide
sums are computed exactly; every time the model accepts (years 0001-9999, any offset that stays
in range) is stored fixed-width. These tests go through the real ledger or the real API, then a
restart (catch-up from the journal) and a rebuild.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keylife.domain.events import MAX_SAFE_INT, Event
from keylife.ingest.ledger import Ledger
from keylife.journal.reader import iter_entries
from keylife.registry.projection import Registry, RegistryError, rebuild
from keylife.registry.queries import MAX_COUNT, RegistryReader, ts
from tests.journal_helpers import ORIGIN, open_journal, signer
from tests.server import live_server

NDJSON = {"Content-Type": "application/x-ndjson"}
NOW = "2026-11-28T10:00:00Z"
OPS = ["encrypt", "decrypt", "sign", "verify"]


def _reports(key_id: str, first: int, count: int) -> bytes:
    """``count`` usage reports of 2^53 - 1 for each of OPS: 1,024 of them pass 2^63 per operation."""
    return b"\n".join(
        orjson.dumps(
            {
                "id": f"{key_id}-u{n}",
                "type": "usage_report",
                "key_id": key_id,
                "occurred_at": NOW,
                "node": "n-1",
                "usage": dict.fromkeys(OPS, MAX_SAFE_INT),
                "interval_start": "0001-01-01T00:00:00Z",
                "interval_end": "9999-12-31T23:59:59.999999Z",
            }
        )
        for n in range(first, first + count)
    )


def _metric(text: str, name: str, **labels: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no {name} {labels} in the scrape")


def test_usage_past_2_63_saturates_through_ingest_restart_and_rebuild(tmp_path: Path) -> None:
    keys = ["big-1", "team/big-2"]
    with live_server(tmp_path) as live, live.client() as c:
        for key_id in keys:
            generated = {"id": f"g-{key_id}", "type": "generated", "key_id": key_id, "occurred_at": NOW}
            assert c.post("/v1/events", json=generated | {"algorithm": "aes-256-gcm"}).status_code == 200
            # Two requests with a registry commit between them: the sum passes 2^63 both inside
            # one transaction (in Python) and across commits (in SQL).
            for first in (0, 700):
                r = c.post("/v1/events", content=_reports(key_id, first, 700), headers=NDJSON)
                assert r.status_code == 200, r.text
                assert c.get("/v1/keys/" + key_id.replace("/", "%2F")).status_code == 200
        for key_id in keys:
            key = c.get("/v1/keys/" + key_id.replace("/", "%2F"), params={"history": 0}).json()
            assert key["usage_total"] == MAX_COUNT
            assert key["usage"] == dict.fromkeys(OPS, MAX_COUNT)
            assert key["last_used_at"] == "9999-12-31T23:59:59.999999Z"
        assert c.get("/readyz").status_code == 200
        scrape = c.get("/metrics").text
        # The fleet sum (two saturated keys) is above 2^63: exact in Python, a float on the wire.
        assert _metric(scrape, "keylife_key_usage_operations_total", operation="encrypt") >= 2**63
        counts = live.runtime.registry.counts()
        assert counts["usage_total"] == 2 * MAX_COUNT
    registry = tmp_path / "data" / "registry.sqlite"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{registry}{suffix}").unlink(missing_ok=True)  # the restart replays the whole journal
    with live_server(tmp_path) as live, live.client() as c:
        assert c.get("/readyz").status_code == 200
        key = c.get("/v1/keys/team/big-2", params={"history": 0}).json()
        assert key["usage_total"] == MAX_COUNT and key["usage"]["sign"] == MAX_COUNT
        scrape = c.get("/metrics").text  # the exporter loads its index from the replayed tables
        assert _metric(scrape, "keylife_key_usage_operations_total", operation="verify") >= 2**63
        journal_dir = live.runtime.journal.directory
    stats = rebuild(iter_entries(journal_dir), tmp_path / "rebuilt.sqlite", origin="test.keylife/api")
    assert stats.entries == 2 + 2 * 1400
    reader = RegistryReader(tmp_path / "rebuilt.sqlite")
    try:
        assert all(reader.get_key(k)["usage_total"] == MAX_COUNT for k in keys)  # type: ignore[index]
        assert reader.counts()["usage_total"] == 2 * MAX_COUNT
    finally:
        reader.close()


def test_times_are_stored_fixed_width_in_every_year() -> None:
    """glibc's strftime wrote year 1 as "1-01-01...", breaking text order = time order."""
    assert ts("0001-01-01T01:00:00+01:00") == "0001-01-01T00:00:00.000000Z"
    assert ts("0999-06-01T00:00:00.5Z") == "0999-06-01T00:00:00.500000Z"
    assert ts("9999-12-31T22:59:59.999999-01:00") == "9999-12-31T23:59:59.999999Z"
    assert ts("0001-01-01T00:00:00Z") < ts("0999-01-01T00:00:00Z") < ts("2024-01-01T00:00:00Z")


def test_an_entry_that_cannot_be_projected_is_named_by_its_seq(tmp_path: Path) -> None:
    """Validation makes this unreachable for journaled events; if it ever happens, the error
    says which entry, so the operator is not left with a bare OverflowError."""
    journal = open_journal(tmp_path)
    registry = Registry(tmp_path / "r.sqlite", origin=ORIGIN)
    try:
        good = Event.model_validate({"id": "g", "type": "generated", "key_id": "k", "occurred_at": NOW})
        bad = {"id": "x", "type": "generated", "key_id": "k2", "occurred_at": "not a time"}  # never validated
        entries = journal.append([good.payload(), bad])
        journal.commit()
        registry.begin()
        with pytest.raises(RegistryError, match=r"journal entry seq 1 cannot be projected \(ValueError"):
            registry.apply_many(entries)
        registry.rollback()
    finally:
        registry.close()
        journal.close()


# ----- the whole class, generated ---------------------------------------------------------------
_OFFSET = st.integers(-(24 * 60 - 1), 24 * 60 - 1).map(lambda m: timezone(timedelta(minutes=m)))
_EDGE = st.sampled_from([datetime(1, 1, 1, tzinfo=UTC), datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)])


@st.composite
def extreme_time(draw: st.DrawFn) -> str:
    """A valid time at or near the ends of the range, written with an offset that keeps it valid."""
    instant = draw(st.one_of(_EDGE, st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31),
                                                 timezones=st.just(UTC))))  # fmt: skip
    zone = draw(st.one_of(st.just(UTC), _OFFSET))
    try:
        return instant.astimezone(zone).isoformat()
    except OverflowError:
        return instant.isoformat().replace("+00:00", "Z")


COUNT = st.one_of(st.just(MAX_SAFE_INT), st.just(0), st.integers(0, MAX_SAFE_INT))


@st.composite
def extreme_events(draw: st.DrawFn, n: int) -> list[dict[str, Any]]:
    key_id = draw(st.sampled_from(["k-a", "k-b", "team/k-c"]))
    start, end = sorted([draw(extreme_time()), draw(extreme_time())], key=lambda t: datetime.fromisoformat(t))
    out: list[dict[str, Any]] = [
        {"type": "generated", "key_id": key_id, "occurred_at": draw(extreme_time()), "expires_at": draw(extreme_time()),
         "key_size": draw(st.sampled_from([1, 65536])), "algorithm": "aes-256-gcm"},
        {"type": "usage_report", "key_id": key_id, "occurred_at": draw(extreme_time()), "node": "n-1",
         "usage": {op: draw(COUNT) for op in draw(st.lists(st.sampled_from(OPS), min_size=1, unique=True))},
         "interval_start": start, "interval_end": end},
        {"type": "propagated", "key_id": key_id, "occurred_at": draw(extreme_time()), "node": "n-2",
         "state": "active"},
        {"type": "activated", "key_id": key_id, "occurred_at": draw(extreme_time())},
    ]  # fmt: skip
    return [e | {"id": f"x{n}-{i}"} for i, e in enumerate(draw(st.permutations(out)))]


def _usage_totals(reg: RegistryReader) -> dict[str, tuple[int, dict[str, int]]]:
    out = {}
    for key in reg.list_keys(limit=1000):
        full = reg.get_key(key["key_id"], recent=0)
        assert full is not None
        out[key["key_id"]] = (full["usage_total"], full["usage"])
    return out


def test_extreme_valid_events_survive_ledger_restart_and_rebuild(tmp_path: Path) -> None:
    sign = signer(tmp_path)
    ledger = Ledger(open_journal(tmp_path, sign), Registry(tmp_path / "registry.sqlite", origin=ORIGIN))
    ledger.start()
    expected: dict[str, list[int]] = {}  # key -> [usage_total] as the documented saturation says
    per_op: dict[tuple[str, str], int] = {}
    examples = iter(range(10**6))

    # A few reports of 2^53 - 1 per operation push some keys past 2^63 within the run.
    @settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(data=st.data())
    def ingest(data: st.DataObject) -> None:
        n = next(examples)
        batch = data.draw(extreme_events(n))
        events = [Event.model_validate_json(orjson.dumps(e)) for e in batch]  # all valid by construction
        outcomes = ledger.submit(events).result(timeout=30)
        assert [o.status for o in outcomes] == ["accepted"] * len(events)
        for event in events:
            if event.usage:
                total = expected.setdefault(event.key_id or "", [0])
                total[0] = min(total[0] + sum(event.usage.values()), MAX_COUNT)
                for op, count in event.usage.items():
                    key = (event.key_id or "", op)
                    per_op[key] = min(per_op.get(key, 0) + count, MAX_COUNT)

    # Drive some keys to saturation first, so the generated extremes land on saturated counters too.
    big = [
        Event.model_validate({"id": f"big-{i}", "type": "usage_report", "key_id": "k-a", "occurred_at": NOW,
                              "usage": dict.fromkeys(OPS, MAX_SAFE_INT)})
        for i in range(1100)
    ]  # fmt: skip
    assert all(o.status == "accepted" for o in ledger.submit(big).result(timeout=60))
    expected["k-a"] = [MAX_COUNT]
    per_op.update({("k-a", op): MAX_COUNT for op in OPS})
    ingest()
    ledger.stop()
    ledger.registry.close()

    def check(reg: RegistryReader) -> None:
        got = _usage_totals(reg)
        assert {k: v[0] for k, v in got.items() if k in expected} == {k: v[0] for k, v in expected.items()}
        for (key_id, op), count in per_op.items():
            assert got[key_id][1][op] == count

    # Restart with the registry gone: catch-up replays every entry.
    for suffix in ("", "-wal", "-shm"):
        Path(f"{tmp_path / 'registry.sqlite'}{suffix}").unlink(missing_ok=True)
    restarted = Ledger(open_journal(tmp_path, sign), Registry(tmp_path / "registry.sqlite", origin=ORIGIN))
    restarted.start()
    restarted.stop()
    restarted.registry.close()
    reader = RegistryReader(tmp_path / "registry.sqlite")
    try:
        check(reader)
    finally:
        reader.close()
    rebuild(iter_entries(tmp_path / "journal"), tmp_path / "rebuilt.sqlite", origin=ORIGIN)
    reader = RegistryReader(tmp_path / "rebuilt.sqlite")
    try:
        check(reader)
    finally:
        reader.close()
