"""keylife / Key detail (``keylife-key``): one key, chosen with the ``key_id`` variable.

Alerts about a key (``key_id`` label) and the key tables elsewhere link here with
``var-key_id``. Prometheus has per-key series only for keys in the capped attention set, so a
healthy key shows "No data" on the metric panels by design; its audit trail comes from Loki,
which keeps every journal entry with ``key_id`` as structured metadata (never as a label).
"""

from __future__ import annotations

from grafana_foundation_sdk.builders.dashboard import QueryVariable
from grafana_foundation_sdk.models import dashboard as dm

from dashboards.common import (
    DAY,
    PanelBuilder,
    dashboard,
    finish,
    logql,
    prom,
    query_variable,
)
from dashboards.panels import (
    MERGE,
    logs_panel,
    organize,
    stat_panel,
    steps,
    table_panel,
    timeseries_panel,
)

UID = "keylife-key"
KEY = 'job="$job", key_id="$key_id"'
NOT_IN_ATTENTION = " No data: the key needs no attention (or is beyond exporter.attention_cap)."


def key_variable() -> QueryVariable:
    """Keys Prometheus knows (the attention set), and any other id typed in: Loki has them all."""
    return query_variable(
        "key_id",
        "Key",
        'label_values(keylife_key_info{job="$job"}, key_id)',
        "Key to show. The list holds the keys needing attention; type any other key id for its audit trail.",
    )


def summary() -> list[PanelBuilder]:
    """What the key is and why it is here."""
    time_left = steps(("red", None), ("orange", 0), ("yellow", 7 * DAY), ("green", 30 * DAY))
    return [
        table_panel(
            "Key info",
            "The key's lifecycle state, algorithm and purpose as the registry has them now." + NOT_IN_ATTENTION,
            prom(f"keylife_key_info{{{KEY}}}", table_format=True),
            transformations=[organize(exclude=("Value",))],
            span=8,
            height=6,
        ),
        table_panel(
            "Attention reasons",
            "Why the key needs attention: compromised (replace and destroy it), conflicting_use (a node "
            "used it in a state that forbids it: find the node in the audit events), propagation_pending "
            "(a node has not confirmed its state), rotation_overdue, expiring, operations_high, "
            "non_compliant." + NOT_IN_ATTENTION,
            prom(f"keylife_key_attention{{{KEY}}}", table_format=True),
            transformations=[organize(exclude=("Value", "key_id"))],
            span=8,
            height=6,
        ),
        stat_panel(
            "Expires in",
            "Time until the key expires (negative: expired). Red once expired, orange within 7 d, yellow "
            "within 30 d: rotate it before then." + NOT_IN_ATTENTION,
            prom(f"keylife_key_expiry_timestamp_seconds{{{KEY}}} - time()", "expires in"),
            unit="dtdurations",
            thresholds=time_left,
            height=6,
            graph=False,
        ),
        stat_panel(
            "Rotation due in",
            "Time until rotation is due under the policy (negative: overdue, KeylifeKeyRotationOverdue). "
            "Rotate the key (a rotated event names its successor)." + NOT_IN_ATTENTION,
            prom(f"keylife_key_rotation_due_timestamp_seconds{{{KEY}}} - time()", "rotation due in"),
            unit="dtdurations",
            thresholds=time_left,
            height=6,
            graph=False,
        ),
    ]


def operations() -> list[PanelBuilder]:
    """Keys with an operations limit (AES-GCM: 2^32 invocations) once past half of it."""
    ops = f"keylife_key_operations{{{KEY}}}"
    limit = f"keylife_key_operations_limit{{{KEY}}}"
    return [
        timeseries_panel(
            "Operations vs limit",
            "Operations reported for the key, its limit under the policy, and where the last 6 h trend "
            "puts it in 30 d (predict_linear, as KeylifeKeyOperationsLimitApproaching). When the "
            "projection crosses the limit, rotate the key before it gets there. Only keys past half of "
            "their limit have these series.",
            prom(f"max({ops})", "operations"),
            prom(f"max({limit})", "limit"),
            prom(f"max(predict_linear({ops}[6h], {30 * DAY}))", "projected in 30 d"),
            span=16,
        ),
        stat_panel(
            "Time to operations limit",
            "Operations left divided by the current rate (6 h trend): when the key reaches its limit. "
            "Under 30 d the warning fires, under 3 d the critical one. Empty when the key is not in "
            "use or has no limit.",
            prom(f"max(({limit} - {ops}) / (deriv({ops}[6h]) > 0))", "time to limit"),
            unit="dtdurations",
            thresholds=steps(("red", None), ("orange", 3 * DAY), ("green", 30 * DAY)),
            no_value="not growing",
            span=8,
            height=8,
            graph=False,
        ),
    ]


def nodes() -> list[PanelBuilder]:
    """Propagation: per node only, the exporter has no key x node series (their number would explode)."""
    return [
        table_panel(
            "Nodes: unconfirmed keys and last report",
            "Each node's count of keys whose current state it has not confirmed, and the time since its "
            "last event. These are per node, not per key: whether this key waits on a node shows in "
            "Attention reasons (propagation_pending) and in its propagation events below. A silent node "
            "with unconfirmed keys is the usual cause; see Network propagation.",
            prom('max by (node) (keylife_node_unconfirmed_keys{job="$job"})', table_format=True),
            prom('time() - max by (node) (keylife_node_last_report_timestamp_seconds{job="$job"})', table_format=True),
            transformations=[
                MERGE,
                organize(rename={"Value #A": "unconfirmed keys", "Value #B": "since last report"}),
            ],
            span=12,
        ),
        timeseries_panel(
            "Audit events for this key",
            "Journal entries about the key per event type, from Loki (every entry is shipped, including "
            "usage reports and refused commands). A burst of usage_report after revoked is a "
            "KeylifeKeyUsedAfterRevocation case: find the node in the events below.",
            logql(
                'sum by (event_type) (count_over_time({service="keylife"} | key_id="$key_id" [$__interval]))',
                "{{event_type}}",
            ),
            bars=True,
            stacked=True,
        ),
    ]


def audit() -> list[PanelBuilder]:
    """The key's story from the signed journal, as Loki holds it."""
    return [
        logs_panel(
            "Lifecycle timeline",
            "The key's state changes (generated, activated, suspended, rotated, revoked, compromised, "
            "destroyed, …) from the journal via Loki, newest first. Each line is the canonical event; "
            "seq and hash (structured metadata) tie it to the signed journal: keylife verify checks it.",
            logql('{service="keylife", category="lifecycle"} | key_id="$key_id"'),
        ),
        logs_panel(
            "All audit events",
            "Every journal entry that names the key: lifecycle, usage, propagation confirmations, "
            "security events (refused commands, violations), with actor and node in the details. Use it "
            "to answer who did what to the key, and from where.",
            logql('{service="keylife"} | key_id="$key_id"'),
            height=14,
        ),
    ]


def build() -> dm.Dashboard:
    """The key detail dashboard: summary, operations, nodes, audit trail."""
    builder = dashboard(
        UID,
        "One key: state, attention reasons, expiry and rotation, operations against the limit, "
        "node confirmations, and its audit trail from Loki.",
        loki=True,
    ).with_variable(key_variable())
    return finish(
        builder,
        [("Key", summary()), ("Operations", operations()), ("Propagation", nodes()), ("Audit trail", audit())],
    )
