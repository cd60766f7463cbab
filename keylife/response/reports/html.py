"""The report for people: one self-contained HTML page (inline CSS and SVG, no script, no external
resource) that prints cleanly; the PDF is this page printed by headless Chromium.

The page embeds the report's JSON (``<script type="application/json" id="report-data">``, inert), so
``keylife report check`` confirms an HTML report as it confirms the JSON one.
"""

from __future__ import annotations

import re
from html import escape
from typing import Any

import orjson

from keylife.response.reports import svg
from keylife.response.reports.series import STATES

_DATA = re.compile(rb'<script type="application/json" id="report-data">(.*?)</script>', re.S)
CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;color:#222;margin:2rem auto;max-width:60rem;
 line-height:1.4;padding:0 1rem}
h1{font-size:1.6rem;margin-bottom:.2rem}h2{font-size:1.2rem;border-bottom:1px solid #ccc;margin-top:2rem}
table{border-collapse:collapse;margin:.5rem 0;font-size:.85rem}th,td{border:1px solid #ccc;padding:.2rem .5rem;
 text-align:left;vertical-align:top}td.n{text-align:right}.meta{color:#555;font-size:.9rem}
.grid{display:grid;grid-template-columns:repeat(auto-fit,minmax(26rem,1fr));gap:1rem}
figure.chart{margin:0;break-inside:avoid}figure.chart svg{width:100%;height:auto}
figcaption{font-weight:600;font-size:.95rem}ul.legend{list-style:none;padding:0;font-size:.75rem;display:flex;
 flex-wrap:wrap;gap:.6rem}ul.legend span{display:inline-block;width:.7rem;height:.7rem;margin-right:.25rem}
code,pre{font-size:.75rem;word-break:break-all;white-space:pre-wrap}.bad{color:#a11}.ok{color:#161}
@media print{body{margin:0;max-width:none}h2{break-after:avoid}table,figure{break-inside:avoid}
 a{color:inherit;text-decoration:none}@page{size:A4;margin:15mm}}
"""


def embedded_json(page: bytes) -> bytes:
    match = _DATA.search(page)
    if match is None:
        raise ValueError("this HTML page embeds no keylife report (no report-data script)")
    return match[1]


def _table(head: list[str], rows: list[list[Any]]) -> str:
    if not rows:
        return "<p>None.</p>"
    th = "".join(f"<th>{escape(h)}</th>" for h in head)
    body = "".join(
        "<tr>" + "".join(f'<td class="n">{c}</td>' if isinstance(c, int | float) else f"<td>{escape(str(c))}</td>"
                         for c in ("-" if c is None else c for c in row)) + "</tr>"
        for row in rows
    )  # fmt: skip
    return f"<table><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>"


def _counts(title: str, counts: dict[str, int]) -> str:
    return (
        f"<section><h3>{escape(title)}</h3>" + _table(["", "keys"], [[k, v] for k, v in counts.items()]) + "</section>"
    )


def _day(at: str) -> str:
    """An axis label: the step's end as month-day (the period's dates head the page)."""
    return at[5:10]


def _charts(charts: dict[str, Any]) -> str:
    states = charts["states_over_time"]
    labels = [_day(p["at"]) for p in states]
    names = list(STATES)  # lifecycle order, whatever order the JSON gives
    series = {n: [p[n] for p in states] for n in names if any(p[n] for p in states)}
    rot = charts["rotation_compliance"]
    ages = charts["age_distribution"]
    owners = charts["top_owners_by_violations"]
    return '<div class="grid">' + "".join([
        svg.stacked_columns("Keys by state over the period", labels, series),
        svg.bars("Age of usable keys at the period's end", [a["bucket"] for a in ages], [a["keys"] for a in ages]),
        svg.line("Rotation compliance: active keys not yet due", [_day(p["at"]) for p in rot],
                 [p["share"] for p in rot]),
        svg.bars("Top owners by broken rules", [o["owner"] for o in owners], [o["violations"] for o in owners]),
    ]) + "</div>"  # fmt: skip


def to_html(report: dict[str, Any]) -> bytes:
    """The page; rendered from the report's sorted-keys form, so the page depends on the report's content only
    (``keylife report check`` renders the embedded report again and compares the bytes)."""
    report = orjson.loads(orjson.dumps(report, option=orjson.OPT_SORT_KEYS))
    cp, period, inv = report["checkpoint"], report["period"], report["inventory"]
    rot, after, expired = report["rotations"], report["use_after_withdrawal"], report["expired_in_use"]
    prop, inc, integ = report["propagation"], report["incidents"], report["integrity"]
    ver = integ["last_verification"]
    verified = (
        "never"
        if ver is None
        else f"{ver['at']}: {'OK' if ver['ok'] else 'FAULTS'} ({ver['faults']} faults, {ver['entries']} entries)"
    )
    rules_rows = [[r["rule"], r["source"], r["description"], r["breaking"]] for r in report["rules"]]
    breaking = [[r["rule"], k["key_id"], k["owner"], k["since"]] for r in report["rules"] for k in r["keys"][:50]]
    stats = prop["confirmation_seconds"]
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>keylife compliance report {escape(period['from'][:10])} to {escape(period['to'][:10])}</title>",
        f"<style>{CSS}</style></head><body>",
        "<h1>Key compliance report</h1>",
        f'<p class="meta">Period {escape(period["from"])} to {escape(period["to"])} (exclusive) · selector '
        f"<code>{escape(orjson.dumps(report['selector']).decode())}</code> · generated {escape(report['generated_at'])}"
        f" · policy {escape(report['policy']['source'])}</p>",
        f'<p class="meta">Computed at the signed checkpoint of <code>{escape(cp["origin"])}</code> size {cp["size"]}, '
        f"root <code>{escape(cp['root'])}</code>. Digest <code>{escape(report['digest'])}</code>. Check it offline: "
        "<code>keylife report check REPORT --key verifier.key</code>.</p>",
        "<h2>Charts</h2>", _charts(report["charts"]),
        f"<h2>Inventory: {inv['total']} keys</h2>", '<div class="grid">',
        _counts("By state", inv["by_state"]), _counts("By algorithm", inv["by_algorithm"]),
        _counts("By purpose", inv["by_purpose"]), _counts("By owner", inv["by_owner"]), "</div>",
        "<h2>Policy rules</h2>", _table(["rule", "source", "what breaks it", "keys breaking it"], rules_rows),
        "<h3>Keys breaking a rule (first 50 per rule)</h3>", _table(["rule", "key", "owner", "since"], breaking),
        "<h2>Rotations in the period</h2>",
        _table(["done", "due", "due and done", "on-time rate", "overdue now"],
               [[rot["done"], rot["due"], rot["due_done"], rot["on_time_rate"], rot["overdue"]]]),
        "<h2>Keys used after revocation or compromise</h2>",
        _table(["key", "state", "first use after", "last use after", "reports"],
               [[i["key_id"], i["state"], i["first_at"], i["last_at"], i["reports"]] for i in after["items"]]),
        "<h2>Expired keys still in use</h2>",
        _table(["key", "owner", "expired", "last used"],
               [[i["key_id"], i["owner"], i["expired_at"], i["last_used_at"]] for i in expired["items"]]),
        "<h2>Propagation of revocations</h2>",
        _table(["withdrawn keys", "confirmed by every node", "unconfirmed (key, node) pairs", "mean s", "p95 s",
                "max s"],
               [[prop["withdrawn_keys"], prop["fully_confirmed"], prop["unconfirmed_pairs"], stats["mean"],
                 stats["p95"], stats["max"]]]),
        f"<h2>Incidents opened in the period: {inc['opened']}</h2>",
        _table(["incident", "severity", "status", "opened", "mitigated"],
               [[i["id"], i["severity"], i["status"], i["opened_at"], i["mitigated_at"]] for i in inc["items"]]),
        "<h2>Journal integrity</h2>",
        f"<p>Last verification: {escape(verified)}.</p><pre>{escape(cp['note'])}</pre>",
        '<script type="application/json" id="report-data">',
        orjson.dumps(report, option=orjson.OPT_SORT_KEYS).decode().replace("</", "<\\/"),
        "</script></body></html>",
    ]  # fmt: skip
    return ("\n".join(parts) + "\n").encode()
