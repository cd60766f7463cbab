"""Every query the committed dashboards run, and Grafana's variable substitution, for tests and tools.

Read from ``dashboards/json/`` (not from the builders) so a check against a real Prometheus or
Loki judges exactly what ships. ``substitute`` turns a dashboard expression into one a server
accepts: ``$job``, ``${key_id}``, ``${node:regex}``, ``[[sink]]`` and Grafana's own
``$__rate_interval``, ``$__interval`` and ``$__range`` become concrete values.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

JSON_DIR = Path(__file__).resolve().parent / "json"

# Grafana's built-in interval variables, as a 6 h dashboard on a 15 s scrape interval gets them
# (rate interval: four scrape intervals), and the cluster variable's default (All, ``.*``).
# Callers override any of them through ``variables``.
GRAFANA_DEFAULTS: dict[str, str] = {
    "__rate_interval": "1m",
    "__interval": "1m",
    "__range": "6h",
    "cluster": ".*",
}
# Datasource variable -> the plugin it selects (common.PROMETHEUS, common.LOKI).
DATASOURCE_VARIABLES: dict[str, Literal["prometheus", "loki"]] = {
    "${datasource}": "prometheus",
    "${loki_datasource}": "loki",
}

_VARIABLE = re.compile(
    r"\$\{(?P<braced>[A-Za-z_]\w*)(?::[^}]*)?\}"  # ${name} and ${name:format}
    r"|\[\[(?P<bracketed>[A-Za-z_]\w*)(?::[^\]]*)?\]\]"  # [[name]] (deprecated form)
    r"|\$(?P<plain>[A-Za-z_]\w*)"  # $name (never $1: capture references in label_replace stay)
)
_LABEL_VALUES = re.compile(r"^\s*label_values\((?P<args>.*)\)\s*$", re.DOTALL)
_QUERY_RESULT = re.compile(r"^\s*query_result\((?P<expr>.*)\)\s*$", re.DOTALL)


@dataclass(frozen=True)
class Query:
    """One query of one dashboard: a panel target, or a template variable's query.

    ``expr`` is as written in the JSON. For variables, ``panel_title`` is ``variable <name>`` and
    ``selector`` is the series selector inside ``label_values(...)`` (or the expression of
    ``query_result(...)``), the part a server can run as an instant query."""

    dashboard_uid: str
    panel_title: str
    datasource: Literal["prometheus", "loki"]
    expr: str
    ref_id: str = ""
    kind: Literal["target", "variable"] = "target"
    variable: str | None = None
    selector: str | None = None
    instant: bool = False


def _datasource(ref: Any) -> Literal["prometheus", "loki"]:
    """``prometheus`` or ``loki`` from a datasource reference ({uid, type}) or its uid string.

    Anything else raises: a panel on a fixed uid, another datasource, or Grafana's default (no
    reference) would break when imported next to other data sources."""
    uid = ref.get("uid") if isinstance(ref, dict) else ref
    kind = DATASOURCE_VARIABLES.get(uid) if isinstance(uid, str) else None
    if kind is None or (isinstance(ref, dict) and ref.get("type") not in (None, kind)):
        raise ValueError(f"unexpected datasource {ref!r}: the dashboards use only {sorted(DATASOURCE_VARIABLES)}")
    return kind


def walk_panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Every panel, rows included, and the panels held inside (collapsed) rows."""
    for panel in panels:
        yield panel
        yield from walk_panels(panel.get("panels") or [])


def selector_of(query: str) -> str | None:
    """The series selector a variable query reads: ``label_values(sel, label)`` -> ``sel``."""
    if match := _LABEL_VALUES.match(query):
        args = match["args"]
        if "," not in args:  # label_values(label): every series; no selector to report
            return None
        return args[: args.rindex(",")].strip()
    if match := _QUERY_RESULT.match(query):
        return match["expr"].strip()
    return None


def dashboard_queries(model: dict[str, Any]) -> list[Query]:
    """The queries of one dashboard JSON: panel targets in panel order, then the variables."""
    uid = model["uid"]
    out: list[Query] = []
    for panel in walk_panels(model.get("panels") or []):
        panel_ds = panel.get("datasource")
        for target in panel.get("targets") or []:
            out.append(
                Query(
                    dashboard_uid=uid,
                    panel_title=panel.get("title", ""),
                    datasource=_datasource(target.get("datasource") or panel_ds),
                    expr=target.get("expr", ""),
                    ref_id=target.get("refId", ""),
                    instant=bool(target.get("instant", False)),
                )
            )
    for variable in model.get("templating", {}).get("list", []):
        if variable.get("type") != "query":
            continue
        query = variable.get("query")
        expr = query.get("query", "") if isinstance(query, dict) else (query or "")
        out.append(
            Query(
                dashboard_uid=uid,
                panel_title=f"variable {variable['name']}",
                datasource=_datasource(variable.get("datasource")),
                expr=expr,
                kind="variable",
                variable=variable["name"],
                selector=selector_of(expr),
                instant=True,
            )
        )
    return out


def all_queries(json_dir: Path = JSON_DIR) -> list[Query]:
    """Every query of every committed dashboard (``<uid>.json`` in ``json_dir``), by file name."""
    out: list[Query] = []
    for path in sorted(json_dir.glob("*.json")):
        out.extend(dashboard_queries(json.loads(path.read_text(encoding="utf-8"))))
    return out


def substitute(expr: str, variables: Mapping[str, str]) -> str:
    """``expr`` with every dashboard variable replaced by ``variables[name]`` (names without ``$``).

    Grafana's ``__rate_interval``, ``__interval`` and ``__range`` default to ``GRAFANA_DEFAULTS``.
    A variable with no value raises ``KeyError``: silently leaving ``$node`` in a query would make
    Prometheus answer with a parse error far from its cause. Format suffixes (``${node:regex}``)
    are dropped; pass the value already formatted (a regex for a multi-value ``=~`` matcher)."""
    values = {**GRAFANA_DEFAULTS, **variables}

    def replace(match: re.Match[str]) -> str:
        name = match["braced"] or match["bracketed"] or match["plain"]
        if name not in values:
            raise KeyError(f"no value for ${name} in {expr!r}")
        return values[name]

    return _VARIABLE.sub(replace, expr)
