"""Page-aligned, reusable I/O buffers and the direct-I/O (``O_DIRECT``) helpers built on them.

Why: profiles of a 1.6 GB tree backup and restore (``perf record -a``, bench/README.md) spent about a
third of all CPU in the kernel *around* the data rather than on it: copying pack bytes into and out of
the page cache (``copy_folio_from_iter``, ``_copy_to_iter``), allocating page-cache pages for data
that is written or read exactly once, and faulting in (and zeroing) a fresh 8 MiB heap block for every
pack built or span read. Pack objects are written once and read rarely, and source files are read
once per backup, so caching them only evicts the user's working set. Direct I/O moves the bytes
between the device and a buffer we own and reuse; the buffers come from ``mmap`` (page-aligned, as
``O_DIRECT`` requires) and live for the whole run, so they are faulted in once.

Everything falls back to ordinary buffered I/O where direct I/O is refused (``EINVAL`` from file
systems without it, e.g. some tmpfs/overlay setups) or the request is not aligned.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import mmap
import os
import threading

ALIGN = 4096  # page size: satisfies the logical block size of every device we meet (512 or 4096)
O_DIRECT = getattr(os, "O_DIRECT", 0)


def round_up(n: int, a: int = ALIGN) -> int:
    return (n + a - 1) & ~(a - 1)


def aligned_buffer(size: int) -> mmap.mmap:
    """A page-aligned, zero-filled, writable buffer of at least ``size`` bytes (anonymous ``mmap``)."""
    return mmap.mmap(-1, round_up(max(size, 1)))


def address_of(buf) -> int | None:
    """The address of a writable buffer (None if it is read-only or not a contiguous buffer)."""
    try:
        return ctypes.addressof(ctypes.c_char.from_buffer(buf))
    except (TypeError, ValueError, BufferError):
        return None


def is_aligned(buf) -> bool:
    a = address_of(buf)
    return a is not None and a % ALIGN == 0


class BufferPool:
    """Hands out aligned buffers of one size and takes them back; allocates when none is free, keeps
    at most ``keep`` free ones (memory is bounded by the callers' own bounds on buffers in flight)."""

    def __init__(self, size: int, keep: int = 8):
        self.size = round_up(size)
        self.keep = keep
        self._free: list[mmap.mmap] = []
        self._lock = threading.Lock()

    def take(self) -> mmap.mmap:
        with self._lock:
            if self._free:
                return self._free.pop()
        return aligned_buffer(self.size)

    def give(self, buf: mmap.mmap) -> None:
        if len(buf) != self.size:
            return  # a grown buffer: let it go
        with self._lock:
            if len(self._free) < self.keep:
                self._free.append(buf)


def write_direct(fd: int, mv: memoryview) -> bool:
    """Write all of ``mv`` to the (new, empty) file ``fd``: the page-aligned prefix with ``O_DIRECT``
    (no page-cache copy), the tail through the page cache (``O_DIRECT`` needs whole blocks). Returns
    False without writing anything if direct I/O is not possible here (caller writes normally)."""
    if not O_DIRECT or len(mv) < ALIGN or not is_aligned(mv):
        return False
    flags = fcntl.fcntl(fd, fcntl.F_GETFL)
    try:
        fcntl.fcntl(fd, fcntl.F_SETFL, flags | O_DIRECT)
    except OSError:
        return False
    head = len(mv) & ~(ALIGN - 1)
    done = 0
    try:
        while done < head:
            done += os.write(fd, mv[done:head])
    except OSError as e:
        if e.errno != errno.EINVAL or done:
            raise
        fcntl.fcntl(fd, fcntl.F_SETFL, flags)
        return False  # the file system refuses direct I/O: nothing was written
    finally:
        fcntl.fcntl(fd, fcntl.F_SETFL, flags)
    while done < len(mv):
        done += os.write(fd, mv[done:])
    return True


def open_direct(path, flags: int = os.O_RDONLY, dir_fd: int | None = None) -> tuple[int, bool]:
    """Open for reading with ``O_DIRECT`` where the file system allows it: ``(fd, direct)``."""
    if O_DIRECT:
        try:
            return os.open(path, flags | O_DIRECT, dir_fd=dir_fd), True
        except OSError as e:
            if e.errno != errno.EINVAL:
                raise
    return os.open(path, flags, dir_fd=dir_fd), False


def pread_direct(fd: int, buf, start: int, end: int) -> memoryview:
    """Bytes ``[start, end)`` of the ``O_DIRECT`` file ``fd``, read into the aligned ``buf`` (which must
    hold ``round_up(end) - start_aligned`` bytes) and returned as a view of it. Shorter at the end of
    the file, like ``pread``."""
    a0 = start & ~(ALIGN - 1)
    a1 = round_up(end)
    mv = memoryview(buf)[:a1 - a0]
    got = 0
    while got < len(mv):
        n = os.preadv(fd, [mv[got:]], a0 + got)
        if n <= 0:
            break
        got += n
        if got % ALIGN:
            break  # end of file (a direct read only stops mid-block there)
    lo = start - a0
    return mv[lo:max(lo, min(got, end - a0))]
