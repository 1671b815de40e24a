"""engine/tree/memory.py: the collector's threshold while walks run."""

from __future__ import annotations

import gc
import threading

from opencbr.engine.tree import memory


def test_walks_raise_the_young_threshold_until_the_last_one_ends():
    before = gc.get_threshold()
    entered, release = threading.Event(), threading.Event()

    def other_walk() -> None:
        with memory.fewer_collections():
            entered.set()
            release.wait(10)

    with memory.fewer_collections():
        assert gc.get_threshold() == (max(memory.WALK_GEN0_THRESHOLD, before[0]), *before[1:])
        t = threading.Thread(target=other_walk)
        t.start()
        assert entered.wait(10)
    assert gc.get_threshold()[0] == max(memory.WALK_GEN0_THRESHOLD, before[0])  # (the other walk still runs)
    release.set()
    t.join()
    assert gc.get_threshold() == before


def test_the_threshold_comes_back_when_a_walk_fails():
    before = gc.get_threshold()
    try:
        with memory.fewer_collections():
            raise RuntimeError("walk failed")
    except RuntimeError:
        pass
    assert gc.get_threshold() == before
