"""The ``keylife`` command. Each subcommand is a thin shell over a module that does the work.

Exit codes: 0 done; 1 the command ran and found a problem (a refused batch, a key not found, a
journal that does not verify); 2 it could not run (bad arguments or config, a port in use, a
missing file, an unreachable server), said in one line on stderr without a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import keylife
from keylife.common.datalock import DataDirBusy
from keylife.common.scopes import ROLES, SCOPES  # keylife.config (pydantic models) loads on demand
from keylife.domain.lifecycle import KeyState

if TYPE_CHECKING:
    from keylife.cli.config import Config


class _Version(argparse.Action):
    """``--version``, read only when asked (importlib.metadata costs every other command ~25 ms)."""

    def __init__(self, option_strings: list[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, *args: object, **kwargs: object) -> None:
        print(f"keylife {keylife.__version__}")
        parser.exit()


class UsageError(Exception):
    """Something the operator gave cannot be used; printed as one line, exit 2."""


def _config(args: argparse.Namespace) -> Config:
    from keylife.cli.config import load

    overrides = {}
    if getattr(args, "data_dir", None):
        overrides["KEYLIFE_DATA_DIR"] = str(args.data_dir)
    if getattr(args, "host", None):
        overrides["KEYLIFE_LISTEN__HOST"] = args.host
    if getattr(args, "port", None) is not None:
        overrides["KEYLIFE_LISTEN__PORT"] = str(args.port)
    config = load(args.config, env={**os.environ, **overrides})
    if config.data_dir.exists() and not config.data_dir.is_dir():
        raise UsageError(f"data_dir {config.data_dir} is not a directory")
    return config


def cmd_serve(args: argparse.Namespace) -> int:
    from keylife.cli.serve import serve

    return serve(_config(args), demo=args.demo, ready_file=args.ready_file)


def cmd_exporter(args: argparse.Namespace) -> int:
    import signal

    from exporter.policy import load_policy
    from keylife.cli.standalone_exporter import StandaloneExporter
    from keylife.common import logs

    config = _config(args)
    logs.setup(config.logging.level, config.logging.format)
    if not config.registry_path.exists():
        print(f"no registry at {config.registry_path}: run keylife serve first", file=sys.stderr)
        return 1
    exporter = StandaloneExporter(
        config.registry_path,
        config.journal_dir,
        load_policy(config.exporter.policy),
        config.exporter.attention_cap,
        config.exporter.expiry_horizon_days * 86400,
    )
    signal.signal(signal.SIGTERM, lambda *_: exporter.stop())
    return exporter.serve(args.host or config.listen.host, args.port if args.port is not None else 8788, args.refresh)


def cmd_forward(args: argparse.Namespace) -> int:
    from keylife.cli.forward_cli import run_forward

    return run_forward(_config(args), ready_file=args.ready_file, until_caught_up=args.until_caught_up)


def cmd_verify(args: argparse.Namespace) -> int:
    from keylife.cli.verify_cli import run_verify
    from keylife.journal.anchor import unsigned_grace

    interval = 1.0  # the default checkpoint interval (JournalConfig)
    directory = args.directory
    if not directory or args.config or any(name.startswith("KEYLIFE_") for name in os.environ):
        from keylife.config import ConfigError

        try:  # loading a config costs ~0.3 s of imports: only when one could change the interval
            config = _config(args)
            directory, interval = directory or config.journal_dir, config.journal.checkpoint_interval_seconds
        except (ConfigError, UsageError):
            if not directory:
                raise  # a directory given needs no config
    grace = unsigned_grace(interval)
    return run_verify(
        Path(directory), args.key, args.checkpoint, as_json=args.json, allow_unanchored=args.allow_unanchored,
        grace=grace, witnesses=args.witness, witness_quorum=args.witness_quorum,
    )  # fmt: skip


def cmd_registry_rebuild(args: argparse.Namespace) -> int:
    from collections.abc import Iterator

    from keylife.cli.progress import terminal_progress
    from keylife.cli.verify_cli import estimate_entries
    from keylife.common.datalock import DataLock
    from keylife.journal.reader import iter_entries, pruned_upto
    from keylife.journal.writer import Entry
    from keylife.registry.projection import rebuild

    config = _config(args)
    target = args.output or config.registry_path
    if not (config.journal_dir / "journal.json").exists():
        raise UsageError(f"{config.journal_dir} is not a keylife journal (no journal.json)")
    pruned = pruned_upto(config.journal_dir)
    if pruned:  # the registry is a projection: it cannot be rebuilt from hashes
        raise UsageError(
            f"refused: entries 0..{pruned - 1} of {config.journal_dir} were pruned (keylife journal prune), so a "
            "registry rebuilt from it would lack their keys' history; keep the current registry, or rebuild from "
            "a copy of the journal taken before the prune"
        )
    lock = DataLock(config.data_dir).acquire("registry rebuild")  # refuses while serve runs
    try:
        with terminal_progress("rebuild", estimate_entries(config.journal_dir), unit="entries") as update:

            def counted(entries: Iterator[Entry]) -> Iterator[Entry]:
                for n, entry in enumerate(entries, start=1):
                    if n % 1000 == 0:
                        update(n)
                    yield entry

            stats = rebuild(
                counted(iter_entries(config.journal_dir)),
                Path(target),
                origin=config.journal.origin,
                disabled=config.registry.disabled_extensions(),
            )
            update(stats.entries)
    finally:
        lock.release()
    print(json.dumps({"registry": str(target), "stats": _jsonable(stats)}))
    return 0


def cmd_keys(args: argparse.Namespace) -> int:
    if args.url:
        return _keys_remote(args)
    from keylife.registry.projection import RegistryReader

    config = _config(args)
    if not config.registry_path.exists():
        print(f"no registry at {config.registry_path}", file=sys.stderr)
        return 1
    registry = RegistryReader(config.registry_path)  # read-only: safe beside a running server
    try:
        if args.keys_command == "list":
            return _print_keys(registry.list_keys(limit=args.limit, **_key_filters(args)))
        return _print_key(args.key_id, registry.get_key(args.key_id), "the registry")
    finally:
        registry.close()


def _keys_remote(args: argparse.Namespace) -> int:
    """``keys list/show --url``: the same answers from a running server's API (a ``read`` token)."""
    from keylife.cli.client import Reader

    with Reader(args.url, _token(args)) as reader:
        if args.keys_command == "list":
            return _print_keys(reader.list_keys(args.limit, **_key_filters(args)))
        key = reader.get_key(args.key_id)
    return _print_key(args.key_id, key, f"the registry at {args.url}")


def _key_filters(args: argparse.Namespace) -> dict[str, Any]:
    """``keys list``'s filters, the same for the local registry and the API."""
    return {name: getattr(args, name) for name in ("state", "algorithm", "purpose", "owner", "node", "after")}


def _print_keys(items: Iterable[dict[str, Any]]) -> int:
    for item in items:
        print(json.dumps(item, default=str))
    return 0


def _print_key(key_id: str, key: dict[str, Any] | None, where: str) -> int:
    if key is None:
        print(f"key {key_id!r} is not in {where}", file=sys.stderr)
        return 1
    print(json.dumps(key, indent=2, default=str))
    return 0


_DATAFOLD_USAGE = (
    "keylife ingest datafold --file PATH [--follow] | --sse URL | --poll URL --client ID [--client ID ...]"
)


def cmd_ingest(args: argparse.Namespace) -> int:
    """``keylife ingest FILE.ndjson`` posts events; ``keylife ingest datafold --file/--sse/--poll``
    reads a DataFold node instead (the word ``datafold`` in FILE's place selects it, so the
    NDJSON form keeps its shape)."""
    sources = [name for name in ("df_file", "sse", "poll") if getattr(args, name)]
    datafold_only = sources or args.follow or args.client or args.node or args.state_dir
    if str(args.file) != "datafold" or (not datafold_only and args.file.exists()):
        if datafold_only:
            print(f"--file, --sse, --poll and their options need 'datafold': {_DATAFOLD_USAGE}", file=sys.stderr)
            return 2
        from keylife.cli.client import post_ndjson_file

        if not args.file.is_file():
            raise UsageError(f"{args.file}: no such file" if not args.file.exists() else f"{args.file}: not a file")
        return post_ndjson_file(args.file, args.url, _token(args), batch=args.batch, retries=args.retries)
    problem = None
    if len(sources) != 1:
        problem = "give exactly one of --file, --sse and --poll"
    elif args.follow and not args.df_file:
        problem = "--follow goes with --file"
    elif bool(args.poll) != bool(args.client or args.system_key):
        problem = "--poll needs --client (repeatable) or --system-key, and they need --poll"
    if problem:
        print(f"keylife ingest datafold: {problem}\nusage: {_DATAFOLD_USAGE}", file=sys.stderr)
        return 2
    from keylife.datafold.service import run_once_from_cli

    return run_once_from_cli(
        url=args.url,
        token=_token(args),
        file=args.df_file,
        follow=args.follow,
        sse=args.sse,
        poll=args.poll,
        clients=args.client,
        node=args.node,
        state_dir=args.state_dir,
        interval=args.interval,
        sign=args.sign,
        client_id=args.client_id,
        system_key=args.system_key,
        rotations=args.rotations,
    )


def cmd_demo(args: argparse.Namespace) -> int:
    import threading

    from keylife.demo.network import DemoConfig, run_live

    stop = threading.Event()
    config = DemoConfig(nodes=args.nodes, keys=args.keys, seed=args.seed)
    try:
        run_live(args.url.rstrip("/"), _token(args), config, stop=stop)
    except KeyboardInterrupt:
        stop.set()
    return 0


def cmd_token_create(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from keylife.api.auth import hash_token, new_token
    from keylife.cli.config import Token

    token = new_token()
    scopes = sorted({s for s in args.scopes.split(",") if s})
    bad = [s for s in scopes if s not in SCOPES]
    if bad:
        print(f"keylife: unknown scope(s) {', '.join(bad)}; choose from {', '.join(SCOPES)}", file=sys.stderr)
        return 2
    if not scopes and args.role is None:
        print(f"keylife: give --role ({', '.join(ROLES)}) or --scopes", file=sys.stderr)
        return 2
    try:  # the same model the config is checked with: what is printed is what serve will accept
        entry = Token(name=args.name, sha256=hash_token(token), role=args.role, scopes=scopes)
    except ValidationError as exc:
        print(f"keylife: --name {args.name!r}: {exc.errors()[0]['msg']}", file=sys.stderr)
        return 2
    print(f"token (shown once; store it in a secret manager): {token}", file=sys.stderr)
    print("add to the config under api.tokens:")
    lines = [f"  - name: {entry.name}", f"    sha256: {entry.sha256}"]
    if entry.role:
        lines.append(f"    role: {entry.role}")
    if entry.scopes:
        lines.append(f"    scopes: [{', '.join(entry.scopes)}]")
    print("\n".join(lines))
    return 0


def cmd_journal(args: argparse.Namespace) -> int:
    config = _config(args)
    if args.journal_command == "pubkey":
        path = config.journal_dir / "verifier.key"
        if not path.exists():
            print(f"no verifier key at {path}: start keylife serve once", file=sys.stderr)
            return 1
        print(path.read_text().strip())
        return 0
    path = config.journal_dir / "checkpoint"
    if not path.exists():
        print(f"no checkpoint at {path}", file=sys.stderr)
        return 1
    sys.stdout.write(path.read_text())
    return 0


def _token(args: argparse.Namespace) -> str:
    """The bearer token from --token-file (a secret file: owner-only, or refused) or $KEYLIFE_TOKEN."""
    from keylife.common.secret_files import read_secret_text

    if args.token_file:
        token = read_secret_text(Path(args.token_file), "token file")
        if not token:
            raise UsageError(f"token file {args.token_file} is empty")
        return token
    token = os.environ.get("KEYLIFE_TOKEN")
    if not token:
        raise UsageError("give --token-file or set KEYLIFE_TOKEN")
    return token


def _jsonable(value: object) -> object:
    if hasattr(value, "__dict__"):
        return vars(value)
    return value


class _Sub:
    """Subparsers whose every parser also takes the common options (--config, --data-dir)."""

    def __init__(self, action: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
        self.action, self.common = action, common

    def add_parser(self, name: str, **kwargs: object) -> argparse.ArgumentParser:
        return self.action.add_parser(name, parents=[self.common], **kwargs)  # type: ignore[arg-type]


_INGEST_EPILOG = (
    "exit codes: 0 every event accepted (or already there); 1 a batch was refused (its lines and reasons on "
    "stderr, nothing after it sent); 2 nothing could be done: a missing file or token, an unreachable server, "
    "or a server still answering 429/503 after --retries retries (ingest is idempotent: run it again)"
)


def _add_server_options(p: argparse.ArgumentParser, url_help: str, default: str | None) -> None:
    p.add_argument("--url", default=default, help=url_help)
    p.add_argument(
        "--token-file", help="file holding the bearer token, mode 0600 (else $KEYLIFE_TOKEN)", metavar="PATH"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="keylife", description="Key lifecycle governance for DataFold networks.")
    parser.add_argument("--version", action=_Version, help="show the version and exit")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", type=Path, default=None, help="YAML config file (default: embedded defaults)")
    common.add_argument("--data-dir", type=Path, default=None, help="override data_dir")
    sub = _Sub(parser.add_subparsers(dest="command", required=True, metavar="COMMAND"), common)

    p = sub.add_parser("serve", help="run ingest, journal, registry and API in one process")
    p.add_argument("--host", help="address to listen on (overrides listen.host; default 127.0.0.1)")
    p.add_argument("--port", type=int, help="port to listen on (overrides listen.port; 0 picks a free port)")
    p.add_argument("--demo", action="store_true", help="feed a simulated DataFold network into the API")
    p.add_argument("--ready-file", type=Path, help="write {url, pid} as JSON here once listening")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("exporter", help="serve the metrics of an existing registry and journal")
    p.add_argument("--host", help="address to listen on (default: listen.host)")
    p.add_argument("--port", type=int, help="default 8788 (0 picks a free port)")
    p.add_argument("--refresh", type=float, default=30.0, help="seconds between reloads of the registry")
    p.set_defaults(func=cmd_exporter)

    p = sub.add_parser("forward", help="ship the journal to the sinks in forwarder.sinks (no API, no ingest)")
    p.add_argument("--ready-file", type=Path, help="write {metrics, pid} as JSON here once running")
    p.add_argument("--until-caught-up", action="store_true", help="exit once every sink acknowledged the whole journal")
    p.set_defaults(func=cmd_forward)

    p = sub.add_parser("verify", help="check a journal end to end, offline")
    p.add_argument("directory", nargs="?", type=Path, help="journal directory (default: from the config)")
    p.add_argument(
        "--key",
        action="append",
        default=[],
        help="trusted verifier key (name+id+key) or a file holding one; repeatable",
    )
    p.add_argument(
        "--checkpoint",
        action="append",
        default=[],
        type=Path,
        help="a checkpoint obtained elsewhere (a SIEM's copy, a published file): the trusted anchor; repeatable",
    )
    p.add_argument(
        "--witness",
        action="append",
        default=[],
        metavar="KEY",
        help="a witness's verifier key (cosignature/v1) or a file holding one; repeatable: a checkpoint they "
        "cosigned that matches the journal is a trusted anchor",
    )
    p.add_argument(
        "--witness-quorum",
        type=int,
        metavar="K",
        help="cosignatures of distinct --witness keys a checkpoint needs (default: all given)",
    )
    p.add_argument(
        "--allow-unanchored",
        action="store_true",
        help="check without a trusted anchor (--key plus --checkpoint) and list what could not be checked",
    )
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=cmd_verify)

    p = sub.add_parser("registry", help="registry maintenance")
    rsub = _Sub(p.add_subparsers(dest="registry_command", required=True, metavar="COMMAND"), common)
    r = rsub.add_parser("rebuild", help="recreate the registry from the journal alone (progress bar on a terminal)")
    r.add_argument("--output", type=Path, help="write here instead of the configured registry path")
    r.set_defaults(func=cmd_registry_rebuild)

    p = sub.add_parser("keys", help="read the registry: the local file, or a running server with --url")
    ksub = _Sub(p.add_subparsers(dest="keys_command", required=True, metavar="COMMAND"), common)
    remote = "read from the API of a running server at this URL (needs a token with the 'read' scope)"
    k = ksub.add_parser("list", help="keys in key_id order, one JSON object per line")
    k.add_argument("--state", choices=[state.value for state in KeyState], help="only keys in this state")
    k.add_argument("--algorithm", help="only keys of this algorithm (e.g. rsa, ecdsa, ed25519)")
    k.add_argument("--purpose", help="only keys of this purpose (e.g. signing, encryption)")
    k.add_argument("--owner", help="only keys of this owner")
    k.add_argument("--node", help="only keys this node reported holding")
    k.add_argument("--after", metavar="KEY_ID", help="start after this key_id (pagination)")
    k.add_argument("--limit", type=int, default=100, help="at most this many keys (default 100)")
    _add_server_options(k, remote, None)
    k.set_defaults(func=cmd_keys)
    k = ksub.add_parser("show", help="one key: state, transitions, usage, nodes, violations")
    k.add_argument("key_id", help="the key's id, as ingested")
    _add_server_options(k, remote, None)
    k.set_defaults(func=cmd_keys)

    for name, func, helptext in (
        ("ingest", cmd_ingest, "post an NDJSON file of events to a server (progress bar on a terminal)"),
        ("demo", cmd_demo, "run the simulated network against a server"),
    ):
        p = sub.add_parser(name, help=helptext, epilog=_INGEST_EPILOG if name == "ingest" else None)
        if name == "ingest":
            p.add_argument("file", type=Path, help="an NDJSON file of events, or 'datafold' to read a DataFold node")
            p.add_argument("--batch", type=int, default=1000, help="events per request (default 1000)")
            p.add_argument(
                "--retries",
                type=int,
                default=5,
                help="times to resend a batch answered 429/503, after its Retry-After (default 5)",
            )
            d = p.add_argument_group("datafold", _DATAFOLD_USAGE)
            d.add_argument("--file", dest="df_file", type=Path, metavar="PATH", help="a node's log file")
            d.add_argument("--follow", action="store_true", help="keep following the file (else read to its end)")
            d.add_argument("--sse", metavar="URL", help="a node's log stream URL (.../api/logs/stream)")
            d.add_argument("--poll", metavar="URL", help="a node's base URL, to poll key status")
            d.add_argument("--client", metavar="ID", action="append", default=[], help="client id to poll; repeatable")
            d.add_argument("--interval", type=float, default=60.0, help="seconds between polls")
            d.add_argument("--system-key", action="store_true", help="poll mainline's system-wide key")
            d.add_argument("--rotations", action="store_true", help="poll each client key's rotation history")
            d.add_argument(
                "--sign",
                choices=["auto", "always", "never"],
                default="auto",
                help="RFC 9421 request signatures (auto: once the node asks with 400 MISSING_HEADERS)",
            )
            d.add_argument("--client-id", default="keylife", help="keylife's client id (keyid) on the node")
            d.add_argument("--node", help="node name for lines that do not say")
            d.add_argument(
                "--state-dir", type=Path, metavar="DIR", help="keep read positions here (else start from the beginning)"
            )
        else:
            p.add_argument("--nodes", type=int, default=5, help="simulated DataFold nodes (default 5)")
            p.add_argument("--keys", type=int, default=40, help="simulated keys (default 40)")
            p.add_argument("--seed", type=int, default=1, help="random seed, for a repeatable run (default 1)")
        _add_server_options(p, "the keylife server (default http://127.0.0.1:8787)", "http://127.0.0.1:8787")
        p.set_defaults(func=func)

    p = sub.add_parser("token", help="API tokens")
    tsub = _Sub(p.add_subparsers(dest="token_command", required=True, metavar="COMMAND"), common)
    t = tsub.add_parser("create", help="make a token and print the config lines holding its hash")
    t.add_argument("--name", required=True, help="the token's name, as journaled in auth failures and commands")
    t.add_argument("--role", choices=list(ROLES), help="what the token may do (see docs/incident-response.md)")
    t.add_argument("--scopes", default="", help="comma-separated, besides the role's: " + ",".join(SCOPES))
    t.set_defaults(func=cmd_token_create)

    p = sub.add_parser("journal", help="journal keys and checkpoints")
    jsub = _Sub(p.add_subparsers(dest="journal_command", required=True, metavar="COMMAND"), common)
    jsub.add_parser("pubkey", help="print the verifier key (public)").set_defaults(func=cmd_journal)
    jsub.add_parser("checkpoint", help="print the latest signed checkpoint").set_defaults(func=cmd_journal)
    from keylife.cli.journal_cmds import register as register_proof_commands

    register_proof_commands(jsub)  # prove, check-proof, consistency
    from keylife.cli.rotate_cmd import register as register_rotate

    register_rotate(jsub)  # rotate-signing-key
    from keylife.cli.witness_cli import register as register_witness

    register_witness(sub)  # witness serve, witness pubkey
    from keylife.cli.incident_cli import register as register_incident

    register_incident(sub)  # incident ..., bulk ..., revocations export
    from keylife.cli.report_cli import register as register_report

    register_report(sub)  # report compliance, report check
    return parser


def _one_line(exc: BaseException) -> str | None:
    """The message for an error the operator can fix, or None for a bug (which keeps its traceback)."""
    from keylife.cli.client import ClientError

    config = sys.modules.get("keylife.config")  # imported by every command that loads a config
    if isinstance(exc, UsageError | ClientError | DataDirBusy) or (
        config is not None and isinstance(exc, config.ConfigError)
    ):
        return str(exc)
    registry = sys.modules.get("keylife.registry.projection")  # a registry that cannot follow its journal
    if registry is not None and isinstance(exc, registry.RegistryError):
        return str(exc)
    policy = sys.modules.get("exporter.policy")  # imported only by the commands that load a policy
    if policy is not None and isinstance(exc, policy.PolicyError):
        return str(exc)
    if "httpx" in sys.modules:  # imported only by the commands that talk to a server
        import httpx

        if isinstance(exc, httpx.TransportError):
            try:
                where = f"{exc.request.method} {exc.request.url}"
            except RuntimeError:
                where = "the server"
            return f"cannot reach {where}: {exc or type(exc).__name__}"
    if isinstance(exc, OSError):  # a missing file, a port in use, a full disk: the system said why
        if exc.filename is not None and exc.strerror:
            other = f" -> {exc.filename2}" if exc.filename2 is not None else ""
            return f"{exc.filename}{other}: {exc.strerror}"
        return exc.strerror if exc.strerror and len(exc.args) == 2 else str(exc)
    return None


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        message = _one_line(exc)
        if message is None:
            raise
        print(f"keylife: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
