"""Segment files: naming, sealing (zstd frames + index) and reading back.

A segment is named by its first seq. While open it is ``<first>.log``: one canonical JSON
entry per line. Beside it ``<first>.sums`` holds 4 bytes of SHA-256(line) per entry, a hint
that lets ``verify`` name the exact entry that was modified (the signatures, not the hint,
are what make tampering detectable). Sealing turns ``.log`` into ``.zst`` (independent zstd
frames of ``FRAME_ENTRIES`` lines, each with a checksum) plus ``.idx`` (JSON: seq and time
range, hashes, frame offsets) so 7+ years stay small and one entry is one frame away.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson
import zstandard

FRAME_ENTRIES = 4096
SUM_BYTES = 4
_NAME = re.compile(r"^(\d{20})\.(log|zst|idx|sums)$")
_SEQ_MARK = b',"seq":'


def seg_name(first_seq: int, suffix: str) -> str:
    return f"{first_seq:020d}.{suffix}"


def entry_seq(line: bytes) -> int:
    """The seq of a canonical entry line without a full parse (``seq`` is its last key)."""
    at = line.rfind(_SEQ_MARK)
    if at < 0 or not line.endswith(b"}"):
        raise ValueError("not a journal entry")
    return int(line[at + len(_SEQ_MARK) : -1])


def entry_sum(line: bytes) -> bytes:
    return hashlib.sha256(line).digest()[:SUM_BYTES]


@dataclass(frozen=True)
class SegmentFiles:
    first_seq: int
    directory: Path

    def path(self, suffix: str) -> Path:
        return self.directory / seg_name(self.first_seq, suffix)

    @property
    def sealed(self) -> bool:
        return self.path("idx").exists() and self.path("zst").exists()


def list_segments(directory: Path) -> list[SegmentFiles]:
    firsts = set()
    if directory.exists():
        for name in os.listdir(directory):
            match = _NAME.match(name)
            if match:
                firsts.add(int(match.group(1)))
    return [SegmentFiles(first, directory) for first in sorted(firsts)]


def read_index(seg: SegmentFiles) -> dict:
    return orjson.loads(seg.path("idx").read_bytes())


def split_lines(data: bytes) -> list[bytes]:
    """Whole lines (without their newline); a trailing partial line is not returned."""
    lines = data.split(b"\n")
    lines.pop()  # after the last newline: empty, or a partial line
    return lines


def seal(seg: SegmentFiles, prev_hash: bytes, level: int = 3) -> dict:
    """Compress a closed ``.log`` into ``.zst`` + ``.idx`` atomically, then remove the ``.log``."""
    data = seg.path("log").read_bytes()
    lines = split_lines(data)
    if not lines:
        raise ValueError(f"segment {seg.first_seq} is empty; nothing to seal")
    compressor = zstandard.ZstdCompressor(level=level, write_checksum=True)
    frames: list[list[int]] = []
    chain = prev_hash
    tmp_zst = seg.path("zst").with_suffix(".zst.tmp")
    first_hash = b""
    with open(tmp_zst, "wb") as out:
        offset = 0
        for start in range(0, len(lines), FRAME_ENTRIES):
            chunk = lines[start : start + FRAME_ENTRIES]
            for line in chunk:
                chain = hashlib.sha256(chain + line).digest()
                if not first_hash:
                    first_hash = chain
            blob = compressor.compress(b"".join(line + b"\n" for line in chunk))
            out.write(blob)
            frames.append([seg.first_seq + start, offset, len(blob)])
            offset += len(blob)
        out.flush()
        os.fsync(out.fileno())
    first = orjson.loads(lines[0])
    last = orjson.loads(lines[-1])
    index = {
        "format": 1,
        "first_seq": seg.first_seq,
        "last_seq": seg.first_seq + len(lines) - 1,
        "count": len(lines),
        "first_observed_at": first["observed_at"],
        "last_observed_at": last["observed_at"],
        "prev_hash": prev_hash.hex(),
        "first_hash": first_hash.hex(),
        "last_hash": chain.hex(),
        "frames": frames,
    }
    tmp_idx = seg.path("idx").with_suffix(".idx.tmp")
    with open(tmp_idx, "wb") as out:
        out.write(orjson.dumps(index))
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp_zst, seg.path("zst"))
    os.replace(tmp_idx, seg.path("idx"))
    fsync_dir(seg.directory)
    seg.path("log").unlink()
    fsync_dir(seg.directory)
    return index


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def iter_frames(seg: SegmentFiles) -> Iterator[tuple[int, bytes]]:
    """(first seq, decompressed bytes) for each frame of a sealed segment.

    Raises ``zstandard.ZstdError`` on a corrupt frame (its checksum or structure).
    """
    index = read_index(seg)
    decompressor = zstandard.ZstdDecompressor()
    with open(seg.path("zst"), "rb") as handle:
        for first_seq, offset, length in index["frames"]:
            handle.seek(offset)
            yield first_seq, decompressor.decompress(handle.read(length))


def segment_lines(seg: SegmentFiles) -> Iterator[bytes]:
    """Every whole entry line of a segment, sealed or open, in file order."""
    if seg.sealed:
        for _first, data in iter_frames(seg):
            yield from split_lines(data)
    elif seg.path("log").exists():
        yield from split_lines(seg.path("log").read_bytes())


def read_sums(seg: SegmentFiles) -> bytes:
    path = seg.path("sums")
    return path.read_bytes() if path.exists() else b""


def frame_lines(seg: SegmentFiles, seq: int) -> list[bytes]:
    """The lines of the sealed frame holding ``seq``."""
    index = read_index(seg)
    frame = None
    for candidate in index["frames"]:
        if candidate[0] <= seq:
            frame = candidate
        else:
            break
    if frame is None:
        return []
    with open(seg.path("zst"), "rb") as handle:
        handle.seek(frame[1])
        data = zstandard.ZstdDecompressor().decompress(handle.read(frame[2]))
    return split_lines(data)
