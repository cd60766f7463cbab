"""The "Posture" row of the compliance dashboard: the posture score, why it moved, and the security KPIs.

Every figure is a recording rule of the ``keylife.posture`` group (alert_rules/posture.py), except the
per-owner scores, which keylife serves capped (worst owners first). docs/posture.md has the formula.
"""

from __future__ import annotations

from dashboards.common import JOB, PanelBuilder, prom
from dashboards.panels import bargauge_panel, stat_panel, steps, timeseries_panel

SCORE = steps(("red", None), ("orange", 60), ("yellow", 80), ("green", 95))
RATIO = steps(("red", None), ("orange", 0.8), ("yellow", 0.95), ("green", 1))


def posture() -> list[PanelBuilder]:
    """The score and its components, then the KPIs."""
    return [
        stat_panel(
            "Posture score",
            "The security posture score, 0 to 100: the weighted mean of the components beside it (docs/posture.md "
            "has the formula and the weights). Below 95 something is wrong somewhere; the components say what, the "
            "owner scores say whose.",
            prom(f"keylife:posture_score{{{JOB}}}", "score"),
            thresholds=SCORE,
            span=4,
            height=8,
        ),
        timeseries_panel(
            "Posture components",
            "Each component from 0 (every judged key or node fails) to 1 (none does): policy_compliance, "
            "rotation_on_time, no_use_after_revocation, propagation_confirmed, journal_verified, "
            "forwarders_current. A step down here is why the score moved; a component missing is not measured "
            "in this process (e.g. no forwarder configured) and its weight went to the others.",
            prom(f"keylife:posture_component{{{JOB}}}", "{{component}}"),
            unit="percentunit",
            span=12,
        ),
        bargauge_panel(
            "Points lost by component",
            "How many of the 100 points each component costs now: 100 x weight x (1 - component). The longest bar "
            "is the first thing to fix.",
            prom(
                f"100 * keylife:posture_component_weight{{{JOB}}} * (1 - keylife:posture_component{{{JOB}}})",
                "{{component}}",
            ),
            span=8,
        ),
        bargauge_panel(
            "Owners with the lowest score",
            "The ten key owners with the lowest posture score (keylife serves the worst owners up to "
            "exporter.attention_cap; keylife_posture_owners_omitted counts the rest). Ask these owners first.",
            prom(f"bottomk(10, keylife_posture_owner_score{{{JOB}}})", "{{owner}}"),
            span=8,
        ),
        timeseries_panel(
            "Compromise to revocation confirmed on every node",
            "Time from a key's compromise or revocation to the confirmation of the last node expected to refuse "
            "it: mean and p95 over the whole history, and over the last 7 days. Rising values mean nodes take "
            "longer to stop using withdrawn keys; the propagation dashboard names the slow nodes.",
            prom(f"keylife:revocation_confirmation_seconds:mean{{{JOB}}}", "mean"),
            prom(f"keylife:revocation_confirmation_seconds:p95{{{JOB}}}", "p95"),
            prom(f"keylife:revocation_confirmation_seconds:mean7d{{{JOB}}}", "mean (7 d)"),
            prom(f"keylife:revocation_confirmation_seconds:p95_7d{{{JOB}}}", "p95 (7 d)"),
            unit="s",
            span=8,
        ),
        stat_panel(
            "Rotation on time",
            "Share of active keys with a rotation due under the policy that are not past it (1 when none is "
            "judged). The fleet dashboard's rotation bands show what comes due next.",
            prom(f"keylife:rotation_on_time:ratio{{{JOB}}}", "on time"),
            unit="percentunit",
            thresholds=RATIO,
            span=4,
            height=8,
        ),
        stat_panel(
            "Keys within policy",
            "Share of usable keys that break no policy rule (the compliance ratio); the Compliance row above "
            "breaks the rest down by rule.",
            prom(f"keylife:keys_within_policy:ratio{{{JOB}}}", "within policy"),
            unit="percentunit",
            thresholds=RATIO,
            span=4,
            height=8,
        ),
        timeseries_panel(
            "Mean key age by purpose",
            "Mean age (since generation) of the keys not destroyed, per purpose. A line that only rises means "
            "keys of that purpose are not being rotated; compare with the policy's rotation periods.",
            prom(f"keylife:key_age_mean_seconds:by_purpose{{{JOB}}}", "{{purpose}}"),
            unit="s",
            span=12,
        ),
        stat_panel(
            "Incidents open",
            "Incidents open or mitigating, all severities (GET /v1/incidents lists them).",
            prom(f"keylife:incidents_open:sum{{{JOB}}}", "open"),
            thresholds=steps(("green", None), ("orange", 1)),
            span=4,
            height=8,
        ),
        stat_panel(
            "Time to mitigate",
            "Mean and p95 time from an incident's opening to its first step out of open (mitigating, resolved "
            "or closed), over every incident in the registry. No value: no incident was mitigated yet.",
            prom(f"keylife:incident_mitigate_seconds:mean{{{JOB}}}", "mean"),
            prom(f"keylife:incident_mitigate_seconds:p95{{{JOB}}}", "p95"),
            unit="s",
            span=8,
            height=8,
        ),
    ]
