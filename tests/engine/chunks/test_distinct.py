"""Distinct digests of a stream with repeats, in bounded memory (a vault's usage reading): every digest
once across spills, nothing left on disk, and the usage reading it serves equal to the one made with the
membership set (which GC keeps using)."""

from __future__ import annotations

import os
import random

import pytest

from opencbr.engine import Repository
from opencbr.engine.chunks import distinct
from opencbr.engine.chunks.crypto import ZERO_DIGEST
from opencbr.engine.chunks.distinct import MIN_BUFFER, SPAN_CUT, DistinctDigests
from opencbr.engine.chunks.session import WriteSession
from opencbr.storage import open_store


def test_each_digest_once_across_spills(tmp_path):
    rnd = random.Random(7)
    digests = [rnd.randbytes(32) for _ in range(6000)]
    fed = []
    with DistinctDigests(0, spill_dir=str(tmp_path)) as d:
        for _ in range(8):  # repeats within a buffer, across buffers and across spills
            buf = b"".join(rnd.choice(digests) for _ in range(4000))
            fed.append(buf)
            d.add_buffer(memoryview(buf))
        assert sum(len(b) for b in fed) > 2 * MIN_BUFFER and d._fd >= 0  # (spilled)
        # the last digests stay in memory (below the bound): repeats of spilled ones, and new ones
        tail = b"".join(rnd.choice(digests) for _ in range(100)) + b"".join(rnd.randbytes(32) for _ in range(100))
        fed.append(tail)
        spilled = d._end
        d.add_buffer(tail)
        assert d._end == spilled and d._buffered > 0  # (the tail is in memory)
        assert os.listdir(tmp_path) == []  # the spill file has no name
        got = list(d)
    expected = {b[i:i + 32] for b in fed for i in range(0, len(b), 32)}
    assert len(got) == len(expected) and set(got) == expected


def test_without_a_spill_nothing_touches_the_disk(tmp_path):
    digests = [os.urandom(32) for _ in range(50)]
    with DistinctDigests(1 << 20, spill_dir=str(tmp_path)) as d:
        d.add_buffer(b"".join(digests * 3))
        assert sorted(d) == sorted(digests) and d._fd < 0


def _digest(rnd: random.Random, span_end: bool) -> bytes:
    """A random digest that ends a span (its first byte below SPAN_CUT) or not."""
    first = rnd.randrange(SPAN_CUT) if span_end else rnd.randrange(SPAN_CUT, 256)
    return bytes([first]) + rnd.randbytes(31)


def _refs(rnd: random.Random, n: int) -> list[bytes]:
    return [_digest(rnd, rnd.random() < 1 / 64) for _ in range(n)]


def test_a_span_met_again_is_not_fed_again():
    rnd = random.Random(5)
    refs = _refs(rnd, 3000)
    changed = list(refs)
    changed[1500:1500] = [_digest(rnd, False)]  # a digest inserted mid-way: one span differs
    with DistinctDigests(1 << 20) as d:
        d.add_buffer(b"".join(refs))
        fed = d._buffered
        d.add_buffer(b"".join(refs))
        assert d._buffered == fed  # (nothing of it fed again)
        d.add_buffer(b"".join(changed))
        assert fed < d._buffered < fed + 32 * 300  # the span around the new digest, not what follows it
        got = list(d)
    assert len(got) == len(set(changed)) and set(got) == set(changed)


def test_spans_that_differ_after_their_first_digest_are_both_fed():
    rnd = random.Random(6)
    head, end = _digest(rnd, False), _digest(rnd, True)
    a, b = _digest(rnd, False), _digest(rnd, False)
    with DistinctDigests(1 << 20) as d:
        d.add_buffer(head + a + end)
        d.add_buffer(head + b + end)
        assert sorted(d) == sorted({head, a, b, end})


def test_forgotten_spans_are_fed_again_and_counted_once(monkeypatch, tmp_path):
    monkeypatch.setattr(distinct, "SPANS_MAX", 4)
    rnd = random.Random(8)
    refs = _refs(rnd, 2000)
    with DistinctDigests(0, spill_dir=str(tmp_path)) as d:
        for _ in range(3):
            d.add_buffer(b"".join(refs))
        assert len(d._spans) <= 4
        got = list(d)
    assert len(got) == len(set(refs)) and set(got) == set(refs)


def test_a_buffer_of_part_of_a_digest_is_refused():
    with DistinctDigests(1 << 20) as d, pytest.raises(ValueError):
        d.add_buffer(b"x" * 33)


def test_usage_equals_the_stored_size_of_each_referenced_chunk_once(tmp_path):
    repo = Repository.create(open_store((tmp_path / "store").as_uri()), "v/", b"k" * 32, encrypted=True)
    repo.chunks.memory_entries = 64  # both sets past their memory bound
    rnd = random.Random(3)
    stored = []
    for m in range(4):
        s = WriteSession(repo.chunks)
        stored += [s.put_chunk(rnd.randbytes(rnd.randrange(10, 5000))).digest for _ in range(300)]
        # refs: chunks of this and earlier backups (repeats), a zero block, refs not in the vault
        refs = [rnd.choice(stored) for _ in range(3000)] + [ZERO_DIGEST] + [rnd.randbytes(32) for _ in range(50)]
        s.commit(f"b{m}", {"type": "generated"}, b"".join(refs))
    idx = repo.chunks.reader_index(refresh=True)
    members = repo.chunks.referenced()
    try:
        expected = sum(idx.stored_size(d) or 0 for d in members)
    finally:
        members.close()
    assert expected > 0 and repo.usage() == expected
