"""``keylife incident ...`` and ``keylife bulk ...``: the operator's side of incident response.

Each group of subcommands lives in its own module and registers itself here: the revocation with
confirmation (``revoke_cli``), lockdown, release and bulk plans (``bulk_cli``), and the incident
workflow (``incident_cmds``). They are clients of a running server (``--url``, a token), because
every action is a journaled command decided by its one writer.
"""

from __future__ import annotations

import argparse
from typing import Any

from keylife.cli import bulk_cli, incident_cmds, revoke_cli


def register(sub: Any) -> None:
    """Add ``incident`` and ``bulk`` (``sub``: main's subparsers wrapper, whose parsers take --config)."""
    p: argparse.ArgumentParser = sub.add_parser("incident", help="incident response: revoke, lockdown, incidents")
    isub = type(sub)(p.add_subparsers(dest="incident_command", required=True, metavar="COMMAND"), sub.common)
    revoke_cli.register(isub)
    bulk_cli.register_incident(isub)  # lockdown, release
    incident_cmds.register(isub)  # list, show, open, note, assign, status, resolve, close, export
    bulk_cli.register(sub)  # keylife bulk plan|execute|status|approve
    revoke_cli.register_feed(sub)  # keylife revocations export --offline
