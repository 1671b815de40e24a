"""Each distinct digest of a stream with many repeats, in bounded memory: what a vault's usage reading
needs (every chunk the backups reference, counted once), without the membership tests of a
:class:`~opencbr.engine.chunks.digestset.DigestSet`.

Why not a ``DigestSet``: past ``memory_entries`` its table is on disk, and a batch of adds reads and writes
every page it touches, ~4 µs per digest here. A usage reading adds every ref of every backup, most of them
repeats: ten backups of a 100 GiB disk (16 M refs, 2.3 M distinct) took 62-64 s per reading at the default
bound, 9.4-11.4 s with this, 4.6-5.8 s with its spans below when the changes come in extents
(docs/scale.md, "What still grows"; ``bench/usage.py``).

Here the digests are spread over ``BUCKETS`` buckets by their first byte (digests are uniformly random) and
appended, once ``buffer_bytes`` are buffered, to an unlinked temporary file in large sequential writes;
nothing is looked up while they come in. Iteration then reads one bucket's runs back and deduplicates it
alone: about 1/256 of the distinct digests in memory at a time.

Consecutive backups reference mostly the same chunks in the same order (a tree's unchanged files, a disk's
unchanged blocks), so most refs come again in the same company: a buffer is cut into *spans* where content
decides (after each digest whose first byte is below ``SPAN_CUT``: ~64 refs a span; a ref inserted or
removed moves no other cut), and a span met before is not fed again. Spans are remembered by a 256-bit
BLAKE2b of their bytes (32 bytes each, ``SPANS_MAX`` of them, then forgotten: a span fed twice only costs
time), so a collision, which would leave a span's digests out, is as unlikely as one of the digests'.
"""

from __future__ import annotations

import hashlib
import os
import re
from array import array
from collections.abc import Iterator

from .crypto import DIGEST_SIZE
from .digestset import unlinked_file

BUCKETS = 256
MIN_BUFFER = 64 << 10
SPAN_CUT = 4  # a span of refs ends after a digest whose first byte is below this (1 in 64)
_SPAN_END = re.compile(b"[\\x00-\\x%02x]" % (SPAN_CUT - 1))
SPANS_MAX = 1 << 17  # spans remembered (~17 MB: 8 M refs of history)


class DistinctDigests:
    """Digests fed in buffers (:meth:`add_buffer`), then each distinct one once (``iter``). Not
    thread-safe; use once: feed everything, then iterate, then :meth:`close` (or ``with``)."""

    def __init__(self, buffer_bytes: int, spill_dir: str | None = None):
        self.spill_dir = spill_dir
        self._limit = max(MIN_BUFFER, buffer_bytes)
        self._buffers = [bytearray() for _ in range(BUCKETS)]
        self._buffered = 0
        # Per spill, where each bucket's run starts in the file and where the last one ends (BUCKETS + 1
        # offsets): 2 KiB a spill, where a list of (offset, length) pairs per bucket took ~70 bytes a run.
        self._marks = array("Q")
        self._fd = -1
        self._end = 0
        self._spans: set[bytes] = set()  # BLAKE2b of the spans fed so far

    def __enter__(self) -> "DistinctDigests":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def add_buffer(self, buf: bytes) -> None:
        """Every digest of ``buf``: a whole number of digests, one after the other."""
        if len(buf) % DIGEST_SIZE:
            raise ValueError("a buffer of digests must hold a whole number of them")
        buf = bytes(buf)  # (slices of bytes are cheaper than a memoryview's)
        view = memoryview(buf)  # (what is hashed: no copy)
        start = 0
        for m in _SPAN_END.finditer(buf[::DIGEST_SIZE]):  # (each digest's first byte)
            end = (m.start() + 1) * DIGEST_SIZE
            self._add_span(buf, view, start, end)
            start = end
        if start < len(buf):
            self._add_span(buf, view, start, len(buf))

    def _add_span(self, buf: bytes, view: memoryview, start: int, end: int) -> None:
        key = hashlib.blake2b(view[start:end]).digest()
        if key in self._spans:
            return
        if len(self._spans) >= SPANS_MAX:
            self._spans.clear()
        self._spans.add(key)
        buffers = self._buffers
        for i in range(start, end, DIGEST_SIZE):
            buffers[buf[i]] += buf[i:i + DIGEST_SIZE]
        self._buffered += end - start
        if self._buffered >= self._limit:
            self._spill()

    def __iter__(self) -> Iterator[bytes]:
        for b in range(BUCKETS):
            seen: set[bytes] = set()
            marks = self._marks
            for base in range(0, len(marks), BUCKETS + 1):
                at, end = marks[base + b], marks[base + b + 1]
                if end > at:
                    self._add_to(seen, os.pread(self._fd, end - at, at))
            self._add_to(seen, bytes(self._buffers[b]))
            yield from seen

    def close(self) -> None:
        self._spans = set()
        self._buffers = [bytearray() for _ in range(BUCKETS)]
        self._marks = array("Q")
        self._buffered = 0
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    @staticmethod
    def _add_to(seen: set[bytes], data: bytes) -> None:
        seen.update([data[i:i + DIGEST_SIZE] for i in range(0, len(data), DIGEST_SIZE)])

    def _spill(self) -> None:
        if self._fd < 0:
            self._fd = unlinked_file(self.spill_dir, "opencbr-distinct-")
        data = b"".join(self._buffers)  # (one write per spill, not one per bucket)
        written = 0
        while written < len(data):
            written += os.pwrite(self._fd, memoryview(data)[written:], self._end + written)
        at = self._end
        for buf in self._buffers:
            self._marks.append(at)
            at += len(buf)
            buf.clear()
        self._marks.append(at)
        self._end = at
        self._buffered = 0
