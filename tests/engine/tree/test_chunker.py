"""FileChunker: streaming through the reusable (page-aligned, O_DIRECT-capable) buffer gives exactly
the chunks of FastCDC over the whole file, whatever the size and wherever the file lives."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest
from pyfastcdc import FastCDC

from opencbr.engine.chunks.crypto import RepoKeys
from opencbr.engine.tree.chunker import DEFAULT_PARAMS, DIRECT_MIN, ChunkParams, FileChunker, _keyed_fastcdc
from opencbr.engine.tree.cutting import ChunkingSecret


def _chunks_of(path: Path, params: ChunkParams, gear=None) -> list[bytes]:
    got: list[bytes] = []

    def put(data) -> bytes:
        got.append(bytes(data))
        return len(got).to_bytes(32, "little")

    ch = FileChunker(params, put, gear=gear)
    out = ch.read_file(os.fsencode(path), os.lstat(path))
    assert out.size == path.stat().st_size and out.warning is None
    assert [n for _d, n, _o in out.chunks] == [len(c) for c in got]
    return got


def _whole(data: bytes, params: ChunkParams, gear=None) -> list[bytes]:
    cdc = FastCDC(params.avg, min_size=params.min, max_size=params.max) if gear is None else _keyed_fastcdc(params, gear)
    return [bytes(c.data) for c in cdc.cut_buf(data)]


def _mixed(size: int, seed: int) -> bytes:
    rnd = random.Random(seed)
    parts, n = [], 0
    while n < size:  # random and repetitive runs: many natural cuts and some forced (max) ones
        k = rnd.randrange(1, 3 << 20)
        parts.append(rnd.randbytes(k) if rnd.random() < 0.6 else bytes([rnd.randrange(256)]) * k)
        n += k
    return b"".join(parts)[:size]


@pytest.mark.parametrize("size", [DIRECT_MIN - 1, DIRECT_MIN, 13 * (1 << 20) + 4095, 29 * (1 << 20) + 1])
def test_streamed_cuts_equal_whole_file_cuts(tmp_path, size):
    data = _mixed(size, size)
    p = tmp_path / "f.bin"
    p.write_bytes(data)
    assert _chunks_of(p, DEFAULT_PARAMS) == _whole(data, DEFAULT_PARAMS)


def test_small_params_and_a_file_system_without_direct_io(tmp_path):
    params = ChunkParams(avg=16 << 10, min=4 << 10, max=64 << 10)
    data = _mixed(5 << 20, 7)
    where = [tmp_path]
    if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK):
        where.append(Path("/dev/shm"))  # tmpfs: O_DIRECT may be refused, the buffered path is used
    for d in where:
        p = d / f"ocbr-chunker-{os.getpid()}.bin"
        p.write_bytes(data)
        try:
            assert _chunks_of(p, params) == _whole(data, params)
            assert _chunks_of(p, DEFAULT_PARAMS) == _whole(data, DEFAULT_PARAMS)
        finally:
            p.unlink()


def test_keyed_streamed_cuts_equal_keyed_whole_file_cuts(tmp_path):
    """The keyed gear table (encrypted vaults) goes through the same streaming loop unchanged."""
    gear = ChunkingSecret.derive(RepoKeys.generate()).gear
    data = _mixed(13 * (1 << 20) + 4095, 3)
    p = tmp_path / "f.bin"
    p.write_bytes(data)
    keyed = _chunks_of(p, DEFAULT_PARAMS, gear)
    assert keyed == _whole(data, DEFAULT_PARAMS, gear) and b"".join(keyed) == data
    assert keyed != _whole(data, DEFAULT_PARAMS)
