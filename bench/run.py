"""Run every benchmark, print one JSON document, save it, and rewrite the README table.

Why each benchmark runs in its own child process: pinning (sched_setaffinity), the memory of
a million decoded entries and the threads a server leaves behind must not leak from one
measurement into the next, and a benchmark that overruns can be stopped without losing the
others' figures. The child prints its result as JSON on stdout; progress goes to stderr.

    python -m bench [--quick] [--only NAME ...] [--output PATH] [--no-readme]

A full run (no ``--quick``) writes ``bench/results/latest.json`` and the README table;
``--only`` merges into them; ``--quick`` (the smoke run) writes ``bench/results/quick.json``
and leaves the README alone, so a test cannot overwrite real figures with smoke figures.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import os
import platform
import re
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from bench.common import REPO, log

BENCHMARKS: dict[str, str] = {
    "ingest_http": "bench.ingest_http",
    "journal_append": "bench.journal_append",
    "ack_latency": "bench.ack_latency",
    "verify": "bench.verify_speed",
    "bytes_sealed": "bench.bytes_sealed",
    "scrape": "bench.scrape",
    "forward_catchup": "bench.forward_catchup",
    "forward_latency": "bench.forward_latency",
    "datafold_ingest": "bench.datafold_ingest",
}
CHILD_TIMEOUT = {False: 900.0, True: 50.0}  # seconds; each benchmark also bounds itself
RESULTS = REPO / "bench" / "results"
README = REPO / "README.md"
START, END = "<!-- bench:start -->", "<!-- bench:end -->"


def machine() -> dict[str, Any]:
    """Enough about the host to judge whether two runs are comparable."""
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = re.search(r"^model name\s*:\s*(.+)$", cpuinfo, re.M)
    mem = re.search(r"^MemTotal:\s*(\d+) kB", Path("/proc/meminfo").read_text(), re.M)
    versions = {}
    for package in ("orjson", "pydantic", "pydantic_core", "fastapi", "starlette", "uvicorn", "zstandard", "h11"):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = None
    return {
        "nproc": os.cpu_count(),
        "cores_allowed": len(os.sched_getaffinity(0)),
        "cpu_model": model.group(1).strip() if model else platform.processor(),
        "mem_gib": round(int(mem.group(1)) / 2**20, 1) if mem else None,
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "kernel": platform.release(),
        "packages": versions,
    }


def git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    dirty = subprocess.run(  # the README table is this runner's own output: not a change to the code
        ["git", "status", "--porcelain", "--untracked-files=no", "--", ".", ":!README.md"],
        cwd=REPO,
        capture_output=True,
    )
    return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def run_child(name: str, quick: bool) -> dict[str, Any]:
    """One benchmark in its own interpreter; its JSON result, or an error record."""
    command = [sys.executable, "-m", "bench.run", "--child", name] + (["--quick"] if quick else [])
    started = time.monotonic()
    proc = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=None)
    try:
        out, _ = proc.communicate(timeout=CHILD_TIMEOUT[quick])
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGTERM)  # lets the child stop its server and remove temp files
        try:
            out, _ = proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
        return {"error": f"timed out after {CHILD_TIMEOUT[quick]:.0f} s", "seconds": CHILD_TIMEOUT[quick]}
    seconds = round(time.monotonic() - started, 1)
    lines = out.decode().strip().splitlines()
    if proc.returncode != 0 or not lines:
        return {"error": f"exit status {proc.returncode}", "seconds": seconds}
    found: dict[str, Any] = orjson.loads(lines[-1])
    return found | {"seconds": seconds}


def child(name: str, quick: bool) -> int:
    """In the child: run one benchmark, print its result as one JSON line."""

    def stop(_signum: int, _frame: object) -> None:
        raise SystemExit(f"{name}: stopped by the runner")

    signal.signal(signal.SIGTERM, stop)
    module = importlib.import_module(BENCHMARKS[name])
    found = module.run(quick)
    sys.stdout.write(orjson.dumps(found).decode() + "\n")
    return 0


def rows(doc: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        metric | {"benchmark": name} for name, bench in doc["benchmarks"].items() for metric in bench.get("metrics", [])
    ]


def fmt(figure: float) -> str:
    if isinstance(figure, float) and not figure.is_integer():
        return f"{figure:,.2f}".rstrip("0").rstrip(".") if abs(figure) < 100 else f"{figure:,.0f}"
    return f"{int(figure):,}"


def table(doc: dict[str, Any]) -> str:
    """The README section: one row per measurement, then where and when it was measured."""
    out = ["| measurement | figure | unit | target | met |", "|---|---:|---|---|---|"]
    for row in rows(doc):
        met = {True: "yes", False: "**no**", None: "–"}[row["met"]]
        out.append(
            f"| `{row['measurement']}` | {fmt(row['figure'])} | {row['unit']} | {row['target'] or '–'} | {met} |"
        )
    for name, bench in doc["benchmarks"].items():
        if "error" in bench:
            out.append(f"| `{name}` | failed: {bench['error']} | | | **no** |")
    m = doc["machine"]
    out += [
        "",
        f"Measured {doc['date'][:10]} at commit `{doc['git_commit']}` on {m['nproc']} × {m['cpu_model']}, "
        f"{m['mem_gib']} GiB, Python {m['python']}. HTTP: `keylife serve` pinned to one core, the load "
        "generator on the other, durable acks; in-process figures on one core. Parameters, context "
        "figures (CPU per event, p999, rates over time) and machine details: `bench/results/latest.json`.",
    ]
    return "\n".join(out)


def rewrite_readme(doc: dict[str, Any], path: Path = README) -> None:
    text = path.read_text()
    begin, end = text.index(START) + len(START), text.index(END)
    path.write_text(text[:begin] + "\n" + table(doc) + "\n" + text[end:])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run in under a minute")
    parser.add_argument("--only", action="append", choices=sorted(BENCHMARKS), help="run only this (repeatable)")
    parser.add_argument("--output", type=Path, help="where to save the JSON (default: bench/results/…)")
    parser.add_argument("--no-readme", action="store_true", help="do not rewrite the README table")
    parser.add_argument("--child", choices=sorted(BENCHMARKS), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child(args.child, args.quick)

    names = args.only or list(BENCHMARKS)
    output = args.output or RESULTS / ("quick.json" if args.quick else "latest.json")
    stamp = {"date": datetime.now(UTC).isoformat(timespec="seconds"), "git_commit": git_commit()}
    doc: dict[str, Any] = {"schema": 1, **stamp, "quick": args.quick, "machine": machine(), "benchmarks": {}}
    if args.only and not args.quick and output.exists():  # merge into the last full run
        previous = orjson.loads(output.read_bytes())
        doc["benchmarks"] = {k: v for k, v in previous.get("benchmarks", {}).items() if k in BENCHMARKS}
    for name in names:
        log(f"{name}: starting{' (quick)' if args.quick else ''}")
        doc["benchmarks"][name] = run_child(name, args.quick) | stamp
        log(f"{name}: done in {doc['benchmarks'][name]['seconds']} s")
    doc["benchmarks"] = {k: doc["benchmarks"][k] for k in BENCHMARKS if k in doc["benchmarks"]}
    doc["summary"] = rows(doc)
    text = orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode()
    sys.stdout.write(text + "\n")
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(text + "\n")
    if not args.quick and not args.no_readme:
        rewrite_readme(doc)
    failed = [name for name in names if "error" in doc["benchmarks"][name]]
    if failed:
        log(f"failed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
