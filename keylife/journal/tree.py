"""The journal's RFC 6962 Merkle tree, kept so that roots and proofs never need a full replay.

Leaf ``i`` is ``SHA-256(0x00 || line[i])`` (the entry's canonical bytes, RFC 9162 §2.1.1). In
memory the tree holds the hashes of every complete subtree of height >= 8 (1/128 of a hash per
entry) plus the leaf hashes of the last, incomplete 256-entry block. Subtrees below height 8
are recomputed from the entries of their 256-entry block (one zstd frame read at most), with a
small cache; the entries are what the tree commits to, so nothing is lost by not storing them.

On disk (``tree/`` beside ``segments/``) the layout is C2SP tlog-tiles: ``tile/<L>/<N>`` holds
256 hashes of height ``8L`` (nodes ``256N .. 256N+255`` of that level), N encoded in 3-digit
path elements (``x001/x234/067``). Only levels >= 1 are stored (level-0 tiles would cost
32 B/event; leaf hashes come from the entries); only full tiles are written, once, fsynced;
partial tiles (``.p/<W>``) are computed from memory when asked for. A tile is written after
the entries it covers are durable, so the tiles are never ahead of the journal; tiles missing
after a crash are rebuilt from the entries at start-up.

Pruned segments (keylife/journal/prune.py) have no entries left: their leaf hashes come from
their ``.leaves`` files instead, so every root, proof and tile over them is still served.
"""

from __future__ import annotations

import functools
import hashlib
import os
from array import array
from collections import OrderedDict
from collections.abc import Callable, Iterator
from pathlib import Path

import orjson
import zstandard

from keylife.journal import merkle
from keylife.journal import segments as segs

TILE_HEIGHT = 8
TILE_WIDTH = 1 << TILE_HEIGHT  # 256
BLOCK_CACHE = 64  # 256-leaf blocks kept for proofs (64 x 8 KiB)

BlockSource = Callable[[int, int], list[bytes]]  # (first seq, count) -> entry lines


def tile_path(level: int, index: int, width: int = TILE_WIDTH) -> str:
    """``tile/<L>/<N>[.p/<W>]`` with N in 3-digit elements, all but the last prefixed by x (C2SP tlog-tiles)."""
    digits = f"{index:03d}"
    digits = "0" * (-len(digits) % 3) + digits
    parts = [digits[i : i + 3] for i in range(0, len(digits), 3)]
    name = "/".join([*(f"x{p}" for p in parts[:-1]), parts[-1]])
    suffix = "" if width == TILE_WIDTH else f".p/{width}"
    return f"tile/{level}/{name}{suffix}"


class Tree:
    """The Merkle tree over the first ``size`` entries; ``append`` only committed ones."""

    def __init__(self, blocks: BlockSource) -> None:
        self.size = 0
        self.tail: list[bytes] = []  # leaf hashes of the incomplete last block
        self.levels: list[list[bytes]] = [[]]  # levels[k]: complete subtrees of height 8 + k
        self._blocks = blocks
        self._cache: OrderedDict[int, list[bytes]] = OrderedDict()
        self._levels_cache: OrderedDict[int, list[list[bytes]]] = OrderedDict()
        self.pruned: list[tuple[int, int, segs.SegmentFiles]] = []  # (first, end, segment): leaves kept, no bodies

    # ----- building ---------------------------------------------------------------------
    def append(self, leaves: list[bytes]) -> None:
        tail = self.tail
        for leaf in leaves:
            tail.append(leaf)
            if len(tail) == TILE_WIDTH:
                self._push(merkle.root_of(tail))
                self._remember(len(self.levels[0]) - 1, tail)
                tail = self.tail = []
        self.size += len(leaves)

    def _remember(self, number: int, leaves: list[bytes]) -> None:
        self._cache[number] = leaves
        self._cache.move_to_end(number)
        if len(self._cache) > BLOCK_CACHE:
            self._cache.popitem(last=False)

    def _push(self, block_hash: bytes) -> None:
        level = 0
        node = block_hash
        while True:
            row = self.levels[level]
            row.append(node)
            if len(row) & 1:
                return
            node = merkle.node_hash(row[-2], node)
            level += 1
            if level == len(self.levels):
                self.levels.append([])

    # ----- hashes -----------------------------------------------------------------------
    def subtree(self, lo: int, hi: int) -> bytes:
        """MTH(D[lo:hi]) for the ranges the RFC 9162 recursions ask for (hi <= size)."""
        if not 0 <= lo < hi <= self.size:
            raise ValueError(f"range {lo}..{hi} is outside the tree of size {self.size}")
        n = hi - lo
        if n & (n - 1) == 0 and lo % n == 0:
            height = n.bit_length() - 1
            if height >= TILE_HEIGHT:
                return self.levels[height - TILE_HEIGHT][lo >> height]
            number = lo >> TILE_HEIGHT
            start = lo & (TILE_WIDTH - 1)
            if number == self.size >> TILE_HEIGHT:  # the incomplete last block
                return merkle.root_of(self.tail[start : start + n])
            return self._block_levels(number)[height][start >> height]
        k = merkle.split_point(n)
        return merkle.node_hash(self.subtree(lo, lo + k), self.subtree(lo + k, hi))

    def root(self, size: int | None = None) -> bytes:
        size = self.size if size is None else size
        return merkle.EMPTY_ROOT if size == 0 else self.subtree(0, size)

    def inclusion(self, index: int, size: int) -> list[bytes]:
        self._check_size(size)
        return merkle.inclusion_path(index, size, self.subtree)

    def consistency(self, old: int, new: int) -> list[bytes]:
        self._check_size(new)
        return merkle.consistency_proof(old, new, self.subtree)

    def _check_size(self, size: int) -> None:
        if not 0 < size <= self.size:
            raise ValueError(f"the tree has {self.size} entries; size {size} is not in it")

    def _block_levels(self, number: int) -> list[list[bytes]]:
        """Every node of a complete block, by height 0..7 (cached: a proof then costs lookups)."""
        levels = self._levels_cache.get(number)
        if levels is None:
            levels = [self.block(number)]
            while len(levels[-1]) > 2:
                row = levels[-1]
                levels.append([merkle.node_hash(row[i], row[i + 1]) for i in range(0, len(row), 2)])
            self._levels_cache[number] = levels
            if len(self._levels_cache) > BLOCK_CACHE:
                self._levels_cache.popitem(last=False)
        else:
            self._levels_cache.move_to_end(number)
        return levels

    def block(self, number: int) -> list[bytes]:
        """Leaf hashes of the 256-entry block ``number`` (the last one may be partial)."""
        if number == self.size >> TILE_HEIGHT:
            return self.tail
        cached = self._cache.get(number)
        if cached is None:
            cached = self.leaves(number * TILE_WIDTH, TILE_WIDTH)
            if len(cached) != TILE_WIDTH:
                raise ValueError(f"block {number}: the journal gave {len(cached)} of {TILE_WIDTH} entries")
            self._remember(number, cached)
        else:
            self._cache.move_to_end(number)
        return cached

    def forget(self) -> None:
        """Drop the block caches (benchmarks measure a cold proof with it)."""
        self._cache.clear()
        self._levels_cache.clear()

    def leaves(self, first: int, count: int) -> list[bytes]:
        """Leaf hashes ``first ..``: hashed from the entries, or read from a pruned segment's ``.leaves``."""
        out: list[bytes] = []
        at, end = first, first + count
        for lo, hi, seg in self.pruned:
            if hi <= at or lo >= end:
                continue
            if at < lo:
                out += [merkle.leaf_hash(line) for line in self._blocks(at, lo - at)]
            stop = min(hi, end)
            out += segs.read_leaves(seg, max(at, lo), stop - max(at, lo))
            at = stop
        if at < end:
            out += [merkle.leaf_hash(line) for line in self._blocks(at, end - at)]
        return out

    def body_gone(self, seq: int) -> str | None:
        """Why entry ``seq`` has no body (it was pruned), or None."""
        for lo, hi, _seg in self.pruned:
            if lo <= seq < hi:
                return (
                    f"seq {seq} was pruned (entries {lo}..{hi - 1}): its leaf hash is kept and its inclusion "
                    "is still proven (GET /v1/journal/proof/inclusion), but its body is gone"
                )
        return None

    def lines(self, first: int, count: int) -> list[bytes]:
        """The entry lines the leaves hash (read from the journal); a pruned entry has none."""
        for lo, hi, _seg in self.pruned:
            if lo < first + count and first < hi:
                raise ValueError(self.body_gone(max(first, lo)))
        return self._blocks(first, count)

    def tile(self, level: int, index: int, width: int = TILE_WIDTH) -> bytes:
        """The C2SP tile ``level``/``index`` of ``width`` hashes, if the tree holds that many."""
        if not 1 <= width <= TILE_WIDTH:
            raise ValueError("a tile holds 1 to 256 hashes")
        if level == 0:
            hashes = self.block(index)[:width] if index <= self.size >> TILE_HEIGHT else []
        else:
            row = self.levels[TILE_HEIGHT * (level - 1)] if TILE_HEIGHT * (level - 1) < len(self.levels) else []
            hashes = row[index * TILE_WIDTH : index * TILE_WIDTH + width]
        if len(hashes) != width:
            raise ValueError(f"tile {tile_path(level, index, width)} is not in a tree of size {self.size}")
        return b"".join(hashes)


class TileStore:
    """Full tiles of levels >= 1 under ``directory`` (C2SP tlog-tiles paths), written once."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.written: dict[int, int] = {}  # level -> full tiles on disk (counted from 0, contiguous)

    def load_level1(self) -> list[bytes]:
        """Height-8 hashes from the contiguous full level-1 tiles on disk."""
        out: list[bytes] = []
        index = 0
        while True:
            path = self.directory / tile_path(1, index)
            try:
                data = path.read_bytes()
            except FileNotFoundError:
                break
            if len(data) != TILE_WIDTH * merkle.HASH_SIZE:
                break  # damaged: rebuilt from the entries
            out += [data[i : i + merkle.HASH_SIZE] for i in range(0, len(data), merkle.HASH_SIZE)]
            index += 1
        self.written[1] = index
        return out

    def flush(self, tree: Tree) -> int:
        """Write every full tile not on disk yet; returns how many were written."""
        count = 0
        level = 1
        while TILE_HEIGHT * (level - 1) < len(tree.levels):
            row = tree.levels[TILE_HEIGHT * (level - 1)]
            full = len(row) // TILE_WIDTH
            done = self.written.get(level, 0)  # rewriting an existing full tile changes nothing
            for index in range(done, full):
                path = self.directory / tile_path(level, index)
                path.parent.mkdir(parents=True, exist_ok=True)
                segs.write_private(path, tree.tile(level, index))
                segs.fsync_dir(path.parent)
                count += 1
            self.written[level] = full
            level += 1
        return count


def read_lines(seg_dir: Path, first: int, count: int) -> list[bytes]:
    """Entry lines ``first .. first+count-1`` from the segments (sealed frames or ``.log``)."""
    return list(_iter_lines(seg_dir, first, first + count))


def _iter_lines(seg_dir: Path, lo: int, hi: int) -> Iterator[bytes]:
    seg_list = segs.list_segments(seg_dir)
    decompressor = zstandard.ZstdDecompressor()
    for position, seg in enumerate(seg_list):
        nxt = seg_list[position + 1].first_seq if position + 1 < len(seg_list) else None
        if (nxt is not None and nxt <= lo) or seg.first_seq >= hi:
            continue
        if seg.sealed:
            index = _index(str(seg.path("idx")), os.stat(seg.path("idx")).st_mtime_ns)
            frames = index["frames"]
            with open(seg.path("zst"), "rb") as handle:
                for at, (start, offset, length) in enumerate(frames):
                    end = frames[at + 1][0] if at + 1 < len(frames) else index["last_seq"] + 1
                    if end <= lo or start >= hi:
                        continue
                    handle.seek(offset)
                    lines = segs.split_lines(decompressor.decompress(handle.read(length)))
                    yield from lines[max(0, lo - start) : hi - start]
        elif seg.path("log").exists():
            yield from _log_lines(seg.path("log"), max(0, lo - seg.first_seq), max(0, hi - seg.first_seq))


_LOG_OFFSETS: dict[str, array] = {}  # .log path -> start offsets of its whole lines, then the end


def _log_lines(path: Path, lo: int, hi: int) -> list[bytes]:
    """Lines ``lo .. hi-1`` of an open segment, reading only their bytes: line offsets are kept
    per file (8 bytes a line) and extended as the file grows."""
    offsets = _LOG_OFFSETS.get(str(path))
    with open(path, "rb") as handle:
        if offsets is None or len(offsets) - 1 < hi:
            if offsets is None or os.fstat(handle.fileno()).st_size < offsets[-1]:
                offsets = array("q", [0])  # new, or cut back (recovery): scan afresh
            handle.seek(offsets[-1])
            data = handle.read()
            base, at = offsets[-1], data.find(b"\n")
            while at >= 0:
                offsets.append(base + at + 1)
                at = data.find(b"\n", at + 1)
            if len(_LOG_OFFSETS) >= 4:
                _LOG_OFFSETS.clear()
            _LOG_OFFSETS[str(path)] = offsets
        hi = min(hi, len(offsets) - 1)
        if lo >= hi:
            return []
        handle.seek(offsets[lo])
        return segs.split_lines(handle.read(offsets[hi] - offsets[lo]))


@functools.lru_cache(maxsize=256)
def _index(path: str, mtime_ns: int) -> dict:
    """A sealed segment's index (immutable once sealed; keyed by mtime in case it is replaced)."""
    return orjson.loads(Path(path).read_bytes())


def open_tree(directory: Path, size: int, blocks: BlockSource | None = None) -> tuple[Tree, TileStore]:
    """The tree over the first ``size`` entries of the journal at ``directory``: full tiles from
    ``tree/``, the rest recomputed from the entries (at most one level-1 tile's worth, 65,535)."""
    directory = Path(directory)
    seg_dir = directory / "segments"
    store = TileStore(directory / "tree")
    tree = Tree(blocks or (lambda first, count: read_lines(seg_dir, first, count)))
    tree.pruned = segs.pruned_ranges(seg_dir)
    stored = store.load_level1()[: size >> TILE_HEIGHT]
    for block_hash in stored:
        tree._push(block_hash)
    tree.size = len(stored) * TILE_WIDTH
    rest = size - tree.size
    if rest:
        leaves = tree.leaves(tree.size, rest)
        if len(leaves) != rest:
            raise ValueError(f"the journal holds fewer than {size} entries")
        tree.append(leaves)
    # Tiles past the journal (it was cut) are stale: rewrite them from what the journal holds.
    store.written = {1: min(store.written.get(1, 0), size >> (2 * TILE_HEIGHT))}
    return tree, store


def root_from_entries(directory: Path, size: int, announcements: list[bytes] | None = None) -> bytes:
    """The root of the first ``size`` entries recomputed from the segments alone, trusting no tile
    (for a start-up check against the last checkpoint: the tiles could have been left alone while
    the entries under them were rewritten). Reads every frame and the open segment whole, in bulk:
    about 1.3 s per million entries. A pruned segment gives its kept leaf hashes (a changed one
    changes the root); the prune announcements met on the way are added to ``announcements``."""
    builder = RootBuilder()
    sha256 = hashlib.sha256
    for seg in segs.list_segments(Path(directory) / "segments"):
        if builder.size >= size:
            break
        if seg.pruned:
            first = segs.read_index(seg)["first_seq"]
            if first != builder.size:
                break  # a gap: reported below as too few entries
            count = min(segs.read_index(seg)["count"], size - builder.size)
            builder.extend(segs.read_leaves(seg, first, count))
            if announcements is not None:
                kept = segs.read_kept(seg)
                announcements += [kept[s] for s in sorted(kept) if s < first + count and segs.PRUNE_MARK in kept[s]]
            continue
        if seg.sealed:
            chunks: Iterator[bytes] = (data for _first, data in segs.iter_frames(seg))
        elif seg.path("log").exists():
            chunks = iter([seg.path("log").read_bytes()])
        else:
            continue
        for data in chunks:
            lines = segs.split_lines(data)[: size - builder.size]
            if announcements is not None and segs.PRUNE_MARK in data:  # one scan of the bytes, not of each line
                announcements += [line for line in lines if segs.PRUNE_MARK in line]
            builder.extend([sha256(b"\x00" + line).digest() for line in lines])  # RFC 9162 §2.1.1 leaves
            if builder.size >= size:
                break
    if builder.size != size:
        raise ValueError(f"the journal holds {builder.size} entries, fewer than {size}")
    return builder.root()


class RootBuilder:
    """RFC 6962 roots of a growing list of leaves at any size reached, in O(log n) per root
    (``verify`` asks for one at every checkpoint)."""

    def __init__(self) -> None:
        self.size = 0
        self.tail: list[bytes] = []
        self.stack: list[tuple[int, bytes]] = []  # (height, hash) of complete subtrees, left to right

    def add_block(self, leaves: list[bytes]) -> None:
        """Append leaves; whole 256-blocks are folded as soon as they fill."""
        tail = self.tail
        for leaf in leaves:
            tail.append(leaf)
            if len(tail) == TILE_WIDTH:
                self.fold()
                tail = self.tail
        self.size += len(leaves)

    def extend(self, leaves: list[bytes]) -> None:
        """Append many leaves at once (``verify``'s bulk path)."""
        tail = self.tail
        tail += leaves
        full = len(tail) - len(tail) % TILE_WIDTH
        if full:
            for start in range(0, full, TILE_WIDTH):
                self._push(merkle.root_of(tail[start : start + TILE_WIDTH]))
            self.tail = tail[full:]
        self.size += len(leaves)

    def fold(self) -> None:
        """Fold a full ``tail`` (256 leaves, appended to directly by hot loops) into the stack."""
        self._push(merkle.root_of(self.tail))
        self.tail = []

    def _push(self, node: bytes) -> None:
        height = TILE_HEIGHT
        stack = self.stack
        while stack and stack[-1][0] == height:
            node = merkle.node_hash(stack.pop()[1], node)
            height += 1
        stack.append((height, node))

    def root(self) -> bytes:
        parts = [h for _, h in self.stack]
        if self.tail:
            parts.append(merkle.root_of(self.tail))
        return merkle.fold_right(parts) if parts else merkle.EMPTY_ROOT
