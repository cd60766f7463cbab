"""The persisted tree (keylife/journal/tree.py) gives the RFC 6962 roots and proofs of its leaves."""

from __future__ import annotations

from pathlib import Path

from keylife.journal import merkle
from keylife.journal.tree import RootBuilder, TileStore, Tree, tile_path


def _tree(lines: list[bytes]) -> Tree:
    tree = Tree(lambda first, count: lines[first : first + count])
    tree.append([merkle.leaf_hash(line) for line in lines])
    return tree


def test_roots_and_proofs_match_the_reference_across_tile_boundaries() -> None:
    lines = [b"entry %d" % i for i in range(256 * 9 + 37)]
    hashes = [merkle.leaf_hash(line) for line in lines]
    tree = _tree(lines)
    builder = RootBuilder()
    ref = merkle.subtree_of(hashes)
    done = 0
    for size in (1, 255, 256, 257, 512, 1000, 2048, 2304, 256 * 9 + 37):
        builder.add_block(hashes[done:size])
        done = size
        assert tree.root(size) == merkle.root_of(hashes[:size]) == builder.root()
        for index in (0, size // 3, size - 1):
            assert tree.inclusion(index, size) == merkle.inclusion_path(index, size, ref)
        for old in (1, size // 2, size):
            assert tree.consistency(old, size) == merkle.consistency_proof(old, size, ref)


def test_tile_paths_follow_c2sp_tlog_tiles() -> None:
    assert tile_path(0, 0) == "tile/0/000"
    assert tile_path(1, 1234067) == "tile/1/x001/x234/067"
    assert tile_path(2, 5, 17) == "tile/2/005.p/17"


def test_full_tiles_are_written_once_and_hold_the_level_hashes(tmp_path: Path) -> None:
    lines = [b"%d" % i for i in range(256 * 256 + 5)]
    tree = _tree(lines)
    store = TileStore(tmp_path)
    assert store.flush(tree) == 1
    assert store.flush(tree) == 0
    data = (tmp_path / "tile/1/000").read_bytes()
    assert data == b"".join(tree.levels[0][:256])
    assert TileStore(tmp_path).load_level1() == tree.levels[0][:256]
