"""``keylife verify``: run the offline verifier with a progress bar on a terminal, name each fault."""

from __future__ import annotations

import json
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from keylife.journal import segments as segs
from keylife.journal import verify_status
from keylife.journal.note import NoteError, parse
from keylife.journal.signing import Verifier
from keylife.journal.verify import verify


def _trusted(keys: list[str], directory: Path, console: Console) -> list[Verifier]:
    out = []
    for item in keys:
        path = Path(item)
        text = path.read_text().strip() if path.exists() else item
        out.append(Verifier.parse(text))
    if not out:
        local = directory / "verifier.key"
        if not local.exists():
            raise SystemExit("give --key (the verifier key published for this journal)")
        console.print(f"[yellow]no --key given: trusting {local}, which lives beside the journal it checks[/]")
        out.append(Verifier.parse(local.read_text()))
    return out


def estimate_entries(directory: Path) -> int | None:
    """Entries in a journal, from segment indexes and sums files (cheap; for a progress total)."""
    total = 0
    for seg in segs.list_segments(directory / "segments"):
        if seg.sealed:
            total += segs.read_index(seg)["count"]
        elif seg.path("sums").exists():
            total += seg.path("sums").stat().st_size // segs.SUM_BYTES
    return total or None


def run_verify(directory: Path, keys: list[str], checkpoints: list[Path], as_json: bool = False) -> int:
    console = Console(stderr=True)
    if not (directory / "journal.json").exists():
        console.print(f"[red]{directory} is not a keylife journal (no journal.json)[/]")
        return 2
    try:
        trusted = _trusted(keys, directory, console)
        external = [parse(path.read_text()) for path in checkpoints]
    except (ValueError, NoteError, OSError) as exc:
        console.print(f"[red]{exc}[/]")
        return 2
    if console.is_terminal and not as_json:
        with Progress(
            TextColumn("verifying"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console
        ) as bar:
            task = bar.add_task("verify", total=estimate_entries(directory))
            report = verify(directory, trusted, external, progress=lambda n: bar.update(task, completed=n))
    else:
        report = verify(directory, trusted, external)
    verify_status.record(directory, report)
    if as_json:
        print(
            json.dumps(
                {
                    "ok": report.ok,
                    "entries": report.entries,
                    "checkpoints": report.checkpoints,
                    "unsigned_tail": report.unsigned_tail,
                    "head": report.head.hex(),
                    "faults": [{"kind": f.kind, "seq": f.seq, "detail": f.detail} for f in report.faults],
                }
            )
        )
    else:
        for fault in report.faults:
            print(f"FAULT {fault}")
        state = "OK" if report.ok else f"FAILED: {len(report.faults)} fault(s)"
        print(
            f"{state}: {report.entries} entries, {report.checkpoints} signed checkpoints checked, "
            f"{report.unsigned_tail} entries after the last checkpoint"
        )
    return 0 if report.ok else 1
