"""The shipper's follower: the journal's committed entries as records, with its signed checkpoints.

Reading the journal's files is the journal's own business (``keylife.journal.reader``: its public
``EntryTail`` hands out committed entries with their chain hashes, ``CheckpointLog`` the signed
checkpoints). This module adds what shipping needs on top:

* each entry becomes a ``Record`` naming the first signed checkpoint that covers it;
* each signed checkpoint met on the way is checked against the chain hash read; a mismatch is
  counted, never ignored;
* with ``publish_checkpoints``, each checkpoint is handed out as its own record right after the
  last entry it covers.
"""

from __future__ import annotations

from pathlib import Path

from audit_forwarder.shipper.contract import CHECKPOINT_TYPE, Record
from keylife.journal.reader import (
    Checkpoint,
    CheckpointLog,
    Entry,
    EntryTail,
    TailError,
    chain_head,
    journal_origin,
)

__all__ = ["JournalTail", "TailError", "chain_head", "checkpoint_record", "journal_origin"]


def checkpoint_record(checkpoint: Checkpoint, observed_at: str) -> Record:
    """A signed checkpoint as a record every format can render (see ``contract.Record``)."""
    event = {
        "type": CHECKPOINT_TYPE,
        "origin": checkpoint.origin,
        "size": checkpoint.size,
        "root_hash": checkpoint.hash.hex(),
        "note": checkpoint.render(),
    }
    return Record(Entry(checkpoint.size - 1, observed_at, event, checkpoint.hash), checkpoint.size)


class JournalTail:
    """Hands out committed records from ``next_seq`` on; ``read`` never blocks."""

    def __init__(
        self,
        directory: Path,
        next_seq: int,
        head: bytes,
        *,
        checkpoints_shipped: int = 0,
        publish_checkpoints: bool = True,
    ) -> None:
        self.directory = Path(directory)
        self.entries = EntryTail(self.directory, next_seq, head)
        self.checkpoints_shipped = checkpoints_shipped
        self.publish_checkpoints = publish_checkpoints
        self.checkpoints = CheckpointLog(self.directory)
        self.mismatches: list[str] = []  # checkpoints whose signed hash differs from the entries read

    @property
    def next_seq(self) -> int:
        return self.entries.next_seq

    @property
    def head(self) -> bytes:
        return self.entries.head

    def close(self) -> None:
        self.entries.close()

    def read(self, limit: int) -> list[Record]:
        """Up to ``limit`` entry records (plus checkpoint records) available now, in order."""
        self.checkpoints.refresh()
        out: list[Record] = []
        if self.publish_checkpoints:
            self._late_checkpoints(out, limit)
        room = limit - len(out)
        seq = self.next_seq
        if self.publish_checkpoints:  # leave room for the checkpoints that will follow these entries
            room -= len(self.checkpoints.between(seq, seq + room))
        entries = self.entries.read(room) if room > 0 else []
        append = out.append
        covering = self.checkpoints.covering
        size = covering(seq)  # the covering checkpoint only changes when one is passed
        for entry, event_json in entries:
            append(Record(entry, size, event_json))
            seq += 1
            if size == seq:
                self._check(size, entry.hash)
                if self.publish_checkpoints and size > self.checkpoints_shipped:
                    append(self._checkpoint(size))
                size = covering(seq)
        return out

    def _late_checkpoints(self, out: list[Record], limit: int) -> None:
        """Checkpoints signed after the entries they cover were already read."""
        for size in self.checkpoints.between(self.checkpoints_shipped, self.next_seq)[:limit]:
            if size == self.next_seq:
                self._check(size, self.head)
            out.append(self._checkpoint(size))

    def _checkpoint(self, size: int) -> Record:
        checkpoint, when = self.checkpoints.by_size[size]
        self.checkpoints_shipped = size
        return checkpoint_record(checkpoint, when)

    def _check(self, size: int, head: bytes) -> None:
        checkpoint, _ = self.checkpoints.by_size[size]
        # format 2 signs the Merkle root, format 1 the chain head (docs/journal.md)
        if checkpoint.hash != head and checkpoint.hash != self.entries.root_at(size):
            self.mismatches.append(
                f"checkpoint {size} signs {checkpoint.hash.hex()} but the journal read gives {head.hex()}"
            )
