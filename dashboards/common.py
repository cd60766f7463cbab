"""What every keylife dashboard shares: datasources, the ``job`` variable, the links bar, targets, layout.

The names here come from ``alert_rules/CONTRACT.md`` (dashboard UIDs and titles): alerts link to
these UIDs, so a dashboard module never spells one itself. Panel helpers are in ``dashboards.panels``.

Datasources are variables (``${datasource}``, ``${loki_datasource}``), never fixed uids, so the JSON
imports into any Grafana: the variables default to the ``__inputs`` Grafana's import asks for
(``dashboards.generate`` adds them), and provisioned copies fall back to the first datasource of
the type. Every Prometheus selector also carries ``cluster=~"$cluster"``, as the monitoring mixins
do: with one Prometheus per cluster (no ``cluster`` label) the variable's All value ``.*`` matches.
"""

from __future__ import annotations

from collections.abc import Sequence

from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.builders import loki, prometheus
from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.models import dashboard as dm
from grafana_foundation_sdk.models import prometheus as pm

PROMETHEUS = dm.DataSourceRef(type_val="prometheus", uid="${datasource}")
LOKI = dm.DataSourceRef(type_val="loki", uid="${loki_datasource}")
# Import inputs (name -> plugin id): Grafana's import dialog asks for one datasource of each and
# writes its uid wherever ``${DS_…}`` appears, i.e. into the datasource variables' defaults.
INPUTS: dict[str, str] = {"DS_PROMETHEUS": "prometheus", "DS_LOKI": "loki"}
JOB = 'job="$job"'
CLUSTER = 'cluster=~"$cluster"'

# uid -> title, as fixed in alert_rules/CONTRACT.md (in the order of the links bar).
DASHBOARDS: dict[str, str] = {
    "keylife-fleet": "keylife / Fleet overview",
    "keylife-key": "keylife / Key detail",
    "keylife-propagation": "keylife / Network propagation",
    "keylife-pipeline": "keylife / Audit pipeline",
    "keylife-compliance": "keylife / Compliance and analytics",
}
TAG = "keylife"
# The key detail dashboard for the key in the clicked row; job and time range travel along.
KEY_DETAIL_URL = (
    "/d/keylife-key?${datasource:queryparam}&${cluster:queryparam}&var-job=${job}"
    "&var-key_id=${__data.fields.key_id}&${__url_time_range}"
)

DAY = 86400
Target = prometheus.Dataquery | loki.Dataquery
PanelBuilder = cogbuilder.Builder[dm.Panel]


def dashboard(uid: str, description: str, *, loki: bool = False) -> db.Dashboard:
    """A dashboard with the settings all five share: 6 h, 1 min refresh, the datasource, cluster and
    ``job`` variables, links. ``loki`` adds the Loki datasource variable.

    Editable, so an imported copy can be adapted; provisioned copies stay unchangeable through the
    provider's ``allowUiUpdates: false``, and the source of truth remains the Python modules."""
    builder = (
        db.Dashboard(DASHBOARDS[uid])
        .uid(uid)
        .description(description)
        .tags([TAG])
        .editable()
        .timezone("browser")
        .time("now-6h", "now")
        .refresh("1m")
        .tooltip(dm.DashboardCursorSync.CROSSHAIR)
        .with_variable(datasource_variable("datasource", "Prometheus", "prometheus", "DS_PROMETHEUS"))
    )
    if loki:
        builder = builder.with_variable(datasource_variable("loki_datasource", "Loki", "loki", "DS_LOKI"))
    builder = builder.with_variable(cluster_variable()).with_variable(job_variable())
    for other, title in DASHBOARDS.items():
        if other != uid:
            builder = builder.link(
                db.DashboardLink(title.removeprefix("keylife / "))
                .type(dm.DashboardLinkType.LINK)
                .url(f"/d/{other}")
                .icon("dashboard")
                .tooltip(title)
                .include_vars(True)
                .keep_time(True)
            )
    return builder


def datasource_variable(name: str, label: str, plugin: str, input_name: str) -> db.DatasourceVariable:
    """A datasource picker of one plugin type, defaulting to the import input ``input_name``."""
    return (
        db.DatasourceVariable(name)
        .label(label)
        .description(f"The {label} datasource the panels query.")
        .type(plugin)
        .current(dm.VariableOption(selected=True, text=f"${{{input_name}}}", value=f"${{{input_name}}}"))
    )


def cluster_variable() -> db.QueryVariable:
    """``cluster``: the external/target label that tells clusters apart in a shared Prometheus.

    All (``.*``) by default, which also matches series without the label, so a single-cluster
    setup needs nothing."""
    return (
        db.QueryVariable("cluster")
        .label("Cluster")
        .description("The cluster label, where one Prometheus (or Thanos, Mimir) holds several clusters.")
        .query("label_values(keylife_build_info, cluster)")
        .datasource(PROMETHEUS)
        .refresh(dm.VariableRefresh.ON_DASHBOARD_LOAD)
        .sort(dm.VariableSort.ALPHABETICAL_ASC)
        .multi(True)
        .include_all(True)
        .all_value(".*")
        .current(dm.VariableOption(selected=True, text=["All"], value=["$__all"]))
    )


def scoped(expr: str) -> str:
    """``expr`` with ``cluster=~"$cluster"`` next to each ``job="$job"`` matcher (modules write only the job)."""
    return expr.replace(JOB, f"{CLUSTER}, {JOB}")


def job_variable() -> db.QueryVariable:
    """``job``: the scrape job keylife runs under. Every query filters on it, so two deployments
    scraped by one Prometheus (say staging and production) never mix on a panel."""
    return (
        db.QueryVariable("job")
        .label("Job")
        .description("Prometheus scrape job of the keylife instance to show.")
        .query(f"label_values(keylife_build_info{{{CLUSTER}}}, job)")
        .datasource(PROMETHEUS)
        .current(dm.VariableOption(selected=True, text="keylife", value="keylife"))
        .refresh(dm.VariableRefresh.ON_DASHBOARD_LOAD)
        .sort(dm.VariableSort.ALPHABETICAL_ASC)
    )


def query_variable(name: str, label: str, query: str, description: str, *, multi: bool = False) -> db.QueryVariable:
    """A Prometheus ``label_values`` variable; ``multi`` ones offer All (queries then use ``=~``)."""
    variable = (
        db.QueryVariable(name)
        .label(label)
        .description(description)
        .query(scoped(query))
        .datasource(PROMETHEUS)
        .refresh(dm.VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(dm.VariableSort.ALPHABETICAL_ASC)
        .allow_custom_value(True)
    )
    if multi:
        variable = (
            variable.multi(True)
            .include_all(True)
            .current(dm.VariableOption(selected=True, text=["All"], value=["$__all"]))
        )
    return variable


def prom(
    expr: str, legend: str = "", *, table_format: bool = False, heatmap_format: bool = False
) -> prometheus.Dataquery:
    """A Prometheus target. Tables ask for one instant value per series: a table of a range would
    repeat every key once per step."""
    query = prometheus.Dataquery().expr(scoped(expr)).datasource(PROMETHEUS).editor_mode(pm.QueryEditorMode.CODE)
    if legend:
        query = query.legend_format(legend)
    if table_format:
        query = query.instant().format(pm.PromQueryFormat.TABLE)
    elif heatmap_format:
        query = query.range().format(pm.PromQueryFormat.HEATMAP)
    else:
        query = query.range()
    return query


def logql(expr: str, legend: str = "") -> loki.Dataquery:
    """A Loki target (a log query for logs panels, a metric query for time series)."""
    query = loki.Dataquery().expr(expr).datasource(LOKI).query_type("range")
    return query.legend_format(legend) if legend else query


def finish(builder: db.Dashboard, sections: Sequence[tuple[str, Sequence[PanelBuilder]]]) -> dm.Dashboard:
    """Add each (row title, panels) section as an open row, build, and number the panels 1, 2, ….

    Open rows (panels after the row, not inside it) because the SDK's ``Row.with_panel`` collapses
    the row and hides its panels until clicked. The panel widths of a section add up to 24 per line:
    the SDK's layout wraps only after a line is full, never before a panel that would overflow.
    Ids because the SDK leaves panels without one and gives every row id 0: Grafana would assign
    them on load, differently after each edit, and duplicate ids break "view panel" links."""
    for title, panels in sections:
        builder = builder.with_row(db.Row(title))
        for panel in panels:
            builder = builder.with_panel(panel)
    model = builder.build()
    next_id = 1
    for panel in model.panels or []:
        panel.id_val = next_id
        next_id += 1
        for inner in getattr(panel, "panels", None) or []:
            inner.id_val = next_id
            next_id += 1
    return model
