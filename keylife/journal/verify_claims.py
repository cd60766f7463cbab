"""The checkpoints a verification weighs: those beside the journal and those given from outside.

``load_checkpoints`` reads ``checkpoint`` and ``checkpoints.log`` (and says when either is missing
or they disagree); ``signed`` keeps the ones a key of the schedule may sign at their size;
``rollbacks`` and ``split_views`` name a log that shrank and two histories signed at one size.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import orjson

from keylife.journal.note import Checkpoint, NoteError, parse
from keylife.journal.rotation import RETIRED, KeySchedule

EXTERNAL = "checkpoint given on the command line"
HELD = "checkpoint held in memory by the writer"
WITNESSED = "checkpoint cosigned by the witnesses"


@dataclass(frozen=True)
class Fault:
    kind: str  # modified | deleted | inserted | reordered | truncated | bad_signature | unknown_key
    # | missing_checkpoint | rollback | split_view | unsigned_tail | bad_rotation | retired_key
    seq: int | None
    detail: str

    def __str__(self) -> str:
        where = f"seq {self.seq}" if self.seq is not None else "journal"
        return f"{self.kind:<13} {where}: {self.detail}"


@dataclass(frozen=True)
class Claim:
    source: str
    checkpoint: Checkpoint


def load_checkpoints(directory: Path) -> tuple[list[Claim], list[Fault]]:
    """Every checkpoint beside the journal. The latest file is read before the log: the writer
    appends to the log first, so on a live journal the file read first is always in the log."""
    claims: list[Claim] = []
    faults: list[Fault] = []
    latest_path = directory / "checkpoint"
    latest_text: str | None = None
    if latest_path.exists():
        latest_text = latest_path.read_text(errors="replace")
    history = directory / "checkpoints.log"
    logged: list[Claim] = []
    if history.exists():
        for number, raw in enumerate(history.read_bytes().splitlines(), start=1):
            try:
                logged.append(Claim(f"checkpoints.log line {number}", parse(orjson.loads(raw)["note"])))
            except (orjson.JSONDecodeError, KeyError, TypeError, NoteError) as exc:
                faults.append(Fault("modified", None, f"checkpoints.log line {number} is not a checkpoint: {exc}"))
    claims += logged
    if latest_text is not None:
        try:
            latest = parse(latest_text)
        except NoteError as exc:
            faults.append(Fault("modified", None, f"latest checkpoint file is not a checkpoint: {exc}"))
        else:
            claims.append(Claim("checkpoint (latest)", latest))
            if history.exists() and not any(c.checkpoint.render() == latest.render() for c in logged):
                faults.append(
                    Fault(
                        "missing_checkpoint",
                        None,
                        f"the latest checkpoint (size {latest.size}) is not in checkpoints.log: it was cut or edited",
                    )
                )
    if latest_text is None and history.exists() and logged:
        faults.append(Fault("missing_checkpoint", None, "the latest checkpoint file `checkpoint` is missing"))
    if latest_text is not None and not history.exists():
        faults.append(Fault("missing_checkpoint", None, "checkpoints.log is missing (deleted?)"))
    return claims, faults


def rollbacks(claims: list[Claim]) -> list[Fault]:
    """A checkpoint in the log smaller than one before it: the log does not only grow."""
    faults = []
    largest: Claim | None = None
    for claim in claims:
        if not claim.source.startswith("checkpoints.log"):
            continue
        if largest is not None and claim.checkpoint.size < largest.checkpoint.size:
            faults.append(
                Fault(
                    "rollback",
                    None,
                    f"{claim.source} (size {claim.checkpoint.size}) is smaller than {largest.source} "
                    f"(size {largest.checkpoint.size})",
                )
            )
        elif largest is None or claim.checkpoint.size > largest.checkpoint.size:
            largest = claim
    return faults


def split_views(by_size: dict[int, list[Claim]]) -> list[Fault]:
    """Two validly signed checkpoints of one size with different hashes: two histories were signed."""
    faults = []
    for size, claims in sorted(by_size.items()):
        first = claims[0]
        other = next((c for c in claims[1:] if c.checkpoint.hash != first.checkpoint.hash), None)
        if other is not None:
            faults.append(
                Fault(
                    "split_view",
                    size - 1 if size else None,
                    f"SPLIT VIEW at size {size}: {first.source} has {first.checkpoint.hash.hex()[:16]}…, "
                    f"{other.source} has {other.checkpoint.hash.hex()[:16]}…, both validly signed",
                )
            )
    return faults


def signed(
    claims: list[Claim], schedule: KeySchedule, origin: str
) -> tuple[dict[int, list[Claim]], list[Claim], list[Fault]]:
    """The claims signed by a key ``schedule`` trusts at their size, by size and in order, and a
    fault for each other one."""
    by_size: dict[int, list[Claim]] = {}
    valid: list[Claim] = []
    faults: list[Fault] = []
    for claim in claims:
        cp = claim.checkpoint
        problem = schedule.check(cp)
        if problem is not None and problem.startswith("unknown signing key"):
            why = problem.partition(": ")[2]
            detail = f"{claim.source} (size {cp.size}) is signed by a key not trusted here" + (
                f" ({why})" if why else ""
            )
            faults.append(Fault("unknown_key", None, detail))
        elif problem is not None and problem.startswith(RETIRED):
            faults.append(Fault("retired_key", None, f"{claim.source} (size {cp.size}) is {problem}"))
        elif problem:
            faults.append(Fault("bad_signature", None, f"{claim.source} (size {cp.size}): signature does not verify"))
        elif cp.origin != origin:
            faults.append(Fault("unknown_key", None, f"{claim.source} is for origin {cp.origin!r}, not {origin!r}"))
        else:
            by_size.setdefault(cp.size, []).append(claim)
            valid.append(claim)
    return by_size, valid, faults
