"""A tree verify streams its manifest's refs a window at a time (the refs segments of a large tree are
never joined, the chunks already checked kept in an on-disk set): each chunk is checked once, damage
still names the files, and what it holds does not grow with the number of refs; browsing and
restoring read only the catalog of the manifest, not its refs."""

from __future__ import annotations

import tracemalloc

import pytest

from opencbr.engine.chunks.manifests import Manifest
from opencbr.engine.tree import backup_tree, list_tree, restore_tree, verify_tree
from opencbr.engine.tree import verify as tree_verify
from tests.support.engine_tree import SMALL_CHUNKS, build_tree, flip_byte_in_chunk_of

SEGMENT = 64 << 10  # refs bytes per segment


def _repeated(repo, name: str, times: int) -> int:
    """A manifest ``name`` with the header and catalog of ``b1`` and its refs ``times`` over (a manifest
    may list a ref many times): a tree of many refs, cheaply. Returns the distinct refs."""
    m = repo.chunks.read_manifest("b1")
    repo.chunks.put_manifest(Manifest(name, m.header, m.refs * times, m.payload))
    return len(m.ref_set())


def _peak(fn) -> int:
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_a_tree_verify_streams_refs_over_many_segments(repo, tmp_path, monkeypatch):
    monkeypatch.setattr(tree_verify, "VERIFY_WINDOW_REFS", 1000)
    repo.chunks.refs_segment_size = SEGMENT
    repo.chunks.memory_entries = 64
    repo.chunks.spill_dir = str(tmp_path)
    src = build_tree(tmp_path / "src")
    backup_tree(repo, src, backup_id="b1", meta={}, params=SMALL_CHUNKS)
    distinct = _repeated(repo, "small", 200)
    _repeated(repo, "large", 2000)
    assert len(list(repo.chunks.store.list(repo.prefix + "refs/large/"))) > 10
    calls = []
    rep = verify_tree(repo, "large", progress=lambda done, total: calls.append((done, total)))
    assert rep.ok and rep.chunks_checked == distinct and calls[-1][0] == calls[-1][1]
    small, large = _peak(lambda: verify_tree(repo, "small")), _peak(lambda: verify_tree(repo, "large"))
    # joined, the refs of "large" alone are 10 times those of "small"
    assert large < small * 1.5, (small, large)
    assert [e.name for e in list_tree(repo, "large", "/")] == [e.name for e in list_tree(repo, "b1", "/")]
    restore_tree(repo, "large", tmp_path / "out")
    assert (tmp_path / "out" / "docs" / "text.md").read_bytes() == (src / "docs" / "text.md").read_bytes()
    flip_byte_in_chunk_of(repo, "/bin/random.bin", "b1", tmp_path / "store")
    rep = verify_tree(repo, "large")
    assert not rep.ok and rep.damaged and "/bin/random.bin" in rep.damaged[0].paths


@pytest.fixture(params=[True, False])
def repo(request, tmp_path):
    from tests.support.engine_tree import new_repo

    return new_repo(tmp_path, request.param)
