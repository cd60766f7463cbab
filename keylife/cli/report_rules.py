"""The policy (exporter/policy.py) as the compliance report's ``Rules``: each rule with its source,
and per key the rules it breaks and since when. Judged as the exporter judges (``exporter/fleet.py``):
cryptoperiod rules on active keys for ``rotation_overdue``, on usable keys for the rest."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import yaml

from exporter.policy import RULES, KeyFacts, Policy, load_policy

# Where each rule comes from (the defaults' notes cite the same documents, docs/policy.md).
SOURCES = {
    "banned_algorithm": "NIST SP 800-131A Rev. 2 (transitions: disallowed algorithms)",
    "min_key_size": "NIST SP 800-131A Rev. 2 (112-bit security strength floor); SP 800-57 Part 1 Rev. 5 Table 2",
    "operations_limit": "NIST SP 800-38D section 8.3 (AES-GCM: 2^32 invocations with random IVs)",
    "max_age": "NIST SP 800-57 Part 1 Rev. 5 section 5.3.6 (cryptoperiods: originator-usage period)",
    "rotation_overdue": "NIST SP 800-57 Part 1 Rev. 5 section 5.3.6 (cryptoperiods: rotation period)",
}
DESCRIPTIONS = {
    "banned_algorithm": "a usable key of an algorithm the policy bans",
    "min_key_size": "a usable key shorter than its family's minimum size",
    "operations_limit": "a usable key whose reported operations reached its algorithm's budget",
    "max_age": "a usable key older than its purpose's maximum age (from creation)",
    "rotation_overdue": "an active key past its rotation period (from activation) with no successor",
}


def _epoch(value: str | None) -> float | None:
    from keylife.response.reports.model import epoch

    return epoch(value)


def facts(key: dict[str, Any]) -> KeyFacts:
    return KeyFacts(key_id=key["key_id"], state=key["state"], algorithm=key["algorithm"], key_size=key["key_size"],
                    curve=key["curve"], purpose=key["purpose"], created_at=_epoch(key["created_at"]),
                    activated_at=_epoch(key["activated_at"]), expires_at=_epoch(key["expires_at"]),
                    usage_total=key["usage_total"] or 0)  # fmt: skip


class PolicyRules:
    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self.source = policy.source

    def catalogue(self) -> list[dict[str, str]]:
        return [{"rule": r, "source": SOURCES[r], "description": DESCRIPTIONS[r]} for r in RULES]

    def rotation_due(self, key: dict[str, Any]) -> float | None:
        return self.policy.rotation_due(facts(key))

    def judge(self, key: dict[str, Any], at: float) -> list[tuple[str, float | None]]:
        fact = facts(key)
        out: list[tuple[str, float | None]] = []
        for rule in sorted(self.policy.static_violations(fact)):
            out.append((rule, None if rule == "operations_limit" else fact.created_at))
        deadline = self.policy.max_age_deadline(fact)
        if deadline is not None and at >= deadline:
            out.append(("max_age", deadline))
        due = self.policy.rotation_due(fact)
        if key["state"] == "active" and key["successor"] is None and due is not None and at >= due:
            out.append(("rotation_overdue", due))
        return out

    def describe(self) -> dict[str, Any]:
        return self.policy.describe()


def rules_from_report(document: dict[str, Any], source: str) -> PolicyRules:
    """The policy a report was computed with, rebuilt from the copy it carries (``describe()`` is valid
    input for ``load_policy``), so ``keylife report check`` judges with the same rules."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "policy.yaml"
        path.write_text(yaml.safe_dump(document))
        policy = load_policy(path)
    policy.source = source
    return PolicyRules(policy)
