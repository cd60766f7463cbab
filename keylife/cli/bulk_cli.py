"""``keylife bulk plan|execute|status|approve``, ``keylife incident lockdown`` and ``incident release``:
clients of a running server (every action is a journaled command decided by its one writer).

Exit codes: 0 done; 1 it ran and something needs a person (keys refused by the lifecycle, a
plan still waiting for its second approver, keys a release left alone); 2 it could not run
(one line on stderr).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import orjson

from keylife.cli.progress import terminal_progress

DEFAULT_URL = "http://127.0.0.1:8787"
ACTIONS = ("revoke", "suspend", "reactivate", "compromise", "deactivate", "destroy")


class Api:
    """One server, one token; a refusal becomes a ClientError naming the problem (exit 2)."""

    def __init__(self, args: argparse.Namespace) -> None:
        from keylife.cli.main import _token

        self.url = args.url.rstrip("/")
        self.client = httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {_token(args)}"}, timeout=300, trust_env=False
        )

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> tuple[int, dict[str, Any]]:
        from keylife.cli.client import ClientError

        try:
            response = self.client.request(method, path, json=body)
        except httpx.HTTPError as exc:
            raise ClientError(f"{self.url}{path}: {type(exc).__name__}: {exc}") from None
        try:
            data = response.json()
        except ValueError:
            data = {}
        if response.status_code >= 400:
            detail = data.get("detail") or response.reason_phrase
            extra = ""
            if data.get("added_count") is not None:
                extra = f" (added: {', '.join(data['added'][:5])}; removed: {', '.join(data['removed'][:5])})"
            raise ClientError(f"{self.url}{path}: HTTP {response.status_code} {detail}{extra}")
        return response.status_code, data


def _selector(args: argparse.Namespace) -> dict[str, Any]:
    from keylife.cli.client import ClientError

    selector: dict[str, Any] = {}
    if args.state:
        selector["states"] = args.state
    for name in ("algorithm", "purpose", "owner", "node", "expiring_before", "created_before"):
        if getattr(args, name, None):
            selector[name] = getattr(args, name)
    if args.ids_file:
        try:
            selector["ids"] = [line.strip() for line in Path(args.ids_file).read_text().splitlines() if line.strip()]
        except OSError as exc:
            raise ClientError(f"{args.ids_file}: {exc.strerror}") from None
    if args.all:
        selector["all"] = True
    return selector


def _selector_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--state", action="append", help="a key state (repeatable)")
    p.add_argument("--algorithm", help="keys of this algorithm")
    p.add_argument("--purpose", help="keys of this purpose")
    p.add_argument("--owner", help="keys of this owner")
    p.add_argument("--node", help="keys this node holds (applied a state of, or used)")
    p.add_argument("--expiring-before", dest="expiring_before", metavar="TIME", help="RFC 3339")
    p.add_argument("--created-before", dest="created_before", metavar="TIME", help="RFC 3339")
    p.add_argument("--ids-file", metavar="FILE", help="explicit key ids, one a line (at most 100,000)")
    p.add_argument("--all", action="store_true", help="every key (only alone)")


def _server(p: argparse.ArgumentParser) -> None:
    from keylife.cli.main import _add_server_options

    _add_server_options(p, f"the keylife server (default {DEFAULT_URL})", DEFAULT_URL)


def cmd_plan(args: argparse.Namespace) -> int:
    api = Api(args)
    body: dict[str, Any] = {"selector": _selector(args), "action": args.action, "reason": args.reason}
    for name in ("rate_per_second", "incident"):
        if getattr(args, name) is not None:
            body[name] = getattr(args, name)
    _, plan = api.call("POST", "/v1/keys/bulk", body)
    if args.json:
        sys.stdout.write(orjson.dumps(plan).decode() + "\n")
        return 0
    print(f"plan {plan['plan']}: {args.action} {plan['total']} keys (digest {plan['digest'][:16]}…)")
    for key in plan["keys"][: args.show]:
        print(f"  {key}")
    if plan["total"] > args.show:
        print(f"  … and {plan['total'] - args.show} more (--json lists them all)")
    if plan["dual_control"]:
        print("executing it needs a second approver (dual control)")
    print(f"execute with: keylife bulk execute {plan['plan']} --wait")
    return 0


def cmd_execute(args: argparse.Namespace) -> int:
    api = Api(args)
    status, answer = api.call("POST", f"/v1/bulk/{args.plan}/execute")
    if status == 202:
        print(f"plan {args.plan} waits for a second approver: keylife bulk approve {answer['approval']}")
        if not args.wait:
            return 1
    return _follow(api, args.plan, args.timeout) if args.wait else _report(answer)


def _follow(api: Api, plan_id: str, timeout: float) -> int:
    """Poll the plan with a progress bar until it finishes (or ``timeout`` passes: exit 1)."""
    deadline = time.monotonic() + timeout
    _, progress = api.call("GET", f"/v1/bulk/{plan_id}")
    with terminal_progress(f"{progress['action']} {plan_id}", progress["total"], unit="keys") as update:
        while progress["state"] != "finished" and time.monotonic() < deadline:
            update(progress["total"] - progress["remaining"], note=f"refused {progress['refused']}")
            time.sleep(0.5)
            _, progress = api.call("GET", f"/v1/bulk/{plan_id}")
        update(progress["total"] - progress["remaining"], note=f"refused {progress['refused']}")
    if progress["state"] != "finished":
        print(f"plan {plan_id} is still {progress['state']} after {timeout:.0f} s ({progress['remaining']} to go)")
        return 1
    return _report(progress)


def _report(progress: dict[str, Any]) -> int:
    print(
        f"plan {progress['plan']} {progress['state']}: {progress['done']} done, {progress['refused']} refused, "
        f"{progress['duplicate']} already done, {progress['remaining']} remaining"
    )
    for refusal in progress.get("refusals", [])[:50]:
        print(f"  refused {refusal['key_id']}: {refusal['reason']}")
    return 1 if progress["refused"] else 0


def cmd_status(args: argparse.Namespace) -> int:
    _, progress = Api(args).call("GET", f"/v1/bulk/{args.plan}")
    if args.json:
        sys.stdout.write(orjson.dumps(progress).decode() + "\n")
        return 0
    return _report(progress)


def cmd_approve(args: argparse.Namespace) -> int:
    _, answer = Api(args).call("POST", f"/v1/approvals/{args.approval}/approve")
    result = answer.get("result", {})
    print(f"approval {args.approval} granted; {result.get('plan', result.get('id', ''))} {result.get('state', '')}")
    return 0


def cmd_lockdown(args: argparse.Namespace) -> int:
    body: dict[str, Any] = {"reason": args.reason}
    selector = _selector(args)
    if selector:
        body["selector"] = selector
    if args.incident:
        body["incident"] = args.incident
    _, answer = Api(args).call("POST", "/v1/lockdowns", body)
    print(
        f"lockdown {answer['lockdown']}: {answer['suspended']} of {answer['matched']} active keys suspended"
        + (f", {answer['refused']} refused" if answer["refused"] else "")
    )
    print(f"release with: keylife incident release {answer['lockdown']}")
    return 1 if answer["refused"] else 0


def cmd_release(args: argparse.Namespace) -> int:
    _, answer = Api(args).call("POST", f"/v1/lockdowns/{args.lockdown}/release", {"reason": args.reason})
    print(f"lockdown {args.lockdown} released: {answer['released']} of {answer['suspended']} keys reactivated")
    for item in answer.get("left_alone_detail", []):
        print(f"  left alone {item['key_id']} (now {item['state']}: changed since the lockdown)")
    return 1 if answer["left_alone"] or answer["refused"] else 0


def register(sub: Any) -> None:
    """Add ``bulk plan|execute|status|approve``."""
    p = sub.add_parser("bulk", help="bulk plans over a selector: dry run, execute by plan id, approve")
    bsub = type(sub)(p.add_subparsers(dest="bulk_command", required=True, metavar="COMMAND"), sub.common)
    plan = bsub.add_parser("plan", help="resolve a selector to the exact key set (a dry run) and store the plan")
    _selector_options(plan)
    plan.add_argument("--action", required=True, choices=ACTIONS, help="what to do to every key of the set")
    plan.add_argument("--reason", required=True, help="why (journaled with every command)")
    plan.add_argument("--rate", dest="rate_per_second", type=float, help="commands per second when executed")
    plan.add_argument("--incident", help="the incident this plan answers")
    plan.add_argument("--show", type=int, default=20, help="keys to print (default 20)")
    plan.add_argument("--json", action="store_true", help="the whole answer, every key, as JSON")
    _server(plan)
    plan.set_defaults(func=cmd_plan)
    execute = bsub.add_parser("execute", help="execute a plan by id (only if its key set still matches)")
    execute.add_argument("plan", help="the plan id (plan-...)")
    execute.add_argument("--wait", action="store_true", help="follow its progress until it finishes")
    execute.add_argument("--timeout", type=float, default=3600.0, help="seconds --wait waits (default 3600)")
    _server(execute)
    execute.set_defaults(func=cmd_execute)
    status = bsub.add_parser("status", help="a plan's progress")
    status.add_argument("plan", help="the plan id (plan-...)")
    status.add_argument("--json", action="store_true", help="the progress as JSON")
    _server(status)
    status.set_defaults(func=cmd_status)
    approve = bsub.add_parser("approve", help="be the second approver of a destroy or a large plan")
    approve.add_argument("approval", help="the approval id (appr-...) the first person was given")
    _server(approve)
    approve.set_defaults(func=cmd_approve)


def register_incident(isub: Any) -> None:
    """Add ``incident lockdown`` and ``incident release``."""
    lock = isub.add_parser("lockdown", help="suspend every active key a selector (--node, --owner, ...) matches")
    _selector_options(lock)
    lock.add_argument("--reason", required=True, help="why (journaled with every suspension)")
    lock.add_argument("--incident", help="the incident this lockdown answers")
    _server(lock)
    lock.set_defaults(func=cmd_lockdown)
    release = isub.add_parser("release", help="reactivate exactly the keys a lockdown suspended (still suspended)")
    release.add_argument("lockdown", help="the lockdown id (lock-...)")
    release.add_argument("--reason", default="lockdown released", help="why (journaled)")
    _server(release)
    release.set_defaults(func=cmd_release)
