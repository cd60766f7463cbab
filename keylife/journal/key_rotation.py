"""Rotate the journal signing key inside the log, crash-safely (docs/journal.md, *Rotating the signing key*).

The steps, each durable before the next:

1. the new private key is written 0600 to ``<key file>.next`` (``pending_path``);
2. the rotation entry (``rotation.rotation_event``: both verifier keys and the old key's
   signature) is appended and fdatasynced at seq r;
3. ``key-rotations.json`` beside the journal names seq r (a hint for start-up);
4. a checkpoint of size r + 1 is signed by the old and the new key and logged, and the writer
   signs with the new key from then on (if that checkpoint fails, e.g. a full disk, the next
   one, signed by the new key alone, covers the rotation: still within the new key's term);
5. ``<key file>.next`` replaces the key file (``rename``: the file holds the old key or the new
   one, never neither); the old private key is gone, not kept aside: it must never sign again.
   ``verifier.key`` beside the journal is updated (public).

A crash leaves ``<key file>.next`` behind until step 5; ``finish`` (run by ``serve`` and by the
rotation command before anything is appended or signed) completes the rotation when the entry
of step 2 is in the journal, and removes the unused key when it is not. Before step 4 the
journal's checkpoints are all signed by the old key and cover no more than r, which the old
key may sign; from step 4 on the rotation entry is signed for, so either key's view verifies.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from keylife.common.files import fsync_dir
from keylife.common.secret_files import create_secret_file
from keylife.journal import rotation as rot
from keylife.journal.reader import iter_entries
from keylife.journal.signing import NotEd25519, Signer, new_ed25519, read_ed25519
from keylife.journal.writer import Journal, JournalReadOnly, _atomic_write


class RotationRefused(RuntimeError):
    """The rotation cannot be done or finished; the message says why, in one line."""


def pending_path(key_path: Path) -> Path:
    return Path(key_path).with_name(Path(key_path).name + ".next")


def load_signer(path: Path, name: str) -> Signer:
    try:
        return Signer(name, read_ed25519(path, "signing key"))
    except NotEd25519 as exc:
        raise RotationRefused(str(exc)) from exc


def rotate(journal: Journal, key_path: Path, now: float | None = None) -> rot.Rotation:
    """Journal a new signing key, signed by the current one, and switch ``journal`` to it.

    The caller owns the journal (the data-dir lock) and nothing else appends meanwhile.
    """
    if journal.integrity_fault is not None:
        raise JournalReadOnly(f"the journal is read-only: {journal.integrity_fault}")
    if journal.size != journal.committed_size:
        raise RotationRefused("entries are staged but not committed; rotate between commits")
    pending = pending_path(key_path)
    if pending.exists():
        raise RotationRefused(f"{pending} exists: an unfinished rotation; finish it first")
    private, pem = new_ed25519()
    create_secret_file(pending, pem)  # step 1
    new = Signer(journal.signer.name, private)
    seq = journal.committed_size
    event = rot.rotation_event(journal.origin, seq, journal.signer, new.verifier, now)
    journal.append([event])
    try:
        journal.commit(maintain=False)  # step 2
    except BaseException:
        journal.rollback()
        pending.unlink(missing_ok=True)  # not journaled: the new key never existed for anyone
        raise
    rotation = rot.Rotation(seq, journal.signer.verifier, new.verifier, rot.from_event(seq, event).signature)
    _complete(journal, key_path, new, rotation)
    return rotation


def finish(journal: Journal, key_path: Path) -> str | None:
    """Complete or discard a rotation a crash interrupted (``<key file>.next`` left behind);
    returns a note for the log, or None when there was nothing to do. Raises RotationRefused
    when the files disagree in a way only an operator can settle."""
    if journal.integrity_fault is not None:
        return None  # read-only: every file is left as found for the operator
    pending = pending_path(key_path)
    if not pending.exists():
        _refuse_retired(journal, key_path)
        return None
    try:
        new = load_signer(pending, journal.signer.name)
    except (ValueError, OSError, RotationRefused):
        new = None  # a crash while it was written: no entry can name it (step 2 follows step 1)
    found = _journaled(journal, new) if new is not None else None
    if found is None:
        pending.unlink()
        fsync_dir(pending.parent)
        return f"removed {pending}: a rotation interrupted before its entry was journaled"
    if found.old != journal.signer.verifier:
        raise RotationRefused(
            f"the rotation at seq {found.seq} retires {rot.short(found.old)}, but {key_path} holds "
            f"{rot.short(journal.signer.verifier)}"
        )
    _complete(journal, key_path, new, found)
    return f"finished the signing-key rotation journaled at seq {found.seq}"


def _refuse_retired(journal: Journal, key_path: Path) -> None:
    """A key file holding the key the last rotation retired (a restored backup) must not sign."""
    rotations = rot.hinted_rotations(journal.directory)
    if rotations:
        last = rotations[-1]
        if last.old == journal.signer.verifier:
            raise RotationRefused(
                f"{key_path} holds {rot.short(last.old)}, the key the rotation at seq {last.seq} retired; "
                f"the journal's key is {rot.short(last.new)}: a retired key must not sign"
            )


def _journaled(journal: Journal, new: Signer) -> rot.Rotation | None:
    """The rotation entry naming ``new``: named in ``key-rotations.json`` (step 3 was done; on a
    running serve the new key may have signed later checkpoints too), or else among the entries
    from the one before the latest checkpoint on (a crash between steps 2 and 3)."""
    for hinted in rot.hinted_rotations(journal.directory):
        if hinted.new == new.verifier:
            return hinted
    latest = journal.last_checkpoint
    start = max(0, (latest.size if latest else 0) - 1)
    for entry in iter_entries(journal.directory, start):
        if entry.seq >= journal.committed_size:
            break
        if entry.event.get("type") == rot.EVENT_TYPE:
            try:
                found = rot.from_event(entry.seq, entry.event)
            except rot.RotationError:
                continue
            if found.new == new.verifier:
                return found
    return None


def _complete(journal: Journal, key_path: Path, new: Signer, rotation: rot.Rotation) -> None:
    """Steps 3-5 (each skipped when a crash left it done)."""
    known = rot.hinted_rotations(journal.directory)
    if rotation.seq not in [r.seq for r in known]:  # step 3: before any checkpoint the new key signs
        _atomic_write(journal.directory / rot.HINTS, rot.hint_record([*known, rotation]))
    end = rotation.seq + 1
    latest = journal.last_checkpoint
    if latest is None or latest.size < end:
        if journal.committed_size != end:
            raise RotationRefused(
                f"the rotation at seq {rotation.seq} is followed by {journal.committed_size - end} entries "
                "no checkpoint covers; the dual-signed checkpoint must end at the rotation"
            )
        with contextlib.suppress(OSError):  # counted by the journal; the next checkpoint (new key) covers it
            journal.checkpoint(cosigners=(new,))  # step 4
    journal.signer = new
    _switch(pending_path(key_path), Path(key_path))  # step 5
    _atomic_write(journal.directory / "verifier.key", (new.verifier.encode() + "\n").encode())  # public


def _switch(pending: Path, key_path: Path) -> None:
    """Put the new key in place of the old one in one rename: the old private key is gone."""
    os.replace(pending, key_path)
    fsync_dir(key_path.parent)
