"""The bounded-memory digest set: exact membership across the spill to disk and every doubling, one
claim per digest whatever the threads, and nothing left on disk."""

from __future__ import annotations

import os
import threading

from opencbr.engine.chunks.digestset import SLOTS, DigestSet


def test_members_survive_the_spill_and_every_doubling(tmp_path):
    s = DigestSet(memory_entries=64, spill_dir=str(tmp_path))
    digests = [os.urandom(32) for _ in range(SLOTS * 40)]
    assert all(s.add(d) for d in digests)
    assert s._mem is None and s._pages >= 32  # spilled, and grown several times
    assert len(s) == len(digests)
    assert all(d in s for d in digests)
    assert not any(s.add(d) for d in digests[::7])
    assert not any(os.urandom(32) in s for _ in range(500))
    assert os.listdir(tmp_path) == []  # the table's file has no name
    s.close()


def test_a_page_that_overflows_spills_to_the_next(tmp_path):
    s = DigestSet(memory_entries=0, spill_dir=str(tmp_path))
    same_home = [b"\0" * 8 + os.urandom(24) for _ in range(SLOTS * 2 + 5)]  # all hash to page 0
    assert all(s.add(d) for d in same_home)
    assert all(d in s for d in same_home) and not any(s.add(d) for d in same_home)
    s.close()


def test_threads_claim_each_digest_exactly_once(tmp_path):
    s = DigestSet(memory_entries=100, spill_dir=str(tmp_path))
    digests = [os.urandom(32) for _ in range(3000)]
    wins = _claims_in_threads(s, [digests] * 4)
    assert sum(wins) == len(digests) == len(s)
    s.close()


def test_batches_agree_with_single_adds_including_overflow_and_wrap(tmp_path):
    s = DigestSet(memory_entries=10, spill_dir=str(tmp_path))
    spread = [os.urandom(32) for _ in range(SLOTS * 8)]
    s.add_many(spread)
    pages = s._pages
    last_page = (pages - 1).to_bytes(8, "little")
    crowded = [last_page + os.urandom(24) for _ in range(SLOTS + 30)]  # the last page overflows: wraps
    s.add_many(crowded + crowded[:40])
    assert s._pages == pages  # (no doubling moved them elsewhere)
    assert len(s) == len(spread) + len(crowded)
    assert all(d in s for d in spread + crowded) and not any(s.add(d) for d in spread + crowded)
    s.close()


def test_pending_digests_are_members_before_and_after_their_flush(tmp_path):
    s = DigestSet(memory_entries=16, spill_dir=str(tmp_path), pending_entries=50)
    first = [os.urandom(32) for _ in range(40)]
    assert all(s.add(d) for d in first)  # spilled at 17, the rest still pending (below 50)
    assert s._mem is None and s._pending
    assert all(d in s for d in first) and not any(s.add(d) for d in first)
    more = [os.urandom(32) for _ in range(SLOTS * 30)]  # many flushes and doublings
    assert all(s.add(d) for d in more)
    everything = first + more
    assert len(s) == len(everything)
    assert all(d in s for d in everything) and not any(s.add(d) for d in everything)
    assert not any(os.urandom(32) in s for _ in range(500))
    s.close()


def test_iteration_and_batches_see_the_pending_digests_once(tmp_path):
    s = DigestSet(memory_entries=8, spill_dir=str(tmp_path), pending_entries=1000)
    digests = [os.urandom(32) for _ in range(300)]
    for d in digests:
        s.add(d)
    assert s._pending
    s.add_many(digests[:100] + [os.urandom(32) for _ in range(50)])  # some already pending
    assert len(s) == 350
    listed = list(s)
    assert len(listed) == len(set(listed)) == 350 and set(digests) <= set(listed)
    s.close()


def test_threads_claim_each_digest_exactly_once_across_flushes(tmp_path):
    s = DigestSet(memory_entries=32, spill_dir=str(tmp_path), pending_entries=97)
    digests = [os.urandom(32) for _ in range(SLOTS * 40)]
    wins = _claims_in_threads(s, [digests[k::4] + digests for k in range(4)])  # (each starts elsewhere)
    assert sum(wins) == len(digests) == len(s)
    assert all(d in s for d in digests)
    s.close()


class _CountingOs:
    """The module's ``os`` with its page reads and writes counted."""

    def __init__(self):
        self.preads = self.pwrites = 0

    def pread(self, *a):
        self.preads += 1
        return os.pread(*a)

    def pwrite(self, *a):
        self.pwrites += 1
        return os.pwrite(*a)

    def __getattr__(self, name):
        return getattr(os, name)


def test_new_digests_cost_far_less_than_a_write_each(tmp_path, monkeypatch):
    """The table is written page by page for a batch of new digests, not once per digest: at 4,096 digests
    pending and a table of a few hundred pages, about one write per ten digests, doublings included."""
    from opencbr.engine.chunks import digestset

    s = DigestSet(memory_entries=1024, spill_dir=str(tmp_path), pending_entries=4096)
    for _ in range(2048):
        s.add(os.urandom(32))  # spilled
    counted = _CountingOs()
    monkeypatch.setattr(digestset, "os", counted)
    n = 40_000
    for _ in range(n):
        s.add(os.urandom(32))
    assert counted.pwrites < n / 5
    assert counted.preads < 1.5 * n  # (the look-up before each add: one read, rarely two)
    s.close()


def _claims_in_threads(s: DigestSet, orders: list[list[bytes]]) -> list[int]:
    """One thread per order adds its digests to ``s`` at once; how many each claimed (add returned True)."""
    wins = [0] * len(orders)

    def claim(k):
        wins[k] = sum(s.add(d) for d in orders[k])

    threads = [threading.Thread(target=claim, args=(k,)) for k in range(len(orders))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return wins
