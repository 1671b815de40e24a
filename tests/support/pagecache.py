"""What the kernel holds of a file in its page cache: how many of the file's pages are dirty (written, not
yet on disk). Read from /proc/self/pagemap and /proc/kpageflags (root only), so tests can watch a flush
make data durable instead of trusting that it did."""

from __future__ import annotations

import ctypes
import mmap
import os
import struct

PAGE = mmap.PAGESIZE
_KPF_DIRTY = 1 << 4  # include/uapi/linux/kernel-page-flags.h
_PFN_MASK = (1 << 55) - 1
_PRESENT = 1 << 63


def unavailable_reason() -> str | None:
    """None when this process can read page flags; else why not."""
    try:
        with open("/proc/kpageflags", "rb") as f:
            f.read(8)
    except OSError as e:
        return f"/proc/kpageflags is not readable ({e.strerror})"
    return None


def dirty_pages(path) -> int:
    """How many page-cache pages of the file at ``path`` are dirty. The file is mapped (shared, never
    written through the mapping) only to find its pages' frame numbers."""
    size = os.path.getsize(path)
    npages = (size + PAGE - 1) // PAGE
    with open(path, "r+b") as f, mmap.mmap(f.fileno(), size, flags=mmap.MAP_SHARED) as m:
        for i in range(npages):  # fault every page in (a read, which dirties nothing)
            m[i * PAGE]
        anchor = ctypes.c_char.from_buffer(m)
        first = ctypes.addressof(anchor) // PAGE
        del anchor  # the mapping cannot close while a ctypes view of it lives
        with open("/proc/self/pagemap", "rb") as pm:
            pm.seek(first * 8)
            entries = struct.unpack(f"{npages}Q", pm.read(npages * 8))
    dirty = 0
    with open("/proc/kpageflags", "rb") as kf:
        for entry in entries:
            assert entry & _PRESENT, "a page of the mapping is not in memory"
            kf.seek((entry & _PFN_MASK) * 8)
            (flags,) = struct.unpack("Q", kf.read(8))
            dirty += bool(flags & _KPF_DIRTY)
    return dirty
