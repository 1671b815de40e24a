"""The chunks a remote task may read, on disk: membership of the refs of its backups in memory that does
not grow with them.

The refs of the readable backups are added window by window as the agent is sent them, and their number
is known from the start (the manifests' refs lengths), so the table is sized once: buckets of ~4,096
digests (128 KiB) by their first bytes (digests are uniformly random), each with room for a few
standard deviations more, in an unlinked temporary file. Adding a batch groups it by bucket and writes
each bucket's share with one ``pwrite`` (no look-up per digest: a ref listed twice takes two slots,
which only costs room); a look-up reads its bucket (one ``pread``, usually from the page cache) and
searches it in C. Measured against the :class:`~opencbr.engine.chunks.digestset.DigestSet` (a page
hash table that looks every digest up as it adds it), at a load average of ~6.5 on 2 cores: adding 1 M
refs 1.9 µs each instead of 12 (the reads of a 256 GiB disk's refs through the service 6.7 s instead
of 97), a look-up 12-16 µs instead of 4-8 (~3.5 ms per read message of 256 chunks, 16 MiB); see
docs/scale.md, "Remote reads through an agent".
"""

from __future__ import annotations

import math
import os
import tempfile
import threading
from array import array

from ..chunks.crypto import DIGEST_SIZE

BUCKET = 1024  # digests a bucket is sized for (32 KiB)
ROOM = BUCKET + 8 * int(math.sqrt(BUCKET)) + 64  # slots per bucket: the mean and 8 standard deviations


class AllowedRefs:
    """A set of about ``expected`` digests on disk: :meth:`add_many` and ``in``. What does not fit its
    bucket (never, short of a bucket 8 standard deviations over its mean) is kept in memory."""

    def __init__(self, expected: int, spill_dir: str | None = None):
        self.bits = max(0, math.ceil(math.log2(max(1, expected) / BUCKET))) if expected > BUCKET else 0
        self.buckets = 1 << self.bits
        self.fill = array("I", [0]) * self.buckets
        self.overflow: set[bytes] = set()
        self._lock = threading.Lock()
        fd, path = tempfile.mkstemp(prefix="opencbr-allowed-", dir=spill_dir)
        os.unlink(path)  # gone with the process, whatever happens
        os.ftruncate(fd, self.buckets * ROOM * DIGEST_SIZE)  # (sparse: only what is written takes disk)
        self.fd = fd

    def _bucket(self, digest: bytes) -> int:
        return int.from_bytes(digest[:8], "big") >> (64 - self.bits) if self.bits else 0

    def add_many(self, digests) -> None:
        by_bucket: dict[int, list[bytes]] = {}
        for d in set(digests):
            by_bucket.setdefault(self._bucket(d), []).append(d)
        with self._lock:
            for b, ds in by_bucket.items():
                n = self.fill[b]
                if n + len(ds) > ROOM:  # (refs listed again in later windows fill it: keep only new ones)
                    ds = [d for d in ds if not self._in_bucket(b, d)]
                    self.overflow.update(ds[ROOM - n:])
                    ds = ds[:ROOM - n]
                if ds:
                    os.pwrite(self.fd, b"".join(ds), (b * ROOM + n) * DIGEST_SIZE)
                    self.fill[b] = n + len(ds)

    def _in_bucket(self, b: int, digest: bytes) -> bool:
        data = os.pread(self.fd, self.fill[b] * DIGEST_SIZE, b * ROOM * DIGEST_SIZE)
        at = data.find(digest)
        while at >= 0:
            if at % DIGEST_SIZE == 0:
                return True
            at = data.find(digest, at + 1)
        return False

    def __contains__(self, digest: bytes) -> bool:
        with self._lock:
            return digest in self.overflow or self._in_bucket(self._bucket(digest), digest)

    def close(self) -> None:
        with self._lock:
            if self.fd >= 0:
                os.close(self.fd)
                self.fd = -1
