"""``keylife incident list|show|open|note|assign|status|resolve|close|link|export``: the incident
workflow as a client of a running server (``--url``, a token from --token-file or $KEYLIFE_TOKEN).

Exit codes: 0 done; 1 the server refused (the problem's detail on stderr: a status change the
workflow forbids, a missing role); 2 it could not run (no token, server unreachable).
``export -o FILE`` writes FILE (the JSON report), FILE with ``.md`` (the human rendering) and with
``.proof.json`` (the proof bundle alone, for ``keylife journal check-proof``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from keylife.cli.client import ClientError
from keylife.response.incident_report import markdown

DEFAULT_URL = "http://127.0.0.1:8787"
INC = "the incident id (inc-YYYYMMDD-...)"
STATUSES = ("open", "mitigating", "resolved", "closed")
SEVERITIES = ("critical", "high", "medium", "low")


def register(isub: Any) -> None:
    """Add the incident workflow to ``keylife incident``."""
    from keylife.cli.main import _add_server_options

    def add(name: str, help: str) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = isub.add_parser(name, help=help)
        _add_server_options(p, "keylife server URL", DEFAULT_URL)
        p.set_defaults(func=cmd_incident, incident_action=name)
        return p

    p = add("list", "list incidents (newest first)")
    p.add_argument("--status", choices=STATUSES, help="only incidents in this status")
    p.add_argument("--severity", choices=SEVERITIES, help="only incidents of this severity")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p = add("show", "an incident and its timeline")
    p.add_argument("incident", help=INC)
    p.add_argument("--json", action="store_true", help="the server's JSON answer instead of the table")
    p = add("open", "open an incident")
    p.add_argument("--title", required=True, help="what happened, in one line")
    p.add_argument("--severity", required=True, choices=SEVERITIES, help="how bad it is")
    p.add_argument("--key", action="append", default=[], dest="keys", metavar="KEY", help="a key involved (repeat)")
    p.add_argument("--node", action="append", default=[], dest="nodes", metavar="NODE", help="a node involved")
    p.add_argument("--assignee", help="who works on it")
    p = add("note", "add a note to the timeline")
    p.add_argument("incident", help=INC)
    p.add_argument("text", help="the note (at most 1024 characters)")
    p = add("assign", "assign the incident to someone")
    p.add_argument("incident", help=INC)
    p.add_argument("assignee", help="who works on it from now on")
    p = add("link", "add keys or nodes to the incident")
    p.add_argument("incident", help=INC)
    p.add_argument("--key", action="append", default=[], dest="keys", metavar="KEY", help="a key to add (repeat)")
    p.add_argument("--node", action="append", default=[], dest="nodes", metavar="NODE", help="a node to add (repeat)")
    p = add("status", "move the incident to a status: open, mitigating, resolved, closed")
    p.add_argument("incident", help=INC)
    p.add_argument("status", choices=STATUSES, help="the new status (allowed moves: docs/incident-response.md)")
    p.add_argument("--reason", help="why, for the timeline")
    for name in ("resolve", "close"):
        p = add(name, f"{name} the incident (status {name}d)")
        p.add_argument("incident", help=INC)
        p.add_argument("--reason", help="why, for the timeline")
    p = add("export", "write the evidence report: JSON, Markdown and the proof bundle (an auditor token)")
    p.add_argument("incident", help=INC)
    p.add_argument(
        "-o",
        "--output",
        required=True,
        type=Path,
        metavar="FILE",
        help="the JSON report; FILE.md and FILE.proof.json beside it",
    )


def cmd_incident(args: argparse.Namespace) -> int:
    from keylife.cli.main import _token

    token = _token(args)
    url = args.url.rstrip("/")
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=60, trust_env=False) as c:
        try:
            return _ACTIONS[args.incident_action](c, args)
        except httpx.TransportError as exc:
            raise ClientError(f"{url}: cannot reach the server ({exc})") from None


def _path(incident: str, tail: str = "") -> str:
    return "/v1/incidents/" + quote(incident, safe="") + tail


def _call(client: httpx.Client, method: str, path: str, **kwargs: Any) -> dict[str, Any] | None:
    """The JSON answer; None after printing the refusal (the problem's title and detail) on stderr."""
    response = client.request(method, path, **kwargs)
    try:
        body = response.json()
    except ValueError:
        body = {}
    if response.is_success:
        return body
    if response.status_code == 401:
        raise ClientError(f"{client.base_url}: the token was refused ({body.get('detail', '')})")
    role = f" (needs role {body['required_role']})" if body.get("required_role") else ""
    print(f"{body.get('title', response.reason_phrase)}: {body.get('detail', response.text[:300])}{role}",
          file=sys.stderr)  # fmt: skip
    return None


def _list(c: httpx.Client, args: argparse.Namespace) -> int:
    params = {k: v for k, v in (("status", args.status), ("severity", args.severity)) if v}
    body = _call(c, "GET", "/v1/incidents", params=params)
    if body is None:
        return 1
    for item in body["items"]:
        if args.json:
            print(json.dumps(item))
        else:
            print(f"{item['id']}  {item['status']:<10} {item['severity']:<8} {item['opened_at']}  "
                  f"{item.get('assignee') or '-':<12} {item['title']}")  # fmt: skip
    return 0


def _show(c: httpx.Client, args: argparse.Namespace) -> int:
    body = _call(c, "GET", _path(args.incident))
    if body is None:
        return 1
    if args.json:
        print(json.dumps(body, indent=2))
        return 0
    print(f"{body['id']}: {body['title']}")
    print(f"  status {body['status']}, severity {body['severity']}, assignee {body.get('assignee') or '-'}, "
          f"source {body['source']}, opened {body['opened_at']}")  # fmt: skip
    print(f"  keys: {', '.join(body['keys']) or '-'}")
    print(f"  nodes: {', '.join(body['nodes']) or '-'}")
    if body.get("timeline_omitted"):
        print(f"  ({body['timeline_omitted']} older timeline entries not shown; the export has them all)")
    print(f"{'time':<27}  {'seq':>8}  {'type':<15} {'actor':<16} {'key':<24} summary")
    for t in body["timeline"]:
        print(f"{t['time']:<27}  {t['seq']:>8}  {t['type']:<15} {t.get('actor') or '-':<16} "
              f"{t.get('key_id') or '-':<24} {t['summary']}")  # fmt: skip
    return 0


def _open(c: httpx.Client, args: argparse.Namespace) -> int:
    payload = {"title": args.title, "severity": args.severity, "keys": args.keys, "nodes": args.nodes}
    if args.assignee:
        payload["assignee"] = args.assignee
    body = _call(c, "POST", "/v1/incidents", json=payload)
    if body is None:
        return 1
    print(body["id"])
    return 0


def _post(c: httpx.Client, incident: str, tail: str, payload: dict[str, Any], said: str) -> int:
    body = _call(c, "POST", _path(incident, tail), json={k: v for k, v in payload.items() if v is not None})
    if body is None:
        return 1
    again = ", already recorded" if body["status"] == "duplicate" else ""
    print(f"{incident}: {said} (journal entry {body['seq']}{again})")
    return 0


def _note(c: httpx.Client, args: argparse.Namespace) -> int:
    return _post(c, args.incident, "/notes", {"text": args.text}, "note added")


def _assign(c: httpx.Client, args: argparse.Namespace) -> int:
    return _post(c, args.incident, "/assign", {"assignee": args.assignee}, f"assigned to {args.assignee}")


def _link(c: httpx.Client, args: argparse.Namespace) -> int:
    return _post(c, args.incident, "/keys", {"keys": args.keys, "nodes": args.nodes}, "linked")


def _status(c: httpx.Client, args: argparse.Namespace) -> int:
    status = {"resolve": "resolved", "close": "closed"}.get(args.incident_action) or args.status
    return _post(c, args.incident, "/status", {"status": status, "reason": args.reason}, f"now {status}")


def _export(c: httpx.Client, args: argparse.Namespace) -> int:
    body = _call(c, "GET", _path(args.incident, "/export"))
    if body is None:
        return 1
    out: Path = args.output
    out.write_text(json.dumps(body, indent=2) + "\n")
    md = out.with_suffix(".md")
    md.write_text(markdown(body))
    written = [out, md]
    if body.get("proof_bundle"):
        proof = out.with_suffix(".proof.json")
        proof.write_text(json.dumps(body["proof_bundle"], indent=2) + "\n")
        written.append(proof)
    print(f"{args.incident}: {len(body['timeline'])} timeline entries; wrote {', '.join(map(str, written))}")
    return 0


_ACTIONS = {"list": _list, "show": _show, "open": _open, "note": _note, "assign": _assign, "link": _link,
            "status": _status, "resolve": _status, "close": _status, "export": _export}  # fmt: skip
