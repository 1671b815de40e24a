"""Pack writer: pooled (aligned, reused buffers, the backup path) and joined (GC) packs have the same
layout, every record lands where its entry says, and the trailer parses back."""

from __future__ import annotations

import os
import random
import threading

import pytest

from opencbr.engine.chunks.crypto import RepoKeys, Sealer
from opencbr.engine.chunks.packs import FOOTER_SIZE, PackWriter, read_trailer, trailer_length
from opencbr.system.aligned import BufferPool, is_aligned


def _records(n: int, seed: int = 1) -> list[tuple[bytes, bytes]]:
    rnd = random.Random(seed)
    return [(rnd.randbytes(32), rnd.randbytes(rnd.choice([17, 4096, 70_000, 300_000]))) for _ in range(n)]


@pytest.mark.parametrize("encrypted", [True, False])
@pytest.mark.parametrize("pooled", [True, False])
def test_packs_hold_every_record_where_the_entries_say(pooled, encrypted):
    sealer = Sealer(RepoKeys.generate() if encrypted else None)
    pool = BufferPool(1 << 20, keep=2) if pooled else None
    w = PackWriter(sealer, 1 << 20, pool)
    recs = _records(60)
    packs = [p for d, r in recs if (p := w.add(d, r)) is not None]
    last = w.finish()
    assert last is not None and w.finish() is None
    packs.append(last)
    seen = []
    for p in packs:
        data = bytes(p.data)
        if pooled:
            assert is_aligned(p.data)
        entries = read_trailer(sealer, data[-trailer_length(data[-FOOTER_SIZE:]):], len(data), "pack")
        assert [(e.digest, e.offset, e.length) for e in entries] == [(e.digest, e.offset, e.length) for e in p.entries]
        seen += [(e.digest, data[e.offset:e.offset + e.length]) for e in entries]
        p.release()
        assert p.data == b""
    assert sorted(seen) == sorted(recs)  # (an encrypted repository's writer spreads them over two packs)


def test_a_record_bigger_than_the_pooled_buffer_grows_it():
    sealer = Sealer(None)
    pool = BufferPool(64 << 10, keep=4)
    w = PackWriter(sealer, 1 << 20, pool)
    big = os.urandom(3 << 20)
    assert w.add(b"d" * 32, b"x" * 100) is None
    p = w.add(b"e" * 32, big)  # crosses the target: cut at once, in a grown buffer
    assert p is not None and bytes(p.data[100:100 + len(big)]) == big
    p.release()
    assert len(pool.take()) == pool.size


def test_concurrent_adds_lose_nothing():
    sealer = Sealer(None)
    w = PackWriter(sealer, 256 << 10, BufferPool((256 << 10) + (400 << 10), keep=4))
    recs = _records(400, seed=2)
    out, lock = [], threading.Lock()

    def run(part):
        for d, r in part:
            p = w.add(d, r)
            if p is not None:
                with lock:
                    out.append((bytes(p.data), p.entries))
                p.release()

    threads = [threading.Thread(target=run, args=(recs[i::4],)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    p = w.finish()
    out.append((bytes(p.data), p.entries))
    got = {e.digest: data[e.offset:e.offset + e.length] for data, entries in out for e in entries}
    assert got == dict(recs)


@pytest.mark.parametrize("pooled", [True, False])
def test_records_given_as_parts(pooled):
    sealer = Sealer(None)
    w = PackWriter(sealer, 1 << 30, BufferPool(1 << 20, keep=1) if pooled else None)
    scratch = bytearray(b"0123456789")
    w.add(b"a" * 32, (b"\x01", memoryview(scratch)[2:6], b"xyz"))
    scratch[:] = b"##########"  # the caller reuses its buffer at once
    w.add(b"b" * 32, b"plain")
    p = w.finish()
    data = bytes(p.data)
    assert [data[e.offset:e.offset + e.length] for e in p.entries] == [b"\x012345xyz", b"plain"]


@pytest.mark.parametrize("pooled", [True, False])
def test_encrypted_packs_do_not_hold_runs_of_consecutive_records(pooled):
    """Records of an encrypted repository go to one of two packs at random (the pack sizes a store
    reader sees are not sums of consecutive chunks of one file); the two partial packs are merged at
    the end, so a small file's two chunks never sit alone in two small packs."""
    sealer = Sealer(RepoKeys.generate())
    w = PackWriter(sealer, 1 << 20, BufferPool(2 << 20, keep=2) if pooled else None)
    recs = [(i.to_bytes(32, "big"), os.urandom(50_000)) for i in range(200)]
    packs = [p for d, r in recs if (p := w.add(d, r)) is not None]
    packs.append(w.finish())
    orders = [[int.from_bytes(e.digest, "big") for e in p.entries] for p in packs]
    assert sorted(i for o in orders for i in o) == list(range(200))
    runs = sum(1 for o in orders[:-1] if o == list(range(o[0], o[0] + len(o))))
    assert runs == 0, orders  # (one lane: every pack is a run; two random lanes: ~2^-20 per pack)
    plain = PackWriter(Sealer(None), 1 << 20)
    first = next(p for d, r in recs if (p := plain.add(d, r)) is not None)
    assert [int.from_bytes(e.digest, "big") for e in first.entries] == list(range(len(first.entries)))
    w2 = PackWriter(sealer, 1 << 20, BufferPool(2 << 20, keep=2) if pooled else None)
    assert w2.add(b"a" * 32, b"first chunk") is None and w2.add(b"b" * 32, b"second chunk") is None
    last = w2.finish()
    assert sorted(e.digest for e in last.entries) == [b"a" * 32, b"b" * 32] and w2.finish() is None
    data = bytes(last.data)
    assert sorted(data[e.offset:e.offset + e.length] for e in last.entries) == [b"first chunk", b"second chunk"]
