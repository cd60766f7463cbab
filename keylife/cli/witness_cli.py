"""``keylife witness serve | pubkey``: run a C2SP tlog-witness for another site's or team's log.

The witness's directory (``--data-dir``, default ``./keylife-witness``) holds ``witness.key``
(its Ed25519 cosigning key, PEM, 0600, created on first start), ``witness.name`` (its key name,
fixed on first start: the key id depends on it) and ``state.sqlite`` (the latest cosigned
checkpoint per log). The logs it witnesses are given with ``--log`` (repeatable) or
``--logs-file`` (one per line, ``#`` comments): ``[ORIGIN ]VERIFIERKEY``; the origin defaults to
the verifier key's name, which is how keylife names its journal key. Several keys may be given
for one origin (a rotation): a checkpoint signed by any of them is accepted.
"""

from __future__ import annotations

import argparse
import logging
import signal
import socket
import sys
import threading
from pathlib import Path
from typing import Any

log = logging.getLogger("keylife.witness")

DEFAULT_DIR = Path("keylife-witness")


def register(sub: Any) -> None:
    # not keylife's common options (--config, --data-dir of a keylife): a witness has its own directory
    p = sub.action.add_parser("witness", help="run a transparency-log witness (C2SP tlog-witness) for other logs")
    wsub = p.add_subparsers(dest="witness_command", required=True, metavar="COMMAND")
    s = wsub.add_parser("serve", help="cosign checkpoints of the configured logs that are consistent with the last")
    s.add_argument(
        "--data-dir", type=Path, default=DEFAULT_DIR, help="the witness's key and state (default ./keylife-witness)"
    )
    s.add_argument("--name", help="the witness's key name, set on first start (default <hostname>/keylife-witness)")
    s.add_argument(
        "--log",
        action="append",
        default=[],
        metavar="LOG",
        help="a log to witness: its verifier key, or 'ORIGIN VERIFIERKEY' when the origin differs from the key "
        "name; repeatable",
    )
    s.add_argument("--logs-file", type=Path, help="a file of logs, one '[ORIGIN ]VERIFIERKEY' per line")
    s.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    s.add_argument("--port", type=int, default=8790, help="port (default 8790; 0 picks a free one)")
    s.add_argument("--prefix", default="", help="URL prefix of add-checkpoint (default: none)")
    s.add_argument("--tls-cert", type=Path, help="serve HTTPS with this certificate chain (PEM)")
    s.add_argument("--tls-key", type=Path, help="the TLS private key (PEM, mode 0600)")
    s.add_argument("--ready-file", type=Path, help="write {url, pid, key} as JSON here once listening")
    s.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING or ERROR (default INFO)")
    s.add_argument("--log-format", choices=["json", "text"], default="text", help="log lines as text or JSON")
    s.set_defaults(func=cmd_witness_serve)
    k = wsub.add_parser("pubkey", help="print the witness's verifier key (cosignature/v1, type 0x04)")
    k.add_argument("--data-dir", type=Path, default=DEFAULT_DIR, help="the witness's directory")
    k.add_argument("--name", help="the witness's key name, if the key is created now")
    k.set_defaults(func=cmd_witness_pubkey)


def load_cosigner(directory: Path, name: str | None) -> tuple[Any, list[str]]:
    """The witness's cosigner, creating its directory, name and key on first use."""
    from keylife.journal.cosignature import Cosigner

    notes = []
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    name_file = directory / "witness.name"
    if name_file.exists():
        stored = name_file.read_text().strip()
        if name and name != stored:
            raise ValueError(f"this witness is named {stored!r} ({name_file}); its key id depends on it: not {name!r}")
        name = stored
    else:
        name = name or f"{socket.gethostname()}/keylife-witness"
        if not name or any(c.isspace() or c == "+" for c in name):
            raise ValueError(f"witness name {name!r}: no spaces or '+' (signed-note key names)")
        name_file.write_text(name + "\n")
    cosigner, created = Cosigner.load_or_create(directory / "witness.key", name)
    if created:
        notes.append(f"created witness key {directory / 'witness.key'} (0600)")
    return cosigner, notes


def parse_logs(items: list[str]) -> dict[str, list[Any]]:
    """``[ORIGIN ]VERIFIERKEY`` lines -> {origin: [Verifier]}; ValueError names the bad one."""
    from keylife.journal.signing import Verifier

    logs: dict[str, list[Verifier]] = {}
    for item in items:
        parts = item.split()
        if not parts:
            continue
        if len(parts) > 2:
            raise ValueError(f"log {item!r}: expected '[ORIGIN ]VERIFIERKEY'")
        try:
            key = Verifier.parse(parts[-1])
        except ValueError as exc:
            raise ValueError(f"log {item!r}: {exc}") from None
        logs.setdefault(parts[0] if len(parts) == 2 else key.name, []).append(key)
    return logs


def cmd_witness_pubkey(args: argparse.Namespace) -> int:
    try:
        cosigner, notes = load_cosigner(args.data_dir, args.name)
    except ValueError as exc:
        print(f"keylife: {exc}", file=sys.stderr)
        return 2
    for note in notes:
        print(note, file=sys.stderr)
    print(cosigner.key.encode())
    return 0


def cmd_witness_serve(args: argparse.Namespace) -> int:
    import json
    import os
    import ssl

    from keylife.common import logs
    from keylife.common.secret_files import check_secret_file
    from keylife.witness.server import WitnessHTTPServer, run, tls_context
    from keylife.witness.service import Witness, WitnessMetrics
    from keylife.witness.state import WitnessState

    logs.setup(args.log_level, args.log_format)
    items = list(args.log)
    if args.logs_file:
        items += [line.split("#", 1)[0] for line in args.logs_file.read_text().splitlines()]
    try:
        witnessed = parse_logs(items)
        if not witnessed:
            raise ValueError("no logs to witness: give --log [ORIGIN ]VERIFIERKEY or --logs-file")
        if bool(args.tls_cert) != bool(args.tls_key):
            raise ValueError("give both --tls-cert and --tls-key, or neither")
        tls = None
        if args.tls_key:
            check_secret_file(args.tls_key, "TLS private key")  # the one rule for secret files
            tls = tls_context(args.tls_cert, args.tls_key)
        cosigner, notes = load_cosigner(args.data_dir, args.name)
    except (ValueError, OSError, ssl.SSLError) as exc:
        print(f"keylife: {exc}", file=sys.stderr)
        return 2
    state = WitnessState(args.data_dir / "state.sqlite")
    server = WitnessHTTPServer(
        (args.host, args.port), Witness(cosigner, witnessed, state, WitnessMetrics()), args.prefix, tls
    )
    host, port = server.socket.getsockname()[:2]
    scheme = "https" if args.tls_cert else "http"
    url = f"{scheme}://{f'[{host}]' if ':' in host else host}:{port}{server.prefix}"
    for note in notes:
        log.info(note)
    log.info("witness %s listening on %s for %d log(s): %s", cosigner.key.encode(), url, len(witnessed),
             ", ".join(sorted(witnessed)))  # fmt: skip
    if args.ready_file:
        tmp = args.ready_file.with_name(args.ready_file.name + ".tmp")
        tmp.write_text(json.dumps({"url": url, "pid": os.getpid(), "key": cosigner.key.encode()}))
        tmp.replace(args.ready_file)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        run(server, stop)
    finally:
        state.close()
    log.info("witness stopped")
    return 0
