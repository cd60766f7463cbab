"""The posture score: its formula, and the components and scores a live keylife serves for crafted fleets."""

from __future__ import annotations

from pathlib import Path

import pytest

from exporter.posture import (
    COMPONENTS,
    FORWARDER_CURRENT_SECONDS,
    WEIGHTS,
    SinkStatus,
    forwarder_component,
    journal_component,
    ratio,
    score,
    weights,
)
from tests.server import Live, live_server
from tests.test_exporter import at, post, scrape, value
from tests.waiting import wait_until

ALL_ONE = dict.fromkeys(COMPONENTS, 1.0)


def test_the_nominal_weights_sum_to_one_and_bound_the_score():
    assert sum(WEIGHTS.values()) == pytest.approx(1.0)
    assert score(ALL_ONE) == pytest.approx(100.0)
    assert score(dict.fromkeys(COMPONENTS, 0.0)) == 0.0


@pytest.mark.parametrize("component", COMPONENTS)
def test_each_component_at_zero_costs_exactly_its_weight(component: str):
    assert score(ALL_ONE | {component: 0.0}) == pytest.approx(100.0 * (1 - WEIGHTS[component]))
    assert score(dict.fromkeys(COMPONENTS, 0.0) | {component: 1.0}) == pytest.approx(100.0 * WEIGHTS[component])


def test_a_component_not_measured_leaves_the_score_to_the_others():
    values = ALL_ONE | {"forwarders_current": None, "policy_compliance": 0.5}
    effective = weights(values)
    assert effective["forwarders_current"] == 0.0 and sum(effective.values()) == pytest.approx(1.0)
    assert effective["policy_compliance"] == pytest.approx(0.25 / 0.9)
    assert score(values) == pytest.approx(100 * (1 - 0.5 * 0.25 / 0.9))


def test_ratios_judge_nothing_as_fine_and_stay_within_bounds():
    assert ratio(0, 0) == 1.0 and ratio(1, 4) == 0.75 and ratio(4, 4) == 0.0 and ratio(5, 4) == 0.0


def test_journal_component_follows_the_verification_and_the_integrity_check():
    assert journal_component({}) is None  # no verification finished yet: not measured
    assert journal_component({"keylife_journal_verify_ok": 1.0, "keylife_journal_integrity_ok": 1.0}) == 1.0
    assert journal_component({"keylife_journal_verify_ok": 0.0, "keylife_journal_integrity_ok": 1.0}) == 0.0
    assert journal_component({"keylife_journal_verify_ok": 1.0, "keylife_journal_integrity_ok": 0.0}) == 0.0
    assert journal_component({"keylife_journal_integrity_ok": 0.0}) == 0.0


def test_forwarder_component_is_the_share_of_sinks_up_and_current():
    assert forwarder_component(None) is None and forwarder_component([]) is None
    current, late, down = SinkStatus(True, 0.0), SinkStatus(True, FORWARDER_CURRENT_SECONDS + 1), SinkStatus(False, 0)
    assert forwarder_component([current, current]) == 1.0
    assert forwarder_component([late, down]) == 0.0
    assert forwarder_component([current, late, down, current]) == 0.5


def key(n: int, key_id: str, days: float = 10, **fields: object) -> list[dict]:
    """A key generated and activated ``days`` ago (aes-256-gcm for encryption unless ``fields`` say otherwise)."""
    base = {"key_id": key_id, "occurred_at": at(-days)}
    generated = {"algorithm": "aes-256-gcm", "key_size": 256, "purpose": "encryption"} | fields
    return [{"id": f"g{n}", "type": "generated", **base, **generated}, {"id": f"a{n}", "type": "activated", **base}]


def by_component(samples: dict, metric: str) -> dict[str, float]:
    return {dict(labels)["component"]: v for (name, labels), v in samples.items() if name == metric}


def components(samples: dict) -> dict[str, float]:
    return by_component(samples, "keylife_posture_component")


def effective_weights(samples: dict) -> dict[str, float]:
    return by_component(samples, "keylife_posture_component_weight")


def verified(live: Live) -> dict:
    """A scrape once the periodic verification (run at start) has written its status."""
    holder: dict = {}

    def done() -> bool:
        holder["s"] = scrape(live)
        return "journal_verified" in components(holder["s"])

    wait_until(done, what="the first journal verification")
    return holder["s"]


def test_a_healthy_fleet_with_a_current_forwarder_scores_100(tmp_path: Path):
    sink = {"type": "file", "name": "archive", "path": str(tmp_path / "archive.jsonl")}
    with live_server(tmp_path, forwarder={"sinks": [sink]}) as live:
        post(live, *key(1, "k-good", days=2, owner="team-a"))
        wait_until(lambda: components(scrape(live)).get("forwarders_current") == 1.0, what="the sink catching up")
        s = verified(live)
    assert components(s) == ALL_ONE
    assert effective_weights(s) == pytest.approx(WEIGHTS)
    assert value(s, "keylife_posture_score") == pytest.approx(100.0)
    assert value(s, "keylife_posture_owner_score", owner="team-a") == pytest.approx(100.0)
    assert value(s, "keylife_posture_owners") == 1 and value(s, "keylife_posture_owners_omitted") == 0


def test_a_broken_fleet_scores_each_failure_and_the_owner_scores_split_them(tmp_path: Path):
    with live_server(tmp_path) as live:  # no forwarder: forwarders_current is not measured
        post(
            live,
            # team-b: a banned algorithm, active for 400 days (the policy's rotation period is 1 year)
            *key(1, "k-legacy", days=400, algorithm="3des", key_size=168, owner="team-b"),
            # team-c: a key used on n1, then compromised; n1 goes on using it and never confirms
            *key(2, "k-stolen", owner="team-c"),
            {"id": "u1", "type": "usage_report", "key_id": "k-stolen", "occurred_at": at(-2), "node": "n1",
             "usage": {"encrypt": 3}},
            {"id": "c2", "type": "compromised", "key_id": "k-stolen", "occurred_at": at(-1)},
            {"id": "u2", "type": "usage_report", "key_id": "k-stolen", "occurred_at": at(-0.5), "node": "n1",
             "usage": {"encrypt": 4}},
        )  # fmt: skip
        s = verified(live)
        fixed = {"id": "p2", "type": "propagated", "key_id": "k-stolen", "occurred_at": at(-0.1), "node": "n1",
                 "state": "compromised"}  # fmt: skip
        post(live, fixed)
        after = scrape(live)
    assert components(s) == {
        "policy_compliance": 0.0,  # the only usable key breaks the policy
        "rotation_on_time": 0.0,  # ... and is overdue for rotation
        "no_use_after_revocation": 0.0,  # the only withdrawn key was used after its compromise
        "propagation_confirmed": 0.0,  # the only node expected to confirm it has not
        "journal_verified": 1.0,
    }
    w = effective_weights(s)
    assert w["forwarders_current"] == 0.0 and sum(w.values()) == pytest.approx(1.0)
    assert value(s, "keylife_posture_score") == pytest.approx(100 * 0.15 / 0.9)
    assert value(s, "keylife_posture_score") == pytest.approx(100 * sum(w[c] * v for c, v in components(s).items()))
    # team-b: policy and rotation fail; team-c: use after compromise and propagation fail
    assert value(s, "keylife_posture_owner_score", owner="team-b") == pytest.approx(100 * 0.5 / 0.9)
    assert value(s, "keylife_posture_owner_score", owner="team-c") == pytest.approx(100 * 0.55 / 0.9)
    assert components(after)["propagation_confirmed"] == 1.0  # n1 refused the key at last
    assert value(after, "keylife_posture_owner_score", owner="team-c") == pytest.approx(100 * 0.7 / 0.9)


def test_the_owner_series_keep_the_worst_owners_up_to_the_cap(tmp_path: Path):
    with live_server(tmp_path, exporter={"attention_cap": 1}) as live:
        post(
            live,
            *key(1, "k-ok"),  # no owner
            *key(2, "k-legacy", algorithm="3des", key_size=168, owner="team-b"),
            *key(3, "k-fine", owner="team-a"),
        )
        s = scrape(live)
    owners = {dict(labels)["owner"]: v for (name, labels), v in s.items() if name == "keylife_posture_owner_score"}
    assert list(owners) == ["team-b"] and owners["team-b"] < 100
    assert value(s, "keylife_posture_owners") == 3 and value(s, "keylife_posture_owners_omitted") == 2


def test_mean_key_age_by_purpose_is_served_as_a_sum_and_a_count(tmp_path: Path):
    with live_server(tmp_path) as live:
        post(
            live,
            *key(1, "k-enc-old", days=30),
            *key(2, "k-enc-new", days=10),
            *key(3, "k-sig", days=5, algorithm="ed25519", key_size=256, purpose="signing"),
        )
        s = scrape(live)
    assert value(s, "keylife_keys_not_destroyed_by_purpose", purpose="encryption") == 2
    mean = value(s, "keylife_keys_age_by_purpose_sum_seconds", purpose="encryption") / 2
    assert mean == pytest.approx(20 * 86400, rel=0.01)
    assert value(s, "keylife_keys_age_by_purpose_sum_seconds", purpose="signing") == pytest.approx(5 * 86400, rel=0.01)


def test_the_standalone_exporter_scores_without_the_forwarder_component(tmp_path: Path):
    """``keylife exporter`` runs no forwarder: forwarders_current is not measured, the rest is as in serve."""
    from prometheus_client import generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    from exporter.policy import load_policy
    from keylife.cli.standalone_exporter import StandaloneExporter

    sink = {"type": "file", "name": "archive", "path": str(tmp_path / "archive.jsonl")}
    with live_server(tmp_path, forwarder={"sinks": [sink]}) as live:
        post(live, *key(1, "k-legacy", algorithm="3des", key_size=168, owner="team-b"), *key(2, "k-ok"))
        served = verified(live)
        config = live.runtime.config
        standalone = StandaloneExporter(config.registry_path, config.journal_dir, load_policy(None), 500)
        text = generate_latest(standalone.metrics).decode()
    s = {
        (m.name, tuple(sorted(m.labels.items()))): m.value
        for f in text_string_to_metric_families(text)
        for m in f.samples
    }
    assert "forwarders_current" in components(served) and "forwarders_current" not in components(s)
    assert effective_weights(s)["forwarders_current"] == 0.0
    assert components(s) == {c: v for c, v in components(served).items() if c != "forwarders_current"}
    assert components(s)["policy_compliance"] == 0.5
    assert value(s, "keylife_posture_score") == pytest.approx(100 * (1 - 0.5 * 0.25 / 0.9))
    assert value(s, "keylife_posture_owner_score", owner="team-b") == pytest.approx(100 * (1 - 0.25 / 0.9))


def test_a_scrape_takes_one_fleet_snapshot_for_the_fleet_and_the_posture(tmp_path: Path):
    """The snapshot is a scrape's costly part at a million keys: the posture families reuse the fleet's."""
    with live_server(tmp_path) as live:
        post(live, *key(1, "k-1", owner="team-a"))
        before = live.runtime.exporter.snapshots.builds
        s = scrape(live)
        assert live.runtime.exporter.snapshots.builds == before + 1
    assert value(s, "keylife_posture_owner_score", owner="team-a") == pytest.approx(100.0)
