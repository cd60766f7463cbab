"""``keylife journal rotate-signing-key``: journal a new signing key, signed by the current one.

It works offline, on a stopped server: it takes the data-dir lock as ``serve`` does (and says
plainly that serve is running when it cannot), opens the journal (the start-up integrity check
runs; a read-only journal is not rotated), finishes a rotation a crash interrupted, then runs
``keylife.journal.key_rotation.rotate``. It prints only public keys.

Exit codes: 0 rotated; 2 could not run (serve running, no key or journal, a read-only journal).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any


def register(jsub: Any) -> None:
    p = jsub.add_parser(
        "rotate-signing-key",
        help="journal a new signing key, signed by the current one (serve must be stopped)",
    )
    p.set_defaults(func=cmd_rotate)


def cmd_rotate(args: argparse.Namespace) -> int:
    from keylife.cli.main import UsageError, _config
    from keylife.cli.runtime import _write_public, journal_settings
    from keylife.common.datalock import DataDirBusy, DataLock
    from keylife.journal.key_rotation import RotationRefused, finish, load_signer, rotate
    from keylife.journal.writer import Journal, JournalCorrupt

    config = _config(args)
    key_path = config.signing_key_path
    if not (config.journal_dir / "journal.json").exists():
        raise UsageError(f"{config.journal_dir} is not a keylife journal (no journal.json): start keylife serve once")
    if not key_path.exists():
        raise UsageError(f"no signing key at {key_path}: start keylife serve once")
    try:
        lock = DataLock(config.data_dir).acquire("journal rotate-signing-key")
    except DataDirBusy as exc:
        raise UsageError(f"serve is running ({exc}); stop it, then rotate the signing key") from None
    try:
        signer = load_signer(key_path, config.journal.origin)
        journal = Journal(config.journal_dir, signer, journal_settings(config))
        try:
            finished = finish(journal, key_path)
            if finished:
                print(f"keylife: {finished}", file=sys.stderr)
            rotation = rotate(journal, key_path)
        finally:
            journal.close()
        _write_public(config.journal_dir / "verifier.key", rotation.new.encode())
    except (RotationRefused, JournalCorrupt, ValueError) as exc:
        raise UsageError(f"signing key not rotated: {exc}") from None
    finally:
        lock.release()
    print(f"rotated the journal signing key at seq {rotation.seq}")
    print(f"  retired  {rotation.old.encode()}")
    print(f"  current  {rotation.new.encode()}")
    print(
        f"the checkpoint of size {rotation.seq + 1} carries both signatures; publish the current verifier key "
        "(keylife journal pubkey). Auditors who pinned the retired key follow the rotation."
    )
    return 0
