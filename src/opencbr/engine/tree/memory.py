"""Giving freed memory back to the system during long operations.

Backups and restores allocate and free many 0.1-8 MiB buffers (file data, chunk records, bundles,
8 MiB packs) from several threads. glibc serves them from per-thread arenas and keeps freed pages
there; its mmap threshold adapts upwards after the first large free (up to 32 MiB), after which even
8 MiB packs come from the arenas, so the resident size grew to about twice the live data (measured on
the 30k-file benchmark: 187 MB peak RSS for ~85 MB live Python allocations).

Two remedies, both process-wide and harmless for other code (glibc only; no-ops elsewhere):

- ``system.heap.limit_heap_growth`` fixes ``M_MMAP_THRESHOLD`` (which also stops the adaptation), so
  buffers above it are mapped and unmapped, i.e. returned at once (187 -> 147 MB peak RSS on the
  30k-file backup at 4 MiB; backups fix it just above their pack size);
- :func:`trim` calls ``malloc_trim(0)`` a few times a second, returning the free pages inside every
  arena (``MADV_DONTNEED``) for well under 1 ms per call.

And one for the time a walk spends in Python's cyclic garbage collector: :func:`fewer_collections`.
"""

from __future__ import annotations

import ctypes
import gc
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from ...system.heap import release_free_pages
from ...system.libc import function as libc_function

_last = 0.0
M_ARENA_MAX = -8


def limit_arenas(count: int) -> bool:
    """At most ``count`` glibc malloc arenas in this process (``M_ARENA_MAX``; by default 8 per core).
    Each thread that meets a locked arena gets an arena of its own, which keeps what it freed for its
    next allocations; a long-lived process with a dozen short-lived threads per task (the agent) then
    held several arenas' worth of free memory. Call it before the threads start. False where glibc's
    ``mallopt`` is missing or refused it."""
    mallopt = libc_function("mallopt", (ctypes.c_int, ctypes.c_int))
    return mallopt is not None and mallopt(M_ARENA_MAX, count) == 1


def trim(min_interval: float = 0.25) -> None:
    """Release free heap pages to the OS (at most every ``min_interval`` seconds)."""
    global _last
    now = time.monotonic()
    if now - _last < min_interval:
        return
    _last = now
    release_free_pages()


#: Container allocations (net of frees) between two young-generation collections while a walk runs:
#: Python's default is 700.
WALK_GEN0_THRESHOLD = 100_000
_walks = 0
_walks_lock = threading.Lock()
_saved_threshold: tuple[int, ...] = ()


@contextmanager
def fewer_collections() -> Iterator[None]:
    """Collect cyclic garbage rarely while a tree walk runs (its young-generation threshold
    :data:`WALK_GEN0_THRESHOLD`; the thresholds before are back when the last concurrent walk ends).

    A walk allocates tuples for every entry, most of them alive in its queues for a while: with the
    default threshold the collector ran every 700 of them and, in a worker process, its older
    generations walked the whole process's heap again and again. Collections still happen (memory stays
    bounded if something makes cycles), a hundred times less often. Changed re-backup of the realtree
    benchmark through ``cbr`` (six alternating pairs): the task 1.40-1.67 s -> 1.22-1.40 s; the engine
    alone, warm, ~0.04 s less of the walking thread's CPU (bench/README.md)."""
    global _walks, _saved_threshold
    with _walks_lock:
        if _walks == 0:
            _saved_threshold = gc.get_threshold()
            gc.set_threshold(max(WALK_GEN0_THRESHOLD, _saved_threshold[0]), *_saved_threshold[1:])
        _walks += 1
    try:
        yield
    finally:
        with _walks_lock:
            _walks -= 1
            if _walks == 0:
                gc.set_threshold(*_saved_threshold)
