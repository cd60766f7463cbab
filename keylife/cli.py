"""The ``keylife`` command. Each subcommand is a thin shell over a module that does the work."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from exporter.policy import PolicyError
from keylife.config import SCOPES, ConfigError, load
from keylife.datalock import DataDirBusy


def _config(args: argparse.Namespace):
    overrides = {}
    if getattr(args, "data_dir", None):
        overrides["KEYLIFE_DATA_DIR"] = str(args.data_dir)
    if getattr(args, "host", None):
        overrides["KEYLIFE_LISTEN__HOST"] = args.host
    if getattr(args, "port", None) is not None:
        overrides["KEYLIFE_LISTEN__PORT"] = str(args.port)
    import os

    return load(args.config, env={**os.environ, **overrides})


def cmd_serve(args: argparse.Namespace) -> int:
    from keylife.serve import serve

    return serve(_config(args), demo=args.demo, ready_file=args.ready_file)


def cmd_exporter(args: argparse.Namespace) -> int:
    import signal

    from exporter.policy import load_policy
    from exporter.standalone import StandaloneExporter
    from keylife import logs

    config = _config(args)
    logs.setup(config.logging.level, config.logging.format)
    if not config.registry_path.exists():
        print(f"no registry at {config.registry_path}: run keylife serve first", file=sys.stderr)
        return 1
    exporter = StandaloneExporter(
        config.registry_path, config.journal_dir, load_policy(config.exporter.policy), config.exporter.attention_cap
    )
    signal.signal(signal.SIGTERM, lambda *_: exporter.stop())
    return exporter.serve(args.host or config.listen.host, args.port if args.port is not None else 8788, args.refresh)


def cmd_forward(args: argparse.Namespace) -> int:
    from keylife.forward_cli import run_forward

    return run_forward(_config(args), ready_file=args.ready_file, until_caught_up=args.until_caught_up)


def cmd_verify(args: argparse.Namespace) -> int:
    from keylife.verify_cli import run_verify

    config = _config(args)
    directory = args.directory or config.journal_dir
    return run_verify(Path(directory), args.key, args.checkpoint, as_json=args.json)


def cmd_registry_rebuild(args: argparse.Namespace) -> int:
    from audit_forwarder.journal.reader import iter_entries
    from keylife.datalock import DataLock
    from keylife.registry import rebuild

    config = _config(args)
    target = args.output or config.registry_path
    lock = DataLock(config.data_dir).acquire("registry rebuild")  # refuses while serve runs
    try:
        stats = rebuild(iter_entries(config.journal_dir), Path(target), origin=config.journal.origin)
    finally:
        lock.release()
    print(json.dumps({"registry": str(target), "stats": _jsonable(stats)}))
    return 0


def cmd_keys(args: argparse.Namespace) -> int:
    from keylife.registry import RegistryReader

    config = _config(args)
    if not config.registry_path.exists():
        print(f"no registry at {config.registry_path}", file=sys.stderr)
        return 1
    registry = RegistryReader(config.registry_path)  # read-only: safe beside a running server
    try:
        if args.keys_command == "list":
            items = registry.list_keys(
                state=args.state,
                algorithm=args.algorithm,
                purpose=args.purpose,
                owner=args.owner,
                node=args.node,
                limit=args.limit,
                after=args.after,
            )
            for item in items:
                print(json.dumps(item, default=str))
            return 0
        key = registry.get_key(args.key_id)
        if key is None:
            print(f"key {args.key_id!r} is not in the registry", file=sys.stderr)
            return 1
        print(json.dumps(key, indent=2, default=str))
        return 0
    finally:
        registry.close()


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
        from keylife.client import post_ndjson_file

        return post_ndjson_file(args.file, args.url, _token(args), batch=args.batch)
    problem = None
    if len(sources) != 1:
        problem = "give exactly one of --file, --sse and --poll"
    elif args.follow and not args.df_file:
        problem = "--follow goes with --file"
    elif bool(args.poll) != bool(args.client):
        problem = "--poll needs at least one --client, and --client needs --poll"
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
    )


def cmd_demo(args: argparse.Namespace) -> int:
    import threading

    from keylife.demo import DemoConfig, run_live

    stop = threading.Event()
    config = DemoConfig(nodes=args.nodes, keys=args.keys, seed=args.seed)
    try:
        run_live(args.url.rstrip("/"), _token(args), config, stop=stop)
    except KeyboardInterrupt:
        stop.set()
    return 0


def cmd_token_create(args: argparse.Namespace) -> int:
    from keylife.api.auth import hash_token, new_token

    token = new_token()
    scopes = sorted(set(args.scopes.split(",")))
    bad = [s for s in scopes if s not in SCOPES]
    if bad:
        print(f"unknown scope(s) {', '.join(bad)}; choose from {', '.join(SCOPES)}", file=sys.stderr)
        return 2
    print(f"token (shown once; store it in a secret manager): {token}", file=sys.stderr)
    print("add to the config under api.tokens:")
    print(f"  - name: {args.name}\n    sha256: {hash_token(token)}\n    scopes: [{', '.join(scopes)}]")
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
    if args.token_file:
        return Path(args.token_file).read_text().strip()
    import os

    token = os.environ.get("KEYLIFE_TOKEN")
    if not token:
        raise SystemExit("give --token-file or set KEYLIFE_TOKEN")
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="keylife", description="Key lifecycle governance for DataFold networks.")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", type=Path, default=None, help="YAML config file (default: embedded defaults)")
    common.add_argument("--data-dir", type=Path, default=None, help="override data_dir")
    sub = _Sub(parser.add_subparsers(dest="command", required=True), common)

    p = sub.add_parser("serve", help="run ingest, journal, registry and API in one process")
    p.add_argument("--host")
    p.add_argument("--port", type=int)
    p.add_argument("--demo", action="store_true", help="feed a simulated DataFold network into the API")
    p.add_argument("--ready-file", type=Path, help="write {url, pid} as JSON here once listening")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("exporter", help="serve the metrics of an existing registry and journal")
    p.add_argument("--host")
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
        help="a checkpoint saved elsewhere (proves truncation); repeatable",
    )
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=cmd_verify)

    p = sub.add_parser("registry", help="registry maintenance")
    rsub = _Sub(p.add_subparsers(dest="registry_command", required=True), common)
    r = rsub.add_parser("rebuild", help="recreate the registry from the journal alone")
    r.add_argument("--output", type=Path, help="write here instead of the configured registry path")
    r.set_defaults(func=cmd_registry_rebuild)

    p = sub.add_parser("keys", help="read the local registry")
    ksub = _Sub(p.add_subparsers(dest="keys_command", required=True), common)
    k = ksub.add_parser("list")
    for name in ("state", "algorithm", "purpose", "owner", "node", "after"):
        k.add_argument(f"--{name}")
    k.add_argument("--limit", type=int, default=100)
    k.set_defaults(func=cmd_keys)
    k = ksub.add_parser("show")
    k.add_argument("key_id")
    k.set_defaults(func=cmd_keys)

    for name, func, helptext in (
        ("ingest", cmd_ingest, "post an NDJSON file of events to a server"),
        ("demo", cmd_demo, "run the simulated network against a server"),
    ):
        p = sub.add_parser(name, help=helptext)
        if name == "ingest":
            p.add_argument("file", type=Path, help="an NDJSON file of events, or 'datafold' to read a DataFold node")
            p.add_argument("--batch", type=int, default=1000)
            d = p.add_argument_group("datafold", _DATAFOLD_USAGE)
            d.add_argument("--file", dest="df_file", type=Path, metavar="PATH", help="a node's log file")
            d.add_argument("--follow", action="store_true", help="keep following the file (else read to its end)")
            d.add_argument("--sse", metavar="URL", help="a node's log stream URL (.../api/logs/stream)")
            d.add_argument("--poll", metavar="URL", help="a node's base URL, to poll key status")
            d.add_argument("--client", metavar="ID", action="append", default=[], help="client id to poll; repeatable")
            d.add_argument("--interval", type=float, default=60.0, help="seconds between polls")
            d.add_argument("--node", help="node name for lines that do not say")
            d.add_argument(
                "--state-dir", type=Path, metavar="DIR", help="keep read positions here (else start from the beginning)"
            )
        else:
            p.add_argument("--nodes", type=int, default=5)
            p.add_argument("--keys", type=int, default=40)
            p.add_argument("--seed", type=int, default=1)
        p.add_argument("--url", default="http://127.0.0.1:8787")
        p.add_argument("--token-file", help="file holding the bearer token (else $KEYLIFE_TOKEN)")
        p.set_defaults(func=func)

    p = sub.add_parser("token", help="API tokens")
    tsub = _Sub(p.add_subparsers(dest="token_command", required=True), common)
    t = tsub.add_parser("create", help="make a token and print the config lines holding its hash")
    t.add_argument("--name", required=True)
    t.add_argument("--scopes", required=True, help="comma-separated: " + ",".join(SCOPES))
    t.set_defaults(func=cmd_token_create)

    p = sub.add_parser("journal", help="journal keys and checkpoints")
    jsub = _Sub(p.add_subparsers(dest="journal_command", required=True), common)
    jsub.add_parser("pubkey", help="print the verifier key (public)").set_defaults(func=cmd_journal)
    jsub.add_parser("checkpoint", help="print the latest signed checkpoint").set_defaults(func=cmd_journal)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ConfigError, DataDirBusy, PolicyError, PermissionError) as exc:  # named problems, no traceback
        print(f"keylife: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
