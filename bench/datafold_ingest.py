"""DataFold adapter throughput: parse + ingest a 1,000,000-line node log on one core.

Why it matters: a node logs every encryption, decryption and signed request; the adapter must
keep up with a busy node's log (and catch up with a day of it) without a second machine. The log
is generated from the sample shapes in ``shared/datafold/samples`` with realistic proportions
(mostly crypto-audit encrypt/decrypt and signed-request successes, some rotations, security
events and noise), one line per 10 ms of node time. It is read by the real file runner
(``keylife ingest datafold --file`` without ``--follow``) with the adapter and an in-process
ledger: every event is durable in a real journal and registry before the position advances.
Timed from the first line read to the last event durable, all on one core.
"""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bench.common import ORIGIN, Metric, Stopwatch, log, pin, result, scratch

NAME = "datafold_ingest"
FULL = {"lines": 1_000_000, "clients": 200, "nodes": 1}
QUICK = {"lines": 30_000, "clients": 50, "nodes": 1}
START = datetime(2026, 1, 1, tzinfo=UTC)


def _crypto(ts: datetime, kind: str, client: str, rng: random.Random) -> str:
    op = "encrypt_atom" if kind == "Encryption" else "decrypt_atom"
    stamp = ts.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return (
        f"[{ts:%Y-%m-%dT%H:%M:%SZ} INFO  crypto_audit] "
        f'{{"event_id":"{uuid.UUID(int=rng.getrandbits(128))}","timestamp":"{stamp}","event_type":"{kind}",'
        f'"severity":"Info","component":"crypto_engine","operation":"{op}","actor":"{client}","result":"Success",'
        f'"duration":{{"secs":0,"nanos":{rng.randrange(10**6, 10**7)}}},'
        f'"metadata":{{"context":"atom_store","data_size":{rng.choice((512, 4096, 65536))}}},'
        f'"correlation_id":null,"session_id":null}}'
    )


def _auth(ts: datetime, kind: str, client: str, rng: random.Random) -> str:
    level, severity = ("INFO ", "Info") if kind == "AuthenticationSuccess" else ("WARN ", "Warning")
    error = "null" if kind == "AuthenticationSuccess" else '{"reason":"signature mismatch"}'
    return (
        f"[{ts:%Y-%m-%dT%H:%M:%SZ} {level} datafold::datafold_node::signature_auth] SECURITY_EVENT: "
        f'{{"event_id":"{uuid.UUID(int=rng.getrandbits(128))}","correlation_id":"{uuid.UUID(int=rng.getrandbits(128))}",'
        f'"timestamp":{int(ts.timestamp())},"event_type":"{kind}","severity":"{severity}",'
        f'"client_info":{{"ip_address":"198.51.100.{rng.randrange(1, 255)}","user_agent":"datafold-python-sdk/0.4",'
        f'"key_id":"{client}","forwarded_for":null}},"request_info":{{"method":"POST","path":"/api/mutation"}},'
        f'"error_details":{error},"metrics":{{"processing_time_ms":{rng.randrange(1, 40)}}}}}'
    )


def _noise(ts: datetime, rng: random.Random) -> str:
    return f"[{ts:%Y-%m-%dT%H:%M:%SZ} INFO  datafold::network::core] connected to peer 12D3KooWnode{rng.randrange(99)}"


def generate(path: Path, lines: int, clients: int, seed: int = 7) -> dict[str, int]:
    """Write a node log of ``lines`` lines; returns how many of each kind."""
    rng = random.Random(seed)
    names = [f"client-{n:04x}" for n in range(clients)]
    counts: dict[str, int] = {}
    with open(path, "w") as out:
        for n in range(lines):
            ts = START + timedelta(milliseconds=10 * n)
            roll = rng.random()
            client = rng.choice(names)
            if roll < 0.40:
                kind, text = "encryption", _crypto(ts, "Encryption", client, rng)
            elif roll < 0.75:
                kind, text = "decryption", _crypto(ts, "Decryption", client, rng)
            elif roll < 0.93:
                kind, text = "auth_success", _auth(ts, "AuthenticationSuccess", client, rng)
            elif roll < 0.95:
                kind, text = "auth_failure", _auth(ts, "AuthenticationFailure", client, rng)
            else:
                kind, text = "noise", _noise(ts, rng)
            counts[kind] = counts.get(kind, 0) + 1
            out.write(text + "\n")
    return counts


def run(quick: bool) -> dict[str, Any]:
    from keylife.cli.config import load
    from keylife.cli.runtime import Runtime
    from keylife.datafold.mapping import Adapter
    from keylife.datafold.runner import run_file
    from keylife.datafold.sinks import LedgerEventSink

    p = dict(QUICK if quick else FULL)
    core = pin(0)
    with scratch(NAME) as tmp:
        logfile = tmp / "node.log"
        built = Stopwatch()
        mix = generate(logfile, p["lines"], p["clients"])
        log(f"{NAME}: wrote {p['lines']} lines ({logfile.stat().st_size / 2**20:.0f} MiB) in {built.stop().wall:.0f} s")
        env = {"KEYLIFE_DATA_DIR": str(tmp / "data"), "KEYLIFE_JOURNAL__ORIGIN": ORIGIN,
               "KEYLIFE_LOGGING__LEVEL": "WARNING"}  # fmt: skip
        runtime = Runtime.start(load(None, env=env))
        try:
            adapter = Adapter(tmp / "rejects.ndjson", tmp / "status.json", node="node-bench")
            sink = LedgerEventSink(runtime.ledger)
            watch = Stopwatch()
            counters = run_file(logfile, adapter, sink, tmp / "position.json", follow=False)
            watch.stop()
            journal_entries = runtime.journal.size
        finally:
            runtime.close()
    stats = counters.snapshot()
    rate = p["lines"] / watch.wall
    log(f"{NAME}: {rate:,.0f} lines/s on core {core}; {journal_entries} journal entries; {stats}")
    return result(
        [
            Metric("datafold_parse_ingest_lines_per_s", rate, "lines/s (1 core)", ">= 50000"),
            Metric("datafold_cpu_us_per_line", watch.cpu / p["lines"] * 1e6, "µs CPU/line", None, 2),
        ],
        p,
        mix=mix,
        journal_entries=journal_entries,
        seconds=round(watch.wall, 2),
        counters=stats,
    )
