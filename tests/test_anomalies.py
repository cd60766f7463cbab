"""Usage anomalies (issue 15, items 8-10): per-key seasonal baselines, the flags, their quality.

The detector is the registry's ``anomalies`` extension, so these tests project usage reports
through a real ``Registry`` (the quality run: 10,800 key-days of seeded traffic with labelled
anomalies), or ingest them through a real server and read the ``anomaly`` records from the journal.
"""

from __future__ import annotations

import json
import sqlite3
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from keylife.demo import anomaly_traffic as traffic
from keylife.domain.events import Event
from keylife.journal.reader import iter_entries
from keylife.journal.writer import Entry
from keylife.registry import anomaly_model as model
from keylife.registry.projection import Registry, rebuild
from tests.server import Live, live_server
from tests.waiting import wait_until

START = datetime(2026, 3, 2, tzinfo=UTC)  # a Monday


def _report(
    key_id: str, hour: int, count: int, node: str = "node-a", op: str = "decrypt", start: datetime = START
) -> dict[str, Any]:
    at = start + timedelta(hours=hour)
    end = at + timedelta(hours=1)
    fmt = "%Y-%m-%dT%H:%M:%SZ"
    return {"id": f"u-{key_id}-{node}-{hour}-{op}", "type": "usage_report", "key_id": key_id, "node": node,
            "occurred_at": end.strftime(fmt), "interval_start": at.strftime(fmt), "interval_end": end.strftime(fmt),
            "usage": {op: count}}  # fmt: skip


def _steady(key_id: str, days: int, count: int = 100, start: datetime = START) -> list[dict[str, Any]]:
    """Business-hours use (09-17 UTC) every day, a fixed count per hour."""
    return [_report(key_id, d * 24 + h, count, start=start) for d in range(days) for h in range(9, 18)]


class Projected:
    def __init__(self, path: Path) -> None:
        self.registry = Registry(path, origin="test")
        self.seq = 0

    def feed(self, events: list[dict[str, Any]]) -> list[int]:
        self.registry.begin()
        seqs = []
        for ev in events:
            self.registry.apply(Entry(self.seq, ev["occurred_at"], ev, b"\0" * 32))
            seqs.append(self.seq)
            self.seq += 1
        self.registry.commit()
        return seqs

    def flags(self) -> list[dict[str, Any]]:
        rows = self.registry._reader().execute("SELECT seq, kind, details FROM anomaly_flags ORDER BY seq, kind")
        return [{"seq": s, "kind": k, **json.loads(d)} for s, k, d in rows]


@pytest.fixture
def projected(tmp_path: Path) -> Any:
    p = Projected(tmp_path / "registry.sqlite")
    yield p
    p.registry.close()


def test_spike_and_drop_are_judged_against_that_hour_of_that_key(projected: Projected) -> None:
    projected.feed(_steady("k1", 14))
    day = 14 * 24
    (spike,) = projected.feed([_report("k1", day + 10, 3000)])
    (normal,) = projected.feed([_report("k1", day + 11, 110)])
    (low,) = projected.feed([_report("k1", day + 12, 2)])
    assert [(f["seq"], f["kind"]) for f in projected.flags()] == [(spike, "spike")], "a drop waits for the hour's end"
    (closing,) = projected.feed([_report("k1", day + 13, 100)])
    flags = projected.flags()
    assert [(f["seq"], f["kind"]) for f in flags] == [(spike, "spike"), (closing, "drop")]
    figures = flags[0]
    assert figures["observed_ops_per_hour"] == "3000.000" and figures["hour_judged"] == "2026-03-16T10"
    assert 95 < float(figures["expected_ops_per_hour"]) < 105  # the baseline it was judged against
    assert float(figures["score"]) >= model.Z_SPIKE and figures["hour"] == 10 and figures["node"] == "node-a"
    drop = flags[1]
    assert float(drop["score"]) <= -model.Z_SPIKE and drop["hour_judged"] == "2026-03-16T12"
    assert drop["observed_ops"] == 2 and "node" not in drop  # a key's hour, whichever nodes reported it
    assert normal not in {f["seq"] for f in flags} and low not in {f["seq"] for f in flags}


def test_a_burst_is_flagged_by_the_report_that_crosses_the_limit_not_at_the_end_of_the_hour(
    projected: Projected,
) -> None:
    """Reports every five minutes from two nodes add up to the key's hour; the one that takes the hour's count past
    its spike limit is flagged, once, and the hour's later reports are not."""
    fmt = "%Y-%m-%dT%H:%M:%SZ"

    def five(day: int, hour: int, minute: int, count: int, node: str) -> dict[str, Any]:
        at = START + timedelta(days=day, hours=hour, minutes=minute)
        end = at + timedelta(minutes=5)
        return {"id": f"f-{day}-{hour}-{minute}-{node}", "type": "usage_report", "key_id": "k5", "node": node,
                "occurred_at": end.strftime(fmt), "interval_start": at.strftime(fmt), "interval_end": end.strftime(fmt),
                "usage": {"sign": count}}  # fmt: skip

    normal = [five(d, h, mi, 10, n) for d in range(8) for h in range(24) for mi in range(0, 60, 5) for n in "ab"]
    projected.feed(normal)
    burst = [five(8, 9, mi, 10 if mi < 20 else 400, n) for mi in range(0, 60, 5) for n in "ab"]
    seqs = projected.feed(burst)
    flags = projected.flags()
    assert [f["kind"] for f in flags] == ["spike"]
    crossing = seqs.index(flags[0]["seq"])
    # The limit is the count of a whole hour at z = 7 (about 12 times a normal hour here): 40 times the rate
    # crosses it 20 minutes into the burst, with 9 of the hour's 24 reports still to come.
    assert 8 < crossing <= 16, "flagged during the burst, not at the end of the hour"
    assert int(flags[0]["observed_ops"]) < 24 * 400


def test_new_node_new_operation_and_unusual_hour_after_the_warm_up(projected: Projected) -> None:
    projected.feed([_report("k1", h, 50) for h in range(20, 23)])  # 3 reports: still warming up
    early = projected.feed([_report("k1", 14, 50, node="node-b"), _report("k1", 15, 50, op="sign")])
    assert projected.flags() == [], "nothing is judged during the warm-up"
    projected.feed(_steady("k1", 10, 50))
    day = 10 * 24
    late = [_report("k1", day + 10, 50, node="node-c"), _report("k1", day + 11, 5, op="verify")]
    seqs = projected.feed([*late, _report("k1", day + 24 + 3, 40)])  # that night
    kinds = {(f["seq"], f["kind"]) for f in projected.flags()}
    assert kinds == {(seqs[0], "new_node"), (seqs[1], "new_operation"), (seqs[2], "unusual_hour")}
    by_kind = {f["kind"]: f for f in projected.flags()}
    assert by_kind["new_operation"]["operation"] == "verify"
    assert by_kind["new_operation"]["known"] == ["decrypt", "sign"]  # sign: during the warm-up
    assert by_kind["new_node"]["node"] == "node-c" and by_kind["new_node"]["key_hours"] >= model.WARM_KEY
    assert by_kind["unusual_hour"]["hour"] == 3 and by_kind["unusual_hour"]["share"] == "0.000"
    assert not set(early) & {s for s, _ in kinds}


def test_a_restart_remembers_the_baseline_and_a_rebuild_gives_the_same_tables(tmp_path: Path) -> None:
    day = 10 * 24
    events = [*_steady("k1", 10), _report("k1", day + 10, 4000), _report("k1", day + 11, 50, node="node-z")]
    whole = Projected(tmp_path / "whole.sqlite")
    whole.feed(events)
    whole.registry.checkpoint_deferred()
    split = Projected(tmp_path / "split.sqlite")
    split.feed(events[:60])
    split.registry.close()  # a clean stop writes the baselines: a restart reads them back
    again = Projected(tmp_path / "split.sqlite")
    assert again.registry.deferred_from() == 60, "nothing to replay after a clean stop"
    again.seq = 60
    again.feed(events[60:])
    again.registry.checkpoint_deferred()
    assert [f["kind"] for f in whole.flags()] == ["spike", "new_node"]
    assert again.flags() == whole.flags()
    for table in TABLES:
        assert _dump(again.registry, table) == _dump(whole.registry, table), table
    whole.registry.close()
    again.registry.close()


TABLES = ("anomaly_keys", "anomaly_key_sets", "anomaly_flags")


def test_after_a_crash_the_baselines_are_replayed_from_the_journal(tmp_path: Path) -> None:
    """The baselines are written every few seconds, not at each commit: a crash loses what was learnt since the last
    write, and the registry's catch-up replays those entries into the anomaly state only (the registry's own tables
    already have them), so the tables end as if nothing had happened."""
    day = 10 * 24
    events = [*_steady("k1", 10), _report("k1", day + 10, 4000), _report("k1", day + 11, 50, node="node-z")]
    entries = [Entry(n, ev["occurred_at"], ev, b"\0" * 32) for n, ev in enumerate(events)]
    whole = Projected(tmp_path / "whole.sqlite")
    whole.feed(events)
    whole.registry.close()
    reference = Registry(tmp_path / "whole.sqlite", origin="test")
    crashed = Projected(tmp_path / "crashed.sqlite")
    crashed.feed(events[:50])
    crashed.registry.checkpoint_deferred()  # the last write of the baselines before the crash
    crashed.feed(events[50:])  # committed to the registry, the baselines only in memory
    after = Registry(tmp_path / "crashed.sqlite", origin="test")  # the crashed process never closed its registry
    assert after.last_applied_seq() == len(events) - 1
    assert after.deferred_from() == 50, "the anomaly state is replayed from its last write"
    after.begin()
    after.apply_many(entries[after.deferred_from() :])  # what Ledger.catch_up does at start
    after.commit()
    assert after.deferred_from() == len(events)
    for table in TABLES:
        assert _dump(after, table) == _dump(reference, table), table
    for registry in (after, reference, crashed.registry):
        registry.close()


def _dump(registry: Registry, table: str) -> list[tuple[Any, ...]]:
    return registry._reader().execute(f"SELECT * FROM {table} ORDER BY 1, 2").fetchall()


def test_quality_on_seeded_traffic_with_labelled_anomalies(tmp_path: Path) -> None:
    """Recall >= 0.9 on the injected anomalies, <= 1 false flag per 10,000 key-days of normal traffic."""
    plan = traffic.plan(seed=15, keys=120, days=90, anomalies=12)
    projected = Projected(tmp_path / "registry.sqlite")
    labels: dict[int, str] = {}
    batch: list[dict[str, Any]] = []
    for ev, label in traffic.events(plan, seed=15):
        if label is not None:
            labels[projected.seq + len(batch)] = label
        batch.append(ev)
        if len(batch) == 5000:
            projected.feed(batch)
            batch = []
    projected.feed(batch)
    found: dict[str, list[str]] = defaultdict(list)
    false = []
    for flag in projected.flags():
        if flag["seq"] in labels:
            found[labels[flag["seq"]]].append(flag["kind"])
        else:
            false.append(flag)
    recall = {kind: sum(1 for lb, k in plan.labels.items() if k == kind and lb in found) for kind in traffic.KINDS}
    injected = {kind: sum(1 for k in plan.labels.values() if k == kind) for kind in traffic.KINDS}
    flags = sum(len(v) for v in found.values()) + len(false)
    total_recall = sum(recall.values()) / sum(injected.values())
    precision = (flags - len(false)) / flags
    per_10k = len(false) / plan.key_days * 10_000
    print(f"\nanomaly quality: {projected.seq} reports, {plan.key_days} key-days, recall {total_recall:.3f} "
          f"{recall}/{injected}, precision {precision:.3f}, "
          f"false flags {len(false)} ({per_10k:.2f} per 10k key-days)")  # fmt: skip
    assert plan.key_days >= 10_000
    assert total_recall >= 0.9 and all(recall[k] >= 0.9 * injected[k] for k in traffic.KINDS), (recall, injected)
    assert per_10k <= 1.0, false[:5]
    expected_kinds = {"stolen_burst": "spike", "new_node": "new_node", "night_batch": "unusual_hour",
                      "new_operation": "new_operation"}  # fmt: skip
    for label, kinds in found.items():
        assert expected_kinds[plan.labels[label]] in kinds, (label, kinds)
    projected.registry.close()


def test_the_same_seed_gives_the_same_traffic() -> None:
    plan = traffic.plan(seed=3, keys=6, days=16, anomalies=1)
    first = list(traffic.events(plan, seed=3))
    assert first == list(traffic.events(traffic.plan(seed=3, keys=6, days=16, anomalies=1), seed=3))
    assert {label for _, label in first if label} == set(plan.labels)


# ----- through a real server: flags become journaled anomaly records -------------------------------
def _post(live: Live, events: list[dict[str, Any]]) -> None:
    body = "\n".join(json.dumps(e) for e in events)
    r = live.client("ingest").post("/v1/events", content=body, headers={"Content-Type": "application/x-ndjson"})
    assert r.status_code == 200, r.text


def _anomaly_records(live: Live) -> list[dict[str, Any]]:
    return [e.event for e in iter_entries(live.runtime.config.journal_dir) if e.event["type"] == "anomaly"]


def _series(live: Live, key_id: str) -> dict[str, float]:
    text = live.client("read").get("/metrics").text
    out = {}
    for line in text.splitlines():
        if line.startswith("keylife_key_anomaly{") and f'key_id="{key_id}"' in line:
            out[line.split('kind="', 1)[1].split('"', 1)[0]] = float(line.rsplit(" ", 1)[1])
    return out


def test_flags_are_journaled_once_and_survive_a_restart(tmp_path: Path) -> None:
    # Ten days of history ending today (the metric counts flags of the last 24 hours; up to 24 hours
    # ahead is accepted, so "today 10:00" is always in the window).
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=10)
    with live_server(tmp_path) as live:
        _post(live, _steady("k-svc", 10, start=today))
        _post(live, [_report("k-svc", 10 * 24 + 10, 5000, start=today)])
        wait_until(lambda: len(_anomaly_records(live)) == 1, what="the spike journaled")
        (record,) = _anomaly_records(live)
        spike_seq = record["details"]["source_seq"]
        wait_until(lambda: _series(live, "k-svc") == {"spike": 1.0}, what="keylife_key_anomaly for the spike")
    assert record["id"] == f"anomaly-{spike_seq}-spike" and record["key_id"] == "k-svc"
    assert record["node"] == "node-a" and record["actor"] == "keylife"
    details = record["details"]
    assert details["kind"] == "spike" and details["observed_ops_per_hour"] == "5000.000"
    assert float(details["expected_ops_per_hour"]) == pytest.approx(100, rel=0.05)
    assert "5000.000 ops/h" in record["reason"]
    with live_server(tmp_path) as live:  # the baseline came back: a new node is judged at once
        _post(live, [_report("k-svc", 10 * 24 + 11, 100, node="node-new", start=today)])
        wait_until(lambda: len(_anomaly_records(live)) == 2, what="the new node journaled")
        kinds = [r["details"]["kind"] for r in _anomaly_records(live)]
        db = live.runtime.registry._reader()
        pending = "SELECT count(*) FROM anomaly_flags WHERE journaled = 0"
        wait_until(lambda: db.execute(pending).fetchone()[0] == 0, what="the records projected: flags journaled")
        journal_dir = live.runtime.config.journal_dir
        assert _series(live, "k-svc") == {"spike": 1.0, "new_node": 1.0}
        recent = live.client("read").get("/metrics").text
        assert 'keylife_anomalies_recent{kind="new_node"} 1.0' in recent
        assert 'keylife_anomalies_recent{kind="drop"} 0.0' in recent
    assert kinds == ["spike", "new_node"]
    rebuilt = tmp_path / "rebuilt.sqlite"
    rebuild(iter_entries(journal_dir), rebuilt, origin="test")
    rows = sqlite3.connect(rebuilt).execute("SELECT kind, journaled FROM anomaly_flags ORDER BY seq").fetchall()
    assert rows == [("spike", 1), ("new_node", 1)], "a rebuild stages the same flags, marked journaled"


def test_quality_on_the_demo_network_with_its_injected_anomalies(tmp_path: Path) -> None:
    """The demo network (keylife/demo: rotations, the tails of replaced keys, daily and weekly swings, reports every
    five minutes from several nodes) is traffic this detector was not tuned on. With its labelled injections
    (keylife/demo/injected.py), the flags are scored: recall >= 0.9 of the injected anomalies, flagged with the
    expected kind, and no flag anywhere else."""
    from keylife.demo.network import DemoConfig, DemoNetwork

    network = DemoNetwork(DemoConfig(nodes=5, keys=24, seed=15, start=START, history=timedelta(days=21), anomalies=8))
    events = [Event.model_validate(e).payload() for e in network.history()]
    labels = network.injected()
    projected = Projected(tmp_path / "registry.sqlite")
    for i in range(0, len(events), 20_000):
        projected.feed(events[i : i + 20_000])
    seq_of = {ev["id"]: n for n, ev in enumerate(events)}
    expected = {"stolen_burst": "spike", "night_batch": "spike", "new_node": "new_node"}
    flags = {(f["seq"], f["kind"]) for f in projected.flags()}
    found = {label for label, kind in labels.items() if (seq_of[label], expected[kind]) in flags}
    injected_seqs = {seq_of[label] for label in labels}
    false = sorted(f for f in flags if f[0] not in injected_seqs)
    days = 21
    key_days = len({ev["key_id"] for ev in events if ev["type"] == "usage_report"}) * days
    recall = {kind: (sum(1 for lb in found if labels[lb] == kind), sum(1 for k in labels.values() if k == kind))
              for kind in expected}  # fmt: skip
    print(f"\ndemo network: {len(events)} events, {key_days} key-days, injected {len(labels)}, recall "
          f"{len(found) / len(labels):.3f} {recall}, false flags {len(false)}")  # fmt: skip
    assert len(labels) >= 20, "the plan lands most of its 24 injections"
    assert len(found) >= 0.9 * len(labels), recall
    assert false == [], false[:5]
    projected.registry.close()


def test_detection_can_be_turned_off_and_on_again(tmp_path: Path) -> None:
    """``registry.anomalies: false``: nothing is learnt or flagged. Back on, the baselines are replayed from the
    journal since they were last written, so what was missed while off is learnt, not lost."""
    day = 10 * 24
    events = [*_steady("k1", 10), _report("k1", day + 10, 4000)]
    entries = [Entry(n, ev["occurred_at"], ev, b"\0" * 32) for n, ev in enumerate(events)]
    path = tmp_path / "registry.sqlite"
    on = Registry(path, origin="test")
    on.begin()
    on.apply_many(entries[:30])
    on.commit()
    on.close()  # baselines written at seq 29
    off = Registry(path, origin="test", disabled={"anomalies"})
    off.begin()
    off.apply_many(entries[30:])
    off.commit()
    assert off._reader().execute("SELECT count(*) FROM anomaly_flags").fetchone()[0] == 0
    off.close()
    again = Registry(path, origin="test")
    assert again.deferred_from() == 30, "the entries projected while it was off"
    again.begin()
    again.apply_many(entries[again.deferred_from() :])
    again.commit()
    kinds = [k for (k,) in again._reader().execute("SELECT kind FROM anomaly_flags")]
    assert kinds == ["spike"]
    again.close()


def test_a_pruned_journal_past_the_stored_baselines_leaves_a_gap_not_a_stuck_registry(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """When the entries after the stored baselines are gone (``keylife journal prune``), the catch-up reads what is
    left: the baselines skip the gap (one log line naming it) and are current again, not stale for ever."""
    events = _steady("k1", 10)
    entries = [Entry(n, ev["occurred_at"], ev, b"\0" * 32) for n, ev in enumerate(events)]
    crashed = Projected(tmp_path / "registry.sqlite")
    crashed.feed(events[:30])
    crashed.registry.checkpoint_deferred()
    crashed.feed(events[30:])  # not written: a crash
    after = Registry(tmp_path / "registry.sqlite", origin="test")
    assert after.deferred_from() == 30
    after.begin()
    after.apply_many(entries[50:])  # 30..49 pruned: the catch-up starts at 50
    after.commit()
    assert after.deferred_from() == len(events), "current again"
    assert "deferred extension anomalies skips entries 30..49" in caplog.text
    for registry in (after, crashed.registry):
        registry.close()
