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


def test_the_writer_persists_full_tiles_and_rebuilds_missing_ones(tmp_path: Path) -> None:
    """Reopening uses the stored level-1 tiles; deleted or short tiles are rebuilt from the entries,
    and the root signed afterwards is the RFC 6962 root of every entry either way."""
    from tests.journal_helpers import fill, open_journal, signer

    sign = signer(tmp_path)
    journal = open_journal(tmp_path, sign, segment_max_bytes=4_000_000)
    fill(journal, 65_536 + 300, per_commit=1000)
    journal.tick()
    journal.close()
    tile = tmp_path / "journal" / "tree" / "tile" / "1" / "000"
    assert len(tile.read_bytes()) == 256 * 32
    from keylife.journal.tree import read_lines

    lines = read_lines(tmp_path / "journal" / "segments", 0, 65_836)
    expected = merkle.root_of([merkle.leaf_hash(line) for line in lines])
    for damage in (None, "delete", "short"):
        if damage == "delete":
            tile.unlink()
        elif damage == "short":
            tile.write_bytes(tile.read_bytes()[:100])
        journal = open_journal(tmp_path, sign)
        assert journal.tree.root() == expected
        assert journal.checkpoint().hash == expected
        journal.close()
        assert len(tile.read_bytes()) == 256 * 32


def test_root_from_entries_trusts_no_tile(tmp_path: Path) -> None:
    """Entries rewritten under intact tiles: the tiled tree still gives the old root, the recomputation
    does not (a start-up check must use the latter)."""
    from keylife.journal.tree import open_tree, read_lines, root_from_entries
    from tests.journal_helpers import fill, open_journal

    journal = open_journal(tmp_path, segment_max_bytes=1 << 30)
    fill(journal, 65_536 + 10, per_commit=1000)
    journal.close()
    directory = tmp_path / "journal"
    before = root_from_entries(directory, 65_546)
    log = next((directory / "segments").glob("*.log"))
    log.write_bytes(log.read_bytes().replace(b'"encrypt":13}', b'"encrypt":14}', 1))
    tiled, _ = open_tree(directory, 65_546)
    assert tiled.root() == before
    lines = read_lines(directory / "segments", 0, 65_546)
    assert root_from_entries(directory, 65_546) == merkle.root_of([merkle.leaf_hash(x) for x in lines]) != before
