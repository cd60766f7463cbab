"""The compliance report's figures, a pure function of one registry snapshot and its inputs.

``compute`` reads every table it needs inside ONE read transaction of a registry connection that
reflects exactly the journal's first ``checkpoint.size`` entries; the period, ``generated_at``, the
policy and the last verification are inputs, never the wall clock. So the same checkpoint and the
same inputs give the same bytes: ``keylife report check`` replays the journal up to the checkpoint
into a scratch registry, recomputes, and compares figure by figure and the digest.

The policy lives in ``exporter/`` (above this layer), so it comes in as a ``Rules`` object built by
the composition root (``keylife/cli/report_rules.py``).
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from keylife.common.canonical import canonical
from keylife.journal.note import parse
from keylife.journal.proofs import b64
from keylife.registry.queries import ts
from keylife.response.selector import Selector

FORMAT = "keylife-compliance-report/1"
USABLE = frozenset({"pre_activation", "active", "suspended"})
WITHDRAWN = ("revoked", "compromised")
LIST_CAP = 1000  # keys listed per finding; counts are always whole
TOP_OWNERS = 10
AGE_BUCKETS = (("<=30d", 30), ("<=90d", 90), ("<=180d", 180), ("<=1y", 365), ("<=2y", 730), ("<=3y", 1095))
_KEY_SQL = (
    "SELECT key_id, state, algorithm, key_size, curve, purpose, owner, created_at, activated_at, expires_at, "
    "usage_total, last_used_at, successor FROM keys ORDER BY key_id"
)


class Rules(Protocol):
    """The policy as the report needs it (exporter.policy behind it)."""

    source: str

    def catalogue(self) -> list[dict[str, str]]: ...  # [{rule, source, description}] in a fixed order
    def judge(self, key: dict[str, Any], at: float) -> list[tuple[str, float | None]]: ...  # (rule, since)
    def rotation_due(self, key: dict[str, Any]) -> float | None: ...
    def describe(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class Period:
    start: datetime  # inclusive, UTC
    end: datetime  # exclusive, UTC

    def describe(self) -> dict[str, str]:
        return {"from": iso(self.start.timestamp()), "to": iso(self.end.timestamp())}


def iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def epoch(value: str | None) -> float | None:
    return None if value is None else datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def _stats(values: list[float]) -> dict[str, Any]:
    """count, mean, p50, p95, max in whole milliseconds' precision (seconds, 3 decimals)."""
    if not values:
        return {"count": 0, "mean": None, "p50": None, "p95": None, "max": None}
    ordered = sorted(values)

    def rank(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, max(0, int(q * len(ordered) + 0.999999) - 1))], 3)

    return {"count": len(ordered), "mean": round(sum(ordered) / len(ordered), 3), "p50": rank(0.5),
            "p95": rank(0.95), "max": round(ordered[-1], 3)}  # fmt: skip


def digest(report: dict[str, Any]) -> str:
    """sha256 over the report's canonical JSON without its ``digest`` field."""
    body = {k: v for k, v in report.items() if k != "digest"}
    return "sha256:" + hashlib.sha256(canonical(body)).hexdigest()


def _matches(key: dict[str, Any], sel: Selector | None, held: set[str] | None) -> bool:
    if sel is None:
        return True
    if sel.states and key["state"] not in {s.value for s in sel.states}:
        return False
    for column in ("algorithm", "purpose", "owner"):
        want = getattr(sel, column)
        if want is not None and key[column] != want:
            return False
    if held is not None and key["key_id"] not in held:
        return False
    if sel.created_before is not None and epoch(key["created_at"]) >= sel.created_before.timestamp():  # type: ignore[operator]
        return False
    if sel.expiring_before is not None:
        exp = epoch(key["expires_at"])
        if exp is None or exp >= sel.expiring_before.timestamp():
            return False
    return not (sel.ids is not None and key["key_id"] not in set(sel.ids))


def compute(
    db: sqlite3.Connection,
    *,
    checkpoint: str,
    rules: Rules,
    period: Period,
    generated_at: str,
    selector: Selector | None = None,
    verification: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The report (with its digest) from ``db``, which must reflect the checkpoint's size exactly."""
    cp = parse(checkpoint)
    if not db.in_transaction:  # a live snapshot arrives already pinned (source.live_snapshot)
        db.execute("BEGIN")
    try:
        applied = db.execute("SELECT value FROM meta WHERE name = 'last_applied_seq'").fetchone()
        if applied is not None and int(applied[0]) + 1 != cp.size:
            raise ValueError(f"the registry reflects {int(applied[0]) + 1} entries, the checkpoint {cp.size}")
        held = None
        if selector is not None and selector.node is not None:
            held = {k for (k,) in db.execute(
                "SELECT key_id FROM node_keys WHERE node = ? UNION SELECT key_id FROM key_users WHERE node = ?",
                (selector.node, selector.node))}  # fmt: skip
        cols = ("key_id", "state", "algorithm", "key_size", "curve", "purpose", "owner", "created_at",
                "activated_at", "expires_at", "usage_total", "last_used_at", "successor")  # fmt: skip
        keys = [
            k for k in (dict(zip(cols, r, strict=True)) for r in db.execute(_KEY_SQL)) if _matches(k, selector, held)
        ]
        chosen = {k["key_id"] for k in keys}
        transitions = [t for t in db.execute(
            "SELECT key_id, event_type, to_state, occurred_at FROM transitions ORDER BY occurred_at, seq"
        ) if t[0] in chosen]  # fmt: skip
        conflicts = [v for v in db.execute(
            "SELECT key_id, detail, occurred_at FROM violations WHERE kind = 'conflicting_use' "
            "ORDER BY occurred_at, seq"
        ) if v[0] in chosen]  # fmt: skip
        propagation = _propagation(db, chosen)
        incidents = _incidents(db, period)
    finally:
        db.execute("COMMIT")
    at = period.end.timestamp()
    rule_list, by_owner = _rules(keys, rules, at)
    report: dict[str, Any] = {
        "format": FORMAT,
        "generated_at": generated_at,
        "period": period.describe(),
        "selector": selector.describe() if selector is not None else {"all": True},
        "checkpoint": {"origin": cp.origin, "size": cp.size, "root": b64(cp.hash), "note": checkpoint},
        "policy": {"source": rules.source, "document": rules.describe()},
        "inventory": _inventory(keys),
        "rules": rule_list,
        "rotations": _rotations(keys, transitions, rules, period),
        "use_after_withdrawal": _after_withdrawal(conflicts),
        "expired_in_use": _expired_in_use(keys),
        "propagation": propagation,
        "incidents": incidents,
        "integrity": {"checkpoint_size": cp.size, "checkpoint_root": b64(cp.hash), "last_verification": verification},
    }
    from keylife.response.reports.series import charts  # beside the figures: the HTML's charts

    report["charts"] = charts(keys, transitions, rules, period, by_owner)
    report["digest"] = digest(report)
    return report


def _counts(keys: list[dict[str, Any]], column: str) -> dict[str, int]:
    return dict(sorted(Counter(str(k[column] or "unknown") for k in keys).items()))


def _inventory(keys: list[dict[str, Any]]) -> dict[str, Any]:
    return {"total": len(keys), **{f"by_{c}": _counts(keys, c) for c in ("state", "algorithm", "purpose", "owner")}}


def _rules(keys: list[dict[str, Any]], rules: Rules, at: float) -> tuple[list[dict[str, Any]], Counter[str]]:
    """Each rule with the usable keys breaking it at ``at``; and the broken rules per owner."""
    broken: dict[str, list[dict[str, Any]]] = defaultdict(list)
    by_owner: Counter[str] = Counter()
    for key in keys:
        if key["state"] not in USABLE:
            continue  # a key no longer usable breaks no cryptoperiod or algorithm rule
        for rule, since in rules.judge(key, at):
            when = None if since is None else iso(since)
            broken[rule].append({"key_id": key["key_id"], "owner": key["owner"], "since": when})
            by_owner[key["owner"] or "unknown"] += 1
    out = []
    for entry in rules.catalogue():
        found = broken.get(entry["rule"], [])
        found.sort(key=lambda k: (k["since"] or "", k["key_id"]))
        out.append({**entry, "breaking": len(found), "keys": found[:LIST_CAP]})
    return out, by_owner


def _rotations(
    keys: list[dict[str, Any]], transitions: list[tuple[Any, ...]], rules: Rules, period: Period
) -> dict[str, Any]:
    start, end = period.start.timestamp(), period.end.timestamp()
    done = sum(1 for t in transitions if t[1] == "rotated" and start <= epoch(t[3]) < end)  # type: ignore[operator]
    due, due_done, overdue = 0, 0, []
    for key in keys:
        when = rules.rotation_due(key)
        if when is None:
            continue
        if start <= when < end:
            due += 1
            due_done += key["successor"] is not None or key["state"] not in USABLE
        if when < end and key["state"] == "active" and key["successor"] is None:
            overdue.append({"key_id": key["key_id"], "owner": key["owner"], "due": iso(when)})
    overdue.sort(key=lambda k: (k["due"], k["key_id"]))
    rate = None if due == 0 else round(due_done / due, 4)
    return {"done": done, "due": due, "due_done": due_done, "on_time_rate": rate, "overdue": len(overdue),
            "overdue_keys": overdue[:LIST_CAP]}  # fmt: skip


def _after_withdrawal(conflicts: list[tuple[Any, ...]]) -> dict[str, Any]:
    per: dict[str, dict[str, Any]] = {}
    for key_id, detail, at in conflicts:
        state = detail.rsplit(" while ", 1)[-1]
        if state not in WITHDRAWN:
            continue
        item = per.setdefault(key_id, {"key_id": key_id, "state": state, "first_at": at, "last_at": at, "reports": 0})
        item["last_at"], item["reports"] = at, item["reports"] + 1
    items = sorted(per.values(), key=lambda i: (i["first_at"], i["key_id"]))
    return {"keys": len(items), "by_state": dict(sorted(Counter(i["state"] for i in items).items())),
            "items": items[:LIST_CAP]}  # fmt: skip


def _expired_in_use(keys: list[dict[str, Any]]) -> dict[str, Any]:
    """Keys used after their expiry date (the last reported use is later than ``expires_at``)."""
    used = [k for k in keys if k["expires_at"] and k["last_used_at"] and k["last_used_at"] > k["expires_at"]]
    items = [{"key_id": k["key_id"], "owner": k["owner"], "expired_at": k["expires_at"],
              "last_used_at": k["last_used_at"]} for k in used]  # fmt: skip
    items.sort(key=lambda i: (i["expired_at"], i["key_id"]))
    return {"keys": len(items), "items": items[:LIST_CAP]}


def _propagation(db: sqlite3.Connection, chosen: set[str]) -> dict[str, Any]:
    rows = [
        r for r in db.execute("SELECT key_id, complete_seconds, expected, confirmed FROM revocations") if r[0] in chosen
    ]
    done = [float(r[1]) for r in rows if r[1] is not None]
    pending = sum(int(r[2]) - int(r[3]) for r in rows if r[1] is None)
    return {"withdrawn_keys": len(rows), "fully_confirmed": len(done), "unconfirmed_pairs": max(0, pending),
            "confirmation_seconds": _stats(done)}  # fmt: skip


def _incidents(db: sqlite3.Connection, period: Period) -> dict[str, Any]:
    start, end = ts(iso(period.start.timestamp())), ts(iso(period.end.timestamp()))
    rows = db.execute(
        "SELECT id, severity, status, opened_at, mitigated_at FROM incidents WHERE opened_at >= ? AND opened_at < ? "
        "ORDER BY opened_at, id",
        (start, end),
    ).fetchall()
    mitigate = [max(0.0, epoch(m) - epoch(o)) for _, _, _, o, m in rows if m is not None]  # type: ignore[operator]
    return {"opened": len(rows), "by_severity": dict(sorted(Counter(r[1] for r in rows).items())),
            "by_status": dict(sorted(Counter(r[2] for r in rows).items())), "mitigate_seconds": _stats(mitigate),
            "items": [{"id": r[0], "severity": r[1], "status": r[2], "opened_at": r[3], "mitigated_at": r[4]}
                      for r in rows[:LIST_CAP]]}  # fmt: skip
