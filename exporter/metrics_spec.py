"""Every metric the exporter's collectors emit: name, type, labels and help, written once.

Collectors build their families from these entries and ``docs/metrics.md`` is generated from
them (``python -m keylife.cli.metrics_docs``), so the reference cannot drift from what is served.
Counter names are given without ``_total``; the exposition adds it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class Spec:
    name: str
    kind: Literal["gauge", "counter", "histogram", "info"]
    help: str
    labels: tuple[str, ...] = ()
    per_key: bool = False  # only for keys in the capped attention set


FLEET = (
    Spec("keylife_keys", "gauge", "Keys by lifecycle state, algorithm and purpose (zero-filled for every known combination).",
         ("state", "algorithm", "purpose")),
    Spec("keylife_keys_by_expiry_band", "gauge",
         "Usable keys (pre-activation, active, suspended) by time to expiry: expired, 7d, 30d, 90d, later, never.",
         ("band",)),
    Spec("keylife_keys_by_rotation_band", "gauge",
         "Active keys by time until rotation is due under the policy: overdue, 7d, 30d, 90d, later, none.", ("band",)),
    Spec("keylife_keys_by_age", "gauge",
         "Keys not destroyed that are at most age_le seconds old (since generation), cumulative like histogram "
         "buckets (age_le=\"+Inf\": all of them). Gauge buckets of the current population, not a histogram: "
         "destroying keys lowers them; the label is not le, which is for histograms only. Quantiles: "
         "label_replace age_le to le, then histogram_quantile over sum by (le).", ("age_le",)),
    Spec("keylife_keys_age_by_purpose_sum_seconds", "gauge",
         "Sum of the ages of the keys not destroyed, by purpose; over keylife_keys_not_destroyed_by_purpose: the mean "
         "key age per purpose (recording rule keylife:key_age_mean_seconds:by_purpose).", ("purpose",)),
    Spec("keylife_keys_not_destroyed_by_purpose", "gauge", "Keys not destroyed, by purpose (the mean age's divisor).",
         ("purpose",)),
    Spec("keylife_keys_age_sum_seconds", "gauge",
         "Sum of the ages of the keys not destroyed; divided by keylife_keys_by_age{age_le=\"+Inf\"}: their mean age."),
    Spec("keylife_key_usage_operations", "counter",
         "Cryptographic operations reported by nodes, by operation and the key's algorithm and purpose.",
         ("operation", "algorithm", "purpose")),
    Spec("keylife_key_transitions", "counter", "Lifecycle state changes, by the event type that caused them.",
         ("type",)),
    Spec("keylife_key_violations", "counter",
         "Lifecycle violations found in observations: conflicting_use, skipped_transition, unknown_key, policy_breach.",
         ("kind",)),
    Spec("keylife_keys_noncompliant", "gauge", "Usable keys breaking each policy rule.", ("rule",)),
    Spec("keylife_fleet_compliance_ratio", "gauge", "Share of usable keys that break no policy rule (1 when none)."),
    Spec("keylife_key_attention", "gauge",
         "1 for each reason a key needs attention: compromised, conflicting_use, propagation_pending, "
         "rotation_overdue, expiring, operations_high, non_compliant.", ("key_id", "reason"), per_key=True),
    Spec("keylife_key_info", "gauge", "1 for each key needing attention, with its state, algorithm and purpose (for joins).",
         ("key_id", "state", "algorithm", "purpose"), per_key=True),
    Spec("keylife_key_expiry_timestamp_seconds", "gauge", "When a key needing attention expires.",
         ("key_id", "state", "algorithm", "purpose"), per_key=True),
    Spec("keylife_key_rotation_due_timestamp_seconds", "gauge", "When a key needing attention is due for rotation.",
         ("key_id", "state", "algorithm", "purpose"), per_key=True),
    Spec("keylife_key_operations", "gauge",
         "Operations reported for a key with an operations limit once past half of it (e.g. AES-GCM, 2^32).",
         ("key_id",), per_key=True),
    Spec("keylife_key_operations_limit", "gauge", "The operations limit of such a key under the policy.",
         ("key_id",), per_key=True),
    Spec("keylife_keys_attention", "gauge", "Keys needing attention, all of them (the per-key series are capped)."),
    Spec("keylife_keys_attention_omitted", "gauge", "Keys needing attention left out of the per-key series by the cap."),
    Spec("keylife_node_last_report_timestamp_seconds", "gauge", "Time of the latest event from each node (its occurred_at: the node's clock).", ("node",)),
    Spec("keylife_node_unconfirmed_keys", "gauge",
         "Keys whose current state a node that holds them has not confirmed yet.", ("node",)),
    Spec("keylife_keys_propagation_pending", "gauge",
         "Keys whose current state at least one node that holds them has not confirmed (uncapped)."),
    Spec("keylife_propagation_lag_seconds", "histogram",
         "Time from a key's state change to a node's confirmation, for confirmations seen since start."),
    Spec("keylife_fleet_snapshot_timestamp_seconds", "gauge", "When the snapshot this scrape reports was taken."),
)  # fmt: skip

# Revocations (keylife/registry/revocations.py): read from the registry at scrape time, so they
# survive a restart and agree with GET /v1/revocations.
REVOCATION = (
    Spec("keylife_revocation_confirmation_seconds", "histogram",
         "Time from a key's revocation (or compromise) to the confirmation of the last node expected to confirm "
         "it, per fully confirmed key (from the journal's times: the whole history, not only since start)."),
    Spec("keylife_revocation_unconfirmed_pairs", "gauge",
         "Unconfirmed (revoked key, node) pairs per node: nodes that held a withdrawn key and have not reported "
         "refusing it (uncapped; 0 for a node that has none left).", ("node",)),
    Spec("keylife_revocation_unconfirmed_since_timestamp_seconds", "gauge",
         "Since when a node is expected to confirm a withdrawn key it holds and has not (the revocation, or the "
         "node's first report after it), per pair; the oldest pairs first up to exporter.attention_cap.",
         ("key_id", "node"), per_key=True),
    Spec("keylife_revocation_unconfirmed_pairs_omitted", "gauge",
         "Unconfirmed (key, node) pairs left out of the per-pair series by exporter.attention_cap."),
    Spec("keylife_revocation_feed_version", "gauge",
         "The signed revocation feed's current version (GET /v1/revocations): withdrawals ever published."),
)  # fmt: skip

# Usage anomalies (keylife/registry/anomalies.py, docs/anomalies.md): read from the registry at scrape time.
ANOMALIES = (
    Spec("keylife_key_anomaly", "gauge",
         "Usage anomalies flagged in the last 24 hours (by the usage reports' times) per key and kind: spike, "
         "drop, new_node, new_operation, unusual_hour; the most recently flagged pairs first up to "
         "exporter.attention_cap.", ("key_id", "kind"), per_key=True),
    Spec("keylife_anomalies_recent", "gauge",
         "Usage anomalies flagged in the last 24 hours, per kind (uncapped, zero-filled).", ("kind",)),
    Spec("keylife_key_anomaly_omitted", "gauge",
         "(key, kind) pairs flagged in the last 24 hours left out of keylife_key_anomaly by exporter.attention_cap."),
)  # fmt: skip

# The posture score (exporter/posture.py, docs/posture.md): computed at each scrape from the fleet snapshot,
# the registry's revocation tables and the process (journal verification, forwarder sinks).
POSTURE = (
    Spec("keylife_posture_score", "gauge",
         "The security posture score, 0 to 100: the weighted mean of the measured components (docs/posture.md)."),
    Spec("keylife_posture_component", "gauge",
         "Each posture component, 0 to 1: policy_compliance, rotation_on_time, no_use_after_revocation, "
         "propagation_confirmed, journal_verified, forwarders_current (absent while not measured).", ("component",)),
    Spec("keylife_posture_component_weight", "gauge",
         "Each component's effective weight in the score (the nominal weights rescaled over the measured "
         "components; 0 for one not measured): score = 100 * sum(weight * component).", ("component",)),
    Spec("keylife_posture_owner_score", "gauge",
         "The posture score of each key owner, the worst owners first up to exporter.attention_cap (keys without "
         "an owner: owner=\"(unowned)\").", ("owner",)),
    Spec("keylife_posture_owners", "gauge", "Owners with at least one key (the per-owner series are capped)."),
    Spec("keylife_posture_owners_omitted", "gauge",
         "Owners left out of keylife_posture_owner_score by exporter.attention_cap (the best-scoring ones)."),
)  # fmt: skip

PIPELINE = (
    Spec("keylife_journal_entries", "gauge", "Entries in the audit journal (its size; the last seq is this minus 1)."),
    Spec(
        "keylife_journal_last_checkpoint_timestamp_seconds", "gauge", "When the latest signed checkpoint was written."
    ),
    Spec("keylife_journal_checkpoint_entries", "gauge", "Entries covered by the latest signed checkpoint."),
    Spec("keylife_journal_verify_timestamp_seconds", "gauge", "When the journal was last verified end to end."),
    Spec("keylife_journal_verify_ok", "gauge", "1 when the last verification found no fault, 0 when it found some."),
    Spec("keylife_journal_verify_faults", "gauge", "Faults found by the last verification."),
    Spec(
        "keylife_journal_integrity_ok",
        "gauge",
        "1 while the journal matches its signed checkpoints; 0 once the start-up check or a periodic verification "
        "found a fault: the writer is then read-only (no entries, no checkpoints) until restart.",
    ),
    Spec("keylife_registry_lag_entries", "gauge", "Journal entries not yet committed to the registry."),
    Spec(
        "keylife_ingest_writer_up",
        "gauge",
        "1 while the journal writer accepts events; 0 while it is degraded (retrying by itself, see "
        "keylife_ingest_writer_degraded) or failed until restart.",
    ),
    Spec(
        "keylife_ingest_writer_degraded",
        "gauge",
        "1 while the journal writer refuses events after an I/O failure and retries by itself, labelled with "
        'the cause (errno name, e.g. ENOSPC, EMFILE, EIO); 0 with cause "none" otherwise.',
        ("cause",),
    ),
    Spec(
        "keylife_journal_io_failures",
        "counter",
        "I/O failures of the journal writer by operation (open, write, fdatasync, sums, checkpoint, revalidate, "
        "probe, seal, registry) and errno name; retries count again.",
        ("operation", "errno"),
    ),
    Spec(
        "keylife_journal_segments_unsealed",
        "gauge",
        "Closed journal segments not sealed yet (sealing, or waiting to retry after a failure); normally 0 or 1.",
    ),
    Spec(
        "keylife_datafold_source_problem",
        "gauge",
        "1 while a DataFold source (file:, sse:, poll:) delivers nothing for a lasting cause: the node's signature "
        "middleware refuses keylife (cause = its error code, e.g. MISSING_HEADERS, TIMESTAMP_VALIDATION_FAILED), "
        'no_log_stream (security2), unavailable (unreachable, 5xx); 0 with cause "none" otherwise.',
        ("source", "cause"),
    ),
    Spec(
        "keylife_datafold_refusals",
        "counter",
        "Requests to a DataFold node its signature middleware refused (400/401/429 with an error_code), per source.",
        ("source",),
    ),
    Spec(
        "keylife_automatic_lockdowns",
        "counter",
        "Lockdowns applied by a bulk.auto_lockdown rule, by rule (counted from the journal, so a restart keeps the "
        "count; zero for every configured rule). The lockdown record names the rule and the trigger key.",
        ("rule",),
    ),
    Spec("keylife_lockdowns_applied", "gauge", "Lockdowns applied and not released yet (GET /v1/lockdowns)."),
    Spec(
        "keylife_reports_generated",
        "counter",
        "Scheduled compliance reports written and announced, by schedule (reports.schedules; since start).",
        ("schedule",),
    ),
    Spec(
        "keylife_report_failures",
        "counter",
        "Scheduled compliance report runs that failed, by schedule (since start; KeylifeReportFailed pages).",
        ("schedule",),
    ),
    Spec(
        "keylife_report_last_success_timestamp_seconds",
        "gauge",
        "When each schedule last wrote its report (unix seconds; absent until the first since start).",
        ("schedule",),
    ),
    Spec("keylife_build", "info", "Version of keylife and of the Python running it.", ("version", "python")),
)

# Incidents (keylife/registry/incidents.py), read from the registry at scrape time: incidents are few,
# and the durations come from the journaled times, so a restart serves the same figures.
INCIDENT_MITIGATE_BUCKETS = (60.0, 300.0, 900.0, 1800.0, 3600.0, 14400.0, 43200.0, 86400.0, 259200.0, 604800.0)
INCIDENT_CLOSE_BUCKETS = (3600.0, 14400.0, 43200.0, 86400.0, 259200.0, 604800.0, 1209600.0, 2592000.0)
INCIDENTS = (
    Spec("keylife_incidents_open", "gauge",
         "Incidents open or mitigating (not yet resolved or closed), by severity (zero-filled).", ("severity",)),
    Spec("keylife_incident_mitigate_seconds", "histogram",
         "Time from an incident's opening to its first step out of open (mitigating, resolved or closed), for "
         "every incident in the registry."),
    Spec("keylife_incident_close_seconds", "histogram",
         "Time from an incident's opening to its closing, for every closed incident in the registry."),
)  # fmt: skip
