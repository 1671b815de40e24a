"""Keeping freed heap memory for reuse while an operation that churns large buffers runs (glibc).

A backup's data path allocates and frees buffers of 0.25-8 MiB all the time: records messages, TLS
output, received payloads, packs. Once a process has fixed its mmap threshold (the backups do, with
:func:`limit_heap_growth`), glibc's trim threshold stays at 128 KiB: each such buffer freed at the top of
its arena's heap goes back to the system, and the next one is faulted in and zeroed again, page by
page. Through an agent (bench/agent.py, the 30k-file tree) that was ~250k page faults in the agent and
~180k in the service's worker per 1.1 GB sent; with 16 MiB kept, ~145k and ~20k (the rest in the agent
is the tree walk's periodic ``malloc_trim``, which bounds its memory).

Setting the trim threshold also stops glibc's adaptive mmap threshold where it is. In a process that
has not fixed it (a service worker that has only received from agents) it is still 128 KiB, and every
buffer above that is mapped afresh and faulted in page by page, the kept heap notwithstanding: a fresh
worker receiving the bench tree's full backup used 2.93-3.17 CPU s, and 2.60-2.76 s with the threshold
fixed (bench/README.md). :func:`free_heap_kept` therefore fixes it first where nothing has
(:func:`limit_heap_growth`).

The setting is process-wide and the processes are long-lived (a worker, an agent): it holds while at
least one operation asked for it, the largest asked for wins, and when the last ends the default comes
back and the arenas' free pages are returned at once (``malloc_trim``). Where ``mallopt`` is missing
(not glibc) nothing changes."""

from __future__ import annotations

import contextlib
import ctypes
import gc
import threading
from collections import Counter
from collections.abc import Iterator

from opencbr.system.libc import function as libc_function

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
#: glibc's trim threshold once the mmap threshold is fixed (what a process runs with between operations).
DEFAULT_TRIM = 128 << 10

_held: Counter[int] = Counter()  # the thresholds asked for by the operations running now
_lock = threading.Lock()


#: The mmap threshold fixed when an operation asks for none larger: buffers below it come from the heap.
MMAP_THRESHOLD = 4 << 20
_tuned = 0  # the mmap threshold set so far (0: glibc's adaptive default)


def limit_heap_growth(threshold: int = MMAP_THRESHOLD, *, above: int = 0) -> None:
    """Serve allocations of ``threshold`` bytes and more by mmap (returned to the system on free); the
    largest threshold asked for in the process stays. ``above``: a buffer size that must still come from
    the heap (a pack's): the threshold is then at least 1 MiB more.

    glibc's default threshold adapts upwards after the first large free (up to 32 MiB), after which even
    8 MiB packs come from the arenas and the resident size grew to about twice the live data (the 30k-file
    backup: 187 MB peak RSS for ~85 MB live; 147 MB with the threshold at 4 MiB). Backups pass a threshold
    just above their pack size: 8 MiB packs then come from (and return to) the arenas instead of being
    mapped afresh, which saved ~200k page faults and ~0.6 s of the 30k-file first backup (5.9 -> 5.3 s)
    for ~10 MB more peak RSS (156 -> 165 MB), engine/tree/memory.py's ``trim`` still bounding it."""
    global _tuned
    threshold = max(threshold, above + (1 << 20) if above else 0)
    with _lock:
        if threshold <= _tuned:
            return
        _tuned = threshold
        mallopt = libc_function("mallopt", (ctypes.c_int, ctypes.c_int))
        if mallopt is not None:
            mallopt(M_MMAP_THRESHOLD, threshold)


def set_trim_threshold(nbytes: int) -> None:
    """Free memory at the top of a heap is kept up to ``nbytes`` (``M_TRIM_THRESHOLD``)."""
    mallopt = libc_function("mallopt", (ctypes.c_int, ctypes.c_int))
    if mallopt is not None:
        mallopt(M_TRIM_THRESHOLD, nbytes)


def release_free_pages() -> None:
    """Return the free pages inside every arena to the system now (``malloc_trim(0)``)."""
    malloc_trim = libc_function("malloc_trim", (ctypes.c_size_t,))
    if malloc_trim is not None:
        malloc_trim(0)


@contextlib.contextmanager
def free_heap_kept(nbytes: int) -> Iterator[None]:
    """Keep up to ``nbytes`` of freed memory at the top of each heap while this block runs (see the
    module's text). glibc trims a heap's top only on a free in that heap, so what an arena kept goes back
    as it is used again after the block, and its free pages inside at once."""
    limit_heap_growth()  # (where nothing fixed the mmap threshold yet: see the module's text)
    with _lock:
        _held[nbytes] += 1
        set_trim_threshold(max(_held))
    try:
        yield
    finally:
        with _lock:
            _held[nbytes] -= 1
            if not _held[nbytes]:
                del _held[nbytes]
            set_trim_threshold(max(_held, default=DEFAULT_TRIM))
            if not _held:
                release_free_pages()


def collect_task_garbage() -> None:
    """Free what a finished task left in reference cycles, as a long-running process (a worker, an agent)
    ends each task. A tree backup leaves its threads', pools' and write session's structures in cycles,
    with their buffers, and Python frees cycles only in a full collection, which it runs once the
    long-lived objects have grown by a quarter: rarely, in a process with many of them. Measured with
    the bench tree's full backup, one after another in one process: one running them as a worker does
    went 104 -> 307 MB over five (55-60 MB collected after each, ~20 ms a collection there; a worker
    process freezes its start-up objects out of it, server/process.py); an agent's resting RSS grew
    ~3 MB a backup (57 -> 84 MB over ten) and its peak to 152 MB at the eleventh before Python's own
    collection (collected: 56-57 MB at rest, peaks of 119-126 MB)."""
    gc.collect()
