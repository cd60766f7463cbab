"""Follow a node's log file like ``tail -F``, with a durable position that survives restarts.

keylife turns these lines into journal events, so a restart must neither skip a line (a gap in
the audit trail) nor lean on luck. Hence:

* Lines are whole: a partial last line waits for its newline (the node may be mid-write).
* Rotation (rename, then a new file at the path) shows as the path naming another device or
  inode. The old file is still open, so it is read to its end first: lines written just before
  the rename are kept. A deleted-but-open file is finished the same way.
* Truncation (size below our offset) or an in-place replacement (the first bytes changed under
  the same inode: copytruncate, or a new file reusing the inode) starts the file again from 0.
* Positions handed out are *virtual*: ``base + offset``, where ``base`` grows by the length of
  each file generation left behind. They keep increasing across rotation and truncation, which
  ``Adapter.safe_position`` comparisons need (a raw offset would start again at 0).
* The state file names the generation a resume position falls in (device, inode, a hash of its
  first bytes) and the offset in it, replaced atomically. If that generation was rotated away
  while we were down, it is looked for beside the path and finished before the path is read.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from keylife.datafold.contract import Line

log = logging.getLogger("keylife.datafold.follow")

HEAD_BYTES = 256  # how much of a file's start identifies it beside (device, inode)
READ_CHUNK = 1 << 20
MAX_LINE_BYTES = 1 << 20  # a "line" this long without a newline is handed out as it is
STATE_VERSION = 1


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def save_state(path: Path, state: dict[str, Any]) -> None:
    """Replace ``path`` atomically (tmp, fsync, rename, fsync dir): after a crash it holds the
    old position or the new one, never a torn one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as handle:
        handle.write(orjson.dumps(state))
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def load_state(path: Path | None) -> dict[str, Any] | None:
    """The saved state, or None. A damaged file is reported and ignored: reading again from the
    start repeats lines, which keylife answers as duplicates (event ids), and loses none."""
    if path is None:
        return None
    try:
        state = orjson.loads(path.read_bytes())
    except FileNotFoundError:
        return None
    except (orjson.JSONDecodeError, OSError) as exc:
        log.warning("ignoring unreadable follow state", extra={"state": str(path), "error": str(exc)})
        return None
    if not isinstance(state, dict) or state.get("version") != STATE_VERSION:
        log.warning("ignoring follow state of another format", extra={"state": str(path)})
        return None
    return state


@dataclass
class _Generation:
    """One file (or one life of a file between truncations) and where its bytes start."""

    device: int
    inode: int
    base: int  # virtual position of its byte 0
    head_len: int
    head_sha: str


class FileFollower:
    """Whole lines of one path, across rotation and truncation; see the module docstring.

    ``read`` hands out ``(line, resume)`` pairs, ``resume`` being the position just after the
    line; ``persist(position)`` records that everything before ``position`` is done. In the
    first file generation a position is the plain byte offset (``contract.Line``); after a
    rotation or truncation it is that offset plus the bytes of the generations before.
    """

    def __init__(
        self,
        path: Path | str,
        state_path: Path | None = None,
        *,
        node: str | None = None,
        follow: bool = True,
        poll_interval: float = 0.25,
    ) -> None:
        self.path = Path(path)
        self.state_path = state_path
        self.source = f"file:{self.path}"
        self.node = node
        self.follow = follow
        self.poll_interval = poll_interval
        self.stats = {"rotations": 0, "truncations": 0, "unrecovered": 0, "long_lines": 0}
        self._fd: int | None = None
        self._gens: list[_Generation] = []
        self._buf = bytearray()
        self._read_to = 0  # offset in the current file up to which bytes were read
        self._ready: deque[tuple[Line, int]] = deque()
        self._saved: dict[str, Any] | None = None
        self._done = False

    # ----- reading ---------------------------------------------------------------------------
    def read(self, max_lines: int = 1000, timeout: float | None = None) -> list[tuple[Line, int]] | None:
        """Up to ``max_lines`` lines; ``[]`` after waiting up to ``timeout`` for more; None once a
        non-following read has reached the end."""
        if not self._ready:
            self._fill(self.poll_interval if timeout is None else timeout)
        if not self._ready and self._done:
            return None
        out: list[tuple[Line, int]] = []
        while self._ready and len(out) < max_lines:
            out.append(self._ready.popleft())
        return out

    def _fill(self, timeout: float) -> None:
        if self._fd is None and not self._open_first():
            if not self.follow:
                raise FileNotFoundError(f"{self.path}: no such file")
            time.sleep(timeout)
            return
        if self._read_available() or self._check_switch():
            return
        if not self.follow:
            self._end_generation()  # the file is taken as complete: its unterminated tail is a line
            self._done = True
            return
        time.sleep(timeout)

    def _read_available(self) -> bool:
        assert self._fd is not None
        data = os.read(self._fd, READ_CHUNK)
        if not data:
            return False
        self._buf += data
        self._read_to += len(data)
        self._split()
        return True

    def _split(self) -> None:
        start = self._read_to - len(self._buf)  # file offset of the buffer's first byte
        index = 0
        while (newline := self._buf.find(b"\n", index)) >= 0:
            self._emit(bytes(self._buf[index:newline]), start + index, start + newline + 1)
            index = newline + 1
        del self._buf[:index]
        if len(self._buf) > MAX_LINE_BYTES:
            self.stats["long_lines"] += 1
            log.warning("line without newline exceeds the limit; handed out as it is", extra={"path": str(self.path)})
            self._end_generation()

    def _emit(self, raw: bytes, start: int, end: int) -> None:
        if raw.endswith(b"\r"):
            raw = raw[:-1]
        base = self._gens[-1].base
        line = Line(raw.decode("utf-8", "replace"), self.source, base + start, self.node)
        self._ready.append((line, base + end))

    def _end_generation(self) -> None:
        """The current generation gets no more bytes: an unterminated tail is its last line."""
        if self._buf:
            self._emit(bytes(self._buf), self._read_to - len(self._buf), self._read_to)
            self._buf.clear()

    # ----- rotation and truncation -----------------------------------------------------------
    def _check_switch(self) -> bool:
        """At the end of the current file: did the path move on (rotation) or start over?"""
        assert self._fd is not None
        current = self._gens[-1]
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            return False  # renamed away and not recreated yet: the writer may still use the old one
        st = os.fstat(fd)
        if (st.st_dev, st.st_ino) != (current.device, current.inode):
            while self._read_available():  # bytes written between our last read and the rename
                pass
            self._end_generation()
            log.info("file rotated; finished the old one", extra={"path": str(self.path), "bytes": self._read_to})
            self.stats["rotations"] += 1
            os.close(self._fd)
            self._start(fd, current.base + self._read_to, 0)
            return True
        os.close(fd)
        head = os.pread(self._fd, HEAD_BYTES, 0)
        if os.fstat(self._fd).st_size < self._read_to or _sha(head[: current.head_len]) != current.head_sha:
            self._end_generation()
            log.warning(
                "file truncated or replaced in place; reading it from the start", extra={"path": str(self.path)}
            )
            self.stats["truncations"] += 1
            self._gens.append(
                _Generation(current.device, current.inode, current.base + self._read_to, len(head), _sha(head))
            )
            os.lseek(self._fd, 0, os.SEEK_SET)
            self._read_to = 0
            return True
        if len(head) > current.head_len:  # the file grew past what identified it so far
            current.head_len, current.head_sha = len(head), _sha(head)
        return False

    def _start(self, fd: int, base: int, offset: int, head: tuple[int, str] | None = None) -> None:
        st = os.fstat(fd)
        if head is None:
            data = os.pread(fd, HEAD_BYTES, 0)
            head = (len(data), _sha(data))
        self._fd = fd
        self._gens.append(_Generation(st.st_dev, st.st_ino, base, *head))
        os.lseek(fd, offset, os.SEEK_SET)
        self._read_to = offset
        self._buf.clear()

    def _open_first(self) -> bool:
        """Open where the state says; False while there is nothing to open yet."""
        state = load_state(self.state_path)
        if state is not None and state.get("path") != str(self.path):
            log.warning("follow state belongs to another path; ignored", extra={"state": str(self.state_path)})
            state = None
        try:
            fd: int | None = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            fd = None
        if state is None:
            if fd is None:
                return False
            self._start(fd, 0, 0)
            return True
        base, offset = int(state["base"]), int(state["offset"])
        if fd is not None and _matches(fd, state):
            self._start(fd, base, offset, (state["head_len"], state["head_sha256"]))
            return True
        rotated = _find_rotated(self.path, state)
        if rotated is not None:
            if fd is not None:
                os.close(fd)
            log.info("resuming in the rotated file first", extra={"path": str(rotated), "offset": offset})
            self._start(os.open(rotated, os.O_RDONLY), base, offset, (state["head_len"], state["head_sha256"]))
            return True
        if fd is None:
            return False
        st = os.fstat(fd)
        if (st.st_dev, st.st_ino) == (state["device"], state["inode"]):
            log.warning(
                "file truncated or replaced while stopped; reading it from the start", extra={"path": str(self.path)}
            )
        else:
            self.stats["unrecovered"] += 1
            log.warning(
                "the file last read was rotated away and is not beside the path any more; "
                "lines it got after the saved offset are not read",
                extra={"path": str(self.path), "offset": offset},
            )
        self._start(fd, base + offset, 0)
        return True

    # ----- position --------------------------------------------------------------------------
    def persist(self, position: int) -> None:
        """Record that every line before virtual ``position`` is done (atomically, if changed)."""
        if self.state_path is None or not self._gens or position < self._gens[0].base:
            return
        index = max(i for i, g in enumerate(self._gens) if g.base <= position)
        del self._gens[:index]  # generations wholly before the position are done with
        gen = self._gens[0]
        state = {
            "version": STATE_VERSION,
            "path": str(self.path),
            "device": gen.device,
            "inode": gen.inode,
            "offset": position - gen.base,
            "base": gen.base,
            "head_len": gen.head_len,
            "head_sha256": gen.head_sha,
        }
        if state != self._saved:
            save_state(self.state_path, state)
            self._saved = state

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _matches(fd: int, state: dict[str, Any]) -> bool:
    """Is the open file the one the state describes, still at least as long as its offset?"""
    st = os.fstat(fd)
    if (st.st_dev, st.st_ino) != (state["device"], state["inode"]) or st.st_size < state["offset"]:
        return False
    head = os.pread(fd, state["head_len"], 0)
    return len(head) == state["head_len"] and _sha(head) == state["head_sha256"]


def _find_rotated(path: Path, state: dict[str, Any]) -> Path | None:
    """The saved file under another name beside ``path`` (``node.log.1``), if it is still there."""
    try:
        entries = list(os.scandir(path.parent))
    except OSError:
        return None
    for entry in entries:
        try:
            st = entry.stat(follow_symlinks=False)
        except OSError:
            continue
        if (st.st_dev, st.st_ino) != (state["device"], state["inode"]) or not entry.is_file(follow_symlinks=False):
            continue
        fd = os.open(entry.path, os.O_RDONLY)
        try:
            if _matches(fd, state):
                return Path(entry.path)
        finally:
            os.close(fd)
    return None
