"""CatalogWriter: records added in runs (an incremental backup's records reused from the parent) are cut
into the same catalog chunks as records added one by one."""

from __future__ import annotations

import hashlib
import random

import pytest

from opencbr.engine.tree import catalog
from opencbr.engine.tree.catalog import CatalogWriter
from opencbr.engine.tree.cutting import ChunkingSecret
from opencbr.engine.tree.entry import FILE, Entry, encode


def _records(n: int, seed: int) -> list[tuple[bytes, bytes]]:
    rnd = random.Random(seed)
    out = []
    for i in range(n):
        path = b"d%03d/f%06d" % (i // 500, i) + b"x" * rnd.randrange(0, 40)
        e = Entry(path, FILE, 0o100644, size=rnd.randrange(1 << 20), mtime_ns=rnd.randrange(1 << 60),
                  chunks=[(rnd.randbytes(32), 100, 0)] * rnd.choice((1, 1, 1, 3, 400)))
        out.append((path, encode(e)))
    return out


def _write(records, runs: bool, secret, seed: int):
    stored = {}

    def put(data: bytes) -> bytes:
        d = hashlib.sha256(data).digest()
        stored[d] = data
        return d

    w = CatalogWriter(put, secret)
    rnd = random.Random(seed)
    i = 0
    while i < len(records):
        if runs and rnd.random() < 0.7:
            n = rnd.choice((1, 2, 7, 60, 900, 5000))
            w.add_run([(p, r, None, 0) for p, r in records[i:i + n]])  # (what the backup passes)
            i += n
        else:
            w.add(records[i][1], records[i][0])
            i += 1
    return w.finish(), w.entries, w.raw_bytes, stored


@pytest.mark.parametrize("keyed", [False, True])
def test_records_added_in_runs_are_cut_like_records_added_one_by_one(keyed, monkeypatch):
    monkeypatch.setattr(catalog, "MIN_CHUNK", 4 << 10)  # (many cuts: both the content test and MAX_CHUNK)
    monkeypatch.setattr(catalog, "MAX_CHUNK", 32 << 10)
    secret = ChunkingSecret(tuple(range(256)), random.Random(7).randbytes(1 << 16)) if keyed else None
    records = _records(12_000, seed=3)
    one = _write(records, False, secret, 0)
    assert len(one[0]) > 50 and any(c.raw_len >= 32 << 10 for c in one[0])  # (both kinds of cut happened)
    for seed in range(3):
        assert _write(records, True, secret, seed) == one
