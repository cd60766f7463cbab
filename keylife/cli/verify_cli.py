"""``keylife verify``: run the offline verifier with a progress bar on a terminal, name each fault.

Nothing on the journal's host is an anchor: whoever can rewrite the entries can rewrite the
checkpoints, ``verifier.key`` and, holding the signing key, re-sign a forged history. So
``verify`` needs a trusted anchor (a pinned ``--key`` plus a ``--checkpoint`` obtained
elsewhere, e.g. a SIEM's copy of a shipped checkpoint; or ``--witness`` keys of which
``--witness-quorum`` cosigned a checkpoint of this journal, C2SP tlog-cosignature) and fails
without one, unless ``--allow-unanchored`` is given: then it runs and lists what it could not
check (``unanchored_gaps``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from keylife.journal import segments as segs
from keylife.journal import verify_status
from keylife.journal.cosignature import CosignerKey
from keylife.journal.note import Checkpoint, NoteError, parse
from keylife.journal.signing import Verifier
from keylife.journal.verify import DEFAULT_GRACE, Report, verify
from keylife.witness.cosigned import LATEST_NAME, LOG_NAME, Cosigned, best_cosigned, read_notes


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


def read_checkpoint(path: Path) -> Checkpoint:
    """A checkpoint file: the signed note itself, or what a sink shipped (docs/journal.md, *Anchoring*).

    Accepted: the note (``keylife journal checkpoint``, the ``checkpoint`` file); a JSON object
    with the note under ``note`` or ``event.note``; NDJSON such as the file sink's output, of
    which the last checkpoint record is used.
    """
    text = path.read_text()
    if not text.lstrip().startswith("{"):
        return parse(text)
    note = None
    for line in text.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        event = record.get("event") if isinstance(record, dict) else None
        if isinstance(event, dict) and event.get("type") == "checkpoint" and isinstance(event.get("note"), str):
            note = event["note"]
        elif isinstance(record, dict) and isinstance(record.get("note"), str):
            note = record["note"]
    if note is None:
        raise NoteError(f"{path} holds JSON but no checkpoint record (a note, or an event of type checkpoint)")
    return parse(note)


def unanchored_gaps(pinned: bool, anchored: bool, witnessed: str | None = None) -> list[str]:
    """What a run without a trusted anchor could not check, in the user's terms."""
    gaps = []
    if not pinned:
        gaps.append(
            "that the checkpoints were signed by this journal's key: no --key, so verifier.key beside the journal "
            "was trusted (a history rewritten from scratch, re-signed with a new key and a swapped verifier.key "
            "would pass)"
        )
    if not anchored:
        gaps.append(
            "that the history was not rewritten and re-signed on the host (it holds the signing key), nor cut at a "
            "checkpoint: no --checkpoint obtained elsewhere (a SIEM's copy of a shipped checkpoint will do)"
        )
    gaps.append(
        f"that independent witnesses saw this history: {witnessed}"
        if witnessed
        else "that independent witnesses saw this history: no --witness given (docs/journal.md, Witnesses)"
    )
    return gaps


def estimate_entries(directory: Path) -> int | None:
    """Entries in a journal, from segment indexes and sums files (cheap; for a progress total)."""
    total = 0
    for seg in segs.list_segments(directory / "segments"):
        if seg.sealed or seg.pruned:
            total += segs.read_index(seg)["count"]
        elif seg.path("sums").exists():
            total += seg.path("sums").stat().st_size // segs.SUM_BYTES
    return total or None


NO_ANCHOR = (
    "NOT ANCHORED: nothing here is an anchor the journal's host could not forge. Give --key VERIFIER "
    "(the published verifier key) and --checkpoint FILE (a checkpoint obtained elsewhere, e.g. your SIEM's "
    "copy of a shipped checkpoint; see docs/journal.md, Anchoring), or --witness KEY (a witness that cosigns "
    "this journal's checkpoints), or --allow-unanchored to check anyway"
)


def run_verify(
    directory: Path,
    keys: list[str],
    checkpoints: list[Path],
    as_json: bool = False,
    *,
    allow_unanchored: bool = False,
    grace: float = DEFAULT_GRACE,
    witnesses: list[str] | None = None,
    witness_quorum: int | None = None,
) -> int:
    console = Console(stderr=True)
    if not (directory / "journal.json").exists():
        console.print(f"[red]{directory} is not a keylife journal (no journal.json)[/]")
        return 2
    if not allow_unanchored and not (keys and checkpoints) and not witnesses:
        missing = "--key and --checkpoint" if not keys and not checkpoints else "--key" if not keys else "--checkpoint"
        print(f"FAILED: {NO_ANCHOR} (missing: {missing})")
        return 1
    try:
        trusted = _trusted(keys, directory, console)
        external = [read_checkpoint(path) for path in checkpoints]
        witness = witness_anchor(directory, witnesses or [], witness_quorum, external)
    except (ValueError, NoteError, OSError) as exc:
        console.print(f"[red]{exc}[/]")
        return 2
    witnessed = witness.best.checkpoint if witness and witness.best else None
    if console.is_terminal and not as_json:
        with Progress(
            TextColumn("verifying"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console
        ) as bar:
            task = bar.add_task("verify", total=estimate_entries(directory))
            report = verify(
                directory, trusted, external, progress=lambda n: bar.update(task, completed=n), grace=grace,
                witnessed=witnessed,
            )  # fmt: skip
    else:
        report = verify(directory, trusted, external, grace=grace, witnessed=witnessed)
    verify_status.record(directory, report)
    by_checkpoint = bool(keys) and report.anchored is not None
    by_witnesses = report.witness_anchored is not None
    anchored = by_checkpoint or by_witnesses
    witness_gap = witness.shortfall(report) if witness else None
    gaps = [] if anchored else unanchored_gaps(bool(keys), report.anchored is not None, witness_gap)
    ok = report.ok and (anchored or allow_unanchored)
    if as_json:
        print(
            json.dumps(
                {
                    "ok": ok,
                    "entries": report.entries,
                    "checkpoints": report.checkpoints,
                    "unsigned_tail": report.unsigned_tail,
                    "anchored": max(report.anchored or 0, report.witness_anchored or 0) if anchored else None,
                    "witness_anchored": report.witness_anchored,
                    "not_checked": gaps,
                    "head": report.head.hex(),
                    "rotations": [
                        {"seq": r.seq, "old": r.old.encode(), "new": r.new.encode()} for r in report.rotations
                    ],
                    "pruned": [
                        {"first": r.first, "last": r.last, "by_seq": r.by.seq if r.by else None} for r in report.pruned
                    ],
                    "notes": report.notes,
                    "faults": [{"kind": f.kind, "seq": f.seq, "detail": f.detail} for f in report.faults],
                }
            )
        )
        return 0 if ok else 1
    for fault in report.faults:
        print(f"FAULT {fault}")
    count = len(report.faults)
    if not anchored and not allow_unanchored:
        count += 1
        why = witness_gap or "no given --checkpoint signed by the --key matches this journal"
        print(f"FAULT {'unanchored':<13} journal: {why}")
    state = "OK" if ok else f"FAILED: {count} fault(s)"
    print(
        f"{state}: {report.entries} entries, {report.checkpoints} signed checkpoints checked, "
        f"{report.unsigned_tail} entries after the last checkpoint"
    )
    for rotation in report.rotations:
        print(f"ROTATED: followed the signing-key rotation at {rotation.describe()} (signed by the retiring key)")
    for pruned in report.pruned:
        print(f"PRUNED: {pruned}")
    for note in report.notes:
        print(f"NOTE: {note}")
    if by_checkpoint:
        print(
            f"ANCHORED: entries 0..{report.anchored - 1} by the checkpoint given on the command line; "
            f"{report.entries - report.anchored} later entries are covered only by the journal's own checkpoints"
        )
    if by_witnesses and witness is not None:
        print(
            f"ANCHORED: entries 0..{report.witness_anchored - 1} by {witness.describe()}; "
            f"{report.entries - report.witness_anchored} later entries are covered only by the journal's own "
            "checkpoints"
        )
    if not anchored:
        print("UNANCHORED: could not check:")
        for gap in gaps:
            print(f"  - {gap}")
    return 0 if ok else 1


@dataclass
class WitnessAnchor:
    """The witness side of ``verify``: the best-cosigned checkpoint found, and how to report it."""

    keys: list[CosignerKey]
    quorum: int
    best: Cosigned | None
    short: Cosigned | None
    problems: list[str]

    def describe(self) -> str:
        assert self.best is not None
        names = ", ".join(key.name for key, _ in self.best.witnesses)
        return f"the checkpoint cosigned by {len(self.best.witnesses)} of {len(self.keys)} witnesses ({names})"

    def shortfall(self, report: Report) -> str | None:
        """Why the witnesses anchor nothing, or None when they do."""
        if report.witness_anchored is not None:
            return None
        if self.best is not None:
            return (
                f"the checkpoint cosigned by the witnesses (size {self.best.checkpoint.size}) does not match "
                "this journal: its history differs from the one the witnesses saw"
            )
        if self.short is None:
            where = f"{LOG_NAME} or {LATEST_NAME} beside the journal, or --checkpoint"
            return f"no witness-cosigned checkpoint found ({where})"
        valid = ", ".join(key.name for key, _ in self.short.witnesses) or "none"
        return (
            f"no checkpoint carries {self.quorum} valid cosignatures of the {len(self.keys)} given witnesses; "
            f"the best (size {self.short.checkpoint.size}) has {len(self.short.witnesses)}: {valid}"
        )


def witness_anchor(
    directory: Path, keys: list[str], quorum: int | None, given: list[Checkpoint]
) -> WitnessAnchor | None:
    """Find the largest checkpoint cosigned by ``quorum`` (default: all) of the witness ``keys``."""
    if not keys:
        return None
    parsed = []
    for item in keys:
        path = Path(item)
        parsed.append(CosignerKey.parse(path.read_text() if path.exists() else item))
    k = len(parsed) if quorum is None else quorum
    if not 1 <= k <= len(parsed):
        raise ValueError(f"--witness-quorum {k}: give 1 to {len(parsed)} (the number of --witness keys)")
    notes, problems = read_notes(directory)
    best, short = best_cosigned([*notes, *given], parsed, k)
    return WitnessAnchor(parsed, k, best, short, problems)
