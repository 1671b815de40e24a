"""What a disk backup reads: a size, reads at offsets, and which ranges may hold data.

:class:`FileDiskSource` covers regular image files (holes found with SEEK_DATA/SEEK_HOLE are skipped
without reading) and block devices (size from seeking to the end; every range may hold data). A
provider that has a point-in-time view (a reflink copy, a frozen LV snapshot, a dirty bitmap) hands
the engine any object with the same three methods.
"""

from __future__ import annotations

import os
import stat
from typing import Iterator, Protocol, runtime_checkable

from ...system.sparse import data_extents


@runtime_checkable
class DiskSource(Protocol):
    size: int

    def read(self, offset: int, length: int) -> bytes:
        """``length`` bytes at ``offset`` (short only at the end of the disk)."""

    # Optional: ``read_into(offset, buf) -> int`` reads into a caller's buffer (the backup then reuses
    # a fixed set of segment buffers instead of a new ``bytes`` per read).

    def data_extents(self) -> Iterator[tuple[int, int]]:
        """Ascending, non-overlapping ``(offset, length)`` ranges that may hold non-zero data;
        everything outside them reads as zeros."""

    def close(self) -> None: ...


class FileDiskSource:
    """A regular disk-image file or a block device, opened read-only -- or already open on ``fd`` (the
    caller checked what it opened; this source reads a duplicate and leaves ``fd`` to the caller)."""

    def __init__(self, path: str | os.PathLike[str], fd: int | None = None):
        self.path = os.fspath(path)
        self.fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0)) if fd is None else os.dup(fd)
        st = os.fstat(self.fd)
        self.is_block_device = stat.S_ISBLK(st.st_mode)
        if self.is_block_device:
            self.size = os.lseek(self.fd, 0, os.SEEK_END)
        elif stat.S_ISREG(st.st_mode):
            self.size = st.st_size
        else:
            os.close(self.fd)
            raise ValueError(f"{self.path} is neither a regular file nor a block device")
        try:
            os.posix_fadvise(self.fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)
        except OSError:
            pass

    def read(self, offset: int, length: int) -> bytes:
        data = os.pread(self.fd, length, offset)
        if len(data) < length and offset + len(data) < self.size:
            parts = [data]
            got = len(data)
            while got < length:
                more = os.pread(self.fd, length - got, offset + got)
                if not more:
                    break
                parts.append(more)
                got += len(more)
            data = b"".join(parts)
        return data

    def read_into(self, offset: int, buf: memoryview) -> int:
        """Read up to ``len(buf)`` bytes at ``offset`` into ``buf``; returns how many (short only at the
        end of the disk)."""
        got = 0
        while got < len(buf):
            n = os.preadv(self.fd, [buf[got:]], offset + got)
            if not n:
                break
            got += n
        return got

    def data_extents(self) -> Iterator[tuple[int, int]]:
        if self.is_block_device or not hasattr(os, "SEEK_DATA"):
            if self.size:
                yield 0, self.size
            return
        yield from data_extents(self.fd, self.size)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> "FileDiskSource":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
