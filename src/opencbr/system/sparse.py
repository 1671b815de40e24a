"""Sparse files: where the data of an open file is, holes left out (``SEEK_DATA``/``SEEK_HOLE``)."""

from __future__ import annotations

import errno
import os
from typing import Iterator


def data_extents(fd: int, size: int) -> Iterator[tuple[int, int]]:
    """``(offset, length)`` of the data regions of the first ``size`` bytes of ``fd``, in order. Where
    the file system cannot tell (no ``SEEK_DATA``), the rest of the file counts as data."""
    pos = 0
    while pos < size:
        try:
            start = os.lseek(fd, pos, os.SEEK_DATA)
        except OSError as e:
            if e.errno == errno.ENXIO:  # no data after pos
                return
            yield pos, size - pos
            return
        if start >= size:
            return
        end = min(os.lseek(fd, start, os.SEEK_HOLE), size)
        if end > start:
            yield start, end - start
        pos = end
