"""keylife / Fleet overview (``keylife-fleet``): the posture of every key at a glance.

The first screen an operator opens: how many keys are usable, compliant, about to expire or in
trouble, which alerts fire, and the short lists of keys that need someone now, each row linking
to the key detail dashboard. Counts come from the uncapped fleet gauges; the per-key tables only
show the capped attention set (``exporter.attention_cap``), which the descriptions say.
"""

from __future__ import annotations

from grafana_foundation_sdk.models import dashboard as dm

from dashboards.common import (
    DAY,
    PanelBuilder,
    dashboard,
    finish,
    prom,
)
from dashboards.panels import (
    ZERO_IS_GOOD,
    bargauge_panel,
    organize,
    stat_panel,
    steps,
    table_panel,
    timeseries_panel,
)

UID = "keylife-fleet"


def posture() -> list[PanelBuilder]:
    """Six numbers that say whether anything needs doing."""
    return [
        stat_panel(
            "Usable keys",
            "Keys in pre-activation, active or suspended state: the keys that can still protect data. "
            "A sudden drop means keys were revoked, destroyed or expired in bulk; check Keys by state "
            "and the lifecycle events on the key detail dashboard.",
            prom('keylife:keys_usable:sum{job="$job"}', "usable"),
        ),
        stat_panel(
            "Compliance ratio",
            "Share of usable keys that break no policy rule (1 = all compliant). Below 100% the "
            "KeylifeKeyNonCompliant alert fires; see Compliance and analytics for the rules broken "
            "and the attention table below for the keys.",
            prom('keylife:fleet_compliance_ratio{job="$job"}', "compliance"),
            unit="percentunit",
            thresholds=steps(("red", None), ("orange", 0.9), ("green", 1)),
        ),
        stat_panel(
            "Keys needing attention",
            "Every key with at least one attention reason (compromised, conflicting use, propagation "
            "pending, rotation overdue, expiring within 30 d, operations high, non-compliant), uncapped. "
            "Work through the Keys needing attention table, most severe first.",
            prom('keylife_keys_attention{job="$job"}', "attention"),
            thresholds=steps(("green", None), ("orange", 1)),
        ),
        stat_panel(
            "Compromised keys",
            "Keys marked compromised and not yet destroyed. Each one must be replaced and destroyed "
            "once the data it protects is re-keyed (KeylifeKeyCompromised). Should be 0.",
            prom('sum(keylife_keys{job="$job", state="compromised"})', "compromised"),
            thresholds=ZERO_IS_GOOD,
        ),
        stat_panel(
            "Expiring within 7 d",
            "Usable keys that expire in the next 7 days (KeylifeKeysExpiringSoon, a ticket). Rotate them "
            "now; the Expiring soon table lists them.",
            prom('sum(keylife_keys_by_expiry_band{job="$job", band="7d"})', "7 d"),
            thresholds=steps(("green", None), ("red", 1)),
        ),
        stat_panel(
            "Expired, still usable",
            "Keys past their expiry that are still active, suspended or pre-activation "
            "(KeylifeKeyExpiredStillUsable). Deactivate or rotate them: nothing should use them.",
            prom('sum(keylife_keys_by_expiry_band{job="$job", band="expired"})', "expired"),
            thresholds=ZERO_IS_GOOD,
        ),
        stat_panel(
            "Firing alerts",
            "keylife alerts firing now, by severity (from Prometheus' ALERTS series). Critical pages, "
            "warning opens a ticket. Open Alertmanager or each alert's runbook for what to do.",
            prom('count by (severity) (ALERTS{alertstate="firing", alertname=~"Keylife.*"})', "{{severity}}"),
            thresholds=steps(("green", None), ("orange", 1)),
            no_value="0",
            span=24,
            graph=False,
        ),
    ]


def inventory() -> list[PanelBuilder]:
    """Where the keys are in their lifecycle and in time."""
    return [
        timeseries_panel(
            "Keys by state",
            "Keys in each lifecycle state (NIST SP 800-57 states plus revoked), stacked. Growth in "
            "compromised or revoked is worth a look at who did it: the audit events on the key detail "
            "dashboard name the actor.",
            prom('sum by (state) (keylife_keys{job="$job"})', "{{state}}"),
            stacked=True,
        ),
        timeseries_panel(
            "Keys by algorithm",
            "Keys by algorithm, stacked. A banned algorithm still in use shows up as non-compliant keys on "
            "the Compliance and analytics dashboard.",
            prom('sum by (algorithm) (keylife_keys{job="$job"})', "{{algorithm}}"),
            stacked=True,
        ),
        bargauge_panel(
            "Expiry bands",
            "Usable keys by time to expiry: expired, within 7 d, 7 to 30 d, 30 to 90 d, later, never. "
            "Keys in the first two bands need rotation now; plan the 30 d band.",
            prom('sum by (band) (keylife_keys_by_expiry_band{job="$job"})', "{{band}}"),
        ),
        bargauge_panel(
            "Rotation bands",
            "Active keys by time until rotation is due under the policy: overdue, within 7 d, 7 to 30 d, "
            "30 to 90 d, later, none (no rotation period). Overdue keys raise KeylifeKeyRotationOverdue.",
            prom('sum by (band) (keylife_keys_by_rotation_band{job="$job"})', "{{band}}"),
        ),
    ]


def key_tables() -> list[PanelBuilder]:
    """The keys themselves; a click on a row opens the key detail dashboard."""
    return [
        table_panel(
            "Expiring soon",
            "Keys that expired or expire within 30 days, soonest first, with time left (negative: "
            "already expired). Click a row for the key's detail. Only keys in the attention set have "
            "per-key series (cap: exporter.attention_cap); the Expiry bands count all.",
            prom(
                f'sort((keylife_key_expiry_timestamp_seconds{{job="$job"}} - time()) < {30 * DAY})',
                table_format=True,
            ),
            transformations=[organize(rename={"Value": "expires in"})],
            links_to_key=True,
            unit="dtdurations",
            span=12,
        ),
        table_panel(
            "Keys needing attention",
            "One row per key and reason, with the key's state, algorithm and purpose. Reasons: "
            "compromised, conflicting_use, propagation_pending, rotation_overdue, expiring, "
            "operations_high, non_compliant. Click a row for the key's detail and audit trail. "
            "Capped at exporter.attention_cap keys, most severe first.",
            prom(
                "max by (key_id, reason, state, algorithm, purpose) ("
                'keylife_key_attention{job="$job"} * on (job, instance, key_id) '
                'group_left (state, algorithm, purpose) keylife_key_info{job="$job"})',
                table_format=True,
            ),
            transformations=[organize(exclude=("Value",))],
            links_to_key=True,
            span=12,
        ),
    ]


def build() -> dm.Dashboard:
    """The fleet overview, rows top to bottom: posture, inventory, keys."""
    builder = dashboard(
        UID,
        "Posture of all keys: usable, compliant, expiring, compromised, alerts, and the keys that need attention.",
    )
    return finish(builder, [("Posture", posture()), ("Inventory", inventory()), ("Keys", key_tables())])
