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
    wins = [0] * 4

    def claim(k):
        wins[k] = sum(s.add(d) for d in digests)

    threads = [threading.Thread(target=claim, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
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
