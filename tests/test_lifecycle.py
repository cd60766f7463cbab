"""Every lifecycle transition, allowed and refused, through the real ledger, journal and registry."""

from __future__ import annotations

import re
from collections.abc import Iterator
from itertools import count
from pathlib import Path

import pytest

from keylife.domain.events import Event
from keylife.domain.lifecycle import ALLOWED, TARGET_STATE, KeyState, render_markdown
from keylife.ingest.ledger import Ledger
from keylife.journal.reader import iter_entries
from keylife.registry.projection import Registry
from tests.journal_helpers import open_journal

NOW = "2026-11-28T10:00:00Z"
COMMAND_TYPES = ["activated", "suspended", "reactivated", "deactivated", "revoked", "compromised", "destroyed"]
# How to bring a fresh key into each state with observations that the table allows.
PATHS: dict[KeyState | None, list[str]] = {
    None: [],
    KeyState.PRE_ACTIVATION: ["generated"],
    KeyState.ACTIVE: ["generated", "activated"],
    KeyState.SUSPENDED: ["generated", "activated", "suspended"],
    KeyState.DEACTIVATED: ["generated", "activated", "deactivated"],
    KeyState.REVOKED: ["generated", "activated", "revoked"],
    KeyState.COMPROMISED: ["generated", "activated", "compromised"],
    KeyState.DESTROYED: ["generated", "activated", "deactivated", "destroyed"],
}
_ids = count()


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    led = Ledger(open_journal(tmp_path), Registry(tmp_path / "registry.sqlite"))
    led.start()
    yield led
    led.stop()


def event(kind: str, key: str, origin: str = "observation", **more: object) -> Event:
    return Event.model_validate(
        {"id": f"t-{next(_ids)}", "type": kind, "key_id": key, "occurred_at": NOW, "origin": origin, "actor": "tester"}
        | more
    )


def state_of(ledger: Ledger, key: str) -> KeyState | None:
    ledger.sync_registry().result(5)  # readers see committed data; this commits what was answered
    return ledger.registry.key_state(key)


def bring(ledger: Ledger, key: str, state: KeyState | None) -> None:
    for kind in PATHS[state]:
        (outcome,) = ledger.submit([event(kind, key)]).result(5)
        assert outcome.status == "accepted"
    assert state_of(ledger, key) == state


@pytest.mark.parametrize("start", list(PATHS), ids=lambda s: s.value if s else "new")
def test_every_command_from_every_state(ledger: Ledger, start: KeyState | None) -> None:
    for kind in COMMAND_TYPES:
        key = f"k-{start.value if start else 'new'}-{kind}"
        bring(ledger, key, start)
        before = ledger.journal.size
        (outcome,) = ledger.submit([event(kind, key, origin="command")], command=True).result(5)
        if kind in ALLOWED[start]:
            assert outcome.status == "accepted", (start, kind, outcome)
            assert state_of(ledger, key) == TARGET_STATE[kind]
        else:
            assert outcome.status == "refused", (start, kind)
            assert state_of(ledger, key) == start  # unchanged
            refusal = list(iter_entries(ledger.journal.directory, before))
            assert [e.event["type"] for e in refusal] == ["command_refused"]
            assert refusal[0].event["key_id"] == key and kind in refusal[0].event["reason"]


def test_nist_facts_hold_in_the_table() -> None:
    assert ALLOWED[KeyState.DESTROYED] == frozenset()  # destroyed is final
    assert ALLOWED[KeyState.COMPROMISED] == {"destroyed"}  # a compromised key is never used again
    assert "reactivated" not in ALLOWED[KeyState.REVOKED] | ALLOWED[KeyState.DEACTIVATED]
    assert "reactivated" in ALLOWED[KeyState.SUSPENDED]
    for state in KeyState:  # compromise can be declared from every live state
        assert state in (KeyState.COMPROMISED, KeyState.DESTROYED) or "compromised" in ALLOWED[state]


def test_observations_are_never_refused_but_conflicts_are_flagged(ledger: Ledger) -> None:
    bring(ledger, "k-obs", KeyState.REVOKED)
    for kind in ("activated", "reactivated"):
        (outcome,) = ledger.submit([event(kind, "k-obs")]).result(5)
        assert outcome.status == "accepted"
    assert state_of(ledger, "k-obs") == KeyState.REVOKED  # a node cannot un-revoke
    (used,) = ledger.submit([event("usage_report", "k-obs", usage={"sign": 3})]).result(5)
    assert used.status == "accepted"
    ledger.sync_registry().result(5)
    kinds = [v["kind"] for v in ledger.registry.get_key("k-obs")["violations"]]
    assert kinds.count("skipped_transition") == 2 and "conflicting_use" in kinds


def test_docs_table_is_generated_from_the_code() -> None:
    doc = (Path(__file__).parents[1] / "docs/lifecycle.md").read_text()
    table = re.search(r"<!-- table:start -->\n(.*)<!-- table:end -->", doc, re.S)
    assert table is not None and table.group(1) == render_markdown()
