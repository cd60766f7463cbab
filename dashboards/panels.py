"""Panel helpers: one function per panel type, so every panel follows the same conventions.

Each takes a title, a description (what the panel means and what to do about it) and targets,
numbers the targets A, B, … and puts their datasource on the panel. Widths default to halves
(graphs) and sixths (stats) of the 24-column grid, so sections fill whole lines.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

from grafana_foundation_sdk.builders import bargauge, heatmap, logs, loki, stat, table, timeseries
from grafana_foundation_sdk.builders import common as cb
from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.models import common as cm
from grafana_foundation_sdk.models import dashboard as dm
from grafana_foundation_sdk.models import heatmap as hm

from dashboards.common import KEY_DETAIL_URL, LOKI, PROMETHEUS, Target

P = TypeVar("P", stat.Panel, timeseries.Panel, table.Panel, bargauge.Panel, heatmap.Panel, logs.Panel)


def steps(*pairs: tuple[str, float | None]) -> db.ThresholdsConfig:
    """Absolute thresholds from (color, lower bound) pairs; the first bound is None (the base)."""
    return (
        db.ThresholdsConfig()
        .mode(dm.ThresholdsMode.ABSOLUTE)
        .steps([dm.Threshold(value=value, color=color) for color, value in pairs])
    )


NEUTRAL = steps(("blue", None))
ZERO_IS_GOOD = steps(("green", None), ("red", 1))


def state_mappings(ok: str, bad: str) -> list[dm.ValueMapping]:
    """1/0 gauges (up, verification ok) shown as words, green or red."""
    return [
        dm.ValueMap(
            options={
                "1": dm.ValueMappingResult(text=ok, color="green", index=0),
                "0": dm.ValueMappingResult(text=bad, color="red", index=1),
            }
        )
    ]


def key_links() -> list[db.DashboardLink]:
    """The data link from any row that has a ``key_id`` to that key's detail dashboard."""
    return [db.DashboardLink("Key detail for ${__data.fields.key_id}").url(KEY_DETAIL_URL)]


def organize(exclude: Sequence[str] = (), rename: dict[str, str] | None = None) -> dm.DataTransformerConfig:
    """Hide the columns an instant table query always brings (Time, job, instance) and name the value."""
    hidden = {name: True for name in ("Time", "__name__", "job", "instance", *exclude)}
    return dm.DataTransformerConfig(
        id_val="organize", options={"excludeByName": hidden, "renameByName": rename or {}, "indexByName": {}}
    )


MERGE = dm.DataTransformerConfig(id_val="merge", options={})


def _targets(panel: P, targets: Sequence[Target]) -> P:
    """refIds A, B, … in order, and the datasource of the targets on the panel itself."""
    for index, target in enumerate(targets):
        panel = panel.with_target(target.ref_id(chr(ord("A") + index)))
    datasource = LOKI if all(isinstance(t, loki.Dataquery) for t in targets) else PROMETHEUS
    return panel.datasource(datasource)


def stat_panel(
    title: str,
    description: str,
    *targets: Target,
    unit: str = "short",
    thresholds: db.ThresholdsConfig = NEUTRAL,
    mappings: list[dm.ValueMapping] | None = None,
    no_value: str | None = None,
    span: int = 4,
    height: int = 4,
    graph: bool = True,
) -> stat.Panel:
    """A single number (its latest value), coloured by thresholds, with its trend behind it."""
    panel = (
        stat.Panel()
        .title(title)
        .description(description)
        .unit(unit)
        .thresholds(thresholds)
        .height(height)
        .span(span)
        .reduce_options(cb.ReduceDataOptions().calcs(["lastNotNull"]).values(False))
        .graph_mode(cm.BigValueGraphMode.AREA if graph else cm.BigValueGraphMode.NONE)
        .color_mode(cm.BigValueColorMode.BACKGROUND)
    )
    if mappings:
        panel = panel.mappings(mappings)
    if no_value is not None:
        panel = panel.no_value(no_value)
    return _targets(panel, targets)


def timeseries_panel(
    title: str,
    description: str,
    *targets: Target,
    unit: str = "short",
    stacked: bool = False,
    bars: bool = False,
    thresholds: db.ThresholdsConfig | None = None,
    span: int = 12,
    height: int = 8,
) -> timeseries.Panel:
    """A graph over the dashboard's range; with thresholds, they are drawn as dashed lines."""
    panel = (
        timeseries.Panel()
        .title(title)
        .description(description)
        .unit(unit)
        .height(height)
        .span(span)
        .fill_opacity(60 if stacked or bars else 10)
        .draw_style(cm.GraphDrawStyle.BARS if bars else cm.GraphDrawStyle.LINE)
        .legend(
            cb.VizLegendOptions()
            .display_mode(cm.LegendDisplayMode.TABLE)
            .placement(cm.LegendPlacement.BOTTOM)
            .show_legend(True)
            .calcs(["lastNotNull", "max"])
        )
        .tooltip(cb.VizTooltipOptions().mode(cm.TooltipDisplayMode.MULTI).sort(cm.SortOrder.DESCENDING))
    )
    if stacked:
        panel = panel.stacking(cb.StackingConfig().mode(cm.StackingMode.NORMAL))
    if thresholds is not None:
        panel = panel.thresholds(thresholds).thresholds_style(
            cb.GraphThresholdsStyleConfig().mode(cm.GraphThresholdsStyleMode.DASHED)
        )
    return _targets(panel, targets)


def table_panel(
    title: str,
    description: str,
    *targets: Target,
    transformations: Sequence[dm.DataTransformerConfig] = (),
    links_to_key: bool = False,
    unit: str = "short",
    span: int = 24,
    height: int = 8,
) -> table.Panel:
    """A table of instant values; ``links_to_key`` makes every cell open that row's key detail."""
    panel = (
        table.Panel()
        .title(title)
        .description(description)
        .unit(unit)
        .height(height)
        .span(span)
        .transformations(list(transformations))
        .filterable(True)
    )
    if links_to_key:
        panel = panel.data_links(key_links())
    return _targets(panel, targets)


def bargauge_panel(title: str, description: str, *targets: Target, span: int = 12) -> bargauge.Panel:
    """Current values side by side (bands, states): a distribution at a glance."""
    panel = (
        bargauge.Panel()
        .title(title)
        .description(description)
        .height(8)
        .span(span)
        .orientation(cm.VizOrientation.HORIZONTAL)
        .display_mode(cm.BarGaugeDisplayMode.BASIC)
        .reduce_options(cb.ReduceDataOptions().calcs(["lastNotNull"]).values(False))
        .thresholds(NEUTRAL)
    )
    return _targets(panel, targets)


def heatmap_panel(title: str, description: str, target: Target, *, y_unit: str, span: int = 12) -> heatmap.Panel:
    """A histogram over time from ``_bucket`` series (format heatmap: Grafana de-cumulates the buckets)."""
    panel = (
        heatmap.Panel()
        .title(title)
        .description(description)
        .height(8)
        .span(span)
        .calculate(False)
        .y_axis(heatmap.YAxisConfig().unit(y_unit))
        .rows_frame(heatmap.RowsHeatmapOptions().layout(cm.HeatmapCellLayout.LE))
        .color(heatmap.HeatmapColorOptions().mode(hm.HeatmapColorMode.SCHEME).scheme("Oranges").steps(64))
        .show_value(cm.VisibilityMode.NEVER)
    )
    return _targets(panel, [target])


def logs_panel(title: str, description: str, *targets: Target, height: int = 10) -> logs.Panel:
    """Log lines, newest first, with their structured metadata one click away."""
    panel = (
        logs.Panel()
        .title(title)
        .description(description)
        .height(height)
        .span(24)
        .show_time(True)
        .wrap_log_message(True)
        .enable_log_details(True)
        .sort_order(cm.LogsSortOrder.DESCENDING)
    )
    return _targets(panel, targets)
