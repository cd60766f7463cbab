"""``keylife journal rotate-signing-key``: journal a new signing key, signed by the current one.

Two ways to reach the writer, the same steps (``keylife.journal.key_rotation.rotate``):

* ``--url``: a running serve does it on its writer thread (``POST /v1/journal/signing-key/rotate``,
  a token with the ``admin`` scope);
* without it, offline on a stopped serve: the command takes the data-dir lock as ``serve`` does
  (and says plainly that serve is running when it cannot), opens the journal (the start-up
  integrity check runs; a read-only journal is not rotated) and finishes a rotation a crash
  interrupted first.

It prints only public keys. Exit codes: 0 rotated; 2 could not run (serve running, no key or
journal, a read-only journal, a server that refused).
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
    p.add_argument("--url", help="rotate on this running keylife server instead (a token with the 'admin' scope)")
    p.add_argument("--token-file", help="bearer token file, mode 0600 (else $KEYLIFE_TOKEN)", metavar="PATH")
    p.set_defaults(func=cmd_rotate)


def _report(seq: int, retired: str, current: str) -> int:
    print(f"rotated the journal signing key at seq {seq}")
    print(f"  retired  {retired}")
    print(f"  current  {current}")
    print(
        f"the checkpoint of size {seq + 1} carries both signatures; publish the current verifier key "
        "(keylife journal pubkey). Auditors who pinned the retired key follow the rotation."
    )
    return 0


def _remote(args: argparse.Namespace) -> int:
    import httpx

    from keylife.cli.client import ClientError
    from keylife.cli.main import _token

    url = args.url.rstrip("/")
    headers = {"Authorization": f"Bearer {_token(args)}"}
    response = httpx.post(f"{url}/v1/journal/signing-key/rotate", headers=headers, timeout=60, trust_env=False)
    if response.status_code != 200:
        try:
            detail = response.json().get("detail", "")
        except ValueError:
            detail = response.text[:200]
        raise ClientError(f"{url}: HTTP {response.status_code}: signing key not rotated: {detail}")
    body = response.json()
    return _report(body["seq"], body["retired"], body["current"])


def cmd_rotate(args: argparse.Namespace) -> int:
    from keylife.cli.main import UsageError, _config
    from keylife.cli.runtime import journal_settings
    from keylife.common.datalock import DataDirBusy, DataLock
    from keylife.journal.key_rotation import RotationRefused, finish, load_signer, rotate
    from keylife.journal.writer import Journal, JournalCorrupt

    if args.url:
        return _remote(args)
    config = _config(args)
    key_path = config.signing_key_path
    if not (config.journal_dir / "journal.json").exists():
        raise UsageError(f"{config.journal_dir} is not a keylife journal (no journal.json): start keylife serve once")
    if not key_path.exists():
        raise UsageError(f"no signing key at {key_path}: start keylife serve once")
    try:
        lock = DataLock(config.data_dir).acquire("journal rotate-signing-key")
    except DataDirBusy as exc:
        raise UsageError(f"serve is running ({exc}); stop it or use --url") from None
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
    except (RotationRefused, JournalCorrupt, ValueError) as exc:
        raise UsageError(f"signing key not rotated: {exc}") from None
    finally:
        lock.release()
    return _report(rotation.seq, rotation.old.encode(), rotation.new.encode())
