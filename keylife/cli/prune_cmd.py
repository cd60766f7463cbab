"""``keylife journal prune --before DATE``: retention, offline, on a stopped ``serve``.

It takes the data directory's lock as ``serve`` does (a running ``serve`` makes it refuse in one
line), opens the journal with the signing key (the start-up integrity check runs: a journal
that fails it is not pruned; a signing-key rotation a crash interrupted is finished first, as
``serve`` does), journals a ``journal_pruned`` entry, commits it and signs a
checkpoint over it, and only then removes the bodies (keylife/journal/prune.py has the file
format and the crash-safe order). Running it again finishes an interrupted prune.

Why offline: the writer's tree holds leaf-hash blocks and tail readers hold segment listings;
removing files under a running writer would need both to re-read the pruned range. A stopped
journal has no such readers, and a prune runs once a day or a year.

Exit codes: 0 pruned (or nothing old enough: it says why), 1 refused (a faulty journal, a
date in the future), 2 could not run (bad date, busy data directory, no signing key).
"""

from __future__ import annotations

import argparse
import sys
import uuid
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from keylife.journal.writer import Journal


def register(jsub: Any) -> None:
    p = jsub.add_parser(
        "prune", help="remove the bodies of entries observed before DATE, keeping their hashes (serve stopped)"
    )
    p.add_argument(
        "--before", help="a date (2019-01-01, midnight UTC) or an RFC 3339 time (default: now - journal.retention_days)"
    )
    p.add_argument("--dry-run", action="store_true", help="say what would be pruned; change nothing")
    p.set_defaults(func=cmd_prune)


def cmd_prune(args: argparse.Namespace) -> int:
    from keylife.cli.main import UsageError, _config
    from keylife.cli.runtime import journal_settings
    from keylife.common.datalock import DataLock
    from keylife.journal import prune
    from keylife.journal.key_rotation import RotationRefused, finish, load_signer
    from keylife.journal.writer import Journal, JournalCorrupt

    config = _config(args)
    now = datetime.now(UTC)
    if args.before is None:
        if config.journal.retention_days is None:
            raise UsageError("give --before DATE, or set journal.retention_days in the config")
        before = now - timedelta(days=config.journal.retention_days)
    else:
        try:
            before = prune.parse_time(args.before)
        except ValueError as exc:
            raise UsageError(f"--before {args.before!r} is not a date or an RFC 3339 time: {exc}") from None
    if before > now:
        print(
            f"keylife: refused: --before {prune.format_time(before)} is in the future; entries observed before it "
            "are still being written and are not covered by a signed checkpoint yet",
            file=sys.stderr,
        )
        return 1
    if not (config.journal_dir / "journal.json").exists():
        raise UsageError(f"{config.journal_dir} is not a keylife journal (no journal.json)")
    if not config.signing_key_path.exists():
        raise UsageError(f"no signing key at {config.signing_key_path}: the prune entry must be signed")
    lock = DataLock(config.data_dir).acquire("journal prune")  # refuses while serve runs
    try:
        settings = journal_settings(config)
        settings.seal_in_background = False
        try:
            signer = load_signer(config.signing_key_path, config.journal.origin)
            journal = Journal(config.journal_dir, signer, settings)
        except (JournalCorrupt, RotationRefused, ValueError) as exc:
            print(f"keylife: refused: the journal cannot be opened: {exc}", file=sys.stderr)
            return 1
        try:
            if journal.integrity_fault is not None:
                fault = journal.integrity_fault
                print(f"keylife: refused: the journal fails its integrity check: {fault}", file=sys.stderr)
                return 1
            try:
                finished = finish(journal, config.signing_key_path)  # as serve does: never sign with a retired key
            except RotationRefused as exc:
                print(f"keylife: refused: {exc}", file=sys.stderr)
                return 1
            if finished:
                print(f"keylife: {finished}", file=sys.stderr)
            return run(journal, before, now, dry_run=args.dry_run)
        finally:
            journal.close()
    finally:
        lock.release()


def run(journal: Journal, before: datetime, now: datetime, *, dry_run: bool = False) -> int:
    """Prune ``journal`` (open, checked, the caller holding the data-dir lock) up to ``before``:
    announce, commit, sign, then remove (keylife/journal/prune.py); prints what it did."""
    from keylife.domain.events import Event, EventType, format_time
    from keylife.journal import prune

    covered = journal.last_checkpoint.size if journal.last_checkpoint else 0
    chosen = prune.plan(journal.directory, before, covered)
    if not chosen.segments:
        why = f": {chosen.stopped}" if chosen.stopped else ""
        print(f"nothing to prune before {chosen.before}{why}")
        if chosen.leftovers and not dry_run:
            prune.carry_out(chosen)
        return 0
    what = f"entries {chosen.first}..{chosen.last} ({chosen.count} entries, {len(chosen.segments)} segments)"
    if dry_run:
        print(f"would prune {what}; kept from seq {chosen.last + 1}: {chosen.stopped or 'the end'}")
        return 0
    event = Event.model_validate(
        {
            "id": f"keylife-{uuid.uuid4().hex}",
            "type": EventType.JOURNAL_PRUNED,
            "occurred_at": format_time(now),
            "actor": "keylife",
            "reason": f"bodies of {what} observed before {chosen.before} removed; leaf hashes kept",
            "attributes": prune.attributes(journal.directory, chosen),
        }
    )
    [entry] = journal.append([event.payload()])
    journal.commit(maintain=False)
    journal.checkpoint()  # the announcement is durable and signed before any body goes
    prune.carry_out(chosen)
    print(f"pruned {what}, observed before {chosen.before}; announced at seq {entry.seq}")
    if chosen.stopped:
        print(f"kept from seq {chosen.last + 1}: {chosen.stopped}")
    return 0
