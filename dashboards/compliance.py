"""keylife / Compliance and analytics (``keylife-compliance``): trends, not incidents.

For the periodic review (security officer, auditor): how compliance developed, which policy rules
keys break, how keys are used against their own baseline (the anomaly alert's view), how the
lifecycle moves (transitions, violations) and how old the keys are. Most series here come from
the recording rules of alert_rules/CONTRACT.md, the same numbers the alerts evaluate.
"""

from __future__ import annotations

from grafana_foundation_sdk.models import dashboard as dm

from dashboards.common import (
    JOB,
    PanelBuilder,
    dashboard,
    finish,
    prom,
)
from dashboards.panels import (
    heatmap_panel,
    organize,
    stat_panel,
    steps,
    table_panel,
    timeseries_panel,
)
from dashboards.posture import posture

UID = "keylife-compliance"
USAGE = "{{operation}} {{algorithm}} {{purpose}}"
DASHED = dm.DynamicConfigValue(id_val="custom.lineStyle", value={"fill": "dash", "dash": [10, 10]})


def compliance() -> list[PanelBuilder]:
    """Policy compliance over time."""
    return [
        timeseries_panel(
            "Compliance ratio",
            "Share of usable keys that break no policy rule, over time. Steps down when a policy change or "
            "time (maximum age, rotation due) makes keys non-compliant; it recovers as keys are rotated.",
            prom(f"keylife:fleet_compliance_ratio{{{JOB}}}", "compliance"),
            unit="percentunit",
            thresholds=steps(("red", None), ("green", 1)),
            span=10,
        ),
        timeseries_panel(
            "Non-compliant keys by rule",
            "Usable keys breaking each policy rule: banned_algorithm, min_key_size, operations_limit, "
            "max_age, rotation_overdue. A key breaking two rules counts in both. Rotate the keys to a "
            "compliant algorithm and size; the fleet dashboard's attention table lists them.",
            prom(f"keylife:keys_noncompliant:sum{{{JOB}}}", "{{rule}}"),
            span=10,
        ),
        stat_panel(
            "Attention cap: keys omitted",
            "Keys needing attention that the per-key series leave out because of exporter.attention_cap "
            "(KeylifeAttentionCapReached, info). Above 0, the per-key tables and the key detail dashboard "
            "miss some keys; the fleet-wide counts stay complete. Fix the backlog or raise the cap.",
            prom(f"keylife_keys_attention_omitted{{{JOB}}}", "omitted"),
            thresholds=steps(("green", None), ("blue", 1)),
            span=4,
            height=8,
        ),
    ]


def usage() -> list[PanelBuilder]:
    """Cryptographic operations reported by nodes, against their own 1-day baseline."""
    return [
        timeseries_panel(
            "Usage rate vs 1-day baseline",
            "Operations per second by operation, algorithm and purpose (5 min rate, solid) and each one's "
            "average over the last day (dashed). A solid line far above its dashed one is what "
            "KeylifeKeyUsageAnomaly reports: bulk decryption or signing nobody planned deserves a look at "
            "the usage events of the keys involved.",
            prom(f"keylife:key_usage_operations:rate5m{{{JOB}}}", USAGE),
            prom(f"keylife:key_usage_operations:rate5m_avg1d{{{JOB}}}", f"baseline {USAGE}"),
            unit="ops",
        ).override_by_query("B", [DASHED]),
        timeseries_panel(
            "Usage relative to baseline",
            "The 5 min rate divided by its 1-day average, per operation, algorithm and purpose: 1 is a usual "
            "day, 3 three times the usual. Spikes here with little absolute volume are noise; large ones "
            "with volume are the anomalies to explain.",
            prom(
                f"keylife:key_usage_operations:rate5m{{{JOB}}} / keylife:key_usage_operations:rate5m_avg1d{{{JOB}}}",
                USAGE,
            ),
            unit="x",
        ),
        timeseries_panel(
            "Usage anomalies (last 24 h) by kind",
            "Flags of the per-key detector (docs/anomalies.md) in the last 24 hours, per kind: spike, drop, "
            "new_node, new_operation, unusual_hour. Each is judged against the key's own seasonal baseline and "
            "journaled as an anomaly record; KeylifeKeyUsageAnomalous pages on them.",
            prom(f"keylife_anomalies_recent{{{JOB}}}", "{{kind}}"),
            stacked=True,
        ),
        table_panel(
            "Keys with usage anomalies",
            "One row per key and kind flagged in the last 24 hours, with how many flags. Click a row for the "
            "key's detail and audit trail (the anomaly records name the baseline each flag was judged against). "
            "Capped at exporter.attention_cap pairs, the most recently flagged first.",
            prom(f"keylife_key_anomaly{{{JOB}}} > 0", table_format=True),
            transformations=[organize(rename={"Value": "flags (24 h)"})],
            links_to_key=True,
            span=12,
        ),
    ]


def lifecycle() -> list[PanelBuilder]:
    """How keys move through their lifecycle, and what breaks it."""
    return [
        timeseries_panel(
            "Transitions by type",
            "Lifecycle state changes per hour, by the event that caused them (activated, rotated, revoked, "
            "compromised, destroyed, …). Compare with the key management plan: rotations should follow the "
            "policy's periods, revocations and compromises are each worth a record.",
            prom(f"sum by (type) (rate(keylife_key_transitions_total{{{JOB}}}[$__rate_interval])) * 3600", "{{type}}"),
            unit="suffix:/h",
            stacked=True,
            bars=True,
        ),
        timeseries_panel(
            "Violations by kind",
            "Lifecycle violations found in node observations, per hour: conflicting_use (a key used in a "
            "state that forbids it), skipped_transition, unknown_key (usage of a key never generated), "
            "policy_breach. Each one is a node or a process out of line: the audit events name the node.",
            prom(f"sum by (kind) (rate(keylife_key_violations_total{{{JOB}}}[$__rate_interval])) * 3600", "{{kind}}"),
            unit="suffix:/h",
            stacked=True,
            bars=True,
            thresholds=steps(("green", None), ("red", 1)),
        ),
    ]


def age() -> list[PanelBuilder]:
    """How old the keys are."""
    return [
        heatmap_panel(
            "Key age distribution",
            "Keys not destroyed by age band (1 d, 7 d, 30 d, 90 d, 180 d, 1 y, 2 y, 5 y, older), over time: "
            "darker cells hold more keys. Keys drifting into the upper bands and past the policy's maximum "
            "age are the next rotations (max_age rule).",
            # Gauge buckets (age_le, not le: promtool keeps le for histograms); the heatmap reads le.
            prom(
                f'sum by (le) (label_replace(keylife_keys_by_age{{{JOB}}}, "le", "$1", "age_le", "(.*)"))',
                "{{le}}",
                heatmap_format=True,
            ),
            y_unit="s",
            span=24,
        ),
    ]


def build() -> dm.Dashboard:
    """The compliance and analytics dashboard: compliance, usage, lifecycle, key age."""
    builder = dashboard(
        UID,
        "Compliance trends, non-compliance by rule, usage against its baseline, transitions, violations, key age, "
        "the posture score and the security KPIs.",
    )
    return finish(
        builder,
        [
            ("Compliance", compliance()),
            ("Usage", usage()),
            ("Lifecycle", lifecycle()),
            ("Key age", age()),
            ("Posture", posture()),
        ],
    )
