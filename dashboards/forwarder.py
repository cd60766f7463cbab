"""The forwarder row of keylife / Audit pipeline: each sink's copy of the journal.

Kept apart from ``dashboards.pipeline`` for size only; the ``sink`` variable defined here narrows
every panel of the row to the chosen sinks (``forwarder.sinks`` names).
"""

from __future__ import annotations

from grafana_foundation_sdk.builders.dashboard import QueryVariable

from dashboards.common import (
    PanelBuilder,
    prom,
    query_variable,
)
from dashboards.panels import (
    ZERO_IS_GOOD,
    stat_panel,
    state_mappings,
    steps,
    timeseries_panel,
)

SINKS = 'job="$job", sink=~"$sink"'


def sink_variable() -> QueryVariable:
    """Configured forwarder sinks (forwarder.sinks names); several or All."""
    return query_variable(
        "sink",
        "Sink",
        'label_values(keylife_forward_up{job="$job"}, sink)',
        "Forwarder sinks to show on the forwarder panels.",
        multi=True,
    )


def forwarder() -> list[PanelBuilder]:
    """Each sink's copy of the journal."""
    return [
        stat_panel(
            "Sink up",
            "UP while the sink's last delivery attempt succeeded. DOWN for 5 min raises "
            "KeylifeForwarderSinkDown; nothing is lost (the journal is the buffer), see failures by reason.",
            prom(f"keylife_forward_up{{{SINKS}}}", "{{sink}}"),
            mappings=state_mappings("UP", "DOWN"),
            thresholds=steps(("red", None), ("green", 1)),
            span=6,
            graph=False,
        ),
        stat_panel(
            "Chain mismatches",
            "Signed checkpoints whose hash differs from the chain the forwarder read, since the forwarder "
            "started (KeylifeForwarderChainMismatch). The journal on disk differs from what was signed: run "
            "keylife verify and treat it as tampering until proven otherwise.",
            prom(f"max by (sink) (keylife_forward_chain_mismatches_total{{{SINKS}}})", "{{sink}}"),
            thresholds=ZERO_IS_GOOD,
            span=6,
            graph=False,
        ),
        stat_panel(
            "Quarantine notices not journaled",
            "Quarantined records whose signed notice is not yet in the journal because keylife was "
            "unreachable from keylife forward. Above 0 for 15 min: KeylifeForwarderNoticesUnjournaled; "
            "check forwarder.report_url and its token.",
            prom(f"keylife_forward_quarantine_unjournaled{{{SINKS}}}", "{{sink}}"),
            thresholds=ZERO_IS_GOOD,
            span=6,
        ),
        stat_panel(
            "Oldest unshipped entry",
            "Age of the oldest journal entry each sink has not acknowledged (0 when caught up). Over 5 min "
            "raises KeylifeForwarderLagging, over 1 h its critical level.",
            prom(f"keylife_forward_oldest_unshipped_age_seconds{{{SINKS}}}", "{{sink}}"),
            unit="s",
            thresholds=steps(("green", None), ("orange", 300), ("red", 3600)),
            span=6,
        ),
        *_forwarder_graphs(),
    ]


def _forwarder_graphs() -> list[PanelBuilder]:
    """The forwarder over time, one series per sink."""

    def rate(metric: str, by: str = "sink") -> str:
        return f"sum by ({by}) (rate({metric}{{{SINKS}}}[$__rate_interval]))"

    return [
        timeseries_panel(
            "Lag (entries)",
            "Journal entries each sink has not acknowledged yet. It rises during outages and drains after "
            "(catch-up runs at tens of thousands of events/s).",
            prom(f"keylife_forward_lag_entries{{{SINKS}}}", "{{sink}}"),
        ),
        timeseries_panel(
            "Oldest unshipped entry age",
            "Age of the oldest unacknowledged entry per sink; dashed: 5 min and 1 h alert levels.",
            prom(f"keylife_forward_oldest_unshipped_age_seconds{{{SINKS}}}", "{{sink}}"),
            unit="s",
            thresholds=steps(("green", None), ("orange", 300), ("red", 3600)),
        ),
        timeseries_panel(
            "Records sent",
            "Records each sink acknowledged per second (entries and published checkpoints). It should follow "
            "Journal growth; a sink at 0 while the journal grows is stuck.",
            prom(rate("keylife_forward_records_sent_total"), "{{sink}}"),
            unit="ops",
        ),
        timeseries_panel(
            "Failures by reason",
            "Failed delivery attempts per second by sink and reason: connect, timeout, tls (network or "
            "certificates), http_429/http_5xx (destination overloaded), auth (credentials), http_4xx, "
            "invalid, too_large, too_old (records refused). See docs/forwarding.md, Retries and refusals.",
            prom(rate("keylife_forward_failures_total", "sink, reason"), "{{sink}} {{reason}}"),
            unit="ops",
            stacked=True,
        ),
        timeseries_panel(
            "Quarantined records",
            "Records a destination refused for good, moved to the sink's quarantine file and journaled, per "
            "second by reason (KeylifeForwarderQuarantining). Fix the cause, then replay the quarantine file.",
            prom(rate("keylife_forward_quarantined_total", "sink, reason"), "{{sink}} {{reason}}"),
            unit="ops",
            bars=True,
        ),
        timeseries_panel(
            "Retries",
            "Batches sent again after a retryable failure, per second, with backoff from 0.5 s to 60 s. "
            "Retries without end mean the destination stays down or refuses: see Failures by reason.",
            prom(rate("keylife_forward_retries_total"), "{{sink}}"),
            unit="ops",
        ),
        timeseries_panel(
            "Batch latency p99",
            "99th percentile of the time from sending a batch to its acknowledgement, per sink (successful "
            "batches). The Loki target is 250 ms; higher means a slow destination or network.",
            prom(
                "histogram_quantile(0.99, sum by (sink, le) (rate(keylife_forward_batch_seconds_bucket"
                f"{{{SINKS}}}[$__rate_interval])))",
                "{{sink}}",
            ),
            unit="s",
        ),
        timeseries_panel(
            "Since last acknowledgement",
            "Time since each sink last acknowledged a batch. Grows while the journal is idle (nothing to "
            "ship); a concern when lag is above 0 at the same time.",
            prom(f"time() - (keylife_forward_last_ack_timestamp_seconds{{{SINKS}}} > 0)", "{{sink}}"),
            unit="s",
        ),
    ]
