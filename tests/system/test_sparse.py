"""Where the data of a sparse file is."""

from __future__ import annotations

import os

from opencbr.system.sparse import data_extents


def test_data_extents_of_a_sparse_file(tmp_path):
    p = tmp_path / "sparse"
    with open(p, "wb") as f:
        f.truncate(8 << 20)
        f.seek(1 << 20)
        f.write(b"x" * (64 << 10))
        f.seek(3 << 20)
        f.write(b"y" * 4096)
    fd = os.open(p, os.O_RDONLY)
    try:
        ext = list(data_extents(fd, 8 << 20))
        assert sum(n for _o, n in ext) < 8 << 20 or ext == [(0, 8 << 20)]  # (a file system without holes)
        covered = [(o, o + n) for o, n in ext]
        for at in (1 << 20, (1 << 20) + (64 << 10) - 1, 3 << 20):
            assert any(a <= at < b for a, b in covered)
        assert all(b <= 8 << 20 for _a, b in covered)
        assert list(data_extents(fd, 0)) == []
    finally:
        os.close(fd)
