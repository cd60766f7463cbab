"""Recording rules for the posture score and the security KPIs (docs/posture.md).

The score and its components are computed by keylife at each scrape (exporter/posture.py); these rules
keep them per job, and compute the KPIs that are ratios, means or quantiles of what keylife serves:
time from compromise (or revocation) to the last node's confirmation, the rotation on-time rate, mean
key age by purpose, the share of keys within policy, open incidents and their time to mitigate. The
histograms keylife serves for revocations and incidents are read from the registry (the whole
history), so "all time" figures divide them as they are, and the 7-day figures take their increase.
"""

from __future__ import annotations

WEEK = "7d"


def _mean(metric: str, sel: str, window: str | None = None) -> str:
    """sum / count of a histogram; NaN (0/0) while it has no observation, which Grafana shows as no value."""
    if window is None:
        return f"sum by (job) ({metric}_sum{{{sel}}})\n/\nsum by (job) ({metric}_count{{{sel}}})"
    return (
        f"sum by (job) (increase({metric}_sum{{{sel}}}[{window}]))\n/\n"
        f"sum by (job) (increase({metric}_count{{{sel}}}[{window}]))"
    )


def _p95(metric: str, sel: str, window: str | None = None) -> str:
    buckets = f"{metric}_bucket{{{sel}}}" if window is None else f"increase({metric}_bucket{{{sel}}}[{window}])"
    return f"histogram_quantile(0.95, sum by (job, le) ({buckets}))"


def posture_recording_rules(job: str) -> list[dict[str, str]]:
    sel = f'job="{job}"'
    revocation = "keylife_revocation_confirmation_seconds"
    mitigate = "keylife_incident_mitigate_seconds"
    return [
        {"record": "keylife:posture_score", "expr": f"max by (job) (keylife_posture_score{{{sel}}})"},
        {
            "record": "keylife:posture_component",
            "expr": f"max by (job, component) (keylife_posture_component{{{sel}}})",
        },
        {
            "record": "keylife:posture_component_weight",
            "expr": f"max by (job, component) (keylife_posture_component_weight{{{sel}}})",
        },
        {"record": "keylife:revocation_confirmation_seconds:mean", "expr": _mean(revocation, sel)},
        {"record": "keylife:revocation_confirmation_seconds:p95", "expr": _p95(revocation, sel)},
        {"record": "keylife:revocation_confirmation_seconds:mean7d", "expr": _mean(revocation, sel, WEEK)},
        {"record": "keylife:revocation_confirmation_seconds:p95_7d", "expr": _p95(revocation, sel, WEEK)},
        {
            "record": "keylife:rotation_on_time:ratio",
            "expr": f'1 - sum by (job) (keylife_keys_by_rotation_band{{{sel}, band="overdue"}})\n/\n'
            f'clamp_min(sum by (job) (keylife_keys_by_rotation_band{{{sel}, band!="none"}}), 1)',
        },
        {
            "record": "keylife:key_age_mean_seconds:by_purpose",
            "expr": f"sum by (job, purpose) (keylife_keys_age_by_purpose_sum_seconds{{{sel}}})\n/\n"
            f"sum by (job, purpose) (keylife_keys_not_destroyed_by_purpose{{{sel}}})",
        },
        {
            "record": "keylife:keys_within_policy:ratio",
            "expr": f"max by (job) (keylife_fleet_compliance_ratio{{{sel}}})",
        },
        {"record": "keylife:incidents_open:sum", "expr": f"sum by (job) (keylife_incidents_open{{{sel}}})"},
        {"record": "keylife:incident_mitigate_seconds:mean", "expr": _mean(mitigate, sel)},
        {"record": "keylife:incident_mitigate_seconds:p95", "expr": _p95(mitigate, sel)},
    ]
