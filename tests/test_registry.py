"""The registry as its users see it: events go through a real journal, then into real SQLite."""

from __future__ import annotations

import hashlib
import sqlite3
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from keylife.common.canonical import canonical
from keylife.domain.events import Event
from keylife.domain.lifecycle import KeyState
from keylife.journal.signing import Signer
from keylife.journal.writer import Entry, Journal, JournalSettings
from keylife.registry import projection as registry_module
from keylife.registry.projection import Registry, RegistryError, rebuild

BASE = datetime(2024, 5, 1, tzinfo=UTC)


class Feed:
    """Journals events for real, then applies the entries to the registry in one transaction."""

    def __init__(self, journal: Journal, registry: Registry) -> None:
        self.journal = journal
        self.registry = registry
        self.entries: list[Entry] = []
        self._n = 0

    def event(self, type_: str, key_id: str | None = None, **fields: Any) -> dict[str, Any]:
        self._n += 1
        fields.setdefault("occurred_at", BASE + timedelta(minutes=self._n))
        return Event.model_validate({"id": f"ev-{self._n}", "type": type_, "key_id": key_id, **fields}).payload()

    def journal_only(self, *events: dict[str, Any]) -> list[Entry]:
        entries = self.journal.append(list(events))
        self.journal.commit()
        self.entries += entries
        return entries

    def __call__(self, *events: dict[str, Any]) -> list[Entry]:
        entries = self.journal_only(*events)
        self.registry.begin()
        self.registry.apply_many(entries)
        self.registry.commit()
        return entries

    def to_state(self, key_id: str, state: str) -> None:
        """Walk a key the lawful way into ``state``."""
        path = {
            "pre_activation": ["generated"],
            "active": ["generated", "activated"],
            "suspended": ["generated", "activated", "suspended"],
            "deactivated": ["generated", "activated", "deactivated"],
            "revoked": ["generated", "activated", "revoked"],
            "compromised": ["generated", "activated", "compromised"],
            "destroyed": ["generated", "activated", "deactivated", "destroyed"],
        }[state]
        self(*(self.event(t, key_id, algorithm="AES" if t == "generated" else None) for t in path))


@pytest.fixture
def journal(tmp_path: Path) -> Iterator[Journal]:
    signer = Signer("test.keylife", Ed25519PrivateKey.generate())
    settings = JournalSettings(origin="test.keylife/registry", seal_in_background=False)
    j = Journal(tmp_path / "journal", signer, settings)
    yield j
    j.close()


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[Registry]:
    reg = Registry(tmp_path / "registry.sqlite", origin="test.keylife/registry")
    yield reg
    reg.close()


@pytest.fixture
def feed(journal: Journal, registry: Registry) -> Feed:
    return Feed(journal, registry)


def kinds(registry: Registry, key_id: str) -> list[str]:
    key = registry.get_key(key_id)
    assert key is not None
    return [v["kind"] for v in key["violations"]]


def dump(path: Path) -> dict[str, list[tuple[Any, ...]]]:
    conn = sqlite3.connect(path)
    try:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
        out = {t: sorted(conn.execute(f"SELECT * FROM {t}").fetchall(), key=repr) for t in tables}
        out["schema"] = conn.execute("SELECT type, name, sql FROM sqlite_master ORDER BY name").fetchall()
        return out
    finally:
        conn.close()


def test_generate_activate_rotate_links_keys_and_records_transitions(feed: Feed, registry: Registry) -> None:
    feed(
        feed.event("generated", "k1", algorithm="AES", key_size=256, purpose="encryption", owner="team-a"),
        feed.event("activated", "k1", node="node-1"),
    )
    (rotated,) = feed(feed.event("rotated", "k1", successor="k2", expires_at="2025-05-01T00:00:00Z"))

    old, new = registry.get_key("k1"), registry.get_key("k2")
    assert old is not None and new is not None
    assert (old["state"], old["successor"]) == ("deactivated", "k2")
    assert (new["state"], new["predecessor"]) == ("active", "k1")
    assert [new[f] for f in ("algorithm", "key_size", "purpose", "owner")] == [
        "AES",
        256,
        "encryption",
        "team-a",
    ]
    assert new["expires_at"] == "2025-05-01T00:00:00.000000Z" and old["expires_at"] is None
    assert [(t["from_state"], t["to_state"], t["event_type"]) for t in old["transitions"]] == [
        (None, "pre_activation", "generated"),
        ("pre_activation", "active", "activated"),
        ("active", "deactivated", "rotated"),
    ]
    assert [(t["from_state"], t["to_state"], t["seq"]) for t in new["transitions"]] == [(None, "active", rotated.seq)]
    assert old["activated_at"] == "2024-05-01T00:02:00.000000Z" and old["deactivated_at"] is not None
    assert new["history_seqs"] == [rotated.seq] and old["history_seqs"] == [0, 1, 2]
    assert old["violations"] == [] and new["violations"] == []


def test_rotation_activates_a_successor_generated_beforehand(feed: Feed, registry: Registry) -> None:
    feed.to_state("k1", "active")
    feed(feed.event("generated", "k2", algorithm="ChaCha20", predecessor="k1"))
    assert registry.key_state("k2") == KeyState.PRE_ACTIVATION
    feed(feed.event("rotated", "k1", successor="k2"))
    new = registry.get_key("k2")
    assert new is not None
    assert (new["state"], new["algorithm"], new["predecessor"]) == ("active", "ChaCha20", "k1")
    assert [t["to_state"] for t in new["transitions"]] == ["pre_activation", "active"]


def test_rotation_onto_a_revoked_key_does_not_revive_it(feed: Feed, registry: Registry) -> None:
    feed.to_state("k1", "active")
    feed.to_state("k2", "revoked")
    feed(feed.event("rotated", "k1", successor="k2", origin="command"))
    assert registry.key_state("k1") == KeyState.DEACTIVATED
    assert registry.key_state("k2") == KeyState.REVOKED
    assert kinds(registry, "k2") == ["skipped_transition"] and kinds(registry, "k1") == []


def test_usage_reports_add_up_per_operation(feed: Feed, registry: Registry) -> None:
    feed.to_state("k1", "active")
    feed(
        feed.event("usage_report", "k1", usage={"encrypt": 5, "decrypt": 2}, interval_end="2024-05-02T00:00:00Z"),
        feed.event("usage_report", "k1", usage={"encrypt": 1}, interval_end="2024-05-01T12:00:00.5Z"),
    )
    key = registry.get_key("k1")
    assert key is not None
    assert key["usage"] == {"decrypt": 2, "encrypt": 6}
    assert key["usage_total"] == 8
    assert key["last_used_at"] == "2024-05-02T00:00:00.000000Z"  # a late, older report does not move it back
    assert key["violations"] == []


@pytest.mark.parametrize("state", ["suspended", "revoked", "compromised", "destroyed", "pre_activation"])
def test_any_use_of_a_key_that_must_not_be_used_is_a_violation(feed: Feed, registry: Registry, state: str) -> None:
    feed.to_state("k1", state)
    (entry,) = feed(feed.event("usage_report", "k1", usage={"decrypt": 3}))
    key = registry.get_key("k1")
    assert key is not None
    assert key["state"] == state and key["usage"] == {"decrypt": 3}
    assert [(v["kind"], v["seq"], v["detail"]) for v in key["violations"]] == [
        ("conflicting_use", entry.seq, f"decrypt=3 while {state}")
    ]
    assert key["violation_count"] == 1


def test_deactivated_key_may_decrypt_but_not_encrypt(feed: Feed, registry: Registry) -> None:
    feed.to_state("k1", "deactivated")
    feed(feed.event("usage_report", "k1", usage={"decrypt": 10, "verify": 1}))
    assert kinds(registry, "k1") == []
    feed(feed.event("usage_report", "k1", usage={"decrypt": 4, "encrypt": 1}))
    key = registry.get_key("k1")
    assert key is not None
    assert [(v["kind"], v["detail"]) for v in key["violations"]] == [("conflicting_use", "encrypt=1 while deactivated")]


def test_an_observation_that_skips_a_state_is_flagged_and_followed(feed: Feed, registry: Registry) -> None:
    feed.to_state("k1", "pre_activation")
    (entry,) = feed(feed.event("deactivated", "k1", node="node-1"))
    key = registry.get_key("k1")
    assert key is not None
    assert key["state"] == "deactivated"
    assert [(v["kind"], v["seq"]) for v in key["violations"]] == [("skipped_transition", entry.seq)]
    assert key["transitions"][-1]["from_state"] == "pre_activation"


@pytest.mark.parametrize("report", ["reactivated", "activated"])
def test_a_node_cannot_bring_back_a_revoked_key(feed: Feed, registry: Registry, report: str) -> None:
    feed.to_state("k1", "revoked")
    transitions_before = registry.get_key("k1")["transitions"]  # type: ignore[index]
    feed(feed.event(report, "k1", node="node-7"))
    key = registry.get_key("k1")
    assert key is not None
    assert key["state"] == "revoked" and registry.key_state("k1") == KeyState.REVOKED
    assert key["transitions"] == transitions_before
    assert [(v["kind"], v["detail"]) for v in key["violations"]] == [
        ("skipped_transition", f"{report} observed while revoked, state kept")
    ]


def test_a_command_is_applied_as_checked_by_the_caller(feed: Feed, registry: Registry) -> None:
    feed.to_state("k1", "active")
    feed(feed.event("revoked", "k1", origin="command", actor="alice", reason="left the company"))
    key = registry.get_key("k1")
    assert key is not None
    assert key["state"] == "revoked" and key["violations"] == []
    assert key["transitions"][-1]["origin"] == "command"


def test_events_about_a_key_never_generated(feed: Feed, registry: Registry) -> None:
    feed(feed.event("usage_report", "ghost", usage={"sign": 2}, node="node-1"))
    assert registry.key_exists("ghost") and registry.key_state("ghost") is None
    ghost = registry.get_key("ghost")
    assert ghost is not None
    assert (ghost["state"], ghost["usage_total"]) == (None, 2)
    assert kinds(registry, "ghost") == ["unknown_key"]

    feed(feed.event("propagated", "ghost", node="node-2", state="active"))
    assert kinds(registry, "ghost") == ["unknown_key", "unknown_key"]

    feed(feed.event("activated", "phantom"))  # a state event sets the state it reports
    assert registry.key_state("phantom") == KeyState.ACTIVE
    assert kinds(registry, "phantom") == ["unknown_key"]

    feed(feed.event("generated", "ghost", algorithm="Ed25519"))  # late registration is not a violation
    assert registry.key_state("ghost") == KeyState.PRE_ACTIVATION
    assert kinds(registry, "ghost") == ["unknown_key", "unknown_key"]
    assert not registry.key_exists("nobody") and registry.key_state("nobody") is None


def test_policy_violation_becomes_a_policy_breach(feed: Feed, registry: Registry) -> None:
    feed.to_state("k1", "active")
    feed(feed.event("policy_violation", "k1", violation="key_too_short", reason="RSA-1024"))
    key = registry.get_key("k1")
    assert key is not None
    assert [(v["kind"], v["detail"]) for v in key["violations"]] == [("policy_breach", "key_too_short")]
    assert key["violation_count"] == 1


def test_propagation_tracks_what_each_node_applied(feed: Feed, registry: Registry) -> None:
    feed.to_state("k1", "active")
    feed.to_state("k2", "active")
    feed(
        feed.event("propagated", "k1", node="node-a", state="active"),
        feed.event("propagated", "k1", node="node-b", state="active"),
        feed.event("propagated", "k2", node="node-b", state="active"),
    )
    feed(feed.event("revoked", "k1", origin="command"))
    (last,) = feed(feed.event("propagated", "k1", node="node-a", state="revoked"))
    key = registry.get_key("k1")
    assert key is not None
    applied_at = last.event["occurred_at"].replace("Z", ".000000Z")
    assert key["nodes"]["node-a"] == {"applied_state": "revoked", "applied_at": applied_at, "seq": last.seq}
    assert key["nodes"]["node-b"]["applied_state"] == "active"  # still pending on node-b
    assert [k["key_id"] for k in registry.list_keys(node="node-b")] == ["k1", "k2"]
    assert [k["key_id"] for k in registry.list_keys(node="node-a")] == ["k1"]
    assert registry.list_keys(node="node-z") == []
    assert registry.counts()["nodes"] == 2


def test_list_keys_filters_and_pages_by_key_id(feed: Feed, registry: Registry) -> None:
    for i in range(7):
        feed(
            feed.event(
                "generated",
                f"key-{i}",
                algorithm="AES" if i % 2 else "RSA",
                purpose="signing" if i < 3 else "encryption",
                owner=f"team-{i % 3}",
            )
        )
    feed(feed.event("activated", "key-1"), feed.event("activated", "key-3"))

    seen: list[str] = []
    after = None
    while page := registry.list_keys(limit=3, after=after):
        assert len(page) <= 3
        seen += [k["key_id"] for k in page]
        after = page[-1]["key_id"]
    assert seen == [f"key-{i}" for i in range(7)]
    assert [k["key_id"] for k in registry.list_keys(algorithm="AES")] == ["key-1", "key-3", "key-5"]
    assert [k["key_id"] for k in registry.list_keys(purpose="signing", algorithm="RSA")] == ["key-0", "key-2"]
    assert [k["key_id"] for k in registry.list_keys(owner="team-0")] == ["key-0", "key-3", "key-6"]
    assert [k["key_id"] for k in registry.list_keys(state="active")] == ["key-1", "key-3"]
    assert [k["key_id"] for k in registry.list_keys(state="active", after="key-1")] == ["key-3"]
    with pytest.raises(ValueError):
        registry.list_keys(limit=0)


@pytest.mark.parametrize("flush_at", [50_000, 1])  # 1: every entry is written before commit
def test_writer_sees_its_uncommitted_work_and_rollback_forgets_it(
    feed: Feed, registry: Registry, monkeypatch: pytest.MonkeyPatch, flush_at: int
) -> None:
    monkeypatch.setattr(registry_module, "_FLUSH_AT", flush_at)
    feed.to_state("k1", "active")
    entries = feed.journal_only(feed.event("revoked", "k1"), feed.event("generated", "k9"))
    before = registry.last_applied_seq()
    registry.begin()
    registry.apply_many(entries)
    assert registry.key_state("k1") == KeyState.REVOKED
    assert registry.key_state("k9") == KeyState.PRE_ACTIVATION
    assert registry.seen("ev-3") == (entries[0].seq, hashlib.sha256(canonical(entries[0].event)).digest())
    assert registry.last_applied_seq() == entries[-1].seq
    assert registry.get_key("k9") is None  # readers see committed data only
    registry.rollback()
    assert registry.key_state("k1") == KeyState.ACTIVE and registry.key_state("k9") is None
    assert registry.seen("ev-3") is None and registry.last_applied_seq() == before
    registry.begin()
    registry.apply_many(entries)
    registry.commit()
    assert registry.get_key("k9") is not None
    assert registry.seen("ev-1") == (0, hashlib.sha256(canonical(feed.entries[0].event)).digest())


def test_replay_overlap_is_skipped_and_a_gap_refused(feed: Feed, registry: Registry) -> None:
    first = feed(feed.event("generated", "k1"), feed.event("usage_report", "k1", usage={"encrypt": 1}))
    registry.begin()
    registry.apply_many(first)  # already applied: no double count
    registry.commit()
    assert registry.get_key("k1")["usage_total"] == 1  # type: ignore[index]
    _, later = feed.journal_only(feed.event("activated", "k1"), feed.event("suspended", "k1"))
    registry.begin()
    with pytest.raises(RegistryError, match="does not follow"):
        registry.apply(later)
    registry.rollback()
    with pytest.raises(RegistryError, match="outside"):
        registry.apply(later)


def test_other_threads_see_committed_data_only(feed: Feed, registry: Registry) -> None:
    feed.to_state("k1", "active")
    registry.begin()
    registry.apply_many(feed.journal_only(feed.event("revoked", "k1"), feed.event("generated", "k2")))
    staged: list[Any] = []
    thread = threading.Thread(
        target=lambda: staged.extend(
            [
                registry.key_state("k1"),
                registry.key_exists("k2"),
                registry.seen("ev-3"),
                registry.seen("ev-1"),
            ]
        )
    )
    thread.start()
    thread.join()
    assert staged[:3] == [KeyState.ACTIVE, False, None] and staged[3] is not None
    assert registry.key_state("k1") == KeyState.REVOKED  # the writer thread sees its staged work
    registry.rollback()

    results: list[Any] = []
    thread = threading.Thread(target=lambda: results.append((registry.get_key("k1"), registry.counts())))
    thread.start()
    thread.join()
    key, counts = results[0]
    assert key["state"] == "active"
    assert counts["keys_by_state"]["active"] == 1 and counts["keys_by_state"]["revoked"] == 0
    assert counts["violations_by_kind"] == {
        "conflicting_use": 0,
        "skipped_transition": 0,
        "unknown_key": 0,
        "policy_breach": 0,
    }


def _mixed_history(feed: Feed) -> None:
    for i in range(20):
        feed(
            feed.event("generated", f"k{i}", algorithm="AES", key_size=256, attributes={"env": "prod"}),
            feed.event("activated", f"k{i}", node=f"node-{i % 3}"),
            feed.event("usage_report", f"k{i}", usage={"encrypt": i, "decrypt": 1}, node=f"node-{i % 3}"),
            feed.event("propagated", f"k{i}", node=f"node-{i % 3}", state="active"),
        )
    for i in range(0, 20, 4):
        feed(
            feed.event("rotated", f"k{i}", successor=f"k{i}-next", attributes={"team": "x"}),
            feed.event("usage_report", f"k{i}", usage={"encrypt": 2}),
            feed.event("revoked", f"k{i + 1}", origin="command"),
            feed.event("reactivated", f"k{i + 1}", node="node-9"),
            feed.event("usage_report", "stranger", usage={"sign": 1}),
            feed.event("policy_violation", f"k{i + 2}", violation="weak_algorithm"),
            feed.event("security_event", f"k{i + 3}", reason="HSM tamper alarm"),
        )


def test_rebuild_gives_identical_tables(feed: Feed, registry: Registry, tmp_path: Path) -> None:
    _mixed_history(feed)
    live = registry.path
    stats = rebuild(feed.entries, tmp_path / "rebuilt.sqlite", origin="test.keylife/registry", batch=7)
    assert stats.entries == len(feed.entries) and stats.last_seq == feed.entries[-1].seq
    assert stats.keys == registry.counts()["keys_total"]
    registry.checkpoint_deferred()  # the usage baselines, written every few seconds, as a stop writes them
    expected = dump(live)
    assert dump(tmp_path / "rebuilt.sqlite") == expected
    assert expected["violations"] and expected["transitions"] and expected["node_keys"]

    registry_module._FLUSH_AT, flush_at = 3, registry_module._FLUSH_AT  # writes inside transactions too
    try:
        rebuild(feed.entries, tmp_path / "flushed.sqlite", origin="test.keylife/registry", batch=1000)
    finally:
        registry_module._FLUSH_AT = flush_at
    assert dump(tmp_path / "flushed.sqlite") == expected

    registry.close()  # rebuild in place: the live file is swapped for the replay
    rebuild(iter(feed.entries), live, origin="test.keylife/registry")
    assert dump(live) == expected
    reopened = Registry(live, origin="test.keylife/registry")
    try:
        assert reopened.last_applied_seq() == feed.entries[-1].seq
        assert reopened.key_state("k0-next") == KeyState.ACTIVE
    finally:
        reopened.close()


def test_a_registry_belongs_to_one_origin(registry: Registry) -> None:
    path = registry.path
    registry.close()
    with pytest.raises(RegistryError, match="origin"):
        Registry(path, origin="another/origin")
