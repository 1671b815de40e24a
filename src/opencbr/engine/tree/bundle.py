"""Packing small files into shared *bundle* chunks.

A file smaller than ``SMALL_FILE`` is not stored as a chunk of its own: whole small files are
concatenated (in walk order) into a bundle, and the catalog records each as a slice
``(bundle digest, length, offset)``. Cut points are content-defined at file granularity: after at
least ``BUNDLE_MIN`` bytes, a bundle ends after a file whose CRC-32 is 0 mod ``CUT_MODULUS`` (always by
``BUNDLE_MAX``), so the same files in the same order -- a full re-read, the same data under a new
resource, a moved directory -- produce the same bundles and are stored once.

Why (measured on ``make_dataset.py tree``, 30k files; bench/tree.py): 27k of the 30k files are under
64 KiB. As one chunk each they cost a put (hash, compress, encrypt, index entry) per file, one index
entry per file in every later backup's memory (the chunk index grows with the file count, so peak RSS
did: 150 MB at 30k files, 300 MB at 300k) and compress poorly on their own (zstd on 4 KB of text).
Bundled: ~300 chunks instead of 27k, 8% fewer stored bytes for those files (141 MB vs 152 MB with
per-file dedup), flat memory. The price: two identical small files at different places are stored
twice unless they fall into identical bundles; identical files of 64 KiB and more are chunked on
their own and deduplicated everywhere, and unchanged small files are never re-stored (an incremental
backup copies their slice from the parent).

In an encrypted vault the "CRC-32 is 0 mod 8" test goes through the vault's keyed cut table
(``ChunkingSecret.cut_here``), so which known files end a bundle -- and so the bundle sizes -- cannot
be predicted without the key (see chunker.py).
"""

from __future__ import annotations

import zlib

from .cutting import ChunkingSecret, public_cut

SMALL_FILE = 64 << 10
BUNDLE_MIN = 512 << 10
BUNDLE_MAX = 2 << 20
CUT_MODULUS = 8


class Bundler:
    """Accumulates small files; the caller asks ``add`` where a file landed and whether to cut. The
    bundle is kept as its files' parts (``take``): whoever stores it joins them, off the walking thread."""

    def __init__(self, secret: ChunkingSecret | None = None) -> None:
        self.parts: list[bytes] = []
        self.size = 0
        self._cut = secret.cut_here if secret is not None else public_cut

    def __len__(self) -> int:
        return self.size

    @property
    def files(self) -> int:
        return len(self.parts)

    def add(self, data: bytes, crc: int | None = None) -> tuple[int, bool]:
        """Append one file (``crc``: its CRC-32 if already known); returns ``(offset in the bundle,
        cut now)``."""
        off = self.size
        self.parts.append(data)
        n = self.size = off + len(data)
        if n >= BUNDLE_MAX:
            return off, True
        if n < BUNDLE_MIN:
            return off, False
        return off, self._cut(zlib.crc32(data) if crc is None else crc, CUT_MODULUS)

    def take(self) -> list[bytes]:
        """The bundle's parts (their concatenation is the bundle); the bundler starts a new one."""
        parts, self.parts, self.size = self.parts, [], 0
        return parts
