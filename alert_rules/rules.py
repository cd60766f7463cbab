"""keylife's recording and alerting rules, as data built from the thresholds in ``config.yaml``.

Conventions (``alert_rules/CONTRACT.md``): ``severity`` is critical (pages), warning (tickets),
info (nowhere) or none (the Watchdog heartbeat); an escalation pair is one alertname at two severities, and Alertmanager
inhibits the warning while its critical twin fires for the same job, key, node or sink. Every
alert has a static ``summary``, a templated ``description`` naming what and how much, a
``runbook_url`` (a file under ``docs/runbooks/`` that a test checks exists) and a
``dashboard_url``, each only when its base URL is configured (no dead default links). Annotations are Go templates, so they are plain strings here, never
``str.format``: only exprs and durations take values from the config.
"""

from __future__ import annotations

from typing import Any

from alert_rules.posture import posture_recording_rules

USABLE = 'state=~"pre_activation|active|suspended"'
DAY = 86400


def recording_rules(job: str) -> list[dict[str, str]]:
    sel = f'job="{job}"'
    return [
        {"record": "keylife:fleet_compliance_ratio", "expr": f"max by (job) (keylife_fleet_compliance_ratio{{{sel}}})"},
        {"record": "keylife:keys_usable:sum", "expr": f"sum by (job) (keylife_keys{{{sel}, {USABLE}}})"},
        {"record": "keylife:keys_noncompliant:sum", "expr": f"sum by (job, rule) (keylife_keys_noncompliant{{{sel}}})"},
        {
            "record": "keylife:key_usage_operations:rate5m",
            "expr": f"sum by (job, operation, algorithm, purpose) (rate(keylife_key_usage_operations_total{{{sel}}}[5m]))",
        },
        {
            "record": "keylife:key_usage_operations:rate5m_avg1d",
            "expr": f"avg_over_time(keylife:key_usage_operations:rate5m{{{sel}}}[1d])",
        },
        {
            "record": "keylife:propagation_completeness_ratio",
            "expr": f"1 - max by (job) (keylife_keys_propagation_pending{{{sel}}}) / clamp_min(keylife:keys_usable:sum{{{sel}}}, 1)",
        },
        {
            "record": "keylife:ingest_error_ratio:rate5m",
            "expr": f'sum by (job) (rate(keylife_ingest_requests_total{{{sel}, code=~"4..|5.."}}[5m]))\n'
            f"/\nsum by (job) (rate(keylife_ingest_requests_total{{{sel}}}[5m]))",
        },
        {
            "record": "keylife:auth_failures:rate5m",
            "expr": f"sum by (job) (rate(keylife_auth_failures_total{{{sel}}}[5m]))",
        },
    ]


class _Alerts:
    """Builds alert rules with the shared annotations."""

    def __init__(self, config: dict[str, Any]) -> None:
        # Unset bases (None or "") leave the annotation out: a link to nowhere is worse than none.
        self.runbooks = (config.get("runbook_base_url") or "").rstrip("/")
        self.grafana = (config.get("dashboard_base_url") or "").rstrip("/")
        self.rules: list[dict[str, Any]] = []

    def add(
        self,
        name: str,
        severity: str,
        expr: str,
        summary: str,
        description: str,
        dashboard: str,
        duration: str | None = None,
    ) -> None:
        rule: dict[str, Any] = {"alert": name, "expr": expr}
        if duration:
            rule["for"] = duration
        rule["labels"] = {"severity": severity}
        rule["annotations"] = {"summary": summary, "description": description}
        if self.runbooks:
            rule["annotations"]["runbook_url"] = f"{self.runbooks}/{name}.md"
        if self.grafana and dashboard:
            rule["annotations"]["dashboard_url"] = self.grafana + dashboard
        self.rules.append(rule)


KEY = "/d/keylife-key?var-job={{ $labels.job }}&var-key_id={{ $labels.key_id }}"
NODE = "/d/keylife-propagation?var-job={{ $labels.job }}&var-node={{ $labels.node }}"
SINK = "/d/keylife-pipeline?var-job={{ $labels.job }}&var-sink={{ $labels.sink }}"
PIPELINE = "/d/keylife-pipeline?var-job={{ $labels.job }}"
FLEET = "/d/keylife-fleet?var-job={{ $labels.job }}"
COMPLIANCE = "/d/keylife-compliance?var-job={{ $labels.job }}"
KEY_DESC = "{{ $labels.key_id }} ({{ $labels.algorithm }}, {{ $labels.purpose }}, {{ $labels.state }})"


def key_rules(a: _Alerts, job: str, t: dict[str, Any]) -> None:
    sel = f'job="{job}"'
    expiry = f"keylife_key_expiry_timestamp_seconds{{{sel}, {USABLE}}}"
    # Expiry is planned work (tickets), never a page: one warning per key, grouped into one
    # notification per job by Alertmanager, plus a fleet aggregate for the short horizon.
    days = t["expiring_warning_days"]
    a.add(
        "KeylifeKeyExpiring", "warning", f"({expiry} - time()) < {days * DAY} > 0",
        f"A usable key expires within {days} days.",
        f"Key {KEY_DESC} expires in {{{{ $value | humanizeDuration }}}}. Rotate it before then.",
        KEY, t["expiring_for"],
    )  # fmt: skip
    # From the uncapped fleet count (exporter bands), not the per-key series the attention cap limits.
    a.add(
        "KeylifeKeysExpiringSoon", "warning",
        f'sum by (job) (keylife_keys_by_expiry_band{{{sel}, band="7d"}}) > 0',
        "Usable keys expire within 7 days.",
        "{{ $value }} usable keys of {{ $labels.job }} expire within 7 days; the KeylifeKeyExpiring ticket "
        "lists them. Rotate them this week.",
        FLEET, t["expiring_for"],
    )  # fmt: skip
    a.add(
        "KeylifeKeyExpiredStillUsable", "critical", f"(time() - {expiry}) > 0",
        "A key past its expiry date is still usable.",
        f"Key {KEY_DESC} expired {{{{ $value | humanizeDuration }}}} ago but is still {{{{ $labels.state }}}}. "
        "Deactivate or rotate it.",
        KEY, t["expiring_for"],
    )  # fmt: skip
    overdue = f'(time() - keylife_key_rotation_due_timestamp_seconds{{{sel}, state="active"}})'
    a.add(
        "KeylifeKeyRotationOverdue", "warning", f"{overdue} > 0",
        "A key is past its rotation date under the policy.",
        f"Key {KEY_DESC} was due for rotation {{{{ $value | humanizeDuration }}}} ago.",
        KEY, t["rotation_overdue_for"],
    )  # fmt: skip
    info = f"on (job, instance, key_id) group_left (state, algorithm, purpose) keylife_key_info{{{sel}}}"
    a.add(
        "KeylifeKeyNonCompliant", "warning", f'keylife_key_attention{{{sel}, reason="non_compliant"}} * {info}',
        "A usable key breaks the key policy.",
        f"Key {KEY_DESC} breaks a policy rule (banned algorithm, key size, maximum age or operations limit): "
        "see `keylife keys show {{ $labels.key_id }}`.",
        KEY, t["noncompliant_for"],
    )  # fmt: skip
    a.add(
        "KeylifeKeyCompromised", "critical", f'keylife_key_attention{{{sel}, reason="compromised"}} * {info}',
        "A compromised key has not been destroyed.",
        f"Key {KEY_DESC} is marked compromised and still exists. Finish the incident: re-protect its data "
        "under a new key, then destroy it.",
        KEY, t["compromised_open_for"],
    )  # fmt: skip
    a.add(
        "KeylifeKeyUsedAfterRevocation", "critical", f'keylife_key_attention{{{sel}, reason="conflicting_use"}} * {info}',
        "A revoked or compromised key was used.",
        f"Key {KEY_DESC} was used after it left service (revoked, compromised or destroyed, or deactivated and "
        "used to protect data). Find the node and the data it touched now.",
        KEY,
    )  # fmt: skip
    pending = f'max by (job, instance, key_id) (keylife_key_attention{{{sel}, reason="propagation_pending"}})'
    for severity, duration in (("warning", t["propagation_warning_for"]), ("critical", t["propagation_critical_for"])):
        a.add(
            "KeylifeKeyStateChangeUnconfirmed", severity, f"{pending} == 1",
            f"A key's new state is not confirmed by every node after {duration}.",
            "Key {{ $labels.key_id }}: at least one node holding it has not confirmed its current state "
            f"for {duration} (a revocation may not be applied network-wide).",
            KEY, duration,
        )  # fmt: skip

    # Per (key, node), from the capped per-pair series (oldest pairs first): names the node, which
    # KeylifeKeyStateChangeUnconfirmed cannot. Age-based, so a restart of Prometheus loses nothing.
    unconfirmed = f"(time() - keylife_revocation_unconfirmed_since_timestamp_seconds{{{sel}}})"
    for severity, minutes in (
        ("warning", t["revocation_unconfirmed_warning_minutes"]),
        ("critical", t["revocation_unconfirmed_critical_minutes"]),
    ):
        a.add(
            "KeylifeRevocationUnconfirmed", severity, f"{unconfirmed} > {minutes * 60}",
            f"A node has not confirmed a key's revocation for {minutes} minutes.",
            "Node {{ $labels.node }} held key {{ $labels.key_id }} and has not reported refusing it "
            "{{ $value | humanizeDuration }} after its revocation: the node may still accept the key.",
            NODE, t["revocation_unconfirmed_for"],
        )  # fmt: skip


def node_and_usage_rules(a: _Alerts, job: str, t: dict[str, Any]) -> None:
    sel = f'job="{job}"'
    silent = f"(time() - keylife_node_last_report_timestamp_seconds{{{sel}}})"
    for severity, minutes in (
        ("warning", t["node_silent_warning_minutes"]),
        ("critical", t["node_silent_critical_minutes"]),
    ):
        a.add(
            "KeylifeNodeNotReporting", severity, f"{silent} > {minutes * 60}",
            f"A DataFold node has sent nothing for {minutes} minutes.",
            "Node {{ $labels.node }} last reported {{ $value | humanizeDuration }} ago; its key states and usage "
            "are unknown since.",
            NODE, "1m",
        )  # fmt: skip
    rate = f"keylife:key_usage_operations:rate5m{{{sel}}}"
    a.add(
        "KeylifeKeyUsageAnomaly", "warning",
        f"{rate} > {t['usage_anomaly_factor']} * keylife:key_usage_operations:rate5m_avg1d{{{sel}}}\n"
        f"and {rate} > {t['usage_anomaly_min_ops_per_second']}",
        "Key usage is far above its own baseline.",
        "{{ $labels.operation }} with {{ $labels.algorithm }} keys for {{ $labels.purpose }} runs at "
        f"{{{{ $value | humanize }}}} ops/s, more than {t['usage_anomaly_factor']} times its 1-day average.",
        COMPLIANCE, t["usage_anomaly_for"],
    )  # fmt: skip
    # Per key, from the detector's own baselines (docs/anomalies.md): names the key and the kind of flag.
    a.add(
        "KeylifeKeyUsageAnomalous", "warning", f"keylife_key_anomaly{{{sel}}} > 0",
        "A key's usage broke its own baseline.",
        "Key {{ $labels.key_id }}: {{ $value }} usage anomaly flag(s) of kind {{ $labels.kind }} in the last 24 "
        "hours (spike, drop, new_node, new_operation or unusual_hour), judged against the key's own seasonal "
        "baseline; the journal's anomaly records give the node, the score and the baseline.",
        KEY,
    )  # fmt: skip
    ops = f"keylife_key_operations{{{sel}}}"
    for severity, days in (("warning", t["operations_warning_days"]), ("critical", t["operations_critical_days"])):
        a.add(
            "KeylifeKeyOperationsLimitApproaching", severity,
            f"predict_linear({ops}[{t['operations_lookback']}], {days * DAY}) >= keylife_key_operations_limit{{{sel}}}",
            f"A key will reach its operations limit within {days} days.",
            "Key {{ $labels.key_id }} is on course to pass its operations limit (AES-GCM: 2^32 invocations) "
            f"within {days} days. Rotate it first.",
            KEY, "15m",
        )  # fmt: skip


def pipeline_rules(a: _Alerts, job: str, t: dict[str, Any], forward_job: str) -> None:
    sel = f'job="{job}"'
    fwd = f'job=~"{job}|{forward_job}"'  # the forwarder in keylife serve, or alone (keylife forward)
    a.add(
        "KeylifeJournalVerificationFailed", "critical", f"keylife_journal_verify_faults{{{sel}}} > 0",
        "The audit journal failed verification.",
        "The last end-to-end verification of the journal found {{ $value }} faults: entries were modified, "
        "deleted or reordered, checkpoints deleted, cut or re-signed, or a signature does not hold; serve stays "
        "read-only while its integrity check fails. Run `keylife verify --key VERIFIER --checkpoint FROM_SIEM` "
        "and start the incident process.",
        PIPELINE,
    )  # fmt: skip
    a.add(
        "KeylifeForwarderChainMismatch", "critical", f"keylife_forward_chain_mismatches_total{{{fwd}}} > 0",
        "The forwarder read entries that do not match a signed checkpoint.",
        "Sink {{ $labels.sink }} read {{ $value }} checkpoints whose signed hash differs from the journal on disk. "
        "Run `keylife verify`.",
        SINK,
    )  # fmt: skip
    unsigned = f"(keylife_journal_entries{{{sel}}} - keylife_journal_checkpoint_entries{{{sel}}})"
    age = f"(time() - keylife_journal_last_checkpoint_timestamp_seconds{{{sel}}})"
    for severity, minutes in (
        ("warning", t["checkpoint_warning_minutes"]),
        ("critical", t["checkpoint_critical_minutes"]),
    ):
        a.add(
            "KeylifeJournalCheckpointStale", severity, f"{unsigned} > 0 and {age} > {minutes * 60}",
            f"Journal entries have been waiting for a signed checkpoint for {minutes} minutes.",
            "{{ $value }} journal entries are not yet covered by a signed checkpoint.",
            PIPELINE, t["checkpoint_stale_for"],
        )  # fmt: skip
    a.add(
        "KeylifeJournalNotVerified", "warning",
        f"(time() - keylife_journal_verify_timestamp_seconds{{{sel}}}) > {t['verify_max_age_hours'] * 3600}",
        f"The journal has not been verified for {t['verify_max_age_hours']} hours.",
        "The last end-to-end verification of the journal was {{ $value | humanizeDuration }} ago.",
        PIPELINE, "15m",
    )  # fmt: skip
    lag = f"keylife_forward_oldest_unshipped_age_seconds{{{fwd}}}"
    for severity, minutes in (
        ("warning", t["forward_lag_warning_minutes"]),
        ("critical", t["forward_lag_critical_minutes"]),
    ):
        a.add(
            "KeylifeForwarderLagging", severity, f"{lag} > {minutes * 60}",
            f"An audit sink is more than {minutes} minutes behind the journal.",
            "Sink {{ $labels.sink }}: the oldest entry not yet delivered is {{ $value | humanizeDuration }} old.",
            SINK, "2m",
        )  # fmt: skip
    window = t["quarantine_window"]
    a.add(
        "KeylifeForwarderQuarantining", "warning",
        f"sum by (job, instance, sink) (increase(keylife_forward_quarantined_total{{{fwd}}}[{window}])) > 0",
        "An audit sink refused records for good.",
        "Sink {{ $labels.sink }} quarantined {{ $value | humanize }} records in the last " + window
        + "; they are in its quarantine file and journaled as forward_quarantined.",
        SINK, t["quarantining_for"],
    )  # fmt: skip
    a.add(
        "KeylifeForwarderNoticesUnjournaled", "warning", f"keylife_forward_quarantine_unjournaled{{{fwd}}} > 0",
        "Quarantine notices cannot be journaled.",
        "Sink {{ $labels.sink }} holds {{ $value }} quarantine notices that keylife's API did not take.",
        SINK, t["notices_unjournaled_for"],
    )  # fmt: skip
    for severity, duration in (("warning", t["sink_down_warning_for"]), ("critical", t["sink_down_critical_for"])):
        a.add(
            "KeylifeForwarderSinkDown", severity, f"keylife_forward_up{{{fwd}}} == 0",
            f"An audit sink has been failing for {duration}.",
            f"Sink {{{{ $labels.sink }}}} has failed every delivery for {duration}; the journal buffers meanwhile.",
            SINK, duration,
        )  # fmt: skip


def service_rules(a: _Alerts, job: str, t: dict[str, Any], forward_job: str) -> None:
    sel = f'job="{job}"'
    fwd = f'job=~"{job}|{forward_job}"'
    a.add(
        "KeylifeIngestErrorsHigh", "warning",
        f"keylife:ingest_error_ratio:rate5m{{{sel}}} > {t['ingest_error_ratio']}",
        "Many ingest requests are refused.",
        "{{ $value | humanizePercentage }} of ingest requests were answered 4xx or 5xx over 5 minutes.",
        PIPELINE, t["ingest_errors_for"],
    )  # fmt: skip
    a.add(
        "KeylifeAuthFailuresSpiking", "warning", f"keylife:auth_failures:rate5m{{{sel}}} > {t['auth_failures_per_second']}",
        "Authentication failures are spiking.",
        "keylife refuses {{ $value | humanize }} requests/s for bad or missing tokens or scopes.",
        PIPELINE, t["auth_failures_for"],
    )  # fmt: skip
    a.add(
        "KeylifeDown", "critical", f"up{{{fwd}}} == 0 or absent(up{{{sel}}})",
        "Prometheus cannot scrape keylife.",
        "keylife ({{ $labels.job }}) has not been scraped for " + t["down_for"]
        + ": no key lifecycle alert can fire meanwhile.",
        FLEET, t["down_for"],
    )  # fmt: skip
    a.add(
        "KeylifeJournalWriterDown", "critical", f"keylife_ingest_writer_up{{{sel}}} == 0",
        "The journal writer stopped.",
        "The journal writer of {{ $labels.instance }} no longer accepts events: ingest answers 503 and nothing "
        "is recorded.",
        PIPELINE, t["writer_down_for"],
    )  # fmt: skip
    a.add(
        "KeylifeFleetSnapshotStale", "warning",
        f"(time() - keylife_fleet_snapshot_timestamp_seconds{{{sel}}}) > {t['snapshot_stale_minutes'] * 60}",
        "keylife reports an old fleet snapshot.",
        "The fleet snapshot {{ $labels.instance }} reports was taken {{ $value | humanizeDuration }} ago: "
        "key and node metrics (and every per-key alert) show the past.",
        FLEET, t["snapshot_stale_for"],
    )  # fmt: skip
    a.add(
        "KeylifeRegistryLagging", "warning", f"keylife_registry_lag_entries{{{sel}}} > {t['registry_lag_entries']}",
        "The registry is behind the journal.",
        "{{ $value }} journal entries of {{ $labels.instance }} are not yet in the registry: key states, the "
        "API and the metrics lag behind what was recorded.",
        FLEET, t["registry_lag_for"],
    )  # fmt: skip
    a.add(
        "KeylifeAttentionCapReached", "info", f"keylife_keys_attention_omitted{{{sel}}} > 0",
        "More keys need attention than the per-key series show.",
        "{{ $value }} keys needing attention are left out of the per-key series (exporter.attention_cap).",
        FLEET, t["attention_cap_for"],
    )  # fmt: skip


def watchdog_rule(a: _Alerts) -> None:
    """A dead man's switch (kube-prometheus' Watchdog): always firing, so its absence at the
    receiver means the Prometheus -> Alertmanager -> receiver path is broken."""
    a.add(
        "KeylifeWatchdog", "none", "vector(1)",
        "Always firing: the alerting pipeline is alive.",
        "This alert always fires ({{ $value }}). Route it to a dead man's switch that alerts when it stops arriving.",
        "",
    )  # fmt: skip


def response_rules(a: _Alerts, job: str) -> None:
    """Incident response: an automatic lockdown pages, naming the rule that applied it."""
    sel = f'job="{job}"'
    a.add(
        "KeylifeAutomaticLockdown", "critical", f"increase(keylife_automatic_lockdowns_total{{{sel}}}[15m]) > 0",
        "keylife suspended keys automatically after a compromise.",
        "Rule {{ $labels.rule }} (bulk.auto_lockdown) locked down keys after a key was marked compromised: "
        "GET /v1/lockdowns names the trigger key, the nodes and the keys it suspended. Decide whether the "
        "lockdown stays, then release it with keylife incident release.",
        FLEET,
    )  # fmt: skip


def report_rules(a: _Alerts, job: str) -> None:
    """Scheduled compliance reports: a failed run is never silent (docs/reporting.md)."""
    a.add(
        "KeylifeReportFailed", "warning", f'increase(keylife_report_failures_total{{job="{job}"}}[1h]) > 0',
        "A scheduled compliance report failed.",
        "Schedule {{ $labels.schedule }} (reports.schedules) could not write or announce its report; keylife "
        "tries again every check interval. The log line 'scheduled report ... failed' says why.",
        COMPLIANCE,
    )  # fmt: skip


def render_rules(config: dict[str, Any]) -> dict[str, Any]:
    job, t = config["job"], config["thresholds"]
    keys, nodes, pipeline, service, meta, response = (_Alerts(config) for _ in range(6))
    watchdog_rule(meta)
    key_rules(keys, job, t)
    node_and_usage_rules(nodes, job, t)
    pipeline_rules(pipeline, job, t, config["forwarder_job"])
    service_rules(service, job, t, config["forwarder_job"])
    response_rules(response, job)
    report_rules(response, job)
    return {
        "groups": [
            {"name": "keylife.recording", "rules": recording_rules(job)},
            {"name": "keylife.posture", "rules": posture_recording_rules(job)},
            {"name": "keylife.keys", "rules": keys.rules},
            {"name": "keylife.nodes-and-usage", "rules": nodes.rules},
            {"name": "keylife.audit-pipeline", "rules": pipeline.rules},
            {"name": "keylife.service", "rules": service.rules},
            {"name": "keylife.meta", "rules": meta.rules},
            {"name": "keylife.incident-response", "rules": response.rules},
        ]
    }
