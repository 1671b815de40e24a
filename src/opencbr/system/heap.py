"""Keeping freed heap memory for reuse while an operation that churns large buffers runs (glibc).

A backup's data path allocates and frees buffers of 0.25-8 MiB all the time: records messages, TLS
output, received payloads, packs. Once a process has fixed its mmap threshold (the backups do, see
engine/tree/memory.py), glibc's trim threshold stays at 128 KiB: each such buffer freed at the top of
its arena's heap goes back to the system, and the next one is faulted in and zeroed again, page by
page. Through an agent (bench/agent.py, the 30k-file tree) that was ~250k page faults in the agent and
~180k in the service's worker per 1.1 GB sent; with 16 MiB kept, ~145k and ~20k (the rest in the agent
is the tree walk's periodic ``malloc_trim``, which bounds its memory).

The setting is process-wide and the processes are long-lived (a worker, an agent): it holds while at
least one operation asked for it, the largest asked for wins, and when the last ends the default comes
back and the arenas' free pages are returned at once (``malloc_trim``). Where ``mallopt`` is missing
(not glibc) nothing changes."""

from __future__ import annotations

import contextlib
import ctypes
import threading
from collections import Counter
from collections.abc import Iterator

from opencbr.system.libc import function as libc_function

M_TRIM_THRESHOLD = -1
#: glibc's trim threshold once the mmap threshold is fixed (what a process runs with between operations).
DEFAULT_TRIM = 128 << 10

_held: Counter[int] = Counter()  # the thresholds asked for by the operations running now
_lock = threading.Lock()


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
