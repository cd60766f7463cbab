"""Run every benchmark, print one JSON document, save it, and rewrite the README table.

Why each benchmark runs in its own child process: pinning (sched_setaffinity), the memory of
a million decoded entries and the threads a server leaves behind must not leak from one
measurement into the next, and a benchmark that overruns can be stopped without losing the
others' figures. The child prints its result as JSON on stdout; progress goes to stderr.

    python -m bench [--quick] [--only NAME ...] [--output PATH] [--no-readme]

A full run (no ``--quick``) writes ``bench/results/latest.json`` and the README table;
``--only`` merges into them; ``--quick`` (the smoke run) writes ``bench/results/quick.json``
and leaves the README alone, so a test cannot overwrite real figures with smoke figures.

Every benchmark's result records the code it measured (``git_commit``, ``git_dirty`` and, for a
dirty tree, ``git_diff_sha256``), taken just before it starts. The README table claims one
commit in its footer only when every figure comes from that same code; when they differ (an
``--only`` run merged into older figures, or the tree changed during a run) the table is not
written, unless ``--allow-mixed`` is given, and then each row names its own commit and the footer
says they differ. Every module in ``bench/`` with a ``run(quick)`` function is a benchmark here.
"""

from __future__ import annotations

import argparse
import hashlib
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


def _discover() -> None:
    """Add every other bench module with a ``run(quick)`` (a benchmark added later, named by its
    module), so ``bash bench/run.sh`` runs them all without this list being edited."""
    known = set(BENCHMARKS.values())
    for path in sorted(Path(__file__).resolve().parent.glob("*.py")):
        module = f"bench.{path.stem}"
        if module not in known and re.search(r"^def run\(quick\b", path.read_text(), re.M):
            BENCHMARKS[path.stem] = module


_discover()
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


# The runner's own output is not a change to the code under measurement.
_NOT_CODE = (":!README.md", ":!bench/results")


def _git(repo: Path, *args: str) -> bytes | None:
    try:
        out = subprocess.run(["git", *args], cwd=repo, capture_output=True, timeout=30, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout if out.returncode == 0 else None


def provenance(repo: Path = REPO) -> dict[str, Any]:
    """The code a figure is measured on: ``git_commit`` (short), ``git_dirty`` (tracked changes
    or untracked files beside it) and, when dirty, ``git_diff_sha256`` (a digest of the changes
    and of the untracked files' contents, so two dirty runs count as the same code only if they
    are). No git: every field None."""
    commit = _git(repo, "rev-parse", "--short", "HEAD")
    if commit is None:
        return {"git_commit": None, "git_dirty": None, "git_diff_sha256": None}
    diff = _git(repo, "diff", "HEAD", "--binary", "--", ".", *_NOT_CODE) or b""
    listed = _git(repo, "ls-files", "-z", "--others", "--exclude-standard", "--", ".", *_NOT_CODE) or b""
    untracked = listed.split(b"\0")
    digest = hashlib.sha256(diff)
    for name in filter(None, untracked):
        path = repo / name.decode()
        digest.update(name + b"\0" + (path.read_bytes() if path.is_file() else b""))
    dirty = bool(diff) or any(untracked)
    return {
        "git_commit": commit.decode().strip(),
        "git_dirty": dirty,
        "git_diff_sha256": digest.hexdigest()[:16] if dirty else None,
    }


def source(bench: dict[str, Any]) -> str:
    """One benchmark's code as a label: ``abc1234``, ``abc1234+dirty.<digest>`` or ``unknown``.
    Older results wrote a dirty tree as ``abc1234-dirty``, without a digest."""
    commit = bench.get("git_commit")
    if not commit:
        return "unknown"
    if bench.get("git_dirty"):
        return f"{commit}+dirty.{bench.get('git_diff_sha256') or 'unknown'}"
    return commit


class MixedCommits(ValueError):
    """The figures were measured on different code, and the table was asked to claim one commit."""


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


def table(doc: dict[str, Any], allow_mixed: bool = False) -> str:
    """The README section: one row per measurement, then where and when it was measured.

    Raises ``MixedCommits`` when the figures come from different code (or from unknown code),
    unless ``allow_mixed``: then each row names its commit and the footer says they differ."""
    benches: dict[str, dict[str, Any]] = doc["benchmarks"]
    sources = {name: source(bench) for name, bench in benches.items()}
    mixed = len(set(sources.values())) > 1 or "unknown" in sources.values()
    if mixed and not allow_mixed:
        listing = ", ".join(f"{name} at {label}" for name, label in sources.items())
        raise MixedCommits(
            f"the figures come from different or unknown code ({listing}); rerun them together "
            "(bash bench/run.sh) or pass --allow-mixed to show each row's commit"
        )

    def commit(name: str) -> str:  # the extra column, only when the figures differ
        return f" `{sources[name]}` |" if mixed else ""

    out = ["| measurement | figure | unit | target | met |" + (" commit |" if mixed else ""), "|---|---:|---|---|---|"]
    out[-1] += "---|" if mixed else ""
    for row in rows(doc):
        met = {True: "yes", False: "**no**", None: "–"}[row["met"]]
        out.append(
            f"| `{row['measurement']}` | {fmt(row['figure'])} | {row['unit']} | {row['target'] or '–'} | {met} |"
            + commit(row["benchmark"])
        )
    for name, bench in benches.items():
        if "error" in bench:
            out.append(f"| `{name}` | failed: {bench['error']} | | | **no** |" + commit(name))
    m = doc["machine"]
    dates = sorted(str(bench.get("date", doc["date"]))[:10] for bench in benches.values()) or [doc["date"][:10]]
    when = dates[0] if dates[0] == dates[-1] else f"{dates[0]} to {dates[-1]}"
    if mixed:
        where = (
            f"Measured {when} at {len(set(sources.values()))} different commits (each row names its own; "
            "they are not one consistent measurement)"
        )
    else:
        label = next(iter(sources.values()), doc.get("git_commit"))
        dirty = " (on a working tree with uncommitted changes)" if "+dirty" in str(label) else ""
        where = f"Measured {when} at commit `{label}`{dirty}"
    out += [
        "",
        f"{where} on {m['nproc']} × {m['cpu_model']}, "
        f"{m['mem_gib']} GiB, Python {m['python']}. HTTP: `keylife serve` pinned to one core, the load "
        "generator on the other, durable acks; in-process figures on one core. Parameters, context "
        "figures (CPU per event, p999, rates over time) and machine details: `bench/results/latest.json`.",
    ]
    return "\n".join(out)


def rewrite_readme(doc: dict[str, Any], path: Path | None = None, allow_mixed: bool = False) -> None:
    """Replace the table between the README's markers; the file is untouched if ``table`` refuses."""
    path = path or README
    text = path.read_text()
    begin, end = text.index(START) + len(START), text.index(END)
    path.write_text(text[:begin] + "\n" + table(doc, allow_mixed) + "\n" + text[end:])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run in under a minute")
    parser.add_argument("--only", action="append", choices=sorted(BENCHMARKS), help="run only this (repeatable)")
    parser.add_argument("--output", type=Path, help="where to save the JSON (default: bench/results/…)")
    parser.add_argument("--no-readme", action="store_true", help="do not rewrite the README table")
    parser.add_argument(
        "--allow-mixed", action="store_true", help="write the table even if figures come from different commits"
    )
    parser.add_argument("--child", choices=sorted(BENCHMARKS), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child(args.child, args.quick)

    names = args.only or list(BENCHMARKS)
    output = args.output or RESULTS / ("quick.json" if args.quick else "latest.json")
    started = time.monotonic()
    stamp = {"date": datetime.now(UTC).isoformat(timespec="seconds"), **provenance()}
    doc: dict[str, Any] = {"schema": 2, **stamp, "quick": args.quick, "machine": machine(), "benchmarks": {}}
    if args.only and not args.quick and output.exists():  # merge into the last full run
        previous = orjson.loads(output.read_bytes())
        doc["benchmarks"] = {k: v for k, v in previous.get("benchmarks", {}).items() if k in BENCHMARKS}
    for name in names:
        log(f"{name}: starting{' (quick)' if args.quick else ''}")
        # Stamped when it starts: a tree changed during a long run shows as different code.
        here = {"date": datetime.now(UTC).isoformat(timespec="seconds"), **provenance()}
        doc["benchmarks"][name] = run_child(name, args.quick) | here
        log(f"{name}: done in {doc['benchmarks'][name]['seconds']} s")
    doc["seconds"] = round(time.monotonic() - started, 1)  # this run's wall time, all benchmarks it ran
    doc["benchmarks"] = {k: doc["benchmarks"][k] for k in BENCHMARKS if k in doc["benchmarks"]}
    doc["summary"] = rows(doc)
    text = orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode()
    sys.stdout.write(text + "\n")
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(text + "\n")
    status = 0
    if not args.quick and not args.no_readme:
        try:
            rewrite_readme(doc, allow_mixed=args.allow_mixed)
        except MixedCommits as exc:
            log(f"README table not written: {exc}")
            status = 2
    failed = [name for name in names if "error" in doc["benchmarks"][name]]
    if failed:
        log(f"failed: {', '.join(failed)}")
    return 1 if failed else status


if __name__ == "__main__":
    raise SystemExit(main())
