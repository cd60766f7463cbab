"""The exporter as Prometheus sees it: scrape a live keylife and read the exposition."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from exporter.snapshot import SingleFlight
from tests.server import Live, live_server

NDJSON = {"Content-Type": "application/x-ndjson"}
NOW = datetime.now(UTC).replace(microsecond=0)


def at(days: float = 0) -> str:
    return (NOW + timedelta(days=days)).isoformat().replace("+00:00", "Z")


def scrape(live: Live) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with live.client(None) as c:
        text = c.get("/metrics").text
    out = {}
    for fam in text_string_to_metric_families(text):
        for sample in fam.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def value(samples: dict, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def post(live: Live, *events: dict) -> None:
    with live.client() as c:
        r = c.post("/v1/events", content=b"\n".join(orjson.dumps(e) for e in events), headers=NDJSON)
        assert r.status_code == 200, r.text


def key(n: int, key_id: str, **fields: object) -> list[dict]:
    base = {"key_id": key_id, "occurred_at": at(-10)}
    return [
        {"id": f"g{n}", "type": "generated", **base, "algorithm": "aes-256-gcm", "key_size": 256,
         "purpose": "encryption"} | fields,
        {"id": f"a{n}", "type": "activated", **base},
    ]  # fmt: skip


@pytest.fixture
def live(tmp_path: Path) -> Iterator[Live]:
    with live_server(tmp_path) as server:
        yield server


def test_empty_registry_is_zero_filled(live: Live) -> None:
    s = scrape(live)
    for band in ("expired", "7d", "30d", "90d", "later", "never"):
        assert value(s, "keylife_keys_by_expiry_band", band=band) == 0
    for band in ("overdue", "7d", "30d", "90d", "later", "none"):
        assert value(s, "keylife_keys_by_rotation_band", band=band) == 0
    for kind in ("generated", "activated", "rotated", "revoked", "compromised", "destroyed"):
        assert value(s, "keylife_key_transitions_total", type=kind) == 0
    for kind in ("conflicting_use", "skipped_transition", "unknown_key", "policy_breach"):
        assert value(s, "keylife_key_violations_total", kind=kind) == 0
    assert value(s, "keylife_fleet_compliance_ratio") == 1
    assert value(s, "keylife_keys_attention") == 0 and value(s, "keylife_keys_attention_omitted") == 0
    assert value(s, "keylife_keys_by_age", age_le="+Inf") == 0 and value(s, "keylife_keys_age_sum_seconds") == 0
    assert value(s, "keylife_journal_entries") == 0 and value(s, "keylife_ingest_writer_up") == 1


def test_aggregates_attention_and_nodes_follow_the_events(live: Live) -> None:
    post(
        live,
        *key(1, "k-ok", expires_at=at(400)),
        *key(2, "k-soon", expires_at=at(3)),
        *key(3, "k-legacy", algorithm="3des", key_size=168),
        *key(4, "k-bad", expires_at=at(200)),
        {"id": "c4", "type": "compromised", "key_id": "k-bad", "occurred_at": at(-1)},
        {"id": "u4", "type": "usage_report", "key_id": "k-bad", "occurred_at": at(-0.5), "node": "n1",
         "usage": {"encrypt": 7}},
        {"id": "u1", "type": "usage_report", "key_id": "k-ok", "occurred_at": at(-0.5), "node": "n2",
         "usage": {"encrypt": 5, "decrypt": 2}},
        {"id": "p1", "type": "propagated", "key_id": "k-bad", "occurred_at": at(-1), "node": "n1",
         "state": "compromised"},
        {"id": "p2", "type": "propagated", "key_id": "k-bad", "occurred_at": at(-2), "node": "n2", "state": "active"},
    )  # fmt: skip
    s = scrape(live)
    assert value(s, "keylife_keys", state="active", algorithm="aes-256-gcm", purpose="encryption") == 2
    assert value(s, "keylife_keys", state="compromised", algorithm="aes-256-gcm", purpose="encryption") == 1
    assert value(s, "keylife_keys", state="revoked", algorithm="aes-256-gcm", purpose="encryption") == 0
    assert value(s, "keylife_keys_by_expiry_band", band="7d") == 1
    assert value(s, "keylife_keys_by_expiry_band", band="later") == 1
    assert value(s, "keylife_keys_by_expiry_band", band="never") == 1
    assert value(s, "keylife_key_usage_operations_total", operation="encrypt", algorithm="aes-256-gcm",
                 purpose="encryption") == 12  # fmt: skip
    assert value(s, "keylife_key_violations_total", kind="conflicting_use") == 1
    assert value(s, "keylife_keys_noncompliant", rule="banned_algorithm") == 1
    assert value(s, "keylife_fleet_compliance_ratio") == pytest.approx(2 / 3)
    assert value(s, "keylife_key_attention", key_id="k-bad", reason="compromised") == 1
    assert value(s, "keylife_key_attention", key_id="k-bad", reason="conflicting_use") == 1
    assert value(s, "keylife_key_attention", key_id="k-bad", reason="propagation_pending") == 1
    assert value(s, "keylife_key_attention", key_id="k-soon", reason="expiring") == 1
    soon = {"key_id": "k-soon", "state": "active", "algorithm": "aes-256-gcm", "purpose": "encryption"}
    expected = (NOW + timedelta(days=3)).timestamp()
    assert value(s, "keylife_key_expiry_timestamp_seconds", **soon) == pytest.approx(expected)
    assert not any(labels and dict(labels).get("key_id") == "k-ok" for _n, labels in s)  # healthy: no series
    assert value(s, "keylife_node_unconfirmed_keys", node="n2") == 1
    assert value(s, "keylife_node_unconfirmed_keys", node="n1") == 0
    assert value(s, "keylife_propagation_lag_seconds_count") == 1
    assert value(s, "keylife_propagation_lag_seconds_sum") == pytest.approx(0, abs=1)
    assert value(s, "keylife_node_last_report_timestamp_seconds", node="n1") == pytest.approx(
        (NOW - timedelta(days=0.5)).timestamp()
    )


def test_attention_series_are_capped_and_the_rest_counted(tmp_path: Path) -> None:
    with live_server(tmp_path, exporter={"attention_cap": 2}) as live:
        events = [e for n in range(5) for e in key(n, f"k-{n}", expires_at=at(2 + n))]
        post(live, *events)
        s = scrape(live)
        flagged = {dict(labels)["key_id"] for name, labels in s if name == "keylife_key_attention"}
        assert flagged == {"k-0", "k-1"}  # the soonest to expire first
        assert value(s, "keylife_keys_attention") == 5
        assert value(s, "keylife_keys_attention_omitted") == 3


def test_concurrent_scrapes_share_one_snapshot() -> None:
    started = threading.Event()

    def slow_build() -> object:
        started.set()
        time.sleep(0.3)
        return object()

    flight = SingleFlight(slow_build)  # type: ignore[arg-type]
    results: list[object] = []
    first = threading.Thread(target=lambda: results.append(flight.get()))
    first.start()
    started.wait()
    others = [threading.Thread(target=lambda: results.append(flight.get())) for _ in range(8)]
    for t in others:
        t.start()
    for t in [first, *others]:
        t.join()
    assert flight.builds == 1 and len(results) == 9 and all(r is results[0] for r in results)


def test_metrics_reference_is_generated_from_the_code() -> None:
    from keylife.cli.metrics_docs import TARGET, render

    assert TARGET.read_text() == render(), "docs/metrics.md is stale: run python -m keylife.cli.metrics_docs"


def test_every_served_metric_is_in_the_reference_and_promtool_is_clean(live: Live) -> None:
    from tests.prometheus import promtool_check_metrics

    post(live, *key(1, "k-1", expires_at=at(3)), *key(2, "k-2"))
    with live.client(None) as c:
        text = c.get("/metrics").text
    assert promtool_check_metrics(text) == []
    reference = (Path(__file__).parents[1] / "docs/metrics.md").read_text()
    served = {fam.name for fam in text_string_to_metric_families(text)}
    missing = [name for name in served if f"`{name}" not in reference]
    assert not missing, f"served but not documented: {missing}"


def test_serve_pushes_the_same_metrics_over_otlp(tmp_path: Path) -> None:
    from tests.fakes.otlp_receiver import otlp_grpc_receiver

    with otlp_grpc_receiver() as receiver:
        otlp = {"otlp": {"endpoint": receiver.endpoint, "insecure": True, "interval_seconds": 0.3}}
        with live_server(tmp_path, exporter=otlp) as live:
            post(live, *key(1, "k-otlp", expires_at=at(3)))
            live.runtime.ledger.sync_registry().result(10)
            assert live.runtime.pusher is not None and live.runtime.pusher.force_flush()
        request = receiver.requests[-1]
        metrics = {m.name: m for rm in request.resource_metrics for sm in rm.scope_metrics for m in sm.metrics}
        resource = {a.key: a.value.string_value for a in request.resource_metrics[0].resource.attributes}
        assert resource["service.name"] == "keylife" and resource["keylife.journal.origin"] == "test.keylife/api"
        points = {
            tuple(sorted((a.key, a.value.string_value) for a in p.attributes)): p.as_double or p.as_int
            for p in metrics["keylife_keys"].gauge.data_points
        }
        labels = (("algorithm", "aes-256-gcm"), ("purpose", "encryption"), ("state", "active"))
        assert points[labels] == 1
        assert metrics["keylife_key_transitions"].sum.is_monotonic  # a counter, without _total
        attention = metrics["keylife_key_attention"].gauge.data_points
        assert {a.value.string_value for p in attention for a in p.attributes if a.key == "key_id"} == {"k-otlp"}


def test_a_key_reaching_its_operations_limit_becomes_noncompliant(live: Live) -> None:
    post(live, *key(1, "k-gcm"))
    assert value(scrape(live), "keylife_keys_noncompliant", rule="operations_limit") == 0
    usage = {"id": "u-big", "type": "usage_report", "key_id": "k-gcm", "occurred_at": at(-0.1), "node": "n1",
             "usage": {"encrypt": 2**32}}  # fmt: skip
    post(live, usage)  # only usage changed: the index's hot path
    s = scrape(live)
    assert value(s, "keylife_keys_noncompliant", rule="operations_limit") == 1
    assert value(s, "keylife_key_attention", key_id="k-gcm", reason="non_compliant") == 1


def test_a_key_past_half_its_operations_limit_gets_operations_series(tmp_path: Path) -> None:
    with live_server(tmp_path) as live:
        usage = {"id": "u-1", "type": "usage_report", "key_id": "gcm", "occurred_at": at(), "node": "node-1"}
        post(live, *key(1, "gcm", algorithm="aes-256-gcm"), *key(2, "calm", algorithm="aes-256-gcm"))
        post(live, usage | {"usage": {"encrypt": 2**31 + 7}})
        post(live, usage | {"id": "u-2", "key_id": "calm", "usage": {"encrypt": 1000}})
        s = scrape(live)
        assert value(s, "keylife_key_attention", key_id="gcm", reason="operations_high") == 1
        assert value(s, "keylife_key_operations", key_id="gcm") == 2**31 + 7
        assert value(s, "keylife_key_operations_limit", key_id="gcm") == 2**32
        assert (
            value(s, "keylife_key_info", key_id="gcm", state="active", algorithm="aes-256-gcm", purpose="encryption")
            == 1
        )
        assert not [labels for name, labels in s if name == "keylife_key_operations" and ("key_id", "calm") in labels]
        assert value(s, "keylife_keys_propagation_pending") == 0


def test_destroying_a_key_closes_its_use_after_revocation_flag_and_a_restart_agrees(tmp_path: Path) -> None:
    def flagged(s: dict, key_id: str) -> bool:
        return (("key_id", key_id), ("reason", "conflicting_use")) in {
            tuple(sorted(labels)) for name, labels in s if name == "keylife_key_attention"
        }

    use = {"type": "usage_report", "node": "node-1", "occurred_at": at(), "usage": {"decrypt": 1}}
    with live_server(tmp_path) as live:
        post(live, *key(1, "gone"), *key(2, "kept"))
        post(live, {"id": "c1", "type": "compromised", "key_id": "gone", "occurred_at": at()},
             {"id": "c2", "type": "compromised", "key_id": "kept", "occurred_at": at()})  # fmt: skip
        post(live, use | {"id": "u1", "key_id": "gone"}, use | {"id": "u2", "key_id": "kept"})
        assert flagged(scrape(live), "gone") and flagged(scrape(live), "kept")
        post(live, {"id": "d1", "type": "destroyed", "key_id": "gone", "occurred_at": at()})
        s = scrape(live)
        assert not flagged(s, "gone") and flagged(s, "kept")
    with live_server(tmp_path) as live:  # the index loaded from the registry at start says the same
        s = scrape(live)
        assert not flagged(s, "gone") and flagged(s, "kept")


def test_key_age_buckets_are_gauges_of_the_population(live: Live) -> None:
    """A destroyed key leaves the age buckets: they go down, which a histogram's may never do, so
    they are typed gauge (and promtool keeps ``le`` for histograms: the bound is ``age_le``)."""
    post(live, *key(1, "young"), *key(2, "old", occurred_at=at(-400)))
    s = scrape(live)
    assert value(s, "keylife_keys_by_age", age_le="+Inf") == 2
    assert value(s, "keylife_keys_by_age", age_le="2.592e+06") == 1  # 30 d: only the 10-day-old key
    assert value(s, "keylife_keys_age_sum_seconds") == pytest.approx(410 * 86400, rel=0.01)
    post(live, {"id": "d1", "type": "destroyed", "key_id": "old", "occurred_at": at()})
    s = scrape(live)
    assert value(s, "keylife_keys_by_age", age_le="+Inf") == 1
    assert value(s, "keylife_keys_age_sum_seconds") == pytest.approx(10 * 86400, rel=0.01)
    with live.client(None) as c:
        text = c.get("/metrics").text
    assert "# TYPE keylife_keys_by_age gauge" in text and "keylife_key_age_seconds" not in text
