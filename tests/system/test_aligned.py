"""Direct-I/O helpers: aligned buffers, O_DIRECT writes/reads with their buffered fallbacks."""

from __future__ import annotations

import os
import random

import pytest

from opencbr.storage import open_store
from opencbr.system.aligned import (
    ALIGN,
    BufferPool,
    aligned_buffer,
    is_aligned,
    open_direct,
    pread_direct,
    pwrite_split,
    reopen_direct,
    write_direct,
)


def test_aligned_buffers_and_pool():
    b = aligned_buffer(10_000)
    assert len(b) % ALIGN == 0 and len(b) >= 10_000 and is_aligned(b)
    assert not is_aligned(memoryview(b)[1:]) and not is_aligned(b"read-only bytes")
    pool = BufferPool(5000, keep=1)
    x, y = pool.take(), pool.take()
    assert x is not y
    pool.give(x)
    pool.give(y)  # beyond keep: dropped
    assert pool.take() is x
    pool.give(aligned_buffer(1 << 20))  # a grown buffer never comes back
    assert len(pool.take()) == pool.size


@pytest.mark.parametrize("size", [ALIGN, 3 * ALIGN + 17, (1 << 20) + 1])
def test_write_direct_writes_everything(tmp_path, size):
    buf = aligned_buffer(size)
    payload = os.urandom(size)
    buf[:size] = payload
    path = tmp_path / "f"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
    try:
        direct = write_direct(fd, memoryview(buf)[:size])
    finally:
        os.close(fd)
    if direct:
        assert path.read_bytes() == payload
    else:  # the file system refused O_DIRECT: nothing was written, the caller writes normally
        assert path.stat().st_size == 0


def test_write_direct_declines_unaligned_memory(tmp_path):
    fd = os.open(tmp_path / "f", os.O_WRONLY | os.O_CREAT)
    try:
        assert write_direct(fd, memoryview(bytearray(3 * ALIGN))) in (False, True)
        assert write_direct(fd, memoryview(aligned_buffer(2 * ALIGN))[1:]) is False
        assert write_direct(fd, memoryview(b"x" * (2 * ALIGN))) is False  # read-only bytes
    finally:
        os.close(fd)


def test_pread_direct_ranges(tmp_path):
    data = os.urandom(5 * ALIGN + 123)
    p = tmp_path / "f"
    p.write_bytes(data)
    fd, _direct = open_direct(p)
    buf = aligned_buffer(len(data) + 2 * ALIGN)
    try:
        if not _direct:
            pytest.skip("no O_DIRECT on this file system")
        for start, end in [(0, len(data)), (1, 2), (ALIGN - 1, ALIGN + 1), (100, len(data) + 999),
                           (len(data), len(data) + 10), (3 * ALIGN, 4 * ALIGN)]:
            assert bytes(pread_direct(fd, buf, start, end)) == data[start:end]
    finally:
        os.close(fd)


def test_without_direct_io_everything_falls_back(tmp_path, monkeypatch):
    """Where O_DIRECT does not exist or is refused, the store reads and writes buffered, unchanged."""
    import opencbr.system.aligned as aligned

    monkeypatch.setattr(aligned, "O_DIRECT", 0)
    store = open_store(tmp_path.joinpath("s").as_uri())
    buf = aligned_buffer(3 * ALIGN + 5)
    buf[:] = os.urandom(len(buf))
    store.put("data/cd/pack", memoryview(buf)[:3 * ALIGN + 5])  # would be a direct write
    assert store.get("data/cd/pack") == bytes(buf[:3 * ALIGN + 5])
    assert bytes(store.read_view("data/cd/pack", 7, 2 * ALIGN)) == bytes(buf[7:2 * ALIGN])
    fd, direct = open_direct(tmp_path / "s" / "data" / "cd" / "pack")
    os.close(fd)
    assert direct is False


def _spy_writes(monkeypatch):
    """Record which descriptor every pwrite goes to (the real write still happens)."""
    import opencbr.system.aligned as aligned

    calls = []
    real = os.pwrite

    def pwrite(fd, data, offset):
        calls.append((fd, offset, len(data)))
        return real(fd, data, offset)

    monkeypatch.setattr(aligned.os, "pwrite", pwrite)
    return calls


@pytest.mark.parametrize("aligned_source", [True, False])
def test_pwrite_split_writes_whole_blocks_direct(tmp_path, monkeypatch, aligned_source):
    """Pieces at unaligned offsets of a file written in any order come out exact; only whole blocks
    go through the O_DIRECT descriptor, the partial blocks at the pieces' ends through the buffered
    one, so no block is written by both."""
    size = 10 * ALIGN + 123
    data = os.urandom(size)
    cuts = [0, 1000, 1000 + 3 * ALIGN, 1000 + 3 * ALIGN + 10, 8 * ALIGN, size]
    path = tmp_path / "f"
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    dfd = reopen_direct(fd)
    assert dfd >= 0  # tmp_path is on a file system with O_DIRECT here (ext4)
    os.ftruncate(fd, size)
    calls = _spy_writes(monkeypatch)
    bounced = []

    def bounce(n):
        bounced.append(n)
        return aligned_buffer(n)

    pieces = list(zip(cuts, cuts[1:], strict=False))
    random.Random(5).shuffle(pieces)
    for a, b in pieces:
        if aligned_source:  # the piece sits in memory so that its whole blocks are page-aligned
            src = aligned_buffer(b - a + 2 * ALIGN)
            at = a % ALIGN
            src[at:at + b - a] = data[a:b]
            piece = memoryview(src)[at:at + b - a]
        else:
            piece = data[a:b]  # read-only bytes: copied through the bounce buffer
        assert pwrite_split(fd, dfd, piece, a, bounce) is True
    assert bool(bounced) is not aligned_source  # placed right in memory: written from where it is
    os.close(dfd)
    os.close(fd)
    assert path.read_bytes() == data
    direct = [(off, n) for f, off, n in calls if f == dfd]
    buffered = [(off, n) for f, off, n in calls if f == fd]
    assert direct and buffered
    assert all(off % ALIGN == 0 and n % ALIGN == 0 for off, n in direct)

    def blocks(runs):
        return {b for off, n in runs for b in range(off // ALIGN, (off + n - 1) // ALIGN + 1)}

    assert not blocks(direct) & blocks(buffered)
    assert sum(n for _o, n in direct) + sum(n for _o, n in buffered) == size


def test_pwrite_split_falls_back_when_direct_is_refused(tmp_path, monkeypatch):
    """A file system that refuses the direct write (EINVAL) gets everything buffered, and the caller
    is told to stop trying."""
    import errno

    import opencbr.system.aligned as aligned

    data = os.urandom(5 * ALIGN + 7)
    path = tmp_path / "f"
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    dfd = os.dup(fd)
    real = os.pwrite

    def pwrite(f, buf, off):
        if f == dfd:
            raise OSError(errno.EINVAL, "Invalid argument")
        return real(f, buf, off)

    monkeypatch.setattr(aligned.os, "pwrite", pwrite)
    assert pwrite_split(fd, dfd, data, 3, aligned_buffer) is False
    os.close(dfd)
    os.close(fd)
    assert path.read_bytes() == bytes(3) + data
