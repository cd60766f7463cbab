"""``keylife report compliance`` and ``keylife report check``: compliance reports as evidence.

* ``compliance``: from a running server (``--url``, an ``audit`` token) or offline from the data
  directory (the journal's latest signed checkpoint, replayed into a scratch registry); ``--format
  json|csv|html|pdf`` to ``-o FILE`` (written atomically).
* ``check REPORT --key VERIFIER``: offline, recomputes the report from the journal up to the checkpoint
  it names and compares every figure and the digest. Exit 0 confirmed, 1 a figure, the digest or the
  checkpoint does not hold (named), 2 could not run.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

from keylife.response.reports.model import Period

FORMATS = ("json", "csv", "html", "pdf")
DEFAULT_DAYS = 30


def register(sub: Any) -> None:
    p = sub.add_parser("report", help="compliance reports: generate, check offline")
    rsub = type(sub)(p.add_subparsers(dest="report_command", required=True, metavar="COMMAND"), sub.common)
    c = rsub.add_parser("compliance", help="a compliance report bound to a signed checkpoint")
    c.add_argument("--from", dest="start", help="period start, a UTC date or RFC 3339 time (default: --to - 30 days)")
    c.add_argument("--to", dest="end", help="period end, exclusive (default: tomorrow 00:00 UTC)")
    c.add_argument(
        "--format", choices=FORMATS, default="json", help="json (the evidence), csv, html, or pdf (needs Chromium)"
    )
    c.add_argument("-o", "--output", type=Path, required=True, help="the report file (written atomically)")
    for name in ("owner", "purpose", "algorithm", "node"):
        c.add_argument(f"--{name}", help=f"only keys of this {name}")
    c.add_argument("--state", action="append", help="only keys in this state (repeatable)")
    c.add_argument("--generated-at", help="the report's generated_at (default: now); a recomputation gives it again")
    c.add_argument("--url", help="a running keylife (else the data directory, offline)")
    c.add_argument("--checkpoint", type=Path, help="offline: report at this signed checkpoint (default: the latest)")
    c.add_argument("--token-file", metavar="PATH", help="file holding an audit token, mode 0600 (else $KEYLIFE_TOKEN)")
    c.set_defaults(func=cmd_compliance)
    k = rsub.add_parser("check", help="recompute a report from the journal and confirm it")
    k.add_argument("report", type=Path, help="the report (JSON, or the HTML that embeds it)")
    k.add_argument("--key", required=True, action="append", help="trusted verifier key or a file holding one")
    k.add_argument("--journal", type=Path, help="journal directory (default: from the config)")
    k.set_defaults(func=cmd_check)


def parse_time(text: str) -> datetime:
    value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def period_of(start: str | None, end: str | None, now: datetime) -> Period:
    stop = parse_time(end) if end else (now.replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=1))
    begin = parse_time(start) if start else stop - timedelta(days=DEFAULT_DAYS)
    if begin >= stop:
        from keylife.cli.main import UsageError

        raise UsageError(f"--from {begin.isoformat()} is not before --to {stop.isoformat()}")
    return Period(begin, stop)


def selector_query(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {n: getattr(args, n) for n in ("owner", "purpose", "algorithm", "node") if getattr(args, n)}
    if args.state:
        out["states"] = list(args.state)
    return out


def render(report: dict[str, Any], fmt: str) -> bytes:
    from keylife.response.reports import machine

    if fmt == "json":
        return machine.to_json(report)
    if fmt == "csv":
        return machine.to_csv(report)
    from keylife.response.reports.html import to_html

    page = to_html(report)
    if fmt == "html":
        return page
    from keylife.cli.report_pdf import html_to_pdf

    return html_to_pdf(page)


def write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    tmp.replace(path)


def cmd_compliance(args: argparse.Namespace) -> int:
    now = datetime.now(UTC)
    period = period_of(args.start, args.end, now)
    generated_at = args.generated_at or now.strftime("%Y-%m-%dT%H:%M:%SZ")
    query = selector_query(args)
    from keylife.cli.main import UsageError

    try:
        report = (
            _remote(args, period, generated_at, query)
            if args.url
            else offline_report(args, period, generated_at, query)
        )
        data = render(report, args.format)
    except (ValueError, RuntimeError) as exc:  # a bad selector, a pruned journal, no Chromium for the PDF
        raise UsageError(str(exc)) from exc
    write_atomic(args.output, data)
    print(f"{args.output}: {report['digest']} at checkpoint {report['checkpoint']['size']}", file=sys.stderr)
    return 0


def _remote(args: argparse.Namespace, period: Period, generated_at: str, query: dict[str, Any]) -> dict[str, Any]:
    import httpx

    from keylife.cli.client import ClientError
    from keylife.cli.main import _token

    params: list[tuple[str, str]] = [("from", period.describe()["from"]), ("to", period.describe()["to"]),
                                     ("generated_at", generated_at)]  # fmt: skip
    params += [(k, v) for k, v in query.items() if k != "states"] + [("state", s) for s in query.get("states", [])]
    headers = {"Authorization": f"Bearer {_token(args)}"}
    url = args.url.rstrip("/") + "/v1/reports/compliance"
    try:
        response = httpx.get(url, params=params, headers=headers, timeout=300, trust_env=False)
    except httpx.HTTPError as exc:
        raise ClientError(f"{url}: {exc}") from exc
    if response.status_code != 200:
        raise ClientError(f"{url}: HTTP {response.status_code} {response.text[:300]}")
    return response.json()


def rules_for(args: argparse.Namespace) -> Any:
    from exporter.policy import load_policy
    from keylife.cli.main import _config
    from keylife.cli.report_rules import PolicyRules

    return PolicyRules(load_policy(_config(args).exporter.policy))


def offline_report(
    args: argparse.Namespace, period: Period, generated_at: str, query: dict[str, Any]
) -> dict[str, Any]:
    from keylife.cli.main import UsageError, _config
    from keylife.journal.anchor import checkpoint_matches
    from keylife.journal.note import parse
    from keylife.response.reports.model import compute
    from keylife.response.reports.source import last_verification, replayed
    from keylife.response.selector import parse_selector

    journal_dir = _config(args).journal_dir
    try:
        note = (args.checkpoint or journal_dir / "checkpoint").read_text()
    except OSError as exc:
        raise UsageError(f"{exc.filename}: no signed checkpoint to report at ({exc.strerror})") from exc
    cp = parse(note)
    if not checkpoint_matches(journal_dir, cp.origin, cp):
        raise UsageError(
            f"{journal_dir}: the journal does not hold the history its checkpoint signed: run keylife verify"
        )
    selector = parse_selector(query) if query else None
    with tempfile.TemporaryDirectory() as scratch, replayed(journal_dir, cp.size, Path(scratch)) as db:
        return compute(db, checkpoint=note, rules=rules_for(args), period=period, generated_at=generated_at,
                       selector=selector, verification=last_verification(journal_dir))  # fmt: skip


def load_report(path: Path) -> dict[str, Any]:
    """The report's JSON, from a JSON file or from the HTML page that embeds it."""
    data = path.read_bytes()
    if data.lstrip().startswith(b"<"):
        from keylife.response.reports.html import embedded_json

        data = embedded_json(data)
    return orjson.loads(data)


def differences(claimed: Any, actual: Any, path: str = "") -> list[str]:
    """Every figure that differs, by dotted path (first 20)."""
    if isinstance(claimed, dict) and isinstance(actual, dict):
        out = []
        for name in sorted(set(claimed) | set(actual)):
            out += differences(claimed.get(name), actual.get(name), f"{path}.{name}" if path else name)
        return out[:20]
    if isinstance(claimed, list) and isinstance(actual, list) and len(claimed) == len(actual):
        out = []
        for i, (a, b) in enumerate(zip(claimed, actual, strict=True)):
            out += differences(a, b, f"{path}.{i}")
        return out[:20]
    return [] if claimed == actual else [f"{path}: the report says {claimed!r}, the journal implies {actual!r}"]


def cmd_check(args: argparse.Namespace) -> int:
    from keylife.cli.journal_cmds import _journal_dir, _verifiers
    from keylife.cli.report_rules import rules_from_report
    from keylife.journal.anchor import RootUnavailable, checkpoint_matches
    from keylife.journal.note import check_signatures, parse
    from keylife.response.reports.model import FORMAT, compute, digest
    from keylife.response.reports.source import replayed
    from keylife.response.selector import parse_selector

    report = load_report(args.report)
    page = args.report.read_bytes()
    if page.lstrip().startswith(b"<"):  # the page must be the rendering of the report it embeds, byte for byte
        from keylife.response.reports.html import to_html

        if to_html(report) != page:
            print("FAIL html: the page is not the rendering of the report it embeds (its text was changed)")
            return 1
    if report.get("format") != FORMAT:
        print(f"FAIL format: {report.get('format')!r} is not {FORMAT}")
        return 1
    if digest(report) != report.get("digest"):
        print(f"FAIL digest: the report's content hashes to {digest(report)}, it claims {report.get('digest')}")
        return 1
    note = report["checkpoint"]["note"]
    cp = parse(note)
    problem = check_signatures(cp, _verifiers(args.key))
    if problem:
        print(f"FAIL checkpoint: {problem}")
        return 1
    journal_dir = _journal_dir(args)
    try:
        held = checkpoint_matches(journal_dir, cp.origin, cp)
    except RootUnavailable as exc:
        held = False
        print(f"journal: {exc}", file=sys.stderr)
    if not held:
        print(f"FAIL checkpoint: the journal at {journal_dir} does not hold the history of checkpoint size {cp.size}")
        return 1
    start, end = (parse_time(report["period"][k]) for k in ("from", "to"))
    sel = report["selector"]
    selector = None if sel == {"all": True} else parse_selector(sel)
    rules = rules_from_report(report["policy"]["document"], report["policy"]["source"])
    with tempfile.TemporaryDirectory() as scratch, replayed(journal_dir, cp.size, Path(scratch)) as db:
        again = compute(db, checkpoint=note, rules=rules, period=Period(start, end),
                        generated_at=report["generated_at"],
                        selector=selector, verification=report["integrity"]["last_verification"])  # fmt: skip
    wrong = differences(
        {k: v for k, v in report.items() if k != "digest"}, {k: v for k, v in again.items() if k != "digest"}
    )
    for line in wrong:
        print(f"FAIL {line}")
    if wrong or again["digest"] != report["digest"]:
        if not wrong:
            print(f"FAIL digest: recomputed {again['digest']}, the report says {report['digest']}")
        return 1
    print(f"OK {report['digest']}: every figure is what the journal implies at checkpoint {cp.origin} size {cp.size}")
    return 0
