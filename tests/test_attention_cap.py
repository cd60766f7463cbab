"""The attention cap keeps the most severe keys: a flood of mild findings must never push a key in
use after revocation, or a compromised or expired one, out of the per-key series its alert needs.

Key ids are chosen so that key-id order would keep exactly the wrong keys.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

from tests.server import Live, live_server
from tests.test_exporter import at, key, post, scrape, value

# Most severe first, as the cap must keep them; key-id order is the reverse of this.
ORDER = [
    "zz-revoked-in-use",  # conflicting_use: KeylifeKeyUsedAfterRevocation (critical)
    "zt-compromised",  # compromised, tied with the next one: broken by key id
    "zy-compromised",
    "zx-expired",  # expired and still active: KeylifeKeyExpiredStillUsable (critical)
    "zw-unconfirmed",  # a node still holds it in another state
    "zv-rotation-overdue",
    "m-expiring-in-2d",  # expiring: the sooner first, whatever the id
    "b-expiring-in-25d",
    "a-operations-high",
    "a-legacy-3des",  # non_compliant only
]
REASONS = {
    "zz-revoked-in-use": {"conflicting_use"},
    "zt-compromised": {"compromised"},
    "zy-compromised": {"compromised"},
    "zx-expired": {"expiring"},
    "zw-unconfirmed": {"propagation_pending"},
    "zv-rotation-overdue": {"rotation_overdue"},
    "m-expiring-in-2d": {"expiring"},
    "b-expiring-in-25d": {"expiring"},
    "a-operations-high": {"operations_high"},
    "a-legacy-3des": {"non_compliant"},
}
CAP = 5


def fleet(live: Live) -> None:
    usage = {"type": "usage_report", "occurred_at": at(), "node": "n1"}
    old = at(-400)  # generated and activated over a year ago: past the 1y rotation period, within max age
    post(
        live,
        *key(1, "zz-revoked-in-use"),
        *key(2, "zt-compromised"),
        *key(3, "zy-compromised"),
        *key(4, "zx-expired", expires_at=at(-1)),
        *key(5, "zw-unconfirmed"),
        {"id": "g6", "type": "generated", "key_id": "zv-rotation-overdue", "occurred_at": old,
         "algorithm": "aes-256-gcm", "key_size": 256, "purpose": "encryption"},
        {"id": "a6", "type": "activated", "key_id": "zv-rotation-overdue", "occurred_at": old},
        *key(7, "m-expiring-in-2d", expires_at=at(2)),
        *key(8, "b-expiring-in-25d", expires_at=at(25)),
        *key(9, "a-operations-high"),
        *key(10, "a-legacy-3des", algorithm="3des", key_size=168),
    )  # fmt: skip
    post(
        live,
        {"id": "r1", "type": "revoked", "key_id": "zz-revoked-in-use", "occurred_at": at(-1)},
        {"id": "c2", "type": "compromised", "key_id": "zt-compromised", "occurred_at": at(-1)},
        {"id": "c3", "type": "compromised", "key_id": "zy-compromised", "occurred_at": at(-1)},
        {"id": "p5", "type": "propagated", "key_id": "zw-unconfirmed", "occurred_at": at(-1), "node": "n2",
         "state": "pre_activation"},
        usage | {"id": "u1", "key_id": "zz-revoked-in-use", "usage": {"decrypt": 1}},
        usage | {"id": "u9", "key_id": "a-operations-high", "usage": {"encrypt": 2**31 + 7}},
    )  # fmt: skip


def test_the_cap_keeps_the_most_severe_keys_in_the_per_key_series(tmp_path: Path) -> None:
    with live_server(tmp_path, exporter={"attention_cap": CAP}) as live:
        fleet(live)
        s = scrape(live)
    reasons: dict[str, set[str]] = {}
    for name, labels in s:
        if name == "keylife_key_attention":
            reasons.setdefault(dict(labels)["key_id"], set()).add(dict(labels)["reason"])
    assert reasons == {k: REASONS[k] for k in ORDER[:CAP]}
    assert value(s, "keylife_keys_attention") == len(ORDER)
    assert value(s, "keylife_keys_attention_omitted") == len(ORDER) - CAP
    # The joins the per-key alerts make find their keys.
    revoked = {"key_id": "zz-revoked-in-use", "state": "revoked", "algorithm": "aes-256-gcm", "purpose": "encryption"}
    assert value(s, "keylife_key_info", **revoked) == 1
    expired = {"key_id": "zx-expired", "state": "active", "algorithm": "aes-256-gcm", "purpose": "encryption"}
    assert value(s, "keylife_key_expiry_timestamp_seconds", **expired) < time.time()


def test_every_cap_keeps_a_prefix_of_one_severity_order(tmp_path: Path) -> None:
    with live_server(tmp_path) as live:
        fleet(live)
        live.runtime.ledger.sync_registry().result(10)  # the index follows the registry's commits
        index = live.runtime.exporter.index
        now = time.time()
        full = index.snapshot(now, len(ORDER))
        assert [k.key_id for k in full.attention] == ORDER
        assert {k.key_id: set(k.reasons) for k in full.attention} == REASONS
        for cap in range(len(ORDER) + 1):
            kept = index.snapshot(now, cap)
            assert [k.key_id for k in kept.attention] == ORDER[:cap], f"cap {cap}"
            assert kept.attention_total == len(ORDER)


def test_the_runbook_states_the_order_the_code_keeps() -> None:
    from exporter.fleet import RANKING

    text = (Path(__file__).parents[1] / "docs/runbooks/KeylifeAttentionCapReached.md").read_text()
    sentence = text.split("chosen by their most severe reason", 1)[1].split(". Within one", 1)[0]
    assert re.findall(r"`(\w+)`", sentence) == list(RANKING)
