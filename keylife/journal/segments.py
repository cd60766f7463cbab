"""Segment files: naming, sealing (zstd frames + index) and reading back.

A segment is named by its first seq. While open it is ``<first>.log``: one canonical JSON
entry per line. Beside it ``<first>.sums`` holds 4 bytes of SHA-256(line) per entry, a hint
that lets ``verify`` name the exact entry that was modified (the signatures, not the hint,
are what make tampering detectable). Sealing turns ``.log`` into ``.zst`` (independent zstd
frames of ``FRAME_ENTRIES`` lines, each with a checksum) plus ``.idx`` (JSON: seq and time
range, hashes, frame offsets) so 7+ years stay small and one entry is one frame away.

A *pruned* segment (``keylife journal prune``, keylife/journal/prune.py) keeps its ``.idx`` (the
chain hashes across the gap) and ``<first>.leaves`` (the RFC 6962 leaf hash of each entry, 32
bytes each, in seq order) and, when it held any, ``<first>.kept``: the whole entries that
verification still follows (prune announcements, signing-key rotations); ``.zst`` and ``.sums`` are gone.
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

from keylife.common.files import create_durably, fsync_dir

FRAME_ENTRIES = 1024
SUM_BYTES = 4
FILE_MODE = 0o640  # journal files: the owner writes, an auditors' group may read
_NAME = re.compile(r"(\d{20})\.(log|zst|idx|sums|leaves|kept)\Z")  # \Z: "$" would accept a trailing newline
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

    @property
    def pruned(self) -> bool:
        """Bodies removed by a prune: only the index and the leaf hashes are left."""
        return (
            not self.path("zst").exists()
            and not self.path("log").exists()
            and self.path("idx").exists()
            and self.path("leaves").exists()
        )


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
    """Compress a closed ``.log`` into ``.zst`` + ``.idx`` atomically, then remove the ``.log``.

    Every step is safe to cut by a crash: the ``.tmp`` files are removed at start-up, a ``.zst``
    or ``.idx`` beside a ``.log`` is a leftover that start-up removes before sealing again, and a
    ``.log`` beside both is removed. On an error the ``.tmp`` files are removed here (they would
    keep a full disk full) and the error is raised for the caller to retry later. Files are
    created 0640, like the rest of the journal.
    """
    data = seg.path("log").read_bytes()
    lines = split_lines(data)
    if not lines:
        raise ValueError(f"segment {seg.first_seq} is empty; nothing to seal")
    tmp_zst = seg.path("zst").with_suffix(".zst.tmp")
    tmp_idx = seg.path("idx").with_suffix(".idx.tmp")
    try:
        frames, first_hash, chain = _write_frames(seg, lines, prev_hash, level, tmp_zst)
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
        write_private(tmp_idx, orjson.dumps(index))
    except BaseException:
        tmp_zst.unlink(missing_ok=True)
        tmp_idx.unlink(missing_ok=True)
        raise
    os.replace(tmp_zst, seg.path("zst"))
    os.replace(tmp_idx, seg.path("idx"))
    fsync_dir(seg.directory)
    seg.path("log").unlink()
    fsync_dir(seg.directory)
    return index


def _write_frames(
    seg: SegmentFiles, lines: list[bytes], prev_hash: bytes, level: int, path: Path
) -> tuple[list[list[int]], bytes, bytes]:
    compressor = zstandard.ZstdCompressor(level=level, write_checksum=True)
    frames: list[list[int]] = []
    chain = prev_hash
    first_hash = b""
    blobs = []
    offset = 0
    for start in range(0, len(lines), FRAME_ENTRIES):
        chunk = lines[start : start + FRAME_ENTRIES]
        for line in chunk:
            chain = hashlib.sha256(chain + line).digest()
            if not first_hash:
                first_hash = chain
        blob = compressor.compress(b"".join(line + b"\n" for line in chunk))
        blobs.append(blob)
        frames.append([seg.first_seq + start, offset, len(blob)])
        offset += len(blob)
    write_private(path, b"".join(blobs))
    return frames, first_hash, chain


def write_private(path: Path, data: bytes, mode: int = FILE_MODE) -> None:
    """Create ``path`` afresh with ``mode`` (a leftover keeps its old mode otherwise), write, fsync."""
    path.unlink(missing_ok=True)
    create_durably(path, data, mode)


def clear_interrupted_seal(seg: SegmentFiles) -> list[str]:
    """Remove what an interrupted ``seal`` left beside a segment's ``.log``; returns the names.

    A ``.zst`` without its ``.idx`` (a crash between the two renames) or an ``.idx`` without its
    ``.zst`` is incomplete; with the ``.log`` still there, sealing simply runs again.
    """
    removed = []
    if seg.path("log").exists() and not seg.sealed:
        for suffix in ("zst", "idx"):
            if seg.path(suffix).exists():
                seg.path(suffix).unlink()
                removed.append(seg_name(seg.first_seq, suffix))
    return removed


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


LEAF_BYTES = 32  # one RFC 6962 leaf hash per entry in a pruned segment's ``.leaves``
PRUNE_MARK = b'"type":"journal_pruned"'  # in the canonical line of a prune announcement (and no other)


def read_leaves(seg: SegmentFiles, first: int, count: int) -> list[bytes]:
    """Leaf hashes of entries ``first .. first+count-1`` from a pruned segment's ``.leaves``."""
    with open(seg.path("leaves"), "rb") as handle:
        handle.seek((first - seg.first_seq) * LEAF_BYTES)
        data = handle.read(count * LEAF_BYTES)
    return [data[i : i + LEAF_BYTES] for i in range(0, len(data) - len(data) % LEAF_BYTES, LEAF_BYTES)]


def pruned_ranges(directory: Path) -> list[tuple[int, int, SegmentFiles]]:
    """(first seq, end seq exclusive, segment) of every pruned segment, from its ``.idx``."""
    out = []
    for seg in list_segments(directory):
        if seg.pruned:
            index = read_index(seg)
            out.append((index["first_seq"], index["last_seq"] + 1, seg))
    return out


ROTATION_MARK = b'"type":"signing_key_rotated"'  # in the canonical line of a signing-key rotation
KEEP_MARKS = (PRUNE_MARK, ROTATION_MARK)  # entries verification needs after a prune


def read_kept(seg: SegmentFiles) -> dict[int, bytes]:
    """The whole entries a pruned segment keeps (``<first>.kept``: prune announcements and signing-key
    rotations, which verification follows), by seq. A line is returned only when its leaf hash
    is the one kept at its seq, so it is as trustworthy as the leaves the checkpoints sign."""
    path = seg.path("kept")
    if not path.exists():
        return {}
    out = {}
    for line in split_lines(path.read_bytes()):
        try:
            seq = entry_seq(line)
        except ValueError:
            continue
        kept = read_leaves(seg, seq, 1) if seq >= seg.first_seq else []
        if kept and kept[0] == hashlib.sha256(b"\x00" + line).digest():
            out[seq] = line
    return out
