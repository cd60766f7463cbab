"""The HTML report's chart data: plain series computed with the figures (so they are digested too).

Twelve equal steps across the period; at each step's end: how many keys are in each state, and the
share of usable keys whose rotation is not yet due. The age distribution is taken at the period's
end; the owners with most broken rules come from the same judgement as the rules section.
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from keylife.response.reports.model import Period, Rules

STEPS = 12
STATES = ("pre_activation", "active", "suspended", "deactivated", "revoked", "compromised", "destroyed")


def charts(keys: list[dict[str, Any]], transitions: list[tuple[Any, ...]], rules: Rules, period: Period,
           by_owner: Counter[str]) -> dict[str, Any]:  # fmt: skip
    from keylife.response.reports.model import AGE_BUCKETS, TOP_OWNERS, USABLE, epoch, iso

    start, end = period.start.timestamp(), period.end.timestamp()
    points = [start + (end - start) * (i + 1) / STEPS for i in range(STEPS)]
    due = {k["key_id"]: rules.rotation_due(k) for k in keys}
    state: dict[str, str] = {}
    states_rows, compliance = [], []
    moves = iter(transitions)
    pending = next(moves, None)
    for point in points:
        while pending is not None and epoch(pending[3]) < point:  # type: ignore[operator]
            state[pending[0]] = pending[2]
            pending = next(moves, None)
        counts = Counter(state.values())
        states_rows.append({"at": iso(point), **{s: counts.get(s, 0) for s in STATES}})
        usable = [k for k, s in state.items() if s == "active"]
        on_time = sum(1 for k in usable if due.get(k) is None or due[k] > point)  # type: ignore[operator]
        share = None if not usable else round(on_time / len(usable), 4)
        compliance.append({"at": iso(point), "active": len(usable), "on_time": on_time, "share": share})
    ages: Counter[str] = Counter()
    for key in keys:
        created = epoch(key["created_at"])
        if key["state"] not in USABLE or created is None:
            continue
        days = max(0.0, end - created) / 86400
        label = next((name for name, limit in AGE_BUCKETS if days <= limit), ">3y")
        ages[label] += 1
    labels = [name for name, _ in AGE_BUCKETS] + [">3y"]
    top = sorted(by_owner.items(), key=lambda kv: (-kv[1], kv[0]))[:TOP_OWNERS]
    return {
        "states_over_time": states_rows,
        "age_distribution": [{"bucket": b, "keys": ages.get(b, 0)} for b in labels],
        "rotation_compliance": compliance,
        "top_owners_by_violations": [{"owner": o, "violations": n} for o, n in top],
    }
