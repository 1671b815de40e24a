"""A stored tree backup backed up again into another vault (how a file-system backup is replicated): the
copy restores file by file identical, is cut and sealed with the other vault's keys, and an incremental
copy over the previous one reads only the files whose recorded metadata changed."""

from __future__ import annotations

import os

import pytest

from opencbr.engine.errors import Damaged, InvalidArgument
from opencbr.engine.tree import backup_tree, restore_tree, verify_tree
from opencbr.engine.tree.backup import backup_tree_from
from opencbr.engine.tree.stored import StoredTreeSource
from tests.support.engine_tree import SMALL_CHUNKS, assert_same_tree, build_tree, flip_byte_in_chunk_of, new_repo


def _copy(src, dst, backup_id: str, copy_id: str, parent: str | None = None):
    return backup_tree_from(dst, StoredTreeSource(src.chunks, backup_id), backup_id=copy_id, meta={"copy": 1},
                            parent_backup_id=parent, params=SMALL_CHUNKS)


@pytest.mark.parametrize("encrypted", [True, False], ids=["encrypted", "plain"])
def test_a_copy_restores_identical_and_an_incremental_copy_reads_only_changes(tmp_path, encrypted):
    tree = build_tree(tmp_path / "src")
    src = new_repo(tmp_path, encrypted, "a")
    dst = new_repo(tmp_path, True, "b")  # (another vault: other keys, other cut points)
    first = backup_tree(src, tree, backup_id="s1", meta={}, params=SMALL_CHUNKS)
    r = _copy(src, dst, "s1", "c1")
    assert (r.files, r.dirs, r.symlinks, r.specials) == (first.files, first.dirs, first.symlinks, first.specials)
    assert r.total_bytes == first.total_bytes and not r.partial
    assert dst.read_manifest("c1")["meta"] == {"copy": 1}
    out = tmp_path / "out1"
    restore_tree(dst, "c1", out)
    assert_same_tree(tree, out)
    assert verify_tree(dst, "c1").ok
    # the source's chunks are not the copy's: other keys name them otherwise
    assert not (src.chunks.manifest_refs("s1") & dst.chunks.manifest_refs("c1"))

    (tree / "docs" / "text.md").write_bytes(b"changed " * 40_000)
    (tree / "new.txt").write_bytes(b"new file\n")
    backup_tree(src, tree, backup_id="s2", meta={}, parent_backup_id="s1", params=SMALL_CHUNKS)
    r2 = _copy(src, dst, "s2", "c2", parent="c1")
    assert r2.bytes_read == 320_000 + 9, r2.bytes_read  # the two changed files; the rest kept their records
    out2 = tmp_path / "out2"
    restore_tree(dst, "c2", out2)
    assert_same_tree(tree, out2)


def test_a_disk_backup_is_no_tree_source_and_damage_is_raised(tmp_path):
    tree = build_tree(tmp_path / "src")
    src = new_repo(tmp_path, True, "a")
    backup_tree(src, tree, backup_id="s1", meta={}, params=SMALL_CHUNKS)
    img = tmp_path / "d.img"
    img.write_bytes(os.urandom(1 << 16))
    src.backup_disk(str(img), backup_id="d1", meta={})
    with pytest.raises(InvalidArgument):
        StoredTreeSource(src.chunks, "d1")
    flip_byte_in_chunk_of(src, "/bin/random.bin", "s1", tmp_path / "a")
    dst = new_repo(tmp_path, True, "b")
    with pytest.raises(Damaged):
        _copy(src, dst, "s1", "c1")
    assert not dst.chunks.has_manifest("c1")
