"""TreeWalker: the walk order is the catalog order (depth-first, siblings by name bytes) whatever
the listing threads do ahead of it, including when the prefetch window is full."""

from __future__ import annotations

import os
import random

import pytest

from opencbr.engine.tree.entry import path_key
from opencbr.engine.tree.walker import TreeWalker


def _deep_tree(root, seed=3):
    rnd = random.Random(seed)
    dirs = [root]
    root.mkdir()
    for i in range(120):
        parent = rnd.choice(dirs)
        d = parent / f"d{rnd.randrange(1000):03d}-{i}"
        d.mkdir()
        dirs.append(d)
        for j in range(rnd.randrange(4)):
            (d / f"f{j}\xe9.txt").write_bytes(b"x" * j)
    (root / "a-link").symlink_to("d")
    return root


@pytest.mark.parametrize("prefetch,window,readahead", [(0, 512, 0), (4, 512, 0), (3, 2, 0), (2, 1, 0), (2, 512, 1 << 20)])
def test_walk_order_is_catalog_order(tmp_path, monkeypatch, prefetch, window, readahead):
    root = _deep_tree(tmp_path / "t")
    monkeypatch.setattr(TreeWalker, "MAX_PREFETCH", window)
    warnings = []
    (root / "fifo").parent.mkdir(exist_ok=True)
    os.mkfifo(root / "fifo")  # never opened by the readahead (regular files only): no hang
    paths = [it.path for it in TreeWalker(root, lambda *a: warnings.append(a), prefetch=prefetch,
                                          readahead_below=readahead)]
    assert warnings == []
    assert paths[0] == b"" and len(paths) == len(set(paths))
    keys = [path_key(p) for p in paths]
    assert keys == sorted(keys)
    expect = {b""} | {os.path.relpath(os.path.join(d, n), root).encode()
                      for d, ds, fs in os.walk(root) for n in ds + fs}
    assert set(paths) == expect


@pytest.mark.parametrize("slow", [False, True])
def test_adaptive_walk_lists_ahead_only_when_listings_wait(tmp_path, monkeypatch, slow):
    """adaptive: no listing threads while listings come back quickly; once the first PROBE_LISTINGS
    listings have waited on the "device" (here a sleep: wall time that is not this thread's CPU
    time) the threads start, and the walk order and contents stay the same either way."""
    import time

    root = _deep_tree(tmp_path / "t")
    real = TreeWalker._children

    def children(self, abspath, rel):
        if slow:
            time.sleep(0.003)
        return real(self, abspath, rel)

    monkeypatch.setattr(TreeWalker, "_children", children)
    monkeypatch.setattr(TreeWalker, "PROBE_LISTINGS", 8)
    plain = [it.path for it in TreeWalker(root, lambda *a: None, prefetch=0)]
    w = TreeWalker(root, lambda *a: None, prefetch=4, adaptive=True)
    assert [it.path for it in w] == plain
    assert w.prefetching is slow
