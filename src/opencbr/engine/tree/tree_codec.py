"""The codec tree backups store chunks with: the engine's :class:`ChunkCodec` (same record format,
keys and digests, so every reader decodes our chunks unchanged) at a zstd level chosen for file data.

Level: the fastest that still stores no more than restic (whose "auto" compression is about zstd 3).
Measured 2026-12-06 with the engine, encrypted, cold cache (bench/README.md, "zstd level 2"):

- ``make_dataset.py tree`` (30k files, 1.63 GB): level 1 stored 1.119 GB, *more* than restic's 1.112 GB;
  level 2 1.105 GB; level 3 1.096 GB, at ~15 % more CPU than level 2 (9.4 -> 10.8 s).
- realtree's ``/usr`` copy (55k files, 0.73 GB of mostly text, where zstd was ~half of the first
  backup's CPU): level 2 262-264 MB, level 3 256-257 MB, restic 279 MB; the first backup 15-20 %
  faster at level 2.

Incompressible chunks cost the same at every level (zstd skips them at 6-7 GB/s). The level is a
writer's choice only: records say nothing about it, every reader decodes them alike.
"""

from __future__ import annotations

from ..chunks.codec import ChunkCodec
from ..chunks.store import ChunkStore

TREE_ZSTD_LEVEL = 2


def tree_codec(cs: ChunkStore, level: int = TREE_ZSTD_LEVEL) -> ChunkCodec:
    """A fresh codec (one per thread: zstd contexts are not thread-safe) for writing tree chunks."""
    return ChunkCodec(cs.codec.keys, cs.codec.max_chunk, level)
