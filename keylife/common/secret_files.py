"""One rule for every secret file keylife reads or writes.

Secret files are the journal signing key, API tokens (the local admin token, ``--token-file``,
the forwarder's report token), TLS private keys (the API's and the sinks' mTLS client keys),
and the sinks' bearer-token and password files. The rule: a secret file grants nothing to its
group or to others (``mode & 0o077 == 0``; 0600 and 0400 pass, 0640 and 0644 do not), checked
on the file a symlink points to, and keylife creates its own secret files 0600 (O_EXCL, fsync)
in a 0700 directory. One refusal message for all of them, naming the path and never the content.

It imports only ``keylife.common``, so every layer (``audit_forwarder`` too) can use it.
"""

from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path

from keylife.common.files import create_durably, fsync_dir


class SecretFileError(PermissionError, ValueError):
    """A secret file is open to group or others, or cannot be read.

    A PermissionError for callers that catch those, and a ValueError so a pydantic validator
    turns it into a config error naming the setting.
    """


def _refusal(path: Path, mode: int, what: str) -> SecretFileError:
    access = "readable" if mode & 0o044 else "writable" if mode & 0o022 else "accessible"
    prefix = f"{what} " if what else ""
    return SecretFileError(f"{prefix}{path} is {access} by others (mode {mode:o}); chmod 600 it")


def check_mode(path: Path, st_mode: int, what: str = "") -> None:
    """Raise SecretFileError unless ``st_mode`` grants nothing to group and others."""
    mode = stat.S_IMODE(st_mode)
    if mode & 0o077:
        raise _refusal(Path(path), mode, what)


def check_secret_file(path: Path, what: str = "") -> None:
    """For config validation: the file exists, is a regular file, and is owner-only."""
    path = Path(path)
    try:
        st = path.stat()
    except OSError as exc:
        raise SecretFileError(f"{what + ' ' if what else ''}{path}: {exc.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise SecretFileError(f"{what + ' ' if what else ''}{path} is not a regular file")
    check_mode(path, st.st_mode, what)


def read_secret_file(path: Path, what: str = "") -> bytes:
    """The content of an owner-only secret file; the mode is checked on the open file itself."""
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise SecretFileError(f"{what + ' ' if what else ''}{path}: {exc.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise SecretFileError(f"{what + ' ' if what else ''}{path} is not a regular file")
        check_mode(path, st.st_mode, what)
        chunks = []
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def read_secret_text(path: Path, what: str = "") -> str:
    """A one-line secret (a token, a password) without surrounding whitespace."""
    try:
        return read_secret_file(path, what).decode("utf-8").strip()
    except UnicodeDecodeError:
        raise SecretFileError(f"{what + ' ' if what else ''}{path} is not UTF-8 text") from None


def create_secret_file(path: Path, data: bytes) -> None:
    """Create ``path`` 0600 with ``data``, durably; refuse to replace an existing file (O_EXCL).

    A missing parent directory is created 0700. The file appears whole or not at all: it is
    written under a temporary name and linked into place (``link`` refuses an existing name), so
    a second process or thread that finds it (and gets ``FileExistsError`` making its own) never
    reads a half-written key.
    """
    path = Path(path)
    if not path.parent.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    create_durably(tmp, data, 0o600)
    try:
        os.link(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(path.parent)  # the new name survives a crash, not only the bytes
