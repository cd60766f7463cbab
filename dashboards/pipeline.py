"""keylife / Audit pipeline (``keylife-pipeline``): is the audit trail complete, signed and shipped?

Follows an event from ingest (HTTP, authentication) to the journal (durable, chained, signed by
checkpoints, verified end to end), the registry built from it, and each forwarder sink (Loki,
syslog, Splunk HEC, OTLP, file). The ``sink`` variable narrows the forwarder panels.
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
from dashboards.forwarder import forwarder, sink_variable
from dashboards.panels import (
    ZERO_IS_GOOD,
    stat_panel,
    state_mappings,
    steps,
    timeseries_panel,
)

UID = "keylife-pipeline"
UNSIGNED = f"keylife_journal_entries{{{JOB}}} - keylife_journal_checkpoint_entries{{{JOB}}}"


def journal() -> list[PanelBuilder]:
    """The journal and what keeps it trustworthy."""
    return [
        stat_panel(
            "Journal writer",
            "UP while the journal writer accepts events. DOWN means ingest refuses events "
            "(KeylifeJournalWriterDown, critical): check keylife's log and the data disk (full, read-only).",
            prom(f"keylife_ingest_writer_up{{{JOB}}}", "writer"),
            mappings=state_mappings("UP", "DOWN"),
            thresholds=steps(("red", None), ("green", 1)),
            span=3,
            graph=False,
        ),
        stat_panel(
            "Journal entries",
            "Entries in the audit journal (its size; the last seq is this minus 1). It only grows.",
            prom(f"keylife_journal_entries{{{JOB}}}", "entries"),
            span=3,
        ),
        stat_panel(
            "Unsigned entries",
            "Entries not yet covered by a signed checkpoint. Checkpoints come every 1,000 entries or "
            "every second, so this stays small; growing for 5 min raises KeylifeJournalCheckpointStale: "
            "check the signing key and keylife's log.",
            prom(UNSIGNED, "unsigned"),
            thresholds=steps(("green", None), ("orange", 2000)),
            span=3,
        ),
        stat_panel(
            "Since last checkpoint",
            "Time since the latest signed checkpoint. Grows harmlessly while no event arrives (nothing to "
            "sign); a concern only together with unsigned entries above 0.",
            prom(f"time() - keylife_journal_last_checkpoint_timestamp_seconds{{{JOB}}}", "age"),
            unit="s",
            span=3,
            graph=False,
        ),
        stat_panel(
            "Registry lag",
            "Journal entries not yet committed to the registry (the queryable key state). Should drain to 0 "
            "within seconds; a backlog means the registry lags behind the journal and key states shown "
            "here are stale.",
            prom(f"keylife_registry_lag_entries{{{JOB}}}", "lag"),
            thresholds=steps(("green", None), ("orange", 1000)),
            span=3,
        ),
        stat_panel(
            "Last verification",
            "Result of the last end-to-end verification of the journal (chain, checkpoints, signatures). "
            "FAULTS raises KeylifeJournalVerificationFailed: run keylife verify and treat the journal as "
            "possibly tampered with.",
            prom(f"keylife_journal_verify_ok{{{JOB}}}", "verification"),
            mappings=state_mappings("OK", "FAULTS"),
            thresholds=steps(("red", None), ("green", 1)),
            span=3,
            graph=False,
        ),
        stat_panel(
            "Verification faults",
            "Faults the last verification found. Anything above 0 is an incident: keylife verify names "
            "each faulty entry or checkpoint.",
            prom(f"keylife_journal_verify_faults{{{JOB}}}", "faults"),
            thresholds=ZERO_IS_GOOD,
            span=3,
            graph=False,
        ),
        stat_panel(
            "Since last verification",
            "Time since the journal was last verified end to end. Over 3 h raises KeylifeJournalNotVerified: "
            "the periodic verification is not running.",
            prom(f"time() - keylife_journal_verify_timestamp_seconds{{{JOB}}}", "age"),
            unit="s",
            thresholds=steps(("green", None), ("orange", 3 * 3600)),
            span=3,
            graph=False,
        ),
        timeseries_panel(
            "Journal growth",
            "Entries made durable per second, by event type: the journal's growth rate. A drop to 0 while "
            "nodes are busy means events are not arriving (see Ingest) or not written (see Journal writer).",
            prom(f"sum by (type) (rate(keylife_journal_writes_total{{{JOB}}}[$__rate_interval]))", "{{type}}"),
            unit="ops",
            stacked=True,
        ),
        timeseries_panel(
            "Unsigned entries and registry lag",
            "Entries waiting for a checkpoint signature and for the registry, over time. Both should hover "
            "near 0; a rising line shows when signing or registry commits stopped.",
            prom(UNSIGNED, "unsigned entries"),
            prom(f"keylife_registry_lag_entries{{{JOB}}}", "registry lag"),
        ),
    ]


def ingest() -> list[PanelBuilder]:
    """Events arriving over HTTP."""
    return [
        timeseries_panel(
            "Ingest events by outcome",
            "Events answered by ingest per second, by outcome: accepted (new), duplicate (already journaled: "
            "harmless retries), conflict (an event id reused for another event), refused; and lines refused as "
            "invalid. Conflicts and invalid lines are sender bugs: find the sender in keylife's log.",
            prom(f"sum by (outcome) (rate(keylife_ingest_events_total{{{JOB}}}[$__rate_interval]))", "{{outcome}}"),
            prom(f"sum(rate(keylife_ingest_invalid_lines_total{{{JOB}}}[$__rate_interval]))", "invalid lines"),
            unit="ops",
        ),
        timeseries_panel(
            "Ingest requests by status code",
            "Requests to POST /v1/events per second by HTTP status: 200 written, 422 invalid events, 409 event "
            "id reused, 413 too many lines, 400 empty body; 5xx is keylife's own trouble (see its log). "
            "Authentication failures are on the Auth failures panel.",
            prom(f"sum by (code) (rate(keylife_ingest_requests_total{{{JOB}}}[$__rate_interval]))", "{{code}}"),
            unit="reqps",
        ),
        timeseries_panel(
            "Ingest error ratio",
            "Share of ingest requests answered 4xx or 5xx over 5 min (0 when there were no requests). Above "
            "5% for 10 min raises KeylifeIngestErrorsHigh: 4xx points at senders (auth, bad events), 5xx at "
            "keylife itself.",
            # Without requests the ratio is 0/0 = NaN: shown as 0 (the counters exist from the start,
            # so an empty answer still means keylife is not scraped).
            prom(
                f"keylife:ingest_error_ratio:rate5m{{{JOB}}} >= 0 "
                f"or 0 * sum by (job) (rate(keylife_ingest_requests_total{{{JOB}}}[5m]))",
                "errors",
            ),
            unit="percentunit",
            thresholds=steps(("green", None), ("red", 0.05)),
            span=8,
        ),
        timeseries_panel(
            "Ingest ack latency",
            "Time from receiving an ingest request to its durable answer (fsync included), median and p99. "
            "High p99 means a slow disk or an overloaded writer.",
            *(
                prom(
                    f"histogram_quantile({q}, sum by (le) (rate(keylife_ingest_ack_seconds_bucket{{{JOB}}}"
                    "[$__rate_interval])))",
                    f"p{round(q * 100)}",
                )
                for q in (0.5, 0.99)
            ),
            unit="s",
            span=8,
        ),
        timeseries_panel(
            "Auth failures",
            "Requests refused by authentication (401) or authorization (403) per second, and the 5 min "
            "total the alert uses (above 0.5/s for 5 min: KeylifeAuthFailuresSpiking). Unjournaled: "
            "failures summarised because of the journaling rate limit. A spike is a misconfigured "
            "sender or someone guessing tokens.",
            prom(f"sum by (code) (rate(keylife_auth_failures_total{{{JOB}}}[$__rate_interval]))", "{{code}}"),
            prom(f"keylife:auth_failures:rate5m{{{JOB}}}", "all (5m)"),
            prom(f"sum(rate(keylife_auth_failures_unjournaled_total{{{JOB}}}[$__rate_interval]))", "unjournaled"),
            unit="reqps",
            thresholds=steps(("green", None), ("red", 0.5)),
            span=8,
        ),
    ]


def build() -> dm.Dashboard:
    """The audit pipeline dashboard: journal, ingest, forwarder."""
    builder = dashboard(
        UID,
        "The audit trail end to end: ingest, journal (signed checkpoints, verification), registry, forwarder sinks.",
    ).with_variable(sink_variable())
    return finish(builder, [("Journal", journal()), ("Ingest", ingest()), ("Forwarder", forwarder())])
