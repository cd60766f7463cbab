"""The start-up integrity check: is the history the writer is about to extend the one it signed?

``Journal`` runs ``check_at_start`` after crash recovery and before it signs or appends anything.
Any answer but ``None`` makes the journal read-only until an operator has looked
(docs/journal.md, *Start-up check*). What it checks, and what it costs:

* ``checkpoint`` and ``checkpoints.log`` are both present once the journal holds entries older
  than the grace (deleted checkpoint files are a fault; a crash in the first seconds is not);
* the latest checkpoint and the last ``TAIL_BYTES`` of ``checkpoints.log`` (the newest
  checkpoints): each signed by a trusted key for this origin, sizes never shrinking, one hash
  per size (else a split view), and the latest checkpoint is in the log;
* the latest checkpoint covers no more entries than the journal holds, and the hash it carries
  equals ``anchor.checkpoint_matches``: the RFC 6962 Merkle root recomputed from every entry up
  to its size, trusting no tile (``anchor.root_at``; about 1.3 s per million entries), or for a
  format-1 checkpoint the chain head (sealed segments by their ``.idx``, the segment holding
  the checkpoint re-hashed);
* the entries past the latest checkpoint span no more than the grace (a running writer signs
  within it; more means later checkpoints were dropped);
* the open segment's entries match their ``.sums`` digests (done while recovering it).

Only the full verification (``keylife verify``, the periodic check in ``serve``) checks every
checkpoint in the log, the ``.idx`` files and the ``.sums`` of sealed segments.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import orjson

from keylife.journal.anchor import RootUnavailable, checkpoint_matches
from keylife.journal.note import Checkpoint, NoteError, parse
from keylife.journal.rotation import KeySchedule

TAIL_BYTES = 64 * 1024  # the newest checkpoints.log lines checked at start-up (a few hundred)


def _tail_lines(path: Path) -> list[bytes]:
    size = path.stat().st_size
    with open(path, "rb") as handle:
        start = max(0, size - TAIL_BYTES)
        handle.seek(start)
        data = handle.read()
    lines = data.splitlines()
    return lines[1:] if start and lines else lines


def _observed(directory: Path, seq: int) -> float | None:
    from keylife.journal.reader import iter_entries  # the reader imports the writer, which imports this

    for entry in iter_entries(directory, seq):
        return datetime.fromisoformat(entry.observed_at.replace("Z", "+00:00")).timestamp()
    return None


def _tail_span(directory: Path, covered: int, size: int) -> float:
    """Seconds between the first entry past ``covered`` and the last entry."""
    if size <= covered:
        return 0.0
    first, last = _observed(directory, covered), _observed(directory, size - 1)
    return 0.0 if first is None or last is None else last - first


def _checked(cp: Checkpoint, where: str, origin: str, trusted: KeySchedule) -> str | None:
    problem = trusted.check(cp)
    if problem:
        return f"{where} (size {cp.size}): {problem}"
    if cp.origin != origin:
        return f"{where} is for origin {cp.origin!r}, not {origin!r}"
    return None


def check_at_start(directory: Path, origin: str, size: int, trusted: KeySchedule, grace: float) -> str | None:
    """None when the journal extends the history its checkpoints signed; else a one-line reason.

    ``trusted`` says which key signs which sizes (``rotation.KeySchedule``: each key only the
    sizes of its term)."""
    directory = Path(directory)
    latest_path, log_path = directory / "checkpoint", directory / "checkpoints.log"
    if not latest_path.exists() and not log_path.exists():
        span = _tail_span(directory, 0, size)
        if size and span > grace:
            return (
                f"no checkpoint files (checkpoint, checkpoints.log) but {size} entries spanning {span:.0f} s: "
                "the checkpoints were deleted"
            )
        return None
    if not latest_path.exists() or not log_path.exists():
        missing = "checkpoint" if not latest_path.exists() else "checkpoints.log"
        return f"the checkpoint file {missing} is missing"
    try:
        latest = parse(latest_path.read_text())
    except (NoteError, UnicodeDecodeError) as exc:
        return f"the latest checkpoint file is not a checkpoint: {exc}"
    problem = _checked(latest, "the latest checkpoint", origin, trusted)
    if problem:
        return problem
    notes: list[Checkpoint] = []
    for raw in _tail_lines(log_path):
        try:
            notes.append(parse(orjson.loads(raw)["note"]))
        except (orjson.JSONDecodeError, KeyError, TypeError, NoteError) as exc:
            return f"checkpoints.log holds a line that is not a checkpoint: {exc}"
    seen: dict[int, bytes] = {}
    largest = 0
    for cp in notes:
        problem = _checked(cp, "a checkpoint in checkpoints.log", origin, trusted)
        if problem:
            return problem
        if cp.size < largest:
            return f"rollback: checkpoints.log holds size {cp.size} after size {largest}"
        if seen.setdefault(cp.size, cp.hash) != cp.hash:
            return f"SPLIT VIEW: checkpoints.log holds two different hashes for size {cp.size}"
        largest = cp.size
    if not any(cp.render() == latest.render() for cp in notes):
        return f"the latest checkpoint (size {latest.size}) is not among the newest lines of checkpoints.log"
    if latest.size > size:
        return f"truncated: the latest checkpoint covers {latest.size} entries but the journal holds {size}"
    try:
        matches = checkpoint_matches(directory, origin, latest)
    except (RootUnavailable, OSError, ValueError, KeyError) as exc:
        return f"the journal cannot be checked against the latest checkpoint: {exc}"
    if not matches:
        return f"the entries up to seq {latest.size - 1} do not match the latest signed checkpoint (size {latest.size})"
    span = _tail_span(directory, latest.size, size)
    if span > grace:
        return (
            f"{size - latest.size} entries after the latest checkpoint (size {latest.size}) span {span:.0f} s, "
            f"more than the {grace:.0f} s within which the writer signs: later checkpoints were dropped"
        )
    return None
