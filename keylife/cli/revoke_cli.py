"""``keylife incident revoke KEY --wait`` and ``keylife revocations export|verify``.

``incident revoke`` is a client of a running server: it sends the revoke (or compromise) command,
citing the incident, then polls ``GET /v1/revocations/{key}`` and draws nodes confirmed out of
nodes expected until every node confirmed or ``--wait`` ran out. Exit codes: 0 every expected
node confirmed (or no node is known to hold the key), 1 some did not by the deadline (listed on
stdout, with a JSON line), 2 it could not run (one line on stderr).

``revocations export --offline`` signs the same feed from the local registry and signing key,
with no server (a cold standby, an air-gapped enforcement point); ``revocations verify`` is the
check an enforcement point runs on what it fetched.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import orjson

from keylife.cli.client import ClientError
from keylife.cli.progress import terminal_progress

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)?")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}
_REVOKE_EPILOG = (
    "exit codes: 0 every node known to hold the key confirmed it (or none is known); 1 some nodes did not "
    "confirm within --wait (listed on stdout, then one JSON line); 2 the command could not be sent or was "
    "refused (one line on stderr)"
)


def duration(text: str) -> float:
    """``120s``, ``2m``, ``500ms``, ``90`` (seconds) -> seconds."""
    match = _DURATION.fullmatch(text.strip())
    if not match:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration (e.g. 120s, 2m, 500ms)")
    return float(match.group(1)) * _UNITS[match.group(2)]


def register(isub: Any) -> None:
    """Add ``incident revoke``."""
    from keylife.cli.main import _add_server_options

    p = isub.add_parser(
        "revoke", help="revoke (or mark compromised) a key and wait for every node to confirm", epilog=_REVOKE_EPILOG
    )
    p.add_argument("key_id", metavar="KEY", help="the key's id")
    p.add_argument("--reason", required=True, help="why (journaled with the command)")
    p.add_argument("--compromise", action="store_true", help="mark the key compromised instead of revoked")
    p.add_argument("--incident", metavar="INC", help="the incident id the command cites (its correlation id)")
    p.add_argument("--wait", type=duration, default=None, metavar="DURATION", help="wait this long for nodes (120s)")
    p.add_argument("--interval", type=duration, default=1.0, metavar="DURATION", help="poll interval (default 1s)")
    _add_server_options(p, "the keylife server (default http://127.0.0.1:8787)", "http://127.0.0.1:8787")
    p.set_defaults(func=cmd_revoke)


def register_feed(sub: Any) -> None:
    """Add ``revocations export`` and ``revocations verify``."""
    from keylife.cli.main import _add_server_options, _Sub

    p = sub.add_parser("revocations", help="the signed revocation feed: export it, verify it")
    rsub = _Sub(p.add_subparsers(dest="revocations_command", required=True, metavar="COMMAND"), sub.common)
    e = rsub.add_parser("export", help="the signed feed: from a server (--url) or the local data (--offline)")
    e.add_argument("--offline", action="store_true", help="sign it here from the local registry and signing key")
    e.add_argument("--since", type=int, default=0, metavar="V", help="only entries after version V")
    e.add_argument("--json", action="store_true", help="the JSON document (embedding the note), not the note")
    e.add_argument("-o", "--output", type=Path, metavar="FILE", help="write here (default stdout)")
    _add_server_options(e, "fetch from this server instead (a 'read' token)", None)
    e.set_defaults(func=cmd_export)
    v = rsub.add_parser("verify", help="check a feed note (or JSON document) against the journal's verifier key")
    v.add_argument("file", type=Path, metavar="FILE", help="the fetched feed ('-' for stdin)")
    v.add_argument("--key", required=True, metavar="VERIFIER", help="verifier key text, or a file holding it")
    v.add_argument("--origin", help="the feed origin expected (<journal origin>/revocations)")
    v.set_defaults(func=cmd_verify)


# ----- incident revoke ---------------------------------------------------------------------------
def _problem(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.reason_phrase
    return str(body.get("detail") or body.get("title") or response.reason_phrase) if isinstance(body, dict) else ""


def cmd_revoke(args: argparse.Namespace) -> int:
    from keylife.cli.main import _token

    url = args.url.rstrip("/")
    headers = {"Authorization": f"Bearer {_token(args)}"}
    command = "compromise" if args.compromise else "revoke"
    body = {"command": command, "reason": args.reason} | ({"correlation_id": args.incident} if args.incident else {})
    quoted = quote(args.key_id, safe="")
    with httpx.Client(base_url=url, headers=headers, timeout=30, trust_env=False) as client:
        sent = client.post(f"/v1/keys/{quoted}/commands", json=body)
        status = _sent(client, sent, quoted, args.key_id, command)
        if args.wait is None:
            print(orjson.dumps(status).decode())
            return 0
        return _wait(client, quoted, args.key_id, args.wait, args.interval)


def _sent(client: httpx.Client, sent: httpx.Response, quoted: str, key_id: str, command: str) -> dict[str, Any]:
    """The command's answer; an already withdrawn key is waited on, anything else refused stops here."""
    if sent.status_code == 200:
        answer: dict[str, Any] = sent.json()
        print(f"{command} {key_id}: {answer['status']} (journal seq {answer['seq']}), state {answer['state']}")
        return answer
    if sent.status_code == 409 and sent.json().get("type", "").endswith("/lifecycle-conflict"):
        current = client.get(f"/v1/revocations/{quoted}")
        if current.status_code == 200:
            print(f"{key_id} is already {current.json()['state']} ({_problem(sent)}); waiting on its confirmations")
            return {"status": "already", "state": current.json()["state"]}
    raise ClientError(f"{client.base_url}: {command} {key_id} refused: HTTP {sent.status_code} {_problem(sent)}")


def _wait(client: httpx.Client, quoted: str, key_id: str, wait: float, interval: float) -> int:
    deadline = time.monotonic() + wait
    with terminal_progress(f"confirm {key_id}", None) as update:
        while True:
            answer = client.get(f"/v1/revocations/{quoted}")
            if answer.status_code != 200:
                raise ClientError(f"{client.base_url}: GET revocation of {key_id}: HTTP {answer.status_code} "
                                  f"{_problem(answer)}")  # fmt: skip
            found = answer.json()
            update(found["confirmed"], note=f"nodes confirmed of {found['expected']}", total=found["expected"])
            if found["expected"] == 0:
                print(f"no node is known to hold {key_id}: nothing to confirm")
                return _report(found, True, wait - (deadline - time.monotonic()))
            if not found["unconfirmed"]:
                print(f"all {found['expected']} nodes confirmed {key_id} {found['state']}")
                return _report(found, True, wait - (deadline - time.monotonic()))
            if time.monotonic() >= deadline:
                print(f"{len(found['unconfirmed'])} of {found['expected']} nodes did not confirm {key_id} "
                      f"within {wait:g}s:")  # fmt: skip
                for node in found["nodes"]:
                    if node["confirmed_at"] is None:
                        print(f"  {node['node']} (expected since {node['joined_at']}, {node['joined']})")
                return _report(found, False, wait)
            time.sleep(min(interval, max(0.0, deadline - time.monotonic())))


def _report(found: dict[str, Any], complete: bool, waited: float) -> int:
    line = {k: found[k] for k in ("key_id", "state", "expected", "confirmed", "unconfirmed", "complete_at")}
    print(orjson.dumps(line | {"complete": complete, "waited_seconds": round(waited, 3)}).decode())
    return 0 if complete else 1


# ----- revocations export / verify -----------------------------------------------------------------
def cmd_export(args: argparse.Namespace) -> int:
    from keylife.cli.main import UsageError, _config, _token

    if args.offline == bool(args.url):
        raise UsageError("give --offline (sign here, from the local data) or --url (fetch from a server), not both")
    if args.since < 0:
        raise UsageError(f"--since {args.since}: a version is a non-negative integer")
    if args.url:
        headers = {"Authorization": f"Bearer {_token(args)}"} | ({"Accept": "application/json"} if args.json else {})
        with httpx.Client(base_url=args.url.rstrip("/"), headers=headers, timeout=30, trust_env=False) as client:
            got = client.get("/v1/revocations", params={"since": args.since})
        if got.status_code != 200:
            raise ClientError(f"{args.url}/v1/revocations: HTTP {got.status_code} {_problem(got)}")
        data = got.content
    else:
        data = _offline(_config(args), args.since, args.json)
    if args.output:
        args.output.write_bytes(data)
    else:
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
    return 0


def _offline(config: Any, since: int, json: bool) -> bytes:
    """The feed signed here: the registry read-only (safe beside a running server), the signing key read."""
    from keylife.cli.main import UsageError
    from keylife.journal.signing import Signer, read_ed25519
    from keylife.registry import revocations as rv
    from keylife.registry.queries import open_readonly
    from keylife.response.feed import feed_origin, render

    if not config.registry_path.exists():
        raise UsageError(f"no registry at {config.registry_path}: start keylife serve once, or rebuild it")
    signer = Signer(config.journal.origin, read_ed25519(config.signing_key_path, "journal signing key"))
    conn = open_readonly(config.registry_path)
    try:
        version = rv.feed_version(conn)
        if since > version:
            raise UsageError(f"--since {since} is beyond the feed's current version {version}")
        entries = rv.feed_entries(conn, since, version)
    finally:
        conn.close()
    signed, document = render(signer, feed_origin(config.journal.origin), version, since, entries)
    return document if json else signed.encode()


def cmd_verify(args: argparse.Namespace) -> int:
    from keylife.cli.main import UsageError
    from keylife.journal.signing import Verifier
    from keylife.response.feed import verify

    key_text = args.key
    if Path(args.key).is_file():
        key_text = Path(args.key).read_text().strip()
    try:
        verifier = Verifier.parse(key_text)
    except ValueError as exc:
        raise UsageError(f"--key: {exc}") from None
    text = sys.stdin.read() if str(args.file) == "-" else args.file.read_text()
    try:
        got = verify(text, [verifier], args.origin)
    except ValueError as exc:
        print(f"{args.file}: NOT VERIFIED: {exc}", file=sys.stderr)
        return 1
    print(orjson.dumps({"verified": True, "origin": got.origin, "version": got.version, "since": got.since,
                        "entries": got.entries}).decode())  # fmt: skip
    return 0
