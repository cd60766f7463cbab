"""Where a log keeps the cosignatures its witnesses returned (docs/journal.md, *Witnesses*).

Beside the journal:

* ``cosignatures.log``: one JSON line per cosignature received, ``{"witness": <name>, "note":
  <the checkpoint note, the log's signature line, then that witness's cosignature line>}``,
  appended and fsynced before it counts. Append-only evidence: an auditor can check any line
  with the witness's key alone.
* ``checkpoint.cosigned``: the latest checkpoint with every cosignature gathered for it (the
  log's signature line first), replaced atomically: what ``keylife verify --witness`` and an
  auditor fetch first.

``best_cosigned`` picks, among these and any given notes, the largest checkpoint carrying at
least K valid cosignatures from the given witness keys.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path

import orjson

from keylife.common.files import replace_durably
from keylife.journal.cosignature import CosignerKey, valid_cosigners
from keylife.journal.note import Checkpoint, NoteError, Signature, parse
from keylife.journal.segments import FILE_MODE

LOG_NAME = "cosignatures.log"
LATEST_NAME = "checkpoint.cosigned"


def merge(notes: list[Checkpoint]) -> list[Checkpoint]:
    """One checkpoint per distinct body, with the union of the signature lines seen for it."""
    bodies: dict[str, list[Signature]] = {}
    first: dict[str, Checkpoint] = {}
    for cp in notes:
        sigs = bodies.setdefault(cp.text, [])
        first.setdefault(cp.text, cp)
        sigs += [s for s in cp.signatures if s not in sigs]
    return [Checkpoint(c.origin, c.size, c.hash, c.text, tuple(bodies[t])) for t, c in first.items()]


def read_notes(directory: Path) -> tuple[list[Checkpoint], list[str]]:
    """Every cosigned note beside the journal, and a problem per unreadable line."""
    notes: list[Checkpoint] = []
    problems: list[str] = []
    latest = Path(directory) / LATEST_NAME
    if latest.exists():
        try:
            notes.append(parse(latest.read_text()))
        except (NoteError, UnicodeDecodeError) as exc:
            problems.append(f"{LATEST_NAME}: not a checkpoint note ({exc})")
    log = Path(directory) / LOG_NAME
    if log.exists():
        for number, raw in enumerate(log.read_bytes().splitlines(), start=1):
            try:
                notes.append(parse(orjson.loads(raw)["note"]))
            except (orjson.JSONDecodeError, KeyError, TypeError, NoteError) as exc:
                problems.append(f"{LOG_NAME} line {number}: not a cosigned checkpoint ({exc})")
    return notes, problems


@dataclass(frozen=True)
class Cosigned:
    checkpoint: Checkpoint
    witnesses: list[tuple[CosignerKey, int]]  # (witness, cosignature timestamp), valid only


def best_cosigned(
    notes: list[Checkpoint], keys: list[CosignerKey], quorum: int
) -> tuple[Cosigned | None, Cosigned | None]:
    """(the largest checkpoint with >= ``quorum`` valid cosignatures, the best-cosigned one short of
    it): the second says how close the journal came, for the report."""
    best_short: Cosigned | None = None
    for cp in sorted(merge(notes), key=lambda c: c.size, reverse=True):
        valid = valid_cosigners(cp, keys)
        if len(valid) >= quorum:
            return Cosigned(cp, valid), best_short
        if best_short is None or len(valid) > len(best_short.witnesses):
            best_short = Cosigned(cp, valid)
    return None, best_short


class CosignatureStore:
    """The log side's writer of ``cosignatures.log`` and ``checkpoint.cosigned``."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.latest: Checkpoint | None = None
        self._lock = threading.Lock()  # the client asks its witnesses in parallel
        try:
            self.latest = parse((self.directory / LATEST_NAME).read_text())
        except (OSError, NoteError, UnicodeDecodeError):
            self.latest = None

    def add(self, witness: str, cp: Checkpoint, line: str) -> Checkpoint:
        """Record ``witness``'s cosignature ``line`` on ``cp`` durably; returns the merged latest."""
        with self._lock:
            return self._add(witness, cp, line)

    def _add(self, witness: str, cp: Checkpoint, line: str) -> Checkpoint:
        cosigned = parse(cp.render() + line)
        record = orjson.dumps({"witness": witness, "note": cosigned.render()}) + b"\n"
        fd = os.open(self.directory / LOG_NAME, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, FILE_MODE)
        try:
            os.write(fd, record)
            os.fsync(fd)
        finally:
            os.close(fd)
        if self.latest is not None and self.latest.text == cp.text:
            merged = merge([self.latest, cosigned])[0]
        elif self.latest is None or cp.size >= self.latest.size:
            merged = cosigned
        else:
            return self.latest
        replace_durably(self.directory / LATEST_NAME, merged.render().encode(), FILE_MODE)  # 0640, as the journal
        self.latest = merged
        return merged
