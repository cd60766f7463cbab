"""The fleet index: what the exporter knows about every key, kept so a scrape costs nothing per
healthy key.

It follows the registry through its committed ``ProjectionDelta``s (never re-reading the
tables) and keeps, besides a small record per key, only what scrapes need:

* counts per (state, algorithm, purpose), and counters (transitions, usage, violations);
* sorted deadlines (expiry, rotation due, maximum age) and creation times, so time bands,
  overdue counts and the age histogram are a few binary searches however many keys there are;
* the sets of keys that need attention (static policy breaches, conflicting use, compromised,
  unconfirmed by a node), whose size is the size of the problem, not of the fleet.

``snapshot(now)`` turns this into plain data under the lock; collectors format it outside.
"""

from __future__ import annotations

import bisect
import heapq
import operator
import sqlite3
import threading
from collections import Counter
from contextlib import closing
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from sortedcontainers import SortedList

from exporter.policy import RULES, KeyFacts, Policy
from exporter.snapshot import AttentionKey, PostureCounts, Snapshot
from keylife.domain.lifecycle import KeyState
from keylife.registry.projection import ProjectionDelta
from keylife.registry.queries import open_readonly

DAY = 86400.0
USABLE = frozenset({KeyState.PRE_ACTIVATION.value, KeyState.ACTIVE.value, KeyState.SUSPENDED.value})
BAND_EDGES = (("7d", 7 * DAY), ("30d", 30 * DAY), ("90d", 90 * DAY))
AGE_BUCKETS = tuple(d * DAY for d in (1, 7, 30, 90, 180, 365, 730, 1825))
LAG_BUCKETS = (1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0, 4 * 3600.0, 86400.0)
DEFAULT_OPERATIONS = ("encrypt", "decrypt", "sign", "verify")
ATTENTION_HORIZON = 30 * DAY  # default of exporter.expiry_horizon_days: per-key expiry series this far ahead


_SHAPE = operator.itemgetter(
    "state", "algorithm", "key_size", "curve", "purpose", "created_at", "activated_at", "expires_at",
    "state_changed_at",
)  # fmt: skip
# Keys taken out of service whose use is a conflicting_use: the posture's "no use after revocation" counts them.
WITHDRAWN = frozenset({KeyState.REVOKED.value, KeyState.COMPROMISED.value, KeyState.DESTROYED.value})
UNOWNED = "(unowned)"  # the owner label of keys registered without one


def epoch(value: str | None) -> float | None:
    return None if value is None else datetime.fromisoformat(value).timestamp()


@dataclass(slots=True)
class _Key:
    state: str | None
    algorithm: str
    purpose: str
    created: float
    changed: float | None
    expires: float | None
    rotation_due: float | None
    max_age: float | None
    static: frozenset[str]
    shape: tuple[Any, ...] = ()  # the record fields everything above derives from
    ops_limit: int | None = None
    ops: int = 0  # operations reported so far (usage_total)
    owner: str = UNOWNED

    @property
    def labels(self) -> tuple[str, str, str]:
        return (self.state or "unknown", self.algorithm, self.purpose)


class FleetIndex:
    def __init__(self, policy: Policy, registry_path: Path | None = None) -> None:
        self.policy = policy
        self.registry_path = registry_path
        self.lock = threading.Lock()
        self._keys: dict[str, _Key] = {}
        self._counts: Counter[tuple[str, str, str]] = Counter()
        self._pairs: set[tuple[str, str]] = set()
        self._expiry: SortedList = SortedList()  # (expires, key_id), usable keys
        self._never_expire = 0
        self._rotation: SortedList = SortedList()  # (rotation_due, key_id), active keys
        self._max_age: SortedList = SortedList()  # (deadline, key_id), usable keys
        self._created: SortedList = SortedList()  # creation times of keys not destroyed
        self._created_sum = 0.0
        self._usable = 0
        self._static: dict[str, set[str]] = {}
        self._ops_high: set[str] = set()  # usable keys past OPS_HIGH_FRACTION of their operations limit
        self._compromised: set[str] = set()
        self._conflicting: set[str] = set()
        self._pending: set[tuple[str, str]] = set()  # (key_id, node) not yet confirmed
        self._pending_by_node: Counter[str] = Counter()
        self._node_seen: dict[str, float] = {}
        self.transitions: Counter[str] = Counter()
        self.violations: Counter[str] = Counter()
        self.usage: Counter[tuple[str, str, str]] = Counter()
        self._operations: set[str] = set(DEFAULT_OPERATIONS)
        self._lag_counts = [0] * (len(LAG_BUCKETS) + 1)
        self._lag_sum = 0.0
        # Posture (exporter/posture.py): per-owner populations, and key ages by purpose (for the mean-age KPI).
        self._owners: dict[str, list[int]] = {}  # owner -> [keys, usable, rotating, withdrawn]
        self._withdrawn = 0
        self._owner_names: dict[str, str] = {}
        self._age_by_purpose: dict[str, list[float]] = {}  # purpose -> [keys not destroyed, sum of created]

    # ----- keeping up ---------------------------------------------------------------------
    @classmethod
    def from_registry(cls, policy: Policy, registry_path: Path) -> FleetIndex:
        """An index loaded from the registry's committed tables (empty when there is no file yet)."""
        index = cls(policy, registry_path)
        if registry_path.exists():
            with closing(open_readonly(registry_path)) as db:
                index.load(db)
        return index

    def load(self, db: sqlite3.Connection) -> None:
        """Start from the registry's committed tables (one pass; later changes come as deltas)."""
        from keylife.registry.queries import KEY_COLUMNS

        with self.lock:
            self._bulk = True  # sorted structures are built once at the end: 5x faster at 1M keys
            try:
                for row in db.execute(f"SELECT {', '.join(KEY_COLUMNS)} FROM keys"):
                    self._upsert(dict(zip(KEY_COLUMNS, row, strict=True)))
            finally:
                self._end_bulk()
            for kind, n in db.execute("SELECT event_type, count(*) FROM transitions GROUP BY 1"):
                self.transitions[kind] += n
            for kind, n in db.execute("SELECT kind, count(*) FROM violations GROUP BY 1"):
                self.violations[kind] += n
            sql = (  # high and low halves summed apart: sum() over many keys' counts may pass 2^63
                "SELECT u.operation, coalesce(k.algorithm, 'unknown'), coalesce(k.purpose, 'unknown'), "
                "sum(u.count >> 32), sum(u.count & 4294967295) FROM usage u JOIN keys k USING (key_id) GROUP BY 1, 2, 3"
            )
            for op, algorithm, purpose, high, low in db.execute(sql):
                self.usage[(op, algorithm, purpose)] += (high << 32) + low
                self._operations.add(op)
            sql = (  # a use after destruction still counts; uses before it were closed by destroying the key
                "SELECT DISTINCT v.key_id FROM violations v JOIN keys k USING (key_id) "
                "WHERE v.kind = 'conflicting_use' AND (k.state != 'destroyed' OR v.seq > coalesce("
                "(SELECT max(t.seq) FROM transitions t WHERE t.key_id = v.key_id AND t.to_state = 'destroyed'), -1))"
            )
            for (key_id,) in db.execute(sql):
                self._conflicting.add(key_id)
            sql = (
                "SELECT nk.key_id, nk.node FROM node_keys nk JOIN keys k USING (key_id) "
                "WHERE k.state IS NOT NULL AND nk.applied_state != k.state"
            )
            for key_id, node in db.execute(sql):
                self._pend(key_id, node)
            for node, seen in db.execute("SELECT node, last_seen_at FROM nodes"):
                self._node_seen[node] = epoch(seen) or 0.0

    def apply(self, delta: ProjectionDelta) -> None:
        """Follow one committed registry transaction (called on the writer thread)."""
        with self.lock:
            changed_state: list[str] = []
            for record in delta.keys:
                old = self._keys.get(record["key_id"])
                self._upsert(record)
                if old is not None and old.state != record["state"]:
                    changed_state.append(record["key_id"])
            for _key, _seq, kind, *_rest in delta.transitions:
                self.transitions[kind] += 1
            for key_id, _seq, kind, *_rest in delta.violations:
                self.violations[kind] += 1
                if kind == "conflicting_use":
                    self._conflicting.add(key_id)
            for key_id, op, n in delta.usage:
                key = self._keys.get(key_id)
                labels = (op, key.algorithm, key.purpose) if key else (op, "unknown", "unknown")
                self.usage[labels] += n
                self._operations.add(op)
            for node, seen, _n in delta.nodes:
                at = epoch(seen) or 0.0
                self._node_seen[node] = max(self._node_seen.get(node, 0.0), at)
            if changed_state:
                self._repend(changed_state)
            for key_id, node, state, at, _seq in delta.node_keys:
                self._confirm(key_id, node, state, epoch(at))

    _bulk = False

    def _end_bulk(self) -> None:
        self._bulk = False
        for name in ("_expiry", "_rotation", "_max_age", "_created"):
            pending = getattr(self, name)
            if isinstance(pending, list):
                setattr(self, name, SortedList(pending))

    def _sorted_add(self, name: str, item: Any) -> None:
        target = getattr(self, name)
        if self._bulk and not isinstance(target, list):
            target = list(target)
            setattr(self, name, target)
        if isinstance(target, list):
            target.append(item)
        else:
            target.add(item)

    def _facts(self, record: dict[str, Any]) -> KeyFacts:
        return KeyFacts(
            key_id=record["key_id"],
            state=record["state"],
            algorithm=record["algorithm"],
            key_size=record["key_size"],
            curve=record["curve"],
            purpose=record["purpose"],
            created_at=epoch(record["created_at"]),
            activated_at=epoch(record["activated_at"]),
            expires_at=epoch(record["expires_at"]),
            usage_total=record["usage_total"] or 0,
        )

    def _upsert(self, record: dict[str, Any]) -> None:
        key_id = record["key_id"]
        shape = _SHAPE(record)
        owner = record["owner"] or UNOWNED
        old = self._keys.get(key_id)
        if old is not None and old.shape == shape and old.owner == owner:
            self._usage_only(key_id, old, record["usage_total"] or 0)
            return
        if old is not None:
            del self._keys[key_id]
            self._drop(key_id, old)
        facts = self._facts(record)
        usable = facts.state in USABLE
        key = _Key(
            state=facts.state,
            algorithm=(facts.algorithm or "unknown").lower(),
            purpose=(facts.purpose or "unknown").lower(),
            created=facts.created_at or 0.0,
            changed=epoch(record["state_changed_at"]),
            expires=facts.expires_at,
            rotation_due=self.policy.rotation_due(facts) if facts.state == KeyState.ACTIVE.value else None,
            max_age=self.policy.max_age_deadline(facts) if usable else None,
            static=self.policy.static_violations(facts) if usable else frozenset(),
            shape=shape,
            ops_limit=self.policy.operations_limit(facts),
            ops=facts.usage_total,
            owner=self._owner_names.setdefault(owner, owner),  # one string per owner, not one per key
        )
        self._keys[key_id] = key
        self._add(key_id, key)
        self._track_ops(key_id, key)
        if key.state == KeyState.DESTROYED.value:  # destroying the key closes its use-after-revocation incident
            self._conflicting.discard(key_id)

    def _track_ops(self, key_id: str, key: _Key) -> None:
        """Keys nearing their operations limit get per-key series, so a rule can extrapolate them."""
        if key.ops_limit is not None and key.state in USABLE and key.ops >= key.ops_limit * OPS_HIGH_FRACTION:
            self._ops_high.add(key_id)
        else:
            self._ops_high.discard(key_id)

    def _usage_only(self, key_id: str, key: _Key, usage_total: int) -> None:
        """The hot path (a key only gained usage): only the operations limit can change."""
        key.ops = usage_total
        if key.ops_limit is None or key.state not in USABLE:
            return
        self._track_ops(key_id, key)
        over = usage_total >= key.ops_limit
        if over != ("operations_limit" in key.static):
            key.static = key.static | {"operations_limit"} if over else key.static - {"operations_limit"}
            members = self._static.setdefault("operations_limit", set())
            (members.add if over else members.discard)(key_id)

    def _add(self, key_id: str, key: _Key) -> None:
        self._counts[key.labels] += 1
        self._count_owner(key, 1)
        self._pairs.add((key.algorithm, key.purpose))
        if key.state in USABLE:
            self._usable += 1
            if key.expires is None:
                self._never_expire += 1
            else:
                self._sorted_add("_expiry", (key.expires, key_id))
            if key.max_age is not None:
                self._sorted_add("_max_age", (key.max_age, key_id))
            for rule in key.static:
                self._static.setdefault(rule, set()).add(key_id)
        if key.rotation_due is not None:
            self._sorted_add("_rotation", (key.rotation_due, key_id))
        if key.state != KeyState.DESTROYED.value:
            self._sorted_add("_created", key.created)
            self._created_sum += key.created
        if key.state == KeyState.COMPROMISED.value:
            self._compromised.add(key_id)

    def _drop(self, key_id: str, key: _Key) -> None:
        self._counts[key.labels] -= 1
        self._count_owner(key, -1)
        if key.state in USABLE:
            self._usable -= 1
            if key.expires is None:
                self._never_expire -= 1
            else:
                self._expiry.discard((key.expires, key_id))
            if key.max_age is not None:
                self._max_age.discard((key.max_age, key_id))
            for rule in key.static:
                self._static[rule].discard(key_id)
        if key.rotation_due is not None:
            self._rotation.discard((key.rotation_due, key_id))
        if key.state != KeyState.DESTROYED.value:
            self._created.discard(key.created)
            self._created_sum -= key.created
        self._compromised.discard(key_id)
        self._ops_high.discard(key_id)

    def _count_owner(self, key: _Key, step: int) -> None:
        """Keep the per-owner and per-purpose populations the posture score and KPIs divide by."""
        withdrawn = key.state in WITHDRAWN
        self._withdrawn += step * withdrawn
        counts = self._owners.setdefault(key.owner, [0, 0, 0, 0])
        counts[0] += step
        counts[1] += step * (key.state in USABLE)
        counts[2] += step * (key.rotation_due is not None)
        counts[3] += step * withdrawn
        if counts[0] == 0:
            del self._owners[key.owner]
        if key.state != KeyState.DESTROYED.value:
            ages = self._age_by_purpose.setdefault(key.purpose, [0, 0.0])
            ages[0] += step
            ages[1] += step * key.created

    def _pend(self, key_id: str, node: str) -> None:
        if (key_id, node) not in self._pending:
            self._pending.add((key_id, node))
            self._pending_by_node[node] += 1

    def _unpend(self, key_id: str, node: str) -> None:
        if (key_id, node) in self._pending:
            self._pending.discard((key_id, node))
            self._pending_by_node[node] -= 1

    def _repend(self, key_ids: list[str]) -> None:
        """A key changed state: every node that holds it must confirm the new state."""
        if self.registry_path is None:
            return
        with closing(open_readonly(self.registry_path)) as db:
            for start in range(0, len(key_ids), 500):
                chunk = key_ids[start : start + 500]
                sql = (
                    f"SELECT key_id, node, applied_state FROM node_keys WHERE key_id IN ({', '.join('?' * len(chunk))})"
                )
                for key_id, node, applied in db.execute(sql, chunk):
                    if applied == self._keys[key_id].state:
                        self._unpend(key_id, node)
                    else:
                        self._pend(key_id, node)

    def _confirm(self, key_id: str, node: str, state: str, at: float | None) -> None:
        key = self._keys.get(key_id)
        if key is None or key.state != state:
            self._pend(key_id, node)
            return
        if at is not None and key.changed is not None:  # a node confirms each change once
            lag = max(0.0, at - key.changed)
            self._lag_counts[bisect.bisect_left(LAG_BUCKETS, lag)] += 1
            self._lag_sum += lag
        self._unpend(key_id, node)

    # ----- scraping -----------------------------------------------------------------------
    def owner_of(self, key_id: str) -> str:
        """A key's owner label (one dict read: safe without the lock, and a scrape needs no more)."""
        key = self._keys.get(key_id)
        return key.owner if key is not None else UNOWNED

    def snapshot(self, now: float, attention_cap: int, expiry_horizon: float = ATTENTION_HORIZON) -> Snapshot:
        """The picture at ``now``: keys expiring within ``expiry_horizon`` seconds need attention,
        and at most ``attention_cap`` of the keys needing attention get per-key series."""
        with self.lock:
            return self._snapshot(now, attention_cap, expiry_horizon)

    def _snapshot(self, now: float, cap: int, horizon: float) -> Snapshot:
        states = [s.value for s in KeyState]
        if any(labels[0] == "unknown" for labels in self._counts):
            states.append("unknown")
        pairs = sorted(self._pairs)
        keys = {(state, a, p): self._counts.get((state, a, p), 0) for a, p in pairs for state in states}
        expiry = self._bands(self._expiry, now, "expired") | {"never": self._never_expire}
        rotation = self._bands(self._rotation, now, "overdue") | {"none": self._counts_active() - len(self._rotation)}
        overdue_rotation = self._before(self._rotation, now)
        too_old = self._before(self._max_age, now)
        noncompliant: dict[str, set[str]] = {rule: set(ids) for rule, ids in self._static.items()}
        noncompliant["rotation_overdue"] = set(overdue_rotation)
        noncompliant["max_age"] = set(too_old)
        for rule in RULES:
            noncompliant.setdefault(rule, set())
        bad = set().union(*noncompliant.values()) if noncompliant else set()
        ratio = 1.0 if self._usable == 0 else 1.0 - len(bad) / self._usable  # every set holds usable keys only
        attention = self._attention(now, noncompliant, cap, horizon)
        ages = [self._created_since(now - bound) for bound in AGE_BUCKETS]
        usage = {(op, a, p): self.usage.get((op, a, p), 0) for op in sorted(self._operations) for a, p in pairs} | dict(
            self.usage
        )
        return Snapshot(
            taken_at=now,
            keys=keys,
            expiry_bands=expiry,
            rotation_bands=rotation,
            age_buckets=list(zip(AGE_BUCKETS, ages, strict=True)),
            age_count=len(self._created),
            age_sum=len(self._created) * now - self._created_sum,
            usage=usage,
            transitions=dict(self.transitions),
            violations=dict(self.violations),
            noncompliant={rule: len(ids) for rule, ids in noncompliant.items()},
            compliance_ratio=ratio,
            attention=attention[0],
            attention_total=attention[1],
            node_last_seen=dict(self._node_seen),
            node_unconfirmed={node: self._pending_by_node.get(node, 0) for node in self._node_seen},
            propagation_pending=len({key_id for key_id, _node in self._pending}),
            lag_buckets=list(zip(LAG_BUCKETS, _cumulative(self._lag_counts), strict=False)),
            lag_count=sum(self._lag_counts),
            lag_sum=self._lag_sum,
            age_by_purpose={p: (int(n), n * now - s) for p, (n, s) in sorted(self._age_by_purpose.items()) if n},
            posture=self._posture_counts(bad, set(overdue_rotation)),
        )

    def _posture_counts(self, bad: set[str], overdue: set[str]) -> PostureCounts:
        """The counts the posture score divides: fleet-wide, and per owner (cost: the problem sets)."""
        owners = {owner: [usable, 0, rotating, 0, withdrawn, 0] for owner, (_n, usable, rotating, withdrawn) in
                  self._owners.items()}  # fmt: skip
        outside = used_after = 0
        for column, ids in ((1, bad), (3, overdue), (5, self._conflicting)):
            for key_id in ids:
                key = self._keys.get(key_id)
                if key is None:
                    continue
                owners[key.owner][column] += 1
                if column == 5:
                    used_after += 1
                    if key.state not in WITHDRAWN:  # the denominator holds every key with a use after withdrawal
                        outside += 1
                        owners[key.owner][4] += 1
        fleet = PostureCounts.Group(self._usable, len(bad), len(self._rotation), len(overdue),
                                    self._withdrawn + outside, used_after)  # fmt: skip
        return PostureCounts(fleet, {owner: PostureCounts.Group(*c) for owner, c in owners.items()})

    def _counts_active(self) -> int:
        return sum(n for (state, _a, _p), n in self._counts.items() if state == KeyState.ACTIVE.value)

    @staticmethod
    def _before(series: SortedList, when: float) -> list[str]:
        return [key_id for _t, key_id in series.irange(maximum=(when, "\uffff"))]

    @staticmethod
    def _bands(series: SortedList, now: float, past: str) -> dict[str, int]:
        out = {past: series.bisect_left((now, ""))}
        previous = out[past]
        for name, width in BAND_EDGES:
            upto = series.bisect_left((now + width, ""))
            out[name] = upto - previous
            previous = upto
        out["later"] = len(series) - previous
        return out

    def _created_since(self, when: float) -> int:
        return len(self._created) - self._created.bisect_left(when)

    def _attention(
        self, now: float, noncompliant: dict[str, set[str]], cap: int, horizon: float
    ) -> tuple[list[AttentionKey], int]:
        reasons: dict[str, set[str]] = {}

        def flag(key_id: str, reason: str) -> None:
            reasons.setdefault(key_id, set()).add(reason)

        for key_id in self._compromised:
            flag(key_id, "compromised")
        for key_id in self._conflicting:
            flag(key_id, "conflicting_use")
        for _t, key_id in self._expiry.irange(maximum=(now + horizon, "\uffff")):
            flag(key_id, "expiring")
        for rule, ids in noncompliant.items():
            for key_id in ids:
                flag(key_id, "rotation_overdue" if rule == "rotation_overdue" else "non_compliant")
        for key_id, _node in self._pending:
            flag(key_id, "propagation_pending")
        for key_id in self._ops_high:
            flag(key_id, "operations_high")
        # Only the cap's worth is kept: a partial selection, not a sort of every flagged key.
        ranked = heapq.nsmallest(cap, reasons.items(), key=lambda item: self._rank(item[0], item[1], now))
        chosen = []
        for key_id, why in ranked:
            key = self._keys.get(key_id)
            if key is None:
                continue
            chosen.append(
                AttentionKey(key_id, tuple(sorted(why)), key.labels[0], key.algorithm, key.purpose,
                             key.expires, key.rotation_due, key.ops if key.ops_limit else None, key.ops_limit)
            )  # fmt: skip
        return chosen, len(reasons)

    def _rank(self, key_id: str, reasons: set[str], now: float) -> tuple[int, float, str]:
        """Where a flagged key stands for the cap (smaller is kept first): its most severe reason in
        ``RANKING``, then that reason's deadline (the soonest expiry or rotation, the oldest unconfirmed
        change, the largest share of the operations limit), then its key id, so the choice is stable."""
        top = min(map(_RANK.__getitem__, reasons))
        key = self._keys.get(key_id)
        if key is None or top < _EXPIRED:
            return top, 0.0, key_id
        if key.expires is not None and key.expires <= now and "expiring" in reasons:
            top = _EXPIRED
        reason = RANKING[top]
        if reason == "expired" or reason == "expiring":
            deadline = key.expires
        elif reason == "rotation_overdue":
            deadline = key.rotation_due
        elif reason == "propagation_pending":
            deadline = key.changed
        elif reason == "operations_high" and key.ops_limit:
            deadline = -key.ops / key.ops_limit
        else:
            deadline = None
        return top, 0.0 if deadline is None else deadline, key_id


# The order in which the attention cap keeps keys, most severe first, as the alerts they feed rank
# them: a key in use after revocation or compromise (KeylifeKeyUsedAfterRevocation, critical), a
# compromised key, an expired key still usable (KeylifeKeyExpiredStillUsable, critical; "expired"
# is a rank, its reason label stays "expiring"), then the warnings that turn critical with time.
RANKING = (
    "conflicting_use",
    "compromised",
    "expired",
    "propagation_pending",
    "rotation_overdue",
    "expiring",
    "operations_high",
    "non_compliant",
)
_RANK = {reason: n for n, reason in enumerate(RANKING)}
_EXPIRED = _RANK["expired"]
# A key past this share of its operations limit (e.g. AES-GCM's 2^32 invocations) gets per-key
# ``keylife_key_operations`` / ``_limit`` series: enough history for predict_linear before the limit.
OPS_HIGH_FRACTION = 0.5


def _cumulative(counts: list[int]) -> list[int]:
    out, running = [], 0
    for n in counts[:-1]:
        running += n
        out.append(running)
    return out
