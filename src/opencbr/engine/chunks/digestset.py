"""A set of chunk digests whose memory does not grow with its size: a write session's "stored by me" set.

Up to ``memory_entries`` digests live in a Python set (small backups never touch the disk); past that
they move to an on-disk hash table in an unlinked temporary file (nothing is left behind by a crash)
and every look-up is one ``pread`` of a 4 KiB page the OS page cache usually holds, which is memory of
the kernel, reclaimable, not of this process. Chosen by measurement over SQLite (docs/scale.md): a
B-tree over random 32-byte keys cost 10-45 µs per look-up or insert at a few million keys on this
machine, the page table ~3-6 µs, and it needs no dependency. LMDB was ruled out because it maps the
file: every touched page counts in the process's RSS, which is what the limit is about.

Layout: ``2**k`` pages of 4 KiB; slot 0 of a page holds its fill count, slots 1-127 digests. A digest's
home page is its first 8 bytes modulo the page count (digests are uniformly random), a full page
overflows to the next one (linear probing over pages). Past 3/4 full the table is rebuilt at twice the
size, one sequential pass (amortised O(1) per insert).

Past the spill, new digests wait in a bounded in-memory buffer (``pending_entries``, ``memory_entries``
by default: 16,384 digests, ~2 MB; four times that made a 16 GiB backup's peak RSS 20-25 % above a
2 GiB one's, which never fills it) and go to the table together, sorted by home page:
one ``pread`` and one ``pwrite`` per page touched instead of a ``pwrite`` per digest. Membership stays
exact (the buffer is consulted first; a digest is in the buffer or in the table, never both). Measured
(docs/scale.md): what grew with the table was the kernel's cost of each page write and the page search.
Two more things for that: the table is read without readahead (``POSIX_FADV_RANDOM``: readahead filled the page cache with
large folios, and a 4 KiB write into one walks every block of the folio, in the kernel), and a page is
searched in its filled slots only (a search through the zeros of the empty slots took ~15 µs).
"""

from __future__ import annotations

import os
import struct
import tempfile
import threading

from .crypto import DIGEST_SIZE

PAGE = 4096
SLOTS = PAGE // DIGEST_SIZE - 1  # slot 0 is the page's header
_COUNT = struct.Struct("<I")
DEFAULT_MEMORY_ENTRIES = 1 << 14  # ~2 MB of set entries before the table goes to disk


def unlinked_file(directory: str | None, prefix: str) -> int:
    """A descriptor of a new temporary file in ``directory`` (None: the system's) that has no name: it is
    gone with the process, whatever happens (a crash leaves nothing behind)."""
    fd, path = tempfile.mkstemp(prefix=prefix, dir=directory)
    os.unlink(path)
    return fd


class DigestSet:
    """Thread-safe set of 32-byte digests: :meth:`add` (True if it was new) and ``in``."""

    def __init__(self, memory_entries: int = DEFAULT_MEMORY_ENTRIES, spill_dir: str | None = None,
                 pending_entries: int | None = None):
        self.memory_entries = memory_entries
        self.spill_dir = spill_dir
        # past the spill: new digests not in the table yet (at most this many, then one grouped flush)
        self.pending_entries = max(1, memory_entries if pending_entries is None else pending_entries)
        self._mem: set[bytes] | None = set()
        self._pending: set[bytes] = set()
        self._lock = threading.Lock()
        self._fd = -1
        self._pages = 0
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def __contains__(self, digest: bytes) -> bool:
        with self._lock:
            if self._mem is not None:
                return digest in self._mem
            return digest in self._pending or self._find(digest)[0]

    def add(self, digest: bytes) -> bool:
        with self._lock:
            if self._mem is not None:
                if digest in self._mem:
                    return False
                self._mem.add(digest)
                self._count += 1
                if len(self._mem) > self.memory_entries:
                    self._spill()
                return True
            if digest in self._pending or self._find(digest)[0]:
                return False
            self._pending.add(digest)
            self._count += 1
            if len(self._pending) >= self.pending_entries:
                self._flush()
            return True

    def add_many(self, digests: list[bytes]) -> None:
        """Add a batch (a vault's index as it loads): grouped by page, one read and one write per page
        touched instead of three system calls per digest."""
        with self._lock:
            if self._mem is not None:
                self._mem.update(digests)
                self._count = len(self._mem)
                if self._count > self.memory_entries:
                    self._spill()
                return
            self._flush()
            while (self._count + len(digests)) * 4 > self._pages * SLOTS * 3:
                self._grow()
            self._count += self._insert_batch(digests)

    def __iter__(self):
        """Each digest once: a copy of the in-memory set, or a sequential pass over the table (1 MiB at a
        time). Not to be mixed with adds."""
        with self._lock:
            if self._mem is not None:
                yield from list(self._mem)
                return
            self._flush()
            fd, pages = self._fd, self._pages
        step = 256
        for first in range(0, pages, step):
            block = os.pread(fd, step * PAGE, first * PAGE)
            for p in range(0, len(block), PAGE):
                n = _COUNT.unpack_from(block, p)[0]
                for i in range(1, n + 1):
                    yield block[p + i * DIGEST_SIZE:p + (i + 1) * DIGEST_SIZE]

    def close(self) -> None:
        with self._lock:
            self._mem = set()
            self._pending = set()
            self._count = 0
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1

    # -- the on-disk table ---------------------------------------------------------------------------
    def _home(self, digest: bytes) -> int:
        return int.from_bytes(digest[:8], "little") & (self._pages - 1)

    def _find(self, digest: bytes) -> tuple[bool, int, bytes]:
        """(found, the page it is in or the first page with room, that page's bytes)."""
        page_no = self._home(digest)
        while True:
            page = os.pread(self._fd, PAGE, page_no * PAGE)
            if _in_page(page, digest):
                return True, page_no, page
            if _COUNT.unpack_from(page)[0] < SLOTS:
                return False, page_no, page
            page_no = (page_no + 1) & (self._pages - 1)

    def _insert_at(self, page_no: int, page: bytes, digest: bytes) -> None:
        n = _COUNT.unpack_from(page)[0]
        # the slot and the count through one write (the first n + 2 slots of the page)
        head = bytearray(page[:(n + 1) * DIGEST_SIZE])
        _COUNT.pack_into(head, 0, n + 1)
        head += digest
        os.pwrite(self._fd, head, page_no * PAGE)

    def _new_table(self, pages: int) -> None:
        fd = unlinked_file(self.spill_dir, "opencbr-digests-")
        os.ftruncate(fd, pages * PAGE)
        # no readahead: its large folios made every 4 KiB write walk the whole folio (module docstring)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)
        self._fd, self._pages = fd, pages

    def _insert_batch(self, digests) -> int:
        """Insert those of ``digests`` not present, page by page in ascending order; a digest whose page
        is full moves on to the next page (linear probing), the rare wrap past the last page is done one
        by one. Returns how many were new."""
        last = self._pages - 1
        by_page: dict[int, list[bytes]] = {}
        for d in digests:
            by_page.setdefault(self._home(d), []).append(d)
        pages = sorted(by_page)
        added, carry, carry_page, i = 0, [], None, 0
        while i < len(pages) or carry:
            if carry and carry_page is None:
                break  # wrapped past the last page
            if carry and (i == len(pages) or carry_page < pages[i]):
                page_no, todo = carry_page, carry
            else:
                page_no, i = pages[i], i + 1
                todo = carry + by_page[page_no] if carry else by_page[page_no]
            added, carry, carry_page = self._fill_page(page_no, todo, added, last)
        for d in carry:  # wrapped past the last page
            found, page_no, page = self._find(d)
            if not found:
                self._insert_at(page_no, page, d)
                added += 1
        return added

    def _fill_page(self, page_no: int, todo: list[bytes], added: int, last: int):
        """Put ``todo`` into page ``page_no``: (added so far, what did not fit or was not found, its page)."""
        page = bytearray(os.pread(self._fd, PAGE, page_no * PAGE))
        n = _COUNT.unpack_from(page)[0]
        rest = []
        for d in todo:
            if _in_page(page, d):
                continue
            if n < SLOTS:
                n += 1
                page[n * DIGEST_SIZE:(n + 1) * DIGEST_SIZE] = d
                _COUNT.pack_into(page, 0, n)  # (_in_page searches the filled slots: a batch may repeat one)
                added += 1
            else:
                rest.append(d)  # full: may be in, or goes to, a later page
        os.pwrite(self._fd, page, page_no * PAGE)
        if page_no == last:
            return added, rest, None  # (the caller inserts these one by one)
        return added, rest, page_no + 1

    def _flush(self) -> None:
        """The pending digests into the table, grouped by page (none of them is in it: add checked)."""
        if not self._pending:
            return
        while self._count * 4 > self._pages * SLOTS * 3:  # (_count includes the pending ones)
            self._grow()
        pending, self._pending = self._pending, set()
        self._insert_batch(list(pending))

    def _spill(self) -> None:
        mem, self._mem = self._mem, None
        pages = 1
        while pages * SLOTS < 4 * len(mem):
            pages *= 2
        self._new_table(pages)
        self._insert_batch(list(mem))

    def _grow(self) -> None:
        old_fd, old_pages = self._fd, self._pages
        self._new_table(old_pages * 2)
        step = 256  # pages read at a time: 1 MiB
        try:
            for first in range(0, old_pages, step):
                block = os.pread(old_fd, step * PAGE, first * PAGE)
                batch = []
                for p in range(0, len(block), PAGE):
                    n = _COUNT.unpack_from(block, p)[0]
                    batch += [block[p + (i + 1) * DIGEST_SIZE:p + (i + 2) * DIGEST_SIZE] for i in range(n)]
                self._insert_batch(batch)
        finally:
            os.close(old_fd)


def _in_page(page, digest: bytes) -> bool:
    """Whether a filled slot of ``page`` holds ``digest`` (the empty slots are not searched)."""
    end = (_COUNT.unpack_from(page)[0] + 1) * DIGEST_SIZE
    at = page.find(digest, DIGEST_SIZE, end)
    while at > 0:
        if at % DIGEST_SIZE == 0:
            return True
        at = page.find(digest, at + 1, end)
    return False
