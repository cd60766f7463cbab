"""keylife / Network propagation (``keylife-propagation``): do the nodes apply key state changes?

A revocation helps only once every node that holds the key has applied it. Nodes confirm a key's
new state with an event; until then the key is *propagation pending*. This dashboard shows which
nodes lag or went silent, how long confirmations take, and which keys still wait. The ``node``
variable narrows the per-node panels; the fleet-wide gauges and the lag histogram have no node.
"""

from __future__ import annotations

from grafana_foundation_sdk.builders.dashboard import QueryVariable
from grafana_foundation_sdk.models import dashboard as dm

from dashboards.common import (
    PanelBuilder,
    dashboard,
    finish,
    prom,
    query_variable,
)
from dashboards.panels import (
    MERGE,
    heatmap_panel,
    organize,
    stat_panel,
    steps,
    table_panel,
    timeseries_panel,
)

UID = "keylife-propagation"
NODES = 'job="$job", node=~"$node"'
SILENCE = steps(("green", None), ("orange", 900), ("red", 3600))
LAG_BUCKETS = 'keylife_propagation_lag_seconds_bucket{job="$job"}'


def node_variable() -> QueryVariable:
    """Nodes that ever reported to this keylife; several or All."""
    return query_variable(
        "node",
        "Node",
        'label_values(keylife_node_last_report_timestamp_seconds{job="$job"}, node)',
        "Nodes to show on the per-node panels.",
        multi=True,
    )


def overview() -> list[PanelBuilder]:
    """How complete propagation is right now."""
    return [
        stat_panel(
            "Propagation completeness",
            "Share of usable keys whose current state every node holding them has confirmed. Below 100% "
            "some node has not applied a change yet; the tables below say which keys and nodes.",
            prom('keylife:propagation_completeness_ratio{job="$job"}', "complete"),
            unit="percentunit",
            thresholds=steps(("red", None), ("orange", 0.99), ("green", 1)),
            span=6,
        ),
        stat_panel(
            "Keys pending confirmation",
            "Keys whose current state at least one node that holds them has not confirmed (uncapped). "
            "Brief bumps after a change are normal; keys stuck for 5 min raise "
            "KeylifeKeyStateChangeUnconfirmed.",
            prom('keylife_keys_propagation_pending{job="$job"}', "pending"),
            thresholds=steps(("green", None), ("orange", 1)),
            span=6,
        ),
        stat_panel(
            "Silent nodes",
            "Selected nodes with no event for more than 15 min (KeylifeNodeNotReporting). A silent node "
            "cannot confirm revocations: check the node and its connection to keylife.",
            prom(
                f"count((time() - keylife_node_last_report_timestamp_seconds{{{NODES}}}) > 900) or vector(0)", "silent"
            ),
            thresholds=steps(("green", None), ("red", 1)),
            no_value="0",
            span=6,
        ),
        stat_panel(
            "Confirmation lag p99",
            "99th percentile of the time from a key's state change to a node's confirmation, over the "
            "dashboard's range (all nodes). Rising lag means nodes poll or report too slowly.",
            prom(
                f"histogram_quantile(0.99, sum by (le) (increase({LAG_BUCKETS}[$__range])))",
                "p99",
            ),
            unit="s",
            thresholds=steps(("green", None), ("orange", 300), ("red", 900)),
            span=6,
            graph=False,
        ),
    ]


def per_node() -> list[PanelBuilder]:
    """Each node over time."""
    return [
        timeseries_panel(
            "Time since last report",
            "Seconds since each node's latest event. Dashed lines: 15 min (warning) and 1 h (critical) "
            "of KeylifeNodeNotReporting. A node that stops reporting is down, cut off, or lost its "
            "credentials (see auth failures on Audit pipeline).",
            prom(f"time() - keylife_node_last_report_timestamp_seconds{{{NODES}}}", "{{node}}"),
            unit="s",
            thresholds=SILENCE,
        ),
        timeseries_panel(
            "Unconfirmed keys per node",
            "Keys whose current state the node holds but has not confirmed. A node that stays above 0 "
            "after others went back to 0 is not applying changes: look at its propagation events in Loki.",
            prom(f"keylife_node_unconfirmed_keys{{{NODES}}}", "{{node}}"),
        ),
        table_panel(
            "Nodes",
            "Per selected node: keys waiting for its confirmation and time since its last report, worst "
            "first when sorted by a column.",
            prom(f"max by (node) (keylife_node_unconfirmed_keys{{{NODES}}})", table_format=True),
            prom(f"time() - max by (node) (keylife_node_last_report_timestamp_seconds{{{NODES}}})", table_format=True),
            transformations=[
                MERGE,
                organize(rename={"Value #A": "unconfirmed keys", "Value #B": "since last report"}),
            ],
            span=12,
        ),
        timeseries_panel(
            "Keys pending confirmation",
            "Keys pending confirmation over time (uncapped). Spikes after bulk changes are normal; a count "
            "that never drains points at a node that holds keys but no longer reports: see the panels left.",
            prom('keylife_keys_propagation_pending{job="$job"}', "pending"),
        ),
    ]


def lag() -> list[PanelBuilder]:
    """How long confirmations take."""
    return [
        heatmap_panel(
            "Confirmation lag",
            "Confirmations per lag bucket over time (from keylife_propagation_lag_seconds). Most should "
            "sit in the lowest buckets; a band moving up means slower nodes.",
            prom(f"sum by (le) (increase({LAG_BUCKETS}[$__rate_interval]))", "{{le}}", heatmap_format=True),
            y_unit="s",
        ),
        timeseries_panel(
            "Confirmation lag quantiles",
            "Median, 90th and 99th percentile of confirmation lag. Empty when no confirmation arrived in the "
            "window (no state changes).",
            *(
                prom(
                    f"histogram_quantile({q}, sum by (le) (rate({LAG_BUCKETS}[$__rate_interval])))",
                    f"p{round(q * 100)}",
                )
                for q in (0.5, 0.9, 0.99)
            ),
            unit="s",
        ),
    ]


def pending_keys() -> list[PanelBuilder]:
    """The keys themselves."""
    return [
        table_panel(
            "Keys awaiting confirmation",
            "Keys with the propagation_pending attention reason, with their state: a revoked or compromised "
            "key here is still accepted by some node. Click a row for the key's detail and events. Capped at "
            "exporter.attention_cap keys.",
            prom(
                'max by (key_id, state, algorithm, purpose) (keylife_key_attention{job="$job", '
                'reason="propagation_pending"} * on (job, instance, key_id) group_left (state, algorithm, purpose) '
                'keylife_key_info{job="$job"})',
                table_format=True,
            ),
            transformations=[organize(exclude=("Value",))],
            links_to_key=True,
        ),
    ]


def build() -> dm.Dashboard:
    """The propagation dashboard: overview, per node, lag, pending keys."""
    builder = dashboard(
        UID,
        "Whether nodes apply key state changes: completeness, silent nodes, unconfirmed keys, confirmation lag.",
    ).with_variable(node_variable())
    return finish(
        builder,
        [("Overview", overview()), ("Nodes", per_node()), ("Lag", lag()), ("Pending keys", pending_keys())],
    )
